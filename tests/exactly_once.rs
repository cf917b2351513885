//! Exactly once across faults and crashes: every job of a batch exists exactly once on the
//! platform after a faulty run and a re-run, or after runs killed with SIGKILL — counted by the
//! simulator itself (`GET /_sim/jobs`), never by jobctl.

mod common;

use common::{Sandbox, Sim, sim};
use jobctl_sim::{Faults, SimConfig};
use serde_json::{Value, json};
use std::time::Duration;

/// Long jobs: nothing ends (and leaves a list) while a test runs.
fn config() -> SimConfig {
    SimConfig {
        queue_duration: Duration::from_secs(60),
        job_duration: Duration::from_secs(600),
        ..SimConfig::default()
    }
}

fn write_batch(sb: &Sandbox, n: usize, line: impl Fn(usize) -> Value) -> String {
    let text: String = (1..=n).map(|i| format!("{}\n", line(i))).collect();
    let path = sb.path().join("jobs.jsonl");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

fn created(sim: &Sim, platform: &str) -> (u64, Vec<Value>) {
    let report = sim.state.jobs_report();
    let n = report["per_platform"][platform].as_u64().unwrap_or(0);
    let dups = report["duplicates"].as_array().cloned().unwrap_or_default();
    (n, dups)
}

fn rows(out: &str) -> Vec<Value> {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("one JSON array expected ({e}): {out}"))
}

fn outcomes(rows: &[Value]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in rows {
        *m.entry(r["outcome"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

/// 503s, connections dropped before and after the job was created, garbage answers.
fn chaos() -> Faults {
    Faults {
        error_rate: 0.2,
        drop_rate: 0.05,
        drop_after_create_rate: 0.05,
        garbage_rate: 0.03,
        ..Faults::default()
    }
}

/// A faulty run, then a clean re-run: exactly `N` jobs, none twice, every line known.
fn faulty_run_then_rerun(platform: &str, line: impl Fn(usize) -> Value) {
    const N: usize = 300;
    let sim = sim(config());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "3s");
    let file = write_batch(&sb, N, line);
    sim.set_faults(chaos());
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file, "--concurrency", "16"]);
    let first = rows(&out);
    assert_eq!(first.len(), N, "every line is reported: {err}");
    let lines: Vec<u64> = first.iter().map(|r| r["line"].as_u64().unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "line order");
    let o = outcomes(&first);
    assert!(
        o.get("unknown").copied().unwrap_or(0) > 0,
        "the faults left some outcomes unknown: {o:?}"
    );
    assert_ne!(code, 0, "a batch with unknown outcomes does not succeed");
    for r in first.iter().filter(|r| r["outcome"] == "unknown") {
        assert!(
            r["ref"].is_null() && r["error"]["message"].is_string(),
            "{r}"
        );
    }
    let (made, dups) = created(&sim, platform);
    assert!(made <= N as u64, "{made} jobs after the faulty run");
    assert!(dups.is_empty(), "{dups:?}");

    sim.set_faults(Faults::default());
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file, "--concurrency", "16"]);
    let second = rows(&out);
    let o = outcomes(&second);
    let bad: Vec<&Value> = second
        .iter()
        .filter(|r| !r["error"].is_null())
        .take(3)
        .collect();
    assert_eq!(code, 0, "{o:?} {bad:?} {err}");
    assert!(
        second.iter().all(|r| r["ref"].is_string()),
        "every line has its job: {o:?}"
    );
    assert!(
        o.get("reconciled").copied().unwrap_or(0) > 0,
        "jobs created behind a lost answer are adopted: {o:?}"
    );
    let (made, dups) = created(&sim, platform);
    assert_eq!(made, N as u64, "exactly one job per line");
    assert!(dups.is_empty(), "{dups:?}");
    let refs: std::collections::BTreeSet<&str> =
        second.iter().filter_map(|r| r["ref"].as_str()).collect();
    assert_eq!(refs.len(), N, "one distinct job per line");

    // A third run submits nothing and says so.
    let (code, _, err) = sb.run(&["batch", &file]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("already submitted in an earlier run"), "{err}");
    assert_eq!(created(&sim, platform).0, N as u64);
}

#[test]
fn slurm_batch_under_faults_creates_every_job_once() {
    faulty_run_then_rerun(
        "slurm",
        |i| json!({"profile": "slurm", "name": format!("job-{i}"), "command": [format!("echo {i}")]}),
    );
}

#[test]
fn cloudpss_batch_under_faults_creates_every_job_once() {
    faulty_run_then_rerun("cloudpss", |i| {
        json!({"profile": "cloudpss", "args": {"i": i},
               "options": {"function": "function/CloudPSS/hello"}})
    });
}

#[test]
fn ac_batch_under_faults_creates_every_job_once() {
    faulty_run_then_rerun(
        "ac",
        |i| json!({"profile": "ac", "name": format!("job-{i}"), "command": [format!("echo {i}")]}),
    );
}

/// On a platform that cannot be searched by key, unknown outcomes are reported (exit 7, with
/// their keys) and sent again only with `--resubmit-unknown`.
fn unsearchable_unknowns_are_reported_not_resent(platform: &str, line: impl Fn(usize) -> Value) {
    const N: usize = 60;
    let sim = sim(config());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "3s");
    let file = write_batch(&sb, N, line);
    sim.set_faults(Faults {
        drop_after_create_rate: 0.2,
        ..Faults::default()
    });
    let (_, out, err) = sb.run(&["-o", "json", "batch", &file, "--concurrency", "8"]);
    let unknown = outcomes(&rows(&out)).get("unknown").copied().unwrap_or(0);
    assert!(unknown > 0, "{out} {err}");
    let made = created(&sim, platform).0;
    assert_eq!(
        made, N as u64,
        "every order was created once, answered or not"
    );

    // The platform cannot be searched by key: the re-run reports them, with their keys, exit 7.
    sim.set_faults(Faults::default());
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file]);
    assert_eq!(code, 7, "{err}");
    let again = rows(&out);
    let still: Vec<&Value> = again.iter().filter(|r| r["outcome"] == "unknown").collect();
    assert_eq!(still.len(), unknown);
    assert!(still.iter().all(|r| r["key"].is_string()));
    let message = still[0]["error"]["message"].as_str().unwrap();
    assert!(message.contains("--resubmit-unknown"), "{message}");
    assert_eq!(created(&sim, platform).0, N as u64, "nothing doubled");

    // Asked explicitly, they are sent again.
    let (code, _, err) = sb.run(&["batch", &file, "--resubmit-unknown"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(created(&sim, platform).0, (N + unknown) as u64);
}

#[test]
fn octoplant_unknown_outcomes_are_reported_not_resent() {
    unsearchable_unknowns_are_reported_not_resent("octoplant", |i| {
        json!({"profile": "octoplant", "name": format!("o-{i}"),
               "options": {"exports": {"projectTree": {}}}})
    });
}

#[test]
fn nebula_unknown_outcomes_are_reported_not_resent() {
    unsearchable_unknowns_are_reported_not_resent("nebula", |i| {
        json!({"profile": "nebula", "options": {"workflow": "4216617528"},
               "args": {"query_1.name": format!("p{i}")}})
    });
}

#[test]
fn local_batch_killed_then_rerun_creates_every_job_once() {
    const N: usize = 60;
    let sb = Sandbox::new();
    let file = write_batch(
        &sb,
        N,
        |i| json!({"name": format!("l-{i}"), "command": ["true"]}),
    );
    for delay in [150u64, 400, 700] {
        let mut child = sb
            .std_cmd()
            .args(["batch", &file, "--concurrency", "16"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
    }
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file, "--concurrency", "16"]);
    assert_eq!(code, 0, "{err}");
    assert!(rows(&out).iter().all(|r| r["ref"].is_string()), "{out}");
    let jobs: Vec<Value> =
        serde_json::from_str(&sb.run(&["-o", "json", "list", "--all"]).1).unwrap();
    let names: std::collections::BTreeSet<&str> =
        jobs.iter().filter_map(|j| j["name"].as_str()).collect();
    assert_eq!(jobs.len(), N, "exactly one local job per line");
    assert_eq!(names.len(), N);
}

/// Runs jobctl with `args`, sends it Ctrl-C 1.5 s later, checks that it exits 130, and returns
/// its stderr.
fn interrupted(sb: &Sandbox, args: &[&str]) -> String {
    let child = sb
        .std_cmd()
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(130), "{err}");
    err
}

/// The ledger after a clean interrupt: nothing in flight or of unknown outcome, and one
/// `submitted` row per job the platform holds (`made`). Returns its rows.
fn settled_history(sb: &Sandbox, made: u64) -> Vec<Value> {
    let history: Vec<Value> = serde_json::from_str(&sb.run(&["-o", "json", "history"]).1).unwrap();
    let unsettled: Vec<&Value> = history
        .iter()
        .filter(|e| e["status"] != "submitted" && e["status"] != "failed")
        .collect();
    assert!(unsettled.is_empty(), "{unsettled:?}");
    let submitted = history
        .iter()
        .filter(|e| e["status"] == "submitted")
        .count();
    assert_eq!(
        submitted as u64, made,
        "one submitted row per job: {history:?}"
    );
    history
}

#[test]
fn interrupted_batch_exits_130_with_a_hint_and_resumes() {
    const N: usize = 80;
    let sim = sim(config());
    sim.set_faults(Faults {
        latency_ms: (150, 250),
        ..Faults::default()
    });
    let sb = Sandbox::with_sim(&sim);
    let file = write_batch(
        &sb,
        N,
        |i| json!({"profile": "slurm", "name": format!("i-{i}"), "command": [format!("echo {i}")]}),
    );
    let err = interrupted(&sb, &["batch", &file, "--concurrency", "4"]);
    assert!(
        err.contains("run the same command again to resume"),
        "{err}"
    );
    let made = created(&sim, "slurm").0;
    assert!(made < N as u64, "interrupted before the end ({made})");
    // Lines recorded but still waiting for a platform slot were not sent: their keys are
    // free (refused).
    let history = settled_history(&sb, made);
    assert!(
        history.iter().any(|e| e["status"] == "failed"
            && e["error"]
                .as_str()
                .is_some_and(|m| m.contains("interrupted before it was sent"))),
        "lines waiting for a slot at Ctrl-C are recorded as not sent: {history:?}"
    );
    sim.set_faults(Faults::default());
    let (code, _, err) = sb.run(&["batch", &file]);
    assert_eq!(code, 0, "{err}");
    let (made, dups) = created(&sim, "slurm");
    assert_eq!(made, N as u64);
    assert!(dups.is_empty());
}

#[test]
fn interrupted_pipeline_lets_its_submissions_settle_and_resumes() {
    const N: usize = 40;
    let sim = sim(config());
    sim.set_faults(Faults {
        latency_ms: (150, 250),
        ..Faults::default()
    });
    let sb = Sandbox::with_sim(&sim).var("SLURM_POLL_INTERVAL", "1h");
    // `retries` makes the file a pipeline (run with --wait).
    let file = write_batch(
        &sb,
        N,
        |i| json!({"profile": "slurm", "name": format!("p-{i}"), "retries": 1, "command": [format!("echo {i}")]}),
    );
    interrupted(&sb, &["batch", &file, "--wait", "--concurrency", "4"]);
    let made = created(&sim, "slurm").0;
    assert!(made < N as u64, "interrupted before the end ({made})");
    // The submissions at the platform at Ctrl-C were answered and recorded; the lines waiting
    // for a slot were not sent.
    settled_history(&sb, made);
    sim.set_faults(Faults::default());
    let (_, _, err) = sb.run(&["batch", &file, "--wait", "--timeout", "2s"]);
    let (made, dups) = created(&sim, "slurm");
    assert_eq!(made, N as u64, "{err}");
    assert!(dups.is_empty(), "{dups:?}");
}

#[test]
fn wait_from_reads_the_ndjson_of_batch() {
    let sb = Sandbox::new();
    let file = write_batch(
        &sb,
        3,
        |i| json!({"command": ["sh", "-c", format!("exit {}", i / 3)]}),
    );
    let (_, out, _) = sb.run(&["-o", "ndjson", "batch", &file]);
    let events = sb.path().join("events.ndjson");
    std::fs::write(&events, &out).unwrap();
    let (code, out, err) = sb.run(&["-o", "json", "wait", "--from", events.to_str().unwrap()]);
    assert_eq!(code, 1, "line 3 fails: {err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["jobs"].as_array().unwrap().len(), 3, "{out}");
    let plain = sb.path().join("refs.txt");
    std::fs::write(&plain, "local:1\nlocal:2\n").unwrap();
    assert_eq!(sb.run(&["wait", "--from", plain.to_str().unwrap()]).0, 0);
}

/// A number in `0..n`, different every call (no extra dependency).
fn random_below(n: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    u64::from(nanos) % n.max(1)
}

/// Runs `batch` over `n` lines, killing it with SIGKILL at three random moments, against the
/// simulator with latency on every request; no job is ever created twice meanwhile. Returns
/// the simulator, the sandbox and the batch file for the re-runs.
fn killed_three_times(
    platform: &str,
    n: usize,
    line: impl Fn(usize) -> Value,
) -> (Sim, Sandbox, String) {
    let sim = sim(config());
    sim.set_faults(Faults {
        latency_ms: (10, 60),
        ..Faults::default()
    });
    let sb = Sandbox::with_sim(&sim);
    let file = write_batch(&sb, n, line);
    for _ in 0..3 {
        let mut child = sb
            .std_cmd()
            .args(["-o", "ndjson", "batch", &file, "--concurrency", "8"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // A random moment while submissions are under way, however fast this machine is:
        // once the platform has made a random number of new jobs, plus a random instant.
        let target = created(&sim, platform).0 + 1 + random_below(n as u64 / 4);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while created(&sim, platform).0 < target && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::thread::sleep(Duration::from_millis(random_below(40)));
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();
        let dups = created(&sim, platform).1;
        assert!(dups.is_empty(), "{dups:?}");
    }
    (sim, sb, file)
}

/// Re-runs the batch until every line is settled (a re-run right after a kill may find a
/// line still claimed; a few are enough); returns the last run's rows.
fn rerun_until_done(sb: &Sandbox, file: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["-o", "json", "batch", file, "--concurrency", "8"];
    args.extend_from_slice(extra);
    let mut last = (0, String::new(), String::new());
    for _ in 0..3 {
        last = sb.run(&args);
        if last.0 == 0 {
            break;
        }
    }
    let (code, out, err) = last;
    assert_eq!(code, 0, "{err}");
    rows(&out)
}

/// Searchable platforms: after the kills, re-runs settle every line with exactly one job.
fn killed_then_rerun_creates_every_job_once(platform: &str, line: impl Fn(usize) -> Value) {
    const N: usize = 80;
    let (sim, sb, file) = killed_three_times(platform, N, line);
    let rows = rerun_until_done(&sb, &file, &[]);
    assert_eq!(rows.len(), N);
    assert!(
        rows.iter().all(|r| r["ref"].is_string()),
        "every line's outcome is known: {rows:?}"
    );
    let refs: std::collections::BTreeSet<&str> =
        rows.iter().filter_map(|r| r["ref"].as_str()).collect();
    assert_eq!(refs.len(), N, "one distinct job per line");
    let (made, dups) = created(&sim, platform);
    assert_eq!(made, N as u64, "exactly one job per line");
    assert!(dups.is_empty(), "{dups:?}");
}

#[test]
fn batch_killed_at_random_moments_then_rerun_creates_every_job_once() {
    killed_then_rerun_creates_every_job_once(
        "slurm",
        |i| json!({"profile": "slurm", "name": format!("k-{i}"), "command": [format!("echo {i}")]}),
    );
}

#[test]
fn ac_batch_killed_at_random_moments_then_rerun_creates_every_job_once() {
    killed_then_rerun_creates_every_job_once(
        "ac",
        |i| json!({"profile": "ac", "name": format!("k-{i}"), "command": [format!("echo {i}")]}),
    );
}

#[test]
fn cloudpss_batch_killed_at_random_moments_then_rerun_creates_every_job_once() {
    killed_then_rerun_creates_every_job_once("cloudpss", |i| {
        json!({"profile": "cloudpss", "args": {"i": i},
               "options": {"function": "function/CloudPSS/hello"}})
    });
}

/// Platforms whose jobs carry no key: after the kills, no job is doubled; each line is known
/// or reported unknown with its key (exit 7). The jobs the platform holds beyond the known
/// lines (created by a killed process before it read the answer) are among the unknown ones,
/// and `--resubmit-unknown` sends exactly the unknown lines once more.
fn killed_then_unknowns_reported(platform: &str, line: impl Fn(usize) -> Value) {
    const N: usize = 60;
    let (sim, sb, file) = killed_three_times(platform, N, line);
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file, "--concurrency", "8"]);
    let rows = rows(&out);
    assert_eq!(rows.len(), N, "{err}");
    let unknown = rows.iter().filter(|r| r["outcome"] == "unknown").count() as u64;
    for r in &rows {
        assert!(
            r["ref"].is_string() || (r["outcome"] == "unknown" && r["key"].is_string()),
            "known, or unknown with its key: {r}"
        );
    }
    assert_eq!(code, if unknown == 0 { 0 } else { 7 }, "{err}");
    let known = N as u64 - unknown;
    let (made, dups) = created(&sim, platform);
    assert!(dups.is_empty(), "{dups:?}");
    assert!(
        (known..=N as u64).contains(&made),
        "{made} jobs for {known} known and {unknown} unknown lines"
    );
    let rows = rerun_until_done(&sb, &file, &["--resubmit-unknown"]);
    assert!(rows.iter().all(|r| r["ref"].is_string()));
    assert_eq!(
        created(&sim, platform).0,
        made + unknown,
        "the unknown lines, and only they, are sent again"
    );
}

#[test]
fn nebula_batch_killed_at_random_moments_never_doubles_a_job() {
    killed_then_unknowns_reported("nebula", |i| {
        json!({"profile": "nebula", "options": {"workflow": "4216617528"},
               "args": {"query_1.name": format!("p{i}")}})
    });
}

#[test]
fn octoplant_batch_killed_at_random_moments_never_doubles_a_job() {
    killed_then_unknowns_reported("octoplant", |i| {
        json!({"profile": "octoplant", "name": format!("o-{i}"),
               "options": {"exports": {"jobResults": {"lastXDays": i}}}})
    });
}

#[test]
fn submit_key_reconciles_a_lost_answer_instead_of_sending_twice() {
    let sim = sim(config());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "2s");
    sim.set_faults(Faults {
        drop_after_create_rate: 1.0,
        ..Faults::default()
    });
    let args = [
        "-b", "slurm", "submit", "--key", "k1", "--name", "x", "--", "echo hi",
    ];
    let (code, _, err) = sb.run(&args);
    assert_eq!(code, 7, "{err}");
    assert!(err.contains("unknown") && err.contains("k1"), "{err}");
    assert_eq!(created(&sim, "slurm").0, 1);
    sim.set_faults(Faults::default());
    let (code, out, err) = sb.run(&args);
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("slurm:"), "{out}");
    assert_eq!(created(&sim, "slurm").0, 1, "adopted, not sent again");
    let (_, hist, _) = sb.run(&["-o", "json", "history"]);
    let hist: Vec<Value> = serde_json::from_str(&hist).unwrap();
    assert_eq!(hist[0]["status"], "submitted");
    assert_eq!(hist[0]["ref"], out.trim());
}

#[test]
fn batch_json_lists_failed_lines_in_order_with_their_final_job() {
    let sb = Sandbox::new();
    let file = write_batch(&sb, 2, |i| match i {
        2 => json!({"command": ["sh", "-c", "exit 3"]}),
        _ => json!({"command": ["true"]}),
    });
    let (code, out, _) = sb.run(&["-o", "json", "batch", &file, "--wait"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let arr = v.as_array().expect("one array, no wrapper object");
    assert_eq!(arr.len(), 2);
    assert_eq!(arr[0]["job"]["state"], "succeeded");
    assert_eq!(arr[1]["job"]["state"], "failed");
    assert_eq!(code, 1);
    assert!(arr.iter().all(|r| r.get("job").is_some()));
    assert!(v.get("exit_code").is_none());
}

#[test]
fn new_run_submits_again_with_fresh_keys() {
    let sb = Sandbox::new();
    let file = write_batch(&sb, 2, |_| json!({"command": ["true"]}));
    assert_eq!(sb.run(&["batch", &file]).0, 0);
    let (_, out, _) = sb.run(&["-o", "json", "batch", &file]);
    assert!(rows(&out).iter().all(|r| r["outcome"] == "skipped"));
    let (code, out, _) = sb.run(&["-o", "json", "batch", &file, "--new-run"]);
    assert_eq!(code, 0);
    let again = rows(&out);
    assert!(again.iter().all(|r| r["outcome"] == "submitted"), "{out}");
    let (_, hist, _) = sb.run(&["-o", "json", "history"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&hist).unwrap().len(), 4);
}

/// Nebula runs carry no key: a lost run is sent again only when its workflow shows no job
/// created around its send time that the ledger does not account for.
#[test]
fn nebula_resends_a_lost_run_only_when_no_unaccounted_job_was_created_around_it() {
    const WF: &str = "4216617528";
    let sim = sim(config());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "1s");
    let submit = |key: &str| {
        let args = [
            "-b",
            "nebula",
            "submit",
            "--key",
            key,
            "--workflow",
            WF,
            "--arg",
        ];
        let mut args = args.to_vec();
        let name = format!("query_1.name={key}");
        args.push(&name);
        sb.run(&args)
    };
    // Jobs of this ledger in the window do not count: they are other submissions' jobs.
    let file = write_batch(
        &sb,
        3,
        |i| json!({"profile": "nebula", "options": {"workflow": WF}, "args": {"query_1.name": format!("b{i}")}}),
    );
    assert_eq!(sb.run(&["batch", &file]).0, 0);

    // Lost before the Explorer handled it: nothing was created, so the re-run sends it.
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    let (code, _, err) = submit("k1");
    assert_eq!(code, 7, "{err}");
    assert_eq!(created(&sim, "nebula").0, 3);
    sim.set_faults(Faults::default());
    let (code, out, err) = submit("k1");
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("nebula:"), "{out}");
    assert_eq!(created(&sim, "nebula").0, 4, "sent once more");

    // Lost again, and meanwhile someone else ran the workflow: that job could be this one.
    sim.set_faults(Faults {
        drop_rate: 1.0,
        ..Faults::default()
    });
    assert_eq!(submit("k2").0, 7);
    sim.set_faults(Faults::default());
    let other = Sandbox::with_sim(&sim);
    let (code, theirs, err) =
        other.run(&["-b", "nebula", "-o", "quiet", "submit", "--workflow", WF]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = submit("k2");
    assert_eq!(code, 7, "undecided, not guessed: {err}");
    assert!(err.contains("k2") && err.contains(theirs.trim()), "{err}");
    assert!(err.contains("--resubmit-unknown"), "{err}");
    assert_eq!(created(&sim, "nebula").0, 5, "nothing sent");
    let (_, hist, _) = sb.run(&["-o", "json", "history"]);
    let hist: Vec<Value> = serde_json::from_str(&hist).unwrap();
    assert_eq!(hist[0]["status"], "unknown");
}

/// A re-run settling many lost answers lists the platform about once, not once per line: it
/// costs about what one `list --all` costs, however many lines it settles.
fn settling_many_lines_lists_once(platform: &str, line: impl Fn(usize) -> Value) {
    const N: usize = 80;
    let sim = sim(config());
    let sb = Sandbox::with_sim(&sim).var("JOBCTL_RETRY_BUDGET", "2s");
    let file = write_batch(&sb, N, line);
    sim.set_faults(Faults {
        drop_after_create_rate: 0.5,
        ..Faults::default()
    });
    let (_, out, err) = sb.run(&["-o", "json", "batch", &file, "--concurrency", "8"]);
    let unknown = outcomes(&rows(&out)).get("unknown").copied().unwrap_or(0) as u64;
    assert!(unknown >= 10, "{unknown} unknown lines: {err}");
    sim.set_faults(Faults::default());

    let before = sim.total();
    let (code, out, err) = sb.run(&["-o", "json", "batch", &file]);
    let rerun = sim.total() - before;
    let o = outcomes(&rows(&out));
    if platform == "nebula" {
        // Every lost run's job exists and carries no key: all stay unknown, none is sent.
        assert_eq!(o.get("unknown").copied(), Some(unknown as usize), "{err}");
    } else {
        assert_eq!(code, 0, "{err}");
        assert_eq!(
            o.get("reconciled").copied(),
            Some(unknown as usize),
            "{o:?}"
        );
    }
    assert_eq!(created(&sim, platform).0, N as u64);

    let before = sim.total();
    let mut list = vec!["-b", platform, "-o", "json", "list", "--all"];
    if platform == "nebula" {
        list.extend(["--opt", "workflow=4216617528"]);
    }
    let (code, _, err) = sb.run(&list);
    assert_eq!(code, 0, "{err}");
    let one_listing = sim.total() - before;
    assert!(
        rerun <= one_listing + 2 && rerun < unknown,
        "settling {unknown} lines took {rerun} requests; one listing takes {one_listing}"
    );
}

#[test]
fn slurm_rerun_settles_many_lines_with_one_listing() {
    settling_many_lines_lists_once(
        "slurm",
        |i| json!({"profile": "slurm", "name": format!("m-{i}"), "command": [format!("echo {i}")]}),
    );
}

#[test]
fn ac_rerun_settles_many_lines_with_one_listing() {
    settling_many_lines_lists_once(
        "ac",
        |i| json!({"profile": "ac", "name": format!("m-{i}"), "command": [format!("echo {i}")]}),
    );
}

#[test]
fn cloudpss_rerun_settles_many_lines_with_one_listing() {
    settling_many_lines_lists_once("cloudpss", |i| {
        json!({"profile": "cloudpss", "args": {"i": i},
               "options": {"function": "function/CloudPSS/hello"}})
    });
}

#[test]
fn nebula_rerun_settles_many_lines_with_one_listing() {
    settling_many_lines_lists_once("nebula", |i| {
        json!({"profile": "nebula", "options": {"workflow": "4216617528"},
               "args": {"query_1.name": format!("m{i}")}})
    });
}
