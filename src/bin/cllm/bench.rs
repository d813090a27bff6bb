//! `cllm bench <suite> [--json]`: runs one benchmark suite against its
//! baselines in the same process. Results go to stdout (a table, or one
//! JSON object per line with `--json`); progress goes to stderr.
//!
//! A suite is a `bench_<name>.rs` module with a `run(&mut Reporter)`
//! function, listed in [`SUITES`].

#[path = "bench_echobeats.rs"]
mod bench_echobeats;
#[path = "bench_engine.rs"]
mod bench_engine;
#[path = "bench_mutex_pool.rs"]
mod bench_mutex_pool;
#[path = "bench_report.rs"]
mod bench_report;
#[path = "bench_spheres.rs"]
mod bench_spheres;
#[path = "bench_training.rs"]
mod bench_training;

use bench_report::Reporter;

/// One runnable suite.
struct Suite {
    /// Name given on the command line.
    name: &'static str,
    /// One-line description for the usage text.
    about: &'static str,
    /// Runs every case, recording measurements.
    run: fn(&mut Reporter) -> Result<(), String>,
}

/// Every suite, in the order of the usage text.
const SUITES: &[Suite] = &[
    Suite {
        name: "spheres",
        about: "kissing-spheres scheduler vs rayon and a mutex+condvar pool",
        run: bench_spheres::run,
    },
    Suite {
        name: "echobeats",
        about: "Echobeats task pool vs a mutex+condvar pool of the original design",
        run: bench_echobeats::run,
    },
    Suite {
        name: "engine",
        about: "mini_runtime engine: sequential vs pipelined, 512³ and tile kernels vs matrixmultiply",
        run: bench_engine::run,
    },
    Suite {
        name: "training",
        about: "transformer training steps at 1 and 2 threads vs llm.c's figures on this machine",
        run: bench_training::run,
    },
];

/// The usage text with the list of suites.
fn usage() -> String {
    let mut s = String::from("usage: cllm bench <suite> [--json]\nsuites:");
    for suite in SUITES {
        s.push_str(&format!("\n  {:<10} {}", suite.name, suite.about));
    }
    s
}

/// Runs the suite named by `args[0]`; `--json` selects JSON lines.
pub fn run(args: &[String]) -> Result<(), String> {
    let mut json = false;
    let mut name = None;
    for a in args {
        match a.as_str() {
            "--json" => json = true,
            "-h" | "--help" => {
                println!("{}", usage());
                return Ok(());
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option '{flag}'\n{}", usage())),
            suite if name.is_none() => name = Some(suite),
            extra => return Err(format!("unexpected argument '{extra}'\n{}", usage())),
        }
    }
    let name = name.ok_or_else(|| format!("missing suite\n{}", usage()))?;
    let suite = SUITES.iter().find(|s| s.name == name).ok_or_else(|| format!("unknown suite '{name}'\n{}", usage()))?;
    let mut reporter = Reporter::new(json);
    (suite.run)(&mut reporter)?;
    reporter.finish();
    Ok(())
}
