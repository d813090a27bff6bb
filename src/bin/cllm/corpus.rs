//! The default training text of `cllm train`, `cllm demo` and
//! `cllm bench training`: the repository's own documentation, library
//! sources and C tests, embedded at build time (about 330 KB, no download).

/// One embedded file: its path in the repository and its text.
pub struct Part {
    /// Path relative to the repository root.
    pub path: &'static str,
    /// The file's text.
    pub text: &'static str,
}

/// Embeds `path` (relative to the repository root) as a [`Part`].
macro_rules! part {
    ($path:literal) => {
        Part { path: $path, text: include_str!(concat!("../../../", $path)) }
    };
}

/// The embedded files, in corpus order. The validation split is the tail
/// of the last files, so they are C tests like several before them.
pub const PARTS: &[Part] = &[
    part!("README.md"),
    part!("src/spheres/queue.rs"),
    part!("src/spheres/hierarchy.rs"),
    part!("src/spheres/mailbox.rs"),
    part!("src/spheres/stats.rs"),
    part!("src/runtime/lanes.rs"),
    part!("src/runtime/builder.rs"),
    part!("src/runtime/plan.rs"),
    part!("src/runtime/engine.rs"),
    part!("src/echobeats/mod.rs"),
    part!("src/echobeats/steps.rs"),
    part!("c_tests/test_mailbox.c"),
    part!("c_tests/test_reduction_and_barriers.c"),
    part!("c_tests/test_work_queue_fifo_and_stealing.c"),
    part!("c_tests/test_hierarchy_structure.c"),
    part!("c_tests/test_mini_runtime_mlp.c"),
    part!("c_tests/test_echobeats_sync_cycle.c"),
];

/// The embedded files concatenated, as bytes.
pub fn bytes() -> Vec<u8> {
    let mut out = Vec::with_capacity(PARTS.iter().map(|p| p.text.len()).sum());
    for p in PARTS {
        out.extend_from_slice(p.text.as_bytes());
    }
    out
}

/// A short description of the embedded corpus for the output.
pub fn describe() -> String {
    let (first, last) = (PARTS[0].path, PARTS[PARTS.len() - 1].path);
    format!("embedded corpus ({} repository files: {first}, {}, …, {last})", PARTS.len(), PARTS[1].path)
}

/// Byte-level tokens (vocabulary 256) of `bytes`.
pub fn tokens(bytes: &[u8]) -> Vec<u32> {
    bytes.iter().map(|&b| u32::from(b)).collect()
}
