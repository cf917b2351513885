//! The simulator's raw capacity: submits Slurm jobs straight to a running jobctl-sim with N
//! connections in flight and prints submissions per second, the yardstick `scripts/bench.sh`
//! sets jobctl's own throughput against.
//!
//! ```sh
//! cargo run --release -p jobctl-sim --example loadgen -- URL JWT CONCURRENCY COUNT
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 {
        eprintln!("usage: loadgen URL JWT CONCURRENCY COUNT");
        std::process::exit(2);
    }
    let base = args[1].trim_end_matches('/').to_string();
    let jwt = args[2].clone();
    let (Ok(concurrency), Ok(count)) = (args[3].parse::<usize>(), args[4].parse::<usize>()) else {
        eprintln!("loadgen: CONCURRENCY and COUNT must be numbers");
        std::process::exit(2);
    };
    let client = reqwest::Client::new();
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency.max(1) {
        let (client, next, failed) = (client.clone(), next.clone(), failed.clone());
        let (base, jwt) = (base.clone(), jwt.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                let body = serde_json::json!({
                    "job": {"name": format!("load-{i}"), "current_working_directory": "/tmp",
                            "environment": {"PATH": "/bin"}},
                    "script": "#!/bin/sh\ntrue\n"
                });
                let ok = client
                    .post(format!("{base}/slurm/v0.0.38/job/submit"))
                    .header("X-SLURM-USER-NAME", "jobctl")
                    .header("X-SLURM-USER-TOKEN", &jwt)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{:.1} submissions/s ({count} in {secs:.2} s, {} failed)",
        count as f64 / secs,
        failed.load(Ordering::SeqCst)
    );
}
