//! HTTP concerns shared by every remote backend, written once: client construction (TLS
//! options, timeouts), retries with backoff and `Retry-After`, token caching with transparent
//! renewal, and pagination.

pub mod backoff;
pub mod pagination;
pub mod token;

use crate::config::Profile;
use crate::error::{Error, ErrorKind, Result};
use bytes::Bytes;
use reqwest::{RequestBuilder, StatusCode, header::HeaderMap};
use std::time::{Duration, Instant};

pub use backoff::Backoff;

/// Default budget for retrying one request: at most 30 s (README "Exit codes").
pub const DEFAULT_RETRY_BUDGET: Duration = Duration::from_secs(30);

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
                "unusable answer (HTTP {}): {e}; body starts with: {}",
                self.status.as_u16(),
                snippet(&self.body)
            ))
        })
    }

    /// The body as (lossy) text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The first 200 characters of a body, for error messages.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let t: String = text.chars().take(200).collect();
    t.replace(['\n', '\r'], " ")
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

/// A reqwest client plus the retry policy of one profile.
#[derive(Debug, Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    retry_budget: Duration,
    profile: String,
    backend: &'static str,
}

impl HttpClient {
    /// Builds a client honouring the profile's `ca_cert`, `insecure` and `timeout`.
    pub fn new(profile: &Profile, backend: &'static str) -> Result<Self> {
        let mut builder = reqwest::Client::builder()
            .user_agent(concat!("jobctl/", env!("CARGO_PKG_VERSION")))
            .timeout(profile.timeout)
            .connect_timeout(profile.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(30));
        if let Some(path) = &profile.ca_cert {
            let pem = std::fs::read(path).map_err(|e| {
                Error::usage(format!(
                    "profile '{}': cannot read ca_cert {}: {e}",
                    profile.name,
                    path.display()
                ))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
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
            tracing::warn!(
                profile = %profile.name,
                "TLS certificate verification is disabled for this profile (insecure)"
            );
            eprintln!(
                "warning: TLS certificate verification is disabled for profile '{}' (insecure)",
                profile.name
            );
            builder = builder.danger_accept_invalid_certs(true);
        }
        let client = builder
            .build()
            .map_err(|e| Error::usage(format!("cannot build HTTP client: {e}")))?;
        let retry_budget = std::env::var("JOBCTL_RETRY_BUDGET")
            .ok()
            .and_then(|v| crate::config::parse_duration(&v).ok())
            .unwrap_or(DEFAULT_RETRY_BUDGET);
        Ok(HttpClient {
            client,
            retry_budget,
            profile: profile.name.clone(),
            backend,
        })
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
            let (retry, err_or_resp) = match outcome {
                Ok(resp) => {
                    let retry = transient(&resp)
                        && (idempotency == Idempotency::Idempotent
                            || resp.status == StatusCode::TOO_MANY_REQUESTS);
                    (retry, Ok(resp))
                }
                Err((e, never_sent)) => {
                    // A certificate the client does not trust will not change on its own.
                    let retry =
                        e.retryable && (idempotency == Idempotency::Idempotent || never_sent);
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
                Err(e) => (self.transport_error(e).retryable, None),
            };
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
        let resp = build(&self.client)
            .send()
            .await
            .map_err(|e| (self.transport_error(&e), e.is_connect()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp
            .bytes()
            .await
            .map_err(|e| (self.transport_error(&e), false))?;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    /// Classifies a transport error; TLS failures are called out because users must act on
    /// them (`ca_cert` / `insecure`).
    pub fn transport_error(&self, e: &reqwest::Error) -> Error {
        let chain = error_chain(e);
        let lower = chain.to_ascii_lowercase();
        let msg = if lower.contains("certificate") || lower.contains("tls") {
            format!(
                "TLS verification failed: {chain} (trust the server with ca_cert, or set insecure)"
            )
        } else if e.is_timeout() {
            format!("request timed out: {chain}")
        } else if e.is_connect() {
            format!("cannot connect: {chain}")
        } else {
            format!("request failed: {chain}")
        };
        let mut err = Error::new(ErrorKind::Unavailable, msg);
        err.retryable = !(lower.contains("certificate") || lower.contains("invalidcert"));
        err
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
