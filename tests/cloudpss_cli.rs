//! CloudPSS output through the `jobctl` binary against jobctl-sim: `submit --wait -o ndjson`
//! reports the stream's progress, `logs` prints messages, `fetch` writes the result files,
//! `queues` lists job policies, and a cleaned-up stream is exit 6.

mod common;

use common::{Sandbox, Sim, quick};
use serde_json::Value;

const FUNCTION: &str = "--opt=function=function/CloudPSS/emtp";

/// The sandbox checks that the password never shows; the default one (`jobctl-sim`) is also
/// part of the simulator's machine name and log lines, so these tests use another.
fn start() -> Sim {
    Sim::start(jobctl_sim::SimConfig {
        password: "pw-Xq7".into(),
        ..quick()
    })
}

#[test]
fn submit_wait_reports_progress_and_logs_and_fetch_read_the_output() {
    let sim = start();
    let sb = Sandbox::with_sim(&sim);
    let (code, out, err) = sb.run(&[
        "-b",
        "cloudpss",
        "submit",
        FUNCTION,
        "--arg",
        "sim_messages=40",
        "--arg",
        "sim_duration=3s",
        "--wait",
        "-o",
        "ndjson",
    ]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let progress: Vec<&Value> = events.iter().filter(|e| e["event"] == "progress").collect();
    assert!(!progress.is_empty(), "progress events: {out}");
    let job = &events.last().unwrap()["jobs"][0];
    assert_eq!(job["native_state"], "COMPLETED");
    let reference = job["ref"].as_str().unwrap().to_string();

    let (code, out, err) = sb.run(&["logs", &reference, "-o", "ndjson"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.lines().count(), 41);
    let (code, out, _) = sb.run(&["logs", &reference]);
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .next()
            .unwrap()
            .starts_with("info     jobctl-sim: running")
    );

    let (code, _, err) = sb.run(&["fetch", &reference, "--dest", "results"]);
    assert_eq!(code, 0, "{err}");
    for f in ["messages.ndjson", "plot-1.csv", "table-1.csv", "index.json"] {
        assert!(sb.path().join("results").join(f).is_file(), "{f}");
    }

    let queues = sb.json(&["queues", "cloudpss"]);
    assert_eq!(queues[0]["name"], "1");
    assert_eq!(queues[1]["max_cpu"], 64);
}

#[test]
fn a_cleaned_up_stream_is_exit_6_with_a_message_saying_so() {
    let sim = start();
    let sb = Sandbox::with_sim(&sim);
    let reference = sb.submit(&["-b", "cloudpss", FUNCTION, "--arg", "sim_messages=3"]);
    let job = sb.json(&["status", &reference]);
    let output = job["extra"]["output"].as_str().unwrap().to_string();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let status = rt.block_on(async {
        reqwest::Client::new()
            .put(format!("{}/_sim/cloudpss/settings", sim.base_url))
            .json(&serde_json::json!({ "cleaned": [output] }))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success());
    let (code, _, err) = sb.run(&["logs", &reference]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("cleaned it up"), "{err}");
}
