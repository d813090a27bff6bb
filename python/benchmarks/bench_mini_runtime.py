#!/usr/bin/env python3
"""Benchmark of the mini_runtime Python package against the C ABI alone.

The reference MLP (x 128x128 -> W1 128x64 -> ReLU -> W2 64x32 -> ReLU -> W3
32x32; 99 ops as libcllm's schedule builder lowers it, the schedule `cllm
bench engine` runs), sequential and pipelined, 200 warm-up and 2000 timed
iterations each (as `cllm bench engine`), timed per iteration:

  Python      Engine.execute(ops) with the same list every call (the
              packed op array is reused)
  Python new  Engine.execute with new op objects every call (two lists of
              distinct ops, alternating: every call packs the list)
  C ABI       mr_engine_execute_schedule on the built schedule, called
              through ctypes (no Python-side conversion at all)
  engine      the engine's own time per execute (EngineStats.total_ns,
              measured inside libcllm: no FFI, no Python)

The Python overhead per op is the median over the calls of (wall time -
the engine's own time of that call) / ops; for the C ABI row the same
difference is the cost of the ctypes call and the FFI. The same again on a
512x512x512 matmul (8658 ops) shows the per-op cost on a long list.

Usage (from anywhere, with the package installed):
    python bench_mini_runtime.py            # a table
    for i in 1 2 3; do python bench_mini_runtime.py --json; done \\
        | python3 scripts/bench_table.py     # min / median / max of 3 runs
"""

import argparse
import copy
import json
import sys
import time

import numpy as np

import mini_runtime as mr
from mini_runtime import _builder, _native

lib = _native.lib
SUITE = "python"
MLP_WARMUP, MLP_ITERS = 200, 2000
BIG, BIG_WARMUP, BIG_ITERS = 512, 3, 30


def percentile(values, p):
    """Nearest-rank percentile (the median of an even count is the mean of the middle two), as cllm bench."""
    v = sorted(values)
    if p == 50 and len(v) % 2 == 0:
        return (v[len(v) // 2 - 1] + v[len(v) // 2]) / 2
    rank = -(-p * len(v) // 100)
    return v[min(max(int(rank), 1), len(v)) - 1]


def engine_with(names_shapes, threaded, rng):
    e = mr.Engine(mr.EngineConfig(threaded=threaded))
    ids = [e.register_tensor(n, *s) for n, s in names_shapes]
    for n, s in names_shapes:
        e.set_tensor(n, (rng.standard_normal(s) * 0.1).astype(np.float32))
    return e, ids


def built_schedule(layers):
    """An MrSchedule handle (for the C ABI timing) of the layers."""
    arr = (_native.MrMatmulLayer * len(layers))()
    for i, (a, b, out, relu) in enumerate(layers):
        arr[i].a, arr[i].b, arr[i].out = _native.MrTensorRef(*a), _native.MrTensorRef(*b), _native.MrTensorRef(*out)
        arr[i].relu = int(relu)
    h = lib.mr_schedule_build(arr, len(layers), 256 * 1024)
    if not h:
        raise RuntimeError(lib.cllm_last_error().decode())
    return h


def time_runs(e, call, warmup, iters):
    """Per-iteration wall times (us) of call(i) and the engine's own times (us)."""
    for i in range(warmup):
        call(i)
    wall, own = [], []
    last = e.stats().total_ns
    clock = time.perf_counter_ns
    for i in range(iters):
        t0 = clock()
        call(i)
        t1 = clock()
        total = e.stats().total_ns
        wall.append((t1 - t0) / 1e3)
        own.append((total - last) / 1e3)
        last = total
    return wall, own


def measure(layers_of, names_shapes, warmup, iters, threaded, seed):
    """Per way to run one schedule: p50 and p99 of the wall time and p50 of
    the time outside the engine (us); for "engine": p50 and p99 of its own time."""
    rng = np.random.default_rng(seed)
    e, ids = engine_with(names_shapes, threaded, rng)
    layers = layers_of(ids)
    ops, info = _builder.build_matmul_schedule(layers)
    fresh = [[copy.copy(op) for op in ops] for _ in range(2)]
    handle = built_schedule(layers)
    h = e._h
    execute_schedule = lib.mr_engine_execute_schedule

    def capi(_i):
        if execute_schedule(h, handle) != 0:
            raise RuntimeError(lib.cllm_last_error().decode())

    try:
        res = {}
        for name, call in (
            ("python", lambda i: e.execute(ops)),
            ("python_new", lambda i: e.execute(fresh[i % 2])),
            ("capi", capi),
        ):
            wall, own = time_runs(e, call, warmup, iters)
            extra = [w - o for w, o in zip(wall, own)]
            # p50 and p99 of the wall time, p50 of (wall - engine) per call.
            res[name] = (percentile(wall, 50), percentile(wall, 99), percentile(extra, 50))
            res.setdefault("engine", (percentile(own, 50), percentile(own, 99)))
    finally:
        lib.mr_schedule_free(handle)
    return res, info["ops"]


def mlp_layers(ids):
    return _builder.reference_mlp_layers(ids)


MLP_TENSORS = list(zip(_builder.REFERENCE_MLP_NAMES, _builder.REFERENCE_MLP_SHAPES))
BIG_TENSORS = [("a", (BIG, BIG)), ("b", (BIG, BIG)), ("c", (BIG, BIG))]


def big_layers(ids):
    return [((ids[0], BIG, BIG), (ids[1], BIG, BIG), (ids[2], BIG, BIG), False)]


CAPI = "C ABI execute_schedule via ctypes"
PER_OP = "engine time per op"


def run(seed):
    rows = []

    def row(case, unit, ours, baseline_name, baseline, better="lower"):
        rows.append(
            {
                "suite": SUITE,
                "case": case,
                "unit": unit,
                "better": better,
                "ours": ours,
                "baseline_name": baseline_name,
                "baseline": baseline,
                "ratio": ours / baseline if baseline else float("nan"),
            }
        )

    def overhead_per_op_rows(case, r, n):
        """The Python overhead per op of both ways of calling execute against
        the engine's own time per op."""
        per_op = r["engine"][0] * 1e3 / n
        for key, how in (("python", "same list"), ("python_new", "new ops each call")):
            row("%s: Python overhead per op (%s)" % (case, how), "ns", r[key][2] * 1e3 / n, PER_OP, per_op)

    for mode, threaded in (("sequential", False), ("pipelined", True)):
        r, n = measure(mlp_layers, MLP_TENSORS, MLP_WARMUP, MLP_ITERS, threaded, seed)
        # (case, ours, baseline name, baseline) in µs; "%s" is the mode.
        for case, ours, baseline_name, baseline in (
            ("MLP %s p50: Python execute (same list) vs C ABI", r["python"][0], CAPI, r["capi"][0]),
            ("MLP %s p99: Python execute (same list) vs C ABI", r["python"][1], CAPI, r["capi"][1]),
            ("MLP %s p50: Python execute (new ops each call) vs C ABI", r["python_new"][0], CAPI, r["capi"][0]),
            (
                "MLP %s p50: C ABI via ctypes vs engine's own time",
                r["capi"][0],
                "engine time (stats.total_ns)",
                r["engine"][0],
            ),
            (
                "MLP %s: time outside the engine per call, Python execute (same list) vs C ABI",
                r["python"][2],
                "C ABI via ctypes",
                r["capi"][2],
            ),
        ):
            row(case % mode, "µs", ours, baseline_name, baseline)
        overhead_per_op_rows("MLP %s" % mode, r, n)

    r, n = measure(big_layers, BIG_TENSORS, BIG_WARMUP, BIG_ITERS, False, seed)
    overhead_per_op_rows("512³ matmul (%d ops) sequential" % n, r, n)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", action="store_true", help="one JSON line per measurement (for scripts/bench_table.py)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    print(
        "mini_runtime %s, kernel %s, libcllm %s" % (mr.__version__, mr.get_active_kernel_name(), _native.library_path),
        file=sys.stderr,
    )
    rows = run(args.seed)
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return
    print("| case | unit | ours | baseline | baseline value | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            "| %s | %s | %.3g | %s | %.3g | %.3g |"
            % (r["case"], r["unit"], r["ours"], r["baseline_name"], r["baseline"], r["ratio"])
        )


if __name__ == "__main__":
    main()
