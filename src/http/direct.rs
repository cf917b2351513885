//! The connection pool API requests travel through: hyper's client with rustls, the same one
//! reqwest wraps, without reqwest's per-request layers. API calls never follow redirects,
//! never go through reqwest's own retry (jobctl's is in [`super::HttpClient::send`]) and get
//! their deadline from the caller; those layers copied each request's headers and parsed its
//! URL twice more, which cost about a fifth of a bare client's CPU per request
//! (BENCHMARKS.md). Requests are still built with reqwest's builder, so the backends keep one
//! way of describing a request, and downloads (which stream to disk and may be redirected)
//! stay with reqwest. So does everything when the environment names a proxy: reqwest honours
//! `HTTPS_PROXY` and its kin, this client does not.

use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use reqwest::header::{ACCEPT, HeaderValue, USER_AGENT};
use std::time::Duration;

/// The proxy variables reqwest reads from the environment.
const PROXY_VARIABLES: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// A pooled HTTP/1.1 and HTTP/2 client for requests whose whole answer is read.
#[derive(Clone)]
pub(super) struct Direct {
    client: Client<HttpsConnector<HttpConnector>, reqwest::Body>,
}

impl std::fmt::Debug for Direct {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Direct")
    }
}

/// Why a request got no answer.
pub(super) enum Failure {
    /// The request could not be turned into an HTTP request (a malformed URL).
    Build(String),
    /// The connection or the exchange failed; the request's URL, without its query.
    Transport(hyper_util::client::legacy::Error, String),
}

impl Direct {
    /// A client trusting what `tls` trusts; `None` when a proxy is set in the environment.
    pub(super) fn new(tls: rustls::ClientConfig, connect_timeout: Duration) -> Option<Self> {
        if proxied() {
            return None;
        }
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(https);
        Some(Direct { client })
    }

    /// Sends `request` and returns the answer once its head has arrived.
    pub(super) async fn send(
        &self,
        request: reqwest::Request,
    ) -> Result<http::Response<Incoming>, Failure> {
        let mut request: http::Request<reqwest::Body> = request
            .try_into()
            .map_err(|e: reqwest::Error| Failure::Build(super::error_chain(&e)))?;
        let headers = request.headers_mut();
        // What reqwest's client adds to every request, so platforms see no difference.
        headers
            .entry(USER_AGENT)
            .or_insert(HeaderValue::from_static(super::USER_AGENT));
        headers
            .entry(ACCEPT)
            .or_insert(HeaderValue::from_static("*/*"));
        // A clone shares the parsed URL's bytes; it is formatted only if the request fails.
        let uri = request.uri().clone();
        self.client.request(request).await.map_err(|e| {
            let place = format!(
                "{}://{}{}",
                uri.scheme_str().unwrap_or("http"),
                uri.authority().map_or("", |a| a.as_str()),
                uri.path()
            );
            Failure::Transport(e, place)
        })
    }
}

/// Whether the environment names a proxy (any non-empty proxy variable).
fn proxied() -> bool {
    PROXY_VARIABLES
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|value| !value.is_empty()))
}
