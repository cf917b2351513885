//! Secrets never leave the machine: every command of every remote backend at `-vvv` and at
//! `RUST_LOG=trace`, against jobctl-sim with faults, short-lived tokens and garbled login
//! answers, is grepped for every password, token and client secret (and their base64 and URL
//! encodings); and a running local job's environment (`/proc/PID/environ`) is checked.

mod common;

use base64::Engine;
use common::{Sandbox, Sim};
use jobctl_sim::{Faults, Garble, SimConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

const PASSWORD: &str = "Pw-9f3k2-Very/Secret+Value";

/// Runs jobctl at `-vvv` (or, with `trace_env`, at `RUST_LOG=trace`) and returns everything
/// it printed.
fn run(sb: &Sandbox, trace_env: bool, args: &[&str]) -> String {
    let (out, err) = run2(sb, trace_env, args);
    out + &err
}

/// Like [`run`]; returns (stdout, stderr).
fn run2(sb: &Sandbox, trace_env: bool, args: &[&str]) -> (String, String) {
    let mut cmd = sb.std_cmd();
    if trace_env {
        cmd.env("RUST_LOG", "trace");
    } else {
        cmd.arg("-vvv");
    }
    cmd.args(args);
    let (_, stdout, stderr) = sb.run_cmd(cmd);
    assert!(!stderr.contains("panicked"), "jobctl panicked: {stderr}");
    (stdout, stderr)
}

/// Every token in the state directory's token cache.
fn cached_tokens(state: &Path) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(state.join("cache")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| serde_json::from_str::<Value>(&t).ok())
        .filter_map(|v| v.get("token").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// A secret and the encodings it could leak in.
fn forms(secret: &str) -> Vec<String> {
    let e = &base64::engine::general_purpose::STANDARD;
    let u = &base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let url: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    vec![
        secret.to_string(),
        e.encode(secret).trim_end_matches('=').to_string(),
        u.encode(secret),
        url,
    ]
}

fn submit_args(backend: &str) -> Vec<&'static str> {
    match backend {
        "cloudpss" => vec!["--opt", "function=function/CloudPSS/hello"],
        "octoplant" => vec!["--export", "projectTree"],
        "nebula" => vec!["--workflow", "4216617529"],
        _ => vec!["--", "true"],
    }
}

#[test]
fn no_secret_reaches_output_at_any_verbosity_with_faults_and_garbled_logins() {
    let sim = Sim::start(SimConfig {
        password: PASSWORD.into(),
        token_ttl: Duration::from_secs(3),
        queue_duration: Duration::from_millis(100),
        job_duration: Duration::from_millis(500),
        ..SimConfig::default()
    });
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "2s");
    let state = &sb.state();
    let mut secrets: BTreeSet<String> = BTreeSet::new();
    secrets.insert(PASSWORD.to_string());
    for (k, v) in sim.env() {
        if k.contains("PASSWORD") || k.contains("SECRET") || k.contains("JWT") {
            secrets.insert(v);
        }
    }
    let user = sim.state.config.username.clone();
    secrets.insert(format!("{user}:{PASSWORD}"));
    secrets.insert(serde_json::json!([user, PASSWORD]).to_string());
    let mut printed = String::new();
    let plans = [
        (Faults::default(), true),
        (
            Faults {
                error_rate: 0.2,
                drop_rate: 0.1,
                ..Faults::default()
            },
            false,
        ),
        (
            Faults {
                login_garble: Garble::Truncate,
                ..Faults::default()
            },
            true,
        ),
        (
            Faults {
                login_garble: Garble::WrongTypes,
                error_rate: 0.1,
                ..Faults::default()
            },
            false,
        ),
    ];
    for (faults, trace_env) in plans {
        sim.set_faults(faults);
        for backend in ["cloudpss", "ac", "octoplant", "nebula", "slurm"] {
            // Garbled logins must happen: forget the cached token first.
            printed += &run(&sb, trace_env, &["logout", backend]);
            printed += &run(&sb, trace_env, &["login", backend]);
            let mut submit = vec!["-b", backend, "submit", "-o", "quiet"];
            submit.extend(submit_args(backend));
            let (out, err) = run2(&sb, trace_env, &submit);
            printed += &out;
            printed += &err;
            let reference = out.trim().to_string();
            if reference.contains(':') && !reference.contains(' ') {
                for cmd in [
                    vec!["status", "-o", "json", reference.as_str()],
                    vec!["wait", "--timeout", "20s", reference.as_str()],
                    vec!["logs", reference.as_str()],
                ] {
                    printed += &run(&sb, trace_env, &cmd);
                }
            }
            printed += &run(&sb, trace_env, &["-b", backend, "list"]);
            printed += &run(&sb, trace_env, &["doctor", backend]);
            secrets.extend(cached_tokens(state));
        }
    }
    assert!(
        printed.contains("TRACE") || printed.contains("DEBUG"),
        "the runs were verbose"
    );
    assert!(secrets.len() > 8, "tokens were issued and collected");
    for s in &secrets {
        for form in forms(s) {
            assert!(
                !printed.contains(&form),
                "a secret (or an encoding of it) reached the output: …{}…",
                &form[..form.len().min(6)]
            );
        }
    }
    assert!(!printed.contains("eyJ"), "no JWT-shaped string is printed");
}

#[test]
fn local_jobs_and_their_supervisor_do_not_inherit_platform_secrets() {
    let secrets = [
        ("CLOUDPSS_PASSWORD", "s-cloudpss-pw"),
        ("CLOUDPSS_TOKEN", "s-cloudpss-token"),
        ("AC_PASSWORD", "s-ac-pw"),
        ("AC_TOKEN", "s-ac-token"),
        ("AC_SECRET_KEY", "s-ac-sk"),
        ("OCTOPLANT_PASSWORD", "s-octo-pw"),
        ("OCTOPLANT_CLIENT_SECRET", "s-octo-cs"),
        ("NEBULA_PASSWORD", "s-nebula-pw"),
        ("SLURM_JWT", "s-slurm-jwt"),
        ("PROD_CLOUDPSS_PW", "s-prod-pw"),
    ];
    let mut sb = Sandbox::new().var("HARMLESS_SETTING", "kept");
    for (k, v) in secrets {
        sb = sb.var(k, v);
    }
    // A config file profile names one more secret variable with a `*_env` key.
    let config = sb.path().join("config").join("jobctl");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        "[profiles.prod]\nbackend = \"cloudpss\"\nurl = \"http://127.0.0.1:9/graphql\"\npassword_env = \"PROD_CLOUDPSS_PW\"\n",
    )
    .unwrap();
    let jobctl = |args: &[&str]| {
        let (code, out, err) = sb.run(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        out.trim().to_string()
    };
    // The user passes one secret on purpose: that one reaches the job.
    let r = jobctl(&[
        "submit",
        "-o",
        "quiet",
        "--arg",
        "SLURM_JWT=passed-on-purpose",
        "--",
        "sleep",
        "30",
    ]);
    let mut job = Value::Null;
    for _ in 0..100 {
        job = serde_json::from_str(&jobctl(&["status", "-o", "json", &r])).unwrap();
        if job["state"] == "running" && job["extra"]["pgid"].is_i64() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let environ = |pid: &Value| {
        let pid = pid.as_i64().unwrap_or_else(|| panic!("no pid in {job}"));
        let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        String::from_utf8_lossy(&raw)
            .split('\0')
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let job_env = environ(&job["extra"]["pgid"]);
    let supervisor_env = environ(&job["extra"]["supervisor_pid"]);
    jobctl(&["abort", &r]);
    for env in [&job_env, &supervisor_env] {
        assert!(env.iter().any(|v| v == "HARMLESS_SETTING=kept"), "{env:?}");
        for (name, value) in secrets {
            assert!(
                !env.iter().any(|v| v.contains(value)),
                "{name} was inherited: {env:?}"
            );
        }
    }
    assert!(job_env.iter().any(|v| v == "SLURM_JWT=passed-on-purpose"));
}
