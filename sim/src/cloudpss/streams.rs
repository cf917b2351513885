//! Simulated CloudPSS message streams: `GET /api/streams/id/{output}` over Server-Sent Events
//! and over WebSocket, framed as the official SDK (5.0.9) reads them.
//!
//! - SSE: `event: info` first; then one event per stream entry, `id: <n>` and
//!   `data: <ISO timestamp> <base64 of UBJSON>`; `: heartbeat` comments while idle; after the
//!   job's `terminate` message, `event: complete`. An unknown stream is HTTP 404 with body
//!   `CMS_NO_STREAM_ID:<id>`.
//! - WebSocket: one binary UBJSON frame `{id, timestamp, data: <UBJSON bytes>}` per entry;
//!   after `terminate` a normal close; an unknown stream closes with reason
//!   `CMS_NO_STREAM_ID:<id>`.
//! - `?from=<id>` resumes strictly after that entry.
//!
//! What a job writes is derived from its arguments: `sim_messages` (default 20) messages before
//! `terminate`, mixing log lines, `progress-1` updates, `plot-1` appends and a closing
//! `table-1`; log lines and plot appends travel as templates (two template definitions open
//! the stream). Entries are released as the job's run advances, so a running job's stream
//! grows while it is read.
//!
//! Test hooks (`GET`/`PUT /_sim/cloudpss/settings`): `drop_after` cuts every stream connection
//! after that many entries (clients must resume with `from`), `sse_testing_only` makes the SSE
//! `info` event say the SSE API is for testing only (the SDK then switches to WebSocket),
//! `heartbeat_ms`, `version` (the `X-Cloudpss-Version` header) and `cleaned` (stream ids
//! answered as unknown, as after the platform's retention period).

use super::{Failure, SimJob, Store, ubjson};
use crate::Phase;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `info` text that tells the SDK to use WebSocket instead of SSE.
pub const TESTING_ONLY: &str = "This API is for testing only, do not use it in production.";

/// Messages a job writes unless its `sim_messages` argument says otherwise.
pub const DEFAULT_MESSAGES: u64 = 20;

/// Id of the log-line template.
const LOG_TEMPLATE: i64 = 1;
/// Id of the plot-append template.
const PLOT_TEMPLATE: i64 = 2;

/// Stream settings switchable at run time.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Cut every stream connection after this many entries (a dropped connection).
    pub drop_after: Option<u64>,
    /// Make SSE announce itself as "for testing only" (clients should use WebSocket).
    pub sse_testing_only: bool,
    /// Milliseconds between heartbeats on an idle SSE stream.
    pub heartbeat_ms: u64,
    /// `X-Cloudpss-Version` sent on every answer.
    pub version: String,
    /// Output stream ids the platform has "cleaned up" (answered as unknown).
    pub cleaned: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            drop_after: None,
            sse_testing_only: false,
            heartbeat_ms: 15_000,
            version: super::SERVER_VERSION.to_string(),
            cleaned: Vec::new(),
        }
    }
}

/// Everything the stream of one job holds: entries in order (without `terminate`).
struct Plan {
    entries: Vec<Value>,
    /// Epoch ms of the first entry and the spacing between entries.
    start_ms: i64,
    step_ms: f64,
}

/// How many messages (after template expansion) a job writes before `terminate`.
fn message_count(job: &SimJob) -> u64 {
    job.args
        .get("sim_messages")
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f.max(0.0) as u64)))
        .unwrap_or(DEFAULT_MESSAGES)
        .min(1_000_000)
}

fn log(level: &str, content: String) -> Value {
    json!({"type": "log", "version": 1, "verb": "create", "data": {"level": level, "content": content}})
}

/// The entries of a job's stream, deterministic for the job.
fn plan(job: &SimJob) -> Plan {
    let n = message_count(job);
    let mut entries = vec![
        json!([LOG_TEMPLATE, 1, {"level": "info"},
            {"type": "log", "version": 1, "verb": "create", "data": {"level": "=level", "content": "=content"}}]),
        json!([PLOT_TEMPLATE, 1, {"v": "append"},
            {"key": "plot-1", "version": 1, "type": "plot", "verb": "=v", "data": {"title": "Bus voltage",
              "traces": [{"name": "Va", "type": "scattergl", "x": "=t", "y": "=va"},
                         {"name": "Vb", "type": "scattergl", "x": "=t", "y": "=vb"}]}}]),
    ];
    let function = job.context.first().cloned().unwrap_or_default();
    let fails = !job.life.plan.succeed;
    for i in 0..n {
        let entry = if i == 0 {
            log(
                "info",
                format!("jobctl-sim: running {function} as job {}", job.id),
            )
        } else if i + 1 == n && n > 1 {
            if fails {
                log(
                    "error",
                    "simulated failure: the function raised an error".into(),
                )
            } else {
                json!({"key": "table-1", "version": 1, "type": "table", "verb": "replace",
                    "data": {"title": "Summary", "columns": [
                        {"name": "step", "type": "number", "data": [1, 2, 3]},
                        {"name": "value", "type": "number", "data": [0.5, 1.5, 2.5]},
                        {"name": "note", "type": "text", "data": ["a", "b, c", "d\"e"]}]}})
            }
        } else if i % 10 == 5 {
            json!({"key": "progress-1", "version": 1, "verb": "replace", "type": "progress",
                "data": {"value": i as f64 / n as f64, "title": format!("step {i} of {n}")}})
        } else if i % 10 == 3 || i % 10 == 7 {
            let t = i as f64 / 1000.0;
            json!([PLOT_TEMPLATE, 1, {"t": [t, t + 0.0005], "va": [i as f64, i as f64 + 0.5], "vb": [-(i as f64), -(i as f64) - 0.5]}])
        } else if i % 50 == 49 {
            log(
                "warning",
                format!("step {i}: iteration limit nearly reached"),
            )
        } else {
            json!([LOG_TEMPLATE, 1, {"content": format!("step {i} of {n}")}])
        };
        entries.push(entry);
    }
    let start_ms = job.start_ms().unwrap_or_else(|| job.create_ms());
    let run_ms = job.life.plan.run.as_millis() as f64;
    Plan {
        step_ms: run_ms / (entries.len().max(1) as f64),
        entries,
        start_ms,
    }
}

/// The job's end status as `terminate` reports it, once it has ended.
fn end_status(job: &SimJob, now: Instant) -> Option<&'static str> {
    match job.life.phase_at(now) {
        Phase::Succeeded => Some("resolved"),
        Phase::Failed => Some(match job.failure {
            Failure::TimedOut => "timed_out",
            Failure::Failed | Failure::Killed => "rejected",
        }),
        Phase::Canceled => Some("aborted"),
        _ => None,
    }
}

/// Share of the run done at `at` (0 before the start, 1 at the end).
fn run_fraction(job: &SimJob, at: Instant) -> f64 {
    let t = at.saturating_duration_since(job.life.created);
    let plan = job.life.plan;
    if t < plan.queue {
        return 0.0;
    }
    ((t - plan.queue).as_secs_f64() / plan.run.as_secs_f64().max(1e-9)).clamp(0.0, 1.0)
}

/// Entries released now (out of `total`), and the end status once the job ended.
fn released(job: &SimJob, total: usize, now: Instant) -> (usize, Option<&'static str>) {
    let upto = |f: f64| ((f * total as f64).floor() as usize).min(total);
    match end_status(job, now) {
        Some("aborted") => {
            let at = job.life.cancel_requested.unwrap_or(now);
            (upto(run_fraction(job, at)), Some("aborted"))
        }
        Some(s) => (total, Some(s)),
        None => match job.life.phase_at(now) {
            Phase::Cancelling => {
                let at = job.life.cancel_requested.unwrap_or(now);
                (upto(run_fraction(job, at)), None)
            }
            // The last entries wait for the end (a job is not done before it ends).
            _ => (
                upto(run_fraction(job, now)).min(total.saturating_sub(1)),
                None,
            ),
        },
    }
}

/// One entry ready to send.
struct Entry {
    id: u64,
    timestamp_ms: i64,
    payload: Vec<u8>,
}

/// What a connection should do next.
enum Step {
    Send(Vec<Entry>),
    Wait,
    Done,
}

/// Reads the store: entries after `next` that are released now.
struct Cursor {
    store: Arc<Store>,
    output: String,
    plan: Plan,
    next: u64,
}

impl Cursor {
    fn open(store: Arc<Store>, output: &str, from: Option<u64>) -> Option<Self> {
        let plan = {
            let inner = store.lock();
            if inner.settings.cleaned.iter().any(|c| c == output) {
                return None;
            }
            let job = inner.jobs.iter().find(|j| j.output == output)?;
            plan(job)
        };
        Some(Cursor {
            store,
            output: output.to_string(),
            plan,
            next: from.map_or(0, |f| f + 1),
        })
    }

    fn step(&mut self) -> Step {
        let total = self.plan.entries.len();
        let (upto, end) = {
            let inner = self.store.lock();
            match inner.jobs.iter().find(|j| j.output == self.output) {
                Some(job) => released(job, total, Instant::now()),
                None => return Step::Done,
            }
        };
        let mut out = Vec::new();
        while (self.next as usize) < upto && out.len() < 256 {
            let i = self.next as usize;
            out.push(Entry {
                id: self.next,
                timestamp_ms: self.time(i),
                payload: ubjson::encode(&self.plan.entries[i]),
            });
            self.next += 1;
        }
        if !out.is_empty() {
            return Step::Send(out);
        }
        match end {
            // `terminate` takes the id right after the last released entry.
            Some(status) if self.next as usize == upto => {
                let msg = json!({"type": "terminate", "version": 1, "verb": "", "data": {"status": status}});
                let e = Entry {
                    id: self.next,
                    timestamp_ms: self.time(upto),
                    payload: ubjson::encode(&msg),
                };
                self.next += 1;
                Step::Send(vec![e])
            }
            Some(_) => Step::Done,
            None => Step::Wait,
        }
    }

    fn time(&self, i: usize) -> i64 {
        self.plan.start_ms + (i as f64 * self.plan.step_ms) as i64
    }
}

/// `GET /api/streams/id/{id}`: WebSocket when the request asks to upgrade, else SSE.
pub(crate) async fn stream_handler(
    State(store): State<Arc<Store>>,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    req: Request,
) -> Response {
    let from = match q.get("from").map(|f| f.trim().parse::<u64>()) {
        None => None,
        Some(Ok(f)) => Some(f),
        Some(Err(_)) => {
            return (
                StatusCode::BAD_REQUEST,
                "invalid `from`: expected a message id of this stream",
            )
                .into_response();
        }
    };
    let settings = store.settings();
    let wants_ws = req
        .headers()
        .get("upgrade")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if wants_ws {
        let (mut parts, _) = req.into_parts();
        return match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
            Ok(ws) => ws.on_upgrade(move |socket| websocket(socket, store, id, from, settings)),
            Err(rejection) => rejection.into_response(),
        };
    }
    let Some(cursor) = Cursor::open(store, &id, from) else {
        return (StatusCode::NOT_FOUND, format!("CMS_NO_STREAM_ID:{id}")).into_response();
    };
    sse(cursor, id, settings)
}

fn sse(mut cursor: Cursor, id: String, settings: Settings) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, std::io::Error>>(64);
    tokio::spawn(async move {
        let info = if settings.sse_testing_only {
            TESTING_ONLY.to_string()
        } else {
            format!("message stream {id} (jobctl-sim)")
        };
        if tx
            .send(Ok(Event::default().event("info").data(info)))
            .await
            .is_err()
        {
            return;
        }
        let heartbeat = Duration::from_millis(settings.heartbeat_ms.max(10));
        let mut sent = 0u64;
        let mut idle_since = Instant::now();
        loop {
            match cursor.step() {
                Step::Send(entries) => {
                    for e in entries {
                        if settings.drop_after.is_some_and(|d| sent >= d) {
                            // Let what was sent reach the client, then break the connection
                            // (hyper discards unwritten data when a body fails).
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            let _ = tx
                                .send(Err(std::io::Error::other("injected fault: stream dropped")))
                                .await;
                            return;
                        }
                        let ts = chrono::DateTime::from_timestamp_millis(e.timestamp_ms)
                            .unwrap_or_default()
                            .format("%Y-%m-%dT%H:%M:%S%.3fZ");
                        let data = base64::engine::general_purpose::STANDARD.encode(&e.payload);
                        let ev = Event::default()
                            .id(e.id.to_string())
                            .data(format!("{ts} {data}"));
                        if tx.send(Ok(ev)).await.is_err() {
                            return;
                        }
                        sent += 1;
                    }
                    idle_since = Instant::now();
                }
                Step::Wait => {
                    if idle_since.elapsed() >= heartbeat {
                        if tx
                            .send(Ok(Event::default().comment("heartbeat")))
                            .await
                            .is_err()
                        {
                            return;
                        }
                        idle_since = Instant::now();
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Step::Done => {
                    let _ = tx
                        .send(Ok(Event::default().event("complete").data("complete")))
                        .await;
                    return;
                }
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut resp = Sse::new(stream).into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache"),
    );
    resp
}

async fn websocket(
    mut socket: WebSocket,
    store: Arc<Store>,
    id: String,
    from: Option<u64>,
    settings: Settings,
) {
    let Some(mut cursor) = Cursor::open(store, &id, from) else {
        let _ = socket
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: format!("CMS_NO_STREAM_ID:{id}").into(),
            })))
            .await;
        return;
    };
    let mut sent = 0u64;
    loop {
        match cursor.step() {
            Step::Send(entries) => {
                for e in entries {
                    if settings.drop_after.is_some_and(|d| sent >= d) {
                        // Dropping the socket closes the connection without a close frame.
                        return;
                    }
                    let frame = ubjson::envelope(&e.id.to_string(), e.timestamp_ms, &e.payload);
                    if socket.send(Message::Binary(frame.into())).await.is_err() {
                        return;
                    }
                    sent += 1;
                }
            }
            Step::Wait => tokio::time::sleep(Duration::from_millis(20)).await,
            Step::Done => {
                let _ = socket
                    .send(Message::Close(Some(CloseFrame {
                        code: 1000,
                        reason: "complete".into(),
                    })))
                    .await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JobPlan, Lifecycle};
    use serde_json::Map;

    fn job(messages: u64, succeed: bool) -> SimJob {
        let mut args = Map::new();
        args.insert("sim_messages".into(), json!(messages));
        SimJob {
            seq: 0,
            id: "j".into(),
            user: "u".into(),
            context: vec!["function/CloudPSS/hello".into()],
            args,
            queue: 1,
            policy_name: "default".into(),
            tres: (1, 0.0, 0.0),
            priority: 0.0,
            max_duration: 60.0,
            debug: None,
            life: Lifecycle::new(JobPlan {
                queue: Duration::from_secs(1),
                run: Duration::from_secs(10),
                succeed,
                exit_code: 0,
            }),
            failure: Failure::Failed,
            input: "i".into(),
            output: "o".into(),
        }
    }

    #[test]
    fn a_job_writes_the_requested_number_of_messages_after_two_templates() {
        let p = plan(&job(30, true));
        assert_eq!(p.entries.len(), 32);
        assert!(p.entries[0].is_array() && p.entries[1].is_array());
        assert_eq!(p.entries[31]["type"], "table");
        let failing = plan(&job(30, false));
        assert_eq!(failing.entries[31]["data"]["level"], "error");
    }

    #[test]
    fn entries_are_released_as_the_run_advances_and_terminate_follows_the_end() {
        let j = job(8, true);
        let total = plan(&j).entries.len();
        let t0 = j.life.created;
        assert_eq!(released(&j, total, t0), (0, None));
        let (mid, end) = released(&j, total, t0 + Duration::from_secs(6));
        assert_eq!((mid, end), (total / 2, None));
        assert_eq!(
            released(&j, total, t0 + Duration::from_secs(12)),
            (total, Some("resolved"))
        );
    }
}
