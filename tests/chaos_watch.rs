//! A long watch over many jobs on platforms with 2 s tokens and injected faults: tokens expire
//! again and again while requests are being retried, and still every job is reported as it
//! really ended (exit 0), none wrongly failed, and the watch never ends with exit 4.

use jobctl_sim::{self as sim, Faults, SimConfig, SimHandle};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn jobctl(sim: &SimHandle, state: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobctl"));
    cmd.env_clear()
        .envs(sim.env())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", state)
        .env("JOBCTL_STATE_DIR", state)
        .env("JOBCTL_RETRY_BUDGET", "3s")
        .env("NO_COLOR", "1")
        .current_dir(state);
    cmd
}

async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

async fn submit_many(sim: &SimHandle, state: &Path, backend: &str, n: usize) -> Vec<String> {
    let mut refs = Vec::new();
    for _ in 0..n {
        let mut cmd = jobctl(sim, state);
        cmd.args(["-b", backend, "submit", "-o", "quiet"]);
        match backend {
            "octoplant" => cmd.args(["--export", "projectTree"]),
            _ => cmd.args(["--", "true"]),
        };
        let out = output(cmd).await;
        assert!(out.status.success(), "{out:?}");
        refs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    refs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_50_octoplant_and_10_ac_jobs_with_2s_tokens_under_faults_succeeds() {
    let sim = sim::start(SimConfig {
        token_ttl: Duration::from_secs(2),
        queue_duration: Duration::from_millis(500),
        job_duration: Duration::from_secs(8),
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut refs = submit_many(&sim, dir.path(), "octoplant", 50).await;
    refs.extend(submit_many(&sim, dir.path(), "ac", 10).await);
    sim.state.set_faults(Faults {
        error_rate: 0.2,
        drop_rate: 0.05,
        latency_ms: (0, 150),
        ..Faults::default()
    });
    let mut cmd = jobctl(&sim, dir.path());
    cmd.args(["-o", "ndjson", "wait", "--timeout", "170s"])
        .args(&refs);
    let out = output(cmd).await;
    sim.state.set_faults(Faults::default());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let events: Vec<Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        events
            .iter()
            .all(|e| e["event"] != "state" || e["state"] != "failed"),
        "a job was reported failed: {stdout}"
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = events.last().expect("a result event");
    assert_eq!(last["event"], "result");
    let jobs = last["jobs"].as_array().expect("jobs in the result");
    assert_eq!(jobs.len(), 60);
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{last}");
}
