#!/usr/bin/env python3
"""Summarises several `cllm bench <suite> --json` runs as a Markdown table.

Usage: for i in 1 2 3; do ./target/release/cllm bench spheres --json; done \\
           | python3 scripts/bench_table.py
Each cell is min / median / max over the runs, per (case, baseline).
"""
import json
import statistics
import sys


def triple(values):
    values = sorted(values)
    return " / ".join(f"{v:.3g}" for v in (values[0], statistics.median(values), values[-1]))


def main():
    rows = {}
    for line in sys.stdin:
        line = line.strip()
        if line:
            m = json.loads(line)
            rows.setdefault((m["case"], m["baseline_name"]), []).append(m)
    print("| case | unit | ours | baseline | baseline value | ratio ours/baseline |")
    print("|---|---|---|---|---|---|")
    for (case, baseline), ms in rows.items():
        print(
            f"| {case} | {ms[0]['unit']} | {triple(m['ours'] for m in ms)} | {baseline} | "
            f"{triple(m['baseline'] for m in ms)} | {triple(m['ratio'] for m in ms)} |"
        )
    print(f"\n({len(next(iter(rows.values())))} runs)" if rows else "(no runs)")


if __name__ == "__main__":
    main()
