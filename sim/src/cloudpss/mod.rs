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
//! (`succeed`, `fail`, plus `timeout` → TIMED_OUT and `killed` → KILLED).

mod schema;

use super::{JobPlan, Lifecycle, Phase, SimConfig, SimState};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use schema::CloudpssSchema;
use schema::build_schema;

/// Value of the `X-Cloudpss-Version` header (a 4.x server, which the official SDK accepts).
pub const SERVER_VERSION: &str = "4.5.2";

/// Routes of the simulated CloudPSS platform: `POST /graphql`, plus
/// `GET /_sim/cloudpss/operations` (GraphQL root fields served, for batching tests).
pub fn router(state: Arc<SimState>) -> Router {
    let store = Arc::new(Store::new());
    let schema = build_schema(state.clone(), store.clone());
    let ops = Router::new()
        .route("/_sim/cloudpss/operations", get(operations_handler))
        .with_state(store);
    Router::new()
        .route("/graphql", post(graphql_handler))
        .with_state((schema, state))
        .merge(ops)
}

/// Environment variables pointing jobctl's built-in cloudpss profile at the simulator.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    vec![
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

async fn graphql_handler(
    State((schema, state)): State<(CloudpssSchema, Arc<SimState>)>,
    headers: HeaderMap,
    req: async_graphql_axum::GraphQLRequest,
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
    let resp = schema.execute(req.into_inner().data(Caller(token))).await;
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
    out.headers_mut().insert(
        "x-cloudpss-version",
        HeaderValue::from_static(SERVER_VERSION),
    );
    if created {
        return state.after_create(out);
    }
    out
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
                input: uuid::Uuid::new_v4().simple().to_string(),
                output: uuid::Uuid::new_v4().simple().to_string(),
            });
        }
        Store {
            inner: Mutex::new(inner),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
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
        assert_eq!(env["CLOUDPSS_GQL_URL"], "http://127.0.0.1:9/graphql");
        assert_eq!(env["CLOUDPSS_USERNAME"], cfg.username);
        assert_eq!(env["CLOUDPSS_PASSWORD"], cfg.password);
    }
}
