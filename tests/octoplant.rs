//! The octoplant backend against jobctl-sim (plain HTTP and self-signed TLS).

mod common;

use common::{Sandbox, Setup, Sim, observe_until_terminal};
use jobctl::backend::JobBackend;
use jobctl::config::Profile;
use jobctl::error::ErrorKind;
use jobctl::ledger::{Begin, Ledger};
use jobctl::model::{AbortOutcome, FetchProgress, Job, JobSpec, JobState, ListQuery};
use jobctl_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Once};
use std::time::Duration;

/// Keeps retries short so that "retried, then exit 7" cases finish quickly. Every test calls
/// this before building a client; `Once` makes the others wait until it is set.
fn short_retry_budget() {
    static ONCE: Once = Once::new();
    // SAFETY: runs before any test of this binary reads the environment (they all call this
    // first and block on the Once until it has completed).
    ONCE.call_once(|| unsafe { std::env::set_var("JOBCTL_RETRY_BUDGET", "1500ms") });
}

fn start(config: SimConfig) -> Sim {
    short_retry_budget();
    Sim::start(config)
}

fn fast() -> SimConfig {
    SimConfig {
        queue_duration: Duration::from_millis(100),
        job_duration: Duration::from_millis(800),
        ..SimConfig::default()
    }
}

/// The built-in `octoplant` profile as configured from the simulator's variables plus `extra`.
fn profile(sim: &SimHandle, extra: &[(&str, &str)]) -> Profile {
    Setup::sim("octoplant", sim)
        .with(extra)
        .profile()
        .expect("profile resolves")
}

fn backend_with(profile: Profile, state: &Path) -> Arc<dyn JobBackend> {
    common::build_profile(profile, state).expect("backend builds")
}

fn spec(options: Value) -> JobSpec {
    JobSpec {
        options: options.as_object().expect("object").clone(),
        ..JobSpec::default()
    }
}

/// Submits like the CLI does: recorded in the ledger first, then sent.
async fn submit_recorded(b: &Arc<dyn JobBackend>, ledger: &Ledger, s: &JobSpec) -> Job {
    b.validate(s).expect("valid spec");
    let Begin::New(seq) = ledger.begin("octoplant", "octoplant", s).await.unwrap() else {
        panic!("new submission expected")
    };
    let job = b.submit(s).await.expect("submit");
    ledger.complete(seq, &job.id).await.unwrap();
    job
}

#[tokio::test]
async fn an_export_runs_with_progress_and_downloads_as_a_zip() {
    let sim = start(fast());
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let s = spec(json!({"export": ["projectTree", "jobResults"]}));
    b.validate(&s).unwrap();
    let job = b.submit(&s).await.unwrap();
    assert!(!job.id.is_empty());
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.native_state.as_deref(), Some("STATE_PENDING"));
    assert_eq!(job.extra["exports"], json!(["jobResults", "projectTree"]));

    // Before success there is nothing to fetch: exit 6, naming the state.
    let dest = state.path().join("out/exports");
    let e = b.fetch(&job.id, &dest, &|_| {}).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    assert_eq!(e.exit_code(), 6);
    assert!(e.message.contains("STATE_"), "{e}");
    assert!(e.message.contains("nothing to download"), "{e}");

    let seen = observe_until_terminal(&b, &job.id).await;
    let done = seen.last().cloned().expect("observed");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.progress, Some(1.0));
    let running: Vec<&Job> = seen
        .iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    assert!(!running.is_empty(), "never saw the order running");
    assert!(running.iter().all(|j| {
        j.progress.is_some_and(|p| (0.0..1.0).contains(&p))
            && j.extra["current_sub_process"].is_string()
    }));

    let (expected, received) = (AtomicU64::new(0), AtomicU64::new(0));
    let report = |p: FetchProgress| {
        match p {
            FetchProgress::Expect(n) => expected.fetch_add(n, Ordering::SeqCst),
            FetchProgress::Done(n) => received.fetch_add(n, Ordering::SeqCst),
        };
    };
    let artifacts = b.fetch(&job.id, &dest, &report).await.unwrap();
    assert_eq!(artifacts.len(), 1);
    let a = &artifacts[0];
    assert_eq!(a.name, format!("export-{}.zip", job.id));
    assert_eq!(a.path, dest.join(&a.name));
    assert_eq!(
        a.entries,
        ["contents.json", "jobResults.csv", "projectTree.json"]
    );
    let on_disk = std::fs::metadata(&a.path).unwrap().len();
    assert_eq!(on_disk, a.bytes);
    assert_eq!(received.load(Ordering::SeqCst), a.bytes);
    assert_eq!(expected.load(Ordering::SeqCst), a.bytes);
    let zip = zip::ZipArchive::new(std::fs::File::open(&a.path).unwrap()).unwrap();
    assert_eq!(zip.len(), 3);
    // No partial file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(&dest)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty());
}

#[tokio::test]
async fn bad_specs_are_refused_before_sending() {
    let sim = start(fast());
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let cases = [
        (spec(json!({"export": "versions"})), "versions"),
        (spec(json!({})), "export"),
        (
            spec(json!({"exports": {"projectTree": 3}})),
            "exports.projectTree",
        ),
        (
            spec(json!({"export": "projectTree", "colour": "red"})),
            "colour",
        ),
        (
            JobSpec {
                command: Some(vec!["echo".into()]),
                ..spec(json!({"export": "projectTree"}))
            },
            "command",
        ),
        (
            JobSpec {
                args: json!({"a": 1}).as_object().unwrap().clone(),
                ..spec(json!({"export": "projectTree"}))
            },
            "args",
        ),
    ];
    for (s, field) in cases {
        let e = b.validate(&s).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
        assert!(e.message.contains(field), "{field}: {e}");
    }
    assert_eq!(sim.state.stats().values().sum::<u64>(), 0);
}

#[tokio::test]
async fn platform_errors_keep_their_grpc_names() {
    let sim = start(fast());
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    // The server refuses an export type the kind does not offer: INVALID_ARGUMENT → exit 2.
    let s = spec(json!({"exports": {"jobList": {"exportType": "EXPORT_TYPE_XML"}}}));
    b.validate(&s).unwrap();
    let e = b.submit(&s).await.unwrap_err();
    assert_eq!(e.exit_code(), 2, "{e}");
    assert_eq!(e.code.as_deref(), Some("3"));
    assert!(e.message.contains("INVALID_ARGUMENT"), "{e}");
    assert!(e.to_string().contains("submit"), "{e}");

    for res in [
        b.status("no-such-order").await.map(|_| ()),
        b.abort("no-such-order").await.map(|_| ()),
        b.fetch("no-such-order", state.path(), &|_| {})
            .await
            .map(|_| ()),
    ] {
        let e = res.unwrap_err();
        assert_eq!(e.exit_code(), 6, "{e}");
        assert!(e.message.contains("NOT_FOUND"), "{e}");
        assert_eq!(e.code.as_deref(), Some("5"));
    }
}

#[tokio::test]
async fn aborting_cancels_and_a_canceled_order_has_nothing_to_fetch() {
    let sim = start(SimConfig {
        job_duration: Duration::from_secs(2),
        ..fast()
    });
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let job = b
        .submit(&spec(json!({"export": "eventLog"})))
        .await
        .unwrap();
    assert_eq!(b.abort(&job.id).await.unwrap(), AbortOutcome::Requested);
    assert_eq!(sim.hits("POST /v1/order/{name}/cancel"), 1);
    let seen = observe_until_terminal(&b, &job.id).await;
    let done = seen.last().cloned().expect("observed");
    assert_eq!(done.state, JobState::Canceled);
    assert!(done.reason.as_deref().unwrap_or("").contains("CANCELLED"));
    // Already over: nothing is sent, and that is not an error.
    assert_eq!(
        b.abort(&job.id).await.unwrap(),
        AbortOutcome::AlreadyTerminal
    );
    assert_eq!(sim.hits("POST /v1/order/{name}/cancel"), 1);
    let e = b.fetch(&job.id, state.path(), &|_| {}).await.unwrap_err();
    assert_eq!(e.exit_code(), 6);
    assert!(e.message.contains("canceled"), "{e}");
    assert_eq!(sim.hits("GET /v1/order/{name}/download"), 0);
}

#[tokio::test]
async fn a_failed_order_reports_why() {
    let sim = start(SimConfig {
        fail_ratio: 1.0,
        ..fast()
    });
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let job = b
        .submit(&spec(json!({"exports": "jobList,adminLog"})))
        .await
        .unwrap();
    let seen = observe_until_terminal(&b, &job.id).await;
    let done = seen.last().cloned().expect("observed");
    assert_eq!(done.state, JobState::Failed);
    assert_eq!(done.native_state.as_deref(), Some("STATE_FAILED"));
    let reason = done.reason.unwrap();
    assert!(reason.contains("INTERNAL"), "{reason}");
    let e = b.fetch(&job.id, state.path(), &|_| {}).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("STATE_FAILED"), "{e}");
}

#[tokio::test]
async fn refused_credentials_and_permissions_exit_4() {
    let sim = start(fast());
    let state = tempfile::tempdir().unwrap();
    let bad_pw = backend_with(
        profile(&sim, &[("OCTOPLANT_PASSWORD", "hunter2-wrong")]),
        state.path(),
    );
    let e = bad_pw.status("x").await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    // The token endpoint's OAuth2 error, with its description.
    assert_eq!(e.code.as_deref(), Some("invalid_grant"));
    assert!(e.message.contains("invalid username or password"), "{e}");
    assert!(!e.to_string().contains("hunter2-wrong"));
    // A refused login is not repeated.
    assert_eq!(sim.hits("POST /v1/oauth2/token"), 1);

    let bad_client = backend_with(
        profile(&sim, &[("OCTOPLANT_CLIENT_SECRET", "not-the-secret")]),
        state.path(),
    );
    let e = bad_client.login().await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert_eq!(e.code.as_deref(), Some("invalid_client"));
    assert!(e.message.contains("invalid client credentials"), "{e}");
    assert!(!format!("{bad_client:?}").contains("not-the-secret"));
    assert!(!format!("{bad_client:?}").contains(jobctl_sim::DEFAULT_PASSWORD));

    let viewer = backend_with(
        profile(&sim, &[("OCTOPLANT_USERNAME", "viewer")]),
        tempfile::tempdir().unwrap().path(),
    );
    let e = viewer
        .submit(&spec(json!({"export": "projectTree"})))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(e.message.contains("PERMISSION_DENIED"), "{e}");
    assert_eq!(e.code.as_deref(), Some("7"));

    let mut nameless = profile(&sim, &[]);
    nameless.username = None;
    let e = backend_with(nameless, state.path())
        .status("x")
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.message.contains("OCTOPLANT_USERNAME"), "{e}");
}

#[tokio::test]
async fn tokens_are_cached_per_profile_and_renewed_once_when_refused() {
    let sim = start(fast());
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let job = b
        .submit(&spec(json!({"export": "componentTypes"})))
        .await
        .unwrap();
    b.status(&job.id).await.unwrap();
    assert_eq!(sim.hits("POST /v1/oauth2/token"), 1);
    // Another process with the same state directory reuses the cached token.
    let again = common::backend(&sim, "octoplant", state.path());
    again.status(&job.id).await.unwrap();
    assert_eq!(sim.hits("POST /v1/oauth2/token"), 1);
    let cache = state.path().join("cache/octoplant.token.json");
    let text = std::fs::read_to_string(&cache).unwrap();
    assert!(
        !text.contains(jobctl_sim::DEFAULT_PASSWORD),
        "password must not be cached"
    );

    // A token the server no longer accepts: one new grant, then success.
    let mut cached: Value = serde_json::from_str(&text).unwrap();
    cached["token"] = json!("revoked-token");
    std::fs::write(&cache, cached.to_string()).unwrap();
    let fresh = common::backend(&sim, "octoplant", state.path());
    let j = fresh.status(&job.id).await.unwrap();
    assert_eq!(j.id, job.id);
    assert_eq!(sim.hits("POST /v1/oauth2/token"), 2);
    assert_eq!(sim.hits("GET /v1/order/{name}"), 4);

    // The same profile pointed at another user does not reuse that user's token.
    let viewer = backend_with(
        profile(&sim, &[("OCTOPLANT_USERNAME", "viewer")]),
        state.path(),
    );
    let e = viewer
        .submit(&spec(json!({"export": "projectTree"})))
        .await
        .unwrap_err();
    assert!(e.message.contains("PERMISSION_DENIED"), "{e}");
    assert_eq!(sim.hits("POST /v1/oauth2/token"), 3);
    let fresh = common::backend(&sim, "octoplant", state.path());

    // logout forgets it; login obtains a new one.
    fresh.logout().await.unwrap();
    assert!(!cache.exists());
    let msg = fresh.login().await.unwrap();
    assert!(msg.contains("valid until"), "{msg}");
    assert!(cache.exists());
}

#[tokio::test]
async fn list_shows_ledger_orders_newest_first_with_their_state() {
    let sim = start(SimConfig {
        job_duration: Duration::from_secs(2),
        ..fast()
    });
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let ledger = Ledger::open(state.path()).unwrap();
    let mut ids = Vec::new();
    for i in 0..4 {
        let s = JobSpec {
            name: Some(format!("nightly-{i}")),
            ..spec(json!({"export": "projectTree"}))
        };
        ids.push(submit_recorded(&b, &ledger, &s).await.id);
    }
    // An order this machine remembers but the server has forgotten.
    let Begin::New(seq) = ledger
        .begin(
            "octoplant",
            "octoplant",
            &spec(json!({"export": "jobList"})),
        )
        .await
        .unwrap()
    else {
        panic!()
    };
    ledger.complete(seq, "forgotten-order").await.unwrap();
    // Another profile's submissions are not listed.
    let Begin::New(seq) = ledger
        .begin("local", "local", &JobSpec::default())
        .await
        .unwrap()
    else {
        panic!()
    };
    ledger.complete(seq, "17").await.unwrap();
    assert_eq!(b.abort(&ids[1]).await.unwrap(), AbortOutcome::Requested);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let before = sim.hits("GET /v1/order/{name}");
    let all = b.list(&ListQuery::default()).await.unwrap();
    let listed: Vec<&str> = all.iter().map(|j| j.id.as_str()).collect();
    assert_eq!(
        listed,
        ["forgotten-order", &ids[3], &ids[2], &ids[1], &ids[0]]
    );
    assert_eq!(sim.hits("GET /v1/order/{name}") - before, 5);
    assert_eq!(all[0].state, JobState::Unknown);
    assert!(all[0].reason.as_deref().unwrap().contains("no longer"));
    assert_eq!(all[1].name.as_deref(), Some("nightly-3"));
    assert!(all.iter().all(|j| j.created_at.is_some()));
    assert_eq!(all[1].extra["exports"], json!(["projectTree"]));
    assert_eq!(all[3].state, JobState::Canceled);
}

#[tokio::test]
async fn an_unavailable_server_is_retried_then_exit_7() {
    let sim = start(SimConfig {
        error_rate: 1.0,
        ..fast()
    });
    let state = tempfile::tempdir().unwrap();
    let b = common::backend(&sim, "octoplant", state.path());
    let e = b.status("any").await.unwrap_err();
    assert_eq!(e.exit_code(), 7, "{e}");
    assert_eq!(e.kind, ErrorKind::Unavailable);
    assert!(e.message.contains("503"), "{e}");
    assert!(sim.hits("POST /v1/oauth2/token") > 1, "was not retried");
}

#[tokio::test]
async fn doctor_checks_reachability_login_and_version() {
    let sim = start(fast());
    let state = tempfile::tempdir().unwrap();
    let checks =
        jobctl::backend::collect_checks(&*common::backend(&sim, "octoplant", state.path())).await;
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["reachability", "authentication", "api version"]);
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");
    assert!(
        checks[2]
            .detail
            .contains(jobctl_sim::octoplant::API_VERSION)
    );

    let bad = jobctl::backend::collect_checks(&*backend_with(
        profile(&sim, &[("OCTOPLANT_PASSWORD", "wrong")]),
        state.path(),
    ))
    .await;
    assert!(bad[0].ok && !bad[1].ok, "{bad:?}");
    assert!(bad[1].detail.contains("invalid_grant"), "{bad:?}");

    // Nothing listens on a port we just released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let down = jobctl::backend::collect_checks(&*backend_with(
        profile(
            &sim,
            &[("OCTOPLANT_URL", &format!("http://127.0.0.1:{port}"))],
        ),
        state.path(),
    ))
    .await;
    assert_eq!(down.len(), 1);
    assert!(!down[0].ok);
}

#[tokio::test]
async fn self_signed_tls_needs_ca_cert_or_insecure() {
    let sim = start(SimConfig {
        tls: true,
        ..fast()
    });
    assert!(sim.base_url.starts_with("https://"));
    let state = tempfile::tempdir().unwrap();

    let e = common::backend(&sim, "octoplant", state.path())
        .status("x")
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert_eq!(e.exit_code(), 7);
    let lower = e.message.to_ascii_lowercase();
    assert!(
        lower.contains("tls") && lower.contains("certificate"),
        "{e}"
    );

    let pem = state.path().join("octoplant-ca.pem");
    std::fs::write(&pem, sim.cert_pem.as_deref().unwrap()).unwrap();
    let trusted = backend_with(
        profile(&sim, &[("OCTOPLANT_CA_CERT", pem.to_str().unwrap())]),
        state.path(),
    );
    let job = trusted
        .submit(&spec(json!({"export": "usageInformation"})))
        .await
        .unwrap();
    let seen = observe_until_terminal(&trusted, &job.id).await;
    let done = seen.last().cloned().expect("observed");
    assert_eq!(done.state, JobState::Succeeded);
    let a = trusted
        .fetch(&job.id, &state.path().join("dl"), &|_| {})
        .await
        .unwrap();
    assert_eq!(a[0].entries, ["contents.json", "usageInformation.json"]);

    let insecure = backend_with(
        profile(&sim, &[("OCTOPLANT_INSECURE", "true")]),
        tempfile::tempdir().unwrap().path(),
    );
    assert_eq!(
        insecure.status(&job.id).await.unwrap().state,
        JobState::Succeeded
    );
}

// ---------------------------------------------------------------------------------------------
// The jobctl binary against the simulator.

/// `jobctl` against `sim` with a short retry budget (so "retried, then exit 7" ends quickly).
fn sandbox(sim: &SimHandle) -> Sandbox {
    Sandbox::with_sim(sim).var("JOBCTL_RETRY_BUDGET", "1500ms")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_export_wait_and_download() {
    let sim = start(fast());
    let cli = sandbox(&sim);
    let (code, out, err) = cli.run(&[
        "-b",
        "octoplant",
        "submit",
        "--name",
        "nightly",
        "--export",
        "projectTree",
        "--export",
        "jobList",
        "--wait",
        "--fetch",
        "exports",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    let reference = out.lines().next().unwrap().trim().to_string();
    assert!(reference.starts_with("octoplant:"), "{out}");
    let id = reference.trim_start_matches("octoplant:");
    let zip_path = cli.path().join(format!("exports/export-{id}.zip"));
    assert!(zip_path.exists(), "{out}\n{err}");

    let job = cli.json(&["status", &reference]);
    assert_eq!(job["state"], "succeeded");
    assert_eq!(job["native_state"], "STATE_SUCCEEDED");
    assert_eq!(job["name"], "nightly");
    assert_eq!(job["progress"], 1.0);
    assert!(job["created_at"].is_string());

    let arts = cli.json(&["fetch", &reference, "--dest", "again"]);
    let text = arts.to_string();
    for entry in ["contents.json", "jobList.csv", "projectTree.json"] {
        assert!(text.contains(entry), "{text}");
    }
    assert!(cli.path().join(format!("again/export-{id}.zip")).exists());

    let listed = cli.json(&["-b", "octoplant", "list"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["ref"], reference.as_str());
    assert_eq!(listed[0]["state"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_exit_codes_follow_the_contract() {
    let sim = start(SimConfig {
        job_duration: Duration::from_secs(2),
        ..fast()
    });
    let cli = sandbox(&sim);
    // Unknown kind: refused before sending, naming it.
    let (code, _, err) = cli.run(&["-b", "octoplant", "submit", "--export", "versions"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("versions"), "{err}");
    assert_eq!(sim.hits("POST /v1/order"), 0);

    // Unknown order: exit 6 with the gRPC name, and the platform code in the JSON error.
    let (code, out, err) = cli.run(&["-o", "json", "status", "octoplant:no-such-order"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("NOT_FOUND"), "{err}");
    let e: Value = serde_json::from_str(&out).unwrap_or_else(|_| panic!("{out}"));
    assert_eq!(e["error"]["code"], "5");
    assert_eq!(e["error"]["backend"], "octoplant");

    // Fetch before the export is ready: exit 6 naming the state.
    let (_, out, _) = cli.run(&[
        "-b",
        "octoplant",
        "-o",
        "quiet",
        "submit",
        "--export",
        "jobResults",
    ]);
    let reference = out.trim().to_string();
    let (code, _, err) = cli.run(&["fetch", &reference]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("STATE_"), "{err}");

    // abort, then wait: exit 5 (canceled).
    let (code, _, err) = cli.run(&["abort", &reference]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli.run(&["wait", &reference, "--timeout", "20s"]);
    assert_eq!(code, 5, "{err}");

    // Refused password: exit 4.
    let wrong = sandbox(&sim).var("OCTOPLANT_PASSWORD", "definitely-wrong");
    let (code, _, err) = wrong.run(&["-vvv", "status", &reference]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("invalid_grant"), "{err}");
    assert!(!err.contains("definitely-wrong"), "{err}");

    let (code, out, err) = cli.run(&["doctor", "octoplant"]);
    assert_eq!(code, 0, "{out}\n{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_trusts_a_self_signed_server_only_when_told() {
    let sim = start(SimConfig {
        tls: true,
        ..fast()
    });
    let plain = sandbox(&sim);
    let (code, _, err) = plain.run(&["status", "octoplant:x"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("TLS") && err.contains("certificate"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, sim.cert_pem.as_deref().unwrap()).unwrap();
    let trusted = sandbox(&sim).var("OCTOPLANT_CA_CERT", pem.to_str().unwrap());
    let (code, out, err) = trusted.run(&[
        "-b",
        "octoplant",
        "submit",
        "--opt",
        r#"exports={"assetState":{"infoType":"MODULE"}}"#,
        "--wait",
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!err.contains("warning"), "{err}");

    let insecure = sandbox(&sim).var("OCTOPLANT_INSECURE", "1");
    let (code, _, err) = insecure.run(&["status", "octoplant:x"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("verification is disabled"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_gives_exit_7_when_the_server_stays_unavailable() {
    let sim = start(SimConfig {
        error_rate: 1.0,
        ..fast()
    });
    let (code, _, err) = sandbox(&sim).run(&["status", "octoplant:x"]);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("503"), "{err}");
}
