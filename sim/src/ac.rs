//! Simulated AC / SCNet OpenAPI v2: per-region tokens (JWT-shaped, with `computeUser` and
//! `expireTime`), `/center` and `/cluster` discovery, the job endpoints with a realtime list
//! that forgets finished jobs after `--ac-realtime-window`, the history endpoints, the
//! form-body DELETE, and efile downloads honouring `Range`.
//!
//! Test hooks (documented in the README):
//! - `SIM_OUTCOME=fail|succeed`, `SIM_DURATION=2s`, `SIM_QUEUE=1s`, `SIM_EXIT_CODE=3` tokens
//!   anywhere in the command text set the job's plan.
//! - A job named `sim-error-CODE` is refused with that platform code; `sim-html-error` gets an
//!   HTML error page (HTTP 502).
//! - User `frozen` (any password) is refused with 10007.

use super::{Lifecycle, Phase, SimConfig, SimState};
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use chrono::{DateTime, FixedOffset, Utc};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Regions of the simulated account: (clusterId, clusterName, scheduler id, usable).
const REGIONS: &[(&str, &str, u64, bool)] = &[
    ("11111", "sim-suspended", 1_638_523_000, false),
    ("11112", "sim-east", 1_638_523_853, true),
    ("11113", "sim-west", 1_638_523_999, true),
];

/// The organisation code the simulator expects in `orgId`.
pub const ORG_ID: &str = "jobctl-sim-org";

/// How long after expiry a token may still be renewed.
const RENEWAL_LIMIT: chrono::Duration = chrono::Duration::hours(24);

#[derive(Debug, Clone)]
struct TokenInfo {
    cluster_id: String,
    user: String,
    expires: DateTime<Utc>,
}

#[derive(Debug, Clone)]
struct SimJob {
    id: u64,
    scheduler: u64,
    name: String,
    queue: String,
    user: String,
    workdir: String,
    out: String,
    err: String,
    command: String,
    procs: u32,
    life: Lifecycle,
}

#[derive(Debug, Default)]
struct Data {
    tokens: HashMap<String, TokenInfo>,
    jobs: BTreeMap<u64, SimJob>,
    next_id: u64,
}

#[derive(Debug)]
struct Ac {
    state: Arc<SimState>,
    data: Mutex<Data>,
}

type Shared = Arc<Ac>;

/// Routes of the simulated ac platform.
pub fn router(state: Arc<SimState>) -> Router {
    let ac = Arc::new(Ac {
        state,
        data: Mutex::new(Data {
            next_id: 35_900,
            ..Data::default()
        }),
    });
    Router::new()
        .route("/ac/openapi/v2/tokens", post(login))
        .route("/ac/openapi/v2/tokens/next", post(renew))
        .route("/ac/openapi/v2/center", get(center))
        .route("/ac/openapi/v2/user", get(user_info))
        .route("/hpc/openapi/v2/cluster", get(cluster))
        .route(
            "/hpc/openapi/v2/apptemplates/{apptype}/{appname}/job",
            post(submit),
        )
        .route("/hpc/openapi/v2/jobs", get(realtime_list).delete(control))
        .route("/hpc/openapi/v2/jobs/{job_id}", get(realtime_detail))
        .route("/hpc/openapi/v2/historyjobs", get(history_list))
        .route(
            "/hpc/openapi/v2/historyjobs/{jobmanager_id}/{job_id}",
            get(history_detail),
        )
        .route("/efile/openapi/v2/file/download", get(download))
        .with_state(ac)
}

/// Environment variables pointing jobctl's built-in ac profile at the simulator.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    vec![
        ("AC_URL".into(), base.to_string()),
        ("AC_USER".into(), config.username.clone()),
        ("AC_PASSWORD".into(), config.password.clone()),
        ("AC_ORG_ID".into(), ORG_ID.into()),
    ]
}

fn ok(data: Value) -> Response {
    axum::Json(json!({"code": "0", "msg": "success", "data": data})).into_response()
}

fn fail(status: StatusCode, code: &str, msg: &str) -> Response {
    (
        status,
        axum::Json(json!({"code": code, "msg": msg, "data": null})),
    )
        .into_response()
}

fn refuse(code: &str, msg: &str) -> Response {
    fail(StatusCode::OK, code, msg)
}

/// The documented text of each error code, used when tests ask for a code by job name.
fn code_text(code: &str) -> &'static str {
    match code {
        "10001" => "内部错误",
        "10003" => "参数不全",
        "10004" => "参数无效",
        "10007" => "用户已被冻结",
        "10008" => "权限不足",
        "10009" => "没有权限访问接口",
        "10010" => "文件校验失败",
        "10011" => "文件过大",
        "10012" => "连接中断",
        "10013" => "操作超时",
        "815005" => "作业提交失败(调度系统没返回)",
        "815007" => "作业提交失败(调度系统sbatch失败)",
        _ => "未知错误",
    }
}

fn html_error() -> Response {
    (
        StatusCode::BAD_GATEWAY,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
    )
        .into_response()
}

fn cst() -> FixedOffset {
    use chrono::Offset;
    FixedOffset::east_opt(8 * 3600).unwrap_or_else(|| Utc.fix())
}

fn naive(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| {
        t.with_timezone(&cst())
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    })
    .unwrap_or_default()
}

fn iso(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| {
        t.with_timezone(&cst())
            .format("%Y-%m-%dT%H:%M:%S")
            .to_string()
    })
    .unwrap_or_default()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

impl Ac {
    fn issue(&self, data: &mut Data, cluster_id: &str, user: &str) -> String {
        let expires = Utc::now()
            + chrono::Duration::from_std(self.state.config.token_ttl)
                .unwrap_or_else(|_| chrono::Duration::hours(1));
        let payload = json!({
            "computeUser": user, "accountStatus": "Trial", "creator": "ac", "role": "1",
            "expireTime": expires.timestamp_millis().to_string(), "clusterId": cluster_id,
            "invoker": ORG_ID, "user": user, "userId": "11655048541",
        });
        let token = format!(
            "{}.{}.{}",
            b64(&json!({"alg": "HS256", "typ": "JWT"})),
            b64(&payload),
            uuid::Uuid::new_v4().simple()
        );
        data.tokens.insert(
            token.clone(),
            TokenInfo {
                cluster_id: cluster_id.to_string(),
                user: user.to_string(),
                expires,
            },
        );
        token
    }

    /// The caller's token, or the answer refusing it. `regional` refuses the platform token.
    fn check(&self, headers: &HeaderMap, regional: bool) -> Result<TokenInfo, Response> {
        let token = headers
            .get("token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if token.is_empty() {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "10003",
                "参数不全: token header missing",
            ));
        }
        let data = self.data.lock().map_err(|_| refuse("10001", "内部错误"))?;
        let Some(info) = data.tokens.get(token).cloned() else {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "10008",
                "权限不足: token invalid",
            ));
        };
        if info.expires <= Utc::now() {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "10008",
                "权限不足: token expired",
            ));
        }
        if regional && info.cluster_id == "0" {
            return Err(refuse(
                "10008",
                "权限不足: the platform token cannot call regional APIs",
            ));
        }
        Ok(info)
    }

    fn scheduler_of(cluster_id: &str) -> Option<u64> {
        REGIONS.iter().find(|r| r.0 == cluster_id).map(|r| r.2)
    }
}

async fn login(State(ac): State<Shared>, headers: HeaderMap) -> Response {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (user, password, org) = (h("user"), h("password"), h("orgId"));
    if user.is_empty() || password.is_empty() || org.is_empty() {
        return refuse(
            "10003",
            "参数不全: user, password and orgId headers are required",
        );
    }
    if user == "frozen" {
        return refuse("10007", "用户已被冻结");
    }
    if user != ac.state.config.username {
        return refuse("10009", "用户不存在");
    }
    if password != ac.state.config.password {
        return refuse("10008", "权限不足: 用户名或密码错误");
    }
    if org != ORG_ID {
        return refuse("10004", "参数无效: unknown orgId");
    }
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let mut list = vec![
        json!({"clusterId": 0, "clusterName": "ac", "token": ac.issue(&mut data, "0", &user)}),
    ];
    for (id, name, _, usable) in REGIONS {
        let token = usable.then(|| ac.issue(&mut data, id, &user));
        list.push(json!({"clusterId": id, "clusterName": name, "token": token}));
    }
    ok(Value::Array(list))
}

async fn renew(State(ac): State<Shared>, headers: HeaderMap) -> Response {
    let token = headers
        .get("token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let Some(info) = data.tokens.get(token).cloned() else {
        return fail(StatusCode::UNAUTHORIZED, "10008", "权限不足: token invalid");
    };
    if Utc::now() - info.expires > RENEWAL_LIMIT {
        return fail(
            StatusCode::UNAUTHORIZED,
            "10008",
            "权限不足: token expired more than 24 h ago",
        );
    }
    let new = ac.issue(&mut data, &info.cluster_id, &info.user);
    ok(json!({"token": new}))
}

async fn center(State(ac): State<Shared>, headers: HeaderMap) -> Response {
    let info = match ac.check(&headers, false) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if info.cluster_id == "0" {
        // Observed on the real platform: the platform token gets an internal error here.
        return refuse("10001", "internal_error");
    }
    let base = ac
        .state
        .base_url
        .lock()
        .map(|b| b.clone())
        .unwrap_or_default();
    ok(json!({
        "id": info.cluster_id,
        "hpcUrls": [
            {"url": "http://127.0.0.1:9/hpc", "enable": "false"},
            {"url": format!("{base}/hpc"), "enable": "true"},
        ],
        "efileUrls": [{"url": base, "enable": true}],
        "aiUrls": [],
        "clusterUserName": info.user,
    }))
}

async fn user_info(State(ac): State<Shared>, headers: HeaderMap) -> Response {
    match ac.check(&headers, false) {
        Ok(i) => ok(json!({"userName": i.user, "homePath": format!("/public/home/{}", i.user)})),
        Err(r) => r,
    }
}

async fn cluster(State(ac): State<Shared>, headers: HeaderMap) -> Response {
    let info = match ac.check(&headers, true) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let region = REGIONS.iter().find(|r| r.0 == info.cluster_id);
    ok(json!(
        region
            .map(|r| vec![json!({
                "id": r.2, "text": r.1, "JobManagerType": "SLURM",
                "JobManagerAddr": "10.0.35.248", "JobManagerPort": "6817",
            })])
            .unwrap_or_default()
    ))
}

/// `SIM_*=…` tokens of the command text as lifecycle arguments (`sim_outcome`, …).
fn sim_args(command: &str) -> Map<String, Value> {
    command
        .split_whitespace()
        .filter_map(|t| t.split_once('='))
        .filter(|(k, _)| k.starts_with("SIM_"))
        .map(|(k, v)| {
            let v = v.trim_matches(|c| c == '\'' || c == '"' || c == ';');
            (k.to_ascii_lowercase(), Value::String(v.to_string()))
        })
        .collect()
}

async fn submit(
    State(ac): State<Shared>,
    Path((_apptype, _appname)): Path<(String, String)>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let info = match ac.check(&headers, true) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let Ok(body) = serde_json::from_str::<Value>(&body) else {
        return refuse("10004", "参数无效: body is not JSON");
    };
    let scheduler = match body.get("strJobManagerID") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.parse().ok(),
        _ => return refuse("10003", "参数不全: strJobManagerID"),
    };
    if scheduler.is_none() || scheduler != Ac::scheduler_of(&info.cluster_id) {
        return refuse("10004", "参数无效: unknown strJobManagerID for this region");
    }
    let Some(map) = body.get("mapAppJobInfo").and_then(Value::as_object) else {
        return refuse("10003", "参数不全: mapAppJobInfo");
    };
    let mut f = BTreeMap::new();
    for (k, v) in map {
        let Value::String(s) = v else {
            return refuse(
                "10004",
                &format!("参数无效: mapAppJobInfo.{k} must be a string"),
            );
        };
        f.insert(k.as_str(), s.as_str());
    }
    let get = |k: &str| f.get(k).copied().unwrap_or("");
    let name = get("GAP_JOB_NAME");
    if name == "sim-html-error" {
        return html_error();
    }
    if let Some(code) = name.strip_prefix("sim-error-") {
        return refuse(code, code_text(code));
    }
    for k in [
        "GAP_CMD_FILE",
        "GAP_JOB_NAME",
        "GAP_WORK_DIR",
        "GAP_STD_OUT_FILE",
        "GAP_STD_ERR_FILE",
    ] {
        if get(k).trim().is_empty() {
            return refuse("10003", &format!("参数不全: {k}"));
        }
    }
    if !get("GAP_PPN").is_empty() && !get("GAP_NPROC").is_empty() {
        return refuse(
            "10004",
            "参数无效: GAP_PPN and GAP_NPROC exclude each other",
        );
    }
    let queue = get("GAP_QUEUE");
    if !["", "debug", "normal"].contains(&queue) {
        return refuse(
            "815007",
            &format!(
                "作业提交失败: sbatch: error: Batch job submission failed: Invalid partition name specified ({queue})"
            ),
        );
    }
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    data.next_id += 1;
    let id = data.next_id;
    let command = get("GAP_CMD_FILE").to_string();
    let plan = ac.state.plan(&sim_args(&command));
    let procs = get("GAP_NPROC")
        .parse()
        .ok()
        .or_else(|| get("GAP_PPN").parse().ok())
        .unwrap_or(1);
    let job = SimJob {
        id,
        scheduler: scheduler.unwrap_or_default(),
        name: name.to_string(),
        queue: if queue.is_empty() {
            "normal".into()
        } else {
            queue.to_string()
        },
        user: info.user.clone(),
        workdir: get("GAP_WORK_DIR").to_string(),
        out: get("GAP_STD_OUT_FILE").replace("%j", &id.to_string()),
        err: get("GAP_STD_ERR_FILE").replace("%j", &id.to_string()),
        command,
        procs,
        life: Lifecycle::new(plan),
    };
    data.jobs.insert(id, job);
    drop(data);
    ac.state.record_job("ac", name);
    ac.state.after_create(ok(Value::String(id.to_string())))
}

fn native(phase: Phase) -> &'static str {
    match phase {
        Phase::Queued => "statQ",
        Phase::Running(_) | Phase::Cancelling => "statR",
        Phase::Succeeded => "statC",
        Phase::Failed => "statE",
        Phase::Canceled => "statDE",
    }
}

impl SimJob {
    fn in_realtime(&self, window: std::time::Duration) -> bool {
        match self.life.ended_at() {
            None => true,
            Some(end) => {
                let window =
                    chrono::Duration::from_std(window).unwrap_or_else(|_| chrono::Duration::zero());
                Utc::now() < end + window
            }
        }
    }

    fn run_time(&self) -> String {
        let Some(start) = self.life.started_at() else {
            return String::new();
        };
        let end = self.life.ended_at().unwrap_or_else(Utc::now);
        let s = (end - start).num_seconds().max(0);
        format!("{:02}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
    }

    fn realtime(&self) -> Value {
        let phase = self.life.phase();
        json!({
            "jobId": self.id.to_string(), "jobName": self.name, "jobStatus": native(phase),
            "queue": self.queue, "user": self.user,
            "nodeUsed": if phase == Phase::Queued { "" } else { "sim-node01" },
            "procNumUsed": self.procs,
            "jobStartTime": naive(self.life.started_at()), "jobRunTime": self.run_time(),
            "jobVncSessionInfo": null, "jobmanagerId": self.scheduler.to_string(),
            "jobmanagerName": "Cluster", "jobmanagerType": "SLURM",
            "errorPath": self.err, "outputPath": self.out, "workDir": self.workdir,
            "reason": if phase == Phase::Queued { Value::from("Priority") } else { Value::Null },
            "appType": "BASE",
        })
    }

    fn history(&self) -> Value {
        let phase = self.life.phase();
        let exit = match phase {
            Phase::Succeeded => "0:0".to_string(),
            Phase::Failed => format!("{}:0", self.life.plan.exit_code),
            _ => "0:15".to_string(),
        };
        let end = self.life.ended_at();
        json!({
            "jobId": self.id.to_string(), "jobName": self.name, "jobState": native(phase),
            "queue": self.queue, "userName": self.user, "jobmanagerId": self.scheduler.to_string(),
            "jobQueueTime": naive(Some(self.life.created_at)),
            "jobStartTime": naive(self.life.started_at()), "jobEndTime": naive(end),
            "acctTime": iso(end), "jobExitStatus": exit, "jobWalltimeUsed": self.run_time(),
            "nodect": 1, "jobProcNum": self.procs, "workdir": self.workdir,
            "appType": "BASE", "hostName": "sim-node01",
        })
    }

    /// Output so far; grows while the job runs and only ever appends.
    fn stdout(&self) -> Option<String> {
        let now = Instant::now();
        let at = self.life.cancel_requested.map_or(now, |c| c.min(now));
        let progress = match self.life.phase_at(at) {
            Phase::Queued => return None,
            Phase::Running(p) => p,
            _ => 1.0,
        };
        let phase = self.life.phase();
        let mut s = format!(
            "jobctl-sim: job {} started on sim-node01\n$ {}\n",
            self.id,
            self.command.lines().next().unwrap_or("")
        );
        let steps = ((progress * 10.0).floor() as u32).min(10);
        for k in 1..=steps {
            s.push_str(&format!("progress {}%\n", k * 10));
        }
        match phase {
            Phase::Succeeded => s.push_str("finished\n"),
            Phase::Failed => s.push_str(&format!("exit status {}\n", self.life.plan.exit_code)),
            Phase::Canceled => s.push_str("cancelled\n"),
            _ => {}
        }
        Some(s)
    }

    fn stderr(&self) -> Option<String> {
        self.stdout()?;
        Some(match self.life.phase() {
            Phase::Failed => format!(
                "error: simulated failure (exit {})\n",
                self.life.plan.exit_code
            ),
            Phase::Canceled => format!("slurmstepd: *** JOB {} CANCELLED ***\n", self.id),
            _ => String::new(),
        })
    }
}

fn paging(q: &HashMap<String, String>, required: bool) -> Result<(usize, usize), Response> {
    let num = |k: &str, default: usize| -> Result<usize, Response> {
        match q.get(k).map(|s| s.trim()) {
            None | Some("") if !required => Ok(default),
            None | Some("") => Err(refuse("10003", &format!("参数不全: {k}"))),
            Some(v) => v
                .parse()
                .map_err(|_| refuse("10004", &format!("参数无效: {k}"))),
        }
    };
    Ok((num("start", 0)?, num("limit", 25)?.clamp(1, 1000)))
}

const CODES: &[&str] = &[
    "statR", "statQ", "statH", "statS", "statE", "statC", "statW", "statX", "statD", "statDE",
    "statT", "statN", "statRQ",
];

async fn realtime_list(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = ac.check(&headers, true) {
        return r;
    }
    let Some(sched) = q.get("strClusterIDList").filter(|s| !s.is_empty()) else {
        return refuse("10003", "参数不全: strClusterIDList");
    };
    let (start, limit) = match paging(&q, false) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let limit = ac.state.config.page_cap(limit);
    let filter = |k: &str| q.get(k).map(String::as_str).filter(|s| !s.is_empty());
    if let Some(st) = filter("strJobStat") {
        if !CODES.contains(&st) {
            return refuse("10004", "参数无效: strJobStat");
        }
    }
    let Ok(data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let window = ac.state.config.ac_realtime_window;
    let matching: Vec<Value> = data
        .jobs
        .values()
        .rev()
        .filter(|j| j.scheduler.to_string() == *sched && j.in_realtime(window))
        .filter(|j| filter("strJobOwner").is_none_or(|o| j.user == o))
        .filter(|j| filter("strJobName").is_none_or(|n| j.name == n))
        .filter(|j| filter("strJobId").is_none_or(|i| j.id.to_string() == i))
        .filter(|j| filter("strQueueName").is_none_or(|n| j.queue == n))
        .filter(|j| filter("strJobStat").is_none_or(|s| native(j.life.phase()) == s))
        .map(SimJob::realtime)
        .collect();
    let total = matching.len();
    let page: Vec<Value> = matching.into_iter().skip(start).take(limit).collect();
    ok(json!({"total": total, "list": page}))
}

async fn realtime_detail(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Path(job_id): Path<String>,
) -> Response {
    if let Err(r) = ac.check(&headers, true) {
        return r;
    }
    let Ok(data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let window = ac.state.config.ac_realtime_window;
    match job_id.parse::<u64>().ok().and_then(|id| data.jobs.get(&id)) {
        Some(j) if j.in_realtime(window) => ok(j.realtime()),
        _ => refuse(
            "10004",
            &format!("参数无效: 作业 {job_id} 不在实时作业列表中"),
        ),
    }
}

async fn control(State(ac): State<Shared>, headers: HeaderMap, body: String) -> Response {
    let info = match ac.check(&headers, true) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let form: HashMap<String, String> = serde_urlencoded::from_str(&body).unwrap_or_default();
    match form.get("jobMethod").map(String::as_str) {
        Some("5") => {}
        None => return refuse("10003", "参数不全: jobMethod"),
        Some(_) => return refuse("10004", "参数无效: jobMethod"),
    }
    let Some(map) = form.get("strJobInfoMap").filter(|s| !s.is_empty()) else {
        return refuse("10003", "参数不全: strJobInfoMap");
    };
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let window = ac.state.config.ac_realtime_window;
    let mut targets = Vec::new();
    for entry in map.split(';').filter(|e| !e.is_empty()) {
        // `<jobManagerId>,<user>:<jobId>:`
        let parsed = entry.split_once(',').and_then(|(sched, rest)| {
            let mut parts = rest.split(':');
            let user = parts.next()?;
            let job = parts.next()?.parse::<u64>().ok()?;
            Some((sched.to_string(), user.to_string(), job))
        });
        let Some((sched, user, job_id)) = parsed else {
            return refuse("10004", &format!("参数无效: strJobInfoMap entry '{entry}'"));
        };
        match data.jobs.get(&job_id) {
            Some(j) if j.scheduler.to_string() == sched && j.in_realtime(window) => {
                if j.user != user || user != info.user {
                    return refuse(
                        "10008",
                        &format!("权限不足: job {job_id} belongs to {}", j.user),
                    );
                }
                targets.push(job_id);
            }
            _ => return refuse("10004", &format!("参数无效: 作业 {job_id} 不存在")),
        }
    }
    for id in targets {
        if let Some(j) = data.jobs.get_mut(&id) {
            j.life.cancel();
        }
    }
    ok(Value::Null)
}

async fn history_list(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = ac.check(&headers, true) {
        return r;
    }
    let p = |k: &str| q.get(k).map(String::as_str).filter(|s| !s.is_empty());
    for k in ["strClusterNameList", "startTime", "endTime", "timeType"] {
        if p(k).is_none() {
            return refuse("10003", &format!("参数不全: {k}"));
        }
    }
    if p("timeType") != Some("CUSTOM") {
        return refuse("10004", "参数无效: timeType");
    }
    let (start, limit) = match paging(&q, true) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let limit = ac.state.config.page_cap(limit);
    let time = |k: &str| {
        chrono::NaiveDateTime::parse_from_str(p(k).unwrap_or(""), "%Y-%m-%d %H:%M:%S")
            .ok()
            .and_then(|n| n.and_local_timezone(cst()).single())
            .map(|t| t.with_timezone(&Utc))
    };
    let (Some(from), Some(to)) = (time("startTime"), time("endTime")) else {
        return refuse(
            "10004",
            "参数无效: startTime/endTime must be YYYY-MM-DD HH:MM:SS",
        );
    };
    // The window is inclusive to the second, as the naive times are.
    let to = to + chrono::Duration::seconds(1);
    let by_queue = p("isQueryByQueueTime") == Some("true");
    let Ok(data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let mut matching: Vec<&SimJob> = data
        .jobs
        .values()
        .filter(|j| j.scheduler.to_string() == p("strClusterNameList").unwrap_or(""))
        .filter(|j| j.life.phase().is_terminal())
        .filter(|j| {
            let t = if by_queue {
                Some(j.life.created_at)
            } else {
                j.life.ended_at()
            };
            t.is_some_and(|t| t >= from && t < to)
        })
        .filter(|j| p("strUser").is_none_or(|u| j.user == u))
        .filter(|j| p("jobState").is_none_or(|s| native(j.life.phase()) == s))
        .filter(|j| p("jobId").is_none_or(|i| j.id.to_string() == i))
        .filter(|j| p("jobName").is_none_or(|n| j.name == n))
        .filter(|j| p("queue").is_none_or(|n| j.queue == n))
        .collect();
    if p("sort") != Some("ASC") {
        matching.reverse();
    }
    let total = matching.len();
    let page: Vec<Value> = matching
        .into_iter()
        .skip(start)
        .take(limit)
        .map(SimJob::history)
        .collect();
    ok(json!({"total": total, "list": page}))
}

async fn history_detail(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Path((manager, job_id)): Path<(String, String)>,
) -> Response {
    if let Err(r) = ac.check(&headers, true) {
        return r;
    }
    let Ok(data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    match job_id.parse::<u64>().ok().and_then(|id| data.jobs.get(&id)) {
        Some(j) if j.scheduler.to_string() == manager && j.life.phase().is_terminal() => {
            ok(j.history())
        }
        _ => refuse(
            "10004",
            &format!("参数无效: 历史作业 {manager}/{job_id} 不存在"),
        ),
    }
}

async fn download(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if let Err(r) = ac.check(&headers, true) {
        return r;
    }
    let Some(path) = q.get("path").filter(|p| !p.is_empty()) else {
        return refuse("10003", "参数不全: path");
    };
    let content = {
        let Ok(data) = ac.data.lock() else {
            return refuse("10001", "内部错误");
        };
        data.jobs.values().find_map(|j| {
            if *path == j.out {
                j.stdout()
            } else if *path == j.err {
                j.stderr()
            } else {
                None
            }
        })
    };
    let Some(content) = content else {
        return fail(
            StatusCode::NOT_FOUND,
            "10004",
            &format!("参数无效: 文件 {path} 不存在"),
        );
    };
    let bytes = content.into_bytes();
    let len = bytes.len() as u64;
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|r| r.strip_prefix("bytes="))
        .and_then(|r| r.split_once('-'))
        .map(|(a, b)| (a.parse::<u64>().ok(), b.parse::<u64>().ok()));
    let octet = (header::CONTENT_TYPE, "application/octet-stream");
    match range {
        None => (StatusCode::OK, [octet], bytes).into_response(),
        Some((Some(from), to)) => {
            if from >= len {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                )
                    .into_response();
            }
            let last = to.unwrap_or(len - 1).min(len - 1);
            if last < from {
                return (
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    [(header::CONTENT_RANGE, format!("bytes */{len}"))],
                )
                    .into_response();
            }
            let part = bytes[from as usize..=last as usize].to_vec();
            let mut resp = (StatusCode::PARTIAL_CONTENT, [octet], part).into_response();
            if let Ok(v) = header::HeaderValue::from_str(&format!("bytes {from}-{last}/{len}")) {
                resp.headers_mut().insert(header::CONTENT_RANGE, v);
            }
            resp
        }
        Some((None, _)) => refuse("10004", "参数无效: only `bytes=N-` ranges are supported"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sim_tokens_come_from_the_command_text() {
        let a = sim_args("SIM_OUTCOME=fail SIM_DURATION=1s ./run.sh --x=1");
        assert_eq!(a["sim_outcome"], "fail");
        assert_eq!(a["sim_duration"], "1s");
        assert!(!a.contains_key("--x"));
    }
}
