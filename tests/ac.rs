//! The ac backend against the in-process simulator.

mod common;

use common::{Sandbox, Setup, Sim, quick, wait_terminal};
use indicatif::ProgressBar;
use jobctl::model::{AbortOutcome, JobSpec, JobState, ListQuery, LogsRequest};
use jobctl::{Error, ErrorKind};
use jobctl_sim::SimConfig;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const SCHED: &str = "1638523853";

fn spec(cmd: &str) -> JobSpec {
    JobSpec {
        command: Some(vec![cmd.to_string()]),
        ..JobSpec::default()
    }
}

fn named(cmd: &str, name: &str) -> JobSpec {
    JobSpec {
        name: Some(name.to_string()),
        ..spec(cmd)
    }
}

fn err_of<T: std::fmt::Debug>(r: Result<T, Error>) -> Error {
    r.expect_err("expected an error")
}

const LIST: &str = "GET /hpc/openapi/v2/jobs";
const DETAIL: &str = "GET /hpc/openapi/v2/jobs/{job_id}";
const HISTORY: &str = "GET /hpc/openapi/v2/historyjobs/{jobmanager_id}/{job_id}";
const LOGIN: &str = "POST /ac/openapi/v2/tokens";

#[tokio::test]
async fn submit_runs_to_success_with_discovered_defaults() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b.submit(&named("echo hello", "demo")).await.unwrap();
    let (sched, num) = job.id.split_once('.').unwrap();
    assert_eq!(sched, SCHED);
    assert!(num.parse::<u64>().is_ok());
    assert_eq!(
        job.extra["stdout"],
        format!("/public/home/jobctl/BASE/demo/std.out.{num}")
    );
    let done = wait_terminal(&b, &job.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.native_state.as_deref(), Some("statC"));
    assert_eq!(done.name.as_deref(), Some("demo"));
    assert_eq!(done.owner.as_deref(), Some("jobctl"));
    assert!(done.started_at.is_some() && done.ended_at.is_some());
    // One login and one discovery serve every later request.
    assert_eq!(sim.hits(LOGIN), 1);
    assert_eq!(sim.hits("GET /ac/openapi/v2/center"), 1);
    assert_eq!(sim.hits("GET /hpc/openapi/v2/cluster"), 1);
    assert_eq!(sim.hits("GET /ac/openapi/v2/user"), 1);
}

#[tokio::test]
async fn several_arguments_are_joined_with_shell_quoting() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let s = JobSpec {
        command: Some(vec!["echo".into(), "two words".into()]),
        ..JobSpec::default()
    };
    let job = b.submit(&s).await.unwrap();
    wait_terminal(&b, &job.id).await;
    let mut out = Vec::new();
    b.logs(&job.id, LogsRequest::default(), &mut out)
        .await
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("$ echo 'two words'"), "{text}");
}

#[tokio::test]
async fn finished_jobs_fall_back_to_history_with_exit_code() {
    let sim = Sim::start(SimConfig {
        ac_realtime_window: Duration::from_millis(300),
        ..quick()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b
        .submit(&spec("SIM_OUTCOME=fail SIM_EXIT_CODE=3 ./solve"))
        .await
        .unwrap();
    let first = wait_terminal(&b, &job.id).await;
    assert_eq!(first.state, JobState::Failed);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before = sim.hits(HISTORY);
    let later = b.status(&job.id).await.unwrap();
    assert_eq!(sim.hits(HISTORY), before + 1);
    assert_eq!(later.id, job.id);
    assert_eq!(later.state, JobState::Failed);
    assert_eq!(later.native_state.as_deref(), Some("statE"));
    assert_eq!(later.exit_code, Some(3));
    assert_eq!(later.extra["source"], "history");
    assert!(later.created_at.is_some() && later.ended_at.is_some());
}

#[tokio::test]
async fn statuses_use_one_list_request_and_history_only_for_missing_jobs() {
    let sim = Sim::start(SimConfig {
        ac_realtime_window: Duration::from_millis(300),
        ..quick()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let gone = b
        .submit(&spec("SIM_QUEUE=0s SIM_DURATION=100ms true"))
        .await
        .unwrap();
    let a = b.submit(&spec("SIM_DURATION=2s sleep")).await.unwrap();
    let c = b.submit(&spec("SIM_DURATION=2s sleep")).await.unwrap();
    wait_terminal(&b, &gone.id).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let unknown = format!("{SCHED}.999999");
    let ids = vec![gone.id.clone(), a.id.clone(), c.id.clone(), unknown];
    let (list0, hist0, det0) = (sim.hits(LIST), sim.hits(HISTORY), sim.hits(DETAIL));
    let results = b.statuses(&ids).await;
    assert_eq!(sim.hits(LIST) - list0, 1, "one realtime page");
    assert_eq!(
        sim.hits(HISTORY) - hist0,
        2,
        "history only for the two missing jobs"
    );
    assert_eq!(
        sim.hits(DETAIL) - det0,
        1,
        "realtime detail only for the unknown job"
    );
    let gone_job = results[0].as_ref().unwrap();
    assert_eq!(gone_job.state, JobState::Succeeded);
    assert_eq!(gone_job.exit_code, Some(0));
    for (r, id) in results[1..3].iter().zip([&a.id, &c.id]) {
        let j = r.as_ref().unwrap();
        assert_eq!(&j.id, id);
        assert!(!j.terminal, "{j:?}");
    }
    assert_eq!(results[3].as_ref().unwrap_err().kind, ErrorKind::NotFound);
}

#[tokio::test]
async fn list_merges_realtime_and_history_newest_first() {
    let sim = Sim::start(SimConfig {
        ac_realtime_window: Duration::from_millis(200),
        ..quick()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let old = b
        .submit(&spec("SIM_QUEUE=0s SIM_DURATION=100ms true"))
        .await
        .unwrap();
    wait_terminal(&b, &old.id).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let new = b
        .submit(&spec("SIM_QUEUE=0s SIM_DURATION=2s sleep"))
        .await
        .unwrap();
    let all = b.list(&ListQuery::default()).await.unwrap();
    let ids: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(ids, vec![new.id.as_str(), old.id.as_str()]);
    assert_eq!(all[1].extra["source"], "history");
    let running = b
        .list(&ListQuery {
            states: vec![JobState::Running],
            limit: None,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, new.id);
    let done = b
        .list(&ListQuery {
            states: vec![JobState::Succeeded],
            limit: Some(5),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        done.iter().map(|j| j.id.clone()).collect::<Vec<_>>(),
        vec![old.id.clone()]
    );
    let one = b
        .list(&ListQuery {
            states: vec![],
            limit: Some(1),
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].id, new.id);
}

#[tokio::test]
async fn abort_cancels_with_the_form_delete() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b.submit(&spec("SIM_DURATION=2s sleep")).await.unwrap();
    assert_eq!(b.abort(&job.id).await.unwrap(), AbortOutcome::Requested);
    assert_eq!(sim.hits("DELETE /hpc/openapi/v2/jobs"), 1);
    let end = wait_terminal(&b, &job.id).await;
    assert_eq!(end.state, JobState::Canceled);
    assert_eq!(end.native_state.as_deref(), Some("statDE"));
    assert_eq!(
        b.abort(&job.id).await.unwrap(),
        AbortOutcome::AlreadyTerminal
    );
    assert_eq!(sim.hits("DELETE /hpc/openapi/v2/jobs"), 1);
    let e = err_of(b.abort(&format!("{SCHED}.424242")).await);
    assert_eq!(e.exit_code(), 6);
}

#[tokio::test]
async fn logs_follow_tails_until_the_end_and_fetch_writes_both_files() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b
        .submit(&spec(
            "SIM_QUEUE=500ms SIM_DURATION=1500ms SIM_OUTCOME=fail ./solve",
        ))
        .await
        .unwrap();
    // Queued: no output file yet.
    let e = err_of(
        b.logs(&job.id, LogsRequest::default(), &mut Vec::new())
            .await,
    );
    assert_eq!(e.exit_code(), 6, "{e}");
    let mut followed = Vec::new();
    b.logs(
        &job.id,
        LogsRequest {
            follow: true,
            stderr: false,
            ..LogsRequest::default()
        },
        &mut followed,
    )
    .await
    .unwrap();
    assert!(sim.hits("GET /efile/openapi/v2/file/download") > 2);
    let mut whole = Vec::new();
    b.logs(&job.id, LogsRequest::default(), &mut whole)
        .await
        .unwrap();
    let text = String::from_utf8(whole.clone()).unwrap();
    assert_eq!(followed, whole, "tailing neither repeats nor loses bytes");
    assert!(
        text.contains("progress 100%") && text.ends_with("exit status 1\n"),
        "{text}"
    );
    let mut err = Vec::new();
    b.logs(
        &job.id,
        LogsRequest {
            follow: false,
            stderr: true,
            ..LogsRequest::default()
        },
        &mut err,
    )
    .await
    .unwrap();
    assert!(
        String::from_utf8(err)
            .unwrap()
            .contains("simulated failure")
    );

    let dest = tempfile::tempdir().unwrap();
    let arts = b
        .fetch(&job.id, dest.path(), &ProgressBar::hidden())
        .await
        .unwrap();
    let num = job.id.split_once('.').unwrap().1;
    let names: Vec<String> = arts.iter().map(|a| a.name.clone()).collect();
    assert_eq!(
        names,
        vec![format!("std.out.{num}"), format!("std.err.{num}")]
    );
    let saved = std::fs::read(dest.path().join(format!("std.out.{num}"))).unwrap();
    assert_eq!(saved, whole);
    assert_eq!(arts[0].bytes, whole.len() as u64);
}

#[tokio::test]
async fn the_simulated_file_service_honours_range() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b
        .submit(&spec("SIM_QUEUE=0s SIM_DURATION=100ms true"))
        .await
        .unwrap();
    let done = wait_terminal(&b, &job.id).await;
    let token: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("cache/ac.token.json")).unwrap(),
    )
    .unwrap();
    let token = token["token"].as_str().unwrap().to_string();
    let url = format!("{}/efile/openapi/v2/file/download", sim.base_url);
    let path = done.extra["stdout"].as_str().unwrap().to_string();
    let c = reqwest::Client::new();
    let full = c
        .get(&url)
        .header("token", &token)
        .query(&[("path", &path)])
        .send()
        .await
        .unwrap();
    assert_eq!(full.status(), 200);
    let full = full.bytes().await.unwrap();
    let part = c
        .get(&url)
        .header("token", &token)
        .header("range", "bytes=5-")
        .query(&[("path", &path)])
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        format!("bytes 5-{}/{}", full.len() - 1, full.len())
    );
    assert_eq!(part.bytes().await.unwrap(), full.slice(5..));
    let past = c
        .get(&url)
        .header("token", &token)
        .header("range", format!("bytes={}-", full.len()))
        .query(&[("path", &path)])
        .send()
        .await
        .unwrap();
    assert_eq!(past.status(), 416);
}

#[tokio::test]
async fn documented_error_codes_become_typed_errors() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let cases = [
        ("10001", 7, "内部错误"),
        ("10003", 2, "参数不全"),
        ("10004", 2, "参数无效"),
        ("10007", 4, "用户已被冻结"),
        ("10008", 4, "权限不足"),
        ("10009", 4, "没有权限访问接口"),
        ("10010", 2, "文件校验失败"),
        ("10011", 2, "文件过大"),
        ("10012", 7, "连接中断"),
        ("10013", 7, "操作超时"),
        ("815005", 7, "调度系统没返回"),
        ("815007", 2, "sbatch失败"),
    ];
    for (code, exit, text) in cases {
        let e = err_of(b.submit(&named("true", &format!("sim-error-{code}"))).await);
        assert_eq!(e.exit_code(), exit, "{code}: {e}");
        assert_eq!(e.code.as_deref(), Some(code));
        let shown = e.to_string();
        assert!(shown.contains(code) && shown.contains(text), "{shown}");
        assert!(
            shown.contains("profile ac") && shown.contains("submit"),
            "{shown}"
        );
    }
    let e = err_of(b.submit(&named("true", "sim-html-error")).await);
    assert_eq!(e.kind, ErrorKind::Protocol);
    assert!(
        e.message.contains("502") && e.message.contains("Bad Gateway"),
        "{e}"
    );
    let mut s = spec("true");
    s.options.insert("queue".into(), "gpu-a100".into());
    let e = err_of(b.submit(&s).await);
    assert_eq!(e.code.as_deref(), Some("815007"));
    // An invalid queue is refused for good: invalid input (2), not "may succeed later" (7).
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.message.contains("Invalid partition"), "{e}");
    let e = err_of(b.status(&format!("{SCHED}.777777")).await);
    assert_eq!(e.exit_code(), 6, "{e}");
    assert!(e.message.contains("777777"), "{e}");
}

#[tokio::test]
async fn bad_specs_and_ids_are_refused_before_any_request() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let mut cases: Vec<(JobSpec, &str)> = vec![(JobSpec::default(), "command")];
    let mut s = spec("x");
    s.options.insert("colour".into(), "red".into());
    cases.push((s, "colour"));
    let mut s = spec("x");
    s.options.insert("ppn".into(), 2.into());
    s.options.insert("nproc".into(), 8.into());
    cases.push((s, "nproc"));
    let mut s = spec("x");
    s.options.insert("wall_time".into(), "forever".into());
    cases.push((s, "wall_time"));
    let mut s = spec("x");
    s.args.insert("a".into(), 1.into());
    cases.push((s, "args"));
    cases.push((named("x", "a/b"), "name"));
    for (s, field) in cases {
        let e = err_of(b.submit(&s).await);
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.message.contains(field), "{field}: {e}");
    }
    for bad in ["abc.12", "12.", "1.2 3"] {
        assert_eq!(err_of(b.status(bad).await).exit_code(), 2, "{bad}");
    }
    assert_eq!(sim.total(), 0, "nothing was sent");
}

#[tokio::test]
async fn refused_logins_are_auth_errors_with_codes() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    for (user, pw, code) in [
        ("jobctl", "wrong", "10008"),
        ("nobody", "x", "10009"),
        ("frozen", "x", "10007"),
    ] {
        let b = Setup::sim("scnet", &sim)
            .with(&[("AC_USER", user), ("AC_PASSWORD", pw)])
            .backend(dir.path());
        let e = err_of(b.status(&format!("{SCHED}.1")).await);
        assert_eq!(e.exit_code(), 4, "{e}");
        assert_eq!(e.code.as_deref(), Some(code));
        assert!(!e.to_string().contains("wrong"), "no password in {e}");
    }
    // One login attempt each: a refused login is not retried.
    assert_eq!(sim.hits(LOGIN), 3);
    let b = Setup::sim("scnet", &sim)
        .without(&["AC_ORG_ID"])
        .backend(dir.path());
    let e = err_of(b.list(&ListQuery::default()).await);
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("AC_ORG_ID"), "{e}");
}

#[tokio::test]
async fn tokens_and_discovery_are_cached_privately_across_processes() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    b.list(&ListQuery::default()).await.unwrap();
    let b2 = common::backend(&sim, "scnet", dir.path());
    b2.list(&ListQuery::default()).await.unwrap();
    assert_eq!(sim.hits(LOGIN), 1);
    assert_eq!(sim.hits("GET /ac/openapi/v2/center"), 1);
    for f in ["cache/ac.token.json", "cache/ac.ac-site.json"] {
        let p = dir.path().join(f);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{f}");
        assert!(
            !std::fs::read_to_string(&p).unwrap().contains("jobctl-sim"),
            "no password in {f}"
        );
    }
    // A refused token (here: replaced by garbage) costs one fresh login, then works.
    let p = dir.path().join("cache/ac.token.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["token"] = "garbage".into();
    std::fs::write(&p, v.to_string()).unwrap();
    let b3 = common::backend(&sim, "scnet", dir.path());
    b3.list(&ListQuery::default()).await.unwrap();
    assert_eq!(sim.hits(LOGIN), 2);
    b3.logout().await.unwrap();
    assert!(!p.exists() && !dir.path().join("cache/ac.ac-site.json").exists());
}

#[tokio::test]
async fn tokens_close_to_expiry_are_renewed() {
    let sim = Sim::start(SimConfig {
        token_ttl: Duration::from_secs(30),
        ..quick()
    });
    let dir = tempfile::tempdir().unwrap();
    common::backend(&sim, "scnet", dir.path())
        .list(&ListQuery::default())
        .await
        .unwrap();
    // Make the cached token look like a long-lived one within its last minute.
    let p = dir.path().join("cache/ac.token.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    v["obtained_at"] = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339()
        .into();
    std::fs::write(&p, v.to_string()).unwrap();
    common::backend(&sim, "scnet", dir.path())
        .list(&ListQuery::default())
        .await
        .unwrap();
    assert_eq!(sim.hits(LOGIN), 1);
    assert_eq!(sim.hits("POST /ac/openapi/v2/tokens/next"), 1);
}

#[tokio::test]
async fn regions_can_be_chosen() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = Setup::sim("scnet", &sim)
        .with(&[("AC_REGION", "sim-west")])
        .backend(dir.path());
    let job = b.submit(&spec("true")).await.unwrap();
    assert!(job.id.starts_with("1638523999."), "{}", job.id);
    let b = Setup::sim("scnet", &sim)
        .with(&[("AC_REGION", "mars")])
        .backend(dir.path());
    let e = err_of(b.list(&ListQuery::default()).await);
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("sim-east (11112)"), "{e}");
    let b = Setup::sim("scnet", &sim)
        .with(&[("AC_REGION", "sim-suspended")])
        .backend(dir.path());
    assert_eq!(err_of(b.list(&ListQuery::default()).await).exit_code(), 4);
}

#[tokio::test]
async fn configured_urls_skip_discovery() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let hpc = format!("{}/hpc", sim.base_url);
    let b = Setup::sim("scnet", &sim)
        .with(&[
            ("AC_HPC_URL", hpc.as_str()),
            ("AC_EFILE_URL", sim.base_url.as_str()),
            ("AC_SCHEDULER_ID", SCHED),
        ])
        .backend(dir.path());
    let mut s = spec("true");
    s.options.insert("workdir".into(), "/tmp/w".into());
    let job = b.submit(&s).await.unwrap();
    assert_eq!(
        job.extra["stdout"],
        format!("/tmp/w/std.out.{}", job.id.split_once('.').unwrap().1)
    );
    wait_terminal(&b, &job.id).await;
    assert_eq!(sim.hits("GET /ac/openapi/v2/center"), 0);
    assert_eq!(sim.hits("GET /hpc/openapi/v2/cluster"), 0);
    assert_eq!(sim.hits("GET /ac/openapi/v2/user"), 0);
}

#[tokio::test]
async fn a_preissued_token_works_and_a_bad_one_is_explained() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/ac/openapi/v2/tokens", sim.base_url))
        .header("user", "jobctl")
        .header("password", "jobctl-sim")
        .header("orgId", "jobctl-sim-org")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let regional = resp["data"][2]["token"].as_str().unwrap().to_string();
    let platform = resp["data"][0]["token"].as_str().unwrap().to_string();
    let drop = ["AC_USER", "AC_PASSWORD"];
    let b = Setup::sim("scnet", &sim)
        .without(&drop)
        .with(&[("AC_TOKEN", regional.as_str())])
        .backend(dir.path());
    let job = b.submit(&spec("true")).await.unwrap();
    assert_eq!(wait_terminal(&b, &job.id).await.state, JobState::Succeeded);
    assert!(
        !dir.path().join("cache/ac.token.json").exists(),
        "pre-issued tokens stay off disk"
    );
    let b = Setup::sim("scnet", &sim)
        .without(&drop)
        .with(&[("AC_TOKEN", "not-a-token")])
        .backend(dir.path());
    let e = err_of(b.status(&job.id).await);
    assert_eq!(e.exit_code(), 4);
    assert!(
        e.message.contains("AC_TOKEN") && !e.message.contains("not-a-token"),
        "{e}"
    );
    let b = Setup::sim("scnet", &sim)
        .without(&drop)
        .with(&[("AC_TOKEN", platform.as_str())])
        .backend(dir.path());
    assert_eq!(err_of(b.status(&job.id).await).exit_code(), 2);
    let b = Setup::sim("scnet", &sim)
        .without(&["AC_USER", "AC_PASSWORD"])
        .backend(dir.path());
    assert_eq!(err_of(b.status(&job.id).await).exit_code(), 2);
}

#[tokio::test]
async fn doctor_and_login_report_the_region() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let checks = b.doctor().await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert_eq!(checks.len(), 4);
    let desc = b.login().await.unwrap();
    assert!(desc.contains("sim-east") && desc.contains(SCHED), "{desc}");
    let other = tempfile::tempdir().unwrap();
    let bad = Setup::sim("scnet", &sim)
        .with(&[("AC_PASSWORD", "nope")])
        .backend(other.path());
    let checks = bad.doctor().await;
    assert!(
        checks
            .iter()
            .any(|c| c.name == "authentication" && !c.ok && c.detail.contains("10008")),
        "{checks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_submit_wait_logs_and_error_codes() {
    let sim = Sim::start(quick());
    let sb = Sandbox::with_sim(&sim);
    let out = sb.output(&[
        "-b", "scnet", "-o", "json", "submit", "--name", "cli-demo", "--wait", "--", "echo",
        "hi there",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("\"succeeded\"") && text.contains(&format!("ac:{SCHED}.")),
        "{text}"
    );

    let out = sb.output(&[
        "-b",
        "ac",
        "-o",
        "quiet",
        "submit",
        "--",
        "SIM_OUTCOME=fail true",
    ]);
    let reference = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        reference.starts_with(&format!("ac:{SCHED}.")),
        "{reference}"
    );
    let out = sb.output(&["wait", &reference]);
    assert_eq!(out.status.code(), Some(1));
    let out = sb.output(&["logs", &reference, "--stderr"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("simulated failure"));

    let out = sb.output(&[
        "-b",
        "ac",
        "-o",
        "json",
        "status",
        &format!("{SCHED}.999999"),
    ]);
    assert_eq!(out.status.code(), Some(6));
    let out = sb.output(&[
        "-b",
        "ac",
        "-o",
        "json",
        "submit",
        "--name",
        "sim-error-10008",
        "--",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(4));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON error object");
    assert_eq!(v["error"]["code"], "10008");
    assert_eq!(v["error"]["backend"], "ac");
    let out = sb.output(&["-b", "ac", "submit", "--opt", "colour=red", "--", "true"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("colour"));
}
