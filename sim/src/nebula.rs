//! Simulated NebulaGraph Explorer workflow open API (`/api-open/v1`).
//!
//! Three built-in workflows run as multi-task jobs whose tasks finish one after another: the
//! job's run time is split evenly between its tasks. Sessions are `explorer_token` cookies issued
//! by `/connect` with `Max-Age` = the simulator's token lifetime. Errors use the documented
//! envelope codes, sent with the HTTP status their middle digits suggest (400/401/403/404/500).
//!
//! Per-job controls travel as the input of a pseudo task `sim`:
//! `--arg sim.outcome=fail|succeed`, `--arg sim.duration=2s`, `--arg sim.queue=0s`, and
//! `--arg sim.reject=CODE` (the run request is answered with that documented error code).

use super::{JobPlan, Lifecycle, Phase, SimConfig, SimState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use base64::Engine;
use chrono::{DateTime, FixedOffset, Offset, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// One task of a workflow: the component id used in inputs, and the algorithm name shown.
#[derive(Debug)]
struct TaskDef {
    component: &'static str,
    name: &'static str,
    columns: usize,
}

/// A workflow that can be run.
#[derive(Debug)]
struct Workflow {
    id: &'static str,
    name: &'static str,
    tasks: &'static [TaskDef],
    /// Parameters a run must give (`task.param`); a run without them is refused with
    /// `50004002`, as the vendor's QA tests expect.
    required: &'static [&'static str],
}

/// The workflows every simulator offers.
const WORKFLOWS: &[Workflow] = &[
    Workflow {
        id: "4216617528",
        name: "player-pagerank",
        tasks: &[
            TaskDef {
                component: "query_1",
                name: "Query",
                columns: 2,
            },
            TaskDef {
                component: "pagerank_1",
                name: "PageRank",
                columns: 2,
            },
        ],
        required: &[],
    },
    Workflow {
        id: "4216617529",
        name: "community-detection",
        tasks: &[
            TaskDef {
                component: "query_1",
                name: "Query",
                columns: 2,
            },
            TaskDef {
                component: "louvain_1",
                name: "Louvain",
                columns: 3,
            },
            TaskDef {
                component: "degree_1",
                name: "DegreeCentrality",
                columns: 2,
            },
        ],
        required: &[],
    },
    Workflow {
        id: "4216617530",
        name: "bfs-neighbourhood",
        tasks: &[
            TaskDef {
                component: "query_1",
                name: "Query",
                columns: 2,
            },
            TaskDef {
                component: "bfs_1",
                name: "BFS",
                columns: 2,
            },
            TaskDef {
                component: "kcore_1",
                name: "KCore",
                columns: 2,
            },
            TaskDef {
                component: "wcc_1",
                name: "WCC",
                columns: 2,
            },
        ],
        required: &[],
    },
    Workflow {
        id: "4216617531",
        name: "shortest-path",
        tasks: &[
            TaskDef {
                component: "query_1",
                name: "Query",
                columns: 2,
            },
            TaskDef {
                component: "sssp_1",
                name: "SSSP",
                columns: 2,
            },
        ],
        required: &["sssp_1.root"],
    },
];

/// Error codes a client can ask for with `sim.reject`: the documented table.
const DOCUMENTED_CODES: &[i64] = &[
    40004000, 40004001, 40104000, 40104001, 40304000, 40404000, 50004000, 50004001, 50004002,
    50004003, 90004000,
];

/// Rows in every task's result sample.
const SAMPLE_ROWS: usize = 25;

/// Largest page the list endpoints serve; larger requests are clamped (and say so in
/// `PageSize`).
const MAX_PAGE_SIZE: u64 = 100;

#[derive(Debug)]
struct SimJob {
    id: u64,
    workflow: &'static Workflow,
    name: String,
    life: Lifecycle,
    task_ids: Vec<String>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    jobs: BTreeMap<u64, SimJob>,
    sessions: HashMap<String, Instant>,
}

#[derive(Debug)]
struct Nebula {
    sim: Arc<SimState>,
    inner: Mutex<Inner>,
}

impl Nebula {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks the `explorer_token` cookie.
    fn authorize(&self, headers: &HeaderMap) -> Result<(), Response> {
        let token = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == "explorer_token")
            .map(|(_, v)| v.to_string());
        let Some(token) = token else {
            return Err(fail(40104000, "no explorer_token cookie: connect first"));
        };
        match self.lock().sessions.get(&token) {
            None => Err(fail(40104000, "unknown session")),
            Some(exp) if *exp <= Instant::now() => {
                Err(fail(40104001, "session expired: connect again"))
            }
            Some(_) => Ok(()),
        }
    }
}

fn fail(code: i64, message: impl Into<String>) -> Response {
    let status = match code / 100_000 {
        400 => StatusCode::BAD_REQUEST,
        401 => StatusCode::UNAUTHORIZED,
        403 => StatusCode::FORBIDDEN,
        404 => StatusCode::NOT_FOUND,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let body = json!({ "code": code, "message": message.into() });
    (status, axum::Json(body)).into_response()
}

fn ok(data: Value) -> Response {
    axum::Json(json!({ "code": 0, "message": "Success", "data": data })).into_response()
}

/// Routes of the simulated NebulaGraph Explorer.
pub fn router(state: Arc<SimState>) -> Router {
    let neb = Arc::new(Nebula {
        sim: state,
        inner: Mutex::new(Inner {
            next_id: 101,
            ..Inner::default()
        }),
    });
    Router::new()
        .route("/api-open/v1/connect", post(connect))
        .route("/api-open/v1/jobs", get(list_all))
        .route(
            "/api-open/v1/workflows/{workflow}/jobs",
            get(list_workflow).post(run),
        )
        .route("/api-open/v1/jobs/{id}", get(detail))
        .route("/api-open/v1/jobs/{id}/cancel", put(cancel))
        .route(
            "/api-open/v1/jobs/{id}/tasks/{task}/sample_result",
            get(sample),
        )
        .with_state(neb)
}

/// Environment variables pointing jobctl's built-in nebula profile at the simulator.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    vec![
        ("NEBULA_EXPLORER_URL".into(), base.to_string()),
        ("NEBULA_USERNAME".into(), config.username.clone()),
        ("NEBULA_PASSWORD".into(), config.password.clone()),
        ("NEBULA_ADDRESS".into(), "127.0.0.1".into()),
        ("NEBULA_PORT".into(), "9669".into()),
    ]
}

/// Decodes the Bearer credential in either documented encoding.
fn account(headers: &HeaderMap) -> Option<(String, String)> {
    let raw = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = raw.strip_prefix("Bearer ")?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    if text.starts_with('[') {
        let pair: Vec<String> = serde_json::from_str(&text).ok()?;
        match pair.as_slice() {
            [u, p] => Some((u.clone(), p.clone())),
            _ => None,
        }
    } else {
        let (u, p) = text.split_once(':')?;
        Some((u.to_string(), p.to_string()))
    }
}

async fn connect(State(neb): State<Arc<Nebula>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some((user, pass)) = account(&headers) else {
        return fail(
            40104000,
            "Authorization must be `Bearer <base64 of [\"user\",\"password\"]>`",
        );
    };
    let cfg = &neb.sim.config;
    if user != cfg.username || pass != cfg.password {
        return fail(40104000, "user name or password is wrong");
    }
    let target: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let address_ok = target
        .get("address")
        .and_then(Value::as_str)
        .is_some_and(|a| !a.trim().is_empty());
    let port_ok = target
        .get("port")
        .and_then(Value::as_u64)
        .is_some_and(|p| (1..=65535).contains(&p));
    if !address_ok || !port_ok {
        return fail(
            40004001,
            "address and port (a number) of graphd are required",
        );
    }
    let token = uuid::Uuid::new_v4().simple().to_string();
    let ttl = cfg.token_ttl;
    neb.lock()
        .sessions
        .insert(token.clone(), Instant::now() + ttl);
    let cookie = format!(
        "explorer_token={token}; Path=/; Max-Age={}; HttpOnly",
        ttl.as_secs()
    );
    let mut resp = ok(json!({ "success": true }));
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// Turns the `sim` pseudo task's input into plan arguments, or the documented error to answer.
fn sim_controls(
    params: &Map<String, Value>,
) -> Result<(Map<String, Value>, Option<i64>), Response> {
    let mut args = Map::new();
    let mut reject = None;
    for (k, v) in params {
        match k.as_str() {
            "outcome" => match v.as_str().map(str::to_ascii_lowercase).as_deref() {
                Some("fail" | "failed" | "succeed" | "success" | "succeeded") => {
                    args.insert("sim_outcome".into(), v.clone());
                }
                _ => return Err(fail(40004001, "sim.outcome must be fail or succeed")),
            },
            "duration" | "queue" => {
                let valid = match v {
                    Value::Number(n) => n.as_f64().is_some_and(|f| f >= 0.0),
                    Value::String(s) => crate::parse_duration(s).is_ok(),
                    _ => false,
                };
                if !valid {
                    return Err(fail(40004001, format!("sim.{k} must be a duration")));
                }
                args.insert(format!("sim_{k}"), v.clone());
            }
            "reject" => {
                let code = v
                    .as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
                    .filter(|c| DOCUMENTED_CODES.contains(c));
                match code {
                    Some(c) => reject = Some(c),
                    None => {
                        return Err(fail(40004001, "sim.reject must be a documented error code"));
                    }
                }
            }
            other => {
                return Err(fail(
                    40004001,
                    format!("unknown sim parameter `{other}` (outcome, duration, queue, reject)"),
                ));
            }
        }
    }
    Ok((args, reject))
}

async fn run(
    State(neb): State<Arc<Nebula>>,
    Path(workflow): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = neb.authorize(&headers) {
        return r;
    }
    let Some(wf) = WORKFLOWS.iter().find(|w| w.id == workflow) else {
        return fail(40404000, format!("workflow {workflow} not found"));
    };
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return fail(40004000, format!("request body is not JSON: {e}")),
        }
    };
    let input = match body.get("input") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(_) => return fail(40004001, "`input` must be an object of task inputs"),
    };
    let mut plan_args = Map::new();
    for (task, params) in &input {
        let Some(params) = params.as_object() else {
            return fail(
                40004001,
                format!("input of task `{task}` must be an object"),
            );
        };
        if task == "sim" {
            match sim_controls(params) {
                Ok((args, None)) => plan_args = args,
                Ok((_, Some(code))) => {
                    return fail(code, "rejected on request (sim.reject)");
                }
                Err(r) => return r,
            }
            continue;
        }
        if !wf.tasks.iter().any(|t| t.component == task) {
            let known: Vec<&str> = wf.tasks.iter().map(|t| t.component).collect();
            return fail(
                40004001,
                format!(
                    "workflow {} has no task `{task}` (its tasks: {})",
                    wf.id,
                    known.join(", ")
                ),
            );
        }
        for (param, value) in params {
            if !(value.is_string() || value.is_number()) {
                return fail(
                    40004001,
                    format!("parameter {task}.{param} must be a string or a number"),
                );
            }
        }
    }
    for req in wf.required {
        let given = req
            .split_once('.')
            .and_then(|(t, p)| input.get(t)?.get(p))
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""));
        if !given {
            return fail(
                50004002,
                format!(
                    "dag controller: required parameter {req} of workflow {} is missing",
                    wf.id
                ),
            );
        }
    }
    let plan: JobPlan = neb.sim.plan(&plan_args);
    let life = Lifecycle::new(plan);
    let mut inner = neb.lock();
    let id = inner.next_id;
    inner.next_id += 1;
    let name = format!("{}_{}", wf.name, life.created_at.format("%Y%m%d%H%M%S"));
    let task_ids = wf
        .tasks
        .iter()
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let label = serde_json::to_string(&input).unwrap_or_default();
    inner.jobs.insert(
        id,
        SimJob {
            id,
            workflow: wf,
            name,
            life,
            task_ids,
        },
    );
    drop(inner);
    neb.sim.record_job("nebula", &label);
    neb.sim.after_create(ok(json!({ "id": id })))
}

/// A task's status and times at one instant.
#[derive(Debug, Clone, Copy, PartialEq)]
struct TaskView {
    status: i64,
    begin: Option<Duration>,
    end: Option<Duration>,
}

/// What every task of `job` looks like at `now` (offsets from the job's creation). Tasks run
/// in order, each for an equal share of the run time; a failing job fails in its last task; a
/// cancellation freezes the tasks where they were, the running one stopping (5) then
/// interrupted (4), the ones not started interrupted once the job is.
fn tasks_at(job: &SimJob, now: Instant) -> Vec<TaskView> {
    let plan = job.life.plan;
    let n = job.task_ids.len().max(1) as u32;
    let t = now.saturating_duration_since(job.life.created);
    let stop = job
        .life
        .cancel_requested
        .filter(|at| !natural_end(job, *at))
        .map(|at| at.saturating_duration_since(job.life.created));
    let canceled = matches!(job.life.phase_at(now), Phase::Canceled);
    let cancel_end = stop.map(|s| s + job.life.cancel_delay);
    (0..n)
        .map(|i| {
            let begin = plan.queue + plan.run * i / n;
            let end = plan.queue + plan.run * (i + 1) / n;
            match stop {
                Some(s) if end <= s => TaskView {
                    status: 2,
                    begin: Some(begin),
                    end: Some(end),
                },
                Some(s) if begin <= s => TaskView {
                    status: if canceled { 4 } else { 5 },
                    begin: Some(begin),
                    end: if canceled { cancel_end } else { None },
                },
                Some(_) => TaskView {
                    status: if canceled { 4 } else { 0 },
                    begin: None,
                    end: None,
                },
                None if t >= end => TaskView {
                    status: if i == n - 1 && !plan.succeed { 3 } else { 2 },
                    begin: Some(begin),
                    end: Some(end),
                },
                None if t >= begin => TaskView {
                    status: 1,
                    begin: Some(begin),
                    end: None,
                },
                None => TaskView {
                    status: 0,
                    begin: None,
                    end: None,
                },
            }
        })
        .collect()
}

/// Whether the job had already ended on its own at `at`.
fn natural_end(job: &SimJob, at: Instant) -> bool {
    at.saturating_duration_since(job.life.created) >= job.life.plan.queue + job.life.plan.run
}

fn job_status(phase: Phase) -> i64 {
    match phase {
        Phase::Queued => 0,
        Phase::Running(_) => 1,
        Phase::Succeeded => 2,
        Phase::Failed => 3,
        Phase::Canceled => 4,
        Phase::Cancelling => 5,
    }
}

fn ms(t: Option<DateTime<Utc>>) -> i64 {
    t.map(|t| t.timestamp_millis()).unwrap_or(0)
}

/// Task times are ISO-8601 with the server's offset, as the docs show (`+08:00`).
fn iso(created: DateTime<Utc>, offset: Option<Duration>) -> Value {
    let Some(off) = offset else {
        return Value::String(String::new());
    };
    let t = created + chrono::Duration::from_std(off).unwrap_or_else(|_| chrono::Duration::zero());
    let tz = FixedOffset::east_opt(8 * 3600).unwrap_or(Utc.fix());
    Value::String(
        t.with_timezone(&tz)
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, false),
    )
}

fn job_json(job: &SimJob, now: Instant, with_tasks: bool) -> Value {
    let phase = job.life.phase_at(now);
    let tasks = tasks_at(job, now);
    let began = tasks.first().and_then(|t| t.begin);
    let created = job.life.created_at;
    let at = |d: Option<Duration>| {
        d.map(|d| {
            created + chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::zero())
        })
    };
    let ended = if phase.is_terminal() {
        match phase {
            Phase::Canceled => job.life.ended_at(),
            _ => at(Some(job.life.plan.queue + job.life.plan.run)),
        }
    } else {
        None
    };
    let tasks_value = if with_tasks {
        Value::Array(
            tasks
                .iter()
                .zip(&job.task_ids)
                .zip(job.workflow.tasks)
                .map(|((v, id), def)| {
                    json!({
                        "id": id,
                        "name": def.name,
                        "status": v.status,
                        "runBeginTime": iso(created, v.begin),
                        "runEndTime": iso(created, v.end),
                    })
                })
                .collect(),
        )
    } else {
        Value::Null
    };
    json!({
        "id": job.id,
        "name": job.name,
        "workflowId": job.workflow.id,
        "workflowName": job.workflow.name,
        "status": job_status(phase),
        "runBeginTime": ms(at(began)),
        "runEndTime": ms(ended),
        "createTime": ms(Some(created)),
        "tasks": tasks_value,
    })
}

fn parse_id(raw: &str) -> Result<u64, Response> {
    raw.parse()
        .map_err(|_| fail(40004001, format!("job id `{raw}` is not a number")))
}

async fn detail(
    State(neb): State<Arc<Nebula>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = neb.authorize(&headers) {
        return r;
    }
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let inner = neb.lock();
    match inner.jobs.get(&id) {
        Some(job) => ok(job_json(job, Instant::now(), true)),
        None => fail(50004001, format!("record not found: job {id}")),
    }
}

async fn cancel(
    State(neb): State<Arc<Nebula>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = neb.authorize(&headers) {
        return r;
    }
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let mut inner = neb.lock();
    match inner.jobs.get_mut(&id).map(|job| job.life.cancel()) {
        None => fail(50004001, format!("record not found: job {id}")),
        Some(false) => fail(40004000, format!("job {id} has already finished")),
        Some(true) => ok(json!({ "success": true })),
    }
}

fn query_map(raw: Option<String>) -> Result<HashMap<String, String>, Response> {
    serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|_| fail(40004001, "malformed query string"))
}

fn positive(q: &HashMap<String, String>, key: &str, default: u64) -> Result<u64, Response> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| fail(40004001, format!("{key} must be a positive number"))),
    }
}

/// A creation-time bound of the list filter: epoch milliseconds, inclusive.
fn time_bound(filter: &Map<String, Value>, key: &str) -> Result<Option<i64>, Response> {
    match filter.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_i64()
            .map(Some)
            .ok_or_else(|| fail(40004001, format!("filter.{key} must be epoch milliseconds"))),
    }
}

async fn list_all(
    State(neb): State<Arc<Nebula>>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    list(&neb, &headers, q, None)
}

async fn list_workflow(
    State(neb): State<Arc<Nebula>>,
    Path(workflow): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    list(&neb, &headers, q, Some(workflow))
}

fn list(
    neb: &Nebula,
    headers: &HeaderMap,
    q: Option<String>,
    workflow: Option<String>,
) -> Response {
    if let Err(r) = neb.authorize(headers) {
        return r;
    }
    if let Some(w) = &workflow {
        if !WORKFLOWS.iter().any(|wf| wf.id == w) {
            return fail(40404000, format!("workflow {w} not found"));
        }
    }
    let q = match query_map(q) {
        Ok(q) => q,
        Err(r) => return r,
    };
    let (page, size) = match (positive(&q, "page", 1), positive(&q, "pageSize", 10)) {
        (Ok(p), Ok(s)) => (
            p,
            neb.sim.config.page_cap(s.min(MAX_PAGE_SIZE) as usize) as u64,
        ),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let filter: Map<String, Value> = match q.get("filter").map(|f| serde_json::from_str(f)) {
        None => Map::new(),
        Some(Ok(Value::Object(m))) => m,
        Some(_) => return fail(40004001, "filter must be URL-encoded JSON object"),
    };
    let status = match filter.get("status") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_i64().filter(|s| (0..=5).contains(s)) {
            Some(s) => Some(s),
            None => return fail(40004001, "filter.status must be a status code 0-5"),
        },
    };
    let asc = match filter.get("orderByCreateTime").and_then(Value::as_str) {
        None | Some("desc") => false,
        Some("asc") => true,
        Some(_) => return fail(40004001, "filter.orderByCreateTime must be asc or desc"),
    };
    let name = filter.get("name").and_then(Value::as_str).unwrap_or("");
    let (from, to) = match (
        time_bound(&filter, "fromCreateTime"),
        time_bound(&filter, "toCreateTime"),
    ) {
        (Ok(f), Ok(t)) => (f, t),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let now = Instant::now();
    let inner = neb.lock();
    let mut rows: Vec<Value> = inner
        .jobs
        .values()
        .filter(|j| workflow.as_deref().is_none_or(|w| j.workflow.id == w))
        .map(|j| job_json(j, now, false))
        .filter(|v| status.is_none_or(|s| v["status"].as_i64() == Some(s)))
        .filter(|v| v["name"].as_str().is_some_and(|n| n.contains(name)))
        .filter(|v| {
            let c = v["createTime"].as_i64().unwrap_or(0);
            from.is_none_or(|f| c >= f) && to.is_none_or(|t| c <= t)
        })
        .collect();
    let key = |v: &Value| (v["createTime"].as_i64(), v["id"].as_u64());
    rows.sort_by_key(key);
    if !asc {
        rows.reverse();
    }
    let total = rows.len();
    let skip = usize::try_from((page - 1).saturating_mul(size)).unwrap_or(usize::MAX);
    let items: Vec<Value> = rows.into_iter().skip(skip).take(size as usize).collect();
    ok(json!({ "total": total, "Page": page, "PageSize": size, "items": items }))
}

/// A deterministic result row of a task.
fn sample_row(def: &TaskDef, k: usize) -> Value {
    const NAMES: &[&str] = &[
        "Tim Duncan",
        "Duncan, Tim",
        "Tony \"TP\" Parker",
        "Manu Ginobili",
    ];
    let vid = format!("player{}", 100 + k);
    let score = format!("{:.6}", 1.0 / (k as f64 + 2.0));
    match (def.name, def.columns) {
        ("Query", _) => json!([vid, NAMES[k % NAMES.len()]]),
        (_, 3) => json!([vid, (k % 4).to_string(), score]),
        _ => json!([vid, score]),
    }
}

async fn sample(
    State(neb): State<Arc<Nebula>>,
    Path((id, task)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    if let Err(r) = neb.authorize(&headers) {
        return r;
    }
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    let limit = match query_map(q).and_then(|q| positive(&q, "limit", 10)) {
        Ok(l) => l as usize,
        Err(r) => return r,
    };
    let inner = neb.lock();
    let Some(job) = inner.jobs.get(&id) else {
        return fail(50004001, format!("record not found: job {id}"));
    };
    let Some(index) = job.task_ids.iter().position(|t| *t == task) else {
        return fail(40404000, format!("job {id} has no task {task}"));
    };
    let view = tasks_at(job, Instant::now())[index];
    if view.status != 2 {
        return fail(
            40404000,
            format!("task {task} has no result yet (status {})", view.status),
        );
    }
    let def = &job.workflow.tasks[index];
    let items: Vec<Value> = (0..SAMPLE_ROWS.min(limit))
        .map(|k| sample_row(def, k))
        .collect();
    ok(json!({ "items": items }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(tasks: usize, succeed: bool) -> SimJob {
        let plan = JobPlan {
            queue: Duration::from_secs(1),
            run: Duration::from_secs(tasks as u64),
            succeed,
            exit_code: 0,
        };
        SimJob {
            id: 1,
            workflow: &WORKFLOWS[1],
            name: "x".into(),
            life: Lifecycle::new(plan),
            task_ids: (0..tasks).map(|i| i.to_string()).collect(),
        }
    }

    fn statuses(j: &SimJob, after_ms: u64) -> Vec<i64> {
        tasks_at(j, j.life.created + Duration::from_millis(after_ms))
            .iter()
            .map(|t| t.status)
            .collect()
    }

    #[test]
    fn tasks_finish_one_by_one() {
        let j = job(3, true);
        assert_eq!(statuses(&j, 500), vec![0, 0, 0]);
        assert_eq!(statuses(&j, 1500), vec![1, 0, 0]);
        assert_eq!(statuses(&j, 2500), vec![2, 1, 0]);
        assert_eq!(statuses(&j, 3500), vec![2, 2, 1]);
        assert_eq!(statuses(&j, 4500), vec![2, 2, 2]);
        let f = job(3, false);
        assert_eq!(statuses(&f, 4500), vec![2, 2, 3]);
        // The job's own status agrees with its tasks at the same instant.
        let at = j.life.created + Duration::from_millis(2500);
        assert_eq!(job_json(&j, at, true)["status"], 1);
        assert_eq!(
            job_json(&f, f.life.created + Duration::from_secs(5), true)["status"],
            3
        );
    }

    #[test]
    fn cancellation_freezes_tasks_then_interrupts_them() {
        let mut j = job(3, true);
        j.life.cancel_requested = Some(j.life.created + Duration::from_millis(2500));
        assert_eq!(statuses(&j, 2600), vec![2, 5, 0]);
        assert_eq!(statuses(&j, 3500), vec![2, 4, 4]);
        assert_eq!(
            job_json(&j, j.life.created + Duration::from_millis(2600), true)["status"],
            5
        );
        assert_eq!(
            job_json(&j, j.life.created + Duration::from_secs(4), true)["status"],
            4
        );
    }

    /// Lists through the handler with a session and jobs created 10 s apart; returns the ids
    /// served (or the error code) for `filter`.
    fn listed(filter: Value) -> Result<Vec<u64>, i64> {
        let neb = Nebula {
            sim: SimState::new(SimConfig::default()),
            inner: Mutex::new(Inner::default()),
        };
        let base = chrono::DateTime::from_timestamp_millis(1_700_000_000_000).unwrap();
        {
            let mut inner = neb.lock();
            inner
                .sessions
                .insert("t".into(), Instant::now() + Duration::from_secs(60));
            for id in 1..=3u64 {
                let mut j = job(1, true);
                j.id = id;
                j.life.created_at = base + chrono::Duration::seconds(10 * id as i64);
                inner.jobs.insert(id, j);
            }
        }
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("explorer_token=t"));
        let q = serde_urlencoded::to_string([("filter", filter.to_string())]).unwrap();
        let resp = list(&neb, &h, Some(q), Some(WORKFLOWS[1].id.to_string()));
        let body = body_json(resp);
        match body["code"].as_i64() {
            Some(0) => Ok(body["data"]["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["id"].as_u64().unwrap())
                .collect()),
            other => Err(other.unwrap_or(-1)),
        }
    }

    fn body_json(resp: Response) -> Value {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let bytes = rt
            .block_on(axum::body::to_bytes(resp.into_body(), usize::MAX))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn the_list_honours_creation_time_bounds_in_epoch_ms() {
        let at = |s: i64| 1_700_000_000_000 + s * 1000;
        assert_eq!(listed(json!({})), Ok(vec![3, 2, 1]));
        assert_eq!(listed(json!({"fromCreateTime": at(20)})), Ok(vec![3, 2]));
        assert_eq!(listed(json!({"fromCreateTime": at(21)})), Ok(vec![3]));
        assert_eq!(listed(json!({"toCreateTime": at(20)})), Ok(vec![2, 1]));
        assert_eq!(
            listed(
                json!({"fromCreateTime": at(15), "toCreateTime": at(25), "orderByCreateTime": "asc"})
            ),
            Ok(vec![2])
        );
        assert_eq!(listed(json!({"fromCreateTime": at(31)})), Ok(vec![]));
        assert_eq!(
            listed(json!({"fromCreateTime": "yesterday"})),
            Err(40004001)
        );
    }

    #[test]
    fn both_credential_encodings_are_understood() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer WyJyb290IiwiMTIzIl0="),
        );
        assert_eq!(account(&h), Some(("root".into(), "123".into())));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer cm9vdDoxMjM="),
        );
        assert_eq!(account(&h), Some(("root".into(), "123".into())));
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer !!"));
        assert_eq!(account(&h), None);
    }
}
