//! The watch engine against a remote platform that misbehaves: a failed *query* is a warning
//! and a retry, never a failed job; a platform that stays away ends the wait with exit 7.
//! Uses the AC backend and jobctl-sim's run-time fault switch (`PUT /_sim/faults`).

use jobctl_sim::{self as sim, Faults, SimConfig, SimHandle};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

fn jobctl(sim: &SimHandle, state: &Path) -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin("jobctl"));
    cmd.env_clear()
        .envs(sim.env())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", state)
        .env("JOBCTL_STATE_DIR", state)
        .env("JOBCTL_RETRY_BUDGET", "300ms")
        .env("NO_COLOR", "1")
        .current_dir(state);
    cmd
}

async fn submit(sim: &SimHandle, state: &Path, command: &str) -> String {
    let mut cmd = jobctl(sim, state);
    cmd.args(["-b", "ac", "submit", "-o", "quiet", "--", command]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Starts `jobctl -o ndjson watch …`, returns the child and a channel of its event lines.
fn watch(
    sim: &SimHandle,
    state: &Path,
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<Value>) {
    let mut child = jobctl(sim, state)
        .args([
            "-o",
            "ndjson",
            "watch",
            "--interval",
            "100ms",
            "--max-interval",
            "200ms",
        ])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    (child, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_errors_during_a_watch_are_warnings_not_failures() {
    let sim = sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = submit(&sim, dir.path(), "SIM_DURATION=4s ./run.sh").await;
    let (child, events) = watch(&sim, dir.path(), &[&r]);
    let first = tokio::task::spawn_blocking(move || {
        let e = events.recv_timeout(Duration::from_secs(30)).unwrap();
        (e, events)
    })
    .await
    .unwrap();
    let (first, events) = first;
    assert_eq!(first["event"], "state");
    // Every request now fails with 503 until we switch the faults off again.
    sim.state.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let (warning, events) = tokio::task::spawn_blocking(move || {
        loop {
            let e = events.recv_timeout(Duration::from_secs(30)).unwrap();
            if e["event"] == "warning" {
                return (e, events);
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(warning["ref"], r.as_str());
    sim.state.set_faults(Faults::default());
    let out = tokio::task::spawn_blocking(move || {
        let status = child.wait_with_output().unwrap().status;
        (status, events.into_iter().collect::<Vec<Value>>())
    })
    .await
    .unwrap();
    let (status, rest) = out;
    assert_eq!(
        status.code(),
        Some(0),
        "the job succeeded despite the failed queries"
    );
    assert!(
        rest.iter()
            .all(|e| e["event"] != "state" || e["state"] != "failed"),
        "{rest:?}"
    );
    let last = rest.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["exit_code"], 0);
    assert_eq!(last["jobs"][0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_platform_ends_the_wait_with_exit_7_and_the_job_not_failed() {
    let sim = sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let r = submit(&sim, dir.path(), "SIM_DURATION=60s ./run.sh").await;
    let (child, events) = watch(&sim, dir.path(), &["--unreachable-timeout", "2s", &r]);
    let (first, events) = tokio::task::spawn_blocking(move || {
        let e = events.recv_timeout(Duration::from_secs(30)).unwrap();
        (e, events)
    })
    .await
    .unwrap();
    assert_eq!(first["event"], "state");
    sim.shutdown();
    let (status, rest) = tokio::task::spawn_blocking(move || {
        let status = child.wait_with_output().unwrap().status;
        (status, events.into_iter().collect::<Vec<Value>>())
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(7));
    assert!(rest.iter().any(|e| e["event"] == "warning"), "{rest:?}");
    let last = rest.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["exit_code"], 7);
    let state = last["jobs"][0]["state"].as_str().unwrap();
    assert!(
        state == "queued" || state == "running",
        "last known state kept: {state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_can_be_switched_over_http() {
    let sim = sim::start(SimConfig::default()).await.unwrap();
    let client = reqwest::Client::new();
    let url = format!("{}/_sim/faults", sim.base_url);
    let set: Value = client
        .put(&url)
        .json(&serde_json::json!({"error_rate": 1.0}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["error_rate"], 1.0);
    let r = client
        .post(format!("{}/graphql", sim.base_url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);
    client
        .put(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(sim.state.faults().error_rate, 0.0);
}

/// Runs a jobctl command to completion off the runtime that serves the simulator.
async fn output(mut cmd: Command) -> std::process::Output {
    tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_platform_does_not_hold_back_the_news_of_another() {
    let sim = sim::start(SimConfig::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let slow = submit(&sim, dir.path(), "SIM_DURATION=60s ./run.sh").await;
    let mut cmd = jobctl(&sim, dir.path());
    cmd.args([
        "-b", "local", "submit", "-o", "quiet", "--wait", "--", "true",
    ]);
    let out = output(cmd).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let quick = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(quick.starts_with("local:"), "{quick}");

    // Every AC answer now takes 1.5 s; the local job has already ended.
    sim.state.set_faults(Faults {
        latency_ms: (1500, 1500),
        ..Faults::default()
    });
    let mut cmd = jobctl(&sim, dir.path());
    cmd.args(["-o", "ndjson", "watch", "--any", &slow, &quick]);
    let out = output(cmd).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let position = |reference: &str| {
        events
            .iter()
            .position(|e| e["event"] == "state" && e["ref"] == reference)
            .unwrap_or_else(|| panic!("no state event for {reference}: {events:?}"))
    };
    // `ac` sorts before `local`: polled one after the other, the slow answer would come first.
    assert!(
        position(&quick) < position(&slow),
        "the local job's end is reported before the slow platform answers: {events:?}"
    );
    assert_eq!(events[position(&quick)]["state"], "succeeded");
}
