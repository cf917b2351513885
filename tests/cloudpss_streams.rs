//! CloudPSS job output against the in-process simulator: `logs` (table and ndjson, follow and
//! not), `fetch` (file layout), progress in `status`, resume after dropped connections over SSE
//! and WebSocket, a 10,000-message stream, a cleaned-up stream, `queues`, and the
//! configuration the official SDK uses (`CLOUDPSS_API_URL` + `CLOUDPSS_TOKEN`).

use jobctl::backend::{BackendContext, JobBackend, build};
use jobctl::config::{Config, ConfigFile, EnvSource};
use jobctl::model::{Job, JobSpec, LogsRequest};
use jobctl::{Error, ErrorKind};
use jobctl_sim::{self as sim, SimConfig, SimHandle};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn start() -> SimHandle {
    sim::start(SimConfig {
        job_duration: Duration::from_millis(300),
        queue_duration: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts")
}

fn backend_with(vars: Vec<(String, String)>, file: &str, state: &Path) -> Arc<dyn JobBackend> {
    let cfg = Config {
        file: ConfigFile::parse(file).expect("config parses"),
        env: EnvSource::fixed(vars.into_iter().collect()),
    };
    let profile = cfg.profile("cloudpss").expect("profile resolves");
    build(BackendContext {
        profile,
        state_dir: state.to_path_buf(),
    })
    .expect("backend builds")
}

fn backend(sim: &SimHandle, state: &Path) -> Arc<dyn JobBackend> {
    backend_with(sim.env(), "", state)
}

fn job_spec(args: Value) -> JobSpec {
    JobSpec {
        args: args.as_object().cloned().unwrap_or_default(),
        options: json!({"function": "function/CloudPSS/emtp"})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..JobSpec::default()
    }
}

/// A token as the official SDK gets one (the simulator's `sdk-token` endpoint).
async fn sdk_token(sim: &SimHandle) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/_sim/cloudpss/sdk-token", sim.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["token"].as_str().unwrap().to_string()
}

async fn settings(sim: &SimHandle, s: Value) {
    let resp = reqwest::Client::new()
        .put(format!("{}/_sim/cloudpss/settings", sim.base_url))
        .json(&s)
        .send()
        .await
        .expect("settings");
    assert!(resp.status().is_success());
}

/// Polls until the job is terminal (a safety cap only; not a timing assertion).
async fn until_terminal(b: &dyn JobBackend, id: &str) -> Job {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let job = b.status(id).await.expect("status");
        if job.terminal || Instant::now() > deadline {
            return job;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn finished(b: &dyn JobBackend, args: Value) -> Job {
    let job = b.submit(&job_spec(args)).await.expect("submit");
    until_terminal(b, &job.id).await
}

async fn logs(b: &dyn JobBackend, id: &str, ndjson: bool, follow: bool) -> Result<String, Error> {
    let mut out: Vec<u8> = Vec::new();
    let req = LogsRequest {
        follow,
        ndjson,
        ..LogsRequest::default()
    };
    b.logs(id, req, &mut out).await?;
    Ok(String::from_utf8(out).expect("utf-8"))
}

fn messages(ndjson: &str) -> Vec<Value> {
    ndjson
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

/// The `step i of n` log lines, in order.
fn steps(msgs: &[Value]) -> Vec<u64> {
    msgs.iter()
        .filter_map(|m| m.pointer("/data/content").and_then(Value::as_str))
        .filter_map(|c| c.strip_prefix("step "))
        .filter_map(|c| c.split(' ').next().and_then(|n| n.parse().ok()))
        .collect()
}

async fn stream_requests(sim: &SimHandle) -> u64 {
    let stats: Value = reqwest::get(format!("{}/_sim/stats", sim.base_url))
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    stats["endpoints"]["GET /api/streams/id/{id}"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn logs_prints_every_message_with_templates_expanded_and_log_lines_in_table_mode() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = finished(&*b, json!({"sim_messages": 30})).await;
    assert_eq!(job.native_state.as_deref(), Some("COMPLETED"));

    let all = messages(&logs(&*b, &job.id, true, false).await.unwrap());
    assert_eq!(all.len(), 31, "30 messages and terminate");
    assert!(all.iter().all(Value::is_object), "no template leaks out");
    let last = all.last().unwrap();
    assert_eq!(last["type"], "terminate");
    assert_eq!(last["data"]["status"], "resolved", "agrees with COMPLETED");
    let plot = all.iter().find(|m| m["type"] == "plot").expect("a plot");
    assert_eq!(plot["verb"], "append");
    assert_eq!(plot["data"]["traces"][0]["name"], "Va");
    assert!(plot["data"]["traces"][0]["x"].is_array(), "=t was expanded");

    let table = logs(&*b, &job.id, false, false).await.unwrap();
    let log_count = all.iter().filter(|m| m["type"] == "log").count();
    assert_eq!(table.lines().count(), log_count);
    assert!(
        table
            .lines()
            .next()
            .unwrap()
            .starts_with("info     jobctl-sim: running function/CloudPSS/emtp"),
        "{table}"
    );
    assert!(table.contains("warning  step 49") || !table.contains("warning"));
    assert!(!table.contains('\u{1b}'), "no colour unless asked");
}

#[tokio::test]
async fn a_dropped_sse_or_websocket_stream_resumes_without_losing_or_repeating_messages() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = finished(&*b, json!({"sim_messages": 120})).await;
    let clean = logs(&*b, &job.id, true, false).await.unwrap();
    let expected_steps = steps(&messages(&clean));
    assert!(expected_steps.len() > 50);

    let before = stream_requests(&sim).await;
    settings(&sim, json!({"drop_after": 25})).await;
    let resumed = logs(&*b, &job.id, true, false).await.unwrap();
    assert_eq!(
        resumed, clean,
        "SSE: the same messages, once each, in order"
    );
    assert!(
        stream_requests(&sim).await - before >= 5,
        "the stream was reopened"
    );

    settings(&sim, json!({"drop_after": 33, "sse_testing_only": true})).await;
    let over_ws = logs(&*b, &job.id, true, false).await.unwrap();
    assert_eq!(over_ws, clean, "WebSocket: the same messages");
    assert_eq!(steps(&messages(&over_ws)), expected_steps);
}

#[tokio::test]
async fn a_ten_thousand_message_stream_arrives_whole_across_dropped_connections() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = finished(&*b, json!({"sim_messages": 10000})).await;
    settings(&sim, json!({"drop_after": 3000})).await;
    let all = messages(&logs(&*b, &job.id, true, false).await.unwrap());
    assert_eq!(all.len(), 10001);
    let s = steps(&all);
    let mut sorted = s.clone();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(s, sorted, "in order, no duplicates");
    assert_eq!(all.last().unwrap()["type"], "terminate");
}

#[tokio::test]
async fn logs_without_follow_prints_what_exists_and_follow_waits_for_the_end() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b
        .submit(&job_spec(json!({"sim_messages": 40, "sim_duration": 30})))
        .await
        .unwrap();
    // Wait until some output exists (safety cap only).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut now = Vec::new();
    while now.len() < 3 && Instant::now() < deadline {
        now = messages(&logs(&*b, &job.id, true, false).await.unwrap());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        now.len() >= 3 && now.len() < 41,
        "{} messages so far",
        now.len()
    );
    assert!(
        now.iter().all(|m| m["type"] != "terminate"),
        "still running"
    );

    let follower = {
        let b = b.clone();
        let id = job.id.clone();
        tokio::spawn(async move { logs(&*b, &id, true, true).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.abort(&job.id).await.unwrap();
    let followed = messages(&follower.await.unwrap().unwrap());
    let last = followed.last().unwrap();
    assert_eq!(last["type"], "terminate");
    assert_eq!(last["data"]["status"], "aborted");
    assert_eq!(
        until_terminal(&*b, &job.id).await.native_state.as_deref(),
        Some("ABORTED"),
        "terminate agrees with the job's final state"
    );
    assert_eq!(&followed[..now.len()], &now[..], "the same beginning");
}

#[tokio::test]
async fn a_stream_the_platform_cleaned_up_is_not_found_with_a_clear_message() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = finished(&*b, json!({"sim_messages": 5})).await;
    let output = job.extra["output"].as_str().unwrap().to_string();
    assert_eq!(output.len(), 36, "a hyphenated UUID: {output}");
    settings(&sim, json!({"cleaned": [output]})).await;
    let e = logs(&*b, &job.id, false, false).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert_eq!(e.exit_code(), 6);
    assert!(e.message.contains("cleaned it up"), "{e}");
    let fetch_dir = tempfile::tempdir().unwrap();
    let e = b
        .fetch(&job.id, fetch_dir.path(), &|_| {})
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 6);
}

#[tokio::test]
async fn fetch_writes_messages_plots_tables_and_an_index() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = finished(&*b, json!({"sim_messages": 30})).await;
    let dest = tempfile::tempdir().unwrap();
    let arts = b.fetch(&job.id, dest.path(), &|_| {}).await.unwrap();
    let names: Vec<&str> = arts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(
        names,
        ["messages.ndjson", "plot-1.csv", "table-1.csv", "index.json"]
    );
    let read = |n: &str| std::fs::read_to_string(dest.path().join(n)).unwrap();
    assert_eq!(read("messages.ndjson").lines().count(), 31);
    let plot = read("plot-1.csv");
    let plot_messages = messages(&read("messages.ndjson"))
        .iter()
        .filter(|m| m["type"] == "plot")
        .count();
    assert_eq!(plot.lines().next(), Some("Va x,Va y,Vb x,Vb y"));
    assert_eq!(
        plot.lines().count(),
        1 + 2 * plot_messages,
        "appends merged"
    );
    assert_eq!(
        read("table-1.csv"),
        "step,value,note\n1,0.5,a\n2,1.5,\"b, c\"\n3,2.5,\"d\"\"e\"\n"
    );
    let index: Value = serde_json::from_str(&read("index.json")).unwrap();
    assert_eq!(index["terminate"], "resolved");
    assert_eq!(index["plots"][0]["file"], "plot-1.csv");
    assert_eq!(index["tables"][0]["rows"], 3);
    assert_eq!(
        arts.iter().map(|a| a.bytes).sum::<u64>(),
        names
            .iter()
            .map(|n| std::fs::metadata(dest.path().join(n)).unwrap().len())
            .sum::<u64>()
    );
}

#[tokio::test]
async fn a_watched_running_job_carries_its_stream_progress_and_title() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    // As `watch` does: only a wait follows the streams of running jobs.
    b.begin_watch();
    let job = b
        .submit(&job_spec(json!({"sim_messages": 40, "sim_duration": 4})))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = None;
    while Instant::now() < deadline {
        let j = b.status(&job.id).await.unwrap();
        if j.progress.is_some() {
            seen = Some(j);
            break;
        }
        if j.terminal {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let j = seen.expect("progress appeared while the job ran");
    let p = j.progress.unwrap();
    assert!((0.0..=1.0).contains(&p), "{p}");
    let title = j.extra["progress_title"].as_str().unwrap();
    assert!(
        title.starts_with("step ") && title.ends_with(" of 40"),
        "{title}"
    );
}

#[tokio::test]
async fn queues_lists_the_job_policies() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let q = b.queues().await.unwrap();
    let names: Vec<&str> = q.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["1", "2"]);
    assert_eq!(q[0].limits["policy"], "default");
    assert_eq!(q[0].limits["max_cpu"], 8);
    assert_eq!(q[1].limits["max_cpu"], 64);
    assert_eq!(q[1].limits["max_duration"], 86400.0);
}

#[tokio::test]
async fn status_falls_back_to_the_job_query_before_saying_not_found() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = b.submit(&job_spec(json!({}))).await.unwrap();
    let count = |ops: &Value, k: &str| ops[k].as_u64().unwrap_or(0);
    let ops = || async {
        reqwest::get(format!("{}/_sim/cloudpss/operations", sim.base_url))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = ops().await;
    let r = b
        .statuses(&[job.id.clone(), "no-such-job".to_string()])
        .await;
    assert!(r[0].is_ok());
    assert_eq!(r[1].as_ref().unwrap_err().kind, ErrorKind::NotFound);
    let after = ops().await;
    assert_eq!(count(&after, "jobs") - count(&before, "jobs"), 1);
    assert_eq!(
        count(&after, "job") - count(&before, "job"),
        1,
        "one job() for the id jobs() did not return"
    );
}

#[tokio::test]
async fn the_sdk_environment_works_alone_and_token_files_take_it_by_reference() {
    let sim = start().await;
    let token = sdk_token(&sim).await;
    let dir = tempfile::tempdir().unwrap();
    let sdk_env = vec![
        ("CLOUDPSS_API_URL".to_string(), format!("{}/", sim.base_url)),
        ("CLOUDPSS_TOKEN".to_string(), token.clone()),
    ];
    let b = backend_with(sdk_env, "", dir.path());
    let job = finished(&*b, json!({"sim_messages": 3})).await;
    assert_eq!(job.owner.as_deref(), Some("jobctl"));
    assert_eq!(
        messages(&logs(&*b, &job.id, true, false).await.unwrap()).len(),
        4
    );
    let checks = jobctl::backend::collect_checks(&*b).await;
    assert!(checks.iter().all(|c| c.ok), "{checks:?}");

    let file = "[profiles.cloudpss]\nbackend = \"cloudpss\"\napi_url = \"URL\"\ntoken_env = \"MY_SDK_TOKEN\"\n"
        .replace("URL", &format!("{}/", sim.base_url));
    let b = backend_with(
        vec![("MY_SDK_TOKEN".into(), token.clone())],
        &file,
        dir.path(),
    );
    assert_eq!(b.status(&job.id).await.unwrap().id, job.id);

    let inline = "[profiles.x]\nbackend = \"cloudpss\"\ntoken = \"abc\"\n";
    let cfg = Config {
        file: ConfigFile::parse(inline).unwrap(),
        env: EnvSource::fixed(Default::default()),
    };
    assert_eq!(cfg.profile("x").unwrap_err().exit_code(), 2);
}

#[tokio::test]
async fn the_simulator_takes_gzip_bodies_and_integral_floats_and_always_sends_its_version() {
    use std::io::Write;
    let sim = start().await;
    let body = json!({"query": "{ systemInfo { machineId } }"}).to_string();
    let mut gz = GzipWriter::default();
    gz.write_all(body.as_bytes()).unwrap();
    let resp = reqwest::Client::new()
        .post(format!("{}/graphql", sim.base_url))
        .header("content-type", "application/json+gzip; charset=utf-8")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-cloudpss-version"], "4");
    let v: Value = resp.json().await.unwrap();
    assert!(v["data"]["systemInfo"]["machineId"].is_string(), "{v}");

    let bad = reqwest::Client::new()
        .post(format!("{}/graphql", sim.base_url))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    assert_eq!(bad.headers()["x-cloudpss-version"], "4");

    // The official SDK sends `cpu` as 2.0 (parsed from `@tres`); `Int` takes it.
    let token = sdk_token(&sim).await;
    let create = json!({
        "query": "mutation($input: CreateJobInput!) { job: createJob(input: $input) { id policy { tres { cpu } } } }",
        "variables": {"input": {"context": ["function/CloudPSS/emtp"], "args": {},
            "policy": {"queue": 1.0, "priority": 0, "tres": {"cpu": 2.0, "ecpu": 0, "mem": 0}}}}
    });
    let v: Value = reqwest::Client::new()
        .post(format!("{}/graphql", sim.base_url))
        .bearer_auth(&token)
        .json(&create)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["data"]["job"]["policy"]["tres"]["cpu"], 2, "{v}");

    settings(&sim, json!({"version": "5"})).await;
    let gone = reqwest::get(format!("{}/api/streams/id/nope", sim.base_url))
        .await
        .unwrap();
    assert_eq!(gone.status().as_u16(), 404);
    assert_eq!(gone.headers()["x-cloudpss-version"], "5");
    assert!(gone.text().await.unwrap().starts_with("CMS_NO_STREAM_ID:"));
}

/// A minimal gzip writer (stored blocks) so the test needs no compression crate.
#[derive(Default)]
struct GzipWriter {
    data: Vec<u8>,
}

impl std::io::Write for GzipWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl GzipWriter {
    fn finish(self) -> std::io::Result<Vec<u8>> {
        let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];
        for (i, chunk) in self.data.chunks(65535).enumerate() {
            let last = (i + 1) * 65535 >= self.data.len();
            out.push(u8::from(last));
            let len = chunk.len() as u16;
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&(!len).to_le_bytes());
            out.extend_from_slice(chunk);
        }
        out.extend_from_slice(&crc32(&self.data).to_le_bytes());
        out.extend_from_slice(&(self.data.len() as u32).to_le_bytes());
        Ok(out)
    }
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for b in data {
        crc ^= *b as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A sink that accepts `room` bytes, then fails like a closed pipe (`jobctl logs | head`).
struct ClosedPipe {
    room: usize,
}

impl tokio::io::AsyncWrite for ClosedPipe {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.room == 0 {
            return std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
        }
        let n = buf.len().min(self.room);
        self.room -= n;
        std::task::Poll::Ready(Ok(n))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

#[tokio::test]
async fn logs_stops_quietly_when_its_reader_goes_away() {
    let sim = start().await;
    let dir = tempfile::tempdir().unwrap();
    let b = backend(&sim, dir.path());
    let job = finished(&*b, json!({"sim_messages": 5000})).await;
    let mut pipe = ClosedPipe { room: 200 };
    let req = LogsRequest {
        ndjson: true,
        ..LogsRequest::default()
    };
    // The cap only keeps a regression (a reader blocked on a full channel) from hanging CI.
    let r = tokio::time::timeout(Duration::from_secs(120), b.logs(&job.id, req, &mut pipe))
        .await
        .expect("logs returns once its output is closed");
    assert!(r.is_ok(), "a closed pipe is not an error: {r:?}");
}

#[tokio::test]
async fn the_websocket_fallback_trusts_what_the_profile_trusts() {
    let sim = sim::start(SimConfig {
        tls: true,
        job_duration: Duration::from_millis(300),
        queue_duration: Duration::from_millis(50),
        ..SimConfig::default()
    })
    .await
    .expect("simulator starts");
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, sim.cert_pem.as_deref().unwrap()).unwrap();
    let with = |extra: (&str, &str)| {
        let mut vars = sim.env();
        vars.push((extra.0.to_string(), extra.1.to_string()));
        backend_with(vars, "", dir.path())
    };
    let trusted = with(("CLOUDPSS_CA_CERT", pem.to_str().unwrap()));
    let job = finished(&*trusted, json!({"sim_messages": 12})).await;
    // The simulator's own certificate is self-signed: its settings are changed without checks.
    let resp = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .put(format!("{}/_sim/cloudpss/settings", sim.base_url))
        .json(&json!({"sse_testing_only": true}))
        .send()
        .await
        .expect("settings");
    assert!(resp.status().is_success());

    let over_ws = messages(
        &logs(&*trusted, &job.id, true, false)
            .await
            .expect("ca_cert"),
    );
    assert_eq!(over_ws.len(), 13, "12 messages and terminate over wss");
    let insecure = with(("CLOUDPSS_INSECURE", "true"));
    let again = logs(&*insecure, &job.id, true, false)
        .await
        .expect("insecure");
    assert_eq!(messages(&again), over_ws);
}
