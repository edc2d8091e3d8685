//! `leash bench` and `leash bench-leases`: the benchmarks live in their own binary,
//! `leash-bench` (crate `leash-bench`), so the production binary does not link them.
//! These commands run it with the same arguments: from next to this executable, else
//! from `PATH`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, ExitCode};

/// Every argument after the subcommand, passed through unchanged.
#[derive(clap::Args, Debug)]
pub(crate) struct Forward {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<OsString>,
}

/// The benchmark binary: next to this one, else whatever `PATH` finds.
fn bench_binary() -> PathBuf {
    let name = format!("leash-bench{}", std::env::consts::EXE_SUFFIX);
    std::env::current_exe()
        .ok()
        .and_then(|me| me.parent().map(|d| d.join(&name)))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs `leash-bench <sub> <args…>` and exits with its status.
pub(crate) fn forward(sub: &str, f: Forward) -> ExitCode {
    let bin = bench_binary();
    match Command::new(&bin).arg(sub).args(&f.args).status() {
        Ok(s) => match s.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(c) => ExitCode::from(u8::try_from(c).unwrap_or(1)),
            None => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!(
                "leash {sub}: could not run the benchmark binary {} ({e}); build it next to leash with `cargo build --release -p leash-bench` (it is kept out of the production binary)",
                bin.display()
            );
            ExitCode::from(2)
        }
    }
}
