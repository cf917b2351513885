//! Reading a job's output: the CloudPSS message stream named by `Job.output`.
//!
//! Like the official SDK, jobctl reads `GET <host>/api/streams/id/<output>` as Server-Sent
//! Events first (no Authorization header: the stream id is the capability) and switches to the
//! WebSocket form of the same URL when the SSE `info` event says the SSE API is for testing
//! only. Each entry is UBJSON ([`super::ubjson`]); list entries are templates
//! ([`super::templates`]). A connection that ends without the stream's end (`complete` on
//! SSE, a close frame on WebSocket) is reopened with `?from=<last id>`, so no message is lost
//! or repeated; five failed attempts in a row without progress give up (exit 7). A stream the
//! platform no longer has (`CMS_NO_STREAM_ID`) is "not found" (exit 6).

use super::templates::{Entry, Templates};
use super::ubjson;
use crate::error::{Error, Result};
use crate::http::HttpClient;
use base64::Engine;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;

/// The SSE `info` text by which the platform says to use WebSocket instead.
const TESTING_ONLY: &str = "for testing only";

/// Without `--follow`: the stream has caught up with the job once nothing arrives for this long,
/// or once an entry was written this long after the read began (by the platform's clock, from
/// the `Date` header): "what exists now", as the SDK's `isEnd` judges it.
pub const CAUGHT_UP_AFTER: Duration = Duration::from_secs(1);

/// Margin for the one-second precision of the `Date` header.
const CLOCK_MARGIN_MS: i64 = 1500;

/// With `--follow`: no byte (not even a heartbeat) for this long means the connection is dead.
/// The platform sends heartbeats more often than every 60 s (the SDK's read timeout).
const READ_TIMEOUT: Duration = Duration::from_secs(75);

/// Failed connection attempts in a row (without a message in between) before giving up.
const MAX_ATTEMPTS: u32 = 5;

/// Pause before reconnecting after a failed attempt (as the SDK does).
const RETRY_PAUSE: Duration = Duration::from_secs(2);

/// How a read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The stream is complete: the job wrote everything it will write.
    Complete,
    /// Not following, and everything written so far has been read.
    CaughtUp,
}

/// Reads message streams of one platform.
#[derive(Debug, Clone)]
pub struct StreamClient {
    http: HttpClient,
    /// `scheme://host[:port]` the streams are served from.
    origin: url::Url,
}

/// One read in progress: where to resume and the templates seen so far.
struct Reader<'a> {
    client: &'a StreamClient,
    id: &'a str,
    follow: bool,
    last_id: Option<String>,
    templates: Templates,
    tx: mpsc::Sender<Value>,
    /// Messages delivered since the last failed attempt.
    progressed: bool,
    /// Local epoch ms when the read began.
    started_ms: i64,
    /// Without `follow`: entries stamped after this (platform clock, epoch ms) are "new".
    cutoff_ms: Option<i64>,
}

/// What one connection ended with.
enum Conn {
    Ended(End),
    /// Dropped before the end: reconnect from the last id.
    Dropped(String),
    /// The platform says SSE is for testing only.
    UseWebSocket,
}

impl StreamClient {
    /// A client for streams served from the host of `base`.
    pub fn new(http: HttpClient, base: &url::Url) -> Result<Self> {
        let mut origin = base.clone();
        if origin.host_str().is_none() {
            return Err(Error::usage(format!(
                "CloudPSS URL {base} has no host to read output streams from"
            )));
        }
        origin.set_path("/");
        origin.set_query(None);
        origin.set_fragment(None);
        Ok(StreamClient { http, origin })
    }

    /// The URL of stream `id` (`ws`/`wss` when `websocket`), resuming after `from`.
    pub fn url(&self, id: &str, from: Option<&str>, websocket: bool) -> Result<url::Url> {
        let mut u = self.origin.clone();
        if websocket {
            let scheme = if u.scheme() == "https" { "wss" } else { "ws" };
            u.set_scheme(scheme)
                .map_err(|_| Error::usage(format!("cannot use {} for WebSocket", self.origin)))?;
        }
        u.path_segments_mut()
            .map_err(|_| Error::usage(format!("{} cannot hold a path", self.origin)))?
            .clear()
            .extend(["api", "streams", "id", id]);
        if let Some(f) = from {
            u.query_pairs_mut().append_pair("from", f);
        }
        Ok(u)
    }

    /// Reads stream `id`, sending every message (templates expanded) to `tx` in order.
    /// Without `follow` it returns once it has caught up; with it, when the stream ends.
    pub async fn read(&self, id: &str, follow: bool, tx: mpsc::Sender<Value>) -> Result<End> {
        if id.trim().is_empty() {
            return Err(Error::not_found(
                "the job has no output stream (it has not started)",
            ));
        }
        let mut r = Reader {
            client: self,
            id,
            follow,
            last_id: None,
            templates: Templates::default(),
            tx,
            progressed: false,
            started_ms: chrono::Utc::now().timestamp_millis(),
            cutoff_ms: None,
        };
        r.run().await
    }
}

/// The "stream is gone" error, worded for users.
fn cleaned_up(id: &str) -> Error {
    Error::not_found(format!(
        "the output stream {id} of this job no longer exists: the platform has cleaned it up (CloudPSS keeps job output for a limited number of days)"
    ))
    .with_code("CMS_NO_STREAM_ID")
}

impl Reader<'_> {
    async fn run(&mut self) -> Result<End> {
        let mut websocket = false;
        let mut failures = 0u32;
        loop {
            self.progressed = false;
            let outcome = if websocket {
                self.websocket().await?
            } else {
                self.sse().await?
            };
            match outcome {
                Conn::Ended(end) => return Ok(end),
                Conn::UseWebSocket => {
                    tracing::debug!(stream = self.id, "SSE is for testing only; using WebSocket");
                    websocket = true;
                }
                Conn::Dropped(why) => {
                    if self.progressed {
                        failures = 0;
                    } else {
                        failures += 1;
                        if failures >= MAX_ATTEMPTS {
                            return Err(Error::unavailable(format!(
                                "cannot read the output stream {}: {why} ({failures} attempts)",
                                self.id
                            )));
                        }
                        tokio::time::sleep(RETRY_PAUSE).await;
                    }
                    tracing::debug!(stream = self.id, from = ?self.last_id, "stream dropped ({why}); resuming");
                }
            }
        }
    }

    /// Learns the platform's clock from a response's `Date` header (once per read).
    fn clock(&mut self, headers: &reqwest::header::HeaderMap) {
        if self.cutoff_ms.is_some() {
            return;
        }
        let now = chrono::Utc::now().timestamp_millis();
        let offset = headers
            .get("date")
            .and_then(|d| d.to_str().ok())
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(d).ok())
            .map_or(0, |d| d.timestamp_millis() - now);
        self.cutoff_ms = Some(self.started_ms + offset + CLOCK_MARGIN_MS);
    }

    /// Without `follow`, whether an entry stamped `ts` was written after the read began.
    fn is_new(&self, ts: Option<i64>) -> bool {
        !self.follow && matches!((ts, self.cutoff_ms), (Some(t), Some(c)) if t > c)
    }

    /// Handles one decoded entry: expands templates and passes messages on.
    async fn entry(&mut self, id: Option<String>, payload: &[u8]) -> Result<()> {
        let value = ubjson::decode(payload).map_err(|e| {
            Error::protocol(format!(
                "output stream {} sent an unreadable message{}: {e}",
                self.id,
                id.as_deref()
                    .map(|i| format!(" (id {i})"))
                    .unwrap_or_default()
            ))
        })?;
        let messages = match self.templates.accept(value) {
            Entry::Message(m) => vec![m],
            Entry::Expanded(ms) => ms,
            Entry::Defined => Vec::new(),
        };
        for m in messages {
            if self.tx.send(m).await.is_err() {
                return Err(Error::io(
                    "reading the output stream",
                    "its reader went away",
                ));
            }
        }
        if id.is_some() {
            self.last_id = id;
        }
        self.progressed = true;
        Ok(())
    }

    fn idle_limit(&self) -> Duration {
        if self.follow {
            READ_TIMEOUT
        } else {
            CAUGHT_UP_AFTER
        }
    }

    async fn sse(&mut self) -> Result<Conn> {
        let url = self.client.url(self.id, self.last_id.as_deref(), false)?;
        let resp = self
            .client
            .http
            .send_stream(|c| {
                c.get(url.clone())
                    .header("accept", "text/event-stream")
                    .header("cache-control", "no-cache")
                    // The stream lives as long as the job: no total deadline, only idle limits.
                    .timeout(Duration::from_secs(7 * 86_400))
            })
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) if e.retryable => return Ok(Conn::Dropped(e.message)),
            Err(e) => return Err(e),
        };
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            if status.as_u16() == 404 || body.contains("CMS_NO_STREAM_ID") {
                return Err(cleaned_up(self.id));
            }
            if status.is_server_error() || status.as_u16() == 429 {
                return Ok(Conn::Dropped(format!("HTTP {}", status.as_u16())));
            }
            return Err(Error::protocol(format!(
                "reading output stream {} failed: HTTP {}: {}",
                self.id,
                status.as_u16(),
                crate::http::snippet(body.as_bytes())
            ))
            .with_code(format!("HTTP {}", status.as_u16())));
        }
        self.clock(resp.headers());
        let mut body = resp.bytes_stream();
        let mut parser = SseParser::default();
        loop {
            let chunk = match tokio::time::timeout(self.idle_limit(), body.next()).await {
                Err(_) if !self.follow => return Ok(Conn::Ended(End::CaughtUp)),
                Err(_) => return Ok(Conn::Dropped("no data or heartbeat for 75 s".into())),
                Ok(None) => return Ok(Conn::Dropped("the platform closed the stream".into())),
                Ok(Some(Err(e))) => return Ok(Conn::Dropped(e.to_string())),
                Ok(Some(Ok(c))) => c,
            };
            for ev in parser.push(&chunk) {
                match ev.event.as_str() {
                    "info" => {
                        if ev.data.to_ascii_lowercase().contains(TESTING_ONLY) {
                            return Ok(Conn::UseWebSocket);
                        }
                    }
                    "complete" => return Ok(Conn::Ended(End::Complete)),
                    _ => {
                        let payload = sse_payload(&ev.data).map_err(|m| {
                            Error::protocol(format!(
                                "output stream {} sent an unreadable event: {m}",
                                self.id
                            ))
                        })?;
                        if let Some((ts, p)) = payload {
                            if self.is_new(ts) {
                                return Ok(Conn::Ended(End::CaughtUp));
                            }
                            self.entry(ev.id, &p).await?;
                        }
                    }
                }
            }
        }
    }

    async fn websocket(&mut self) -> Result<Conn> {
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = self.client.url(self.id, self.last_id.as_deref(), true)?;
        let mut req = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::usage(format!("invalid stream URL: {e}")))?;
        if let Ok(ua) = concat!("jobctl/", env!("CARGO_PKG_VERSION")).parse() {
            req.headers_mut().insert("user-agent", ua);
        }
        // The profile's `ca_cert` / `insecure` apply here as to every HTTP request.
        let tls = self
            .client
            .http
            .tls_config()
            .map(tokio_tungstenite::Connector::Rustls);
        let connect = tokio_tungstenite::connect_async_tls_with_config(req, None, false, tls);
        let mut ws = match tokio::time::timeout(Duration::from_secs(30), connect).await {
            Err(_) => return Ok(Conn::Dropped("WebSocket connect timed out".into())),
            Ok(Err(e)) => return Ok(Conn::Dropped(format!("WebSocket: {e}"))),
            Ok(Ok((ws, resp))) => {
                self.clock(resp.headers());
                ws
            }
        };
        loop {
            let msg = match tokio::time::timeout(self.idle_limit(), ws.next()).await {
                Err(_) if !self.follow => {
                    let _ = ws.close(None).await;
                    return Ok(Conn::Ended(End::CaughtUp));
                }
                Err(_) => return Ok(Conn::Dropped("no data for 75 s".into())),
                Ok(None) => {
                    return Ok(Conn::Dropped(
                        "connection closed without a close frame".into(),
                    ));
                }
                Ok(Some(Err(e))) => return Ok(Conn::Dropped(format!("WebSocket: {e}"))),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Binary(frame) => {
                    let (id, ts, data) = envelope(&frame).map_err(|m| {
                        Error::protocol(format!(
                            "output stream {} sent an unreadable frame: {m}",
                            self.id
                        ))
                    })?;
                    if self.is_new(ts) {
                        let _ = ws.close(None).await;
                        return Ok(Conn::Ended(End::CaughtUp));
                    }
                    self.entry(id, &data).await?;
                }
                Message::Close(frame) => {
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    if reason.starts_with("CMS_NO_STREAM_ID:") {
                        return Err(cleaned_up(self.id));
                    }
                    return Ok(Conn::Ended(End::Complete));
                }
                Message::Ping(p) => {
                    let _ = ws.send(Message::Pong(p)).await;
                }
                _ => {}
            }
        }
    }
}

/// An entry's time (epoch ms), and its UBJSON bytes.
type Payload = (Option<i64>, Vec<u8>);

/// An SSE message event's data: `<timestamp> <base64 UBJSON>`; blank data is no entry.
fn sse_payload(data: &str) -> std::result::Result<Option<Payload>, String> {
    let raw = data.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    let (ts, b64) = match raw.split_once(' ') {
        Some((t, b)) => (
            chrono::NaiveDateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.fZ")
                .ok()
                .map(|t| t.and_utc().timestamp_millis()),
            b.trim(),
        ),
        None => (None, raw),
    };
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map(|b| Some((ts, b)))
        .map_err(|e| format!("invalid base64: {e}"))
}

/// A WebSocket frame: UBJSON `{id, timestamp, data: <bytes>}` → (id, epoch ms, data bytes).
type Frame = (Option<String>, Option<i64>, Vec<u8>);

fn envelope(frame: &[u8]) -> std::result::Result<Frame, String> {
    let v = ubjson::decode(frame).map_err(|e| e.to_string())?;
    let id = match v.get("id") {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let data = v
        .get("data")
        .and_then(ubjson::bytes)
        .ok_or("the frame has no byte-string `data`")?;
    let ts = v.get("timestamp").and_then(Value::as_f64).map(|t| t as i64);
    Ok((id, ts, data))
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SseEvent {
    /// `event:` (default `message`).
    pub event: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// `id:`, when given.
    pub id: Option<String>,
}

/// An incremental `text/event-stream` parser (comments are heartbeats and are skipped).
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: Option<String>,
    data: Vec<String>,
    id: Option<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events completed by them.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<SseEvent> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            let mut line: Vec<u8> = self.buf.drain(..=nl).collect();
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            if line.is_empty() {
                if !self.data.is_empty() {
                    out.push(SseEvent {
                        event: self.event.take().unwrap_or_else(|| "message".into()),
                        data: self.data.join("\n"),
                        id: self.id.take(),
                    });
                }
                self.data.clear();
                self.event = None;
                self.id = None;
                continue;
            }
            if line.starts_with(':') {
                continue;
            }
            let (field, value) = match line.split_once(':') {
                Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
                None => (line.as_str(), ""),
            };
            match field {
                "event" => self.event = Some(value.to_string()),
                "data" => self.data.push(value.to_string()),
                "id" => self.id = Some(value.to_string()),
                _ => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_across_chunks_with_comments_and_crlf() {
        let mut p = SseParser::default();
        assert!(p.push(b"event: info\r\ndata: hello\r\n").is_empty());
        let evs = p.push(b"\r\n: heartbeat\n\nid: 7\ndata: a\ndata: b\n\n");
        assert_eq!(
            evs,
            vec![
                SseEvent {
                    event: "info".into(),
                    data: "hello".into(),
                    id: None
                },
                SseEvent {
                    event: "message".into(),
                    data: "a\nb".into(),
                    id: Some("7".into())
                },
            ]
        );
    }

    #[test]
    fn sse_payload_is_a_timestamp_and_base64() {
        assert_eq!(
            sse_payload("2026-01-01T00:00:00.250Z VQE=").unwrap(),
            Some((Some(1_767_225_600_250), vec![b'U', 1]))
        );
        assert_eq!(sse_payload("  ").unwrap(), None);
        assert!(sse_payload("2026 !!!").is_err());
    }

    #[test]
    fn stream_urls_sit_on_the_host_root_like_the_sdk_builds_them() {
        let http = HttpClient::new(
            &crate::config::Profile::new("p", crate::config::BackendKind::Cloudpss),
            "cloudpss",
        )
        .unwrap();
        let base = url::Url::parse("https://cloudpss.net/some/prefix/graphql").unwrap();
        let c = StreamClient::new(http, &base).unwrap();
        assert_eq!(
            c.url("a-b", Some("12"), false).unwrap().as_str(),
            "https://cloudpss.net/api/streams/id/a-b?from=12"
        );
        assert_eq!(
            c.url("a-b", None, true).unwrap().as_str(),
            "wss://cloudpss.net/api/streams/id/a-b"
        );
    }
}
