//! Pipelines end to end: `batch --wait` over local, CloudPSS and Slurm (the simulator, and a
//! real Slurm where scripts/slurm-up.sh started one), retries, blocked branches, resuming after
//! kill -9 with exactly one submission per line and attempt, and the CI reports (JUnit XML
//! validated against the Ant/Jenkins schema, GitHub step summary and annotations).

mod common;

use common::{Sandbox, Sim, text};
use jobctl_sim::SimConfig;
use quick_xml::events::Event;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn sim() -> Sim {
    common::sim(SimConfig {
        job_duration: Duration::from_millis(300),
        queue_duration: Duration::from_millis(100),
        // Not the default, which is also part of the simulator's machine names in job data
        // and would make the sandbox's secret check see a leak that is not one.
        password: "pipeline-s3cret".into(),
        ..SimConfig::default()
    })
}

fn write_file(dir: &Path, name: &str, lines: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let body: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&path, body.join("\n") + "\n").unwrap();
    path
}

/// Every ledger entry, through `jobctl history`.
fn ledger(sb: &Sandbox) -> Vec<Value> {
    let v = sb.json(&["history", "--limit", "1000"]);
    v.as_array().expect("history is an array").clone()
}

/// How many ledger entries each key has.
fn keys(entries: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for e in entries {
        *m.entry(e["key"].as_str().unwrap_or("").to_string())
            .or_default() += 1;
    }
    m
}

/// CloudPSS jobs created on the simulator (`createJob` mutations served).
fn cloudpss_created(sim: &Sim) -> u64 {
    let url = format!("{}/_sim/cloudpss/operations", sim.base_url);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ops: BTreeMap<String, u64> =
        rt.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() });
    ops.get("createJob").copied().unwrap_or(0)
}

const SLURM_SUBMIT: &str = "POST /slurm/v0.0.38/job/submit";

fn row<'a>(rows: &'a [Value], key: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["key"] == key)
        .unwrap_or_else(|| panic!("no row for {key} in {rows:?}"))
}

// ---------------------------------------------------------------------------------------
// JUnit validation: xmllint against the schema where installed, and always a structural
// check of the same rules, so a fresh machine without libxml2-utils still checks the shape.

fn xsd() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/junit/JUnit.xsd")
}

fn xmllint_available() -> bool {
    Command::new("xmllint")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A parsed test case: name, classname, and the verdict element (`failure`, `skipped`,
/// `error`) with its message, if any.
#[derive(Debug)]
struct TestCase {
    name: String,
    classname: String,
    verdict: Option<(String, String)>,
    body: String,
}

fn attrs(e: &quick_xml::events::BytesStart<'_>) -> BTreeMap<String, String> {
    e.attributes()
        .map(|a| {
            let a = a.expect("well-formed attribute");
            (
                String::from_utf8_lossy(a.key.as_ref()).into_owned(),
                a.unescape_value().expect("escaped value").into_owned(),
            )
        })
        .collect()
}

/// Checks the Ant/Jenkins JUnit rules jobctl relies on and returns the test cases.
fn validate_junit(path: &Path) -> Vec<TestCase> {
    if xmllint_available() {
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg("--schema")
            .arg(xsd())
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "xmllint rejects {}: {}",
            path.display(),
            text(&out.stderr)
        );
    } else {
        let _ = writeln!(
            std::io::stderr(),
            "note: xmllint not installed (Debian: libxml2-utils); JUnit report checked structurally only"
        );
    }
    let xml = std::fs::read_to_string(path).unwrap();
    let mut reader = quick_xml::Reader::from_str(&xml);
    let mut stack: Vec<String> = Vec::new();
    let mut suite_children: Vec<String> = Vec::new();
    let mut cases: Vec<TestCase> = Vec::new();
    let mut suite_attrs = BTreeMap::new();
    loop {
        let ev = reader.read_event().expect("well-formed XML");
        let (name, a, empty) = match &ev {
            Event::Start(e) => (
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                attrs(e),
                false,
            ),
            Event::Empty(e) => (
                String::from_utf8_lossy(e.name().as_ref()).into_owned(),
                attrs(e),
                true,
            ),
            Event::Text(t) => {
                if stack.len() == 4 {
                    if let Some(c) = cases.last_mut() {
                        c.body.push_str(&t.decode().unwrap());
                    }
                }
                continue;
            }
            Event::GeneralRef(r) => {
                if stack.len() == 4 {
                    if let Some(c) = cases.last_mut() {
                        c.body
                            .push_str(&format!("&{};", String::from_utf8_lossy(r)));
                    }
                }
                continue;
            }
            Event::End(_) => {
                stack.pop();
                continue;
            }
            Event::Eof => break,
            _ => continue,
        };
        match stack.len() {
            0 => {
                assert_eq!(name, "testsuites", "root element");
                assert!(
                    a.is_empty(),
                    "the schema allows no attributes on testsuites: {a:?}"
                );
            }
            1 => {
                assert_eq!(name, "testsuite");
                for k in [
                    "name",
                    "package",
                    "id",
                    "timestamp",
                    "hostname",
                    "tests",
                    "failures",
                    "errors",
                    "time",
                ] {
                    assert!(a.contains_key(k), "testsuite lacks {k}: {a:?}");
                }
                let ts = &a["timestamp"];
                assert!(
                    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%dT%H:%M:%S").is_ok(),
                    "timestamp without zone: {ts}"
                );
                a["time"].parse::<f64>().expect("decimal time");
                suite_attrs = a.clone();
            }
            2 => {
                suite_children.push(name.clone());
                if name == "testcase" {
                    for k in ["name", "classname", "time"] {
                        assert!(a.contains_key(k), "testcase lacks {k}: {a:?}");
                    }
                    assert!(a["time"].parse::<f64>().is_ok_and(|t| t >= 0.0));
                    cases.push(TestCase {
                        name: a["name"].clone(),
                        classname: a["classname"].clone(),
                        verdict: None,
                        body: String::new(),
                    });
                }
            }
            3 => {
                let c = cases.last_mut().expect("verdict inside a testcase");
                assert!(c.verdict.is_none(), "one verdict per testcase");
                assert!(
                    ["failure", "skipped", "error"].contains(&name.as_str()),
                    "{name}"
                );
                if name != "skipped" {
                    assert!(a.contains_key("type"), "{name} needs type");
                }
                c.verdict = Some((name.clone(), a.get("message").cloned().unwrap_or_default()));
            }
            _ => panic!("unexpected nesting at {name}"),
        }
        if !empty {
            stack.push(name);
        }
    }
    assert_eq!(
        suite_children.first().map(String::as_str),
        Some("properties")
    );
    let n = suite_children.len();
    assert!(
        n >= 3 && suite_children[n - 2] == "system-out" && suite_children[n - 1] == "system-err"
    );
    let of = |kind: &str| {
        cases
            .iter()
            .filter(|c| c.verdict.as_ref().is_some_and(|v| v.0 == kind))
            .count()
    };
    assert_eq!(suite_attrs["tests"], cases.len().to_string());
    assert_eq!(suite_attrs["failures"], of("failure").to_string());
    assert_eq!(suite_attrs["errors"], of("error").to_string());
    assert_eq!(suite_attrs["skipped"], of("skipped").to_string());
    cases
}

fn case<'a>(cases: &'a [TestCase], name: &str) -> &'a TestCase {
    cases
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no test case {name} in {cases:?}"))
}

// ---------------------------------------------------------------------------------------

/// local → cloudpss → slurm, with a local line that fails once and succeeds on its retry, a
/// slurm line that fails and blocks the local line after it, and the CloudPSS job's id
/// handed to the Slurm job.
#[test]
fn a_mixed_pipeline_runs_with_a_retry_and_a_blocked_branch() {
    let sim = sim();
    let sb = Sandbox::with_sim(&sim);
    let d = sb.path();
    let file = write_file(
        d,
        "p.jsonl",
        &[
            json!({"key":"prep","name":"prepare","retries":1,"command":["sh","-c",
                   "if [ -e marker ]; then echo prepared; else touch marker; echo first try fails; exit 4; fi"],
                   "options":{"workdir": d}}),
            json!({"key":"study","profile":"cloudpss","after":"prep",
                   "options":{"function":"function/CloudPSS/hello"},
                   "args":{"sim_outcome":"succeed","message":"from ${prep.ref}"}}),
            json!({"key":"post","profile":"slurm","after":["study"],
                   "command":["echo reading ${study.id}"],
                   "args":{"STUDY":"${study.ref}","sim_outcome":"succeed"},
                   "options":{"partition":"debug"}}),
            json!({"key":"doomed","profile":"slurm","after":"prep",
                   "command":["exit 1"],"args":{"sim_outcome":"fail"}}),
            json!({"key":"never","after":"doomed","command":["true"]}),
        ],
    );
    let junit = d.join("reports/junit.xml");
    let summary = d.join("summary.md");
    let mut c = sb.std_cmd();
    c.env("GITHUB_STEP_SUMMARY", &summary).args([
        "-o",
        "json",
        "batch",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "2m",
        "--report",
        &format!("junit={}", junit.display()),
        "--report",
        "github",
    ]);
    let out = output(&sb, c);
    let stderr = text(&out.stderr);
    assert_eq!(out.code, Some(1), "a job failed: {stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).expect("one JSON array");
    assert_eq!(rows.len(), 5);
    let prep = row(&rows, "prep");
    assert_eq!(prep["state"], "succeeded");
    assert_eq!(prep["attempts"], 2);
    assert_eq!(prep["job"]["state"], "succeeded");
    let study = row(&rows, "study");
    assert_eq!(study["state"], "succeeded");
    assert_eq!(study["profile"], "cloudpss");
    assert_eq!(row(&rows, "post")["state"], "succeeded");
    assert_eq!(row(&rows, "doomed")["state"], "failed");
    let never = row(&rows, "never");
    assert_eq!(never["outcome"], "blocked");
    assert_eq!(never["state"], "blocked");
    assert!(never["ref"].is_null() && never["job"].is_null());
    assert!(
        never["reason"].as_str().unwrap().contains("doomed"),
        "{never}"
    );

    // Every line and attempt was submitted once; the blocked line never.
    let entries = ledger(&sb);
    let k = keys(&entries);
    let want: BTreeMap<String, usize> = ["prep", "prep#2", "study", "post", "doomed"]
        .iter()
        .map(|k| (k.to_string(), 1))
        .collect();
    assert_eq!(k, want);
    assert_eq!(cloudpss_created(&sim), 1);
    assert_eq!(sim.hits(SLURM_SUBMIT), 2);
    // The Slurm job was given the CloudPSS job's id and reference.
    let study_ref = study["ref"].as_str().unwrap();
    let study_id = study_ref.split_once(':').unwrap().1;
    let post = entries.iter().find(|e| e["key"] == "post").unwrap();
    assert_eq!(post["spec"]["args"]["STUDY"], study_ref);
    assert_eq!(
        post["spec"]["command"][0],
        format!("echo reading {study_id}")
    );

    // The JUnit report: one case per line, the failure with its reason, the blocked line skipped.
    let cases = validate_junit(&junit);
    assert_eq!(cases.len(), 5);
    assert!(case(&cases, "prepare").verdict.is_none());
    assert_eq!(case(&cases, "prepare").classname, "local");
    assert_eq!(case(&cases, "study").classname, "cloudpss");
    let doomed = case(&cases, "doomed");
    assert_eq!(doomed.classname, "slurm");
    assert_eq!(doomed.verdict.as_ref().unwrap().0, "failure");
    assert!(
        doomed.verdict.as_ref().unwrap().1.contains("failed"),
        "{doomed:?}"
    );
    let never = case(&cases, "never");
    assert_eq!(never.verdict.as_ref().unwrap().0, "skipped");
    assert!(
        never.verdict.as_ref().unwrap().1.contains("blocked"),
        "{never:?}"
    );

    // GitHub: a summary row per line and an annotation for the failed job.
    let s = std::fs::read_to_string(&summary).unwrap();
    assert!(
        s.contains("5 jobs: 3 succeeded, 1 failed, 1 skipped"),
        "{s}"
    );
    assert!(s.contains("| ⏭️ | never |"), "{s}");
    assert!(
        stderr.contains("::error title=jobctl%3A doomed failed::"),
        "{stderr}"
    );
}

/// The pipeline the README shows (examples/pipeline.jsonl) runs as documented against the
/// simulator: its levels, and every line succeeding with the outputs handed on.
#[test]
fn the_example_pipeline_runs_as_documented() {
    let sim = sim();
    let sb = Sandbox::with_sim(&sim);
    let d = sb.path();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pipeline.jsonl");
    let file = d.join("pipeline.jsonl");
    std::fs::copy(&example, &file).unwrap();
    let mut c = sb.std_cmd();
    c.args(["batch", file.to_str().unwrap(), "--dry-run"]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for line in table.lines() {
        assert!(
            readme.contains(line.trim_end()),
            "README shows the dry run: {line}"
        );
    }

    let mut c = sb.std_cmd();
    c.args([
        "-o",
        "json",
        "batch",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "2m",
    ]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(0), "{}", text(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 4);
    assert!(rows.iter().all(|r| r["state"] == "succeeded"), "{rows:?}");
    let entries = ledger(&sb);
    let post = entries.iter().find(|e| e["key"] == "post").unwrap();
    assert_eq!(
        post["spec"]["args"]["STUDY_REF"],
        row(&rows, "study")["ref"]
    );
    let publish = entries.iter().find(|e| e["key"] == "publish").unwrap();
    assert_eq!(publish["spec"]["args"]["POST"], row(&rows, "post")["ref"]);
}

/// Validation happens before anything is sent; `--dry-run` prints the levels.
#[test]
fn bad_pipelines_are_refused_before_sending_and_dry_run_shows_levels() {
    let sb = Sandbox::new();
    let d = sb.path();
    let cyclic = write_file(
        d,
        "cycle.jsonl",
        &[
            json!({"key":"first","command":["true"]}),
            json!({"key":"a","after":["first","c"],"command":["true"]}),
            json!({"key":"b","after":"a","command":["true"]}),
            json!({"key":"c","after":"b","command":["true"]}),
        ],
    );
    let mut c = sb.std_cmd();
    c.args(["batch", cyclic.to_str().unwrap(), "--wait"]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("cycle"), "{err}");
    for l in ["line 2 (key a)", "line 3 (key b)", "line 4 (key c)"] {
        assert!(err.contains(l), "{err}");
    }
    assert!(ledger(&sb).is_empty(), "nothing was submitted");

    let unknown = write_file(
        d,
        "unknown.jsonl",
        &[json!({"key":"x","after":"nope","command":["true"]})],
    );
    let mut c = sb.std_cmd();
    c.args(["batch", unknown.to_str().unwrap(), "--wait"]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(2));
    assert!(
        text(&out.stderr).contains("line 1"),
        "{}",
        text(&out.stderr)
    );

    // Without --wait, nothing would wait for a prerequisite: refused, naming the lines.
    let ok = write_file(
        d,
        "ok.jsonl",
        &[
            json!({"key":"a","command":["true"]}),
            json!({"key":"b","after":"a","command":["true"]}),
            json!({"key":"c","after":["a"],"retries":2,"command":["true"]}),
        ],
    );
    let mut c = sb.std_cmd();
    c.args(["batch", ok.to_str().unwrap()]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(2));
    assert!(
        text(&out.stderr).contains("line 2, 3"),
        "{}",
        text(&out.stderr)
    );

    let mut c = sb.std_cmd();
    c.args(["-o", "json", "batch", ok.to_str().unwrap(), "--dry-run"]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(0), "{}", text(&out.stderr));
    let plan: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let levels: Vec<(u64, &str)> = plan
        .iter()
        .map(|p| (p["level"].as_u64().unwrap(), p["key"].as_str().unwrap()))
        .collect();
    assert_eq!(levels, vec![(1, "a"), (2, "b"), (2, "c")]);
    assert_eq!(plan[2]["retries"], 2);
    assert!(ledger(&sb).is_empty(), "a dry run sends nothing");
}

/// The output of one jobctl run (secrets checked by the sandbox).
struct Out {
    code: Option<i32>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

fn output(sb: &Sandbox, cmd: Command) -> Out {
    let (code, stdout, stderr) = sb.run_cmd(cmd);
    Out {
        code: Some(code),
        stdout: stdout.into_bytes(),
        stderr: stderr.into_bytes(),
    }
}

/// `after` may name jobs submitted outside the file; `--timeout` stops the run with exit 3,
/// leaving later lines `pending` and reporting the unfinished job as a JUnit error.
#[test]
fn external_prerequisites_and_the_timeout() {
    let sb = Sandbox::new();
    let d = sb.path();
    let done = sb.submit(&["--wait", "--", "true"]);
    let (code, failed, _) = sb.run(&[
        "-o", "quiet", "submit", "--wait", "--", "sh", "-c", "exit 1",
    ]);
    assert_eq!(code, 1);
    let failed = failed.trim().to_string();
    let file = write_file(
        d,
        "ext.jsonl",
        &[
            json!({"key":"ok","after":done,"command":["true"]}),
            json!({"key":"no","after":[done, failed],"command":["true"]}),
        ],
    );
    let (code, out, err) = sb.run(&["-o", "json", "batch", file.to_str().unwrap(), "--wait"]);
    assert_eq!(code, 1, "an awaited prerequisite failed: {err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(row(&rows, "ok")["state"], "succeeded");
    let no = row(&rows, "no");
    assert_eq!(no["state"], "blocked");
    assert!(no["reason"].as_str().unwrap().contains(&failed), "{no}");

    let file = write_file(
        d,
        "slow.jsonl",
        &[
            json!({"key":"slow","name":"slow","command":["sleep","30"]}),
            json!({"key":"later","after":"slow","command":["true"]}),
        ],
    );
    let junit = d.join("slow.xml");
    let (code, out, err) = sb.run(&[
        "-o",
        "json",
        "batch",
        file.to_str().unwrap(),
        "--wait",
        "--timeout",
        "1s",
        "--report",
        &format!("junit={}", junit.display()),
    ]);
    assert_eq!(code, 3, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(row(&rows, "slow")["state"], "running");
    assert_eq!(row(&rows, "later")["outcome"], "pending");
    let cases = validate_junit(&junit);
    assert_eq!(case(&cases, "slow").verdict.as_ref().unwrap().0, "error");
    assert_eq!(case(&cases, "later").verdict.as_ref().unwrap().0, "error");
    let slow = row(&rows, "slow")["ref"].as_str().unwrap().to_string();
    assert_eq!(sb.run(&["abort", &slow]).0, 0);
}

/// A stop condition for [`run_and_kill`]: every one of `keys` has had a `submitted` event.
/// (Killing while a submission is on the wire leaves its outcome unknown to the ledger; that
/// window is the ledger's reconciliation to close, not the pipeline's, so the tests kill
/// between submissions.)
fn submitted_all(keys: &[&str]) -> impl FnMut(&Value) -> bool {
    let mut left: std::collections::BTreeSet<String> = keys.iter().map(|k| k.to_string()).collect();
    move |v| {
        if v["event"] == "submitted" {
            if let Some(k) = v["key"].as_str() {
                left.remove(k);
            }
        }
        left.is_empty()
    }
}

/// Starts `jobctl -o ndjson ARGS`, reads its events until `stop` says so, then kills it with
/// SIGKILL (no chance to clean up), returning the events seen.
fn run_and_kill(sb: &Sandbox, args: &[&str], mut stop: impl FnMut(&Value) -> bool) -> Vec<Value> {
    let (mut child, events) = sb.spawn_ndjson(args);
    let mut seen = Vec::new();
    let deadline = Instant::now() + common::DEADLINE;
    while Instant::now() < deadline {
        let Ok(v) = events.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        let done = stop(&v);
        seen.push(v);
        if done {
            break;
        }
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), None, "killed by a signal, not finished");
    seen
}

/// kill -9 in the middle, run again with the same journal: the pipeline finishes with every
/// line and attempt submitted exactly once.
#[test]
fn a_killed_pipeline_resumes_with_one_submission_per_line_and_attempt() {
    let sim = sim();
    let sb = Sandbox::with_sim(&sim);
    let d = sb.path();
    let file = write_file(
        d,
        "p.jsonl",
        &[
            json!({"key":"a","command":["sh","-c","echo a"]}),
            json!({"key":"b","profile":"cloudpss","after":"a",
                   "options":{"function":"function/CloudPSS/hello"},
                   "args":{"sim_duration":"3s","sim_outcome":"succeed"}}),
            json!({"key":"c","profile":"slurm","after":"b","command":["echo ${b.id}"],
                   "args":{"sim_outcome":"succeed"}}),
            json!({"key":"d","after":"a","retries":1,"command":["sh","-c","sleep 1; exit 1"]}),
            json!({"key":"e","after":"d","command":["true"]}),
        ],
    );
    let args = ["batch", file.to_str().unwrap(), "--wait", "--timeout", "2m"];
    // Kill once the CloudPSS job is in flight: a is done, b running, c not yet submitted, d
    // (which fails) submitted or already being retried.
    let seen = run_and_kill(&sb, &args, submitted_all(&["b", "d"]));
    assert!(
        seen.iter()
            .any(|v| v["event"] == "submitted" && v["key"] == "a")
    );
    assert_eq!(cloudpss_created(&sim), 1);
    assert_eq!(sim.hits(SLURM_SUBMIT), 0, "c waits for b");

    let mut again = sb.std_cmd();
    again.args(["-o", "ndjson"]).args(args);
    let out = output(&sb, again);
    assert_eq!(out.code, Some(1), "d failed: {}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("ndjson"))
        .collect();
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["exit_code"], 1);
    let rows = result["lines"].as_array().unwrap();
    assert_eq!(row(rows, "a")["outcome"], "skipped", "done before the kill");
    assert_eq!(
        row(rows, "b")["outcome"],
        "skipped",
        "watched again, not resubmitted"
    );
    assert_eq!(row(rows, "b")["state"], "succeeded");
    assert_eq!(row(rows, "c")["state"], "succeeded");
    assert_eq!(row(rows, "d")["state"], "failed");
    assert_eq!(row(rows, "d")["attempts"], 2);
    assert_eq!(row(rows, "e")["state"], "blocked");
    // The events a CI log shows: a retry of d (in either run: d may fail before the kill), e
    // blocked, each submission announced.
    assert!(
        seen.iter()
            .chain(&events)
            .any(|v| v["event"] == "retry" && v["key"] == "d" && v["attempt_key"] == "d#2")
    );
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "blocked" && v["key"] == "e")
    );
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "submitted" && v["key"] == "c")
    );
    assert!(
        events
            .iter()
            .any(|v| v["event"] == "line" && v["key"] == "c" && v["outcome"] == "submitted")
    );

    let want: BTreeMap<String, usize> = ["a", "b", "c", "d", "d#2"]
        .iter()
        .map(|k| (k.to_string(), 1))
        .collect();
    assert_eq!(keys(&ledger(&sb)), want);
    assert_eq!(cloudpss_created(&sim), 1);
    assert_eq!(sim.hits(SLURM_SUBMIT), 1);

    // A third run finds everything done: nothing is sent, the outcome is the same.
    let mut third = sb.std_cmd();
    third.args(["-o", "json", "batch", file.to_str().unwrap(), "--wait"]);
    let out = output(&sb, third);
    assert_eq!(out.code, Some(1));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        rows.iter()
            .all(|r| r["outcome"] == "skipped" || r["outcome"] == "blocked"),
        "{rows:?}"
    );
    // Lines finished in earlier runs still carry their final job.
    assert_eq!(row(&rows, "c")["job"]["state"], "succeeded");
    assert_eq!(row(&rows, "d")["job"]["state"], "failed");
    assert_eq!(keys(&ledger(&sb)).len(), 5);
    assert_eq!(cloudpss_created(&sim), 1);
    assert_eq!(sim.hits(SLURM_SUBMIT), 1);
}

/// `--concurrency` limits submissions in flight per profile: with a limit of 1 and a slow
/// CloudPSS, the local line behind it in the file is submitted without waiting for it.
#[test]
fn a_slow_platform_holds_back_only_its_own_lines() {
    let sim = sim();
    let sb = Sandbox::with_sim(&sim);
    let d = sb.path();
    let file = write_file(
        d,
        "p.jsonl",
        &[
            json!({"key":"remote","profile":"cloudpss","options":{"function":"function/CloudPSS/hello"}}),
            json!({"key":"near","command":["true"]}),
        ],
    );
    // Every simulator answer (the login, then the submission) takes 1.5 s.
    sim.set_faults(jobctl_sim::Faults {
        latency_ms: (1500, 1500),
        ..jobctl_sim::Faults::default()
    });
    let (code, out, err) = sb.run(&[
        "-o",
        "ndjson",
        "batch",
        file.to_str().unwrap(),
        "--wait",
        "--concurrency",
        "1",
        "--report",
        "github",
    ]);
    assert_eq!(code, 0, "{err}");
    let order: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["event"] == "submitted")
        .map(|v| v["key"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(order, vec!["near", "remote"]);
}

/// Ctrl-C stops `batch --wait` with exit 130 and a final result event; the jobs keep running
/// and the same command finishes the pipeline without submitting anything twice.
#[test]
fn ctrl_c_stops_the_pipeline_and_the_same_command_resumes_it() {
    let sb = Sandbox::new();
    let d = sb.path();
    let file = write_file(
        d,
        "p.jsonl",
        &[
            json!({"key":"a","command":["sleep","2"]}),
            json!({"key":"b","after":"a","command":["true"]}),
        ],
    );
    let args = ["batch", file.to_str().unwrap(), "--wait"];
    let (mut child, events) = sb.spawn_ndjson(&args);
    common::eventually_blocking("a is submitted", common::DEADLINE, || {
        events
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|v| v["event"] == "submitted" && v["key"] == "a")
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(130));
    let last = common::eventually_blocking("the result event", common::DEADLINE, || {
        events
            .recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|v| v["event"] == "result")
    });
    assert_eq!(last["exit_code"], 130);
    assert_eq!(
        row(last["lines"].as_array().unwrap(), "b")["outcome"],
        "pending"
    );

    let (code, out, err) = sb.run(&["-o", "json", "batch", file.to_str().unwrap(), "--wait"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(row(&rows, "a")["outcome"], "skipped");
    assert_eq!(row(&rows, "b")["state"], "succeeded");
    let want: BTreeMap<String, usize> = [("a".to_string(), 1), ("b".to_string(), 1)].into();
    assert_eq!(keys(&ledger(&sb)), want);
}

/// `submit --retries N --wait` resubmits a failed job with derived keys and reports it.
#[test]
fn submit_retries_a_failed_job_and_reports_the_last_attempt() {
    let sb = Sandbox::new();
    let d = sb.path();
    let junit = d.join("r.xml");
    let mut c = sb.std_cmd();
    c.args([
        "-o",
        "ndjson",
        "submit",
        "--name",
        "flaky",
        "--key",
        "nightly",
        "--retries",
        "1",
        "--wait",
        "--report",
        &format!("junit={}", junit.display()),
        "--",
        "sh",
        "-c",
        "echo out of disk; exit 3",
    ]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(1), "{}", text(&out.stderr));
    let events: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let submitted: Vec<&Value> = events
        .iter()
        .filter(|e| e["event"] == "submitted")
        .collect();
    assert_eq!(submitted.len(), 2);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "retry" && e["key"] == "nightly#2")
    );
    let result = events.last().unwrap();
    assert_eq!(result["event"], "result");
    assert_eq!(result["jobs"][0]["ref"], submitted[1]["ref"]);
    let k = keys(&ledger(&sb));
    assert_eq!(k.get("nightly"), Some(&1));
    assert_eq!(k.get("nightly#2"), Some(&1));
    assert_eq!(k.len(), 2);

    let cases = validate_junit(&junit);
    assert_eq!(cases.len(), 1);
    let (kind, message) = cases[0].verdict.clone().unwrap();
    assert_eq!(kind, "failure");
    assert!(message.contains("exit code 3"), "{message}");
    assert!(
        cases[0].body.contains("after 2 attempts"),
        "{}",
        cases[0].body
    );
    assert!(
        cases[0].body.contains("out of disk"),
        "last output lines: {}",
        cases[0].body
    );
}

/// `wait --report github` on jobs that already ended: the summary table is appended and the
/// failed job is annotated on stdout (table mode), the succeeded one is not.
#[test]
fn wait_writes_the_github_summary_and_annotations() {
    let sb = Sandbox::new();
    let d = sb.path();
    let submit = |args: &[&str]| {
        let mut c = sb.std_cmd();
        c.args(["-o", "quiet", "submit", "--wait"]).args(args);
        c
    };
    let ok = output(&sb, submit(&["--name", "good", "--", "true"]));
    let bad = output(&sb, submit(&["--name", "bad", "--", "sh", "-c", "exit 2"]));
    let ok_ref = text(&ok.stdout).trim().to_string();
    let bad_ref = text(&bad.stdout).trim().to_string();
    let summary = d.join("summary.md");
    std::fs::write(&summary, "# earlier step\n").unwrap();
    let junit = d.join("w.xml");
    let mut c = sb.std_cmd();
    c.env("GITHUB_STEP_SUMMARY", &summary).args([
        "wait",
        &ok_ref,
        &bad_ref,
        "--report",
        "github",
        "--report",
        &format!("junit={}", junit.display()),
    ]);
    let out = output(&sb, c);
    assert_eq!(out.code, Some(1));
    let stdout = text(&out.stdout);
    let annotations: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("::error"))
        .collect();
    assert_eq!(annotations.len(), 1, "{stdout}");
    assert!(annotations[0].contains("bad failed") && annotations[0].contains("exit code 2"));
    let s = std::fs::read_to_string(&summary).unwrap();
    assert!(s.starts_with("# earlier step\n### jobctl wait"), "{s}");
    assert!(
        s.contains(&format!("| ✅ | good | `{ok_ref}` | local | succeeded |")),
        "{s}"
    );
    assert!(
        s.contains(&format!("| ❌ | bad | `{bad_ref}` | local | failed |")),
        "{s}"
    );
    let cases = validate_junit(&junit);
    assert_eq!(cases.len(), 2);
}

// ---------------------------------------------------------------------------------------
// A real Slurm, where scripts/slurm-up.sh started one (JOBCTL_SLURM_ENV); skipped otherwise
// unless JOBCTL_REQUIRE_SLURM=1.

fn real_slurm() -> Option<(Vec<(String, String)>, PathBuf)> {
    let (vars, job_dir) = common::real_slurm()?;
    let env = vars
        .into_iter()
        .filter(|(k, _)| k.starts_with("SLURM_"))
        .collect();
    Some((env, job_dir))
}

/// local → slurm on a real cluster: the Slurm job reads the local job's id, a failing Slurm
/// job is retried once and blocks what follows; killed and resumed, nothing is sent twice.
#[test]
fn a_pipeline_runs_on_a_real_slurm_and_survives_kill_9() {
    let Some((env, job_dir)) = real_slurm() else {
        return;
    };
    let sb = env.iter().fold(Sandbox::new(), |sb, (k, v)| sb.var(k, v));
    let d = sb.path();
    let tag = format!("jobctl-pipe-{}", std::process::id());
    let opts = |name: &str| json!({"workdir": job_dir, "stdout": format!("{tag}-{name}-%j.out"), "time_limit": 2});
    let file = write_file(
        d,
        "p.jsonl",
        &[
            json!({"key":"local","command":["sh","-c","echo local done"]}),
            json!({"key":"hpc","profile":"slurm","after":"local","name":format!("{tag}-hpc"),
                   "command":["echo upstream ${local.ref}; sleep 5"],"options":opts("hpc")}),
            json!({"key":"flaky","profile":"slurm","after":"local","retries":1,"name":format!("{tag}-flaky"),
                   "command":["exit 3"],"options":opts("flaky")}),
            json!({"key":"after-flaky","after":"flaky","command":["true"]}),
        ],
    );
    let args = ["batch", file.to_str().unwrap(), "--wait", "--timeout", "5m"];
    run_and_kill(&sb, &args, submitted_all(&["hpc", "flaky"]));
    let mut again = sb.std_cmd();
    again.args(["-o", "ndjson"]).args(args);
    let out = output(&sb, again);
    assert_eq!(out.code, Some(1), "{}", text(&out.stderr));
    let last: Value = serde_json::from_str(text(&out.stdout).lines().last().unwrap()).unwrap();
    let rows = last["lines"].as_array().unwrap();
    assert_eq!(row(rows, "hpc")["state"], "succeeded");
    assert_eq!(row(rows, "flaky")["state"], "failed");
    assert_eq!(row(rows, "flaky")["attempts"], 2);
    assert_eq!(row(rows, "after-flaky")["state"], "blocked");
    let want: BTreeMap<String, usize> = ["local", "hpc", "flaky", "flaky#2"]
        .iter()
        .map(|k| (k.to_string(), 1))
        .collect();
    assert_eq!(keys(&ledger(&sb)), want);
    // Slurm itself holds exactly one job per submitted name and attempt.
    let mut c = sb.std_cmd();
    c.args(["-b", "slurm", "-o", "json", "list", "--all"]);
    let listed: Vec<Value> = serde_json::from_slice(&output(&sb, c).stdout).unwrap();
    let hpc = listed
        .iter()
        .filter(|j| j["name"] == format!("{tag}-hpc"))
        .count();
    let flaky = listed
        .iter()
        .filter(|j| j["name"] == format!("{tag}-flaky"))
        .count();
    assert_eq!((hpc, flaky), (1, 2));
}
