//! Simulated slurmrestd, API v0.0.38 (Slurm 22.05): `ping`, `job/submit`, `job/{id}` (GET
//! and DELETE), `jobs`, `partitions` and `openapi`, with Slurm's authentication headers, JWT expiry and both
//! shapes of its `errors[]` answers.
//!
//! Jobs follow the shared [`Lifecycle`]; the job's `environment` carries the per-job knobs
//! (`sim_outcome=fail|succeed|timeout`, `sim_duration`, `sim_queue`, `sim_exit_code`,
//! `sim_signal`). Tokens are JWT-shaped: `mint_token` issues them, "signed" with the
//! simulator's password so a token from another simulator, or a tampered one, is refused the
//! way slurmctld refuses a bad token. One finished job of another user (id 99) exists from the
//! start, so clients can show they list only their own jobs.

use super::{JobPlan, Lifecycle, Phase, SimConfig, SimState};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::{Map, Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const VERSION: &str = "v0.0.38";

/// Keys slurmrestd v0.0.38 accepts in `job` (any other is refused, as the real one does).
const JOB_KEYS: &[&str] = &[
    "account",
    "account_gather_frequency",
    "argv",
    "array",
    "batch_features",
    "begin_time",
    "burst_buffer",
    "cluster_constraint",
    "comment",
    "constraints",
    "container",
    "core_specification",
    "cores_per_socket",
    "cpu_binding",
    "cpu_binding_hint",
    "cpu_frequency",
    "cpus_per_gpu",
    "cpus_per_task",
    "current_working_directory",
    "deadline",
    "delay_boot",
    "dependency",
    "distribution",
    "environment",
    "exclusive",
    "get_user_environment",
    "gpu_binding",
    "gpu_frequency",
    "gpus",
    "gpus_per_node",
    "gpus_per_socket",
    "gpus_per_task",
    "gres",
    "gres_flags",
    "hold",
    "kill_on_invalid_dependency",
    "licenses",
    "mail_type",
    "mail_user",
    "mcs_label",
    "memory_binding",
    "memory_per_cpu",
    "memory_per_gpu",
    "memory_per_node",
    "minimum_cpus_per_node",
    "minimum_nodes",
    "name",
    "nice",
    "no_kill",
    "nodes",
    "open_mode",
    "oversubscribe",
    "partition",
    "prefer",
    "priority",
    "qos",
    "requeue",
    "reservation",
    "signal",
    "sockets_per_node",
    "spread_job",
    "standard_error",
    "standard_input",
    "standard_output",
    "tasks",
    "tasks_per_core",
    "tasks_per_node",
    "tasks_per_socket",
    "thread_specification",
    "threads_per_core",
    "time_limit",
    "time_minimum",
    "wait_all_nodes",
    "wckey",
];

#[derive(Debug, Clone)]
struct SimJob {
    id: u64,
    name: String,
    comment: String,
    user: String,
    partition: String,
    cwd: String,
    stdout: String,
    stderr: String,
    time_limit: Option<i64>,
    life: Lifecycle,
    timeout: bool,
    signal: Option<i64>,
}

#[derive(Debug)]
struct Slurm {
    sim: Arc<SimState>,
    jobs: Mutex<Vec<SimJob>>,
}

type Shared = Arc<Slurm>;

/// Routes of the simulated slurmrestd.
pub fn router(state: Arc<SimState>) -> Router {
    let seeded = SimJob {
        id: 99,
        name: "someone-elses-job".into(),
        comment: String::new(),
        user: "someone-else".into(),
        partition: "debug".into(),
        cwd: "/tmp".into(),
        stdout: String::new(),
        stderr: String::new(),
        time_limit: None,
        life: Lifecycle::new(JobPlan {
            queue: Duration::ZERO,
            run: Duration::ZERO,
            succeed: true,
            exit_code: 0,
        }),
        timeout: false,
        signal: None,
    };
    let shared: Shared = Arc::new(Slurm {
        sim: state,
        jobs: Mutex::new(vec![seeded]),
    });
    Router::new()
        .route("/openapi", get(openapi))
        .route("/openapi/v3", get(openapi))
        .route(&format!("/slurm/{VERSION}/ping"), get(ping))
        .route(&format!("/slurm/{VERSION}/jobs"), get(list_jobs))
        .route(&format!("/slurm/{VERSION}/partitions"), get(partitions))
        .route(&format!("/slurm/{VERSION}/job/submit"), post(submit))
        .route(
            &format!("/slurm/{VERSION}/job/{{job_id}}"),
            get(get_job).delete(delete_job),
        )
        .with_state(shared)
}

/// Environment variables pointing jobctl's built-in slurm profile at the simulator: its URL,
/// the default user and a token for that user valid for the configured token lifetime.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    vec![
        ("SLURM_REST_URL".into(), base.to_string()),
        ("SLURM_USER_NAME".into(), config.username.clone()),
        (
            "SLURM_JWT".into(),
            mint_token(config, &config.username, config.token_ttl.as_secs() as i64),
        ),
    ]
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn signature(config: &SimConfig, header_payload: &str) -> String {
    b64(format!("{}|{header_payload}", config.password).as_bytes())
}

/// A JWT-shaped token for `user` that this simulator accepts until `lifespan_secs` from now
/// (a negative lifespan gives an already expired token).
pub fn mint_token(config: &SimConfig, user: &str, lifespan_secs: i64) -> String {
    mint_token_aged(config, user, 0, lifespan_secs)
}

/// Mints a token issued `age_secs` ago that is valid for `remaining_secs` more (a long-lived
/// token near its end, as a long watch sees it).
pub fn mint_token_aged(
    config: &SimConfig,
    user: &str,
    age_secs: i64,
    remaining_secs: i64,
) -> String {
    let now = chrono::Utc::now().timestamp();
    let header = b64(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = b64(
        json!({"exp": now + remaining_secs, "iat": now - age_secs, "sun": user})
            .to_string()
            .as_bytes(),
    );
    let hp = format!("{header}.{payload}");
    let sig = signature(config, &hp);
    format!("{hp}.{sig}")
}

fn token_valid(config: &SimConfig, user: &str, token: &str) -> bool {
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts.as_slice() else {
        return false;
    };
    if *s != signature(config, &format!("{h}.{p}")) {
        return false;
    }
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p) else {
        return false;
    };
    let Ok(claims) = serde_json::from_slice::<Value>(&bytes) else {
        return false;
    };
    let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(0);
    claims.get("sun").and_then(Value::as_str) == Some(user) && exp > chrono::Utc::now().timestamp()
}

fn meta() -> Value {
    json!({
        "plugin": {"type": format!("openapi/{VERSION}"), "name": format!("Slurm OpenAPI {VERSION}")},
        "Slurm": {"version": {"major": 22, "micro": 8, "minor": 5}, "release": "22.05.8"}
    })
}

fn answer(status: StatusCode, mut body: Value) -> Response {
    if let Some(o) = body.as_object_mut() {
        o.insert("meta".into(), meta());
        o.entry("errors").or_insert_with(|| json!([]));
    }
    (status, axum::Json(body)).into_response()
}

/// The "long" error shape: `error_number`, `error`, `description`, `source`.
fn long_error(number: i64, error: &str, description: &str, source: &str) -> Value {
    json!({"description": description, "error_number": number, "error": error, "source": source})
}

/// The "short" error shape: `error_code`, `error`.
fn short_error(code: i64, error: &str) -> Value {
    json!({"error_code": code, "error": error})
}

/// Who is calling: `Ok(user)`, or the answer slurmrestd / slurmctld would give. `refusal`
/// builds the body slurmctld's rejection of a bad token produces for this endpoint.
fn authenticate(
    s: &Slurm,
    headers: &HeaderMap,
    refusal: impl FnOnce() -> Value,
) -> Result<String, Response> {
    let user = headers
        .get("x-slurm-user-name")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let token = headers
        .get("x-slurm-user-token")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty());
    let (Some(user), Some(token)) = (user, token) else {
        return Err((
            StatusCode::UNAUTHORIZED,
            [("content-type", "text/plain")],
            "Authentication failure",
        )
            .into_response());
    };
    if !token_valid(&s.sim.config, user, token) {
        return Err(answer(StatusCode::INTERNAL_SERVER_ERROR, refusal()));
    }
    Ok(user.to_string())
}

async fn openapi(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if let Err(r) = authenticate(&s, &headers, || json!({})) {
        return r;
    }
    let mut paths = Map::new();
    for p in ["ping", "jobs", "job/submit", "job/{job_id}", "diag"] {
        paths.insert(format!("/slurm/{VERSION}/{p}"), json!({}));
    }
    (
        StatusCode::OK,
        axum::Json(json!({"openapi": "3.0.2", "paths": paths})),
    )
        .into_response()
}

async fn ping(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let refusal = || json!({"errors": [long_error(-1, "Unspecified error", "slurmctld config is unable to load", "slurm_load_ctl_conf")]});
    if let Err(r) = authenticate(&s, &headers, refusal) {
        return r;
    }
    answer(
        StatusCode::OK,
        json!({"pings": [{"hostname": "sim", "ping": "UP", "status": 0, "mode": "primary"}]}),
    )
}

/// INFINITE in a v0.0.38 time limit.
const INFINITE: u64 = 0xFFFF_FFFF;

/// The partitions: `debug` (the only one jobs may be submitted to, one hour at most), `long`
/// (no time limit) and `maint` (down).
async fn partitions(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let refusal = || json!({"errors": [long_error(-1, "Unspecified error", "Failed to load partition info", "slurm_load_partitions")], "partitions": []});
    if let Err(r) = authenticate(&s, &headers, refusal) {
        return r;
    }
    let partition = |name: &str, state: &str, cpus: u64, nodes: u64, max: u64, list: &str| {
        json!({"name": name, "state": state, "total_cpus": cpus, "total_nodes": nodes,
               "max_time_limit": max, "default_time_limit": INFINITE, "nodes": list,
               "flags": [], "preemption_mode": ["disabled"], "qos": ""})
    };
    answer(
        StatusCode::OK,
        json!({"partitions": [
            partition("debug", "UP", 4, 1, 60, "sim"),
            partition("long", "UP", 64, 8, INFINITE, "sim[1-8]"),
            partition("maint", "DOWN", 16, 2, 1440, "sim[9-10]"),
        ]}),
    )
}

fn epoch(t: Option<chrono::DateTime<chrono::Utc>>) -> i64 {
    t.map(|t| t.timestamp()).unwrap_or(0)
}

fn render(j: &SimJob) -> Value {
    let phase = j.life.phase();
    let (state, reason, exit) = match phase {
        Phase::Queued => ("PENDING", "None".to_string(), 0),
        Phase::Running(_) => ("RUNNING", "None".to_string(), 0),
        Phase::Cancelling => ("COMPLETING", "None".to_string(), 0),
        Phase::Succeeded => ("COMPLETED", "None".to_string(), 0),
        Phase::Canceled => ("CANCELLED", "None".to_string(), 15),
        Phase::Failed if j.timeout => ("TIMEOUT", "TimeLimit".to_string(), 15),
        Phase::Failed => match j.signal {
            Some(sig) => ("FAILED", format!("RaisedSignal:{sig}"), sig & 0x7f),
            None => (
                "FAILED",
                "NonZeroExitCode".to_string(),
                (j.life.plan.exit_code & 0xff) << 8,
            ),
        },
    };
    let started = j.life.started_at();
    let start_time = match phase {
        Phase::Queued => 0,
        _ => epoch(started),
    };
    let end_time = match j.life.ended_at() {
        Some(t) => t.timestamp(),
        // Like slurmctld: a running job's end is its projected end.
        None => match (started, j.time_limit) {
            (Some(s), Some(m)) => s.timestamp() + m * 60,
            _ => 0,
        },
    };
    let running_or_done = !matches!(phase, Phase::Queued);
    json!({
        "job_id": j.id,
        "name": j.name,
        "comment": j.comment,
        "job_state": state,
        "state_reason": reason,
        "state_description": "",
        "user_name": j.user,
        "user_id": 1000,
        "partition": j.partition,
        "nodes": if running_or_done { "sim" } else { "" },
        "batch_host": if running_or_done { "sim" } else { "" },
        "exit_code": exit,
        "derived_exit_code": 0,
        "submit_time": j.life.created_at.timestamp(),
        "start_time": start_time,
        "end_time": end_time,
        "time_limit": j.time_limit,
        "current_working_directory": j.cwd,
        "standard_output": j.stdout,
        "standard_error": j.stderr,
        "standard_input": "/dev/null",
        "cpus": 1,
        "node_count": 1,
        "array_job_id": 0,
        "array_task_id": Value::Null,
    })
}

async fn list_jobs(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let refusal = || json!({"errors": [long_error(-1, "Unspecified error", "Failed while looking for jobs", "slurm_load_jobs")], "jobs": []});
    if let Err(r) = authenticate(&s, &headers, refusal) {
        return r;
    }
    let jobs: Vec<Value> = s
        .jobs
        .lock()
        .map(|j| j.iter().map(render).collect())
        .unwrap_or_default();
    answer(StatusCode::OK, json!({"jobs": jobs}))
}

fn parse_id(raw: &str) -> Option<u64> {
    raw.trim().parse().ok()
}

async fn get_job(State(s): State<Shared>, Path(raw): Path<String>, headers: HeaderMap) -> Response {
    let refusal = || json!({"errors": [long_error(-1, "Unspecified error", &format!("Unable to find JobId={raw}"), "slurm_load_job")], "jobs": []});
    if let Err(r) = authenticate(&s, &headers, refusal) {
        return r;
    }
    let found = parse_id(&raw).and_then(|id| {
        s.jobs.lock().ok().and_then(|j| {
            j.binary_search_by_key(&id, |j| j.id)
                .ok()
                .map(|i| render(&j[i]))
        })
    });
    match found {
        Some(job) => answer(StatusCode::OK, json!({"jobs": [job]})),
        None => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": [long_error(2017, "Invalid job id specified", &format!("Unable to find JobId={raw}"), "slurm_load_job")], "jobs": []}),
        ),
    }
}

async fn delete_job(
    State(s): State<Shared>,
    Path(raw): Path<String>,
    headers: HeaderMap,
) -> Response {
    let refusal = || {
        json!({"errors": [long_error(5005, "Zero Bytes were transmitted or received",
            &format!("unable to kill JobId={raw} with signal 9: Zero Bytes were transmitted or received"), "slurm_kill_job")]})
    };
    if let Err(r) = authenticate(&s, &headers, refusal) {
        return r;
    }
    let done = parse_id(&raw).and_then(|id| {
        s.jobs.lock().ok().and_then(|mut jobs| {
            let i = jobs.binary_search_by_key(&id, |j| j.id).ok()?;
            jobs.get_mut(i).map(|j| {
                // Cancelling a finished job is accepted and changes nothing, as in Slurm.
                j.life.cancel();
            })
        })
    });
    match done {
        Some(()) => answer(StatusCode::OK, json!({})),
        None => answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": [long_error(2017, "Invalid job id specified",
                &format!("unable to kill JobId={raw} with signal 9: Invalid job id specified"), "slurm_kill_job")]}),
        ),
    }
}

fn parsing_failure(mut errors: Vec<Value>) -> Response {
    errors.push(short_error(9001, "Failure during parsing"));
    answer(StatusCode::BAD_REQUEST, json!({"errors": errors}))
}

async fn submit(State(s): State<Shared>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    let refusal =
        || json!({"errors": [short_error(5005, "Zero Bytes were transmitted or received")]});
    let user = match authenticate(&s, &headers, refusal) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let json_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed: Option<Value> = if json_type {
        serde_json::from_slice(&body).ok()
    } else {
        None
    };
    let Some(Value::Object(top)) = parsed else {
        return (
            StatusCode::BAD_REQUEST,
            [("content-type", "text/plain")],
            "Unable to parse query",
        )
            .into_response();
    };
    let Some(Value::Object(job)) = top.get("job") else {
        return parsing_failure(vec![short_error(9001, "job must be a dictionary")]);
    };
    for key in job.keys() {
        if !JOB_KEYS.contains(&key.as_str()) {
            return parsing_failure(vec![
                json!({"description": format!("Unknown key \"{key}\""), "source": "hsearch_r"}),
            ]);
        }
    }
    let env = match job.get("environment") {
        Some(Value::Object(e)) => e.clone(),
        Some(_) => {
            return parsing_failure(vec![short_error(2127, "environment must be a dictionary")]);
        }
        None => return parsing_failure(vec![short_error(2127, "environment must be set")]),
    };
    let Some(script) = top
        .get("script")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
    else {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": [short_error(2009, "Job script not specified")]}),
        );
    };
    if !script.starts_with("#!") {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": [short_error(2009, "Batch script lacks #! interpreter line")]}),
        );
    }
    let text = |k: &str| job.get(k).and_then(Value::as_str).map(str::to_string);
    let partition = text("partition").unwrap_or_else(|| "debug".into());
    if partition != "debug" {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": [short_error(2000, "Invalid partition name specified")]}),
        );
    }
    let outcome = env
        .get("sim_outcome")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let mut plan = s.sim.plan(&env);
    let timeout = outcome.as_deref() == Some("timeout");
    let signal = env.get("sim_signal").and_then(|v| {
        v.as_str()
            .and_then(|s| s.parse().ok())
            .or_else(|| v.as_i64())
    });
    if timeout || signal.is_some() {
        plan.succeed = false;
    }
    let mut jobs = match s.jobs.lock() {
        Ok(j) => j,
        Err(_) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "simulator state poisoned",
            )
                .into_response();
        }
    };
    // Ids only grow and jobs are never removed, so the last job holds the largest id: a
    // scan of every job here made each submission slower than the one before.
    let id = jobs.last().map_or(99, |j| j.id).max(99) + 1;
    let name = text("name").unwrap_or_else(|| "sbatch".into());
    let comment = text("comment").unwrap_or_default();
    let label = if comment.is_empty() {
        name.clone()
    } else {
        comment.clone()
    };
    jobs.push(SimJob {
        id,
        name,
        comment,
        user,
        partition,
        cwd: text("current_working_directory").unwrap_or_else(|| "/tmp".into()),
        stdout: text("standard_output").unwrap_or_default(),
        stderr: text("standard_error").unwrap_or_default(),
        time_limit: job.get("time_limit").and_then(Value::as_i64),
        life: Lifecycle::new(plan),
        timeout,
        signal,
    });
    drop(jobs);
    s.sim.record_job("slurm", &label);
    s.sim.after_create(answer(
        StatusCode::OK,
        json!({"job_id": id, "step_id": "BATCH", "job_submit_user_msg": ""}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_checked_for_user_expiry_and_signature() {
        let c = SimConfig::default();
        let t = mint_token(&c, "jobctl", 60);
        assert!(token_valid(&c, "jobctl", &t));
        assert!(!token_valid(&c, "mallory", &t));
        assert!(!token_valid(&c, "jobctl", &mint_token(&c, "jobctl", -5)));
        let other = SimConfig {
            password: "other".into(),
            ..SimConfig::default()
        };
        assert!(!token_valid(&other, "jobctl", &t));
        assert!(!token_valid(&c, "jobctl", "garbage"));
    }

    #[test]
    fn finished_jobs_render_like_slurm() {
        let mut j = SimJob {
            id: 7,
            name: "x".into(),
            comment: String::new(),
            user: "u".into(),
            partition: "debug".into(),
            cwd: "/tmp".into(),
            stdout: String::new(),
            stderr: String::new(),
            time_limit: None,
            life: Lifecycle::new(JobPlan {
                queue: Duration::ZERO,
                run: Duration::ZERO,
                succeed: false,
                exit_code: 3,
            }),
            timeout: false,
            signal: None,
        };
        let v = render(&j);
        assert_eq!(v["job_state"], "FAILED");
        assert_eq!(v["exit_code"], 768);
        j.timeout = true;
        assert_eq!(render(&j)["job_state"], "TIMEOUT");
    }
}
