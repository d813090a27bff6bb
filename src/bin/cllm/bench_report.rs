//! Shared reporting for `cllm bench`: one [`Measurement`] per compared
//! number, printed either as a human table or as one JSON object per line.

use std::fmt::Write as _;

/// Which direction of a unit is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    /// Smaller is better (times, latencies, thread counts).
    Lower,
    /// Larger is better (throughputs).
    Higher,
}

impl Better {
    /// The JSON / table spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Better::Lower => "lower",
            Better::Higher => "higher",
        }
    }
}

/// A goal for one measurement, shown as met / not met (never asserted).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// `ours` must be at most this value.
    AtMost(f64),
    /// `ours` must be at least this value.
    AtLeast(f64),
    /// `ours / baseline` must be at most this value.
    RatioAtMost(f64),
    /// `ours / baseline` must be at least this value.
    RatioAtLeast(f64),
}

impl Target {
    /// Whether `m` meets the target.
    pub fn met(self, m: &Measurement) -> bool {
        match self {
            Target::AtMost(v) => m.ours <= v,
            Target::AtLeast(v) => m.ours >= v,
            Target::RatioAtMost(v) => m.ratio() <= v,
            Target::RatioAtLeast(v) => m.ratio() >= v,
        }
    }

    /// Short description, e.g. `ours<=2 ns/item` or `ratio<=1.05`.
    pub fn describe(self, unit: &str) -> String {
        match self {
            Target::AtMost(v) => format!("ours<={v} {unit}"),
            Target::AtLeast(v) => format!("ours>={v} {unit}"),
            Target::RatioAtMost(v) => format!("ratio<={v}"),
            Target::RatioAtLeast(v) => format!("ratio>={v}"),
        }
    }
}

/// One number of ours compared with one baseline run in the same process.
#[derive(Debug, Clone, PartialEq)]
pub struct Measurement {
    /// Suite name, e.g. `spheres`.
    pub suite: &'static str,
    /// Case within the suite.
    pub case: String,
    /// Unit of `ours` and `baseline`.
    pub unit: &'static str,
    /// Direction of improvement.
    pub better: Better,
    /// Our value.
    pub ours: f64,
    /// What the baseline is.
    pub baseline_name: String,
    /// The baseline's value.
    pub baseline: f64,
    /// Goal to report as met / not met, if the case has one.
    pub target: Option<Target>,
}

impl Measurement {
    /// `ours / baseline`.
    pub fn ratio(&self) -> f64 {
        self.ours / self.baseline
    }

    /// The JSON line for this measurement (no trailing newline).
    pub fn to_json(&self) -> String {
        format!(
            "{{\"suite\":{},\"case\":{},\"unit\":{},\"better\":{},\"ours\":{},\"baseline_name\":{},\"baseline\":{},\"ratio\":{}}}",
            json_str(self.suite),
            json_str(&self.case),
            json_str(self.unit),
            json_str(self.better.as_str()),
            json_num(self.ours),
            json_str(&self.baseline_name),
            json_num(self.baseline),
            json_num(self.ratio()),
        )
    }
}

/// Collects measurements: JSON lines go out as they arrive, the human
/// table is printed by [`Reporter::finish`].
pub struct Reporter {
    json: bool,
    rows: Vec<Measurement>,
}

impl Reporter {
    /// A reporter printing JSON lines (`json`) or a table.
    pub fn new(json: bool) -> Reporter {
        Reporter { json, rows: Vec::new() }
    }

    /// Records one measurement (and prints it at once in JSON mode).
    pub fn record(&mut self, m: Measurement) {
        if self.json {
            println!("{}", m.to_json());
        } else {
            eprintln!(
                "  {}: ours {} {} vs {} {}",
                m.case,
                fmt_num(m.ours),
                m.unit,
                m.baseline_name,
                fmt_num(m.baseline)
            );
        }
        self.rows.push(m);
    }

    /// Prints the table (human mode); JSON mode has already printed.
    pub fn finish(&self) {
        if !self.json {
            print!("{}", table(&self.rows));
        }
    }
}

/// The human-readable table of `rows`.
pub fn table(rows: &[Measurement]) -> String {
    let header = ["case", "unit", "better", "ours", "baseline", "base value", "ours/base", "target"];
    let cells: Vec<[String; 8]> = rows
        .iter()
        .map(|m| {
            let target = m.target.map_or_else(
                || "-".to_string(),
                |t| {
                    let verdict = if t.met(m) { "met" } else { "NOT MET" };
                    format!("{}: {verdict}", t.describe(m.unit))
                },
            );
            [
                m.case.clone(),
                m.unit.to_string(),
                m.better.as_str().to_string(),
                fmt_num(m.ours),
                m.baseline_name.clone(),
                fmt_num(m.baseline),
                fmt_num(m.ratio()),
                target,
            ]
        })
        .collect();
    let mut widths = header.map(|h| h.chars().count());
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    // Numbers are right-aligned, text left-aligned.
    let numeric = [false, false, false, true, false, true, true, false];
    let mut out = String::new();
    let mut line = |row: &[String]| {
        let mut s = String::new();
        for (i, c) in row.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i > 0 {
                s.push_str("  ");
            }
            if numeric[i] {
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            } else {
                s.push_str(c);
                if i + 1 < row.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        let _ = writeln!(out, "{}", s.trim_end());
    };
    line(&header.map(str::to_string));
    line(&widths.map(|w| "-".repeat(w)));
    for row in &cells {
        line(row);
    }
    out
}

/// A number for the table: about four significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        format!("{v}")
    } else if a >= 1000.0 || (v == v.trunc() && a < 1e15) {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// A JSON number rounded to 6 significant digits (`null` if not finite).
fn json_num(v: f64) -> String {
    if !v.is_finite() {
        return "null".into();
    }
    let rounded: f64 = format!("{v:.5e}").parse().unwrap_or(v);
    format!("{rounded}")
}

/// A JSON string literal with the required escapes.
fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Median of `v` (sorts it); NaN when empty.
pub fn median(v: &mut [f64]) -> f64 {
    percentile(v, 50.0)
}

/// The `p`-th percentile of `v` by nearest rank (sorts it); NaN when empty.
pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    if p == 50.0 && v.len().is_multiple_of(2) {
        let m = v.len() / 2;
        return (v[m - 1] + v[m]) / 2.0;
    }
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A measurement for the tests.
    fn sample() -> Measurement {
        Measurement {
            suite: "spheres",
            case: "trivial \"x\"".into(),
            unit: "ns/item",
            better: Better::Lower,
            ours: 1.5,
            baseline_name: "rayon".into(),
            baseline: 3.0,
            target: Some(Target::RatioAtMost(1.0)),
        }
    }

    /// The JSON line matches the documented format byte for byte.
    #[test]
    fn json_line_has_the_exact_shape() {
        assert_eq!(
            sample().to_json(),
            "{\"suite\":\"spheres\",\"case\":\"trivial \\\"x\\\"\",\"unit\":\"ns/item\",\"better\":\"lower\",\"ours\":1.5,\"baseline_name\":\"rayon\",\"baseline\":3,\"ratio\":0.5}"
        );
    }

    /// The table carries the verdict of the target.
    #[test]
    fn table_shows_target_verdict() {
        let t = table(&[sample()]);
        assert!(t.contains("ratio<=1: met"), "{t}");
        assert_eq!(t.lines().count(), 3);
    }

    /// Median averages the middle pair; percentiles use nearest rank.
    #[test]
    fn median_and_percentile() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        let mut v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&mut v, 99.0), 990.0);
    }
}
