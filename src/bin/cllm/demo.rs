//! `cllm demo`: the main job on embedded defaults.

/// Runs the demo.
pub fn run(_args: &[String]) -> Result<(), String> {
    Err("demo is not implemented yet".into())
}
