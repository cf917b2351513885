//! jobctl-sim: one HTTP server that imitates every platform jobctl talks to, so jobctl and its
//! users' pipelines can be tested offline.
//!
//! Each platform lives in its own module and contributes an axum [`Router`]; their paths do
//! not collide, so one port serves all. This module holds what they share: the configuration
//! (job durations, outcomes, credentials, token lifetime), job lifecycles, fault injection
//! (`--error-rate`, `--drop-rate`, `--latency`, `--rate-limit`), request statistics
//! (`GET /_sim/stats`) and the accept loop (plain or TLS).

pub mod ac;
pub mod cloudpss;
pub mod lifecycle;
pub mod nebula;
pub mod octoplant;
pub mod slurm;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use clap::Args;
use hyper_util::rt::TokioIo;
use rand::Rng;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Re-exported so tests that need a one-off misbehaving server build it with the simulator's
/// own server stack instead of depending on axum themselves.
pub use axum;
pub use lifecycle::{JobPlan, Lifecycle, Phase};

/// Parses a duration the way jobctl does: plain seconds (`1.5`) or humantime (`500ms`, `1h30m`).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t).map_err(|e| DurationError {
        message: format!("invalid duration '{s}': {e} (write e.g. 500ms, 30s, 5m, 1h30m)"),
    })
}

/// A duration the simulator could not parse.
#[derive(Debug, Clone)]
pub struct DurationError {
    /// What was wrong, for the command line.
    pub message: String,
}

/// Simulator settings; every flag of `jobctl-sim`.
#[derive(Debug, Clone, Args)]
pub struct SimConfig {
    /// Address to listen on (loopback by default; port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:8700")]
    pub listen: SocketAddr,
    /// How long a job runs before it ends (per job: job argument `sim_duration`).
    #[arg(long, default_value = "3s", value_parser = parse_dur)]
    pub job_duration: Duration,
    /// How long a job waits in the queue before running (per job: `sim_queue`).
    #[arg(long, default_value = "500ms", value_parser = parse_dur)]
    pub queue_duration: Duration,
    /// Fraction of jobs that fail (per job: `sim_outcome=fail|succeed`).
    #[arg(long, default_value_t = 0.0)]
    pub fail_ratio: f64,
    /// Lifetime of issued tokens.
    #[arg(long, default_value = "1h", value_parser = parse_dur)]
    pub token_ttl: Duration,
    /// User name every platform accepts.
    #[arg(long, default_value = "jobctl")]
    pub username: String,
    /// Password every platform accepts.
    #[arg(long, default_value = DEFAULT_PASSWORD)]
    pub password: String,
    /// Fraction of requests answered with HTTP 503.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Fraction of requests whose connection is closed without an answer.
    #[arg(long, default_value_t = 0.0)]
    pub drop_rate: f64,
    /// Added latency per request: fixed (`50ms`) or a range (`20ms..200ms`).
    #[arg(long, default_value = "0ms", value_parser = parse_latency)]
    pub latency: (Duration, Duration),
    /// Requests per second before answering 429 with Retry-After (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    /// Fraction of job creations whose connection is dropped after the job was created.
    #[arg(long, default_value_t = 0.0)]
    pub drop_after_create_rate: f64,
    /// Fraction of job creations answered with garbage (truncated JSON or `{}`) after the job
    /// was created.
    #[arg(long, default_value_t = 0.0)]
    pub garbage_rate: f64,
    /// How long a finished AC job stays in the realtime list before only history has it.
    #[arg(long, default_value = "5m", value_parser = parse_dur)]
    pub ac_realtime_window: Duration,
    /// Serve HTTPS with a self-signed certificate for 127.0.0.1/localhost.
    #[arg(long)]
    pub tls: bool,
    /// Largest page a job list serves, below each platform's own maximum (0: no extra cap), so
    /// a client's paging can be tested with a handful of jobs.
    #[arg(long, default_value_t = 0)]
    pub max_page_size: usize,
}

impl SimConfig {
    /// The page size a job list serves when the platform allows at most `platform_max`.
    pub fn page_cap(&self, platform_max: usize) -> usize {
        match self.max_page_size {
            0 => platform_max,
            cap => platform_max.min(cap),
        }
    }
}

/// The password every platform accepts unless `--password` says otherwise. Deliberately not
/// the simulator's name (which shows in answers, e.g. CloudPSS machine names), so a test that
/// greps output for the password finds only real leaks.
pub const DEFAULT_PASSWORD: &str = "open-sesame-4711";

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            job_duration: Duration::from_millis(1500),
            queue_duration: Duration::from_millis(300),
            fail_ratio: 0.0,
            token_ttl: Duration::from_secs(3600),
            username: "jobctl".into(),
            password: DEFAULT_PASSWORD.into(),
            error_rate: 0.0,
            drop_rate: 0.0,
            latency: (Duration::ZERO, Duration::ZERO),
            rate_limit: 0,
            drop_after_create_rate: 0.0,
            garbage_rate: 0.0,
            ac_realtime_window: Duration::from_secs(300),
            tls: false,
            max_page_size: 0,
        }
    }
}

fn parse_dur(s: &str) -> Result<Duration, String> {
    crate::parse_duration(s).map_err(|e| e.message)
}

fn parse_latency(s: &str) -> Result<(Duration, Duration), String> {
    match s.split_once("..") {
        Some((a, b)) => {
            let (a, b) = (parse_dur(a)?, parse_dur(b)?);
            if a > b {
                return Err(format!("latency range {s} is reversed"));
            }
            Ok((a, b))
        }
        None => parse_dur(s).map(|d| (d, d)),
    }
}

/// Fault injection settings; start from the flags, changeable at run time through
/// `PUT /_sim/faults` (chaos tests turn faults on and off around the moments they test).
#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Share of requests answered 503.
    pub error_rate: f64,
    /// Share of requests whose connection is dropped.
    pub drop_rate: f64,
    /// Added latency range in milliseconds.
    pub latency_ms: (u64, u64),
    /// Requests per second before 429 (0 = off).
    pub rate_limit: u32,
    /// Share of job creations whose connection is dropped *after* the job was created (the
    /// client never learns its id).
    pub drop_after_create_rate: f64,
    /// Share of job creations answered with garbage after the job was created: a truncated
    /// body or `{}` (HTTP 200).
    pub garbage_rate: f64,
    /// How answers to logins and token renewals are spoiled (they carry tokens, so jobctl must
    /// never quote them).
    pub login_garble: Garble,
    /// How every other answer is spoiled.
    pub answer_garble: Garble,
    /// Pads every answer with this many MiB of trailing whitespace (JSON stays valid), to test
    /// jobctl's answer size cap.
    pub pad_mib: u32,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            error_rate: 0.0,
            drop_rate: 0.0,
            latency_ms: (0, 0),
            rate_limit: 0,
            drop_after_create_rate: 0.0,
            garbage_rate: 0.0,
            login_garble: Garble::Off,
            answer_garble: Garble::Off,
            pad_mib: 0,
        }
    }
}

/// A way of spoiling an answer, as broken proxies, half-deployed servers and cut connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Garble {
    /// Answers are left alone.
    #[default]
    Off,
    /// Only the first half of the body is sent.
    Truncate,
    /// HTTP 200 with an HTML page, as a captive portal or a misrouted proxy sends.
    Html,
    /// HTTP 200 with `{}`.
    Empty,
    /// The JSON's values (two levels deep) have the wrong types: arrays become strings, objects
    /// arrays, strings numbers, numbers strings.
    WrongTypes,
}

impl Garble {
    /// `body` spoiled this way; returns the new status and content type when they change.
    pub fn apply(self, body: &[u8]) -> (Option<(u16, &'static str)>, Vec<u8>) {
        match self {
            Garble::Off => (None, body.to_vec()),
            Garble::Truncate => (None, body[..body.len() / 2].to_vec()),
            Garble::Html => (
                Some((200, "text/html")),
                b"<html><head><title>Welcome</title></head><body><h1>It works!</h1></body></html>"
                    .to_vec(),
            ),
            Garble::Empty => (Some((200, "application/json")), b"{}".to_vec()),
            Garble::WrongTypes => match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => (None, wrong_types(v, 2).to_string().into_bytes()),
                Err(_) => (None, body.to_vec()),
            },
        }
    }
}

fn wrong_types(v: serde_json::Value, depth: u8) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(map) if depth > 0 => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, wrong_types(v, depth - 1)))
                .collect(),
        ),
        Value::Object(_) => Value::Array(Vec::new()),
        Value::Array(_) => Value::String("garbled".into()),
        Value::String(_) => Value::from(7),
        Value::Number(n) => Value::String(n.to_string()),
        Value::Bool(b) => Value::String(b.to_string()),
        Value::Null => Value::Bool(true),
    }
}

impl Faults {
    fn from_config(c: &SimConfig) -> Self {
        Faults {
            error_rate: c.error_rate,
            drop_rate: c.drop_rate,
            latency_ms: (
                c.latency.0.as_millis() as u64,
                c.latency.1.as_millis() as u64,
            ),
            rate_limit: c.rate_limit,
            drop_after_create_rate: c.drop_after_create_rate,
            garbage_rate: c.garbage_rate,
            ..Faults::default()
        }
    }
}

/// State shared by every platform module.
#[derive(Debug)]
pub struct SimState {
    /// The configuration.
    pub config: SimConfig,
    faults: Mutex<Faults>,
    /// Requests served per `METHOD path-pattern`.
    stats: Mutex<BTreeMap<String, u64>>,
    rate: Mutex<(Instant, u32)>,
    /// Jobs created per platform, and how often each (platform, label) was created.
    created: Mutex<Created>,
    /// The base URL once bound (`http://127.0.0.1:PORT`).
    pub base_url: Mutex<String>,
    /// Platform requests being served right now, and the most seen at once (what a client's
    /// in-flight limit is checked against).
    in_flight: std::sync::atomic::AtomicU64,
    peak_in_flight: std::sync::atomic::AtomicU64,
}

/// Counts one request as in flight for as long as it lives.
struct InFlight<'a>(&'a SimState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a SimState) -> Self {
        use std::sync::atomic::Ordering;
        let now = state.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        state.peak_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl SimState {
    /// New state for `config`.
    pub fn new(config: SimConfig) -> Arc<Self> {
        Arc::new(SimState {
            faults: Mutex::new(Faults::from_config(&config)),
            config,
            stats: Mutex::new(BTreeMap::new()),
            rate: Mutex::new((Instant::now(), 0)),
            created: Mutex::new(Created::default()),
            base_url: Mutex::new(String::new()),
            in_flight: std::sync::atomic::AtomicU64::new(0),
            peak_in_flight: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The most platform requests served at the same time so far.
    pub fn peak_in_flight(&self) -> u64 {
        self.peak_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Decides a new job's plan from its arguments and the global settings.
    pub fn plan(&self, args: &serde_json::Map<String, serde_json::Value>) -> JobPlan {
        JobPlan::from_args(&self.config, args)
    }

    /// Counts served requests per endpoint.
    pub fn stats(&self) -> BTreeMap<String, u64> {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn count(&self, key: String) {
        if let Ok(mut s) = self.stats.lock() {
            *s.entry(key).or_default() += 1;
        }
    }

    /// Current fault settings.
    pub fn faults(&self) -> Faults {
        self.faults.lock().map(|f| *f).unwrap_or_default()
    }

    /// Replaces the fault settings.
    pub fn set_faults(&self, faults: Faults) {
        if let Ok(mut f) = self.faults.lock() {
            *f = faults;
        }
    }

    /// Records a job created on `platform`, labelled by what a person would recognise it by
    /// (its name, its comment, its arguments), for `GET /_sim/jobs`.
    pub fn record_job(&self, platform: &str, label: &str) {
        if let Ok(mut c) = self.created.lock() {
            *c.per_platform.entry(platform.to_string()).or_default() += 1;
            *c.labels
                .entry((platform.to_string(), label.to_string()))
                .or_default() += 1;
        }
    }

    /// Jobs created so far: total, per platform, and the labels created more than once.
    pub fn jobs_report(&self) -> serde_json::Value {
        let Ok(c) = self.created.lock() else {
            return serde_json::Value::Null;
        };
        let total: u64 = c.per_platform.values().sum();
        let duplicates: Vec<serde_json::Value> = c
            .labels
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|((p, l), n)| serde_json::json!({"platform": p, "label": l, "count": n}))
            .collect();
        serde_json::json!({"total": total, "per_platform": c.per_platform, "duplicates": duplicates})
    }

    /// Marks the answer of a request that created a job, so the after-creation faults
    /// (a dropped connection, garbage in place of the answer) may strike it.
    pub fn after_create(&self, mut resp: Response) -> Response {
        resp.headers_mut()
            .insert(CREATED_HEADER, axum::http::HeaderValue::from_static("1"));
        resp
    }

    fn over_rate_limit(&self) -> bool {
        let limit = self.faults().rate_limit;
        if limit == 0 {
            return false;
        }
        let Ok(mut r) = self.rate.lock() else {
            return false;
        };
        if r.0.elapsed() >= Duration::from_secs(1) {
            *r = (Instant::now(), 0);
        }
        r.1 += 1;
        r.1 > limit
    }
}

/// Jobs created, for `GET /_sim/jobs`.
#[derive(Debug, Default)]
struct Created {
    per_platform: BTreeMap<String, u64>,
    labels: BTreeMap<(String, String), u64>,
}

/// The full router: every platform plus `/_sim/*`.
pub fn router(state: Arc<SimState>) -> Router {
    let sim = Router::new()
        .route("/_sim/stats", axum::routing::get(stats_handler))
        .route("/_sim/health", axum::routing::get(|| async { "ok" }))
        .route("/_sim/jobs", axum::routing::get(jobs_handler))
        .route(
            "/_sim/faults",
            axum::routing::get(get_faults).put(put_faults),
        );
    Router::new()
        .merge(cloudpss::router(state.clone()))
        .merge(ac::router(state.clone()))
        .merge(octoplant::router(state.clone()))
        .merge(nebula::router(state.clone()))
        .merge(slurm::router(state.clone()))
        .merge(sim.with_state(state.clone()))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            garble_answers,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            faults_and_stats,
        ))
        .layer(axum::middleware::from_fn_with_state(state, drop_marker))
}

async fn get_faults(State(state): State<Arc<SimState>>) -> impl IntoResponse {
    axum::Json(state.faults())
}

async fn put_faults(
    State(state): State<Arc<SimState>>,
    axum::Json(faults): axum::Json<Faults>,
) -> impl IntoResponse {
    state.set_faults(faults);
    axum::Json(faults)
}

async fn jobs_handler(State(state): State<Arc<SimState>>) -> impl IntoResponse {
    axum::Json(state.jobs_report())
}

async fn stats_handler(State(state): State<Arc<SimState>>) -> impl IntoResponse {
    let stats = state.stats();
    let total: u64 = stats.values().sum();
    axum::Json(serde_json::json!({
        "total": total,
        "endpoints": stats,
        "peak_in_flight": state.peak_in_flight(),
    }))
}

async fn faults_and_stats(
    State(state): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    if path.starts_with("/_sim/") {
        return next.run(req).await;
    }
    state.count(format!("{} {path}", req.method()));
    let _in_flight = InFlight::enter(&state);
    let faults = state.faults();
    let (lo, hi) = (
        Duration::from_millis(faults.latency_ms.0),
        Duration::from_millis(faults.latency_ms.1),
    );
    if hi > Duration::ZERO {
        let d = if hi > lo {
            rand::rng().random_range(lo..hi)
        } else {
            lo
        };
        tokio::time::sleep(d).await;
    }
    if state.over_rate_limit() {
        return (
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "rate limit exceeded",
        )
            .into_response();
    }
    if faults.error_rate > 0.0 && rand::rng().random_bool(faults.error_rate.min(1.0)) {
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "injected fault: service unavailable",
        )
            .into_response();
    }
    next.run(req).await
}

/// Paths whose answers carry tokens (CloudPSS logins share `/graphql` and are told apart by
/// their operation).
const LOGIN_PATHS: &[&str] = &[
    "/api/user/v3/tokens",
    "/ac/openapi/v2/tokens",
    "/ac/openapi/v2/tokens/next",
    "/v1/oauth2/token",
    "/api-open/v1/connect",
];

/// GraphQL operations that log in or inspect a token.
const LOGIN_OPERATIONS: &[&str] = &["accountChallenge", "createAccountToken", "accountToken"];

/// Middleware that spoils answers as [`Faults::login_garble`], [`Faults::answer_garble`] and
/// [`Faults::pad_mib`] say.
async fn garble_answers(State(state): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let faults = state.faults();
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim/")
        || (faults.login_garble == Garble::Off
            && faults.answer_garble == Garble::Off
            && faults.pad_mib == 0)
    {
        return next.run(req).await;
    }
    let (req, login) = if path == "/graphql" {
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 16 << 20)
            .await
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&bytes);
        let login = LOGIN_OPERATIONS.iter().any(|op| text.contains(op));
        (
            Request::from_parts(parts, axum::body::Body::from(bytes)),
            login,
        )
    } else {
        let login = LOGIN_PATHS.contains(&path.as_str());
        (req, login)
    };
    let garble = if login {
        faults.login_garble
    } else {
        faults.answer_garble
    };
    let resp = next.run(req).await;
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "sim: unreadable body",
        )
            .into_response();
    };
    let (changed, mut out) = garble.apply(&bytes);
    if let Some((status, content_type)) = changed {
        parts.status = axum::http::StatusCode::from_u16(status).unwrap_or(parts.status);
        parts.headers.insert(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(content_type),
        );
    }
    if faults.pad_mib > 0 {
        out.resize(out.len() + (faults.pad_mib as usize) * (1 << 20), b' ');
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(out))
}

/// A running simulator; dropping it (or calling [`SimHandle::shutdown`]) stops it.
#[derive(Debug)]
pub struct SimHandle {
    /// Bound address.
    pub addr: SocketAddr,
    /// `http://addr` or `https://addr`.
    pub base_url: String,
    /// PEM of the self-signed certificate when serving TLS.
    pub cert_pem: Option<String>,
    /// Shared state (stats, config).
    pub state: Arc<SimState>,
    stop: watch::Sender<bool>,
}

impl SimHandle {
    /// Stops accepting connections.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
    }

    /// Environment variables (README "Configuration") that point jobctl at this simulator.
    pub fn env(&self) -> Vec<(String, String)> {
        env_vars(&self.base_url, &self.state.config)
    }
}

impl Drop for SimHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The variables every platform module wants set to reach the simulator at `base`.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    let mut v = Vec::new();
    v.extend(cloudpss::env_vars(base, config));
    v.extend(ac::env_vars(base, config));
    v.extend(octoplant::env_vars(base, config));
    v.extend(nebula::env_vars(base, config));
    v.extend(slurm::env_vars(base, config));
    v
}

/// Binds and serves in the background (in-process use by tests and by the binary).
pub async fn start(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let (tls, cert_pem) = if config.tls {
        let (acceptor, pem) = tls_acceptor().map_err(std::io::Error::other)?;
        (Some(acceptor), Some(pem))
    } else {
        (None, None)
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let base_url = format!("{scheme}://{addr}");
    let state = SimState::new(config);
    if let Ok(mut b) = state.base_url.lock() {
        *b = base_url.clone();
    }
    let app = router(state.clone());
    let (stop, mut stopped) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
                _ = stopped.changed() => break,
            };
            let app = app.clone();
            let tls = tls.clone();
            let st = stopped.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            serve_conn(s, app, st).await;
                        }
                    }
                    None => serve_conn(stream, app, st).await,
                }
            });
        }
    });
    Ok(SimHandle {
        addr,
        base_url,
        cert_pem,
        state,
        stop,
    })
}

async fn serve_conn<S>(io: S, app: Router, mut stopped: watch::Receiver<bool>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            let resp = match app.oneshot(req.map(axum::body::Body::new)).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            if resp.headers().contains_key(DROP_HEADER) {
                // Fault injection: hyper aborts the connection when the service fails.
                return Err(DroppedConnection);
            }
            Ok(resp)
        }
    });
    // Upgrades: the CloudPSS message streams are also served over WebSocket.
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped.changed() => {}
    }
}

/// The error that makes hyper close a connection without answering.
#[derive(Debug)]
struct DroppedConnection;

impl std::fmt::Display for DroppedConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("injected fault: connection dropped")
    }
}

impl std::error::Error for DroppedConnection {}

/// Marker header a handler/middleware sets to make the connection drop instead of answering.
const DROP_HEADER: &str = "x-sim-drop-connection";

/// Marker header of an answer whose request created a job ([`SimState::after_create`]).
const CREATED_HEADER: &str = "x-sim-created";

/// Middleware (outermost) that drops a share of connections before the request is handled
/// (nothing is created), and applies the after-creation faults to answers that created a job.
pub async fn drop_marker(State(state): State<Arc<SimState>>, req: Request, next: Next) -> Response {
    let faults = state.faults();
    let drop = !req.uri().path().starts_with("/_sim/")
        && faults.drop_rate > 0.0
        && rand::rng().random_bool(faults.drop_rate.min(1.0));
    if drop {
        let mut resp = Response::new(axum::body::Body::empty());
        resp.headers_mut()
            .insert(DROP_HEADER, axum::http::HeaderValue::from_static("1"));
        return resp;
    }
    let mut resp = next.run(req).await;
    if resp.headers_mut().remove(CREATED_HEADER).is_none() {
        return resp;
    }
    let (drop_after, garbage, truncate) = {
        let mut rng = rand::rng();
        (
            faults.drop_after_create_rate > 0.0
                && rng.random_bool(faults.drop_after_create_rate.min(1.0)),
            faults.garbage_rate > 0.0 && rng.random_bool(faults.garbage_rate.min(1.0)),
            rng.random_bool(0.5),
        )
    };
    if drop_after {
        resp.headers_mut()
            .insert(DROP_HEADER, axum::http::HeaderValue::from_static("1"));
    } else if garbage {
        let (mut parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let garbage = if truncate && bytes.len() >= 4 {
            bytes.slice(..bytes.len() / 2)
        } else {
            axum::body::Bytes::from_static(b"{}")
        };
        parts.status = axum::http::StatusCode::OK;
        parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        return Response::from_parts(parts, axum::body::Body::from(garbage));
    }
    resp
}

fn tls_acceptor() -> Result<(tokio_rustls::TlsAcceptor, String), String> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| e.to_string())?;
    let pem = cert.cert.pem();
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .map_err(|e| e.to_string())?;
    Ok((tokio_rustls::TlsAcceptor::from(Arc::new(server)), pem))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbling_spoils_answers_as_documented() {
        let body = br#"{"code":"0","data":{"list":[1],"n":2,"ok":true},"msg":"x"}"#;
        assert_eq!(Garble::Off.apply(body).1, body.to_vec());
        assert_eq!(
            Garble::Truncate.apply(body).1,
            body[..body.len() / 2].to_vec()
        );
        let (changed, html) = Garble::Html.apply(body);
        assert_eq!(changed, Some((200, "text/html")));
        assert!(html.starts_with(b"<html>"));
        assert_eq!(Garble::Empty.apply(body).1, b"{}".to_vec());
        let (_, wrong) = Garble::WrongTypes.apply(body);
        let v: serde_json::Value = serde_json::from_slice(&wrong).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"code": 7, "data": {"list": "garbled", "n": "2", "ok": "true"}, "msg": 7})
        );
        // Not JSON: left as is.
        assert_eq!(Garble::WrongTypes.apply(b"plain").1, b"plain".to_vec());
    }

    #[test]
    fn fault_modes_are_spelled_in_snake_case_and_default_off() {
        let f: Faults =
            serde_json::from_str(r#"{"login_garble":"wrong_types","pad_mib":3}"#).unwrap();
        assert_eq!(f.login_garble, Garble::WrongTypes);
        assert_eq!(f.answer_garble, Garble::Off);
        assert_eq!(f.pad_mib, 3);
        assert!(serde_json::from_str::<Faults>(r#"{"login_garble":"mangle"}"#).is_err());
    }
}
