//! The exec-mode redaction filter alone, standard input to standard output, for
//! `scripts/bench-redact` (throughput next to `cat`). The patterns are a few
//! credential-like values, as an agent holding a database credential and a token has.
#![forbid(unsafe_code)]

use leash_agent::redact::{Origin, Patterns, pump, shared};
use zeroize::Zeroizing;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // The credential values are made by the caller for each run (`scripts/bench-redact`
    // passes the same prefix to its input generator); none is committed.
    let prefix = std::env::var("REDACT_BENCH_SECRET").unwrap_or_else(|_| {
        eprintln!("redact_filter: set REDACT_BENCH_SECRET to the credential prefix to look for");
        std::process::exit(2);
    });
    let patterns = shared();
    let values = (0..4)
        .map(|i| {
            (
                Zeroizing::new(format!("{prefix}-{i}")),
                Origin::Secret {
                    request: format!("database/creds/r{i}"),
                    kind: "password".to_owned(),
                    lease_id: format!("database/creds/r{i}/x"),
                },
            )
        })
        .collect();
    if let Ok(mut g) = patterns.write() {
        *g = std::sync::Arc::new(Patterns::new(values));
    }
    pump(tokio::io::stdin(), tokio::io::stdout(), patterns, None).await;
}
