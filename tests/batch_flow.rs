//! How `batch` spreads its submissions: at most `max_in_flight` (or `--concurrency`) requests in
//! flight per profile, counted by the simulator itself, and a slow platform holding back only
//! its own lines.

mod common;

use common::{Sandbox, sim};
use jobctl_sim::{Faults, SimConfig};
use serde_json::{Value, json};
use std::time::Duration;

fn slow_sim(latency_ms: u64) -> common::Sim {
    let s = sim(SimConfig {
        queue_duration: Duration::from_secs(60),
        job_duration: Duration::from_secs(600),
        ..SimConfig::default()
    });
    s.set_faults(Faults {
        latency_ms: (latency_ms, latency_ms),
        ..Faults::default()
    });
    s
}

fn batch_file(sb: &Sandbox, lines: &[Value]) -> String {
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let path = sb.path().join("jobs.jsonl");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn slurm_lines(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"profile": "slurm", "name": format!("s-{i}"), "command": ["true"]}))
        .collect()
}

fn peak(sim: &common::Sim) -> u64 {
    sim.get_json("/_sim/stats")["peak_in_flight"]
        .as_u64()
        .expect("peak_in_flight in the simulator's stats")
}

#[test]
fn a_profile_never_gets_more_submissions_than_its_max_in_flight() {
    let sim = slow_sim(150);
    let sb = Sandbox::with_sim(&sim).var("SLURM_MAX_IN_FLIGHT", "3");
    let file = batch_file(&sb, &slurm_lines(12));
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 12);
    assert!(rows.iter().all(|r| r["outcome"] == "submitted"), "{out}");
    let seen = peak(&sim);
    assert!(
        (2..=3).contains(&seen),
        "the simulator saw {seen} requests at once; max_in_flight is 3"
    );
}

#[test]
fn concurrency_sets_the_limit_for_every_profile_of_the_run() {
    let sim = slow_sim(150);
    let sb = Sandbox::with_sim(&sim).var("SLURM_MAX_IN_FLIGHT", "2");
    let file = batch_file(&sb, &slurm_lines(16));
    let (code, _, err) = sb.run(&["batch", &file, "--concurrency", "6"]);
    assert_eq!(code, 0, "{err}");
    let seen = peak(&sim);
    assert!(
        (3..=6).contains(&seen),
        "the simulator saw {seen} requests at once; --concurrency is 6"
    );
}

#[test]
fn an_unusable_max_in_flight_is_refused_naming_the_setting() {
    let sb = Sandbox::new().var("LOCAL_MAX_IN_FLIGHT", "0");
    let file = batch_file(&sb, &[json!({"command": ["true"]})]);
    let (code, _, err) = sb.run(&["batch", &file]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("LOCAL_MAX_IN_FLIGHT"), "{err}");
    assert!(err.contains("1 to 1024"), "{err}");
}

#[test]
fn a_slow_platform_holds_back_only_its_own_lines() {
    // One Slurm submission in flight at a time, each taking 400 ms; the local lines come after
    // them in the file but are decided long before the Slurm lines are through.
    let sim = slow_sim(400);
    let sb = Sandbox::with_sim(&sim);
    let mut lines = slurm_lines(4);
    lines.extend((0..4).map(|i| json!({"name": format!("l-{i}"), "command": ["true"]})));
    let file = batch_file(&sb, &lines);
    let (code, out, err) = sb.run(&["-o", "ndjson", "batch", &file, "--concurrency", "1"]);
    assert_eq!(code, 0, "{err}");
    let order: Vec<u64> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "line")
        .map(|v| v["line"].as_u64().unwrap())
        .collect();
    assert_eq!(order.len(), 8, "{out}");
    let second_slurm = order.iter().position(|&n| n == 2).unwrap();
    let last_local = order.iter().rposition(|&n| n > 4).unwrap();
    assert!(
        last_local < second_slurm,
        "local lines waited behind the slow platform: {order:?}"
    );
}

#[test]
fn a_pipeline_keeps_to_max_in_flight_too() {
    let sim = slow_sim(150);
    // No poll within the run: the simulator's count is of submissions only.
    let sb = Sandbox::with_sim(&sim)
        .var("SLURM_MAX_IN_FLIGHT", "3")
        .var("SLURM_POLL_INTERVAL", "1h");
    // `retries` makes the file a pipeline (with --wait); the jobs outlive the timeout.
    let lines: Vec<Value> = (0..12)
        .map(|i| json!({"profile": "slurm", "key": format!("p-{i}"), "retries": 1, "command": ["true"]}))
        .collect();
    let file = batch_file(&sb, &lines);
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file, "--wait", "--timeout", "3s"]);
    assert_eq!(code, 3, "the jobs are still queued at the deadline: {err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 12, "{out}");
    assert!(
        rows.iter().all(|r| r["ref"].is_string()),
        "every line submitted: {out}"
    );
    let seen = peak(&sim);
    assert!(
        (2..=3).contains(&seen),
        "the simulator saw {seen} requests at once; max_in_flight is 3"
    );
}

#[test]
fn a_rerun_reads_its_earlier_jobs_within_max_in_flight() {
    let sim = slow_sim(150);
    let sb = Sandbox::with_sim(&sim).var("SLURM_MAX_IN_FLIGHT", "3");
    let lines: Vec<Value> = (0..12)
        .map(|i| json!({"profile": "slurm", "key": format!("e-{i}"), "command": ["true"]}))
        .collect();
    let file = batch_file(&sb, &lines);
    let (code, _, err) = sb.run(&["-o", "json", "batch", &file]);
    assert_eq!(code, 0, "{err}");
    // Without its journal the re-run finds every key already submitted in the ledger, and
    // reads each earlier job from the platform: those reads count against the limit too.
    std::fs::remove_file(format!("{file}.journal")).unwrap();
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 12, "{out}");
    assert!(rows.iter().all(|r| r["ref"].is_string()), "{out}");
    assert_eq!(sim.state.jobs_report()["per_platform"]["slurm"], 12);
    let seen = peak(&sim);
    assert!(
        seen <= 3,
        "the simulator saw {seen} requests at once; max_in_flight is 3"
    );
}

#[test]
fn a_pipeline_rerun_settles_lost_answers_with_one_listing() {
    let sim = slow_sim(150);
    let sb = Sandbox::with_sim(&sim)
        .var("SLURM_MAX_IN_FLIGHT", "3")
        .var("SLURM_POLL_INTERVAL", "1h")
        .var("JOBCTL_RETRY_BUDGET", "1s");
    let lines: Vec<Value> = (0..12)
        .map(|i| json!({"profile": "slurm", "key": format!("q-{i}"), "retries": 1, "command": ["true"]}))
        .collect();
    let file = batch_file(&sb, &lines);
    // Every job is created but its answer is lost: each line's outcome is unknown.
    sim.set_faults(Faults {
        latency_ms: (150, 150),
        drop_after_create_rate: 1.0,
        ..Faults::default()
    });
    let (_, out, err) = sb.run(&["-o", "json", "batch", &file, "--wait", "--timeout", "3s"]);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap_or_default();
    assert!(
        rows.iter().all(|r| r["ref"].is_null()),
        "no answer came back: {out} {err}"
    );
    sim.set_faults(Faults {
        latency_ms: (150, 150),
        ..Faults::default()
    });
    let before = sim.total();
    let (_, out, err) = sb.run(&["-o", "json", "batch", &file, "--wait", "--timeout", "3s"]);
    let requests = sim.total() - before;
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(rows.len(), 12, "{out}");
    assert!(
        rows.iter().all(|r| r["ref"].is_string()),
        "every line found its job: {out} {err}"
    );
    let report = sim.state.jobs_report();
    assert_eq!(report["per_platform"]["slurm"], 12, "{report}");
    assert_eq!(report["duplicates"], json!([]), "{report}");
    // One listing settles all twelve (plus the run's first poll and its final read), not
    // one lookup per line.
    assert!(requests <= 6, "settling 12 lines took {requests} requests");
    let seen = peak(&sim);
    assert!(
        seen <= 3,
        "the simulator saw {seen} requests at once; max_in_flight is 3"
    );
}
