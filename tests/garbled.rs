//! Unusable answers are exit 7 everywhere: every backend's commands against jobctl-sim
//! spoiling its answers (cut in half, an HTML page, `{}`, wrong-typed JSON, oversized) — never
//! "not found" (6), "not supported" (8) or success (0), and never a panic.

use jobctl_sim::{self as sim, Faults, Garble, SimConfig, SimHandle};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const GARBLES: [Garble; 4] = [
    Garble::Truncate,
    Garble::Html,
    Garble::Empty,
    Garble::WrongTypes,
];

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

/// Runs jobctl off the async runtime; returns (exit code, stdout, stderr).
async fn run(sim: &SimHandle, state: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = jobctl(sim, state);
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "jobctl panicked: {stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

fn sim_config() -> SimConfig {
    SimConfig {
        queue_duration: Duration::from_millis(100),
        job_duration: Duration::from_secs(60),
        ..SimConfig::default()
    }
}

/// How each backend submits a job in the simulator.
fn submit_args(backend: &str) -> Vec<&'static str> {
    match backend {
        "cloudpss" => vec!["--opt", "function=function/CloudPSS/hello"],
        "octoplant" => vec!["--export", "projectTree"],
        "nebula" => vec!["--workflow", "4216617529"],
        _ => vec!["--", "sleep 60"],
    }
}

const REMOTE: [&str; 5] = ["cloudpss", "ac", "octoplant", "nebula", "slurm"];

/// Submits one job per backend with sane answers, so later garbling hits known jobs.
async fn submit_all(sim: &SimHandle, state: &Path) -> Vec<(&'static str, String)> {
    let mut refs = Vec::new();
    for b in REMOTE {
        let mut args = vec!["-b", b, "submit", "-o", "quiet"];
        args.extend(submit_args(b));
        let (code, out, err) = run(sim, state, &args).await;
        assert_eq!(code, 0, "{b} submit: {err}");
        refs.push((b, out.trim().to_string()));
    }
    refs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_answers_are_exit_7_for_every_backend_and_command() {
    let sim = sim::start(sim_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refs = submit_all(&sim, dir.path()).await;
    let mut wrong = Vec::new();
    for garble in GARBLES {
        sim.state.set_faults(Faults {
            answer_garble: garble,
            ..Faults::default()
        });
        for (backend, reference) in &refs {
            for args in [
                vec!["status", reference.as_str()],
                vec!["-b", backend, "list"],
                vec!["doctor", backend],
                // watch keeps retrying unusable answers, until --unreachable-timeout.
                vec![
                    "wait",
                    "--unreachable-timeout",
                    "2s",
                    "--timeout",
                    "60s",
                    reference.as_str(),
                ],
            ] {
                let (code, _, err) = run(&sim, dir.path(), &args).await;
                if code != 7 {
                    wrong.push(format!("{garble:?} {args:?}: exit {code}: {err}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "not exit 7:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbled_login_answers_are_exit_7_and_quote_nothing() {
    let sim = sim::start(sim_config()).await.unwrap();
    let mut wrong = Vec::new();
    for garble in GARBLES {
        sim.state.set_faults(Faults {
            login_garble: garble,
            ..Faults::default()
        });
        let dir = tempfile::tempdir().unwrap();
        // Slurm takes a pre-issued JWT, and Explorer's session cookie travels in a header:
        // these three are the platforms whose login answers carry tokens in their bodies.
        for backend in ["cloudpss", "ac", "octoplant"] {
            let (code, out, err) = run(&sim, dir.path(), &["login", backend]).await;
            if code != 7 {
                wrong.push(format!("{garble:?} {backend} login: exit {code}: {err}"));
            }
            let all = format!("{out}{err}");
            assert!(
                !all.contains("eyJ") && !all.contains("access_token\":\""),
                "{garble:?} {backend}: a login answer was quoted: {all}"
            );
        }
    }
    assert!(wrong.is_empty(), "not exit 7:\n{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_answers_are_refused_with_exit_7_naming_the_cap() {
    let sim = sim::start(sim_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let refs = submit_all(&sim, dir.path()).await;
    // 20 MiB of trailing whitespace: still valid JSON, but beyond the 16 MiB cap.
    sim.state.set_faults(Faults {
        pad_mib: 20,
        ..Faults::default()
    });
    for (backend, reference) in &refs {
        let (code, _, err) = run(&sim, dir.path(), &["status", reference]).await;
        assert_eq!(code, 7, "{backend}: {err}");
        assert!(err.contains("16 MiB"), "{backend}: {err}");
    }
    // A small padding stays within the cap and is read as before.
    sim.state.set_faults(Faults {
        pad_mib: 1,
        ..Faults::default()
    });
    let (code, _, err) = run(&sim, dir.path(), &["status", &refs[1].1]).await;
    assert_eq!(code, 0, "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_budget_that_does_not_parse_is_a_usage_error() {
    let sim = sim::start(sim_config()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = jobctl(&sim, dir.path());
    cmd.env("JOBCTL_RETRY_BUDGET", "soon")
        .args(["-b", "ac", "list"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("JOBCTL_RETRY_BUDGET") && err.contains("soon"),
        "{err}"
    );
}
