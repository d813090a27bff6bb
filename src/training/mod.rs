//! Threaded training: a decoder-only transformer language model (or any
//! [`GradientModel`]) trained data-parallel over the kissing spheres, with
//! batches, optimizers, schedules, checkpoints and text generation.

pub mod batch;
pub mod bigram;
pub mod checkpoint;
pub mod generate;
pub mod model;
pub mod ops;
pub mod optim;
pub mod trainer;
pub mod transformer;

pub use batch::{Batch, BatchIterator, SplitMix64, PAD_TOKEN};
pub use bigram::BigramModel;
pub use model::{GradientModel, ModelWorker, ParamTensor, Sequence, TransformerModel};
pub use optim::{LrSchedule, OptimizerKind, ScheduleKind, UpdateParams};
pub use trainer::{
    EpochReport, OptimizerState, StepReport, ThreadedTrainer, TrainerMonitor, TrainingConfig, WorkerStats,
};
pub use transformer::{Transformer, TransformerConfig};
