//! `cllm bench <suite> [--json]`.

/// Runs the named suite.
pub fn run(args: &[String]) -> Result<(), String> {
    Err(format!("bench is not implemented yet: {args:?}"))
}
