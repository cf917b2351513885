//! The slurm backend against jobctl-sim's slurmrestd v0.0.38 (no cluster needed).

mod common;

use common::{Sandbox, Setup, Sim, quick, wait_terminal};
use jobctl::ErrorKind;
use jobctl::backend::JobBackend;
use jobctl::model::{AbortOutcome, Job, JobSpec, JobState, ListQuery, LogsRequest};
use jobctl_sim::axum;
use jobctl_sim::{self as sim, SimConfig, SimHandle};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The built-in `slurm` profile resolved from exactly these variables, as the CLI would.
fn backend_from(
    vars: &[(String, String)],
    state_dir: &Path,
) -> jobctl::Result<Arc<dyn JobBackend>> {
    Setup::new("slurm").vars(vars.to_vec()).build(state_dir)
}

fn slurm_vars(sim: &SimHandle) -> Vec<(String, String)> {
    sim.env()
        .into_iter()
        .filter(|(k, _)| k.starts_with("SLURM_"))
        .collect()
}

fn with(mut vars: Vec<(String, String)>, key: &str, value: &str) -> Vec<(String, String)> {
    vars.retain(|(k, _)| k != key);
    vars.push((key.to_string(), value.to_string()));
    vars
}

fn spec(command: &str, args: Value, options: Value) -> JobSpec {
    JobSpec {
        name: Some("t".into()),
        command: Some(vec![command.to_string()]),
        args: args.as_object().cloned().unwrap_or_default(),
        options: options.as_object().cloned().unwrap_or_default(),
        ..JobSpec::default()
    }
}

const JOBS: &str = "GET /slurm/v0.0.38/jobs";
const ONE_JOB: &str = "GET /slurm/v0.0.38/job/{job_id}";
const DELETE: &str = "DELETE /slurm/v0.0.38/job/{job_id}";

#[tokio::test]
async fn a_job_runs_to_success() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let job = b
        .submit(&spec(
            "echo hi",
            json!({"GREETING": "hello"}),
            json!({"partition": "debug", "time_limit": 5}),
        ))
        .await
        .unwrap();
    assert!(!job.terminal);
    assert!(
        job.id.parse::<u64>().is_ok(),
        "numeric Slurm id: {}",
        job.id
    );
    let done = wait_terminal(&b, &job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.native_state.as_deref(), Some("COMPLETED"));
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.name.as_deref(), Some("t"));
    assert_eq!(done.owner.as_deref(), Some("jobctl"));
    assert_eq!(done.queue.as_deref(), Some("debug"));
    assert!(done.created_at.is_some() && done.started_at.is_some() && done.ended_at.is_some());
    assert_eq!(done.extra["api_version"], "v0.0.38");
    assert_eq!(done.extra["time_limit_minutes"], 5);
}

#[tokio::test]
async fn failures_decode_the_wait_status() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let failed = b
        .submit(&spec(
            "exit 3",
            json!({"sim_outcome": "fail", "sim_exit_code": 3}),
            json!({}),
        ))
        .await
        .unwrap();
    let killed = b
        .submit(&spec("kill -9 $$", json!({"sim_signal": 9}), json!({})))
        .await
        .unwrap();
    let timed_out = b
        .submit(&spec(
            "sleep 999",
            json!({"sim_outcome": "timeout"}),
            json!({"time_limit": 1}),
        ))
        .await
        .unwrap();

    let j = wait_terminal(&b, &failed.id).await;
    assert_eq!((j.state, j.exit_code), (JobState::Failed, Some(3)));
    assert_eq!(j.native_state.as_deref(), Some("FAILED"));
    assert_eq!(j.extra["exit_status_raw"], 768);
    assert!(j.reason.unwrap().contains("NonZeroExitCode"));

    let j = wait_terminal(&b, &killed.id).await;
    assert_eq!((j.state, j.exit_code), (JobState::Failed, Some(137)));
    assert!(j.reason.unwrap().contains("signal 9 (SIGKILL)"));

    let j = wait_terminal(&b, &timed_out.id).await;
    assert_eq!(j.state, JobState::Failed);
    assert_eq!(j.native_state.as_deref(), Some("TIMEOUT"));
    assert!(j.reason.unwrap().starts_with("time limit reached"));
}

#[tokio::test]
async fn abort_cancels_and_then_reports_already_terminal() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let job = b
        .submit(&spec("sleep 60", json!({"sim_duration": "30s"}), json!({})))
        .await
        .unwrap();
    assert_eq!(b.abort(&job.id).await.unwrap(), AbortOutcome::Requested);
    assert_eq!(sim.hits(DELETE), 1);
    let j = wait_terminal(&b, &job.id).await;
    assert_eq!(j.state, JobState::Canceled);
    assert_eq!(j.native_state.as_deref(), Some("CANCELLED"));
    assert_eq!(
        b.abort(&job.id).await.unwrap(),
        AbortOutcome::AlreadyTerminal
    );
    assert_eq!(sim.hits(DELETE), 1, "no second DELETE");
}

#[tokio::test]
async fn an_unknown_job_is_not_found_at_once_without_retries() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let before = sim.hits(ONE_JOB);
    let e = b.status("424242").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.exit_code(), 6);
    assert_eq!(e.code.as_deref(), Some("2017"));
    assert!(e.to_string().contains("Unable to find JobId=424242"), "{e}");
    // HTTP 500 with errors[] is Slurm's verdict, not a hiccup: asked exactly once.
    assert_eq!(sim.hits(ONE_JOB), before + 1);

    let e = b.abort("424242").await.unwrap_err();
    assert_eq!(e.exit_code(), 6);

    let before = sim.total();
    let e = b.status("not-a-number").await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(sim.total(), before, "refused before any request");
}

#[tokio::test]
async fn slurm_rejections_of_a_submission_are_usage_errors_with_their_code() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let e = b
        .submit(&spec("true", json!({}), json!({"partition": "gpu"})))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(e.code.as_deref(), Some("2000"));
    assert!(
        e.to_string().contains("Invalid partition name specified"),
        "{e}"
    );
    assert_eq!(
        sim.hits("POST /slurm/v0.0.38/job/submit"),
        1,
        "a submission is never repeated"
    );
}

#[tokio::test]
async fn bad_specs_are_refused_before_any_request() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let cases: Vec<(JobSpec, &str)> = vec![
        (JobSpec::default(), "command"),
        (spec("true", json!({}), json!({"colour": "red"})), "colour"),
        (spec("true", json!({}), json!({"nodes": "4-2"})), "nodes"),
        (
            spec("true", json!({}), json!({"time_limit": "soon"})),
            "time_limit",
        ),
        (spec("true", json!({"BAD-NAME": 1}), json!({})), "BAD-NAME"),
    ];
    for (s, field) in cases {
        let e = b.validate(&s).unwrap_err();
        assert!(e.message.contains(field), "{field}: {e}");
        let e = b.submit(&s).await.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.message.contains(field), "{field}: {e}");
    }
    assert_eq!(sim.total(), 0, "{:?}", sim.state.stats());
}

#[tokio::test]
async fn watching_twenty_jobs_costs_one_list_request_per_poll() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    assert!(
        b.capabilities()
            .contains(&jobctl::model::Capability::BatchStatus)
    );
    let mut ids = Vec::new();
    for i in 0..20 {
        let outcome = if i % 5 == 0 { "fail" } else { "succeed" };
        let j = b
            .submit(&spec(
                "true",
                json!({"sim_outcome": outcome, "sim_duration": "300ms"}),
                json!({}),
            ))
            .await
            .unwrap();
        ids.push(j.id);
    }
    let singles_before = sim.hits(ONE_JOB);
    let mut polls = 0;
    loop {
        let results = b.statuses(&ids).await;
        polls += 1;
        assert_eq!(results.len(), 20);
        let jobs: Vec<Job> = results.into_iter().map(|r| r.unwrap()).collect();
        for (j, id) in jobs.iter().zip(&ids) {
            assert_eq!(&j.id, id, "results keep the order of the ids");
        }
        assert_eq!(sim.hits(JOBS), polls);
        if jobs.iter().all(|j| j.terminal) {
            let failed = jobs.iter().filter(|j| j.state == JobState::Failed).count();
            assert_eq!(failed, 4);
            break;
        }
        assert!(polls < 100, "jobs never ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let singles_after = sim.hits(ONE_JOB);
    assert_eq!(
        singles_after, singles_before,
        "no per-job requests while polling"
    );

    // An id the list lacks gets its own answer in its own slot.
    let mixed = b.statuses(&[ids[0].clone(), "999999".into()]).await;
    assert!(mixed[0].is_ok());
    assert_eq!(mixed[1].as_ref().unwrap_err().exit_code(), 6);
}

#[tokio::test]
async fn refused_and_expired_tokens_are_authentication_failures() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let foreign = SimConfig {
        password: "not-the-sims".into(),
        ..SimConfig::default()
    };
    let bad = sim::slurm::mint_token(&foreign, "jobctl", 3600);
    let b = backend_from(&with(slurm_vars(&sim), "SLURM_JWT", &bad), dir.path()).unwrap();
    let e = b.status("1").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    assert_eq!(e.exit_code(), 4);
    assert!(
        !e.to_string().contains(&bad),
        "the token never appears in messages"
    );
    assert!(
        e.message.contains("SLURM_USER_NAME") && e.message.contains("SLURM_JWT"),
        "the built-in profile's hint names its variables: {e}"
    );
    // A configured profile reads its own keys: the hint names those.
    let vars: std::collections::BTreeMap<String, String> = slurm_vars(&sim).into_iter().collect();
    let named = Setup::new("hpc")
        .var("MY_JWT", &bad)
        .config(&format!(
            "[profiles.hpc]\nbackend = \"slurm\"\nurl = \"{}\"\nusername = \"jobctl\"\ntoken_env = \"MY_JWT\"\n",
            vars["SLURM_REST_URL"]
        ))
        .backend(dir.path());
    let e = named.status("1").await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(
        e.message.contains("`username`")
            && e.message.contains("`token_env`")
            && !e.message.contains("SLURM_"),
        "{e}"
    );
    let e = b
        .submit(&spec("true", json!({}), json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert_eq!(sim.hits("POST /slurm/v0.0.38/job/submit"), 1);

    let before = sim.total();
    let expired = sim::slurm::mint_token(&sim.state.config, "jobctl", -10);
    let b = backend_from(&with(slurm_vars(&sim), "SLURM_JWT", &expired), dir.path()).unwrap();
    let e = b.list(&ListQuery::default()).await.unwrap_err();
    assert_eq!(e.exit_code(), 4);
    assert!(e.message.contains("expired"), "{e}");
    assert_eq!(sim.total(), before, "an expired token is not even sent");

    // No user name header at all: slurmrestd answers 401.
    let mut vars = slurm_vars(&sim);
    vars.retain(|(k, _)| k != "SLURM_USER_NAME");
    vars = with(vars, "SLURM_JWT", "opaque-token-without-claims");
    let b = backend_from(&vars, dir.path()).unwrap();
    let e = b.status("1").await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "no user name to send: {e}");
    assert!(e.message.contains("SLURM_USER_NAME"), "{e}");
}

/// Writes tokens to files and returns a token_command printing the next one at each call,
/// plus the path of the file counting the calls.
fn token_script(dir: &Path, tokens: &[String]) -> (String, std::path::PathBuf) {
    for (i, t) in tokens.iter().enumerate() {
        std::fs::write(
            dir.join(format!("token.{}", i + 1)),
            format!("SLURM_JWT={t}\n"),
        )
        .unwrap();
    }
    let counter = dir.join("calls");
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; f={d}/token.$n; [ -f $f ] || f={d}/token.{last}; cat $f",
        c = counter.display(),
        d = dir.display(),
        last = tokens.len()
    );
    (shell_words::join(["sh", "-c", script.as_str()]), counter)
}

fn calls(counter: &Path) -> u32 {
    std::fs::read_to_string(counter)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn token_command_mints_again_when_the_token_is_refused() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let foreign = SimConfig {
        password: "stale-key".into(),
        ..SimConfig::default()
    };
    let tokens = vec![
        sim::slurm::mint_token(&foreign, "jobctl", 3600),
        sim::slurm::mint_token(&sim.state.config, "jobctl", 3600),
    ];
    let (command, counter) = token_script(dir.path(), &tokens);
    let mut vars = with(slurm_vars(&sim), "SLURM_TOKEN_COMMAND", &command);
    vars.retain(|(k, _)| k != "SLURM_JWT" && k != "SLURM_USER_NAME");
    let b = backend_from(&vars, dir.path()).unwrap();
    let job = b.submit(&spec("true", json!({}), json!({}))).await.unwrap();
    assert_eq!(calls(&counter), 2, "refused once, minted once more");
    assert_eq!(
        job.owner.as_deref(),
        Some("jobctl"),
        "user name taken from the token"
    );
    b.status(&job.id).await.unwrap();
    assert_eq!(calls(&counter), 2, "the good token is reused");
    // Cached for the next process with the same state directory.
    let b2 = backend_from(&vars, dir.path()).unwrap();
    b2.status(&job.id).await.unwrap();
    assert_eq!(calls(&counter), 2);
    let cache = std::fs::read_dir(dir.path().join("cache")).unwrap().count();
    assert_eq!(cache, 1);
}

#[tokio::test]
async fn token_command_mints_again_before_the_token_expires() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    // One-hour tokens in their last 30 s are inside the renewal margin: every use mints a
    // fresh one.
    let tokens: Vec<String> = (0..10)
        .map(|_| sim::slurm::mint_token_aged(&sim.state.config, "jobctl", 3570, 30))
        .collect();
    let (command, counter) = token_script(dir.path(), &tokens);
    let vars = with(slurm_vars(&sim), "SLURM_TOKEN_COMMAND", &command);
    let b = backend_from(&vars, dir.path()).unwrap();
    let job = b.submit(&spec("true", json!({}), json!({}))).await.unwrap();
    let after_submit = calls(&counter);
    b.status(&job.id).await.unwrap();
    b.status(&job.id).await.unwrap();
    assert_eq!(
        calls(&counter),
        after_submit + 2,
        "one new token per request near expiry"
    );

    let failing = with(
        slurm_vars(&sim),
        "SLURM_TOKEN_COMMAND",
        "sh -c 'echo Invalid user id >&2; exit 1'",
    );
    let b = backend_from(&failing, dir.path()).unwrap();
    let e = b.status(&job.id).await.unwrap_err();
    assert_eq!(e.exit_code(), 4);
    assert!(e.message.contains("Invalid user id"), "{e}");
}

#[tokio::test]
async fn api_versions_are_discovered_or_refused() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let e = backend_from(
        &with(slurm_vars(&sim), "SLURM_API_VERSION", "v0.0.40"),
        dir.path(),
    )
    .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("v0.0.38"), "{e}");
    let b = backend_from(
        &with(slurm_vars(&sim), "SLURM_API_VERSION", "0.0.38"),
        dir.path(),
    )
    .unwrap();
    b.list(&ListQuery::default()).await.unwrap();
    assert_eq!(
        sim.hits("GET /slurm/v0.0.38/ping"),
        0,
        "a pinned version is not probed"
    );

    // A newer slurmrestd that serves only v0.0.40.
    let app = axum::Router::new().route(
        "/openapi",
        axum::routing::get(|| async {
            axum::Json(json!({"paths": {"/slurm/v0.0.40/ping": {}, "/slurm/v0.0.40/jobs": {}}}))
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let vars = with(
        slurm_vars(&sim),
        "SLURM_REST_URL",
        &format!("http://{addr}"),
    );
    let b = backend_from(&vars, dir.path()).unwrap();
    let e = b.status("1").await.unwrap_err();
    assert_eq!(e.exit_code(), 8, "{e}");
    assert!(
        e.message.contains("v0.0.40") && e.message.contains("v0.0.38"),
        "{e}"
    );
}

#[tokio::test]
async fn logs_and_fetch_read_the_output_file_when_it_is_visible() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let mut s = spec(
        "echo hello",
        json!({}),
        json!({
            "workdir": out_dir.to_str().unwrap(),
            "stdout": "%x-%j.out",
        }),
    );
    s.name = Some("greet".into());
    let job = b.submit(&s).await.unwrap();
    wait_terminal(&b, &job.id).await;
    let path = out_dir.join(format!("greet-{}.out", job.id));
    std::fs::write(&path, "hello\n").unwrap();

    let mut buf = Vec::new();
    b.logs(&job.id, LogsRequest::default(), &mut buf)
        .await
        .unwrap();
    assert_eq!(String::from_utf8(buf).unwrap(), "hello\n");
    // Standard error goes to the same file when the job names none.
    let mut buf = Vec::new();
    b.logs(
        &job.id,
        LogsRequest {
            follow: true,
            stderr: true,
            ..LogsRequest::default()
        },
        &mut buf,
    )
    .await
    .unwrap();
    assert_eq!(String::from_utf8(buf).unwrap(), "hello\n");

    let dest = dir.path().join("dest");
    std::fs::create_dir(&dest).unwrap();
    let arts = b.fetch(&job.id, &dest, &|_| {}).await.unwrap();
    assert_eq!(arts.len(), 1);
    assert_eq!(arts[0].name, format!("greet-{}.out", job.id));
    assert_eq!(
        std::fs::read_to_string(dest.join(&arts[0].name)).unwrap(),
        "hello\n"
    );

    // Output on a filesystem this machine cannot see.
    let remote = b
        .submit(&spec(
            "true",
            json!({}),
            json!({"stdout": "/cluster-only/%j.out"}),
        ))
        .await
        .unwrap();
    wait_terminal(&b, &remote.id).await;
    let e = b
        .logs(&remote.id, LogsRequest::default(), &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 8);
    assert!(
        e.message
            .contains(&format!("/cluster-only/{}.out", remote.id)),
        "{e}"
    );

    // Not started yet: nothing to show (yet).
    let queued = b
        .submit(&spec("true", json!({"sim_queue": "30s"}), json!({})))
        .await
        .unwrap();
    let e = b
        .logs(&queued.id, LogsRequest::default(), &mut Vec::new())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 6, "{e}");
}

#[tokio::test]
async fn doctor_and_login_report_user_version_and_expiry() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let checks = jobctl::backend::collect_checks(&*b).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    let version = checks.iter().find(|c| c.name == "api version").unwrap();
    assert!(version.detail.contains("v0.0.38") && version.detail.contains("22.05.8"));
    let msg = b.login().await.unwrap();
    assert!(
        msg.contains("jobctl") && msg.contains("valid until"),
        "{msg}"
    );

    let bad = sim::slurm::mint_token(
        &SimConfig {
            password: "x".into(),
            ..SimConfig::default()
        },
        "jobctl",
        60,
    );
    let b = backend_from(&with(slurm_vars(&sim), "SLURM_JWT", &bad), dir.path()).unwrap();
    let checks = jobctl::backend::collect_checks(&*b).await;
    let auth = checks.iter().find(|c| c.name == "authentication").unwrap();
    assert!(!auth.ok, "{checks:?}");
    assert!(checks.iter().any(|c| c.name == "reachability" && c.ok));
    assert_eq!(b.login().await.unwrap_err().exit_code(), 4);
}

// ---- the jobctl command line against the simulator ------------------------------------------

fn stdout_json(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON value ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_status_list_abort() {
    let sim = Sim::start(quick());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_PROFILE", "slurm");

    let out = sb
        .cmd()
        .args([
            "submit",
            "-o",
            "quiet",
            "--name",
            "ok",
            "--partition",
            "debug",
            "--",
            "echo",
            "hi",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let submitted = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = sb
        .cmd()
        .args(["wait", "-o", "json", &submitted])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v = stdout_json(&out);
    let job = &v["jobs"][0];
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["native_state"], "COMPLETED");
    assert_eq!(job["queue"], "debug");
    let ok_ref = job["ref"].as_str().unwrap().to_string();
    assert!(ok_ref.starts_with("slurm:"));

    let out = sb
        .cmd()
        .args([
            "submit",
            "--wait",
            "-o",
            "ndjson",
            "--arg",
            "sim_outcome=fail",
            "--arg",
            "sim_exit_code=3",
            "--",
            "exit 3",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let last = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .to_string();
    let result: Value = serde_json::from_str(&last).unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["jobs"][0]["exit_code"], 3);
    assert_eq!(result["jobs"][0]["native_state"], "FAILED");

    let out = sb
        .cmd()
        .args([
            "submit",
            "-o",
            "quiet",
            "--arg",
            "sim_duration=30s",
            "--",
            "sleep 30",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let long_ref = String::from_utf8(out.stdout).unwrap().trim().to_string();

    let out = sb.cmd().args(["list", "-o", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let refs: Vec<String> = stdout_json(&out)
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["ref"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(refs.len(), 3, "own jobs only: {refs:?}");
    assert_eq!(refs[0], long_ref, "newest first");

    let out = sb
        .cmd()
        .args(["abort", "--wait", "--timeout", "20s", &long_ref])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb
        .cmd()
        .args(["status", "-o", "json", &long_ref])
        .output()
        .unwrap();
    assert_eq!(stdout_json(&out)["state"], "canceled");

    // Three references, one poll request each round.
    let before = sim.hits(JOBS);
    let out = sb
        .cmd()
        .args([
            "wait",
            "-o",
            "json",
            "--interval",
            "200ms",
            &ok_ref,
            &long_ref,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "a canceled job: exit 5");
    assert!(sim.hits(JOBS) > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_exit_with_the_contract_codes() {
    let sim = Sim::start(quick());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_PROFILE", "slurm");

    let out = sb.cmd().args(["status", "slurm:424242"]).output().unwrap();
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("2017") && err.contains("slurm"), "{err}");

    let out = sb
        .cmd()
        .args(["submit", "-o", "json", "--partition", "gpu", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stdout_json(&out)["error"]["code"], "2000");

    let out = sb
        .cmd()
        .args(["submit", "--opt", "colour=red", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));

    let out = sb
        .cmd()
        .args([
            "submit",
            "-o",
            "quiet",
            "--opt",
            "stdout=/cluster-only/%j.out",
            "--",
            "true",
        ])
        .output()
        .unwrap();
    let r = String::from_utf8(out.stdout).unwrap().trim().to_string();
    sb.cmd().args(["wait", &r]).assert().code(0);
    let out = sb.cmd().args(["logs", &r]).output().unwrap();
    assert_eq!(out.status.code(), Some(8));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/cluster-only/"));

    let bad = sim::slurm::mint_token(
        &SimConfig {
            password: "x".into(),
            ..SimConfig::default()
        },
        "jobctl",
        600,
    );
    let out = sb
        .cmd()
        .env("SLURM_JWT", &bad)
        .args(["list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4));
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains(&bad),
        "token never printed"
    );

    sb.cmd().args(["doctor", "slurm"]).assert().code(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_lists_the_partitions_with_their_limits() {
    let sim = Sim::start(quick());
    let sb = Sandbox::with_sim(&sim);
    let b = backend_from(&slurm_vars(&sim), &sb.state()).unwrap();
    assert!(
        b.capabilities()
            .contains(&jobctl::model::Capability::Queues)
    );
    let queues = b.queues().await.unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["debug", "long", "maint"]);
    let debug = &queues[0];
    assert_eq!(debug.limits["state"], "UP");
    assert_eq!(debug.limits["total_cpus"], 4);
    assert_eq!(debug.limits["total_nodes"], 1);
    assert_eq!(debug.limits["max_time"], "1h");
    assert_eq!(queues[1].limits["max_time"], "infinite");
    assert_eq!(queues[2].limits["state"], "DOWN");

    // The command prints them as one JSON array, each queue's limits beside its name.
    let printed = sb.json(&["-b", "slurm", "queues"]);
    assert_eq!(printed[0]["name"], "debug");
    assert_eq!(printed[0]["max_time"], "1h");
    assert_eq!(printed[1]["total_nodes"], 8);
}

/// Keys are found in job comments with one `GET jobs` for all of them; a key not seen is
/// certainly absent only while its submission is young enough for slurmctld to still list it.
#[tokio::test]
async fn keys_are_looked_up_in_comments_and_absence_is_trusted_only_while_young() {
    use jobctl::backend::{KeyLookup, KeyQuery};
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = backend_from(&slurm_vars(&sim), dir.path()).unwrap();
    let mut mine = spec("echo hi", json!({}), json!({}));
    mine.key = Some("k1".into());
    let job = b.submit(&mine).await.unwrap();
    let mut lost = mine.clone();
    lost.key = Some("k2".into());
    let now = chrono::Utc::now();
    let before = sim.hits(JOBS);
    let found = b
        .find_by_keys(
            &[
                KeyQuery {
                    spec: &mine,
                    since: now - chrono::Duration::hours(1),
                },
                KeyQuery {
                    spec: &lost,
                    since: now,
                },
                KeyQuery {
                    spec: &lost,
                    since: now - chrono::Duration::minutes(10),
                },
            ],
            &|_| false,
        )
        .await;
    assert_eq!(sim.hits(JOBS) - before, 1, "one listing for every key");
    match &found[0] {
        Ok(KeyLookup::Found(j)) => assert_eq!(j.id, job.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(found[1], Ok(KeyLookup::Absent)), "{:?}", found[1]);
    match &found[2] {
        Ok(KeyLookup::Undecided(why)) => assert!(why.contains("MinJobAge"), "{why}"),
        other => panic!("an old absence proves nothing: {other:?}"),
    }
}
