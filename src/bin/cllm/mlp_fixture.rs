//! The reference MLP as the demo and the benchmark use it: deterministic
//! data, and an engine holding the MLP's tensors with its built schedule.

use cllm::runtime::{build_schedule, builder, reference_mlp_layers, BuildOptions, Engine, EngineConfig, Op};

/// Tensor names in the order of `builder::REFERENCE_MLP_SHAPES`.
pub const NAMES: [&str; 7] = ["x", "w1", "h1", "w2", "h2", "w3", "out"];

/// Whether tensor `i` of `NAMES` is an input the caller sets (the others
/// are results).
pub fn is_input(i: usize) -> bool {
    !matches!(NAMES[i], "h1" | "h2" | "out")
}

/// `n` deterministic pseudo-random values in [-0.5, 0.5) (xorshift).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// The MLP's inputs: `uniform` data times `scale` for each input tensor,
/// an empty vector for each result.
pub fn inputs(scale: f32) -> Vec<Vec<f32>> {
    builder::REFERENCE_MLP_SHAPES
        .iter()
        .enumerate()
        .map(
            |(i, (r, c))| {
                if is_input(i) {
                    uniform(r * c, i as u64).into_iter().map(|v| v * scale).collect()
                } else {
                    Vec::new()
                }
            },
        )
        .collect()
}

/// An engine made with `config` holding the MLP's tensors set to `inputs`,
/// and the MLP's schedule built for its SRAM.
pub fn engine(config: EngineConfig, inputs: &[Vec<f32>]) -> cllm::Result<(Engine, Vec<Op>)> {
    let mut e = Engine::new(config)?;
    let mut ids = [0u32; 7];
    for (i, (name, (r, c))) in NAMES.iter().zip(builder::REFERENCE_MLP_SHAPES).enumerate() {
        ids[i] = e.register_tensor(name, r, c)?;
        if !inputs[i].is_empty() {
            e.set_tensor(name, &inputs[i], r, c)?;
        }
    }
    let schedule = build_schedule(&reference_mlp_layers(ids), &BuildOptions { sram_bytes: config.sram_bytes })?;
    Ok((e, schedule.ops))
}
