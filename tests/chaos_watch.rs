//! A long watch over many jobs on platforms with 2 s tokens and injected faults: tokens expire
//! again and again while requests are being retried, and still every job is reported as it
//! really ended (exit 0), none wrongly failed, and the watch never ends with exit 4.

mod common;

use common::{Sandbox, Sim};
use jobctl_sim::{Faults, SimConfig};
use serde_json::Value;
use std::time::Duration;

fn submit_many(sb: &Sandbox, backend: &str, n: usize) -> Vec<String> {
    let mut refs = Vec::new();
    for _ in 0..n {
        let mut args = vec!["-b", backend, "submit", "-o", "quiet"];
        match backend {
            "octoplant" => args.extend(["--export", "projectTree"]),
            _ => args.extend(["--", "true"]),
        }
        let (code, out, err) = sb.run(&args);
        assert_eq!(code, 0, "{err}");
        refs.push(out.trim().to_string());
    }
    refs
}

#[test]
fn watching_50_octoplant_and_10_ac_jobs_with_2s_tokens_under_faults_succeeds() {
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(2),
        queue_duration: Duration::from_millis(500),
        job_duration: Duration::from_secs(8),
        ..SimConfig::default()
    });
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "3s");
    let mut refs = submit_many(&sb, "octoplant", 50);
    refs.extend(submit_many(&sb, "ac", 10));
    sim.set_faults(Faults {
        error_rate: 0.2,
        drop_rate: 0.05,
        latency_ms: (0, 150),
        ..Faults::default()
    });
    let mut args = vec!["-o", "ndjson", "wait", "--timeout", "170s"];
    args.extend(refs.iter().map(String::as_str));
    let (code, stdout, stderr) = sb.run(&args);
    sim.set_faults(Faults::default());
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
    assert_eq!(code, 0, "stderr: {stderr}");
    let last = events.last().expect("a result event");
    assert_eq!(last["event"], "result");
    let jobs = last["jobs"].as_array().expect("jobs in the result");
    assert_eq!(jobs.len(), 60);
    assert!(jobs.iter().all(|j| j["state"] == "succeeded"), "{last}");
}
