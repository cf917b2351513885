//! The ac backend against the in-process simulator.

mod common;

use common::{Sandbox, Setup, Sim, quick, wait_terminal};
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
const SUBMIT: &str = "POST /hpc/openapi/v2/apptemplates/{apptype}/{appname}/job";
const DETAIL: &str = "GET /hpc/openapi/v2/jobs/{job_id}";
const HISTORY: &str = "GET /hpc/openapi/v2/historyjobs/{jobmanager_id}/{job_id}";
const LOGIN: &str = "POST /api/user/v3/tokens";
const PW_LOGIN: &str = "POST /ac/openapi/v2/tokens";

/// The profile logging in with password + orgId instead of AK/SK.
fn password_setup(sim: &Sim) -> Setup {
    Setup::sim("scnet", sim)
        .with(&[
            ("AC_PASSWORD", jobctl_sim::DEFAULT_PASSWORD),
            ("AC_ORG_ID", jobctl_sim::ac::ORG_ID),
        ])
        .without(&["AC_ACCESS_KEY", "AC_SECRET_KEY"])
}

#[tokio::test]
async fn submit_runs_to_success_with_discovered_defaults() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b.submit(&named("echo hello", "demo")).await.unwrap();
    let (sched, num) = job.id.split_once('.').unwrap();
    assert_eq!(sched, SCHED);
    assert!(num.parse::<u64>().is_ok());
    let workdir = job.extra["workdir"].as_str().unwrap().to_string();
    assert!(
        workdir.starts_with("/public/home/jobctl/jobctl/demo-"),
        "a fresh directory under the home named after the job: {workdir}"
    );
    assert_eq!(job.extra["stdout"], format!("{workdir}/std.out.{num}"));
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
    // `/center` said where the home is.
    assert_eq!(sim.hits("GET /ac/openapi/v2/user"), 0);
    // jobctl created the directory it chose.
    assert_eq!(sim.hits("POST /efile/openapi/v2/file/mkdir"), 1);
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
    let arts = b.fetch(&job.id, dest.path(), &|_| {}).await.unwrap();
    let num = job.id.split_once('.').unwrap().1;
    let names: Vec<String> = arts.iter().map(|a| a.name.clone()).collect();
    // A failed job leaves only its streams in its working directory.
    assert_eq!(
        names,
        vec![format!("std.err.{num}"), format!("std.out.{num}")]
    );
    let saved = std::fs::read(dest.path().join(format!("std.out.{num}"))).unwrap();
    assert_eq!(saved, whole);
    assert_eq!(arts[1].bytes, whole.len() as u64);
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
    // A queue the user does not have is refused before sending, naming the valid ones.
    let submits = sim.hits(SUBMIT);
    let mut s = spec("true");
    s.options.insert("queue".into(), "gpu-a100".into());
    let e = err_of(b.submit(&s).await);
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.message.contains("gpu-a100") && e.message.contains("debug, normal"),
        "{e}"
    );
    assert_eq!(sim.hits(SUBMIT), submits);
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
        let b = password_setup(&sim)
            .with(&[("AC_USER", user), ("AC_PASSWORD", pw)])
            .backend(dir.path());
        let e = err_of(b.status(&format!("{SCHED}.1")).await);
        assert_eq!(e.exit_code(), 4, "{e}");
        assert_eq!(e.code.as_deref(), Some(code));
        assert!(!e.to_string().contains("wrong"), "no password in {e}");
    }
    // One login attempt each: a refused login is not retried.
    assert_eq!(sim.hits(PW_LOGIN), 3);
    let b = password_setup(&sim)
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
            !std::fs::read_to_string(&p)
                .unwrap()
                .contains(jobctl_sim::DEFAULT_PASSWORD),
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
        .header("password", jobctl_sim::DEFAULT_PASSWORD)
        .header("orgId", "jobctl-sim-org")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let regional = resp["data"][2]["token"].as_str().unwrap().to_string();
    let platform = resp["data"][0]["token"].as_str().unwrap().to_string();
    let drop = ["AC_USER", "AC_ACCESS_KEY", "AC_SECRET_KEY"];
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
    let b = Setup::sim("scnet", &sim).without(&drop).backend(dir.path());
    assert_eq!(err_of(b.status(&job.id).await).exit_code(), 2);
}

#[tokio::test]
async fn doctor_and_login_report_the_region() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let checks = jobctl::backend::collect_checks(&*b).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert_eq!(checks.len(), 5);
    let queues = checks.iter().find(|c| c.name == "queues").unwrap();
    assert!(queues.detail.contains("debug (max 00:30:00)"), "{queues:?}");
    let desc = b.login().await.unwrap();
    assert!(desc.contains("sim-east") && desc.contains(SCHED), "{desc}");
    let other = tempfile::tempdir().unwrap();
    let bad = Setup::sim("scnet", &sim)
        .with(&[("AC_SECRET_KEY", "nope")])
        .backend(other.path());
    let checks = jobctl::backend::collect_checks(&*bad).await;
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

#[tokio::test]
async fn aksk_login_signs_and_refused_keys_are_explained() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let desc = b.login().await.unwrap();
    // The live token list puts the regions before the platform entry; jobctl still picks the
    // first usable region, not whatever comes first.
    assert!(desc.contains("sim-east") && desc.contains(SCHED), "{desc}");
    assert_eq!((sim.hits(LOGIN), sim.hits(PW_LOGIN)), (1, 0));
    let cached = std::fs::read_to_string(dir.path().join("cache/ac.token.json")).unwrap();
    assert!(
        !cached.contains(jobctl_sim::ac::SECRET_KEY),
        "no secret key on disk"
    );

    for (var, value) in [
        ("AC_SECRET_KEY", "not-the-secret"),
        ("AC_ACCESS_KEY", "unknown-key"),
    ] {
        let other = tempfile::tempdir().unwrap();
        let bad = Setup::sim("scnet", &sim)
            .with(&[(var, value)])
            .backend(other.path());
        let e = err_of(bad.list(&ListQuery::default()).await);
        assert_eq!(e.exit_code(), 4, "{e}");
        assert!(
            e.message.contains("AK/SK") && e.message.contains("AC_SECRET_KEY"),
            "{e}"
        );
        assert!(!e.to_string().contains("not-the-secret"), "{e}");
    }
    let other = tempfile::tempdir().unwrap();
    let partial = Setup::sim("scnet", &sim)
        .without(&["AC_SECRET_KEY"])
        .backend(other.path());
    let e = err_of(partial.list(&ListQuery::default()).await);
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("AC_SECRET_KEY is missing"), "{e}");

    // The simulator checks the signature's timestamp against its clock.
    let stale = (chrono::Utc::now().timestamp() - 3600).to_string();
    let sig = jobctl_sim::ac::aksk_signature(
        jobctl_sim::ac::ACCESS_KEY,
        &stale,
        "jobctl",
        jobctl_sim::ac::SECRET_KEY,
    );
    let resp: serde_json::Value = reqwest::Client::new()
        .post(format!("{}/api/user/v3/tokens", sim.base_url))
        .header("user", "jobctl")
        .header("accessKey", jobctl_sim::ac::ACCESS_KEY)
        .header("signature", sig)
        .header("timestamp", stale)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resp["code"], "10004", "{resp}");
}

#[tokio::test]
async fn queues_are_listed_with_numeric_limits_and_checked_before_submitting() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    assert!(
        b.capabilities()
            .contains(&jobctl::model::Capability::Queues)
    );
    let queues = b.queues().await.unwrap();
    let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["debug", "normal"]);
    let debug = serde_json::to_value(&queues[0]).unwrap();
    assert_eq!(debug["free_cores"], 64);
    assert_eq!(debug["max_cores_per_node"], 32);
    assert_eq!(debug["max_wall_time"], "00:30:00");

    let with = |opts: &[(&str, &str)]| {
        let mut s = spec("true");
        for (k, v) in opts {
            s.options.insert(k.to_string(), (*v).into());
        }
        s
    };
    let e = err_of(
        b.submit(&with(&[("queue", "debug"), ("wall_time", "2h")]))
            .await,
    );
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(
        e.message.contains("02:00:00") && e.message.contains("00:30:00"),
        "{e}"
    );
    let e = err_of(b.submit(&with(&[("queue", "debug"), ("ppn", "48")])).await);
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.message.contains("32 cores per node"), "{e}");
    let e = err_of(
        b.submit(&with(&[("queue", "debug"), ("nproc", "100")]))
            .await,
    );
    assert_eq!(e.exit_code(), 2, "{e}");
    assert_eq!(sim.hits(SUBMIT), 0, "nothing sent");
    let job = b
        .submit(&with(&[("queue", "debug"), ("wall_time", "10m")]))
        .await
        .unwrap();
    assert_eq!(job.queue.as_deref(), Some("debug"));
    // `queues` asked once; the checks reused its answer from the short-lived cache.
    assert_eq!(sim.hits("GET /hpc/openapi/v2/queuenames/users/{user}"), 1);
}

/// Reads a file of the simulated efile service.
async fn remote_file(sim: &Sim, dir: &std::path::Path, path: &str) -> Vec<u8> {
    let cached: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cache/ac.token.json")).unwrap())
            .unwrap();
    let resp = reqwest::Client::new()
        .get(format!("{}/efile/openapi/v2/file/download", sim.base_url))
        .header("token", cached["token"].as_str().unwrap())
        .query(&[("path", path)])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    resp.bytes().await.unwrap().to_vec()
}

#[tokio::test]
async fn uploads_stage_inputs_and_fetch_brings_the_working_directory_back() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = Setup::sim("scnet", &sim)
        .with(&[("AC_UPLOAD_CHUNK_SIZE", "1K")])
        .backend(dir.path());
    let local = tempfile::tempdir().unwrap();
    let run = local.path().join("run.sh");
    std::fs::write(&run, "#!/bin/sh\n./solve input/mesh.bin\n").unwrap();
    let input = local.path().join("input");
    std::fs::create_dir_all(input.join("deep")).unwrap();
    let big: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(input.join("mesh.bin"), &big).unwrap();
    std::fs::write(input.join("deep/params.txt"), "n=3\n").unwrap();
    let mut s = named("sh run.sh", "staged");
    s.key = Some("case-7".into());
    s.uploads = vec![
        run.display().to_string(),
        input.display().to_string(),
        format!("{}:bin/start.sh", run.display()),
    ];
    let job = b.submit(&s).await.unwrap();
    let workdir = "/public/home/jobctl/jobctl/case-7";
    assert_eq!(job.extra["workdir"], workdir, "named after the job key");
    // The large file went in three chunks and one merge; the others in one request each.
    assert_eq!(sim.hits("POST /efile/openapi/v2/file/burst"), 3);
    assert_eq!(sim.hits("POST /efile/openapi/v2/file/merge"), 1);
    assert_eq!(sim.hits("POST /efile/openapi/v2/file/upload"), 3);
    assert_eq!(
        remote_file(&sim, dir.path(), &format!("{workdir}/input/mesh.bin")).await,
        big
    );
    assert_eq!(
        remote_file(&sim, dir.path(), &format!("{workdir}/bin/start.sh")).await,
        std::fs::read(&run).unwrap()
    );
    assert_eq!(wait_terminal(&b, &job.id).await.state, JobState::Succeeded);

    let dest = tempfile::tempdir().unwrap();
    let arts = b.fetch(&job.id, dest.path(), &|_| {}).await.unwrap();
    let num = job.id.split_once('.').unwrap().1;
    let mut names: Vec<String> = arts.iter().map(|a| a.name.clone()).collect();
    names.sort();
    let mut expected = vec![
        "bin/start.sh".to_string(),
        "input/deep/params.txt".into(),
        "input/mesh.bin".into(),
        "out/summary.json".into(),
        "result.txt".into(),
        "run.sh".into(),
        format!("std.err.{num}"),
        format!("std.out.{num}"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    assert_eq!(
        std::fs::read_to_string(dest.path().join("result.txt")).unwrap(),
        format!("result of job {num}\n")
    );
    assert_eq!(
        std::fs::read(dest.path().join("input/mesh.bin")).unwrap(),
        big
    );
}

#[tokio::test]
async fn a_failed_upload_names_the_file_and_submits_nothing() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let local = tempfile::tempdir().unwrap();
    let bad = local.path().join("sim-upload-fail.dat");
    std::fs::write(&bad, "x").unwrap();
    let mut s = spec("true");
    s.uploads = vec![bad.display().to_string()];
    let e = err_of(b.submit(&s).await);
    assert_eq!(e.exit_code(), 7, "{e}");
    assert!(
        e.message.contains("sim-upload-fail.dat") && e.message.contains("10010"),
        "{e}"
    );
    // Outside the home directory: permission refused (exit 4), the file named.
    let ok = local.path().join("ok.txt");
    std::fs::write(&ok, "x").unwrap();
    s.uploads = vec![format!("{}:/etc/ok.txt", ok.display())];
    let e = err_of(b.submit(&s).await);
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(e.message.contains("ok.txt"), "{e}");
    // A local file that does not exist is refused before anything is sent.
    let before = sim.total();
    s.uploads = vec!["/no/such/input.dat".into()];
    let e = err_of(b.submit(&s).await);
    assert_eq!(e.exit_code(), 2, "{e}");
    assert!(e.message.contains("/no/such/input.dat"), "{e}");
    assert_eq!(sim.total(), before);
    assert_eq!(sim.hits(SUBMIT), 0);
}

#[tokio::test]
async fn jobs_gone_from_the_realtime_list_are_found_in_history_whatever_it_answers() {
    let sim = Sim::start(SimConfig {
        ac_realtime_window: Duration::ZERO,
        ..quick()
    });
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    for name in ["sim-gone-null", "sim-gone-404", "sim-gone-text", "plain"] {
        let job = b.submit(&named("true", name)).await.unwrap();
        let done = wait_terminal(&b, &job.id).await;
        assert_eq!(done.state, JobState::Succeeded, "{name}");
        assert_eq!(done.exit_code, Some(0), "{name}");
    }
}

#[tokio::test]
async fn internal_errors_on_reads_are_retried() {
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let job = b.submit(&spec("true")).await.unwrap();
    reqwest::Client::new()
        .post(format!("{}/_sim/ac/internal-errors?count=2", sim.base_url))
        .send()
        .await
        .unwrap();
    let before = sim.hits(DETAIL);
    let j = b.status(&job.id).await.unwrap();
    assert!(!j.id.is_empty());
    assert_eq!(
        sim.hits(DETAIL) - before,
        3,
        "two 10001 answers, then the job"
    );
}

/// Runs the requests of a real third-party SCNet client (scnet-chat, reproduced byte for byte
/// in `tests/fixtures/scnet-client/scnet_client.py`) against the simulator, then follows the
/// job it submitted with jobctl: both sides of the simulator agree with that client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_third_party_scnet_client_works_against_the_simulator() {
    let Ok(python) = which_python() else {
        eprintln!("SKIP: python3 is not available");
        return;
    };
    let sim = Sim::start(quick());
    let local = tempfile::tempdir().unwrap();
    let script = local.path().join("run.sh");
    std::fs::write(&script, "echo from scnet-chat\n").unwrap();
    let env: std::collections::BTreeMap<String, String> = sim.env().into_iter().collect();
    let mut cmd = std::process::Command::new(python);
    cmd.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/scnet-client/scnet_client.py"
    ))
    .env_clear()
    .env("SCNET_LOGIN_URL", &env["AC_LOGIN_URL"])
    .env("SCNET_AC_URL", &env["AC_URL"])
    .env("SCNET_ACCESS_KEY", &env["AC_ACCESS_KEY"])
    .env("SCNET_SECRET_KEY", &env["AC_SECRET_KEY"])
    .env("SCNET_USER", &env["AC_USER"])
    .env("JOB_DIR_NAME", "scnet-chat/job1")
    .env("UPLOAD_FILE", &script);
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(report["queues"], serde_json::json!(["debug", "normal"]));
    assert_eq!(report["region"], "sim-east");
    for endpoint in [
        "POST /api/user/v3/tokens",
        "GET /ac/openapi/v2/center",
        "GET /hpc/openapi/v2/queuenames/users/{user}",
        "POST /efile/openapi/v2/file/mkdir",
        "POST /efile/openapi/v2/file/upload",
        SUBMIT,
    ] {
        assert_eq!(sim.hits(endpoint), 1, "{endpoint}");
    }
    // jobctl sees the client's job and its staged file.
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let id = report["job_id"].as_str().unwrap();
    let done = wait_terminal(&b, id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.queue.as_deref(), Some("debug"));
    let workdir = report["workdir"].as_str().unwrap();
    assert_eq!(
        remote_file(&sim, dir.path(), &format!("{workdir}/run.sh")).await,
        b"echo from scnet-chat\n"
    );
}

fn which_python() -> Result<std::path::PathBuf, ()> {
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok { Ok("python3".into()) } else { Err(()) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_queues_upload_and_secret_key_by_reference() {
    let sim = Sim::start(quick());
    let sb = Sandbox::with_sim(&sim);
    let v = sb.json(&["-b", "scnet", "queues"]);
    assert_eq!(v[1]["name"], "normal");
    assert_eq!(v[1]["max_cores"], 2048);
    let local = tempfile::tempdir().unwrap();
    let run = local.path().join("run.sh");
    std::fs::write(&run, "echo staged\n").unwrap();
    let upload = run.display().to_string();
    // A backend without file staging refuses --upload before sending anything.
    let (code, _, err) = sb.run(&["-b", "local", "submit", "--upload", &upload, "--", "true"]);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("--upload"), "{err}");
    let (code, out, err) = sb.run(&[
        "-b",
        "scnet",
        "-o",
        "json",
        "submit",
        "--queue",
        "debug",
        "--upload",
        &upload,
        "--wait",
        "--",
        "sh run.sh",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(sim.hits("POST /efile/openapi/v2/file/upload"), 1);

    // The secret key is a secret: by reference in a config file, never inline.
    let inline = Setup::new("scnet")
        .config("[profiles.scnet]\nsecret_key = \"abc\"\n")
        .profile()
        .unwrap_err();
    assert_eq!(inline.exit_code(), 2);
    assert!(inline.message.contains("secret_key_env"), "{inline}");
    let env: std::collections::BTreeMap<String, String> = sim.env().into_iter().collect();
    let dir = tempfile::tempdir().unwrap();
    let b = Setup::new("sk")
        .var("MY_SCNET_SK", &env["AC_SECRET_KEY"])
        .config(&format!(
            "[profiles.sk]\nbackend = \"scnet\"\nurl = \"{u}\"\nlogin_url = \"{u}\"\nusername = \"jobctl\"\naccess_key = \"{ak}\"\nsecret_key_env = \"MY_SCNET_SK\"\n",
            u = env["AC_URL"],
            ak = env["AC_ACCESS_KEY"],
        ))
        .backend(dir.path());
    assert_eq!(b.queues().await.unwrap().len(), 2);
}

/// A configured profile reads its own keys, not the `AC_*` variables of the built-in one: the
/// hints of its errors name those keys.
#[tokio::test]
async fn hints_name_the_settings_of_the_profile_in_use() {
    let sim = Sim::start(quick());
    let env: std::collections::BTreeMap<String, String> = sim.env().into_iter().collect();
    let profile = |extra: &str| {
        let login = if extra.starts_with("login_url") {
            String::new()
        } else {
            format!("login_url = \"{}\"\n", env["AC_URL"])
        };
        format!(
            "[profiles.sk]\nbackend = \"scnet\"\nurl = \"{u}\"\n{login}username = \"jobctl\"\naccess_key = \"{ak}\"\nsecret_key_env = \"MY_SCNET_SK\"\n{extra}",
            u = env["AC_URL"],
            ak = env["AC_ACCESS_KEY"],
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let b = Setup::new("sk")
        .var("MY_SCNET_SK", "not-the-secret")
        .config(&profile(""))
        .backend(dir.path());
    let e = err_of(b.queues().await);
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(
        e.message.contains("`secret_key_env`")
            && e.message.contains("`access_key`")
            && e.message.contains("`username`")
            && !e.message.contains("AC_"),
        "{e}"
    );
    for (setting, value) in [
        ("utc_offset", "+25:00"),
        ("upload_chunk_size", "lots"),
        ("scheduler_id", "first"),
        ("login_url", "nowhere"),
    ] {
        let e = Setup::new("sk")
            .var("MY_SCNET_SK", &env["AC_SECRET_KEY"])
            .config(&profile(&format!("{setting} = \"{value}\"\n")))
            .build(dir.path())
            .map(|_| ())
            .unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(
            e.message.contains(&format!("`{setting}`")) && !e.message.contains("AC_"),
            "{setting}: {e}"
        );
    }
    // The built-in profile still names its variables.
    let e = Setup::sim("scnet", &sim)
        .with(&[("AC_UTC_OFFSET", "+25:00")])
        .build(dir.path())
        .map(|_| ())
        .unwrap_err();
    assert!(e.message.contains("AC_UTC_OFFSET"), "{e}");
}

/// Keys are found in job names with one listing for all of them; a key not seen is certainly
/// absent only while its submission is younger than the history the list reaches.
#[tokio::test]
async fn keys_are_looked_up_in_names_and_absence_is_trusted_within_the_history() {
    use jobctl::backend::{KeyLookup, KeyQuery};
    let sim = Sim::start(quick());
    let dir = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "scnet", dir.path());
    let mut mine = named("echo hi", "solve");
    mine.key = Some("k1".into());
    let job = b.submit(&mine).await.unwrap();
    let mut lost = mine.clone();
    lost.key = Some("k2".into());
    let now = chrono::Utc::now();
    let before = sim.hits(LIST);
    let found = b
        .find_by_keys(
            &[
                KeyQuery {
                    spec: &mine,
                    since: now - chrono::Duration::days(30),
                },
                KeyQuery {
                    spec: &lost,
                    since: now - chrono::Duration::days(2),
                },
                KeyQuery {
                    spec: &lost,
                    since: now - chrono::Duration::days(8),
                },
            ],
            &|_| false,
        )
        .await;
    assert_eq!(sim.hits(LIST) - before, 1, "one listing for every key");
    match &found[0] {
        Ok(KeyLookup::Found(j)) => assert_eq!(j.id, job.id),
        other => panic!("{other:?}"),
    }
    assert!(matches!(found[1], Ok(KeyLookup::Absent)), "{:?}", found[1]);
    match &found[2] {
        Ok(KeyLookup::Undecided(why)) => assert!(why.contains("7 days"), "{why}"),
        other => panic!("an absence older than the history proves nothing: {other:?}"),
    }
}
