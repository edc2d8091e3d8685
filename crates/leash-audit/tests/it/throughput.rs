//! Throughput probe (ignored): entries/s through the broker with 64 concurrent writers.
use std::sync::Arc;
use std::time::Instant;

use crate::{broker, entry, file_device, key};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "throughput probe; run with --ignored --nocapture in release"]
async fn throughput_probe() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.log");
    let b = Arc::new(broker());
    b.enable(file_device("t", &file), key(), None)
        .await
        .unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let b = b.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..1000 {
                b.log(&entry("hvs.x")).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    eprintln!("THROUGHPUT {:.0} entries/s", 64000.0 / secs);
}
