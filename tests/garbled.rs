//! Unusable answers are exit 7 everywhere: every backend's commands against jobctl-sim
//! spoiling its answers (cut in half, an HTML page, `{}`, wrong-typed JSON, oversized) — never
//! "not found" (6), "not supported" (8) or success (0), and never a panic.

mod common;

use common::{Sandbox, Sim};
use jobctl_sim::{Faults, Garble, SimConfig};
use std::time::Duration;

const GARBLES: [Garble; 4] = [
    Garble::Truncate,
    Garble::Html,
    Garble::Empty,
    Garble::WrongTypes,
];

/// A sandbox on `sim` with short retries, whose runs are checked for panics.
fn sandbox(sim: &Sim) -> Sandbox {
    Sandbox::with_sim(sim).var("JOBCTL_RETRY_BUDGET", "300ms")
}

/// Runs jobctl; returns (exit code, stdout, stderr).
fn run(sb: &Sandbox, args: &[&str]) -> (i32, String, String) {
    let (code, out, err) = sb.run(args);
    assert!(!err.contains("panicked"), "jobctl panicked: {err}");
    (code, out, err)
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
fn submit_all(sb: &Sandbox) -> Vec<(&'static str, String)> {
    let mut refs = Vec::new();
    for b in REMOTE {
        let mut args = vec!["-b", b, "submit", "-o", "quiet"];
        args.extend(submit_args(b));
        let (code, out, err) = run(sb, &args);
        assert_eq!(code, 0, "{b} submit: {err}");
        refs.push((b, out.trim().to_string()));
    }
    refs
}

#[test]
fn garbled_answers_are_exit_7_for_every_backend_and_command() {
    let sim = Sim::start(sim_config());
    let sb = sandbox(&sim);
    let refs = submit_all(&sb);
    let mut wrong = Vec::new();
    for garble in GARBLES {
        sim.set_faults(Faults {
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
                let (code, _, err) = run(&sb, &args);
                if code != 7 {
                    wrong.push(format!("{garble:?} {args:?}: exit {code}: {err}"));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "not exit 7:\n{}", wrong.join("\n"));
}

#[test]
fn garbled_login_answers_are_exit_7_and_quote_nothing() {
    let sim = Sim::start(sim_config());
    let mut wrong = Vec::new();
    for garble in GARBLES {
        sim.set_faults(Faults {
            login_garble: garble,
            ..Faults::default()
        });
        let sb = sandbox(&sim);
        // Slurm takes a pre-issued JWT, and Explorer's session cookie travels in a header:
        // these three are the platforms whose login answers carry tokens in their bodies.
        for backend in ["cloudpss", "ac", "octoplant"] {
            let (code, out, err) = run(&sb, &["login", backend]);
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

#[test]
fn oversized_answers_are_refused_with_exit_7_naming_the_cap() {
    let sim = Sim::start(sim_config());
    let sb = sandbox(&sim);
    let refs = submit_all(&sb);
    // 20 MiB of trailing whitespace: still valid JSON, but beyond the 16 MiB cap.
    sim.set_faults(Faults {
        pad_mib: 20,
        ..Faults::default()
    });
    for (backend, reference) in &refs {
        let (code, _, err) = run(&sb, &["status", reference]);
        assert_eq!(code, 7, "{backend}: {err}");
        assert!(err.contains("16 MiB"), "{backend}: {err}");
    }
    // A small padding stays within the cap and is read as before.
    sim.set_faults(Faults {
        pad_mib: 1,
        ..Faults::default()
    });
    let (code, _, err) = run(&sb, &["status", &refs[1].1]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn a_retry_budget_that_does_not_parse_is_a_usage_error() {
    let sim = Sim::start(sim_config());
    let sb = sandbox(&sim).var("JOBCTL_RETRY_BUDGET", "soon");
    let (code, _, err) = run(&sb, &["-b", "ac", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("JOBCTL_RETRY_BUDGET") && err.contains("soon"),
        "{err}"
    );
}
