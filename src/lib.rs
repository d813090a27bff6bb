//! libcllm: threading and runtime components for small neural models, with
//! a safe Rust core and a C ABI (`src/ffi`) for C, C++ and Python callers.
#![warn(missing_docs)]

pub mod echobeats;
pub mod error;
pub mod ffi;
pub mod runtime;
pub mod spheres;
pub mod sys;
pub mod training;

pub use error::{Error, Result};

/// The crate version, as in Cargo.toml.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
