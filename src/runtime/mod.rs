//! mini_runtime: a tiled matmul "virtual accelerator". Tensors live in
//! simulated DRAM, a schedule moves 32×32 fp32 tiles into a simulated SRAM
//! scratchpad, multiplies them and stores the results back, either in order
//! on the calling thread or pipelined over a DMA lane and compute lanes.

pub mod builder;
mod engine;
pub mod kernels;
mod lanes;
mod memory;
mod plan;
mod ring;
pub mod schedule;
mod step;
mod trace;

pub use builder::{build_schedule, reference_mlp_layers, BuildOptions, BuiltSchedule, MatmulLayer, TensorRef};
pub use engine::{Engine, EngineConfig, EngineStats, MAX_SRAM_BYTES};
pub use kernels::KernelImpl;
pub use plan::MAX_COMPUTE_LANES;
pub use schedule::{Exec, Load, Op, OpCounts, Store};

/// Tile edge: tiles are `TILE_DIM × TILE_DIM` fp32 values.
pub const TILE_DIM: usize = 32;
/// Floats in one tile.
pub const TILE_FLOATS: usize = TILE_DIM * TILE_DIM;
/// Bytes in one tile (32 × 32 × 4).
pub const TILE_BYTES: usize = TILE_FLOATS * 4;
/// Alignment of tensor storage, SRAM and every SRAM address in a schedule.
pub const ALIGNMENT: usize = 64;
