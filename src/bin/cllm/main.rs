//! `cllm`: the command-line front end — `cllm demo` runs the main job on
//! embedded defaults, `cllm train` trains the byte-level transformer,
//! `cllm bench <suite> [--json]` runs a benchmark suite against its
//! baseline in the same process.

mod bench;
mod corpus;
mod demo;
mod mlp_fixture;
mod train;

use std::process::ExitCode;

const USAGE: &str = "usage:
  cllm demo                      run the main job on embedded defaults
  cllm train [options]           train a byte-level transformer (cllm train --help for the options)
  cllm bench <suite> [--json]    run a benchmark suite; suites: spheres, echobeats, engine, training
  cllm version                   print the library version";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("demo") => demo::run(&args[1..]),
        Some("train") => train::run(&args[1..]),
        // A busy loop on one core, used by `cllm bench engine` as the
        // "other process" of its contention case; it runs until killed.
        Some("__spin") => loop {
            std::hint::black_box(0u64);
        },
        Some("bench") => bench::run(&args[1..]),
        Some("version") | Some("--version") => {
            println!("cllm {}", cllm::VERSION);
            Ok(())
        }
        Some("help") | Some("--help") | Some("-h") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(format!("unknown or missing command\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cllm: {e}");
            ExitCode::FAILURE
        }
    }
}
