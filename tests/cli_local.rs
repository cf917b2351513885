//! End-to-end tests of the jobctl binary with the local backend: exit codes, JSON shapes,
//! the watch event stream, configuration precedence, the ledger under concurrency, and
//! supervisor loss.

mod common;

use common::{Sandbox, assert_job_shape};
use serde_json::Value;
use std::io::{BufRead, BufReader};

use std::process::Stdio;
use std::time::Duration;

#[test]
fn a_newcomer_runs_a_job_with_no_configuration() {
    let sb = Sandbox::new();
    let out = sb
        .cmd()
        .args(["submit", "--wait", "--", "echo", "hello"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("local:1\n"), "{text}");
    assert!(text.contains("succeeded"), "{text}");
    let (code, logs, _) = sb.run(&["logs", "local:1"]);
    assert_eq!((code, logs.as_str()), (0, "hello\n"));
}

#[test]
fn wait_exit_codes_follow_the_contract() {
    let sb = Sandbox::new();
    let ok = sb.submit(&["--", "true"]);
    let bad = sb.submit(&["--", "sh", "-c", "exit 3"]);
    assert_eq!(sb.run(&["wait", &ok]).0, 0);
    assert_eq!(sb.run(&["wait", &bad]).0, 1);
    assert_eq!(sb.run(&["wait", &ok, &bad]).0, 1);
    let j = sb.status_json(&bad);
    assert_eq!(j["exit_code"], 3);
    assert_eq!(j["state"], "failed");

    let slow = sb.submit(&["--", "sleep", "30"]);
    let (code, _, err) = sb.run(&["wait", "--timeout", "500ms", &slow]);
    assert_eq!(code, 3, "{err}");
    // Failed wins over timeout.
    assert_eq!(sb.run(&["wait", "--timeout", "500ms", &slow, &bad]).0, 1);
    assert_eq!(sb.run(&["abort", &slow]).0, 0);
    let (code, _, _) = sb.run(&["wait", &slow]);
    assert_eq!(code, 5);
    let j = sb.status_json(&slow);
    assert_eq!(j["state"], "canceled");
    assert_eq!(j["terminal"], true);
    // Aborting a finished job is fine and says so.
    let (code, _, err) = sb.run(&["abort", &ok]);
    assert_eq!(code, 0);
    assert!(err.contains("already finished"), "{err}");
    // Canceled wins over timeout, failed over canceled.
    assert_eq!(sb.run(&["wait", &slow, &ok]).0, 5);
    assert_eq!(sb.run(&["wait", &slow, &bad]).0, 1);
    // --any returns with the first finished job's code.
    let slow2 = sb.submit(&["--", "sleep", "30"]);
    assert_eq!(sb.run(&["wait", "--any", &slow2, &ok]).0, 0);
    assert_eq!(sb.run(&["wait", "--fail-fast", &slow2, &bad]).0, 1);
    sb.run(&["abort", &slow2]);
}

#[test]
fn usage_not_found_and_unsupported_errors_have_their_codes() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["status", "local:424242"]);
    assert_eq!(code, 6);
    assert!(err.contains("424242"), "{err}");
    assert_eq!(sb.run(&["logs", "local:424242"]).0, 6);
    let (code, _, err) = sb.run(&["login"]);
    assert_eq!(code, 8);
    assert!(err.contains("does not support login"), "{err}");
    let (code, _, err) = sb.run(&["submit", "--opt", "colour=red", "--", "true"]);
    assert_eq!(code, 2);
    assert!(err.contains("colour"), "{err}");
    let (code, _, err) = sb.run(&["submit"]);
    assert_eq!(code, 2);
    assert!(err.contains("needs a command"), "{err}");
    assert_eq!(sb.run(&["status", "bad ref"]).0, 2);
    assert_eq!(sb.run(&["watch", "--timeout", "soon", "local:1"]).0, 2);
    assert_eq!(sb.run(&["-p", "nope", "list"]).0, 2);
    assert_eq!(sb.run(&["--no-such-flag"]).0, 2);
    // Nothing was submitted by the refused specs.
    let (_, out, _) = sb.run(&["-o", "json", "history"]);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        Value::Array(vec![])
    );
}

#[test]
fn spec_parsing_errors_name_the_field() {
    let sb = Sandbox::new();
    let (code, _, err) = sb.run(&["submit", "--arg", "novalue", "--", "true"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("KEY=VALUE") && err.contains("novalue"),
        "{err}"
    );
    std::fs::write(sb.path().join("bad.json"), "{\"comand\": [\"true\"]}").unwrap();
    let (code, _, err) = sb.run(&["submit", "--spec", "bad.json"]);
    assert_eq!(code, 2);
    assert!(err.contains("comand"), "{err}");
    std::fs::write(sb.path().join("broken.json"), "{").unwrap();
    assert_eq!(sb.run(&["submit", "--spec", "broken.json"]).0, 2);
    let (code, _, err) = sb.run(&["submit", "--opt", "shell=true", "--", "echo", "a"]);
    assert_eq!(code, 2);
    assert!(err.contains("shell"), "{err}");
    // A good spec file works, and flags override it; JSON values are parsed.
    std::fs::write(
        sb.path().join("good.json"),
        r#"{"name":"from-spec","command":["sh","-c","echo $N-$M"],"args":{"N":1}}"#,
    )
    .unwrap();
    let r = sb.submit(&["--spec", "good.json", "--name", "from-flag", "--arg", "M=x"]);
    assert_eq!(sb.run(&["wait", &r]).0, 0);
    assert_eq!(sb.run(&["logs", &r]).1, "1-x\n");
    assert_eq!(sb.status_json(&r)["name"], "from-flag");
}

#[test]
fn status_list_and_history_json_shapes() {
    let sb = Sandbox::new();
    let a = sb.submit(&["--name", "first", "--", "true"]);
    let b = sb.submit(&["--key", "k-b", "--", "sh", "-c", "exit 2"]);
    sb.run(&["wait", &a, &b]);
    let one = sb.status_json(&a);
    assert_job_shape(&one);
    assert_eq!(one["ref"], a.as_str());
    assert_eq!(one["name"], "first");
    assert_eq!(one["state"], "succeeded");
    assert_eq!(one["native_state"], "succeeded");
    assert!(one["created_at"].as_str().unwrap().ends_with('Z'));

    let (code, out, _) = sb.run(&["-o", "json", "status", &a, &b, "local:999"]);
    assert_eq!(code, 6, "status exits with the worst failure");
    let arr: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(arr.len(), 3);
    assert_job_shape(&arr[1]);
    assert_eq!(arr[2]["error"]["kind"], "not_found");
    assert_eq!(arr[2]["error"]["profile"], "local");

    let (_, out, _) = sb.run(&["-o", "json", "list"]);
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0]["ref"], b.as_str(), "newest first");
    list.iter().for_each(assert_job_shape);
    let (_, out, _) = sb.run(&["-o", "json", "list", "--state", "failed"]);
    let list: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["exit_code"], 2);
    let (_, out, _) = sb.run(&["-o", "ndjson", "list", "--limit", "1"]);
    assert_eq!(out.lines().count(), 1);

    let (_, out, _) = sb.run(&["-o", "json", "history"]);
    let hist: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(hist.len(), 2);
    for k in ["ref", "profile", "backend", "key", "name", "submitted_at"] {
        assert!(hist[0].get(k).is_some(), "history lacks {k}");
    }
    assert_eq!(hist[0]["key"], "k-b");
    assert_eq!(hist[1]["name"], "first");
    let (_, out, _) = sb.run(&["-o", "quiet", "history"]);
    assert_eq!(out, format!("{b}\n{a}\n"));
}

#[test]
fn watch_streams_ndjson_events_ending_with_one_result() {
    let sb = Sandbox::new();
    let r = sb.submit(&["--", "sh", "-c", "sleep 1; exit 4"]);
    let (code, out, _) = sb.run(&["-o", "ndjson", "watch", "--interval", "100ms", &r]);
    assert_eq!(code, 1);
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() >= 2, "{out}");
    assert_eq!(events[0]["event"], "state");
    assert_eq!(events[0]["ref"], r.as_str());
    let results: Vec<&Value> = events.iter().filter(|e| e["event"] == "result").collect();
    assert_eq!(results.len(), 1);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["exit_code"], 1);
    assert_eq!(last["jobs"][0]["exit_code"], 4);
    let states: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "state")
        .map(|e| e["state"].as_str().unwrap())
        .collect();
    assert_eq!(*states.last().unwrap(), "failed");
    for e in events.iter().filter(|e| e["event"] == "state") {
        assert_job_shape(&e["job"]);
    }
    // submit --wait announces the submission first.
    let (code, out, _) = sb.run(&["-o", "ndjson", "submit", "--wait", "--", "true"]);
    assert_eq!(code, 0);
    let first: Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["event"], "submitted");
    let last: Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["exit_code"], 0);
    // quiet prints nothing for watch.
    let (code, out, _) = sb.run(&["-o", "quiet", "wait", &r]);
    assert_eq!((code, out.as_str()), (1, ""));
}

#[test]
fn ctrl_c_exits_130_and_leaves_the_job_running() {
    let sb = Sandbox::new();
    let r = sb.submit(&["--", "sleep", "30"]);
    let mut child = sb
        .std_cmd()
        .args(["-o", "ndjson", "watch", &r])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    assert!(first.contains("\"state\""), "{first}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    let last: Value = serde_json::from_str(rest.last().unwrap()).unwrap();
    assert_eq!(last["event"], "result");
    assert_eq!(last["exit_code"], 130);
    assert_eq!(sb.status_json(&r)["state"], "running");
    sb.run(&["abort", &r]);
}

#[test]
fn config_precedence_flags_env_dotenv_file() {
    let sb = Sandbox::new();
    let cfg = sb.path().join("config.toml");
    std::fs::write(
        &cfg,
        "default_profile = \"mine\"\n[profiles.mine]\nbackend = \"local\"\n[profiles.other]\nbackend = \"local\"\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap().to_string();
    // Config file: default_profile.
    let r = sb.submit(&["--config", &cfg, "--", "true"]);
    assert!(r.starts_with("mine:"), "{r}");
    // .env beats the config file.
    std::fs::write(
        sb.path().join(".env"),
        "JOBCTL_PROFILE=other\nJOBCTL_OUTPUT=quiet\n",
    )
    .unwrap();
    let (_, out, _) = sb.run(&["--config", &cfg, "submit", "--", "true"]);
    assert!(out.trim().starts_with("other:"), "{out}");
    // The process environment beats .env.
    let out = sb
        .cmd()
        .env("JOBCTL_PROFILE", "mine")
        .args(["--config", &cfg, "submit", "--", "true"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("mine:"));
    // Flags beat everything.
    let (_, out, _) = sb.run(&[
        "--config", &cfg, "-p", "local", "-o", "json", "submit", "--", "true",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["profile"], "local");
    // --env-file names another file; a missing one is an error.
    std::fs::write(sb.path().join("alt.env"), "JOBCTL_OUTPUT=json\n").unwrap();
    let (_, out, _) = sb.run(&["--env-file", "alt.env", "history", "--limit", "1"]);
    assert!(serde_json::from_str::<Value>(&out).is_ok(), "{out}");
    assert_eq!(sb.run(&["--env-file", "missing.env", "history"]).0, 2);
    // Secrets inline in the config file are refused.
    std::fs::write(
        sb.path().join("bad.toml"),
        "[profiles.x]\nbackend = \"cloudpss\"\npassword = \"oops\"\n",
    )
    .unwrap();
    let (code, _, err) = sb.run(&["--config", "bad.toml", "-p", "x", "profiles"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("password_env") && !err.contains("oops"),
        "{err}"
    );
    // profiles shows file profiles and which is selected, never secrets.
    let out = sb
        .cmd()
        .env("JOBCTL_OUTPUT", "json")
        .env("CLOUDPSS_PASSWORD", "hunter2")
        .args(["--config", &cfg, "profiles"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("hunter2"));
    let rows: Vec<Value> = serde_json::from_str(&text).unwrap();
    let mine = rows.iter().find(|r| r["name"] == "mine").unwrap();
    assert_eq!(
        mine["selected"], false,
        "the process env selected `mine`? no: .env says other"
    );
    let cp = rows.iter().find(|r| r["name"] == "cloudpss").unwrap();
    assert_eq!(cp["credentials"], true);
}

#[test]
fn eight_processes_submit_at_once_with_unique_references() {
    let sb = Sandbox::new();
    // Create the state directory first so every process races on the same files.
    sb.run(&["history"]);
    let children: Vec<_> = (0..8)
        .map(|i| {
            sb.std_cmd()
                .args([
                    "submit",
                    "-o",
                    "quiet",
                    "--name",
                    &format!("p{i}"),
                    "--",
                    "true",
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut refs = Vec::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        refs.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let mut unique = refs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 8, "{refs:?}");
    let (_, out, _) = sb.run(&["-o", "json", "history"]);
    let hist: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(hist.len(), 8);
    let mut recorded: Vec<String> = hist
        .iter()
        .map(|h| h["ref"].as_str().unwrap().to_string())
        .collect();
    recorded.sort();
    assert_eq!(recorded, unique);
    let mut args = vec!["wait"];
    args.extend(refs.iter().map(String::as_str));
    assert_eq!(sb.run(&args).0, 0);
}

fn supervisor_pid(j: &Value) -> i32 {
    j["extra"]["supervisor_pid"].as_i64().unwrap() as i32
}

#[test]
fn a_vanished_supervisor_is_reported_not_running_forever() {
    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;
    let sb = Sandbox::new();
    let r = sb.submit(&["--", "sleep", "30"]);
    let j = sb.wait_state(&r, |j| j["state"] == "running");
    let pgid = j["extra"]["pgid"].as_i64().unwrap() as i32;
    kill(Pid::from_raw(supervisor_pid(&j)), Signal::SIGKILL).unwrap();
    // The command itself still runs: honestly running, with the reason why its end is unknown.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sb.status_json(&r)["state"], "running");
    killpg(Pid::from_raw(pgid), Signal::SIGKILL).unwrap();
    let j = sb.wait_state(&r, |j| j["state"] != "running");
    assert_eq!(j["state"], "failed");
    assert!(j["reason"].as_str().unwrap().contains("vanished"), "{j}");
    assert_eq!(j["exit_code"], Value::Null);
    assert_eq!(sb.run(&["wait", &r]).0, 1);

    // Abort still works when only the supervisor is gone.
    let r2 = sb.submit(&["--", "sleep", "30"]);
    let j = sb.wait_state(&r2, |j| j["state"] == "running");
    kill(Pid::from_raw(supervisor_pid(&j)), Signal::SIGKILL).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(sb.run(&["abort", &r2]).0, 0);
    let j = sb.status_json(&r2);
    assert_eq!(j["state"], "canceled");
    let pgid = j["extra"]["pgid"].as_i64().unwrap();
    assert!(
        !jobctl::backends::local::mapping::group_alive(pgid),
        "the job's processes were not stopped"
    );
}

#[test]
fn submit_key_is_idempotent() {
    let sb = Sandbox::new();
    let a = sb.submit(&["--key", "nightly", "--", "true"]);
    let (code, out, err) = sb.run(&["submit", "--key", "nightly", "--", "true"]);
    assert_eq!(code, 0);
    assert_eq!(out.trim(), a);
    assert!(err.contains("already submitted"), "{err}");
    let (_, out, _) = sb.run(&["-o", "json", "history"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 1);
    // Another key is another job.
    assert_ne!(sb.submit(&["--key", "other", "--", "true"]), a);
    // A key whose submission was refused can be used again.
    assert_eq!(
        sb.run(&[
            "submit",
            "--key",
            "k2",
            "--opt",
            "workdir=/nonexistent",
            "--",
            "true"
        ])
        .0,
        2
    );
    assert!(
        sb.submit(&["--key", "k2", "--", "true"])
            .starts_with("local:")
    );
}

#[test]
fn job_environment_workdir_and_shell() {
    let sb = Sandbox::new();
    let wd = sb.path().join("wd");
    std::fs::create_dir(&wd).unwrap();
    let r = sb.submit(&[
        "--arg",
        "GREETING=hi",
        "--arg",
        "COUNT=3",
        "--opt",
        &format!("workdir={}", wd.display()),
        "--opt",
        "shell=true",
        "--",
        "echo $GREETING $COUNT; pwd; echo oops >&2",
    ]);
    assert_eq!(sb.run(&["wait", &r]).0, 0);
    let (_, out, _) = sb.run(&["logs", &r]);
    let canon = std::fs::canonicalize(&wd).unwrap();
    assert_eq!(out, format!("hi 3\n{}\n", canon.display()));
    assert_eq!(sb.run(&["logs", "--stderr", &r]).1, "oops\n");
    // A command that does not exist fails with 127 and says why.
    let r = sb.submit(&["--", "definitely-not-a-command-xyz"]);
    assert_eq!(sb.run(&["wait", &r]).0, 1);
    let j = sb.status_json(&r);
    assert_eq!(j["exit_code"], 127);
    assert!(
        j["reason"].as_str().unwrap().contains("cannot start"),
        "{j}"
    );
}

#[test]
fn logs_follow_and_fetch() {
    let sb = Sandbox::new();
    let r = sb.submit(&["--", "sh", "-c", "echo one; sleep 1; echo two"]);
    let (code, out, _) = sb.run(&["logs", "--follow", &r]);
    assert_eq!((code, out.as_str()), (0, "one\ntwo\n"));
    let dest = sb.path().join("out");
    let (code, out, _) = sb.run(&["-o", "json", "fetch", &r, "--dest", dest.to_str().unwrap()]);
    assert_eq!(code, 0);
    let arts: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(arts.len(), 2);
    let id = r.trim_start_matches("local:");
    assert_eq!(
        std::fs::read_to_string(dest.join(format!("job-{id}.out"))).unwrap(),
        "one\ntwo\n"
    );
    assert_eq!(sb.run(&["fetch", "local:777"]).0, 6);
}

#[test]
fn batch_submits_every_line_and_skips_done_lines_on_rerun() {
    let sb = Sandbox::new();
    let file = sb.path().join("jobs.jsonl");
    std::fs::write(
        &file,
        "# two jobs\n{\"command\":[\"true\"]}\n\n{\"key\":\"b\",\"command\":[\"sh\",\"-c\",\"exit 1\"]}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, _) = sb.run(&["-o", "ndjson", "batch", f, "--wait"]);
    assert_eq!(code, 1, "one job fails: {out}");
    let rows: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        // The line objects; other batch --wait events (submitted, state…) name their line too.
        .filter(|v| v["event"] == "line")
        .collect();
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r["outcome"] == "submitted"));
    let (code, out, _) = sb.run(&["-o", "json", "batch", f]);
    assert_eq!(code, 0);
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert!(rows.iter().all(|r| r["outcome"] == "skipped"), "{out}");
    // A malformed line is reported with its number and nothing is submitted.
    std::fs::write(
        sb.path().join("bad.jsonl"),
        "{\"command\":[\"true\"]}\nnot json\n",
    )
    .unwrap();
    let (code, _, err) = sb.run(&["batch", "bad.jsonl"]);
    assert_eq!(code, 2);
    assert!(err.contains("line 2"), "{err}");
    let (_, out, _) = sb.run(&["-o", "json", "history"]);
    assert_eq!(serde_json::from_str::<Vec<Value>>(&out).unwrap().len(), 2);
}

#[test]
fn batch_ndjson_ends_with_a_result_listing_every_submitted_job() {
    let sb = Sandbox::new();
    let file = sb.path().join("three.jsonl");
    std::fs::write(&file, "{\"command\":[\"true\"]}\n".repeat(3)).unwrap();
    let (code, out, err) = sb.run(&["-o", "ndjson", "batch", file.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let events: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .collect();
    let refs: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "line")
        .map(|e| e["ref"].as_str().unwrap())
        .collect();
    assert_eq!(refs.len(), 3, "{out}");
    let last = events.last().unwrap();
    assert_eq!(last["event"], "result", "{out}");
    let jobs: Vec<&str> = last["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["ref"].as_str().unwrap())
        .collect();
    let mut sorted = refs.clone();
    sorted.sort_unstable();
    let mut listed = jobs.clone();
    listed.sort_unstable();
    assert_eq!(listed, sorted, "the result lists each submitted job once");
}

#[test]
fn completions_and_help_work() {
    let sb = Sandbox::new();
    let (code, out, _) = sb.run(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(out.contains("jobctl"));
    let (code, out, _) = sb.run(&["submit", "--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("Examples:"));
}

#[test]
fn submit_wait_json_prints_exactly_one_value() {
    let sb = Sandbox::new();
    let (code, out, _) = sb.run(&["-o", "json", "submit", "--wait", "--", "sh", "-c", "exit 2"]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).expect("exactly one JSON value");
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["jobs"][0]["exit_code"], 2);
    // Piped logs are complete (stdout is flushed).
    let r = v["jobs"][0]["ref"].as_str().unwrap().to_string();
    let r2 = sb.submit(&["--", "sh", "-c", "seq 1 2000"]);
    sb.run(&["wait", &r2]);
    assert_eq!(sb.run(&["logs", &r2]).1.lines().count(), 2000);
    assert_eq!(sb.run(&["logs", &r]).0, 0);
}
