//! Raw requests of the octoplant export API (`/v1/order…`, `/v1/status/api_version`) and the
//! classification of its error answers.

use super::auth::{Credentials, password_grant};
use super::mapping::{Operation, RpcStatus};
use crate::config::Profile;
use crate::error::{Error, ErrorKind, Result};
use crate::http::token::{CachedToken, TokenSource, TokenStore};
use crate::http::{HttpClient, HttpResponse, Idempotency, default_transient, snippet};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// Backend name used in errors and the HTTP client's logs.
pub const BACKEND: &str = "octoplant";

/// Upper bound for one download; the profile's `timeout` still limits each silent stretch.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// Error bodies larger than this are not read further (only a snippet is shown anyway).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// Turns a non-success answer into an error: a `google.rpc.Status` body gives the gRPC code and
/// message; anything else is classified by HTTP status.
pub fn classify(status: StatusCode, body: &[u8]) -> Error {
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        // Some gateways wrap the status as `{"error": {code, message, details}}`.
        let candidate = match v.get("code") {
            Some(_) => Some(v.clone()),
            None => v.get("error").filter(|e| e.get("code").is_some()).cloned(),
        };
        if let Some(rpc) = candidate.and_then(|c| serde_json::from_value::<RpcStatus>(c).ok()) {
            if rpc.code.is_some() {
                return rpc.to_error();
            }
        }
    }
    let text = format!("HTTP {}: {}", status.as_u16(), snippet(body));
    let e = match status.as_u16() {
        400 | 422 => Error::usage(text),
        401 => Error::auth(text).expired_token(),
        403 => Error::auth(text),
        404 => Error::not_found(text),
        408 | 429 | 502..=504 => Error::unavailable(text),
        _ if status.is_server_error() => Error::platform(text),
        _ => Error::protocol(text),
    };
    e.with_code(status.as_u16().to_string())
}

/// The octoplant export API of one profile: base URL, HTTP client, credentials, token cache.
#[derive(Debug)]
pub struct Api {
    http: HttpClient,
    base: Url,
    creds: Option<Credentials>,
    /// Why the credentials could not be read, reported when a request needs them.
    creds_error: Option<Error>,
    tokens: TokenStore,
    timeout: Duration,
}

impl Api {
    /// Builds the API client of a profile (no request is sent).
    pub fn new(profile: &Profile, base: Url, cache_dir: &Path) -> Result<Self> {
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(Error::usage(format!(
                "profile '{}': the octoplant URL must be http(s)://HOST:PORT, got '{base}'",
                profile.name
            )));
        }
        let (creds, creds_error) = match Credentials::from_profile(profile) {
            Ok(c) => (Some(c), None),
            Err(e) => (None, Some(e)),
        };
        // A token cached for another server, user or client is never sent.
        let mut tokens = TokenStore::new(cache_dir, &profile.name);
        if let Some(c) = &creds {
            tokens = tokens.bound_to(c.identity(&base).to_string());
        }
        Ok(Api {
            http: HttpClient::new(profile, BACKEND)?,
            tokens,
            base,
            creds,
            creds_error,
            timeout: profile.timeout,
        })
    }

    /// The base URL plus path segments (each percent-encoded as needed).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        u
    }

    /// The configured user, for messages.
    pub fn username(&self) -> Option<&str> {
        self.creds.as_ref().map(|c| c.username.as_str())
    }

    /// The configured client id, for messages.
    pub fn client_id(&self) -> Option<&str> {
        self.creds.as_ref().map(|c| c.client_id.as_str())
    }

    /// The per-request timeout, used as the stall limit of downloads.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The HTTP client (transport error classification for streamed bodies).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// A fresh password grant, without touching the cache.
    pub async fn grant(&self) -> Result<CachedToken> {
        let creds = match (&self.creds, &self.creds_error) {
            (Some(c), _) => c,
            (None, Some(e)) => return Err(e.clone()),
            (None, None) => return Err(Error::usage("octoplant credentials are missing")),
        };
        password_grant(
            &self.http,
            &self.url(&["v1", "oauth2", "token"]),
            creds,
            creds.identity(&self.base),
        )
        .await
    }

    /// The token store of this profile.
    pub fn tokens(&self) -> &TokenStore {
        &self.tokens
    }

    /// Runs `op` with a token, logging in again once when the server refuses it.
    async fn with_token<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<CachedToken>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.tokens.with_token(self, op).await
    }

    /// Sends an authenticated request and returns its successful answer.
    async fn authed(
        &self,
        idempotency: Idempotency,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<HttpResponse> {
        let build = &build;
        self.with_token(|t: Arc<CachedToken>| async move {
            let resp = self
                .http
                .send(idempotency, default_transient, |c| {
                    build(c)
                        .bearer_auth(t.token.expose())
                        .header(reqwest::header::ACCEPT, "application/json")
                })
                .await?;
            if resp.status.is_success() {
                Ok(resp)
            } else {
                Err(classify(resp.status, &resp.body))
            }
        })
        .await
    }

    /// `POST /v1/order`: orders an export.
    pub async fn run_export(&self, contents: &Map<String, Value>) -> Result<Operation> {
        let url = self.url(&["v1", "order"]);
        let body = json!({ "exportContents": contents });
        let resp = self
            .authed(Idempotency::NotIdempotent, |c| {
                c.post(url.clone()).json(&body)
            })
            .await?;
        Operation::parse(&resp)
    }

    /// `GET /v1/order/{name}`: the order's current state.
    pub async fn get_order(&self, name: &str) -> Result<Operation> {
        let url = self.url(&["v1", "order", name]);
        let resp = self
            .authed(Idempotency::Idempotent, |c| c.get(url.clone()))
            .await?;
        Operation::parse(&resp)
    }

    /// `POST /v1/order/{name}/cancel`.
    pub async fn cancel(&self, name: &str) -> Result<()> {
        let url = self.url(&["v1", "order", name, "cancel"]);
        // Cancelling twice is harmless, so a lost answer may be retried.
        self.authed(Idempotency::Idempotent, |c| c.post(url.clone()))
            .await
            .map(|_| ())
    }

    /// `GET /v1/order/{name}/download`: the streaming answer, once its status is a success.
    pub async fn download(&self, name: &str) -> Result<reqwest::Response> {
        let url = self.url(&["v1", "order", name, "download"]);
        let url = &url;
        self.with_token(|t: Arc<CachedToken>| async move {
            let resp = self
                .http
                .send_stream(|c| {
                    c.get(url.clone())
                        .bearer_auth(t.token.expose())
                        .header(
                            reqwest::header::ACCEPT,
                            "application/zip, application/octet-stream, application/json",
                        )
                        .timeout(DOWNLOAD_TIMEOUT)
                })
                .await?;
            if resp.status().is_success() {
                return Ok(resp);
            }
            let status = resp.status();
            let body = read_capped(resp).await;
            Err(classify(status, &body))
        })
        .await
    }

    /// `GET /v1/status/api_version` without a token: the raw answer, whatever its status.
    pub async fn api_version_raw(&self) -> Result<HttpResponse> {
        let url = self.url(&["v1", "status", "api_version"]);
        self.http
            .send(Idempotency::Idempotent, default_transient, |c| {
                c.get(url.clone())
                    .header(reqwest::header::ACCEPT, "application/json")
            })
            .await
    }

    /// `GET /v1/status/api_version` with a token.
    pub async fn api_version(&self) -> Result<String> {
        let url = self.url(&["v1", "status", "api_version"]);
        let resp = self
            .authed(Idempotency::Idempotent, |c| c.get(url.clone()))
            .await?;
        version_of(&resp)
    }
}

/// The `version` of an api_version answer.
pub fn version_of(resp: &HttpResponse) -> Result<String> {
    let v: Value = resp.json()?;
    v.get("version")
        .and_then(Value::as_str)
        .map(String::from)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Protocol,
                format!("api_version answer has no version: {}", snippet(&resp.body)),
            )
        })
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of an error answer.
async fn read_capped(mut resp: reqwest::Response) -> Vec<u8> {
    let mut out = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ERROR_BODY {
            out.truncate(MAX_ERROR_BODY);
            break;
        }
    }
    out
}

/// The store obtains octoplant tokens with a password grant.
impl TokenSource for Api {
    async fn login(&self) -> Result<CachedToken> {
        self.grant().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_answers_are_classified_by_grpc_code_then_http_status() {
        let e = classify(
            StatusCode::BAD_REQUEST,
            br#"{"code":3,"message":"invalid exportContents","details":[{"@type":"type.googleapis.com/google.rpc.BadRequest"}]}"#,
        );
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(
            e.message.contains("INVALID_ARGUMENT") && e.message.contains("BadRequest"),
            "{e}"
        );
        assert_eq!(e.code.as_deref(), Some("3"));
        let e = classify(StatusCode::FORBIDDEN, br#"{"code":7,"message":"no"}"#);
        assert_eq!((e.kind, e.token_expired), (ErrorKind::Auth, false));
        let e = classify(
            StatusCode::UNAUTHORIZED,
            br#"{"error":{"code":16,"message":"expired"}}"#,
        );
        assert_eq!((e.kind, e.token_expired), (ErrorKind::Auth, true));
        let e = classify(StatusCode::SERVICE_UNAVAILABLE, b"injected fault");
        assert_eq!(e.kind, ErrorKind::Unavailable);
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
        assert!(e.message.contains("HTTP 503"), "{e}");
        let e = classify(StatusCode::NOT_FOUND, b"<html>nope</html>");
        assert_eq!(e.kind, ErrorKind::NotFound);
    }
}
