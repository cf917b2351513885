//! The slurm backend against a real Slurm 22.05 + slurmrestd started by
//! `scripts/slurm-up.sh`.
//!
//! `JOBCTL_SLURM_ENV` names the env file slurm-up.sh wrote (`$SLURM_TEST_DIR/slurm.env`).
//! Without it every test says "SKIPPED: no Slurm cluster" on stderr and passes — unless
//! `JOBCTL_REQUIRE_SLURM=1` (CI), where a missing cluster fails the run.

mod common;

use common::{Setup, wait_terminal, wait_until};
use jobctl::ErrorKind;
use jobctl::backend::JobBackend;
use jobctl::model::{AbortOutcome, Job, JobSpec, JobState, ListQuery, LogsRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What slurm-up.sh wrote about the cluster.
struct Cluster {
    vars: BTreeMap<String, String>,
    /// Directory writable by the job user and readable here.
    job_dir: PathBuf,
    state: tempfile::TempDir,
}

impl Cluster {
    fn user(&self) -> &str {
        self.vars
            .get("SLURM_USER_NAME")
            .map(String::as_str)
            .unwrap_or("")
    }

    fn backend_with(
        &self,
        extra: &[(&str, &str)],
        drop: &[&str],
    ) -> jobctl::Result<Arc<dyn JobBackend>> {
        Setup::new("slurm")
            .vars(
                self.vars
                    .iter()
                    .filter(|(k, _)| k.starts_with("SLURM_") && !drop.contains(&k.as_str()))
                    .map(|(k, v)| (k.clone(), v.clone())),
            )
            .with(extra)
            .build(self.state.path())
    }

    fn backend(&self) -> Arc<dyn JobBackend> {
        self.backend_with(&[], &[]).expect("backend builds")
    }

    fn spec(&self, name: &str, command: &str, args: Value, options: Value) -> JobSpec {
        let mut opts = options.as_object().cloned().unwrap_or_default();
        opts.entry("workdir")
            .or_insert_with(|| Value::from(self.job_dir.to_string_lossy().into_owned()));
        opts.entry("stdout")
            .or_insert_with(|| Value::from("%x-%j.out"));
        JobSpec {
            name: Some(name.to_string()),
            command: Some(vec![command.to_string()]),
            args: args.as_object().cloned().unwrap_or_default(),
            options: opts,
            ..JobSpec::default()
        }
    }
}

fn cluster() -> Option<Cluster> {
    let (vars, job_dir) = common::real_slurm()?;
    Some(Cluster {
        vars,
        job_dir,
        state: tempfile::tempdir().expect("temp dir"),
    })
}

#[tokio::test]
async fn real_job_succeeds_and_its_output_is_read() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let job = b
        .submit(&c.spec(
            "greet",
            "echo \"hello $GREETING\"",
            json!({"GREETING": "world"}),
            json!({}),
        ))
        .await
        .unwrap();
    let done = wait_terminal(b.as_ref(), &job.id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(done.native_state.as_deref(), Some("COMPLETED"));
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(done.owner.as_deref(), Some(c.user()));
    assert_eq!(done.name.as_deref(), Some("greet"));
    assert!(done.started_at.is_some() && done.ended_at.is_some());

    let mut out = Vec::new();
    b.logs(&job.id, LogsRequest::default(), &mut out)
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out), "hello world\n");
    let dest = tempfile::tempdir().unwrap();
    let arts = b.fetch(&job.id, dest.path(), &|_| {}).await.unwrap();
    assert_eq!(arts[0].name, format!("greet-{}.out", job.id));
    assert_eq!(
        std::fs::read_to_string(&arts[0].path).unwrap(),
        "hello world\n"
    );
}

#[tokio::test]
async fn real_job_fails_with_its_exit_code() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let job = b
        .submit(&c.spec("fails", "echo about to fail; exit 3", json!({}), json!({})))
        .await
        .unwrap();
    let done = wait_terminal(b.as_ref(), &job.id).await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.native_state.as_deref(), Some("FAILED"));
    assert_eq!(done.exit_code, Some(3));
    assert_eq!(done.extra["exit_status_raw"], 768);
    assert!(done.reason.unwrap_or_default().contains("NonZeroExitCode"));
}

#[tokio::test]
async fn real_job_is_cancelled() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let job = b
        .submit(&c.spec("sleeper", "sleep 120", json!({}), json!({})))
        .await
        .unwrap();
    wait_until(b.as_ref(), &job.id, Duration::from_secs(30), |j| {
        j.state == JobState::Running
    })
    .await;
    assert_eq!(b.abort(&job.id).await.unwrap(), AbortOutcome::Requested);
    let done = wait_terminal(b.as_ref(), &job.id).await;
    assert_eq!(done.state, JobState::Canceled);
    assert_eq!(done.native_state.as_deref(), Some("CANCELLED"));
    assert_eq!(
        b.abort(&job.id).await.unwrap(),
        AbortOutcome::AlreadyTerminal
    );
}

#[tokio::test]
async fn real_job_hits_its_time_limit() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let job = b
        .submit(&c.spec("too-long", "sleep 600", json!({}), json!({"time_limit": 1})))
        .await
        .unwrap();
    assert_eq!(job.extra["time_limit_minutes"], 1);
    // What Slurm made of the request, as it reports it.
    let seen = b.status(&job.id).await.unwrap();
    assert_eq!(seen.extra["time_limit_minutes"], 1);
    // Slurm enforces limits on a 30 s sweep: one minute plus up to half a minute, plus KillWait.
    let done = wait_until(b.as_ref(), &job.id, Duration::from_secs(170), |j| {
        j.terminal
    })
    .await;
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.native_state.as_deref(), Some("TIMEOUT"));
    assert!(
        done.reason
            .unwrap_or_default()
            .starts_with("time limit reached")
    );
}

#[tokio::test]
async fn real_list_shows_own_jobs_with_state_filter() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let quick = b
        .submit(&c.spec("list-quick", "true", json!({}), json!({})))
        .await
        .unwrap();
    let slow = b
        .submit(&c.spec("list-slow", "sleep 60", json!({}), json!({})))
        .await
        .unwrap();
    wait_terminal(b.as_ref(), &quick.id).await;
    wait_until(b.as_ref(), &slow.id, Duration::from_secs(30), |j| {
        j.state == JobState::Running
    })
    .await;

    let all = b
        .list(&ListQuery {
            states: vec![],
            limit: None,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(all.iter().all(|j| j.owner.as_deref() == Some(c.user())));
    let pos = |id: &str| all.iter().position(|j| j.id == id).expect("listed");
    assert!(pos(&slow.id) < pos(&quick.id), "newest first");

    let running = b
        .list(&ListQuery {
            states: vec![JobState::Running],
            limit: None,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(running.iter().any(|j| j.id == slow.id));
    assert!(running.iter().all(|j| j.state == JobState::Running));
    let done = b
        .list(&ListQuery {
            states: vec![JobState::Succeeded],
            limit: None,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert!(done.iter().any(|j| j.id == quick.id));
    assert!(!done.iter().any(|j| j.id == slow.id));
    b.abort(&slow.id).await.unwrap();
}

#[tokio::test]
async fn real_watch_of_twenty_jobs() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let mut ids = Vec::new();
    for i in 0..20 {
        let cmd = if i % 4 == 0 {
            "sleep 1; exit 1"
        } else {
            "sleep 1"
        };
        ids.push(
            b.submit(&c.spec(&format!("w{i}"), cmd, json!({}), json!({})))
                .await
                .unwrap()
                .id,
        );
    }
    let start = Instant::now();
    loop {
        let jobs: Vec<Job> = b
            .statuses(&ids)
            .await
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), ids);
        if jobs.iter().all(|j| j.terminal) {
            assert_eq!(
                jobs.iter().filter(|j| j.state == JobState::Failed).count(),
                5
            );
            assert_eq!(
                jobs.iter()
                    .filter(|j| j.state == JobState::Succeeded)
                    .count(),
                15
            );
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "twenty jobs did not end"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn real_errors_are_classified() {
    let Some(c) = cluster() else { return };
    let b = c.backend();
    let e = b.status("99999999").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert_eq!(e.code.as_deref(), Some("2017"));
    let e = b.abort("99999999").await.unwrap_err();
    assert_eq!(e.exit_code(), 6);
    let e = b
        .submit(&c.spec(
            "x",
            "true",
            json!({}),
            json!({"partition": "no-such-partition"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert_eq!(e.code.as_deref(), Some("2000"));

    let b = c
        .backend_with(&[("SLURM_JWT", "not.a-valid.token")], &[])
        .unwrap();
    let e = b.status("1").await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");
    let e = b
        .submit(&c.spec("x", "true", json!({}), json!({})))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Auth, "{e}");

    let checks = jobctl::backend::collect_checks(&*c.backend()).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(checks.iter().any(|c| c.detail.contains("v0.0.38")));
}

fn calls(counter: &Path) -> usize {
    std::fs::read_to_string(counter)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

#[tokio::test]
async fn real_token_command_renews_tokens() {
    let Some(c) = cluster() else { return };
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("calls");
    let conf = c
        .vars
        .get("SLURM_CONF")
        .cloned()
        .unwrap_or_else(|| "/etc/slurm/slurm.conf".into());
    // First call: a token the controller refuses. Then real 30-second tokens: reused while
    // fresh, minted again once they are in the last quarter of their life.
    let script = format!(
        "echo x >> {n}; if [ $(wc -l < {n}) -eq 1 ]; then echo SLURM_JWT=not.a-valid.token; else SLURM_CONF={conf} scontrol token username={u} lifespan=30; fi",
        n = counter.display(),
        u = c.user()
    );
    let command = shell_words::join(["sh", "-c", script.as_str()]);
    let b = c
        .backend_with(&[("SLURM_TOKEN_COMMAND", &command)], &["SLURM_JWT"])
        .unwrap();
    let job = b
        .submit(&c.spec("renewed", "true", json!({}), json!({})))
        .await
        .unwrap();
    let after_submit = calls(&counter);
    assert!(
        after_submit >= 2,
        "the refused token was replaced ({after_submit} calls)"
    );
    b.status(&job.id).await.unwrap();
    b.status(&job.id).await.unwrap();
    assert_eq!(calls(&counter), after_submit, "a fresh token is reused");
    tokio::time::sleep(std::time::Duration::from_secs(24)).await;
    b.status(&job.id).await.unwrap();
    assert_eq!(
        calls(&counter),
        after_submit + 1,
        "a token near its expiry is renewed before use"
    );
    assert_eq!(
        wait_terminal(b.as_ref(), &job.id).await.state,
        JobState::Succeeded
    );
}
