//! Optimizers, learning-rate schedules and gradient clipping.

use super::ops::multiversion;
use crate::error::{invalid, Result};

/// First-moment decay of Adam/AdamW.
pub const ADAM_BETA1: f32 = 0.9;
/// Second-moment decay of Adam/AdamW.
pub const ADAM_BETA2: f32 = 0.999;
/// Adam's denominator guard.
pub const ADAM_EPS: f32 = 1e-8;
/// Momentum of "sgd".
pub const SGD_MOMENTUM: f32 = 0.9;

/// The update rule named by `config.optimizer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptimizerKind {
    /// Adam with decoupled weight decay ("adamw", and the default for "").
    AdamW,
    /// Adam with L2 weight decay added to the gradient ("adam").
    Adam,
    /// SGD with momentum 0.9 and L2 weight decay ("sgd").
    Sgd,
}

impl OptimizerKind {
    /// Parses a configuration name (case-insensitive; "" = AdamW).
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "adamw" => Ok(OptimizerKind::AdamW),
            "adam" => Ok(OptimizerKind::Adam),
            "sgd" => Ok(OptimizerKind::Sgd),
            other => Err(invalid!("unknown optimizer \"{other}\" (known: adamw, adam, sgd)")),
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            OptimizerKind::AdamW => "adamw",
            OptimizerKind::Adam => "adam",
            OptimizerKind::Sgd => "sgd",
        }
    }

    /// State vectors per parameter: 2 for Adam, 1 for SGD's momentum.
    pub fn state_vectors(self) -> usize {
        match self {
            OptimizerKind::Sgd => 1,
            _ => 2,
        }
    }
}

/// How the learning rate changes after warm-up (`config.lr_scheduler`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScheduleKind {
    /// Constant ("", "none", "constant").
    Constant,
    /// Linear decay to `min_lr` at the last step ("linear").
    Linear,
    /// Half-cosine decay to `min_lr` at the last step ("cosine").
    Cosine,
    /// Multiply by `lr_decay_factor` every `lr_decay_steps` steps ("step").
    Step,
}

impl ScheduleKind {
    /// Parses a configuration name (case-insensitive).
    pub fn parse(name: &str) -> Result<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "" | "none" | "constant" => Ok(ScheduleKind::Constant),
            "linear" => Ok(ScheduleKind::Linear),
            "cosine" => Ok(ScheduleKind::Cosine),
            "step" => Ok(ScheduleKind::Step),
            other => Err(invalid!("unknown lr_scheduler \"{other}\" (known: none, linear, cosine, step)")),
        }
    }

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            ScheduleKind::Constant => "none",
            ScheduleKind::Linear => "linear",
            ScheduleKind::Cosine => "cosine",
            ScheduleKind::Step => "step",
        }
    }
}

/// A learning-rate schedule: linear warm-up over `warmup_steps`, then
/// the decay of `kind`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrSchedule {
    /// Peak learning rate.
    pub base_lr: f32,
    /// Floor of every decay.
    pub min_lr: f32,
    /// Steps of linear warm-up from `base_lr / warmup_steps` to `base_lr`.
    pub warmup_steps: u64,
    /// Decay after warm-up.
    pub kind: ScheduleKind,
    /// Total optimizer steps (end of linear and cosine decay).
    pub total_steps: u64,
    /// Factor of the step decay.
    pub decay_factor: f32,
    /// Interval of the step decay.
    pub decay_steps: u64,
}

impl LrSchedule {
    /// Checks the values a schedule of this kind needs.
    pub fn validate(&self) -> Result<()> {
        if !(self.base_lr.is_finite() && self.base_lr > 0.0) {
            return Err(invalid!("learning_rate must be finite and > 0, got {}", self.base_lr));
        }
        if !(self.min_lr.is_finite() && self.min_lr >= 0.0 && self.min_lr <= self.base_lr) {
            return Err(invalid!("min_lr must be in [0, learning_rate], got {}", self.min_lr));
        }
        match self.kind {
            ScheduleKind::Linear | ScheduleKind::Cosine if self.total_steps == 0 => {
                Err(invalid!("the {} schedule needs max_steps or num_epochs to know its length", self.kind.name()))
            }
            ScheduleKind::Step if self.decay_steps == 0 => Err(invalid!("the step schedule needs lr_decay_steps >= 1")),
            ScheduleKind::Step if !(self.decay_factor.is_finite() && self.decay_factor > 0.0) => {
                Err(invalid!("lr_decay_factor must be finite and > 0, got {}", self.decay_factor))
            }
            _ => Ok(()),
        }
    }

    /// Learning rate of optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f32 {
        if step < self.warmup_steps {
            return self.base_lr * (step + 1) as f32 / self.warmup_steps as f32;
        }
        let after = step - self.warmup_steps;
        let span = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = (after as f64 / span as f64).min(1.0);
        let (base, min) = (self.base_lr as f64, self.min_lr as f64);
        let lr = match self.kind {
            ScheduleKind::Constant => base,
            ScheduleKind::Linear => min + (base - min) * (1.0 - progress),
            ScheduleKind::Cosine => min + (base - min) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()),
            ScheduleKind::Step => {
                let k = (after / self.decay_steps).min(i32::MAX as u64) as i32;
                (base * (self.decay_factor as f64).powi(k)).max(min)
            }
        };
        lr as f32
    }
}

/// The hyper-parameters of one update.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UpdateParams {
    /// Rule.
    pub kind: OptimizerKind,
    /// Learning rate of this step.
    pub lr: f32,
    /// Weight decay for parameters that decay.
    pub weight_decay: f32,
    /// Multiplier of the raw gradient (clipping × 1).
    pub grad_scale: f32,
    /// 1-based step number (Adam's bias correction).
    pub step: u64,
}

/// The clipping multiplier for a global gradient norm: `clip / norm` when
/// clipping is on (`clip > 0`) and the norm exceeds it, else 1.
pub fn clip_scale(norm: f64, clip: f32) -> f32 {
    if clip > 0.0 && norm.is_finite() && norm > clip as f64 {
        (clip as f64 / norm) as f32
    } else {
        1.0
    }
}

/// Applies one update to a slice of parameters. `m` and `v` are the
/// optimizer state for the same slice (`v` unused by SGD), `decay` says
/// whether this slice takes weight decay. Element-wise, so any split of
/// the parameters into slices gives the same result.
pub fn apply_update(p: &UpdateParams, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32], decay: bool) {
    let wd = if decay { p.weight_decay } else { 0.0 };
    match p.kind {
        OptimizerKind::AdamW | OptimizerKind::Adam => {
            let t = p.step.min(i32::MAX as u64) as i32;
            let c1 = 1.0 / (1.0 - ADAM_BETA1.powi(t));
            let c2 = 1.0 / (1.0 - ADAM_BETA2.powi(t));
            let h = AdamStep { lr: p.lr, wd, grad_scale: p.grad_scale, c1, c2, coupled: p.kind == OptimizerKind::Adam };
            adam_update(&h, params, grads, m, v);
        }
        OptimizerKind::Sgd => sgd_update(p.lr, wd, p.grad_scale, params, grads, m),
    }
}

/// The per-step constants of an Adam update.
struct AdamStep {
    lr: f32,
    wd: f32,
    grad_scale: f32,
    /// 1 / (1 − β₁ᵗ) and 1 / (1 − β₂ᵗ).
    c1: f32,
    c2: f32,
    /// L2 decay in the gradient ("adam") instead of decoupled ("adamw").
    coupled: bool,
}

multiversion! {
    /// One Adam/AdamW update of a slice; element-wise, no fused
    /// multiply-add, so every vector width gives the same bits.
    fn adam_update(h: &AdamStep, params: &mut [f32], grads: &[f32], m: &mut [f32], v: &mut [f32]) {
        for (((w, &g), m), v) in params.iter_mut().zip(grads).zip(m.iter_mut()).zip(v.iter_mut()) {
            let mut g = g * h.grad_scale;
            if h.coupled {
                g += h.wd * *w;
            }
            *m = ADAM_BETA1 * *m + (1.0 - ADAM_BETA1) * g;
            *v = ADAM_BETA2 * *v + (1.0 - ADAM_BETA2) * g * g;
            let step = (*m * h.c1) / ((*v * h.c2).sqrt() + ADAM_EPS);
            *w -= h.lr * if h.coupled { step } else { step + h.wd * *w };
        }
    }
}

multiversion! {
    /// One SGD-with-momentum update of a slice.
    fn sgd_update(lr: f32, wd: f32, grad_scale: f32, params: &mut [f32], grads: &[f32], m: &mut [f32]) {
        for ((w, &g), m) in params.iter_mut().zip(grads).zip(m.iter_mut()) {
            let g = g * grad_scale + wd * *w;
            *m = SGD_MOMENTUM * *m + g;
            *w -= lr * *m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: ScheduleKind) -> LrSchedule {
        LrSchedule {
            base_lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 4,
            kind,
            total_steps: 14,
            decay_factor: 0.5,
            decay_steps: 3,
        }
    }

    #[test]
    fn warmup_is_linear_up_to_the_base_rate() {
        let s = sched(ScheduleKind::Constant);
        assert_eq!([s.lr(0), s.lr(1), s.lr(2), s.lr(3), s.lr(4), s.lr(100)], [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn decays_match_hand_computed_values() {
        // After 4 warm-up steps, 10 decay steps.
        let l = sched(ScheduleKind::Linear);
        assert!((l.lr(4) - 1.0).abs() < 1e-6);
        assert!((l.lr(9) - 0.55).abs() < 1e-6); // 0.1 + 0.9 * 0.5
        assert!((l.lr(14) - 0.1).abs() < 1e-6);
        assert!((l.lr(1000) - 0.1).abs() < 1e-6);
        let c = sched(ScheduleKind::Cosine);
        assert!((c.lr(9) - 0.55).abs() < 1e-6); // cos(π/2) = 0
        let quarter = 0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * 0.2).cos());
        assert!((c.lr(6) as f64 - quarter).abs() < 1e-6);
        let st = sched(ScheduleKind::Step);
        assert_eq!([st.lr(4), st.lr(6), st.lr(7), st.lr(10), st.lr(13), st.lr(40)], [1.0, 1.0, 0.5, 0.25, 0.125, 0.1]);
    }

    #[test]
    fn names_parse_and_unknown_ones_fail() {
        assert_eq!(OptimizerKind::parse("AdamW").unwrap(), OptimizerKind::AdamW);
        assert_eq!(OptimizerKind::parse("").unwrap(), OptimizerKind::AdamW);
        assert_eq!(OptimizerKind::parse("adam").unwrap(), OptimizerKind::Adam);
        assert_eq!(OptimizerKind::parse("sgd").unwrap(), OptimizerKind::Sgd);
        assert!(OptimizerKind::parse("lion").is_err());
        assert_eq!(ScheduleKind::parse("cosine").unwrap(), ScheduleKind::Cosine);
        assert!(ScheduleKind::parse("exponential").is_err());
        let mut s = sched(ScheduleKind::Cosine);
        s.total_steps = 0;
        assert!(s.validate().is_err());
        let mut s = sched(ScheduleKind::Step);
        s.decay_steps = 0;
        assert!(s.validate().is_err());
        assert!(sched(ScheduleKind::Linear).validate().is_ok());
    }

    #[test]
    fn adamw_step_matches_hand_computed_values() {
        // Step 1: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², update = g/|g| = sign.
        let p = UpdateParams { kind: OptimizerKind::AdamW, lr: 0.1, weight_decay: 0.5, grad_scale: 1.0, step: 1 };
        let mut w = [1.0f32, -2.0];
        let (mut m, mut v) = ([0.0f32; 2], [0.0f32; 2]);
        apply_update(&p, &mut w, &[0.5, -4.0], &mut m, &mut v, true);
        // w - lr (sign(g) + wd w): 1 - 0.1 (1 + 0.5) = 0.85; -2 - 0.1 (-1 - 1) = -1.8
        assert!((w[0] - 0.85).abs() < 1e-6 && (w[1] + 1.8).abs() < 1e-6, "{w:?}");
        assert!((m[0] - 0.05).abs() < 1e-6 && (v[1] - 0.016).abs() < 1e-6);
        // Without decay for this slice.
        let mut w = [1.0f32];
        let (mut m, mut v) = ([0.0f32], [0.0f32]);
        apply_update(&p, &mut w, &[0.5], &mut m, &mut v, false);
        assert!((w[0] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn adam_couples_decay_into_the_gradient() {
        let p = UpdateParams { kind: OptimizerKind::Adam, lr: 0.1, weight_decay: 1.0, grad_scale: 1.0, step: 1 };
        // g' = g + wd·w = -0.5 + 1 = 0.5 > 0 → w decreases by lr.
        let mut w = [1.0f32];
        let (mut m, mut v) = ([0.0f32], [0.0f32]);
        apply_update(&p, &mut w, &[-0.5], &mut m, &mut v, true);
        assert!((w[0] - 0.9).abs() < 1e-6);
    }

    #[test]
    fn sgd_momentum_accumulates() {
        let p = UpdateParams { kind: OptimizerKind::Sgd, lr: 0.1, weight_decay: 0.0, grad_scale: 0.5, step: 1 };
        let mut w = [1.0f32];
        let (mut m, mut v) = ([0.0f32], [0.0f32]);
        apply_update(&p, &mut w, &[2.0], &mut m, &mut v, true);
        assert!((w[0] - 0.9).abs() < 1e-6); // m = 1
        apply_update(&p, &mut w, &[2.0], &mut m, &mut v, true);
        assert!((w[0] - 0.71).abs() < 1e-6); // m = 0.9 + 1 = 1.9
    }

    #[test]
    fn clipping_scales_only_above_the_threshold() {
        assert_eq!(clip_scale(2.0, 1.0), 0.5);
        assert_eq!(clip_scale(0.5, 1.0), 1.0);
        assert_eq!(clip_scale(5.0, 0.0), 1.0);
        assert_eq!(clip_scale(f64::NAN, 1.0), 1.0);
    }
}
