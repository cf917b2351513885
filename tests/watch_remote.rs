//! The watch engine against a remote platform that misbehaves: a failed *query* is a warning
//! and a retry, never a failed job; a platform that stays away ends the wait with exit 7.
//! Uses the AC backend and jobctl-sim's run-time fault switch (`PUT /_sim/faults`).

mod common;

use common::{Sandbox, Sim};
use jobctl_sim::{Faults, SimConfig};
use serde_json::Value;
use std::process::Child;
use std::sync::mpsc::Receiver;
use std::time::Duration;

/// A sandbox on `sim` with a short retry budget, and an AC job submitted in it.
fn submit(sim: &Sim, command: &str) -> (Sandbox, String) {
    let sb = Sandbox::with_sim(sim).var("JOBCTL_RETRY_BUDGET", "300ms");
    let r = sb.submit(&["-b", "ac", "--", command]);
    (sb, r)
}

/// Starts `jobctl -o ndjson watch` with quick polling.
fn watch(sb: &Sandbox, args: &[&str]) -> (Child, Receiver<Value>) {
    let mut all = vec!["watch", "--interval", "100ms", "--max-interval", "200ms"];
    all.extend_from_slice(args);
    sb.spawn_ndjson(&all)
}

#[test]
fn platform_errors_during_a_watch_are_warnings_not_failures() {
    let sim = Sim::start(SimConfig::default());
    let (sb, r) = submit(&sim, "SIM_DURATION=4s ./run.sh");
    let (child, events) = watch(&sb, &[&r]);
    let first = events.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first["event"], "state");
    // Every request now fails with 503 until we switch the faults off again.
    sim.set_faults(Faults {
        error_rate: 1.0,
        ..Faults::default()
    });
    let warning = loop {
        let e = events.recv_timeout(Duration::from_secs(30)).unwrap();
        if e["event"] == "warning" {
            break e;
        }
    };
    assert_eq!(warning["ref"], r.as_str());
    sim.set_faults(Faults::default());
    let status = child.wait_with_output().unwrap().status;
    let rest: Vec<Value> = events.into_iter().collect();
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

#[test]
fn an_unreachable_platform_ends_the_wait_with_exit_7_and_the_job_not_failed() {
    let sim = Sim::start(SimConfig::default());
    let (sb, r) = submit(&sim, "SIM_DURATION=60s ./run.sh");
    let (child, events) = watch(&sb, &["--unreachable-timeout", "2s", &r]);
    let first = events.recv_timeout(Duration::from_secs(30)).unwrap();
    assert_eq!(first["event"], "state");
    sim.shutdown();
    let status = child.wait_with_output().unwrap().status;
    let rest: Vec<Value> = events.into_iter().collect();
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

#[tokio::test]
async fn faults_can_be_switched_over_http() {
    let sim = Sim::start(SimConfig::default());
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
