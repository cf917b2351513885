//! What a CI script trusts: data passed exactly as given, output contracts, hard deadlines,
//! exit-code classification, references, configuration errors, private state files, logs and
//! help. Each test describes a user-visible promise.

mod common;

use common::Sandbox;
use jobctl_sim::SimConfig;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// What these tests need beyond the shared harness: one-off variables, timing, a config file.
trait SandboxExt {
    /// Runs `jobctl ARGS` with extra variables → (exit code, stdout, stderr).
    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String);
    /// Like [`SandboxExt::run_with`], also measuring how long jobctl took.
    fn timed(&self, env: &[(&str, &str)], args: &[&str]) -> ((i32, String, String), Duration);
    /// Writes a config file and returns its path (for `--config`).
    fn config(&self, text: &str) -> String;
}

impl SandboxExt for Sandbox {
    fn run_with(&self, env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
        let mut c = self.std_cmd();
        c.envs(env.iter().copied()).args(args);
        self.run_cmd(c)
    }
    fn timed(&self, env: &[(&str, &str)], args: &[&str]) -> ((i32, String, String), Duration) {
        let t = Instant::now();
        let r = self.run_with(env, args);
        (r, t.elapsed())
    }
    fn config(&self, text: &str) -> String {
        let p = self.path().join("config.toml");
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }
}

/// A port nothing listens on (connections are refused).
fn refused_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A server that accepts connections and never answers: the worst kind of unreachable.
fn silent_server() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}

/// A server that answers every request with `status` and `body`.
fn fixed_server(status: &'static str, body: &'static str) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let _ = s.read(&mut buf);
                let reply = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(reply.as_bytes());
            });
        }
    });
    port
}

/// A server that answers every request with the raw HTTP `reply` and keeps each request's
/// first line (`GET /path HTTP/1.1`).
fn recording_server(reply: String) -> (u16, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let (reply, record) = (reply.clone(), record.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 16384];
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                let n = s.read(&mut buf).unwrap_or(0);
                let head = String::from_utf8_lossy(&buf[..n]);
                record
                    .lock()
                    .unwrap()
                    .push(head.lines().next().unwrap_or_default().to_string());
                let _ = s.write_all(reply.as_bytes());
            });
        }
    });
    (port, seen)
}

fn slurm_env(port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("SLURM_REST_URL", format!("http://127.0.0.1:{port}")),
        ("SLURM_USER_NAME", "alice".into()),
        ("SLURM_JWT", "not-a-secret-but-treated-as-one".into()),
    ]
}

fn envs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

// ---------------------------------------------------------------------------------------
// Data passed exactly as given

#[test]
fn environment_arguments_arrive_byte_for_byte() {
    let sb = Sandbox::new();
    let r = sb.submit(&[
        "--arg",
        "V=1.10",
        "--arg",
        "F=\"q\"",
        "--arg",
        "Z=-0",
        "--arg",
        "J={\"a\": 1}",
        "--wait",
        "--",
        "sh",
        "-c",
        "printf '%s|%s|%s|%s' \"$V\" \"$F\" \"$Z\" \"$J\"",
    ]);
    let (code, out, err) = sb.run(&["logs", &r]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(out, "1.10|\"q\"|-0|{\"a\": 1}");
    // The ledger keeps the values as typed too.
    let (_, hist, _) = sb.run(&["-o", "json", "history"]);
    let hist: Value = serde_json::from_str(&hist).unwrap();
    assert_eq!(hist[0]["spec"]["args"]["V"], "1.10");
}

#[test]
fn an_environment_variable_given_twice_is_refused() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["submit", "--arg", "A=1", "--arg", "A=2", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("A"), "{err}");
    let (_, hist, _) = sb.run(&["-o", "json", "history"]);
    assert_eq!(hist.trim(), "[]", "nothing may be submitted");
}

#[test]
fn a_key_reused_for_another_spec_is_refused_and_the_same_spec_says_existing() {
    let sb = Sandbox::new();
    let first = sb.submit(&["--key", "nightly", "--", "true"]);
    let (code, out, err) = sb.run(&["submit", "--key", "nightly", "--", "false"]);
    assert_eq!(code, 2, "{out}{err}");
    assert!(err.contains(&first), "must name the earlier job: {err}");
    let (code, out, err) = sb.run(&["-o", "json", "submit", "--key", "nightly", "--", "true"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ref"], first.as_str());
    assert_eq!(v["existing"], true);
    assert!(err.contains(&first) && err.contains("before"), "{err}");
}

#[test]
fn an_empty_command_is_refused_and_a_missing_double_dash_is_hinted() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["submit", "--", ""]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = sb.run(&["submit", "echo", "hi"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("-- echo hi"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Output contracts

#[test]
fn quiet_status_prints_nothing_and_json_errors_carry_their_ref() {
    let sb = Sandbox::new();
    let r = sb.submit(&["--", "true"]);
    let (code, out, _) = sb.run(&["-o", "quiet", "status", &r]);
    assert_eq!(code, 0);
    assert_eq!(out, "");
    let (code, out, _) = sb.run(&["-o", "json", "status", &r, "local:999"]);
    assert_eq!(code, 6);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v[1]["ref"], "local:999", "{v}");
    assert_eq!(v[1]["error"]["kind"], "not_found", "{v}");
}

#[test]
fn an_error_in_an_event_stream_is_an_event_before_the_result() {
    let sb = Sandbox::new();
    let (code, out, _) = sb.run(&["-o", "ndjson", "wait", "local:999"]);
    assert_eq!(code, 6);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.iter().all(|l| l.get("event").is_some()), "{out}");
    let error = lines.iter().find(|l| l["event"] == "error").expect(&out);
    assert_eq!(error["ref"], "local:999");
    assert_eq!(error["error"]["kind"], "not_found");
    assert_eq!(lines.last().unwrap()["event"], "result", "{out}");
    // A reference refused before the first poll is an event too, then the result.
    let (code, out, _) = sb.run(&["-o", "ndjson", "wait", "no:such:profile"]);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["event"], "error", "{out}");
    assert_eq!(lines[1]["event"], "result", "{out}");
    assert_eq!(lines[1]["exit_code"], 2, "{out}");
}

#[test]
fn a_refused_submission_in_a_submit_wait_stream_is_an_event_before_the_result() {
    let sb = Sandbox::new();
    sb.submit(&["--key", "k1", "--", "true"]);
    let (code, out, _) = sb.run(&[
        "-o", "ndjson", "submit", "--wait", "--key", "k1", "--", "false",
    ]);
    assert_eq!(code, 2, "{out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["event"], "error", "{out}");
    assert_eq!(lines[0]["error"]["kind"], "usage", "{out}");
    assert_eq!(lines[1]["event"], "result", "{out}");
    assert_eq!(lines[1]["exit_code"], 2, "{out}");
}

#[test]
fn logout_prints_json_and_says_when_nothing_was_cached() {
    let sb = Sandbox::new();
    let (code, out, err) = sb.run_with(
        &[("CLOUDPSS_GQL_URL", "http://127.0.0.1:9/graphql")],
        &["-o", "json", "logout", "cloudpss"],
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["profile"], "cloudpss");
    assert_eq!(v["had_token"], false);
    assert!(err.contains("no cached token"), "{err}");
}

#[test]
fn login_prints_json() {
    let sim = common::sim(SimConfig::default());
    let sb = Sandbox::with_sim(&sim);
    let (code, out, err) = sb.run(&["-o", "json", "login", "cloudpss"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["logged_in"], true);
    assert_eq!(v["profile"], "cloudpss");
}

// ---------------------------------------------------------------------------------------
// Deadlines and classification

#[test]
fn wait_timeout_is_hard_against_a_platform_that_never_answers() {
    let sb = Sandbox::new();
    let env = slurm_env(silent_server());
    let ((code, _, err), took) = sb.timed(&envs(&env), &["wait", "--timeout", "3s", "slurm:1"]);
    assert_eq!(code, 3, "{err}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after a 3s deadline"
    );
}

#[test]
fn unreachable_timeout_is_hard_too() {
    let sb = Sandbox::new();
    let env = slurm_env(silent_server());
    let ((code, _, err), took) = sb.timed(
        &envs(&env),
        &["wait", "--unreachable-timeout", "3s", "slurm:1"],
    );
    assert_eq!(code, 7, "{err}");
    assert!(
        took < Duration::from_secs(5),
        "exited {took:?} after a 3s deadline"
    );
}

/// A simulator answering every request after `latency`, whose jobs never end.
fn slow_sim(latency: Duration) -> common::Sim {
    common::sim(SimConfig {
        latency: (latency, latency),
        job_duration: Duration::from_secs(3600),
        ..SimConfig::default()
    })
}

#[test]
fn submit_wait_timeout_counts_the_submission_too() {
    // Slurm's version negotiation, the submission and the read of the new job take 2 s each
    // here: 6 s of a 7 s deadline, leaving 1 s for the wait.
    let sim = slow_sim(Duration::from_secs(2));
    let sb = Sandbox::with_sim(&sim);
    let args = [
        "-b",
        "slurm",
        "submit",
        "--wait",
        "--timeout",
        "7s",
        "--",
        "sleep",
        "1",
    ];
    let ((code, out, err), took) = sb.timed(&[], &args);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(out.starts_with("slurm:"), "the reference is printed: {out}");
    assert!(err.contains("timed out after 7s"), "{err}");
    assert!(
        took >= Duration::from_secs(6) && took < Duration::from_millis(8500),
        "exited {took:?} after the start of a 7s deadline"
    );
}

#[test]
fn submit_wait_timeout_cuts_a_submission_still_in_flight() {
    let sim = slow_sim(Duration::from_secs(2));
    let sb = Sandbox::with_sim(&sim);
    let args = [
        "-b",
        "slurm",
        "submit",
        "--key",
        "slow-1",
        "--wait",
        "--timeout",
        "3s",
        "--",
        "sleep",
        "1",
    ];
    let ((code, _, err), took) = sb.timed(&[], &args);
    assert_eq!(code, 3, "{err}");
    assert!(
        took >= Duration::from_millis(2500) && took < Duration::from_millis(4500),
        "exited {took:?} after the start of a 3s deadline"
    );
    assert!(
        err.contains("--timeout reached before the platform answered")
            && err.contains("key 'slow-1'"),
        "{err}"
    );
    // The key is not freed: the ledger keeps the submission as unknown for the next run.
    let history = sb.json(&["history"]);
    assert_eq!(history[0]["key"], "slow-1", "{history}");
    assert_eq!(history[0]["status"], "unknown", "{history}");
}

#[test]
fn submit_wait_flags_are_checked_before_anything_is_sent() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["submit", "--wait", "--timeout", "soon", "--", "true"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--timeout"), "{err}");
    let history = sb.json(&["history"]);
    assert_eq!(history, serde_json::json!([]), "nothing was submitted");
}

#[test]
fn one_shot_commands_give_up_on_a_refused_port_within_five_seconds() {
    let sb = Sandbox::new();
    let env = slurm_env(refused_port());
    for args in [&["status", "slurm:1"][..], &["list"][..]] {
        let mut all = vec!["-b", "slurm"];
        all.extend_from_slice(args);
        let ((code, _, err), took) = sb.timed(&envs(&env), &all);
        assert_eq!(code, 7, "{args:?}: {err}");
        assert!(took < Duration::from_secs(7), "{args:?} took {took:?}");
    }
    // doctor does not retry at all.
    let ((code, out, _), took) = sb.timed(&envs(&env), &["doctor", "slurm"]);
    assert_eq!(code, 7, "{out}");
    assert!(took < Duration::from_secs(3), "doctor took {took:?}");
}

/// Starts `jobctl ARGS` with piped stdout; returns the child and its stdout lines as they come.
fn spawn_lines(
    sb: &Sandbox,
    env: &[(&str, &str)],
    args: &[&str],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::BufRead;
    let mut c = sb.std_cmd();
    c.envs(env.iter().copied())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null());
    let mut child = c.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn doctor_shows_each_check_while_a_later_one_hangs() {
    // The Slurm credentials check needs no network; the reachability check after it meets a
    // server that accepts the connection and never answers.
    let sb = Sandbox::new();
    let env = slurm_env(silent_server());
    for (mode, wanted) in [
        ("table", "ok   credentials"),
        ("ndjson", "\"event\":\"check\""),
    ] {
        let (mut child, lines) = spawn_lines(&sb, &envs(&env), &["-o", mode, "doctor", "slurm"]);
        let mut seen = Vec::new();
        let found = loop {
            match lines.recv_timeout(Duration::from_secs(15)) {
                Ok(l) if l.contains(wanted) => break Some(l),
                Ok(l) => seen.push(l),
                Err(_) => break None,
            }
        };
        let running = child.try_wait().unwrap().is_none();
        let _ = child.kill();
        let _ = child.wait();
        let line = found.unwrap_or_else(|| panic!("{mode}: no credentials check in {seen:?}"));
        assert!(running, "{mode}: doctor had already ended: {line}");
        if mode == "ndjson" {
            let v: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(v["name"], "credentials", "{v}");
            assert_eq!(v["ok"], true, "{v}");
            assert_eq!(v["profile"], "slurm", "{v}");
        } else {
            assert_eq!(seen, ["profile slurm (backend slurm)"]);
            assert!(line.contains("user alice"), "{line}");
        }
    }
}

#[test]
fn doctor_ndjson_ends_with_a_result_and_json_stays_one_document() {
    let sb = Sandbox::new();
    let env = slurm_env(refused_port());
    let (code, out, err) = sb.run_with(&envs(&env), &["-o", "ndjson", "doctor", "slurm"]);
    assert_eq!(code, 7, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["check", "check", "result"], "{out}");
    assert_eq!(events[1]["name"], "reachability");
    assert_eq!(events[1]["ok"], false);
    assert_eq!(events[2]["exit_code"], 7);
    assert_eq!(events[2]["ok"], false);

    let (code, out, err) = sb.run_with(&envs(&env), &["-o", "json", "doctor", "slurm"]);
    assert_eq!(code, 7, "{err}");
    let doc: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["profile"], "slurm");
    assert_eq!(doc["ok"], false);
    assert_eq!(doc["checks"].as_array().map(Vec::len), Some(2), "{doc}");
}

#[test]
fn an_unusable_url_is_a_usage_error_at_once() {
    let sb = Sandbox::new();
    for url in ["ftp://127.0.0.1/x", "http://", "not a url"] {
        let ((code, _, err), took) = sb.timed(
            &[("SLURM_REST_URL", url), ("SLURM_JWT", "x")],
            &["status", "slurm:1"],
        );
        assert_eq!(code, 2, "{url}: {err}");
        assert!(err.contains("URL"), "{url}: {err}");
        assert!(took < Duration::from_secs(3), "{url}: {took:?}");
    }
}

#[test]
fn a_slurm_server_answering_503_is_transient_not_unsupported() {
    let sb = Sandbox::new();
    let mut env = slurm_env(fixed_server("503 Service Unavailable", "busy"));
    env.push(("JOBCTL_RETRY_BUDGET", "200ms".into()));
    let (code, _, err) = sb.run_with(&envs(&env), &["status", "slurm:1"]);
    assert_eq!(code, 7, "{err}");
    assert!(!err.contains("not support"), "{err}");
}

#[test]
fn a_redirect_is_reported_with_its_address_and_not_followed() {
    let sb = Sandbox::new();
    let (elsewhere, reached) = recording_server(
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".into(),
    );
    let (port, _) = recording_server(format!(
        "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://127.0.0.1:{elsewhere}/slurm?token=hush\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    ));
    for args in [
        &["status", "slurm:1"][..],
        &["submit", "-b", "slurm", "--", "true"][..],
    ] {
        let (code, _, err) = sb.run_with(&envs(&slurm_env(port)), args);
        assert_eq!(code, 7, "{args:?}: {err}");
        assert!(
            err.contains(&format!("points to http://127.0.0.1:{elsewhere}/slurm;"))
                && err.contains("url"),
            "{err}"
        );
        assert!(!err.contains("hush"), "{err}");
    }
    assert!(
        reached.lock().unwrap().is_empty(),
        "the redirect was followed"
    );
}

#[test]
fn a_proxy_named_in_the_environment_carries_the_requests() {
    let sb = Sandbox::new();
    let (proxy, seen) = recording_server(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbusy"
            .into(),
    );
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    let mut env = vec![
        // A host this machine cannot resolve: only the proxy can answer for it.
        ("SLURM_REST_URL", "http://slurm.invalid:6820".to_string()),
        ("SLURM_USER_NAME", "alice".into()),
        ("SLURM_JWT", "not-a-secret-but-treated-as-one".into()),
        ("JOBCTL_RETRY_BUDGET", "200ms".into()),
    ];
    env.push(("HTTP_PROXY", proxy_url));
    let (code, _, err) = sb.run_with(&envs(&env), &["status", "slurm:1"]);
    assert_eq!(code, 7, "{err}");
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter()
            .any(|l| l.starts_with("GET http://slurm.invalid:6820/slurm/")),
        "the proxy saw {seen:?}"
    );
}

#[test]
fn missing_credentials_are_usage_errors_naming_that_profiles_keys() {
    let sb = Sandbox::new();
    let cfg = sb.config(
        "[profiles.prod]\nbackend = \"cloudpss\"\nurl = \"http://127.0.0.1:9/graphql\"\nusername = \"alice\"\n",
    );
    let (code, _, err) = sb.run(&["--config", &cfg, "-p", "prod", "status", "prod:abc"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("password_env") && err.contains("[profiles.prod]"),
        "{err}"
    );
    assert!(!err.contains("CLOUDPSS_PASSWORD"), "{err}");
    let (code, _, err) = sb.run_with(
        &[("SLURM_REST_URL", "http://127.0.0.1:9")],
        &["status", "slurm:1"],
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("SLURM_JWT"), "{err}");
}

#[test]
fn an_ac_profile_without_credentials_is_told_its_own_keys() {
    let sb = Sandbox::new();
    let cfg = sb.config(
        "[profiles.hpc1]\nbackend = \"ac\"\nurl = \"http://127.0.0.1:9\"\n\n\
         [profiles.half]\nbackend = \"ac\"\nurl = \"http://127.0.0.1:9\"\nusername = \"alice\"\naccess_key = \"AK1\"\n",
    );
    let (code, _, err) = sb.run(&["--config", &cfg, "status", "hpc1:1"]);
    assert_eq!(code, 2, "{err}");
    for key in [
        "[profiles.hpc1]",
        "`username`",
        "`access_key`",
        "`secret_key_env`",
        "`password_env`",
        "`token_env`",
    ] {
        assert!(err.contains(key), "{key}: {err}");
    }
    assert!(!err.contains("AC_"), "{err}");
    // Half an AK/SK login: the missing key is named as this profile spells it.
    let (code, _, err) = sb.run(&["--config", &cfg, "status", "half:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("(`secret_key_env` is missing)"), "{err}");
    assert!(!err.contains("AC_"), "{err}");
    // The built-in profile keeps naming its variables.
    let (code, _, err) = sb.run_with(&[("AC_URL", "http://127.0.0.1:9")], &["status", "ac:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("AC_ACCESS_KEY") && err.contains("AC_SECRET_KEY") && err.contains("AC_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("[profiles."), "{err}");
}

#[test]
fn a_zero_interval_is_raised_to_the_floor_and_said() {
    let sb = Sandbox::new();
    let r = sb.submit(&["--", "true"]);
    let (code, _, err) = sb.run(&["wait", "--interval", "0", &r]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("100ms"), "{err}");
}

/// A job that ignores SIGTERM, so only the SIGKILL after the grace period ends it.
const STUBBORN: &str = "trap '' TERM; sleep 60 & wait; sleep 60";

#[test]
fn the_grace_period_is_the_aborting_users_and_force_skips_it() {
    let sb = Sandbox::new();
    // Submitted with a long grace; aborted with a short one: the short one applies.
    let (code, out, err) = sb.run_with(
        &[("JOBCTL_LOCAL_GRACE", "1h")],
        &[
            "submit",
            "-o",
            "quiet",
            "--opt",
            "shell=true",
            "--",
            STUBBORN,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let r = out.trim().to_string();
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = sb.run_with(&[("JOBCTL_LOCAL_GRACE", "200ms")], &["abort", &r]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sb.run(&["wait", "--timeout", "15s", &r]);
    assert_eq!(code, 5, "{err}");

    let r = sb.submit(&["--opt", "shell=true", "--", STUBBORN]);
    std::thread::sleep(Duration::from_millis(500));
    let (code, _, err) = sb.run(&["abort", "--force", &r]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = sb.run(&["wait", "--timeout", "5s", &r]);
    assert_eq!(code, 5, "{err}");

    let (code, _, err) = sb.run_with(&[("JOBCTL_LOCAL_GRACE", "soon")], &["abort", &r]);
    assert_eq!(code, 2, "{err}");
}

// ---------------------------------------------------------------------------------------
// References

#[test]
fn bare_ids_are_unique_prefixes_or_an_error_listing_candidates() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(sb.state()).unwrap();
    {
        use jobctl::ledger::{Begin, Ledger};
        use jobctl::model::JobSpec;
        let ledger = Ledger::open(&sb.state()).unwrap();
        for (profile, id, key) in [
            ("local", "4242", "a"),
            ("local", "17", "b"),
            ("slurm", "17", "c"),
        ] {
            let spec = JobSpec {
                key: Some(key.into()),
                ..JobSpec::default()
            };
            let Begin::New(seq) =
                futures::executor::block_on(ledger.begin(profile, profile, &spec)).unwrap()
            else {
                panic!("new key")
            };
            futures::executor::block_on(ledger.complete(seq, id)).unwrap();
        }
    }
    // A unique prefix names the job (which the local store does not have: not found, by id).
    let (code, _, err) = sb.run(&["status", "42"]);
    assert_eq!(code, 6, "{err}");
    assert!(err.contains("4242"), "{err}");
    // The same id in two profiles is ambiguous.
    let (code, _, err) = sb.run(&["status", "17"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("local:17") && err.contains("slurm:17"),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Configuration and files

#[test]
fn misspelled_config_keys_are_errors_naming_the_closest_key() {
    let sb = Sandbox::new();
    let cfg = sb.config(
        "[profiles.hpc1]\nbackend = \"slurm\"\nurl = \"http://127.0.0.1:9\"\ntoken_comand = \"scontrol token\"\n",
    );
    let (code, _, err) = sb.run(&["--config", &cfg, "-p", "hpc1", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("`token_comand`") && err.contains("`token_command`"),
        "{err}"
    );
}

#[test]
fn a_token_command_counts_as_credentials() {
    let sb = Sandbox::new();
    let (code, out, err) = sb.run_with(
        &[
            ("SLURM_REST_URL", "http://127.0.0.1:9"),
            ("SLURM_TOKEN_COMMAND", "echo token"),
        ],
        &["-o", "json", "profiles"],
    );
    assert_eq!(code, 0, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    let slurm = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "slurm")
        .unwrap();
    assert_eq!(slurm["credentials"], true);
}

#[test]
fn unparsable_settings_are_usage_errors() {
    let sb = Sandbox::new();
    let env = slurm_env(refused_port());
    let mut bad = envs(&env);
    bad.push(("JOBCTL_RETRY_BUDGET", "abc"));
    let (code, _, err) = sb.run_with(&bad, &["status", "slurm:1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("JOBCTL_RETRY_BUDGET"), "{err}");
    let cfg = sb.config(
        "[profiles.s]\nbackend = \"slurm\"\nurl = \"http://127.0.0.1:9\"\ntimeout = \"0s\"\n",
    );
    let (code, _, err) = sb.run(&["--config", &cfg, "-p", "s", "list"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("timeout"), "{err}");
}

/// Every path under `dir` whose mode gives anything to group or others.
fn shared_paths(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.permissions().mode() & 0o077 != 0 {
            out.push(format!("{} {:o}", p.display(), meta.permissions().mode()));
        }
        if meta.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

#[test]
fn the_state_directory_is_owner_only_whatever_the_umask() {
    let sb = Sandbox::new();
    let bin = assert_cmd::cargo::cargo_bin("jobctl");
    let script = format!(
        "umask 000; exec '{}' submit --wait -o quiet -- sh -c 'touch made-by-job'",
        bin.display()
    );
    let out = sb.command("sh").arg("-c").arg(&script).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shared = shared_paths(&sb.state());
    assert!(shared.is_empty(), "readable by others: {shared:?}");
    // The job itself runs with the user's umask (000 here), not jobctl's.
    let made = std::fs::metadata(sb.path().join("made-by-job")).unwrap();
    assert_eq!(made.permissions().mode() & 0o777, 0o666);
}

// ---------------------------------------------------------------------------------------
// Logs

#[test]
fn verbose_logs_show_requests_without_secrets_or_colour() {
    let sim = common::sim(SimConfig::default());
    let sb = Sandbox::with_sim(&sim);
    let secrets: Vec<String> = sim
        .env()
        .into_iter()
        .filter(|(k, _)| k.contains("PASSWORD") || k.contains("JWT") || k.contains("TOKEN"))
        .map(|(_, v)| v)
        .filter(|v| v.len() > 3)
        .collect();
    for (level, want) in [
        ("-v", "HTTP POST"),
        ("-vv", "request headers"),
        ("-vvv", "response body"),
    ] {
        // Colour is decided by the terminal here, not by NO_COLOR: stderr is a pipe.
        let mut cmd = sb.std_cmd();
        cmd.env_remove("NO_COLOR")
            .args([level, "-b", "cloudpss", "list"]);
        let (code, _, err) = sb.run_cmd(cmd);
        assert_eq!(code, 0, "{err}");
        assert!(err.contains(want), "{level}: {err}");
        assert!(err.contains("-> 200"), "{level}: {err}");
        assert!(!err.contains('\u{1b}'), "{level}: colour escapes in {err}");
        for s in &secrets {
            assert!(!err.contains(s.as_str()), "{level} leaks a secret");
        }
    }
}

#[test]
fn the_simulators_password_is_not_a_word_of_its_answers() {
    // The harness fails any run whose output contains the simulator's password; CloudPSS
    // answers name the simulator's machine, which must not look like a leak.
    let sim = common::sim(SimConfig::default());
    let sb = Sandbox::with_sim(&sim);
    let (code, out, err) = sb.run(&["doctor", "cloudpss"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("machine jobctl-sim"), "{out}");
    assert_eq!(sim.state.config.password, jobctl_sim::DEFAULT_PASSWORD);
    let env = sim.env();
    let password = env.iter().find(|(k, _)| k == "CLOUDPSS_PASSWORD").unwrap();
    assert_eq!(password.1, jobctl_sim::DEFAULT_PASSWORD);
}

// ---------------------------------------------------------------------------------------
// Help and completions

#[test]
fn completions_hide_internals_and_offer_names() {
    let sb = Sandbox::new();
    let cfg = sb.config("[profiles.nightly-cluster]\nbackend = \"local\"\n");
    let (code, out, _) = sb.run(&["--config", &cfg, "completions", "bash"]);
    assert_eq!(code, 0);
    assert!(!out.contains("__supervise"));
    for word in ["nightly-cluster", "cloudpss", "succeeded", "cancelling"] {
        assert!(out.contains(word), "completions lack {word}");
    }
}

#[test]
fn help_puts_a_commands_own_flags_first_and_shows_defaults_once() {
    let sb = Sandbox::new();
    let (_, out, _) = sb.run(&["fetch", "-h"]);
    assert_eq!(out.matches("[default: .]").count(), 1, "{out}");
    let (_, out, _) = sb.run(&["history", "-h"]);
    assert_eq!(out.matches("[default: 50]").count(), 1, "{out}");
    let (_, out, _) = sb.run(&["submit", "--help"]);
    let own = out.find("--arg").unwrap();
    let global = out.find("Global options").expect(&out);
    assert!(
        own < global && out.find("--profile").unwrap() > global,
        "{out}"
    );
}

#[test]
fn the_insecure_tls_warning_appears_once() {
    let sim = common::sim(SimConfig {
        tls: true,
        ..SimConfig::default()
    });
    let sb = Sandbox::with_sim(&sim).var("SLURM_INSECURE", "1");
    let (code, _, err) = sb.run(&["-b", "slurm", "list"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(err.matches("verification is disabled").count(), 1, "{err}");
}
