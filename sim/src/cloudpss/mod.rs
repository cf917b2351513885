//! Simulated CloudPSS XStudio GraphQL API (`POST /graphql`).
//!
//! A real GraphQL engine (async-graphql) serves the subset of the CloudPSS schema that jobctl
//! and the vendor's Node.js examples use: the challenge/answer login, `systemInfo`, `account`,
//! `applications`, `createJob`, `job`, `jobs`, `abortJob` and `jobPolicies`. Errors come back
//! in the GraphQL `errors[]` array with HTTP 200 and an `extensions.code`; every answer carries
//! the `X-Cloudpss-Version` header the official SDK checks.
//!
//! Error codes chosen by the simulator (the real platform's codes are not documented):
//! `UNAUTHENTICATED` (missing, unknown or expired token), `FORBIDDEN` (wrong credentials or
//! someone else's job), `NOT_FOUND`, `BAD_USER_INPUT` (invalid parameters) and
//! `QUOTA_EXCEEDED` (resources beyond what the queue's policy allows).
//!
//! Per-job controls travel in the job's `args`: `sim_duration`, `sim_queue`, `sim_outcome`
//! (`succeed`, `fail`, plus `timeout` → TIMED_OUT and `killed` → KILLED), `sim_messages`
//! (how many output messages the job writes; see [`streams`]).
//!
//! Like the platform, it takes gzip-compressed request bodies (`application/json+gzip`, as the
//! official Python SDK sends them) and integral floats where the schema says `Int` (a
//! JSON-based GraphQL server cannot tell `4.0` from `4`). `POST /_sim/cloudpss/sdk-token`
//! issues a long-lived token for the configured user, like an "SDK token" made in the web UI.

mod schema;
pub mod streams;
pub mod ubjson;

use super::{JobPlan, Lifecycle, Phase, SimConfig, SimState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use schema::CloudpssSchema;
use schema::build_schema;

/// Default `X-Cloudpss-Version` (a number, as the official SDK parses it with `float()`).
pub const SERVER_VERSION: &str = "4";

/// Lifetime of the tokens `POST /_sim/cloudpss/sdk-token` issues.
const SDK_TOKEN_DAYS: i64 = 30;

/// Routes of the simulated CloudPSS platform: `POST /graphql`, the message streams
/// `GET /api/streams/id/{id}`, plus `GET /_sim/cloudpss/operations` (GraphQL root fields
/// served, for batching tests), `GET`/`PUT /_sim/cloudpss/settings` (stream faults, version
/// header) and `POST /_sim/cloudpss/sdk-token`.
pub fn router(state: Arc<SimState>) -> Router {
    let store = Arc::new(Store::new());
    let schema = build_schema(state.clone(), store.clone());
    let ops = Router::new()
        .route("/_sim/cloudpss/operations", get(operations_handler))
        .route(
            "/_sim/cloudpss/settings",
            get(get_settings).put(put_settings),
        )
        .route("/api/streams/id/{id}", get(streams::stream_handler))
        .with_state(store.clone());
    let tokens = Router::new()
        .route("/_sim/cloudpss/sdk-token", post(sdk_token_handler))
        .with_state((store.clone(), state.clone()));
    let version_store = store.clone();
    Router::new()
        .route("/graphql", post(graphql_handler))
        .with_state((schema, state))
        .merge(ops)
        .merge(tokens)
        .layer(axum::middleware::map_response(move |mut resp: Response| {
            let version = version_store.settings().version;
            async move {
                if let Ok(v) = HeaderValue::from_str(&version) {
                    resp.headers_mut().insert("x-cloudpss-version", v);
                }
                resp
            }
        }))
}

/// Environment variables pointing jobctl's built-in cloudpss profile at the simulator.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    vec![
        (
            "CLOUDPSS_API_URL".into(),
            format!("{}/", base.trim_end_matches('/')),
        ),
        (
            "CLOUDPSS_GQL_URL".into(),
            format!("{}/graphql", base.trim_end_matches('/')),
        ),
        ("CLOUDPSS_USERNAME".into(), config.username.clone()),
        ("CLOUDPSS_PASSWORD".into(), config.password.clone()),
    ]
}

/// The bearer token of the request, if any; resolvers decide whether they need one.
#[derive(Debug, Clone)]
pub(crate) struct Caller(pub Option<String>);

/// A GraphQL error answer outside the engine (unreadable body), with HTTP 400.
fn bad_request(message: String) -> Response {
    let body = serde_json::json!({"errors": [{"message": message, "extensions": {"code": "BAD_REQUEST"}}]});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
}

/// Turns integral floats (`4.0`) into integers, recursively, so `Int` arguments accept them.
fn integral_floats_to_ints(v: &mut Value) {
    match v {
        Value::Number(n) if n.is_f64() => {
            if let Some(f) = n.as_f64() {
                if f.fract() == 0.0 && f.abs() < 9.0e15 {
                    *v = Value::from(f as i64);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integral_floats_to_ints),
        Value::Object(map) => map.values_mut().for_each(integral_floats_to_ints),
        _ => {}
    }
}

/// Decodes a request body: JSON, or gzip-compressed JSON (`application/json+gzip` or gzip magic).
fn request_json(headers: &HeaderMap, body: &[u8]) -> Result<Value, String> {
    let gzip_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.to_ascii_lowercase().contains("gzip"));
    let gzip_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.eq_ignore_ascii_case("gzip"));
    let text = if gzip_type || gzip_encoding || body.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut out)
            .map_err(|e| format!("invalid gzip request body: {e}"))?;
        out
    } else {
        body.to_vec()
    };
    serde_json::from_slice(&text).map_err(|e| format!("invalid JSON request body: {e}"))
}

async fn graphql_handler(
    State((schema, state)): State<(CloudpssSchema, Arc<SimState>)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty());
    let mut json = match request_json(&headers, &body) {
        Ok(j) => j,
        Err(e) => return bad_request(e),
    };
    if let Some(vars) = json.get_mut("variables") {
        integral_floats_to_ints(vars);
    }
    let req: async_graphql::Request = match serde_json::from_value(json) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("not a GraphQL request: {e}")),
    };
    let resp = schema.execute(req.data(Caller(token))).await;
    // A createJob that created a job is where the after-creation faults strike.
    let created = resp.errors.is_empty()
        && matches!(&resp.data, async_graphql::Value::Object(m)
            if m.get("createJob").is_some_and(|j| *j != async_graphql::Value::Null));
    let body = serde_json::to_vec(&resp).unwrap_or_else(|_| b"{\"data\":null}".to_vec());
    let mut out = body.into_response();
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    if created {
        return state.after_create(out);
    }
    out
}

async fn get_settings(State(store): State<Arc<Store>>) -> impl IntoResponse {
    axum::Json(store.settings())
}

async fn put_settings(
    State(store): State<Arc<Store>>,
    axum::Json(settings): axum::Json<streams::Settings>,
) -> impl IntoResponse {
    store.lock().settings = settings.clone();
    axum::Json(settings)
}

/// Issues a long-lived token for the configured user (the web UI's "SDK token").
async fn sdk_token_handler(
    State((store, state)): State<(Arc<Store>, Arc<SimState>)>,
) -> impl IntoResponse {
    let user = state.config.username.clone();
    let expires_at = chrono::Utc::now() + chrono::Duration::days(SDK_TOKEN_DAYS);
    let token = schema::issue_token(&user, expires_at);
    let issued = Issued {
        user: user.clone(),
        expires: Instant::now() + Duration::from_secs(SDK_TOKEN_DAYS as u64 * 86_400),
        expires_at,
    };
    store.lock().tokens.insert(token.clone(), issued);
    axum::Json(serde_json::json!({
        "token": token,
        "user": user,
        "expirationTime": expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    }))
}

async fn operations_handler(State(store): State<Arc<Store>>) -> impl IntoResponse {
    axum::Json(store.lock().ops.clone())
}

/// How a simulated job that does not succeed ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Failed,
    TimedOut,
    Killed,
}

/// One simulated job.
#[derive(Debug, Clone)]
pub(crate) struct SimJob {
    pub seq: u64,
    pub id: String,
    pub user: String,
    pub context: Vec<String>,
    pub args: Map<String, Value>,
    pub queue: i32,
    pub policy_name: String,
    pub tres: (i32, f64, f64),
    pub priority: f64,
    pub max_duration: f64,
    pub debug: Option<Map<String, Value>>,
    pub life: Lifecycle,
    pub failure: Failure,
    pub input: String,
    pub output: String,
}

impl SimJob {
    /// Epoch milliseconds of creation (the `createTime` and the cursor key).
    pub fn create_ms(&self) -> i64 {
        self.life.created_at.timestamp_millis()
    }

    fn canceled_before_start(&self) -> bool {
        self.life
            .cancel_requested
            .is_some_and(|at| at.duration_since(self.life.created) < self.life.plan.queue)
    }

    /// The native status now.
    pub fn status(&self, now: Instant) -> &'static str {
        match self.life.phase_at(now) {
            Phase::Queued => "WAITING",
            Phase::Running(_) => "RUNNING",
            Phase::Cancelling => "ABORTING",
            Phase::Succeeded => "COMPLETED",
            Phase::Failed => match self.failure {
                Failure::Failed => "FAILED",
                Failure::TimedOut => "TIMED_OUT",
                Failure::Killed => "KILLED",
            },
            Phase::Canceled if self.canceled_before_start() => "CANCELED",
            Phase::Canceled => "ABORTED",
        }
    }

    /// Epoch ms the job started, once it has (a job canceled while waiting never starts).
    pub fn start_ms(&self) -> Option<i64> {
        if self.canceled_before_start() {
            return None;
        }
        self.life.started_at().map(|t| t.timestamp_millis())
    }

    /// Epoch ms the job ended, once it has.
    pub fn end_ms(&self) -> Option<i64> {
        self.life.ended_at().map(|t| t.timestamp_millis())
    }
}

/// An issued token.
#[derive(Debug, Clone)]
pub(crate) struct Issued {
    pub user: String,
    pub expires: Instant,
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// One queue/policy the simulated platform offers.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub id: i32,
    pub name: &'static str,
    pub max_cpu: i32,
    pub max_mem: f64,
    pub min_priority: f64,
    pub max_priority: f64,
    pub max_duration: f64,
}

/// The two queues of the simulated platform.
pub(crate) const POLICIES: &[Policy] = &[
    Policy {
        id: 1,
        name: "default",
        max_cpu: 8,
        max_mem: 16384.0,
        min_priority: 0.0,
        max_priority: 10.0,
        max_duration: 3600.0,
    },
    Policy {
        id: 2,
        name: "large",
        max_cpu: 64,
        max_mem: 262144.0,
        min_priority: 0.0,
        max_priority: 100.0,
        max_duration: 86400.0,
    },
];

/// The owner of the seeded jobs and public functions.
pub(crate) const OTHER_USER: &str = "CloudPSS";

/// Everything the simulated CloudPSS platform remembers.
#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub tokens: HashMap<String, Issued>,
    /// Challenge id → (account name, id of its PASSWORD item).
    pub challenges: HashMap<String, (String, String)>,
    pub jobs: Vec<SimJob>,
    pub next_seq: u64,
    /// GraphQL root fields served.
    pub ops: BTreeMap<String, u64>,
    /// Stream faults and the version header.
    pub settings: streams::Settings,
}

/// Shared, lock-protected platform state (never locked across an await).
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
}

impl Store {
    fn new() -> Self {
        let mut inner = Inner::default();
        // Jobs of another user, already finished, so "only my jobs" is observable.
        for (i, failure) in [(0u64, None), (1, Some(Failure::Failed))] {
            let plan = JobPlan {
                queue: Duration::ZERO,
                run: Duration::ZERO,
                succeed: failure.is_none(),
                exit_code: 0,
            };
            let mut life = Lifecycle::new(plan);
            life.created_at -= chrono::Duration::hours(24 - i as i64);
            let seq = inner.next_seq;
            inner.next_seq += 1;
            inner.jobs.push(SimJob {
                seq,
                id: uuid::Uuid::new_v4().to_string(),
                user: OTHER_USER.into(),
                context: vec!["function/CloudPSS/hello".into()],
                args: Map::new(),
                queue: 1,
                policy_name: "default".into(),
                tres: (1, 0.0, 0.0),
                priority: 0.0,
                max_duration: 3600.0,
                debug: None,
                life,
                failure: failure.unwrap_or(Failure::Failed),
                input: uuid::Uuid::new_v4().to_string(),
                output: uuid::Uuid::new_v4().to_string(),
            });
        }
        Store {
            inner: Mutex::new(inner),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current stream settings.
    pub fn settings(&self) -> streams::Settings {
        self.lock().settings.clone()
    }
}

/// The simulator's schema in SDL; `src/backends/cloudpss/schema.graphql` is a checked-in copy
/// (a test keeps the two identical).
pub fn sdl() -> String {
    let state = SimState::new(SimConfig::default());
    let store = Arc::new(Store::new());
    build_schema(state, store).sdl_with_options(async_graphql::SDLExportOptions::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backend's checked-in schema must be exactly what the simulator serves, so the
    /// typed queries and the simulator cannot drift apart.
    /// Regenerate with `UPDATE_CLOUDPSS_SCHEMA=1 cargo test --lib sim::cloudpss`.
    #[test]
    fn checked_in_schema_matches_the_simulator() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../src/backends/cloudpss/schema.graphql"
        );
        let header = "# CloudPSS XStudio GraphQL schema: the subset jobctl uses, as served by jobctl-sim.\n\
                      # Generated from sim/src/cloudpss; do not edit by hand.\n\n";
        let expected = format!("{header}{}", sdl());
        if std::env::var_os("UPDATE_CLOUDPSS_SCHEMA").is_some() {
            std::fs::write(path, &expected).unwrap();
        }
        let actual = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            actual == expected,
            "{path} is out of date: run UPDATE_CLOUDPSS_SCHEMA=1 cargo test --lib sim::cloudpss"
        );
    }

    #[test]
    fn env_points_at_the_graphql_endpoint_with_default_credentials() {
        let cfg = SimConfig::default();
        let env: BTreeMap<_, _> = env_vars("http://127.0.0.1:9/", &cfg).into_iter().collect();
        assert_eq!(env["CLOUDPSS_API_URL"], "http://127.0.0.1:9/");
        assert_eq!(env["CLOUDPSS_GQL_URL"], "http://127.0.0.1:9/graphql");
        assert_eq!(env["CLOUDPSS_USERNAME"], cfg.username);
        assert_eq!(env["CLOUDPSS_PASSWORD"], cfg.password);
    }
}
