//! The cloudpss backend against the in-process simulator: every operation and error path,
//! plus the vendor's own Node.js client against the simulator.

mod common;

use common::{Sandbox, Setup, Sim, quick_sim, text, wait_terminal};
use jobctl::backend::JobBackend;
use jobctl::model::{AbortOutcome, JobSpec, JobState, ListQuery};
use jobctl::{Error, ErrorKind};
use jobctl_sim::{self as sim, SimConfig, SimHandle};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A cloudpss backend configured from exactly `vars` (as the built-in profile would be).
fn backend_with(vars: Vec<(String, String)>, state: &Path) -> Arc<dyn JobBackend> {
    Setup::new("cloudpss").vars(vars).backend(state)
}

fn spec(args: Value, options: Value) -> JobSpec {
    JobSpec {
        args: args.as_object().cloned().unwrap_or_default(),
        options: options.as_object().cloned().unwrap_or_default(),
        ..JobSpec::default()
    }
}

fn hello(args: Value) -> JobSpec {
    spec(args, json!({"function": "function/CloudPSS/hello"}))
}

/// GraphQL root fields the simulator served so far.
async fn ops(sim: &SimHandle) -> BTreeMap<String, u64> {
    reqwest::get(format!("{}/_sim/cloudpss/operations", sim.base_url))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn op(sim: &SimHandle, name: &str) -> u64 {
    ops(sim).await.get(name).copied().unwrap_or(0)
}

fn assert_kind(e: &Error, kind: ErrorKind) {
    assert_eq!(e.kind, kind, "unexpected error: {e}");
}

#[tokio::test]
async fn submit_runs_the_function_with_args_and_policy_and_completes() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let job = b
        .submit(&spec(
            json!({"message": "hi", "n": 3}),
            json!({"function": "function/CloudPSS/hello", "queue": 2, "cpu": 4, "priority": 5,
                   "context": "model/jobctl/case7"}),
        ))
        .await
        .unwrap();
    assert_eq!(job.native_state.as_deref(), Some("WAITING"));
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.owner.as_deref(), Some("jobctl"));
    assert_eq!(job.queue.as_deref(), Some("2"));
    assert_eq!(job.extra["function"], "function/CloudPSS/hello");
    assert_eq!(
        job.extra["context"],
        json!(["function/CloudPSS/hello", "model/jobctl/case7"])
    );
    assert_eq!(job.extra["args"], json!({"message": "hi", "n": 3}));
    assert_eq!(job.extra["tres"]["cpu"], 4);
    assert_eq!(job.extra["priority"], 5.0);
    assert!(job.created_at.is_some());

    let done = wait_terminal(&b, &job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.native_state.as_deref(), Some("COMPLETED"));
    assert!(done.started_at.is_some() && done.ended_at.is_some());
    assert!(done.ended_at >= done.started_at);
}

#[tokio::test]
async fn failures_timeouts_and_kills_are_failed_with_the_native_status_kept() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    for (outcome, native) in [
        ("fail", "FAILED"),
        ("timeout", "TIMED_OUT"),
        ("killed", "KILLED"),
    ] {
        let job = b
            .submit(&hello(
                json!({"sim_outcome": outcome, "sim_duration": "200ms"}),
            ))
            .await
            .unwrap();
        let done = wait_terminal(&b, &job.id).await;
        assert_eq!(done.state, JobState::Failed, "{outcome}");
        assert_eq!(done.native_state.as_deref(), Some(native));
    }
}

#[tokio::test]
async fn global_fail_ratio_fails_jobs_that_do_not_say_otherwise() {
    let sim = Sim::start(SimConfig {
        job_duration: Duration::from_millis(200),
        queue_duration: Duration::from_millis(50),
        fail_ratio: 1.0,
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let failing = b.submit(&hello(json!({}))).await.unwrap();
    let rescued = b
        .submit(&hello(json!({"sim_outcome": "succeed"})))
        .await
        .unwrap();
    assert_eq!(wait_terminal(&b, &failing.id).await.state, JobState::Failed);
    assert_eq!(
        wait_terminal(&b, &rescued.id).await.state,
        JobState::Succeeded
    );
}

#[tokio::test]
async fn abort_goes_through_aborting_to_aborted_and_waiting_jobs_are_canceled() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());

    let running = b
        .submit(&hello(json!({"sim_queue": 0, "sim_duration": "30s"})))
        .await
        .unwrap();
    // Wait until it runs so the abort hits a running job.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.status(&running.id).await.unwrap().state != JobState::Running
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(b.abort(&running.id).await.unwrap(), AbortOutcome::Requested);
    let now = b.status(&running.id).await.unwrap();
    assert!(
        matches!(
            now.native_state.as_deref(),
            Some("ABORTING") | Some("ABORTED")
        ),
        "{now:?}"
    );
    let done = wait_terminal(&b, &running.id).await;
    assert_eq!(done.state, JobState::Canceled);
    assert_eq!(done.native_state.as_deref(), Some("ABORTED"));

    let waiting = b.submit(&hello(json!({"sim_queue": "30s"}))).await.unwrap();
    assert_eq!(b.abort(&waiting.id).await.unwrap(), AbortOutcome::Requested);
    let done = wait_terminal(&b, &waiting.id).await;
    assert_eq!(done.native_state.as_deref(), Some("CANCELED"));
    assert_eq!(done.state, JobState::Canceled);
    assert_eq!(done.started_at, None);

    // A job that already ended is reported as such, and no abortJob is sent for it.
    let before = op(&sim, "abortJob").await;
    assert_eq!(
        b.abort(&done.id).await.unwrap(),
        AbortOutcome::AlreadyTerminal
    );
    assert_eq!(op(&sim, "abortJob").await, before);

    let e = b.abort("no-such-job").await.unwrap_err();
    assert_kind(&e, ErrorKind::NotFound);
    assert_eq!(e.exit_code(), 6);
}

#[tokio::test]
async fn abort_timeout_comes_from_the_profile_option() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    // Built-in profiles take options only from the config file; use one named section.
    let b = Setup::new("cp")
        .vars(sim.env())
        .var("CP_PW", &sim.state.config.password)
        .config(&format!(
            "[profiles.cp]\nbackend = \"cloudpss\"\nurl = \"{}/graphql\"\nusername = \"jobctl\"\npassword_env = \"CP_PW\"\nabort_timeout = \"0s\"\n",
            sim.base_url
        ))
        .backend(dir.path());
    let job = b
        .submit(&hello(json!({"sim_queue": 0, "sim_duration": "30s"})))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.status(&job.id).await.unwrap().state != JobState::Running && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.abort(&job.id).await.unwrap();
    // With a zero timeout the platform stops the job at once: no ABORTING phase.
    assert_eq!(
        b.status(&job.id).await.unwrap().native_state.as_deref(),
        Some("ABORTED")
    );
}

#[tokio::test]
async fn statuses_ask_once_per_page_of_ids() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(b.submit(&hello(json!({"i": i}))).await.unwrap().id);
    }
    let mut asked = ids.clone();
    asked.push("missing-job".into());
    asked.push(ids[0].clone());
    let (jobs_before, job_before) = (op(&sim, "jobs").await, op(&sim, "job").await);
    let results = b.statuses(&asked).await;
    assert_eq!(
        op(&sim, "jobs").await - jobs_before,
        1,
        "one jobs query for all ids"
    );
    assert_eq!(
        op(&sim, "job").await - job_before,
        1,
        "a per-job query only for the id the page did not return"
    );
    assert_eq!(results.len(), asked.len());
    for (id, r) in asked.iter().zip(&results) {
        match r {
            Ok(job) => assert_eq!(&job.id, id),
            Err(e) => {
                assert_eq!(id, "missing-job");
                assert_kind(e, ErrorKind::NotFound);
            }
        }
    }
    assert!(results[5].is_err());
    assert!(results[6].is_ok());
}

#[tokio::test]
async fn list_shows_my_jobs_newest_first_with_state_filters_and_pages() {
    let sim = Sim::start(SimConfig {
        job_duration: Duration::from_secs(60),
        queue_duration: Duration::from_millis(0),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let mut ids = Vec::new();
    for i in 0..105 {
        ids.push(b.submit(&hello(json!({"i": i}))).await.unwrap().id);
    }
    let quick = b
        .submit(&hello(json!({"sim_duration": "50ms", "sim_queue": 0})))
        .await
        .unwrap();
    wait_terminal(&b, &quick.id).await;

    let before = op(&sim, "jobs").await;
    let all = b.list(&ListQuery::default()).await.unwrap();
    assert_eq!(
        op(&sim, "jobs").await - before,
        3,
        "--all follows every page (the simulator serves at most 50 jobs per page)"
    );
    assert_eq!(
        all.len(),
        106,
        "the simulator's other user's jobs are not listed"
    );
    assert!(all.iter().all(|j| j.owner.as_deref() == Some("jobctl")));
    assert_eq!(all[0].id, quick.id, "newest first");
    assert_eq!(all[105].id, ids[0]);
    let created: Vec<_> = all.iter().map(|j| j.created_at).collect();
    assert!(created.windows(2).all(|w| w[0] >= w[1]));

    let three = b
        .list(&ListQuery {
            limit: Some(3),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        three.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&quick.id, &ids[104], &ids[103]]
    );

    let done = b
        .list(&ListQuery {
            states: vec![JobState::Succeeded],
            limit: None,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&quick.id]
    );
    let running = b
        .list(&ListQuery {
            states: vec![JobState::Running, JobState::Failed],
            limit: Some(200),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 105);
    assert!(
        running
            .iter()
            .all(|j| j.native_state.as_deref() == Some("RUNNING"))
    );
    let suspended = b
        .list(&ListQuery {
            states: vec![JobState::Suspended],
            limit: None,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(suspended.is_empty());
}

#[tokio::test]
async fn invalid_specs_are_refused_before_any_request() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let cases = [
        (spec(json!({}), json!({})), "function"),
        (spec(json!({}), json!({"function": "hello"})), "function"),
        (
            spec(
                json!({}),
                json!({"function": "function/a/b", "colour": "red"}),
            ),
            "colour",
        ),
        (
            spec(
                json!({}),
                json!({"function": "function/a/b", "queue": "first"}),
            ),
            "queue",
        ),
        (
            spec(json!({}), json!({"function": "function/a/b", "cpu": -1})),
            "cpu",
        ),
        (
            JobSpec {
                command: Some(vec!["echo".into()]),
                ..hello(json!({}))
            },
            "command",
        ),
    ];
    for (s, field) in cases {
        let e = b.submit(&s).await.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.message.contains(field), "{e} should name {field}");
    }
    assert_eq!(
        sim.state.stats().values().sum::<u64>(),
        0,
        "nothing was sent"
    );
}

#[tokio::test]
async fn platform_refusals_map_to_usage_and_platform_errors_with_codes() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let e = b
        .submit(&spec(
            json!({}),
            json!({"function": "function/CloudPSS/hello", "queue": 7}),
        ))
        .await
        .unwrap_err();
    assert_kind(&e, ErrorKind::Usage);
    assert_eq!(e.code.as_deref(), Some("BAD_USER_INPUT"));
    assert!(e.message.contains("queue 7 does not exist"), "{e}");

    let e = b
        .submit(&spec(
            json!({}),
            json!({"function": "model/CloudPSS/ieee39"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");

    let e = b
        .submit(&spec(
            json!({}),
            json!({"function": "function/CloudPSS/hello", "cpu": 64}),
        ))
        .await
        .unwrap_err();
    // A quota refusal is final (permission/quota), not "may succeed later".
    assert_kind(&e, ErrorKind::Auth);
    assert_eq!(e.exit_code(), 4);
    assert_eq!(e.code.as_deref(), Some("QUOTA_EXCEEDED"));
    assert!(e.message.contains("at most 8 cpu"), "{e}");
    assert!(e.to_string().contains("QUOTA_EXCEEDED"), "{e}");
}

#[tokio::test]
async fn refused_or_missing_credentials_are_auth_errors() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let mut vars = sim.env();
    for (k, v) in vars.iter_mut() {
        if k == "CLOUDPSS_PASSWORD" {
            *v = "wrong".into();
        }
    }
    let b = backend_with(vars, dir.path());
    let e = b.status("x").await.unwrap_err();
    assert_kind(&e, ErrorKind::Auth);
    assert_eq!(e.exit_code(), 4);
    assert_eq!(e.code.as_deref(), Some("FORBIDDEN"));
    assert!(e.message.contains("invalid user name or password"), "{e}");
    assert!(
        !e.to_string().contains("wrong"),
        "the password never appears: {e}"
    );
    assert_eq!(
        op(&sim, "createAccountToken").await,
        1,
        "a refused login is not retried"
    );

    let vars: Vec<_> = sim
        .env()
        .into_iter()
        .filter(|(k, _)| k == "CLOUDPSS_GQL_URL")
        .collect();
    let b = backend_with(vars, dir.path());
    let e = b.list(&ListQuery::default()).await.unwrap_err();
    // Credentials missing from the configuration are a usage error naming what to set.
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("CLOUDPSS_TOKEN"), "{e}");
}

#[tokio::test]
async fn tokens_are_cached_per_profile_and_renewed_once_when_refused() {
    use std::os::unix::fs::PermissionsExt;
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    b.list(&ListQuery::default()).await.unwrap();
    let file = dir.path().join("cache").join("cloudpss.token.json");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(
        !std::fs::read_to_string(&file)
            .unwrap()
            .contains(&sim.state.config.password)
    );

    // Another process (a new backend) reuses the cached token.
    let again = common::backend(&sim, "cloudpss", dir.path());
    again.list(&ListQuery::default()).await.unwrap();
    assert_eq!(op(&sim, "createAccountToken").await, 1);

    // The platform forgot the token (restart, revocation): one transparent re-login.
    let mut cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    cached["token"] = "revoked.token.value".into();
    std::fs::write(&file, cached.to_string()).unwrap();
    let third = common::backend(&sim, "cloudpss", dir.path());
    third.list(&ListQuery::default()).await.unwrap();
    assert_eq!(op(&sim, "createAccountToken").await, 2);
    let renewed = std::fs::read_to_string(&file).unwrap();
    assert!(!renewed.contains("revoked.token.value"));

    // A token cached for another endpoint is not sent to this one.
    let other = quick_sim();
    let b = common::backend(&other, "cloudpss", dir.path());
    b.list(&ListQuery::default()).await.unwrap();
    assert_eq!(op(&other, "createAccountToken").await, 1);

    b.logout().await.unwrap();
    assert!(!file.exists());
    let msg = b.login().await.unwrap();
    assert!(msg.contains("jobctl"), "{msg}");
    assert!(file.exists());
}

#[tokio::test]
async fn a_pre_issued_token_is_used_without_a_password() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    // Obtain a token the way the web UI would issue one.
    let b = common::backend(&sim, "cloudpss", dir.path());
    b.login().await.unwrap();
    let file = dir.path().join("cache").join("cloudpss.token.json");
    let cached: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let token = cached["token"].as_str().unwrap().to_string();

    let url = format!("{}/graphql", sim.base_url);
    let state = tempfile::tempdir().unwrap();
    let tb = backend_with(
        vec![
            ("CLOUDPSS_GQL_URL".into(), url.clone()),
            ("CLOUDPSS_TOKEN".into(), token.clone()),
        ],
        state.path(),
    );
    let job = tb.submit(&hello(json!({}))).await.unwrap();
    assert_eq!(job.owner.as_deref(), Some("jobctl"));
    let mine = tb.list(&ListQuery::default()).await.unwrap();
    assert!(mine.iter().any(|j| j.id == job.id));
    assert!(
        tb.login()
            .await
            .unwrap()
            .contains("CLOUDPSS_TOKEN is valid for jobctl")
    );
    assert!(
        !state
            .path()
            .join("cache")
            .join("cloudpss.token.json")
            .exists(),
        "a pre-issued token is not copied to disk"
    );

    let bad = backend_with(
        vec![
            ("CLOUDPSS_GQL_URL".into(), url),
            ("CLOUDPSS_TOKEN".into(), "not-a-token".into()),
        ],
        state.path(),
    );
    let e = bad.status(&job.id).await.unwrap_err();
    assert_eq!(e.exit_code(), 4);
    assert!(e.message.contains("CLOUDPSS_TOKEN was refused"), "{e}");
    assert!(!e.to_string().contains("not-a-token"));
}

#[tokio::test]
async fn doctor_checks_reachability_version_and_authentication() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let checks = jobctl::backend::collect_checks(&*b).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, vec!["reachability", "api version", "authentication"]);
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks[1].detail.contains(sim::cloudpss::SERVER_VERSION));
    assert!(checks[2].detail.contains("jobctl"));

    // A URL that is not the GraphQL endpoint: every check fails, and says why.
    let vars = vec![
        (
            "CLOUDPSS_GQL_URL".into(),
            format!("{}/api/graphql", sim.base_url),
        ),
        ("CLOUDPSS_USERNAME".into(), "jobctl".into()),
        (
            "CLOUDPSS_PASSWORD".into(),
            jobctl_sim::DEFAULT_PASSWORD.into(),
        ),
    ];
    let wrong = tempfile::tempdir().unwrap();
    let down = backend_with(vars, wrong.path());
    let checks = jobctl::backend::collect_checks(&*down).await;
    assert!(checks.iter().all(|c| !c.ok), "{checks:?}");
    assert!(checks[0].detail.contains("HTTP 404"), "{checks:?}");
    assert!(checks[0].detail.contains("CLOUDPSS_GQL_URL"), "{checks:?}");
    let e = down.status("x").await.unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
}

/// The vendor's Node.js examples (tests/fixtures/cloudpss-node), unchanged, against the
/// simulator. Needs `node` and `npm`; prints a SKIP line otherwise.
#[tokio::test]
async fn the_vendor_nodejs_examples_run_unchanged() {
    let has = |cmd: &str| {
        std::process::Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !has("node") || !has("npm") {
        eprintln!("SKIP the_vendor_nodejs_examples_run_unchanged: node or npm is not installed");
        return;
    }
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cloudpss-node");
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cloudpss-node");
    std::fs::create_dir_all(&work).unwrap();
    for entry in std::fs::read_dir(&fixture).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, work.join(path.file_name().unwrap())).unwrap();
    }
    if !work
        .join("node_modules/graphql-request/package.json")
        .exists()
    {
        let out = std::process::Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--loglevel=error",
                "graphql-request@7",
                "graphql@16",
                "dotenv@16",
            ])
            .current_dir(&work)
            .output()
            .unwrap();
        if !out.status.success() {
            eprintln!(
                "SKIP the_vendor_nodejs_examples_run_unchanged: npm install failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        }
    }
    let sim = Sim::start(SimConfig {
        job_duration: Duration::from_millis(300),
        queue_duration: Duration::from_millis(100),
        ..SimConfig::default()
    });
    for (script, done_marker) in [
        ("example.js", "任务执行完成"),
        ("advanced-examples.js", "高级示例执行完毕"),
    ] {
        let mut cmd = tokio::process::Command::new("node");
        cmd.arg(script).current_dir(&work).env_clear();
        if let Ok(path) = std::env::var("PATH") {
            cmd.env("PATH", path);
        }
        cmd.envs(sim.env());
        let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
            .await
            .expect("node finishes")
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{script}: {stdout}\n{stderr}");
        assert!(
            stderr.trim().is_empty(),
            "{script} reported errors: {stderr}"
        );
        assert!(
            stdout.contains("jobctl (jobctl-sim)"),
            "{script} logged in: {stdout}"
        );
        assert!(stdout.contains(done_marker), "{script} finished: {stdout}");
        assert!(
            stdout.contains("已完成"),
            "{script} saw COMPLETED: {stdout}"
        );
    }
    let served = ops(&sim).await;
    assert_eq!(served.get("createJob"), Some(&3), "{served:?}");
    assert!(served.get("job").copied().unwrap_or(0) >= 2);
}

// ---------------------------------------------------------------------------------------
// The CLI end to end, against the in-process simulator.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_succeeds_and_a_failed_job_fails_the_command() {
    let sim = quick_sim();
    let sb = Sandbox::with_sim(&sim);
    let mut cmd = sb.std_cmd();
    cmd.args([
        "-b",
        "cloudpss",
        "submit",
        "--opt",
        "function=function/CloudPSS/hello",
        "--arg",
        "message=hi",
        "--wait",
    ]);
    let out = cmd.output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("cloudpss:"), "{stdout}");
    assert!(
        stdout.contains("succeeded") && stdout.contains("COMPLETED"),
        "{stdout}"
    );

    let mut cmd = sb.std_cmd();
    cmd.args([
        "-b",
        "cloudpss",
        "submit",
        "--opt",
        "function=function/CloudPSS/hello",
        "--arg",
        "sim_outcome=fail",
        "--wait",
        "-o",
        "quiet",
    ]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let reference = text(&out.stdout).trim().to_string();
    assert!(reference.starts_with("cloudpss:"), "{reference}");

    // The printed reference works in a later process.
    let mut cmd = sb.std_cmd();
    cmd.args(["-o", "json", "status", &reference]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let job: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(job["state"], "failed");
    assert_eq!(job["native_state"], "FAILED");
    assert_eq!(job["owner"], "jobctl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_and_status_return_every_job_when_the_server_caps_pages() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(b.submit(&hello(json!({"i": i}))).await.unwrap().id);
    }
    let before = op(&sim, "jobs").await;
    let sb = Sandbox::with_sim(&sim);
    let mut cmd = sb.std_cmd();
    cmd.args(["-b", "cloudpss", "-o", "json", "list", "--all"]);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut listed: Vec<String> = listed
        .iter()
        .map(|j| j["id"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(listed, expected, "every job, each once");
    assert_eq!(op(&sim, "jobs").await - before, 3, "pages of 50, 50 and 20");

    // Many ids at once: the id-filtered query is capped the same way.
    let results = b.statuses(&ids).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_for_not_found_bad_credentials_and_bad_specs() {
    let sim = quick_sim();
    let sb = Sandbox::with_sim(&sim);
    let mut cmd = sb.std_cmd();
    cmd.args(["status", "cloudpss:no-such-job"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", text(&out.stderr));

    // A fresh state directory: no token cached by the command above.
    let fresh = Sandbox::with_sim(&sim).var("CLOUDPSS_PASSWORD", "wrong");
    let mut cmd = fresh.std_cmd();
    cmd.args(["-b", "cloudpss", "-o", "json", "list"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    let err: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(err["error"]["code"], "FORBIDDEN");
    assert_eq!(err["error"]["kind"], "auth");
    assert!(!text(&out.stderr).contains("wrong"));

    let mut cmd = sb.std_cmd();
    cmd.args(["-b", "cloudpss", "submit", "--arg", "x=1"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("function"),
        "{}",
        text(&out.stderr)
    );

    let mut cmd = sb.std_cmd();
    cmd.args(["doctor", "cloudpss"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("X-Cloudpss-Version"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ci_example_script_passes_good_jobs_and_fails_bad_ones() {
    let sim = quick_sim();
    let sb = Sandbox::with_sim(&sim);
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ci-cloudpss.sh");
    let jobctl_path = bin.to_string_lossy().to_string();
    let script_cmd = |args: &[&str]| {
        let mut sh = sb.command("sh");
        sh.arg(&script)
            .args(args)
            .env("JOBCTL", jobctl_path.as_str());
        sh
    };
    let out = script_cmd(&["message=hello from CI"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("succeeded"),
        "{}",
        text(&out.stderr)
    );

    let out = script_cmd(&["sim_outcome=fail"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("failed"),
        "{}",
        text(&out.stderr)
    );

    let out = script_cmd(&["not-a-pair"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

/// Sends one raw GraphQL request, as any client would.
async fn graphql(sim: &SimHandle, token: Option<&str>, query: &str, variables: Value) -> Value {
    let mut req = reqwest::Client::new()
        .post(format!("{}/graphql", sim.base_url))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GraphQL errors come with HTTP 200");
    assert_eq!(
        resp.headers()["x-cloudpss-version"],
        sim::cloudpss::SERVER_VERSION
    );
    resp.json().await.unwrap()
}

#[tokio::test]
async fn simulator_tokens_expire_after_the_ttl_and_jobctl_logs_in_again() {
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_millis(800),
        ..SimConfig::default()
    });
    let login = "mutation($input: CreateAccountTokenInput!) { createAccountToken(input: $input) { token expirationTime } }";
    let challenge = graphql(
        &sim,
        None,
        "query($input: AccountChallengeInput!) { accountChallenge(input: $input) { id groups { items { id type } } } }",
        json!({"input": {"name": "jobctl"}}),
    )
    .await;
    let c = &challenge["data"]["accountChallenge"];
    let item = c["groups"][0]["items"][0].clone();
    assert_eq!(item["type"], "PASSWORD");
    let issued = graphql(
        &sim,
        None,
        login,
        json!({"input": {"id": c["id"], "answers": [{"id": item["id"], "answer": {"password": jobctl_sim::DEFAULT_PASSWORD}}]}}),
    )
    .await;
    let token = issued["data"]["createAccountToken"]["token"]
        .as_str()
        .unwrap()
        .to_string();
    let jobs = "{ jobs(input: {orderBy: [\"createTime<\"], limit: 1}) { count total } }";
    let ok = graphql(&sim, Some(&token), jobs, json!({})).await;
    assert!(ok["errors"].is_null(), "{ok}");

    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    b.list(&ListQuery::default()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;

    let expired = graphql(&sim, Some(&token), jobs, json!({})).await;
    assert_eq!(
        expired["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{expired}"
    );
    assert!(
        expired["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );

    // jobctl's cached token expired as well: it gets a new one without the user noticing.
    let before = op(&sim, "createAccountToken").await;
    b.list(&ListQuery::default()).await.unwrap();
    assert_eq!(op(&sim, "createAccountToken").await, before + 1);
}

#[tokio::test]
async fn simulator_serves_accounts_policies_and_applications() {
    let sim = quick_sim();
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "cloudpss", dir.path());
    b.login().await.unwrap();
    let cached: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("cache/cloudpss.token.json")).unwrap(),
    )
    .unwrap();
    let token = cached["token"].as_str().unwrap();

    let account = graphql(
        &sim,
        Some(token),
        "query($input: AccountInput!) { account(input: $input) { name type ... on AccountUser { email } } }",
        json!({"input": {"name": "jobctl", "type": "USER"}}),
    )
    .await;
    assert_eq!(account["data"]["account"]["name"], "jobctl", "{account}");
    assert_eq!(account["data"]["account"]["type"], "USER");
    let nobody = graphql(
        &sim,
        Some(token),
        "query($input: AccountInput!) { account(input: $input) { name } }",
        json!({"input": {"name": "nobody"}}),
    )
    .await;
    assert!(nobody["data"]["account"].is_null());

    let policies = graphql(
        &sim,
        Some(token),
        "{ jobPolicies(input: {orderBy: [\"id>\"]}) { items { id name maxPriority tres { cpu mem } queue { id name } } count total } }",
        json!({}),
    )
    .await;
    let items = policies["data"]["jobPolicies"]["items"].as_array().unwrap();
    let queues: Vec<i64> = items
        .iter()
        .map(|p| p["queue"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(queues, vec![1, 2]);
    assert_eq!(items[0]["tres"][0]["cpu"], 8);

    // The queue listed as "large" accepts what "default" refuses.
    let big = b
        .submit(&spec(
            json!({}),
            json!({"function": "function/CloudPSS/hello", "queue": 2, "cpu": 64}),
        ))
        .await
        .unwrap();
    assert_eq!(big.queue.as_deref(), Some("2"));

    let apps = graphql(
        &sim,
        Some(token),
        "{ applications(input: {orderBy: [\"updatedAt>\"], limit: 2}) { items { rid } cursor count total } }",
        json!({}),
    )
    .await;
    let page = &apps["data"]["applications"];
    assert_eq!(
        (page["count"].as_i64(), page["total"].as_i64()),
        (Some(2), Some(3))
    );

    // Without a token, everything but the login and systemInfo is refused.
    let anon = graphql(&sim, None, "{ systemInfo { machineId } }", json!({})).await;
    assert_eq!(anon["data"]["systemInfo"]["machineId"], "jobctl-sim");
    let anon = graphql(&sim, None, "{ job(input: {id: \"x\"}) { id } }", json!({})).await;
    assert_eq!(anon["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
}
