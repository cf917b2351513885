//! The nebula backend against the in-process jobctl-sim: every operation and error path.

mod common;

use common::{Sandbox, Setup, Sim, count, observe_until_terminal};
use jobctl::backend::JobBackend;
use jobctl::model::{AbortOutcome, Job, JobSpec, JobState, ListQuery, LogsRequest};
use jobctl::{ErrorKind, Result};
use jobctl_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Workflow ids of the simulator: 2, 3 and 4 tasks.
const PAGERANK: &str = "4216617528";
const COMMUNITY: &str = "4216617529";
const BFS: &str = "4216617530";

fn start_default() -> Sim {
    Sim::start(SimConfig {
        job_duration: Duration::from_millis(800),
        queue_duration: Duration::from_millis(100),
        ..SimConfig::default()
    })
}

/// A nebula backend for the simulator: its variables, `vars` on top (an empty value removes
/// one), and `section` as the config file's `[profiles.nebula]`.
fn backend_with(
    sim: &SimHandle,
    state: &Path,
    vars: &[(&str, &str)],
    section: &str,
) -> Arc<dyn JobBackend> {
    Setup::sim("nebula", sim)
        .with(vars)
        .config(&format!("[profiles.nebula]\n{section}\n"))
        .backend(state)
}

fn backend(sim: &SimHandle, state: &Path) -> Arc<dyn JobBackend> {
    backend_with(sim, state, &[], "")
}

fn spec(workflow: &str, args: &[(&str, Value)]) -> JobSpec {
    let mut s = JobSpec::default();
    s.options.insert("workflow".into(), workflow.into());
    for (k, v) in args {
        s.args.insert(k.to_string(), v.clone());
    }
    s
}

const DETAIL: &str = "GET /api-open/v1/jobs/{id}";
const LIST: &str = "GET /api-open/v1/jobs";
const CONNECT: &str = "POST /api-open/v1/connect";

fn tasks(job: &Job) -> Vec<Value> {
    job.extra["tasks"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_workflow_run_goes_through_its_tasks_to_success() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let submitted = b
        .submit(&spec(
            COMMUNITY,
            &[
                ("query_1.name", json!("Tim Duncan")),
                ("sim.duration", json!("1200ms")),
            ],
        ))
        .await
        .unwrap();
    assert!(submitted.id.parse::<u64>().is_ok(), "{}", submitted.id);
    assert!(!submitted.terminal);
    assert_eq!(submitted.extra["workflow_id"], COMMUNITY);
    assert!(
        submitted
            .name
            .as_deref()
            .unwrap()
            .starts_with("community-detection")
    );
    assert!(submitted.created_at.is_some());

    let seen = observe_until_terminal(&b, &submitted.id).await;
    let progress: Vec<f64> = seen.iter().filter_map(|j| j.progress).collect();
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.state, JobState::Succeeded);
    assert_eq!(last.native_state.as_deref(), Some("2"));
    assert_eq!(last.progress, Some(1.0));
    let (c, s, e) = (
        last.created_at.unwrap(),
        last.started_at.unwrap(),
        last.ended_at.unwrap(),
    );
    assert!(c <= s && s <= e, "{c} {s} {e}");
    let ts = tasks(last);
    let names: Vec<&str> = ts.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Query", "Louvain", "DegreeCentrality"]);
    for t in &ts {
        assert_eq!(t["state"], "succeeded");
        assert!(t["ended_at"].as_str().unwrap().ends_with('Z'), "{t}");
    }
    // Tasks ran one after another: each ended no later than the next one started.
    for w in ts.windows(2) {
        assert!(
            w[0]["ended_at"].as_str() <= w[1]["started_at"].as_str(),
            "{ts:?}"
        );
    }
}

#[tokio::test]
async fn a_failing_run_ends_failed_naming_its_task() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b
        .submit(&spec(PAGERANK, &[("sim.outcome", json!("fail"))]))
        .await
        .unwrap();
    let last = observe_until_terminal(&b, &job.id).await.pop().unwrap();
    assert_eq!(last.state, JobState::Failed);
    assert_eq!(last.native_state.as_deref(), Some("3"));
    assert!(
        last.reason.as_deref().unwrap().contains("PageRank"),
        "{:?}",
        last.reason
    );
    assert_eq!(last.progress, Some(0.5));
}

#[tokio::test]
async fn bad_specs_and_settings_are_refused_before_any_request() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let mut no_workflow = spec(PAGERANK, &[]);
    no_workflow.options.clear();
    let mut with_command = spec(PAGERANK, &[]);
    with_command.command = Some(vec!["echo".into()]);
    let mut unknown_opt = spec(PAGERANK, &[]);
    unknown_opt.options.insert("queue".into(), json!(1));
    let cases = [
        (no_workflow, "workflow"),
        (with_command, "command"),
        (unknown_opt, "queue"),
        (spec(PAGERANK, &[("name", json!("x"))]), "name"),
        (spec(PAGERANK, &[("q.p", json!([1]))]), "q.p"),
    ];
    for (s, field) in cases {
        let e = b.validate(&s).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.message.contains(field), "{e}");
        let e = b.submit(&s).await.unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }
    let e = b.status("not-a-number").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Usage);

    let no_address = backend_with(&sim, dir.path(), &[("NEBULA_ADDRESS", "")], "");
    let e = no_address.status("101").await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("NEBULA_ADDRESS"), "{e}");
    let bad_encoding = backend_with(&sim, dir.path(), &[("NEBULA_AUTH_ENCODING", "rot13")], "");
    assert_eq!(bad_encoding.status("101").await.unwrap_err().exit_code(), 2);

    assert_eq!(sim.state.stats().values().sum::<u64>(), 0);
}

#[tokio::test]
async fn platform_errors_carry_their_documented_codes() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let check = |r: Result<Job>, exit: i32, code: &str| {
        let e = r.unwrap_err();
        assert_eq!(e.exit_code(), exit, "{e}");
        assert_eq!(e.code.as_deref(), Some(code), "{e}");
        assert!(e.to_string().contains(code), "{e}");
    };
    check(b.submit(&spec("999", &[])).await, 6, "40404000");
    check(
        b.submit(&spec(PAGERANK, &[("louvain_1.k", json!(3))]))
            .await,
        2,
        "40004001",
    );
    check(
        b.submit(&spec(PAGERANK, &[("sim.outcome", json!("maybe"))]))
            .await,
        2,
        "40004001",
    );
    // On a run, 50004002 means required parameters are missing: the spec's fault.
    check(
        b.submit(&spec(PAGERANK, &[("sim.reject", json!(50004002))]))
            .await,
        2,
        "50004002",
    );
    check(
        b.submit(&spec(PAGERANK, &[("sim.reject", json!(50004003))]))
            .await,
        7,
        "50004003",
    );
    check(
        b.submit(&spec(PAGERANK, &[("sim.reject", json!(40304000))]))
            .await,
        4,
        "40304000",
    );
    check(
        b.submit(&spec(PAGERANK, &[("sim.reject", json!(90004000))]))
            .await,
        7,
        "90004000",
    );
    // Explorer answers an unknown job id with its database error, which is "not found".
    check(b.status("99999").await, 6, "50004001");
    // An envelope with a 500xxxxx code is final: the submission was not repeated.
    assert_eq!(
        count(
            &sim.state.stats(),
            "POST /api-open/v1/workflows/{workflow}/jobs"
        ),
        7
    );
}

#[tokio::test]
async fn a_refused_account_exits_4_without_echoing_the_password() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend_with(
        &sim,
        dir.path(),
        &[("NEBULA_PASSWORD", "hunter2-wrong")],
        "",
    );
    let e = b.status("101").await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert_eq!(e.code.as_deref(), Some("40104000"));
    let text = format!("{e} {e:?}");
    assert!(!text.contains("hunter2"), "{text}");
    // A refused login is not mistaken for an expired session: one connect, no retry.
    assert_eq!(count(&sim.state.stats(), CONNECT), 1);
    assert!(!dir.path().join("cache/nebula.token.json").exists());
}

#[tokio::test]
async fn the_session_cookie_is_cached_and_shared_by_later_processes() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let job = backend(&sim, dir.path())
        .submit(&spec(PAGERANK, &[]))
        .await
        .unwrap();
    // A second backend (a later jobctl run) reuses the cookie from the state directory.
    backend(&sim, dir.path()).status(&job.id).await.unwrap();
    assert_eq!(count(&sim.state.stats(), CONNECT), 1);
    let cache = std::fs::read_to_string(dir.path().join("cache/nebula.token.json")).unwrap();
    assert!(
        !cache.contains(jobctl_sim::DEFAULT_PASSWORD),
        "password must not be cached"
    );
    let cached: Value = serde_json::from_str(&cache).unwrap();
    assert!(
        cached["expires_at"].is_string(),
        "Max-Age is kept: {cached}"
    );

    // Pointing the profile at another user makes the cached cookie unusable for it.
    let other = backend_with(&sim, dir.path(), &[("NEBULA_USERNAME", "someone-else")], "");
    assert_eq!(other.status(&job.id).await.unwrap_err().exit_code(), 4);
    assert_eq!(count(&sim.state.stats(), CONNECT), 2);
}

/// Replaces the cached cookie value, keeping what it is bound to.
fn tamper_cached_token(state: &Path, f: impl FnOnce(&mut Value)) {
    let path = state.join("cache/nebula.token.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

#[tokio::test]
async fn an_unknown_session_reconnects_once() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let job = backend(&sim, dir.path())
        .submit(&spec(PAGERANK, &[]))
        .await
        .unwrap();
    tamper_cached_token(dir.path(), |v| v["token"] = json!("0000stale0000"));
    let before = sim.state.stats();
    let got = backend(&sim, dir.path()).status(&job.id).await.unwrap();
    assert_eq!(got.id, job.id);
    let after = sim.state.stats();
    assert_eq!(count(&after, CONNECT) - count(&before, CONNECT), 1);
    assert_eq!(count(&after, DETAIL) - count(&before, DETAIL), 2);
}

#[tokio::test]
async fn an_expired_session_reconnects_once() {
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_millis(1000),
        ..SimConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b.submit(&spec(PAGERANK, &[])).await.unwrap();
    // Make jobctl believe the cookie is still good, then let the server expire it (40104001).
    tamper_cached_token(dir.path(), |v| {
        v["expires_at"] = json!("2999-01-01T00:00:00Z")
    });
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let before = sim.state.stats();
    backend(&sim, dir.path()).status(&job.id).await.unwrap();
    let after = sim.state.stats();
    assert_eq!(count(&after, CONNECT) - count(&before, CONNECT), 1);
    assert_eq!(count(&after, DETAIL) - count(&before, DETAIL), 2);
}

#[tokio::test]
async fn statuses_read_the_paged_list_instead_of_each_job() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let mut ids = Vec::new();
    for wf in [PAGERANK, COMMUNITY, BFS, PAGERANK, COMMUNITY] {
        ids.push(b.submit(&spec(wf, &[])).await.unwrap().id);
    }
    let before = sim.state.stats();
    let mut asked = ids.clone();
    asked.reverse();
    asked.push("99999".into());
    let results = b.statuses(&asked).await;
    assert_eq!(results.len(), asked.len());
    for (id, r) in asked.iter().zip(&results).take(ids.len()) {
        assert_eq!(&r.as_ref().unwrap().id, id);
    }
    let missing = results.last().unwrap().as_ref().unwrap_err();
    assert_eq!(missing.exit_code(), 6);
    let after = sim.state.stats();
    assert_eq!(count(&after, LIST) - count(&before, LIST), 1);
    // Only the id the list does not know was asked for on its own.
    assert_eq!(count(&after, DETAIL) - count(&before, DETAIL), 1);

    // A single id costs one request either way; the detail read also carries the tasks.
    let before = sim.state.stats();
    let one = b.statuses(&ids[..1]).await.pop().unwrap().unwrap();
    assert_eq!(tasks(&one).len(), 2);
    assert!(one.progress.is_some());
    let after = sim.state.stats();
    assert_eq!(count(&after, DETAIL) - count(&before, DETAIL), 1);
    assert_eq!(count(&after, LIST), count(&before, LIST));

    // With two jobs per page, five jobs take three list pages and still no detail reads.
    let paged = backend_with(&sim, dir.path(), &[], "page_size = 2");
    let before = sim.state.stats();
    let results = paged.statuses(&ids).await;
    assert!(results.iter().all(Result::is_ok));
    let after = sim.state.stats();
    assert_eq!(count(&after, LIST) - count(&before, LIST), 3);
    assert_eq!(count(&after, DETAIL) - count(&before, DETAIL), 0);
}

#[tokio::test]
async fn list_is_newest_first_filtered_and_limited() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let ok = b
        .submit(&spec(PAGERANK, &[("sim.duration", json!("200ms"))]))
        .await
        .unwrap();
    let bad = b
        .submit(&spec(
            COMMUNITY,
            &[
                ("sim.duration", json!("200ms")),
                ("sim.outcome", json!("fail")),
            ],
        ))
        .await
        .unwrap();
    observe_until_terminal(&b, &ok.id).await;
    observe_until_terminal(&b, &bad.id).await;
    let long = b
        .submit(&spec(
            PAGERANK,
            &[("sim.duration", json!("30s")), ("sim.queue", json!(0))],
        ))
        .await
        .unwrap();

    let all = b.list(&ListQuery::default()).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [long.id.as_str(), bad.id.as_str(), ok.id.as_str()]);
    assert_eq!(all[1].state, JobState::Failed);

    let only = |states: Vec<JobState>| ListQuery {
        states,
        ..ListQuery::default()
    };
    let succeeded = b.list(&only(vec![JobState::Succeeded])).await.unwrap();
    assert_eq!(succeeded.len(), 1);
    assert_eq!(succeeded[0].id, ok.id);
    let two = b
        .list(&only(vec![JobState::Failed, JobState::Running]))
        .await
        .unwrap();
    let ids: Vec<&str> = two.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, [long.id.as_str(), bad.id.as_str()]);
    assert!(
        b.list(&only(vec![JobState::Suspended]))
            .await
            .unwrap()
            .is_empty()
    );

    let limited = b
        .list(&ListQuery {
            limit: Some(2),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].id, long.id);

    // One job per page: `--all` walks every page.
    let before = sim.state.stats();
    let paged = backend_with(&sim, dir.path(), &[], "page_size = 1");
    assert_eq!(paged.list(&ListQuery::default()).await.unwrap().len(), 3);
    assert_eq!(count(&sim.state.stats(), LIST) - count(&before, LIST), 3);

    // A profile bound to one workflow lists that workflow's jobs.
    let scoped = backend_with(
        &sim,
        dir.path(),
        &[],
        &format!("workflow = \"{COMMUNITY}\""),
    );
    let jobs = scoped.list(&ListQuery::default()).await.unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, bad.id);
    assert_eq!(
        count(
            &sim.state.stats(),
            "GET /api-open/v1/workflows/{workflow}/jobs"
        ),
        1
    );
    let unknown = backend_with(&sim, dir.path(), &[], "workflow = \"1\"");
    assert_eq!(
        unknown
            .list(&ListQuery::default())
            .await
            .unwrap_err()
            .exit_code(),
        6
    );
}

#[tokio::test]
async fn abort_cancels_a_running_job_and_leaves_ended_ones_alone() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b
        .submit(&spec(
            BFS,
            &[("sim.duration", json!("20s")), ("sim.queue", json!(0))],
        ))
        .await
        .unwrap();
    assert_eq!(b.abort(&job.id).await.unwrap(), AbortOutcome::Requested);
    let seen = observe_until_terminal(&b, &job.id).await;
    let last = seen.last().unwrap();
    assert_eq!(last.state, JobState::Canceled);
    assert_eq!(last.native_state.as_deref(), Some("4"));
    assert!(last.reason.is_some());
    assert!(tasks(last).iter().any(|t| t["state"] == "canceled"));
    // Between request and effect the job reports status 5, mapped to cancelling.
    for j in &seen[..seen.len() - 1] {
        assert_eq!(j.state, JobState::Cancelling, "{j:?}");
        assert_eq!(j.native_state.as_deref(), Some("5"));
    }
    assert_eq!(
        b.abort(&job.id).await.unwrap(),
        AbortOutcome::AlreadyTerminal
    );
    assert_eq!(b.abort("99999").await.unwrap_err().exit_code(), 6);
    assert_eq!(
        count(&sim.state.stats(), "PUT /api-open/v1/jobs/{id}/cancel"),
        1
    );
}

#[tokio::test]
async fn logs_print_the_task_table_and_follow_until_the_end() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b
        .submit(&spec(PAGERANK, &[("sim.duration", json!("600ms"))]))
        .await
        .unwrap();
    let mut out: Vec<u8> = Vec::new();
    b.logs(&job.id, LogsRequest::default(), &mut out)
        .await
        .unwrap();
    let table = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("TASK"), "{table}");
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[1].contains("Query") && lines[2].contains("PageRank"),
        "{table}"
    );

    let mut out: Vec<u8> = Vec::new();
    let follow = LogsRequest {
        follow: true,
        stderr: false,
        ..LogsRequest::default()
    };
    b.logs(&job.id, follow, &mut out).await.unwrap();
    let text = String::from_utf8(out).unwrap();
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        format!("job {} succeeded (status 2)", job.id),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("PageRank") && l.contains("succeeded")),
        "{text}"
    );

    let mut sink: Vec<u8> = Vec::new();
    let e = b
        .logs("99999", LogsRequest::default(), &mut sink)
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 6);
    let stderr = LogsRequest {
        follow: false,
        stderr: true,
        ..LogsRequest::default()
    };
    let e = b.logs(&job.id, stderr, &mut sink).await.unwrap_err();
    assert_eq!(e.exit_code(), 8);
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn fetch_writes_one_csv_per_finished_task() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b.submit(&spec(COMMUNITY, &[])).await.unwrap();
    observe_until_terminal(&b, &job.id).await;
    let artifacts = b.fetch(&job.id, dest.path(), &|_| {}).await.unwrap();
    assert_eq!(artifacts.len(), 3);
    let names: Vec<&str> = artifacts.iter().map(|a| a.name.as_str()).collect();
    assert!(
        names[0].starts_with("Query_") && names[0].ends_with(".csv"),
        "{names:?}"
    );
    assert!(names[1].starts_with("Louvain_"), "{names:?}");
    for a in &artifacts {
        assert_eq!(a.path, dest.path().join(&a.name));
        assert_eq!(std::fs::metadata(&a.path).unwrap().len(), a.bytes);
    }
    let query = lines_of(&artifacts[0].path);
    assert_eq!(query.len(), 25);
    assert!(
        query.contains(&"player101,\"Duncan, Tim\"".to_string()),
        "{query:?}"
    );
    assert!(
        query.contains(&"player102,\"Tony \"\"TP\"\" Parker\"".to_string()),
        "{query:?}"
    );
    let louvain = lines_of(&artifacts[1].path);
    assert!(
        louvain.iter().all(|l| l.split(',').count() == 3),
        "{louvain:?}"
    );

    let small = backend_with(&sim, dir.path(), &[], "sample_limit = 5");
    let dest2 = tempfile::tempdir().unwrap();
    let artifacts = small.fetch(&job.id, dest2.path(), &|_| {}).await.unwrap();
    assert_eq!(lines_of(&artifacts[2].path).len(), 5);

    let waiting = b
        .submit(&spec(PAGERANK, &[("sim.queue", json!("30s"))]))
        .await
        .unwrap();
    let e = b
        .fetch(&waiting.id, dest.path(), &|_| {})
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 6, "{e}");
    let e = b.fetch("99999", dest.path(), &|_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 6, "{e}");
}

#[tokio::test]
async fn login_logout_and_the_older_credential_encoding() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend_with(&sim, dir.path(), &[("NEBULA_AUTH_ENCODING", "colon")], "");
    let said = b.login().await.unwrap();
    assert!(said.contains("valid until"), "{said}");
    let cache = dir.path().join("cache/nebula.token.json");
    assert!(cache.exists());
    b.list(&ListQuery::default()).await.unwrap();
    assert_eq!(count(&sim.state.stats(), CONNECT), 1);
    b.logout().await.unwrap();
    assert!(!cache.exists());
    b.list(&ListQuery::default()).await.unwrap();
    assert_eq!(count(&sim.state.stats(), CONNECT), 2);
}

#[tokio::test]
async fn doctor_checks_reachability_authentication_and_api() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let checks = jobctl::backend::collect_checks(&*backend(&sim, dir.path())).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["reachable", "authentication", "api version"]);
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");

    let bad = backend_with(&sim, dir.path(), &[("NEBULA_PASSWORD", "nope")], "");
    let checks = jobctl::backend::collect_checks(&*bad).await;
    assert!(checks[0].ok, "{checks:?}");
    assert_eq!(checks[1].name, "authentication");
    assert!(!checks[1].ok);
    assert!(!checks[1].detail.contains("nope"));

    let no_url = backend_with(&sim, dir.path(), &[("NEBULA_EXPLORER_URL", "")], "");
    let checks = jobctl::backend::collect_checks(&*no_url).await;
    assert!(
        !checks[0].ok && checks[0].detail.contains("NEBULA_EXPLORER_URL"),
        "{checks:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// The jobctl binary against the simulator.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_status_logs_and_fetch() {
    let sim = start_default();
    let sb = Sandbox::with_sim(&sim);
    let (code, out, err) = sb.run(&[
        "-b",
        "nebula",
        "submit",
        "-o",
        "quiet",
        "--workflow",
        COMMUNITY,
        "--arg",
        "query_1.name=Tim Duncan",
        "--wait",
        "--timeout",
        "30s",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    let reference = out.trim().lines().next().unwrap().to_string();
    assert!(reference.starts_with("nebula:"), "{out}");

    let (code, out, err) = sb.run(&["-o", "json", "status", &reference]);
    assert_eq!(code, 0, "{err}");
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["ref"], reference.as_str());
    assert_eq!(job["backend"], "nebula");
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["native_state"], "2");
    assert_eq!(job["progress"], 1.0);
    assert_eq!(job["extra"]["tasks"].as_array().unwrap().len(), 3);

    let (code, out, _) = sb.run(&["logs", &reference]);
    assert_eq!(code, 0);
    assert!(
        out.contains("Louvain") && out.contains("succeeded"),
        "{out}"
    );

    let (code, _, err) = sb.run(&["fetch", &reference, "--dest", "results"]);
    assert_eq!(code, 0, "{err}");
    let files = std::fs::read_dir(sb.path().join("results"))
        .unwrap()
        .count();
    assert_eq!(files, 3);

    // Everything above shared one cached session.
    assert_eq!(count(&sim.state.stats(), CONNECT), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_follow_the_contract() {
    let sim = start_default();
    let sb = Sandbox::with_sim(&sim);
    let (code, _, err) = sb.run(&["-b", "nebula", "submit"]);
    assert_eq!(code, 2);
    assert!(err.contains("workflow"), "{err}");

    let (code, out, _) = sb.run(&["-o", "json", "status", "nebula:99999"]);
    assert_eq!(code, 6);
    let e: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(e["error"]["code"], "50004001");

    let (code, _, err) = sb.run(&[
        "-b",
        "nebula",
        "submit",
        "--workflow",
        PAGERANK,
        "--arg",
        "sim.reject=50004003",
    ]);
    assert_eq!(code, 7);
    assert!(err.contains("50004003"), "{err}");

    // A fresh state directory: a cached session would (rightly) still be accepted.
    let other = Sandbox::with_sim(&sim).var("NEBULA_PASSWORD", "not-the-password");
    let (code, _, err) = other.run(&["-b", "nebula", "list"]);
    assert_eq!(code, 4, "{err}");
    assert!(!err.contains("not-the-password"), "{err}");

    let (code, _, _) = sb.run(&[
        "-b",
        "nebula",
        "submit",
        "--workflow",
        PAGERANK,
        "--arg",
        "sim.outcome=fail",
        "--arg",
        "sim.duration=300ms",
        "--wait",
    ]);
    assert_eq!(code, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_watch_polls_several_jobs_through_the_list() {
    let sim = start_default();
    let sb = Sandbox::with_sim(&sim);
    let mut refs = Vec::new();
    for wf in [PAGERANK, COMMUNITY, BFS] {
        let (code, out, err) = sb.run(&[
            "-b",
            "nebula",
            "submit",
            "-o",
            "quiet",
            "--workflow",
            wf,
            "--arg",
            "sim.duration=600ms",
        ]);
        assert_eq!(code, 0, "{err}");
        refs.push(out.trim().to_string());
    }
    let before = sim.state.stats();
    let mut args = vec![
        "-o",
        "ndjson",
        "watch",
        "--interval",
        "100ms",
        "--timeout",
        "30s",
    ];
    args.extend(refs.iter().map(String::as_str));
    let (code, out, err) = sb.run(&args);
    assert_eq!(code, 0, "{out}{err}");
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["exit_code"], 0);
    let after = sim.state.stats();
    assert!(count(&after, LIST) > count(&before, LIST));
    assert_eq!(
        count(&after, DETAIL),
        count(&before, DETAIL),
        "watch read jobs one by one"
    );

    // Abort of a long job: accepted, and the job ends canceled.
    let (_, out, _) = sb.run(&[
        "-b",
        "nebula",
        "submit",
        "-o",
        "quiet",
        "--workflow",
        BFS,
        "--arg",
        "sim.duration=30s",
    ]);
    let long = out.trim().to_string();
    let (code, _, err) = sb.run(&["abort", &long, "--wait", "--timeout", "20s"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = sb.run(&["-o", "json", "status", &long]);
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["state"], "canceled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_list_opt_workflow_lists_one_workflows_jobs() {
    let sim = start_default();
    let sb = Sandbox::with_sim(&sim);
    let mut refs = Vec::new();
    for wf in [PAGERANK, BFS] {
        let (code, out, err) = sb.run(&["-b", "nebula", "submit", "-o", "quiet", "--workflow", wf]);
        assert_eq!(code, 0, "{err}");
        refs.push(out.trim().to_string());
    }
    let (code, out, err) = sb.run(&[
        "-b",
        "nebula",
        "-o",
        "json",
        "list",
        "--opt",
        &format!("workflow={BFS}"),
    ]);
    assert_eq!(code, 0, "{err}");
    let jobs: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    let listed: Vec<&str> = jobs.iter().map(|j| j["ref"].as_str().unwrap()).collect();
    assert!(listed.contains(&refs[1].as_str()), "{listed:?}");
    assert!(!listed.contains(&refs[0].as_str()), "{listed:?}");
    // Without the option both are listed; an unknown option is refused before any request.
    let (_, out, _) = sb.run(&["-b", "nebula", "-o", "json", "list"]);
    let all: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert!(all.len() >= 2);
    let (code, _, err) = sb.run(&["-b", "nebula", "list", "--opt", "colour=red"]);
    assert_eq!(code, 2);
    assert!(err.contains("colour") && err.contains("workflow"), "{err}");
    let (code, _, _) = sb.run(&["list", "--opt", "workflow=1"]);
    assert_eq!(code, 2, "local takes no list options");
}

#[tokio::test]
async fn a_run_missing_required_parameters_is_a_usage_error_with_the_platforms_message() {
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    const SHORTEST: &str = "4216617531";
    let e = b.submit(&spec(SHORTEST, &[])).await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert_eq!(e.code.as_deref(), Some("50004002"));
    assert!(
        e.message.contains("sssp_1.root") && e.message.contains("--arg"),
        "{e}"
    );
    let job = b
        .submit(&spec(SHORTEST, &[("sssp_1.root", json!("player100"))]))
        .await
        .unwrap();
    assert!(!job.id.is_empty());
    let e = b.abort("99999").await.unwrap_err();
    assert_eq!(e.exit_code(), 6, "{e}");
    assert_eq!(e.code.as_deref(), Some("50004001"));
}

/// A lost run is certainly absent only when no job of its workflow, created since its send
/// time less the clock-skew margin, is unaccounted for; jobs the ledger knows do not count,
/// and other workflows' jobs are not its business. One listing per workflow, however many
/// keys are asked about.
#[tokio::test]
async fn lost_runs_are_settled_by_creation_time_within_a_clock_skew_margin() {
    use jobctl::backend::{KeyLookup, KeyQuery};
    let sim = start_default();
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let theirs = b.submit(&spec(PAGERANK, &[])).await.unwrap();
    let _other_workflow = b.submit(&spec(BFS, &[])).await.unwrap();
    let mut lost = spec(PAGERANK, &[]);
    lost.key = Some("k".into());
    let mut elsewhere = spec(COMMUNITY, &[]);
    elsewhere.key = Some("k2".into());
    let now = chrono::Utc::now();
    let query = |since| KeyQuery { spec: &lost, since };
    let nobody_knows = |_: &str| false;

    // Created a minute before the recorded send time: within the margin, so it may be ours.
    let before = sim.state.stats();
    let found = b
        .find_by_keys(
            &[
                query(now + chrono::Duration::minutes(1)),
                KeyQuery {
                    spec: &elsewhere,
                    since: now,
                },
                query(now + chrono::Duration::minutes(3)),
            ],
            &nobody_knows,
        )
        .await;
    let after = sim.state.stats();
    let lists = count(&after, "GET /api-open/v1/workflows/{workflow}/jobs")
        - count(&before, "GET /api-open/v1/workflows/{workflow}/jobs");
    assert_eq!(lists, 2, "one listing per workflow");
    match &found[0] {
        Ok(KeyLookup::Undecided(why)) => {
            assert!(why.contains(&format!("nebula:{}", theirs.id)), "{why}");
            assert!(why.contains(PAGERANK), "{why}");
        }
        other => panic!("a job within the margin keeps it undecided: {other:?}"),
    }
    assert!(
        matches!(found[1], Ok(KeyLookup::Absent)),
        "another workflow's jobs do not count: {:?}",
        found[1]
    );
    assert!(
        matches!(found[2], Ok(KeyLookup::Absent)),
        "created well before the send time: {:?}",
        found[2]
    );

    // The same job, known as another submission's: the lost run is certainly absent.
    let id = theirs.id.clone();
    let known = move |j: &str| j == id;
    let found = b
        .find_by_keys(&[query(now + chrono::Duration::minutes(1))], &known)
        .await;
    assert!(matches!(found[0], Ok(KeyLookup::Absent)), "{:?}", found[0]);
}
