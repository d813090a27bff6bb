//! The loss curve of a training run: collected per step and per epoch,
//! written as CSV and as a hand-written SVG plot (no dependencies).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One optimizer step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrainPoint {
    /// Steps taken so far (this one included).
    pub step: u64,
    /// 1-based epoch of the step.
    pub epoch: u64,
    /// Mean training loss of the step's batch.
    pub loss: f64,
    /// Learning rate used.
    pub lr: f32,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Tokens of the step over its wall time.
    pub tokens_per_s: f64,
}

/// The validation loss after `step` steps (epoch 0: before training).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ValPoint {
    /// Steps taken when it was measured.
    pub step: u64,
    /// Epochs completed when it was measured.
    pub epoch: u64,
    /// Mean loss over the validation batches.
    pub loss: f64,
}

/// Everything the CSV and the plot show.
#[derive(Debug, Clone, Default)]
pub struct LossCurve {
    /// Per step, in order.
    pub train: Vec<TrainPoint>,
    /// Per evaluation, in order.
    pub val: Vec<ValPoint>,
}

/// Plot size and margins, in SVG user units.
const W: f64 = 800.0;
const H: f64 = 480.0;
const LEFT: f64 = 72.0;
const RIGHT: f64 = 24.0;
const TOP: f64 = 44.0;
const BOTTOM: f64 = 56.0;
const TRAIN_COLOUR: &str = "#1f77b4";
const VAL_COLOUR: &str = "#d62728";

impl LossCurve {
    /// `step,epoch,train_loss,val_loss,lr,grad_norm,tokens_per_s`: one row
    /// per step (empty `val_loss`) and one per evaluation (only `step`,
    /// `epoch` and `val_loss`), in step order, an evaluation after the
    /// step it follows.
    pub fn csv(&self) -> String {
        let mut s = String::from("step,epoch,train_loss,val_loss,lr,grad_norm,tokens_per_s\n");
        let mut val = self.val.iter().peekable();
        for t in &self.train {
            while let Some(v) = val.next_if(|v| v.step < t.step) {
                let _ = writeln!(s, "{},{},,{:.6},,,", v.step, v.epoch, v.loss);
            }
            let _ = writeln!(
                s,
                "{},{},{:.6},,{:.6e},{:.6},{:.1}",
                t.step, t.epoch, t.loss, t.lr, t.grad_norm, t.tokens_per_s
            );
        }
        for v in val {
            let _ = writeln!(s, "{},{},,{:.6},,,", v.step, v.epoch, v.loss);
        }
        s
    }

    /// A line plot of the training loss per step with the validation
    /// losses as points, axes with ticks and labels, and a legend.
    pub fn svg(&self, title: &str) -> String {
        let losses = self.train.iter().map(|p| p.loss).chain(self.val.iter().map(|p| p.loss)).filter(|l| l.is_finite());
        let (lo, hi) = losses.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), l| (a.min(l), b.max(l)));
        let (lo, hi) = if lo <= hi { (lo, hi) } else { (0.0, 1.0) };
        let (y_lo, y_hi, y_step) = nice_range(lo, hi);
        let max_step = self.train.iter().map(|p| p.step).chain(self.val.iter().map(|p| p.step)).max().unwrap_or(0);
        // The x axis ends at the last step; its ticks are round.
        let x_hi = max_step.max(1) as f64;
        let (_, _, x_step) = nice_range(0.0, x_hi);
        let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
        let x = |step: f64| LEFT + step / x_hi * pw;
        let y = |loss: f64| TOP + (y_hi - loss) / (y_hi - y_lo) * ph;

        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" \
             font-family=\"sans-serif\" font-size=\"12\">"
        );
        let _ = writeln!(s, "<rect width=\"{W}\" height=\"{H}\" fill=\"white\"/>");
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"26\" text-anchor=\"middle\" font-size=\"15\">{}</text>",
            LEFT + pw / 2.0,
            xml_escape(title)
        );
        // Grid lines and tick labels.
        for v in ticks(y_lo, y_hi, y_step) {
            let py = y(v);
            let _ = writeln!(
                s,
                "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT + pw,
                LEFT - 6.0,
                py + 4.0,
                tick_label(v, y_step)
            );
        }
        for v in ticks(0.0, (x_hi / x_step).floor() * x_step, x_step) {
            let px = x(v);
            let _ = writeln!(
                s,
                "<line x1=\"{px:.1}\" y1=\"{TOP}\" x2=\"{px:.1}\" y2=\"{:.1}\" stroke=\"#e4e4e4\"/>\
                 <text x=\"{px:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP + ph,
                TOP + ph + 18.0,
                tick_label(v, x_step)
            );
        }
        // Axes and their labels.
        let _ = writeln!(
            s,
            "<polyline points=\"{LEFT},{TOP} {LEFT},{:.1} {:.1},{:.1}\" fill=\"none\" stroke=\"black\"/>",
            TOP + ph,
            LEFT + pw,
            TOP + ph
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">optimizer step</text>",
            LEFT + pw / 2.0,
            H - 14.0
        );
        let _ = writeln!(
            s,
            "<text transform=\"translate(18 {:.1}) rotate(-90)\" text-anchor=\"middle\">loss (nats per byte)</text>",
            TOP + ph / 2.0
        );
        // The training loss per step, faint, and its moving average.
        let train: Vec<(f64, f64)> =
            self.train.iter().filter(|p| p.loss.is_finite()).map(|p| (p.step as f64, p.loss)).collect();
        let polyline = |pts: &mut dyn Iterator<Item = (f64, f64)>| {
            pts.map(|(step, loss)| format!("{:.1},{:.1}", x(step), y(loss))).collect::<Vec<_>>().join(" ")
        };
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{TRAIN_COLOUR}\" stroke-opacity=\"0.35\" stroke-width=\"1\"/>",
            polyline(&mut train.iter().copied())
        );
        let smooth = moving_average(&train.iter().map(|p| p.1).collect::<Vec<_>>(), train.len() / 40);
        let _ = writeln!(
            s,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{TRAIN_COLOUR}\" stroke-width=\"2\"/>",
            polyline(&mut train.iter().zip(smooth).map(|(p, m)| (p.0, m)))
        );
        // The validation losses.
        for p in self.val.iter().filter(|p| p.loss.is_finite()) {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"{VAL_COLOUR}\"><title>epoch {}: validation loss {:.4}</title></circle>",
                x(p.step as f64),
                y(p.loss),
                p.epoch,
                p.loss
            );
        }
        // Legend, top right: a mark and a label per row.
        let lx = LEFT + pw - 218.0;
        let _ = writeln!(
            s,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"210\" height=\"66\" fill=\"white\" stroke=\"#bbbbbb\"/>",
            TOP + 8.0
        );
        let line = |opacity: f64, width: f64| {
            format!(
                "<line x1=\"{:.1}\" x2=\"{:.1}\" stroke=\"{TRAIN_COLOUR}\" stroke-opacity=\"{opacity}\" stroke-width=\"{width}\"",
                lx + 8.0,
                lx + 30.0
            )
        };
        let rows = [
            (line(0.35, 1.0), "training loss per step"),
            (line(1.0, 2.0), "its moving average"),
            (format!("<circle cx=\"{:.1}\" r=\"4.5\" fill=\"{VAL_COLOUR}\"", lx + 19.0), "validation loss per epoch"),
        ];
        for (i, (mark, label)) in rows.iter().enumerate() {
            let ry = TOP + 22.0 + 20.0 * i as f64;
            let attr = if mark.starts_with("<line") {
                format!("y1=\"{ry:.1}\" y2=\"{ry:.1}\"")
            } else {
                format!("cy=\"{ry:.1}\"")
            };
            let _ = writeln!(s, "{mark} {attr}/><text x=\"{:.1}\" y=\"{:.1}\">{label}</text>", lx + 38.0, ry + 4.0);
        }
        s.push_str("</svg>\n");
        s
    }

    /// Writes `loss.csv` and `loss.svg` into `dir` (created if needed);
    /// returns their paths.
    pub fn write(&self, dir: &Path, title: &str) -> Result<(PathBuf, PathBuf), String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let (csv, svg) = (dir.join("loss.csv"), dir.join("loss.svg"));
        std::fs::write(&csv, self.csv()).map_err(|e| format!("cannot write {}: {e}", csv.display()))?;
        std::fs::write(&svg, self.svg(title)).map_err(|e| format!("cannot write {}: {e}", svg.display()))?;
        Ok((csv, svg))
    }
}

/// An axis range covering `lo..=hi` with round ends and about 6 ticks
/// 1, 2 or 5 × 10^k apart: `(start, end, tick step)`.
fn nice_range(lo: f64, hi: f64) -> (f64, f64, f64) {
    let span = if hi - lo > 1e-9 { hi - lo } else { lo.abs().max(1.0) * 0.1 };
    let raw = span / 6.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].into_iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let mut end = (hi / step).ceil() * step;
    if end <= start {
        end = start + step;
    }
    (start, end, step)
}

/// The mean of `v` over a window of up to `2·half + 1` values centred on
/// each (narrowed at the ends, so the first and last values are kept).
fn moving_average(v: &[f64], half: usize) -> Vec<f64> {
    let mut prefix = vec![0.0; v.len() + 1];
    for (i, x) in v.iter().enumerate() {
        prefix[i + 1] = prefix[i] + x;
    }
    (0..v.len())
        .map(|i| {
            let h = half.min(i).min(v.len() - 1 - i);
            let (a, b) = (i - h, i + h + 1);
            (prefix[b] - prefix[a]) / (b - a) as f64
        })
        .collect()
}

/// The tick values from `start` to `end` (inclusive) by `step`.
fn ticks(start: f64, end: f64, step: f64) -> impl Iterator<Item = f64> {
    let n = ((end - start) / step).round() as usize;
    (0..=n).map(move |i| start + i as f64 * step)
}

/// A tick label with as many decimals as the step needs.
fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-step.log10().floor()).clamp(0.0, 6.0) as usize;
    format!("{v:.decimals$}")
}

/// `s` with the XML special characters escaped.
fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve() -> LossCurve {
        let train = (1..=10)
            .map(|i| TrainPoint {
                step: i,
                epoch: 1 + (i > 5) as u64,
                loss: 5.0 - i as f64 * 0.3,
                lr: 1e-3,
                grad_norm: 0.5,
                tokens_per_s: 1000.0,
            })
            .collect();
        let val = vec![
            ValPoint { step: 0, epoch: 0, loss: 5.5 },
            ValPoint { step: 5, epoch: 1, loss: 3.6 },
            ValPoint { step: 10, epoch: 2, loss: 2.2 },
        ];
        LossCurve { train, val }
    }

    /// Validation rows sit between the training rows at their step.
    #[test]
    fn csv_interleaves_validation_rows() {
        let csv = curve().csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines.len(), 1 + 10 + 3);
        assert_eq!(lines[1], "0,0,,5.500000,,,");
        assert!(lines[2].starts_with("1,1,4.700000,,"), "{}", lines[2]);
        assert_eq!(lines[7], "5,1,,3.600000,,,");
        assert_eq!(lines[13], "10,2,,2.200000,,,");
    }

    /// The plot has one polyline point per step and one circle per
    /// validation loss (plus the legend's).
    #[test]
    fn svg_has_the_curve_and_the_points() {
        let svg = curve().svg("a <test>");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a &lt;test&gt;"));
        assert_eq!(svg.matches("<circle").count(), 3 + 1);
        let lines: Vec<&str> = svg.lines().filter(|l| l.contains(TRAIN_COLOUR) && l.starts_with("<polyline")).collect();
        assert_eq!(lines.len(), 2, "raw and smoothed");
        assert!(lines.iter().all(|l| l.matches(',').count() == 10));
    }

    /// Ranges are round and cover the data.
    #[test]
    fn nice_ranges() {
        assert_eq!(nice_range(0.0, 1000.0), (0.0, 1000.0, 200.0));
        let (a, b, s) = nice_range(1.37, 5.55);
        assert!(a <= 1.37 && b >= 5.55 && s == 1.0, "{a} {b} {s}");
        let (a, b, _) = nice_range(2.0, 2.0);
        assert!(a < b);
        assert_eq!(tick_label(0.25, 0.05), "0.25");
        assert_eq!(moving_average(&[1.0, 2.0, 3.0, 10.0], 1), vec![1.0, 2.0, 5.0, 10.0]);
        assert_eq!(tick_label(400.0, 200.0), "400");
    }
}
