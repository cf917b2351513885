//! HTTP concerns shared by every remote backend, written once: client construction (TLS
//! options, timeouts), retries with backoff and `Retry-After`, token caching with transparent
//! renewal, and pagination.

pub mod backoff;
pub mod delivery;
mod direct;
mod log;
pub mod pagination;
pub mod redact;
pub mod tls;
pub mod token;

use crate::config::Profile;
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use http_body_util::Either;
use reqwest::{RequestBuilder, StatusCode, header::HeaderMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use backoff::Backoff;

/// The `User-Agent` of every request.
const USER_AGENT: &str = concat!("jobctl/", env!("CARGO_PKG_VERSION"));

/// Default budget for retrying one request: at most 30 s (README "Exit codes").
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);

/// The largest API answer (JSON, text, error pages) jobctl reads: 16 MiB. Downloads
/// ([`HttpClient::send_stream`]) are streamed to disk and have no such cap.
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;

/// Default budget for retrying a refused connection (CONTRACT §6: one-shot commands give up
/// on a platform that refuses connections after at most 5 s).
pub const DEFAULT_REFUSED_BUDGET: Duration = Duration::from_secs(5);

/// Milliseconds a refused connection is retried for, process-wide; `u64::MAX` = unset.
static REFUSED_BUDGET_MS: AtomicU64 = AtomicU64::new(u64::MAX);
/// When connections to the platform started being refused (reset by any answer).
static REFUSED_SINCE: Mutex<Option<Instant>> = Mutex::new(None);
/// Profiles already warned about disabled TLS verification (the warning appears once).
static INSECURE_WARNED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Sets how long this process retries connections a platform refuses (`doctor`: zero, so each
/// check reports at once). Counted from the first refusal, across requests, so a command that
/// makes several requests still gives up within the budget.
pub fn set_refused_budget(budget: Duration) {
    REFUSED_BUDGET_MS.store(budget.as_millis() as u64, Ordering::Relaxed);
}

fn refused_budget() -> Duration {
    match REFUSED_BUDGET_MS.load(Ordering::Relaxed) {
        u64::MAX => DEFAULT_REFUSED_BUDGET,
        ms => Duration::from_millis(ms),
    }
}

/// Records a connection outcome; returns how long connections have been refused.
fn note_connection(refused: bool) -> Duration {
    let Ok(mut since) = REFUSED_SINCE.lock() else {
        return Duration::ZERO;
    };
    if !refused {
        *since = None;
        return Duration::ZERO;
    }
    since.get_or_insert_with(Instant::now).elapsed()
}

/// Checks that a profile's URL is one jobctl can use (http or https, with a host); anything
/// else is a configuration error found before any request (exit 2).
pub fn check_url(profile: &Profile) -> Result<()> {
    let Some(raw) = profile.url.as_deref() else {
        return Ok(());
    };
    let bad = |why: &str| {
        Error::usage(format!(
            "profile '{}': URL `{raw}` cannot be used: {why} (set {})",
            profile.name,
            profile.setting_name("url")
        ))
    };
    let url = url::Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(&format!(
            "scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("it has no host"));
    }
    Ok(())
}

/// A fully read HTTP answer.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    /// Status code.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// Body bytes.
    pub body: Bytes,
}

impl HttpResponse {
    /// Parses the body as JSON, or explains (with a snippet) why it is unusable.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::protocol(format!(
                "unusable answer (HTTP {}): {}; body starts with: {}",
                self.status.as_u16(),
                redact::serde_reason(&e),
                snippet(&self.body)
            ))
        })
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The start of a body for error messages: capped, masked, and empty of anything inside an
/// authentication exchange (see [`redact`]).
pub fn snippet(body: &[u8]) -> String {
    redact::snippet(body)
}

/// Whether a request may be sent twice without harm. Submissions are not: they are retried
/// only when the request provably did not reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency {
    /// Safe to repeat (reads, cancel, delete).
    Idempotent,
    /// Must not be repeated once it may have been received (submit).
    NotIdempotent,
}

/// Decides whether an HTTP answer is a transient failure worth retrying.
pub type TransientFn = fn(&HttpResponse) -> bool;

/// Default transient classification: 408, 429 and 5xx.
pub fn default_transient(r: &HttpResponse) -> bool {
    r.status == StatusCode::REQUEST_TIMEOUT
        || r.status == StatusCode::TOO_MANY_REQUESTS
        || r.status.is_server_error()
}

/// The HTTP clients and the retry policy of one profile.
#[derive(Debug, Clone)]
pub struct HttpClient {
    /// Builds every request; sends downloads, and everything when a proxy is set.
    client: reqwest::Client,
    /// Sends API requests (see [`direct`]); `None` when a proxy is set.
    direct: Option<direct::Direct>,
    /// The profile's own TLS settings for connections reqwest does not make (WebSocket).
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// How long one attempt may take, answer included (the profile's `timeout`).
    timeout: Duration,
    retry_budget: Duration,
    profile: String,
    backend: &'static str,
}

impl HttpClient {
    /// Builds a client honouring the profile's `ca_cert`, `insecure` and `timeout`.
    pub fn new(profile: &Profile, backend: &'static str) -> Result<Self> {
        check_url(profile)?;
        let connect_timeout = profile.timeout.min(Duration::from_secs(10));
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(profile.timeout)
            .connect_timeout(connect_timeout)
            .pool_idle_timeout(Duration::from_secs(30));
        let ca_pem = match &profile.ca_cert {
            Some(path) => Some(std::fs::read(path).map_err(|e| {
                Error::usage(format!(
                    "profile '{}': cannot read ca_cert {}: {e}",
                    profile.name,
                    path.display()
                ))
            })?),
            None => None,
        };
        if let (Some(path), Some(pem)) = (&profile.ca_cert, &ca_pem) {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                Error::usage(format!(
                    "profile '{}': ca_cert {} is not a PEM certificate: {e}",
                    profile.name,
                    path.display()
                ))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if profile.insecure {
            let first = INSECURE_WARNED.lock().is_ok_and(|mut warned| {
                let first = !warned.contains(&profile.name);
                if first {
                    warned.push(profile.name.clone());
                }
                first
            });
            if first {
                eprintln!(
                    "warning: TLS certificate verification is disabled for profile '{}' (insecure)",
                    profile.name
                );
            }
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| Error::usage(format!("cannot build HTTP client: {e}")))?;
        let config = tls::client_config(&profile.name, ca_pem.as_deref(), profile.insecure)?;
        // A WebSocket with no settings of the profile's own uses its library's defaults.
        let tls =
            (ca_pem.is_some() || profile.insecure).then(|| std::sync::Arc::new(config.clone()));
        let retry_budget = retry_budget_from_env()?;
        Ok(HttpClient {
            client,
            direct: direct::Direct::new(config, connect_timeout),
            tls,
            timeout: profile.timeout,
            retry_budget,
            profile: profile.name.clone(),
            backend,
        })
    }

    /// The profile's TLS settings (`ca_cert`, `insecure`) for a connection reqwest does not
    /// make, such as a WebSocket; `None` when the profile has none.
    pub fn tls_config(&self) -> Option<std::sync::Arc<rustls::ClientConfig>> {
        self.tls.clone()
    }

    /// The underlying reqwest client, for building requests.
    pub fn inner(&self) -> &reqwest::Client {
        &self.client
    }

    /// Overrides the retry budget (used by watch to stay within `--unreachable-timeout`).
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Sends a request built by `build`, retrying transient failures with backoff until the
    /// budget is spent, and returns the fully read answer — whatever its status.
    pub async fn send(
        &self,
        idempotency: Idempotency,
        transient: TransientFn,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<HttpResponse> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let outcome = self.attempt(&build).await;
            if idempotency == Idempotency::NotIdempotent {
                match &outcome {
                    Ok(resp) => delivery::record_answer(resp.status),
                    Err((_, true)) => delivery::record(delivery::Delivery::NotSent),
                    Err((_, false)) => delivery::record(delivery::Delivery::Lost),
                }
            }
            if let Ok(resp) = &outcome {
                if let Some(e) = self.redirected(resp) {
                    return Err(e);
                }
            }
            let refused = matches!(&outcome, Err((_, true)));
            let (retry, err_or_resp) = match outcome {
                Ok(resp) => {
                    let retry = transient(&resp)
                        && (idempotency == Idempotency::Idempotent
                            // Both say the request was not processed: safe to send again.
                            || resp.status == StatusCode::TOO_MANY_REQUESTS
                            || resp.status == StatusCode::SERVICE_UNAVAILABLE);
                    (retry, Ok(resp))
                }
                Err((e, never_sent)) => {
                    // A certificate the client does not trust will not change on its own.
                    let mut retry =
                        e.retryable && (idempotency == Idempotency::Idempotent || never_sent);
                    if never_sent && note_connection(true) >= refused_budget() {
                        retry = false;
                    }
                    (retry, Err(e))
                }
            };
            if !retry {
                return err_or_resp;
            }
            let mut delay = backoff.next_delay();
            if let Ok(resp) = &err_or_resp {
                if let Some(after) = retry_after(&resp.headers) {
                    delay = after;
                }
            }
            let refused_left = if refused {
                refused_budget().saturating_sub(note_connection(true))
            } else {
                Duration::MAX
            };
            delay = delay.min(refused_left);
            if started.elapsed() + delay > self.retry_budget {
                return match err_or_resp {
                    Ok(resp) => Ok(resp),
                    Err(mut e) => {
                        e.message = format!("{} (gave up after {attempt} attempts)", e.message);
                        Err(e)
                    }
                };
            }
            let why = match &err_or_resp {
                Ok(r) => format!("HTTP {}", r.status.as_u16()),
                Err(e) => e.message.clone(),
            };
            tracing::info!(
                profile = %self.profile,
                backend = self.backend,
                attempt,
                delay_ms = delay.as_millis() as u64,
                "transient failure ({why}), retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// An API request the platform redirects is reported, not followed: following would send
    /// a submission on to an address nobody configured (or turn it into a GET, for 301 and
    /// 302), and the usual cause, a `http://` URL behind an HTTPS redirect, is the profile's
    /// to fix.
    fn redirected(&self, resp: &HttpResponse) -> Option<Error> {
        if !matches!(resp.status.as_u16(), 301 | 302 | 303 | 307 | 308) {
            return None;
        }
        let to = resp
            .headers
            .get(reqwest::header::LOCATION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())?;
        // The query may carry a token; the address is what the user needs.
        let to = to.split(['?', '#']).next().unwrap_or_default();
        Some(
            Error::protocol(format!(
                "the platform answered HTTP {} and points to {to}; jobctl does not follow redirects of API requests: set the profile's url to the address the platform points to",
                resp.status.as_u16()
            ))
            .with_code("redirected"),
        )
    }

    /// Like [`Self::send`] but returns the streaming response once its status is known, for
    /// downloads that must not be held in memory. Retries only before the body is read.
    pub async fn send_stream(
        &self,
        build: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<reqwest::Response> {
        let started = Instant::now();
        let mut backoff = Backoff::default();
        loop {
            let result = build(&self.client).send().await;
            let (retryable, after) = match &result {
                Ok(r) => (
                    r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS,
                    retry_after(r.headers()),
                ),
                Err(e) => (
                    self.transport_error(e).retryable
                        && !(e.is_connect() && note_connection(true) >= refused_budget()),
                    None,
                ),
            };
            if result.is_ok() {
                note_connection(false);
            }
            let delay = after.unwrap_or_else(|| backoff.next_delay());
            if !retryable || started.elapsed() + delay > self.retry_budget {
                return result.map_err(|e| self.transport_error(&e));
            }
            tokio::time::sleep(delay).await;
        }
    }

    async fn attempt(
        &self,
        build: &impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> std::result::Result<HttpResponse, (Error, bool)> {
        let request = build(&self.client)
            .build()
            .map_err(|e| (self.transport_error(&e), true))?;
        let started = Instant::now();
        // Formatting the line costs more than a loopback request's parsing: only when shown.
        let line = if tracing::enabled!(tracing::Level::INFO) {
            log::request_line(&request)
        } else {
            String::new()
        };
        log::request_details(&request);
        let exchange = async {
            let (head, body) = match &self.direct {
                Some(direct) => {
                    let resp = direct.send(request).await;
                    let (head, body) = resp.map_err(|f| self.direct_error(f))?.into_parts();
                    (head, Either::Left(body))
                }
                None => {
                    let resp = self.client.execute(request).await;
                    let resp = resp.map_err(|e| (self.transport_error(&e), e.is_connect()))?;
                    let (head, body) = http::Response::from(resp).into_parts();
                    (head, Either::Right(body))
                }
            };
            note_connection(false);
            let body = self.read_answer(&head, body).await?;
            Ok((head, body))
        };
        // One deadline for the connection, the request and the whole answer, as reqwest's.
        let outcome = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err((
                self.describe_transport(
                    format!(
                        "no answer within {}",
                        humantime::format_duration(self.timeout)
                    ),
                    true,
                    false,
                ),
                false,
            )),
        };
        let (head, body) = match outcome {
            Ok(answer) => answer,
            Err(e) => {
                tracing::info!(
                    "{line} -> failed after {} ms",
                    started.elapsed().as_millis()
                );
                return Err(e);
            }
        };
        tracing::info!(
            "{line} -> {} ({} ms, {} bytes)",
            head.status.as_u16(),
            started.elapsed().as_millis(),
            body.len()
        );
        log::response_details(&head.headers, &body);
        Ok(HttpResponse {
            status: head.status,
            headers: head.headers,
            body,
        })
    }

    /// Reads a whole API answer, refusing (exit 7) one larger than [`MAX_ANSWER_BYTES`]
    /// before holding it in memory: a runaway or hostile server must not exhaust the machine.
    async fn read_answer<B>(
        &self,
        head: &http::response::Parts,
        mut body: B,
    ) -> std::result::Result<Bytes, (Error, bool)>
    where
        B: http_body::Body<Data = Bytes> + Unpin,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        use http_body_util::BodyExt;
        let status = head.status.as_u16();
        let too_big = |seen: String| {
            let e = Error::protocol(format!(
                "the answer (HTTP {status}) is larger than the {} MiB jobctl accepts for an API answer ({seen}); it was not read",
                MAX_ANSWER_BYTES / (1024 * 1024)
            ))
            .with_code("answer-too-large");
            (e, false)
        };
        let announced = head
            .headers
            .get(reqwest::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(len) = announced.filter(|l| *l > MAX_ANSWER_BYTES as u64) {
            return Err(too_big(format!("{len} bytes announced")));
        }
        // Most answers arrive as one chunk: that chunk is then the body, with no copy.
        let mut only: Option<Bytes> = None;
        let mut whole = bytes::BytesMut::new();
        let mut seen = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                let chain = format!("error reading the answer: {}", error_chain(&*e));
                (self.describe_transport(chain, false, false), false)
            })?;
            let Ok(chunk) = frame.into_data() else {
                continue; // trailers
            };
            seen += chunk.len();
            if seen > MAX_ANSWER_BYTES {
                return Err(too_big(format!("more than {MAX_ANSWER_BYTES} bytes")));
            }
            if let Some(earlier) = only.take() {
                whole.extend_from_slice(&earlier);
                whole.extend_from_slice(&chunk);
            } else if whole.is_empty() {
                only = Some(chunk);
            } else {
                whole.extend_from_slice(&chunk);
            }
        }
        Ok(only.unwrap_or_else(|| whole.freeze()))
    }

    /// Classifies a failure of the direct client; the second value says whether the request
    /// certainly never left (no connection was made).
    fn direct_error(&self, failure: direct::Failure) -> (Error, bool) {
        match failure {
            direct::Failure::Build(why) => (
                Error::usage(format!("cannot build the request: {why}")),
                true,
            ),
            direct::Failure::Transport(e, url) => {
                let chain = format!("error sending request for url ({url}): {}", error_chain(&e));
                (
                    self.describe_transport(chain, false, e.is_connect()),
                    e.is_connect(),
                )
            }
        }
    }

    /// Classifies a transport error; TLS failures are called out because users must act on
    /// them (`ca_cert` / `insecure`).
    pub fn transport_error(&self, e: &reqwest::Error) -> Error {
        self.describe_transport(error_chain(e), e.is_timeout(), e.is_connect())
    }

    fn describe_transport(&self, chain: String, timeout: bool, connect: bool) -> Error {
        let lower = chain.to_ascii_lowercase();
        let msg = if lower.contains("causedasendentity") {
            // Trusting it changes nothing: TLS refuses a CA certificate as a server's own.
            format!(
                "TLS verification failed: {chain} (the server presents a CA certificate, CA:TRUE, as its own, which TLS refuses even when ca_cert trusts it: the server needs a certificate without CA:TRUE, signed by a CA that ca_cert names; or set insecure)"
            )
        } else if lower.contains("certificate") || lower.contains("tls") {
            format!(
                "TLS verification failed: {chain} (trust the server with ca_cert, or set insecure)"
            )
        } else if timeout {
            format!("request timed out: {chain}")
        } else if connect {
            format!("cannot connect: {chain}")
        } else {
            format!("request failed: {chain}")
        };
        let mut err = Error::new(ErrorKind::Unavailable, msg);
        err.retryable = !(lower.contains("certificate") || lower.contains("invalidcert"));
        err
    }
}

/// `JOBCTL_RETRY_BUDGET`, else [`DEFAULT_RETRY_BUDGET`]. A value that does not parse is a
/// usage error: silently retrying for 30 s when the user asked for 2 s would defeat the point.
fn retry_budget_from_env() -> Result<Duration> {
    match std::env::var("JOBCTL_RETRY_BUDGET") {
        Ok(v) if !v.trim().is_empty() => crate::config::parse_duration(&v)
            .map_err(|e| Error::usage(format!("JOBCTL_RETRY_BUDGET: {}", e.message))),
        Ok(_) => Ok(DEFAULT_RETRY_BUDGET),
        Err(std::env::VarError::NotPresent) => Ok(DEFAULT_RETRY_BUDGET),
        Err(std::env::VarError::NotUnicode(_)) => Err(Error::usage(
            "JOBCTL_RETRY_BUDGET is not valid UTF-8 (write e.g. 30s)",
        )),
    }
}

/// Formats an error with its sources, without the URL's query (which may carry tokens).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    let joined = parts.join(": ");
    // reqwest prints "for url (…)": strip query strings so nothing secret leaks.
    match joined.find('?') {
        Some(i) => {
            let end = joined[i..].find(')').map(|j| i + j).unwrap_or(joined.len());
            format!("{}{}", &joined[..i], &joined[end..])
        }
        None => joined,
    }
}

/// Parses `Retry-After` in seconds (the HTTP-date form is treated as 1 s).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    match v.trim().parse::<u64>() {
        Ok(secs) => Some(Duration::from_secs(secs.min(60))),
        Err(_) => Some(Duration::from_secs(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_presenting_a_ca_certificate_is_told_apart_from_an_untrusted_one() {
        let client = HttpClient::new(
            &Profile::new("t", crate::config::BackendKind::Slurm),
            "test",
        )
        .unwrap();
        let chain = |why: &str| format!("client error (Connect): invalid peer certificate: {why}");
        let ca =
            client.describe_transport(chain("Other(OtherError(CaUsedAsEndEntity))"), false, true);
        assert!(ca.message.contains("without CA:TRUE"), "{}", ca.message);
        assert!(!ca.retryable);
        let unknown = client.describe_transport(chain("UnknownIssuer"), false, true);
        assert!(
            unknown.message.contains("trust the server with ca_cert"),
            "{}",
            unknown.message
        );
        assert!(!unknown.message.contains("CA:TRUE"));
        assert!(!unknown.retryable);
    }

    #[test]
    fn retry_after_is_capped_and_tolerant() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "999".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(60)));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::from_secs(1)));
    }
}
