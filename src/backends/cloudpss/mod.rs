//! The cloudpss backend: CloudPSS XStudio jobs over its GraphQL API.
//!
//! - `submit` → `createJob` (the function RID first in `context`, `--arg`s as `args`, the
//!   policy from options), `status` → `job`, `statuses` → one `jobs` query per page of ids,
//!   `list` → `jobs` with cursor pages, `abort` → `abortJob`.
//! - Job output lives in CloudPSS message streams (`Job.output`, read over SSE or WebSocket,
//!   UBJSON, see [`streams`]): `logs` prints them, `fetch` writes them as files
//!   ([`results`]), and `status` of a running job carries its latest `progress` ([`progress`]).
//! - `queues` → `jobPolicies`.

pub mod api;
pub mod auth;
pub mod mapping;
pub mod progress;
pub mod results;
pub mod streams;
pub mod templates;
pub mod ubjson;

use self::api::{
    AbortJobMutation, Api, CreateJobMutation, JobPoliciesQuery, JobQuery, JobsQuery,
    SystemInfoQuery, abort_job_mutation, create_job_mutation, job_policies_query, job_query,
    jobs_query, system_info_query,
};
use self::auth::{Auth, Credentials, Login, user_of};
use self::mapping::{JobRecord, natives_of, to_job};
use self::progress::ProgressTracker;
use self::streams::StreamClient;
use crate::backend::{BackendContext, CheckSink, JobBackend, LogSink};
use crate::config::Secret;
use crate::error::{Error, Result};
use crate::http::Idempotency;
use crate::http::pagination::{self, Page};
use crate::http::token::CachedToken;
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Capability, Check, CommandRule, Job, JobSpec, JobState,
    ListQuery, LogsRequest, ProgressFn, QueueInfo, SpecRules,
};
use async_trait::async_trait;
use serde_json::Value;
use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The platform's base URL when none is configured (the official SDK's default).
pub const DEFAULT_API_URL: &str = "https://cloudpss.net/";

/// Jobs asked for per `jobs` request (list pages and id batches); the platform may serve fewer.
const PAGE_SIZE: usize = 100;

/// Default `timeout` of `abortJob`: how long the platform may take to stop the job.
const DEFAULT_ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Option keys of `submit` (`--opt`); `queue`…`priority` may also be profile defaults.
const OPTIONS: &[&str] = &[
    "function", "queue", "cpu", "ecpu", "mem", "priority", "context",
];

/// Builds the cloudpss backend for a profile.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Ok(Arc::new(CloudpssBackend::new(ctx)?))
}

/// CloudPSS over GraphQL.
#[derive(Debug)]
pub struct CloudpssBackend {
    api: Api,
    auth: Auth,
    ctx: BackendContext,
    abort_timeout: Duration,
    streams: StreamClient,
    tracker: ProgressTracker,
}

/// The GraphQL endpoint and the base the output streams hang off, from the profile:
/// `url` (`CLOUDPSS_GQL_URL`) names the GraphQL endpoint and wins for GraphQL; `api_url`
/// (`CLOUDPSS_API_URL`, the SDK's variable) is the platform's base, GraphQL at `graphql`
/// under it; neither gives `https://cloudpss.net/`. Streams are on the host of `api_url`,
/// else on the host of the GraphQL endpoint.
pub fn endpoints(ctx: &BackendContext) -> Result<(url::Url, url::Url)> {
    let name = &ctx.profile.name;
    let parse = |raw: &str, what: &str| -> Result<url::Url> {
        let u = url::Url::parse(raw.trim())
            .map_err(|e| Error::usage(format!("profile '{name}': invalid {what} '{raw}': {e}")))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(Error::usage(format!(
                "profile '{name}': {what} '{raw}' must be an http(s) URL with a host"
            )));
        }
        Ok(u)
    };
    let api = ctx
        .profile
        .option("api_url")
        .map(|raw| parse(raw, "CLOUDPSS_API_URL / api_url"))
        .transpose()?;
    let gql = match ctx.profile.url.as_deref() {
        Some(raw) => {
            let mut u = parse(raw, "CLOUDPSS_GQL_URL / url")?;
            // A bare host gets `graphql` appended, like the official SDK does.
            if u.path().trim_matches('/').is_empty() {
                u.set_path("/graphql");
            }
            u
        }
        None => {
            let mut base = match &api {
                Some(a) => a.clone(),
                None => parse(DEFAULT_API_URL, "default URL")?,
            };
            if !base.path().ends_with('/') {
                let path = format!("{}/", base.path());
                base.set_path(&path);
            }
            base.join("graphql")
                .map_err(|e| Error::usage(format!("profile '{name}': {e}")))?
        }
    };
    let streams = match api {
        Some(a) => a,
        None if ctx.profile.url.is_none() => parse(DEFAULT_API_URL, "default URL")?,
        None => gql.clone(),
    };
    Ok((gql, streams))
}

/// The policy part of a submission, resolved from spec options, profile options and defaults.
#[derive(Debug, Clone, PartialEq)]
struct Policy {
    queue: i64,
    cpu: i64,
    ecpu: f64,
    mem: f64,
    priority: f64,
}

impl CloudpssBackend {
    /// The backend for the profile in `ctx`. A URL without a path (`https://cloudpss.net/`)
    /// gets `graphql` appended, like the official SDK does.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        let (url, stream_base) = endpoints(&ctx)?;
        let abort_timeout = match ctx.profile.option("abort_timeout") {
            None => DEFAULT_ABORT_TIMEOUT,
            Some(raw) => crate::config::parse_duration(raw).map_err(|e| {
                Error::usage(format!(
                    "profile '{}', `abort_timeout`: {}",
                    ctx.profile.name, e.message
                ))
            })?,
        };
        let api = Api::new(&ctx.profile, url)?;
        let streams = StreamClient::new(api.http().clone(), &stream_base)?;
        Ok(CloudpssBackend {
            auth: Auth::new(&ctx, api.url()),
            api,
            ctx,
            abort_timeout,
            streams,
            tracker: ProgressTracker::default(),
        })
    }

    /// Runs `op` with a valid token, logging in when needed and once more if the platform
    /// says the token is no longer valid.
    async fn authed<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<CachedToken>) -> Fut + Send + Sync,
        Fut: Future<Output = Result<T>> + Send,
        T: Send,
    {
        let source = Login {
            auth: &self.auth,
            api: &self.api,
        };
        self.auth.store().with_token(&source, op).await
    }

    /// A numeric option: from the spec, else the profile, else `default`.
    fn number(&self, spec: &JobSpec, key: &str, default: f64) -> Result<f64> {
        let bad = |raw: &str| {
            Error::usage(format!(
                "option `{key}` must be a number, got '{raw}' (field `options.{key}`)"
            ))
        };
        match spec.options.get(key) {
            Some(Value::Number(n)) => n.as_f64().ok_or_else(|| bad(&n.to_string())),
            Some(Value::String(s)) => s.trim().parse().map_err(|_| bad(s)),
            Some(Value::Null) | None => match self.ctx.profile.option(key) {
                Some(s) => s.trim().parse().map_err(|_| {
                    Error::usage(format!(
                        "profile '{}': option `{key}` must be a number, got '{s}'",
                        self.ctx.profile.name
                    ))
                }),
                None => Ok(default),
            },
            Some(other) => Err(bad(&other.to_string())),
        }
    }

    fn integer(&self, spec: &JobSpec, key: &str, default: i64) -> Result<i64> {
        let n = self.number(spec, key, default as f64)?;
        if n.fract() != 0.0 || !(i32::MIN as f64..=i32::MAX as f64).contains(&n) {
            return Err(Error::usage(format!(
                "option `{key}` must be a whole number, got {n} (field `options.{key}`)"
            )));
        }
        Ok(n as i64)
    }

    fn policy(&self, spec: &JobSpec) -> Result<Policy> {
        let p = Policy {
            queue: self.integer(spec, "queue", 1)?,
            cpu: self.integer(spec, "cpu", 1)?,
            ecpu: self.number(spec, "ecpu", 0.0)?,
            mem: self.number(spec, "mem", 0.0)?,
            priority: self.number(spec, "priority", 0.0)?,
        };
        for (key, v) in [("cpu", p.cpu as f64), ("ecpu", p.ecpu), ("mem", p.mem)] {
            if v < 0.0 {
                return Err(Error::usage(format!(
                    "option `{key}` must not be negative (field `options.{key}`)"
                )));
            }
        }
        Ok(p)
    }

    /// `context`: the function first, then any extra RIDs (a JSON array or a comma list).
    fn context(spec: &JobSpec) -> Result<Vec<String>> {
        let function = spec.opt_str("function").unwrap_or_default();
        check_rid("function", &function)?;
        let mut out = vec![function];
        let extra: Vec<String> = match spec.options.get("context") {
            None | Some(Value::Null) => vec![],
            Some(Value::String(s)) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    other => Err(Error::usage(format!(
                        "option `context` must list resource ids as strings, got {other}"
                    ))),
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(Error::usage(format!(
                    "option `context` must be a list of resource ids, got {other}"
                )));
            }
        };
        for rid in &extra {
            check_rid("context", rid)?;
        }
        out.extend(extra);
        Ok(out)
    }

    /// Every job matching `input`'s conditions (up to `limit`), page after page: the platform
    /// caps its page size, and its `total` counts what remains including the current page.
    async fn jobs_matching(
        &self,
        token: &Secret,
        input: jobs_query::JobsInput,
        limit: Option<usize>,
    ) -> Result<Vec<Job>> {
        let input = &input;
        pagination::collect(limit, None, |cursor: Option<Vec<String>>| async move {
            let mut input = input.clone();
            input.cursor = cursor;
            let vars = jobs_query::Variables { input };
            let page = self
                .api
                .post::<JobsQuery>(Some(token), vars, Idempotency::Idempotent)
                .await?
                .data
                .jobs;
            let served = page.items.len() as i64;
            let remains = page.total > served;
            let jobs: Vec<Job> = page
                .items
                .into_iter()
                .map(|i| to_job(JobRecord::from(i)))
                .collect();
            Ok(Page::new(jobs, remains.then_some(Some(page.cursor))))
        })
        .await
    }

    /// Reads every message of a job's output stream that exists now (to the end when the
    /// job has ended).
    async fn messages(&self, job: &Job) -> Result<Vec<Value>> {
        let output = output_of(job);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(1024);
        let reader = self.streams.read(&output, false, tx);
        let collector = async {
            let mut all = Vec::new();
            while let Some(m) = rx.recv().await {
                all.push(m);
            }
            all
        };
        let (r, all) = tokio::join!(reader, collector);
        r?;
        Ok(all)
    }

    async fn policies_page(
        &self,
        token: &Secret,
        cursor: Option<Vec<String>>,
    ) -> Result<job_policies_query::JobPoliciesQueryJobPolicies> {
        let vars = job_policies_query::Variables {
            input: job_policies_query::JobPoliciesInput {
                order_by: vec!["id>".into()],
                cursor,
                limit: Some(PAGE_SIZE as i64),
                user: None,
                function: None,
                queue: None,
            },
        };
        Ok(self
            .api
            .post::<JobPoliciesQuery>(Some(token), vars, Idempotency::Idempotent)
            .await?
            .data
            .job_policies)
    }

    async fn fetch_job(&self, id: &str) -> Result<Job> {
        let reply = self
            .authed(|t: Arc<CachedToken>| async move {
                let vars = job_query::Variables {
                    input: job_query::JobInput { id: id.to_string() },
                };
                self.api
                    .post::<JobQuery>(Some(&t.token), vars, Idempotency::Idempotent)
                    .await
            })
            .await?;
        match reply.data.job {
            Some(j) => Ok(to_job(JobRecord::from(j))),
            None => Err(Error::not_found(format!("CloudPSS job {id} not found"))),
        }
    }
}

/// Checks the `type/owner/key` form of a resource id; the platform judges the rest.
fn check_rid(field: &str, rid: &str) -> Result<()> {
    let parts: Vec<&str> = rid.split('/').collect();
    if parts.len() != 3 || parts.iter().any(|p| p.trim().is_empty()) {
        return Err(Error::usage(format!(
            "option `{field}` must be a resource id TYPE/OWNER/KEY such as function/CloudPSS/hello, got '{rid}'"
        )));
    }
    Ok(())
}

/// The output stream id of a job.
fn output_of(job: &Job) -> String {
    job.extra
        .get("output")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// A job policy as a queue `submit` can use: `name` is the queue id `--opt queue=` takes.
fn queue_info(p: job_policies_query::JobPoliciesQueryJobPoliciesItems) -> QueueInfo {
    let mut limits = serde_json::Map::new();
    limits.insert("policy_id".into(), Value::from(p.id));
    limits.insert("policy".into(), Value::from(p.name.clone()));
    limits.insert("queue_name".into(), Value::from(p.queue.name.clone()));
    if let Some(t) = p.tres.first() {
        limits.insert("max_cpu".into(), Value::from(t.cpu));
        limits.insert("max_ecpu".into(), Value::from(t.ecpu));
        limits.insert("max_mem".into(), Value::from(t.mem));
    }
    limits.insert("min_priority".into(), Value::from(p.min_priority));
    limits.insert("max_priority".into(), Value::from(p.max_priority));
    limits.insert("max_duration".into(), Value::from(p.max_duration));
    limits.insert("load".into(), Value::from(p.queue.load));
    limits.insert("visibility".into(), Value::from(p.visibility));
    if !p.users.is_empty() {
        limits.insert("users".into(), Value::from(p.users));
    }
    if !p.functions.is_empty() {
        limits.insert("functions".into(), Value::from(p.functions));
    }
    QueueInfo {
        name: p.queue.id.to_string(),
        description: Some(format!("policy {} on queue {}", p.name, p.queue.name)),
        limits,
    }
}

fn jobs_input(limit: usize) -> jobs_query::JobsInput {
    jobs_query::JobsInput {
        order_by: vec!["createTime<".into()],
        cursor: None,
        limit: Some(limit as i64),
        context: None,
        user: None,
        status: None,
        id: None,
        create_time: None,
    }
}

fn or_condition<S: AsRef<str>>(values: &[S]) -> Value {
    let mut v = vec![Value::from("or")];
    v.extend(values.iter().map(|s| Value::from(s.as_ref())));
    Value::Array(v)
}

/// The job argument that carries a submission's idempotency key (functions ignore arguments
/// they do not declare; `jobs` lists return `args`, so the key can be searched).
pub const KEY_ARG: &str = "_jobctl_key";

#[async_trait]
impl JobBackend for CloudpssBackend {
    fn name(&self) -> &'static str {
        "cloudpss"
    }

    fn begin_watch(&self) {
        self.tracker.enable();
    }

    fn capabilities(&self) -> Capabilities {
        [
            Capability::Submit,
            Capability::Status,
            Capability::BatchStatus,
            Capability::List,
            Capability::Abort,
            Capability::Login,
            Capability::Logs,
            Capability::FollowLogs,
            Capability::Fetch,
            Capability::Queues,
        ]
        .into_iter()
        .collect()
    }

    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Forbidden,
            args: true,
            options: OPTIONS,
            required_options: &["function"],
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(self.name(), spec)?;
        Self::context(spec)?;
        self.policy(spec)?;
        Ok(())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        self.validate(spec)?;
        let context = Self::context(spec)?;
        let p = self.policy(spec)?;
        let mut args = spec.args.clone();
        if let Some(k) = &spec.key {
            args.insert(KEY_ARG.into(), Value::String(k.clone()));
        }
        let input = create_job_mutation::CreateJobInput {
            context,
            args,
            policy: Some(create_job_mutation::JobExecutionPolicyInput {
                queue: p.queue,
                tres: Some(create_job_mutation::JobTresInput {
                    cpu: p.cpu,
                    ecpu: p.ecpu,
                    mem: p.mem,
                }),
                priority: p.priority,
            }),
            debug: None,
        };
        let reply = self
            .authed(|t: Arc<CachedToken>| {
                let input = input.clone();
                async move {
                    let vars = create_job_mutation::Variables { input };
                    self.api
                        .post::<CreateJobMutation>(Some(&t.token), vars, Idempotency::NotIdempotent)
                        .await
                }
            })
            .await?;
        Ok(to_job(JobRecord::from(reply.data.create_job)))
    }

    async fn status(&self, id: &str) -> Result<Job> {
        let mut job = self.fetch_job(id).await?;
        self.tracker.observe(&mut job, &self.streams);
        Ok(job)
    }

    fn status_batch(&self) -> usize {
        PAGE_SIZE
    }

    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        let mut unique: Vec<&str> = Vec::new();
        for id in ids {
            if !unique.contains(&id.as_str()) {
                unique.push(id);
            }
        }
        let mut found: HashMap<String, Result<Job>> = HashMap::new();
        for chunk in unique.chunks(PAGE_SIZE) {
            let jobs = self
                .authed(|t: Arc<CachedToken>| async move {
                    let mut input = jobs_input(chunk.len());
                    input.id = Some(or_condition(chunk));
                    self.jobs_matching(&t.token, input, None).await
                })
                .await;
            match jobs {
                Ok(jobs) => {
                    for job in jobs {
                        found.insert(job.id.clone(), Ok(job));
                    }
                }
                Err(e) => {
                    for id in chunk {
                        found.insert(id.to_string(), Err(e.clone()));
                    }
                }
            }
        }
        // `jobs` may not list every job the caller can read (another user's, a filtered
        // one): ask `job` for each id it did not return before calling it not found.
        let missing: Vec<&str> = unique
            .iter()
            .copied()
            .filter(|id| !found.contains_key(*id))
            .collect();
        for id in missing {
            found.insert(id.to_string(), self.fetch_job(id).await);
        }
        let mut out: Vec<Result<Job>> = Vec::with_capacity(ids.len());
        let mut given: HashMap<&str, usize> = HashMap::new();
        for id in ids {
            // Each answer moves to its first asker (a watch holds thousands of them); only a
            // repeated id gets a copy.
            let r = match found.remove(id.as_str()) {
                Some(r) => {
                    given.insert(id, out.len());
                    r
                }
                None => match given.get(id.as_str()).map(|&k| &out[k]) {
                    Some(earlier) => earlier.clone(),
                    None => Err(Error::not_found(format!("CloudPSS job {id} not found"))),
                },
            };
            out.push(r.map(|mut job| {
                self.tracker.observe(&mut job, &self.streams);
                job
            }));
        }
        out
    }

    /// The key travels in the job's `args` ([`KEY_ARG`]); the caller's jobs are searched.
    async fn find_by_key(
        &self,
        spec: &JobSpec,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::backend::KeyLookup> {
        let query = [crate::backend::KeyQuery { spec, since }];
        let mut found = self.find_by_keys(&query, &|_| false).await;
        found
            .pop()
            .unwrap_or(Ok(crate::backend::KeyLookup::Unsearchable))
    }

    /// The caller's jobs are listed once for every key.
    async fn find_by_keys(
        &self,
        queries: &[crate::backend::KeyQuery<'_>],
        _known: crate::backend::KnownJob<'_>,
    ) -> Vec<Result<crate::backend::KeyLookup>> {
        use crate::backend::KeyLookup;
        if queries.iter().all(|q| q.spec.key.is_none()) {
            return queries
                .iter()
                .map(|_| Ok(KeyLookup::Unsearchable))
                .collect();
        }
        let jobs = match self.list(&ListQuery::default()).await {
            Ok(jobs) => jobs,
            Err(e) => return queries.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut by_key: HashMap<&str, &Job> = HashMap::new();
        for j in &jobs {
            let key = j.extra.get("args").and_then(|a| a.get(KEY_ARG));
            if let Some(k) = key.and_then(Value::as_str) {
                by_key.entry(k).or_insert(j);
            }
        }
        queries
            .iter()
            .map(|q| {
                Ok(match q.spec.key.as_deref() {
                    None => KeyLookup::Unsearchable,
                    Some(key) => by_key
                        .get(key)
                        .map_or(KeyLookup::Absent, |j| KeyLookup::Found((*j).clone())),
                })
            })
            .collect()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        // States CloudPSS never reports (suspended) cannot match; `unknown` needs every job.
        let natives: Option<Vec<&str>> =
            if query.states.is_empty() || query.states.contains(&JobState::Unknown) {
                None
            } else {
                let n: Vec<&str> = query.states.iter().flat_map(|s| natives_of(*s)).collect();
                if n.is_empty() {
                    return Ok(Vec::new());
                }
                Some(n)
            };
        let page_size = query.limit.unwrap_or(PAGE_SIZE).clamp(1, PAGE_SIZE);
        let natives = &natives;
        let jobs = self
            .authed(|t: Arc<CachedToken>| async move {
                let user = user_of(&t).or_else(|| self.ctx.profile.username.clone());
                let mut input = jobs_input(page_size);
                input.user = user.as_ref().map(|u| or_condition(&[u]));
                input.status = natives.as_ref().map(|n| or_condition(n));
                self.jobs_matching(&t.token, input, query.limit).await
            })
            .await?;
        Ok(jobs.into_iter().filter(|j| query.wants(j.state)).collect())
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        let current = self.fetch_job(id).await?;
        if current.terminal {
            return Ok(AbortOutcome::AlreadyTerminal);
        }
        let timeout = self.abort_timeout.as_secs_f64();
        let reply = self
            .authed(|t: Arc<CachedToken>| async move {
                let vars = abort_job_mutation::Variables {
                    input: abort_job_mutation::AbortJobInput {
                        id: id.to_string(),
                        timeout,
                    },
                };
                self.api
                    .post::<AbortJobMutation>(Some(&t.token), vars, Idempotency::Idempotent)
                    .await
            })
            .await?;
        match reply.data.abort_job {
            Some(_) => Ok(AbortOutcome::Requested),
            None => Err(Error::not_found(format!("CloudPSS job {id} not found"))),
        }
    }

    async fn logs(&self, id: &str, req: LogsRequest, out: LogSink<'_>) -> Result<()> {
        if req.stderr {
            return Err(Error::not_supported(
                "cloudpss",
                "logs --stderr",
                "CloudPSS jobs have one output stream; its error lines are marked `error`",
            ));
        }
        let job = self.fetch_job(id).await?;
        let output = output_of(&job);
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(1024);
        let reader = self.streams.read(&output, req.follow, tx);
        // Ok(false): the reader of our output went away (`| head`), which ends `logs` quietly.
        // `move`: when the writer stops early, dropping `rx` stops the stream reader too.
        let writer = async move {
            let broken = |e: std::io::Error| {
                if e.kind() == std::io::ErrorKind::BrokenPipe {
                    Ok(false)
                } else {
                    Err(Error::io("writing output", e))
                }
            };
            while let Some(msg) = rx.recv().await {
                let line = if req.ndjson {
                    serde_json::to_string(&msg).ok()
                } else {
                    results::log_line(&msg, req.color)
                };
                if let Some(mut line) = line {
                    line.push('\n');
                    if let Err(e) = out.write_all(line.as_bytes()).await {
                        return broken(e);
                    }
                }
            }
            match out.flush().await {
                Ok(()) => Ok(true),
                Err(e) => broken(e),
            }
        };
        let (read, written) = tokio::join!(reader, writer);
        if !written? {
            return Ok(());
        }
        read.map(|_| ())
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        _progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let job = self.fetch_job(id).await?;
        let messages = self.messages(&job).await?;
        if messages.is_empty() {
            return Err(Error::not_found(format!(
                "CloudPSS job {id} has no output yet ({})",
                job.native_state.as_deref().unwrap_or("unknown state")
            )));
        }
        results::write_results(id, &messages, dest)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let items = self
            .authed(|t: Arc<CachedToken>| async move {
                let mut all = Vec::new();
                let mut cursor: Option<Vec<String>> = None;
                loop {
                    let page = self.policies_page(&t.token, cursor.take()).await?;
                    let count = page.items.len();
                    all.extend(page.items);
                    // `total` counts what remains including this page.
                    if count == 0 || page.total as usize <= count {
                        break;
                    }
                    cursor = Some(page.cursor);
                }
                Ok(all)
            })
            .await?;
        Ok(items.into_iter().map(queue_info).collect())
    }

    async fn login(&self) -> Result<String> {
        let token = self.auth.login(&self.api).await?;
        let user = user_of(&token).unwrap_or_else(|| "?".into());
        let until = token
            .expires_at
            .map(|t| {
                format!(
                    " until {}",
                    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                )
            })
            .unwrap_or_default();
        Ok(match self.auth.credentials() {
            Credentials::Token(_) => format!("CLOUDPSS_TOKEN is valid for {user}{until}"),
            _ => {
                self.auth.store().put(token).await?;
                format!("logged in to CloudPSS as {user}; token valid{until}")
            }
        })
    }

    async fn logout(&self) -> Result<()> {
        self.auth.store().clear().await?;
        Ok(())
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        let started = Instant::now();
        let reply = self
            .api
            .post::<SystemInfoQuery>(None, system_info_query::Variables, Idempotency::Idempotent)
            .await;
        match &reply {
            Ok(r) => report(Check::pass(
                "reachability",
                format!(
                    "{} answered systemInfo (machine {}) in {} ms",
                    self.api.url(),
                    r.data.system_info.machine_id,
                    started.elapsed().as_millis()
                ),
            )),
            Err(e) => report(Check::fail(
                "reachability",
                format!("{}: {}", self.api.url(), e.message),
            )),
        }
        let version = reply.as_ref().ok().map(|r| r.version.clone());
        report(match version {
            None => Check::fail("api version", "unknown: the server could not be reached"),
            Some(v) => version_check(v.as_deref()),
        });
        let auth = self
            .authed(
                |t: Arc<CachedToken>| async move { self.auth.inspect(&self.api, &t.token).await },
            )
            .await;
        report(match auth {
            Ok(t) => Check::pass(
                "authentication",
                format!(
                    "authenticated as {}{}",
                    user_of(&t).unwrap_or_else(|| "?".into()),
                    t.expires_at
                        .map(|x| format!(
                            ", token valid until {}",
                            x.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
                        ))
                        .unwrap_or_default()
                ),
            ),
            Err(e) => Check::fail("authentication", e.message),
        });
    }
}

/// `X-Cloudpss-Version` is a number (the official SDK parses it with `float()`); versions 3 to
/// 5 are supported. A missing header means a server older than 3.0.
pub fn version_check(version: Option<&str>) -> Check {
    let Some(v) = version else {
        return Check::fail(
            "api version",
            "the server sent no X-Cloudpss-Version header (older than 3.0, or not CloudPSS)",
        );
    };
    match v.trim().parse::<f64>() {
        Ok(n) if (3.0..6.0).contains(&n) => {
            Check::pass("api version", format!("X-Cloudpss-Version {v}"))
        }
        Ok(n) if n.is_finite() => Check::fail(
            "api version",
            format!("X-Cloudpss-Version {v} is outside the supported versions 3 to 5"),
        ),
        _ => Check::fail(
            "api version",
            format!(
                "X-Cloudpss-Version '{v}' is not a number (the official SDK cannot use this server)"
            ),
        ),
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendKind, Profile};
    use serde_json::json;

    fn backend(options: &[(&str, &str)]) -> CloudpssBackend {
        let mut profile = Profile::new("cloudpss", BackendKind::Cloudpss);
        profile.url = Some("http://127.0.0.1:9/".into());
        for (k, v) in options {
            profile.options.insert(k.to_string(), v.to_string());
        }
        let dir = std::env::temp_dir();
        CloudpssBackend::new(BackendContext {
            profile,
            state_dir: dir,
        })
        .unwrap()
    }

    fn spec(options: serde_json::Value) -> JobSpec {
        JobSpec {
            options: options.as_object().cloned().unwrap_or_default(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn a_bare_host_url_gets_the_graphql_path() {
        assert_eq!(
            backend(&[]).api.url().as_str(),
            "http://127.0.0.1:9/graphql"
        );
    }

    #[test]
    fn policy_comes_from_spec_then_profile_then_defaults() {
        let b = backend(&[("queue", "2"), ("mem", "512")]);
        let p = b
            .policy(&spec(
                json!({"function": "function/a/b", "cpu": 4, "mem": "1024"}),
            ))
            .unwrap();
        assert_eq!(
            p,
            Policy {
                queue: 2,
                cpu: 4,
                ecpu: 0.0,
                mem: 1024.0,
                priority: 0.0
            }
        );
        let e = b
            .validate(&spec(json!({"function": "function/a/b", "queue": 1.5})))
            .unwrap_err();
        assert!(e.message.contains("queue"), "{e}");
        let e = b.validate(&spec(json!({"function": "hello"}))).unwrap_err();
        assert!(e.message.contains("function"), "{e}");
        let e = b
            .validate(&spec(
                json!({"function": "function/a/b", "context": "model/x"}),
            ))
            .unwrap_err();
        assert!(e.message.contains("context"), "{e}");
        let ctx = CloudpssBackend::context(&spec(
            json!({"function": "function/a/b", "context": ["model/me/m", "job/parent/1"]}),
        ))
        .unwrap();
        assert_eq!(ctx, vec!["function/a/b", "model/me/m", "job/parent/1"]);
    }

    #[test]
    fn abort_timeout_is_a_duration_option() {
        assert_eq!(
            backend(&[("abort_timeout", "3s")]).abort_timeout,
            Duration::from_secs(3)
        );
        let mut profile = Profile::new("x", BackendKind::Cloudpss);
        profile.url = Some("http://127.0.0.1:9/graphql".into());
        profile
            .options
            .insert("abort_timeout".into(), "soon".into());
        let e = CloudpssBackend::new(BackendContext {
            profile,
            state_dir: std::env::temp_dir(),
        })
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
    }

    #[test]
    fn versions_three_to_five_are_supported_as_numbers() {
        assert!(version_check(Some("4")).ok);
        assert!(version_check(Some("3.0")).ok);
        assert!(version_check(Some("5.9")).ok);
        assert!(!version_check(Some("6")).ok);
        assert!(!version_check(Some("2.9")).ok);
        assert!(!version_check(Some("4.5.2")).ok);
        assert!(!version_check(None).ok);
        assert!(!version_check(Some("banana")).ok);
    }

    #[test]
    fn the_sdk_base_url_gives_graphql_and_streams_and_the_gql_url_wins() {
        let ends = |url: Option<&str>, api: Option<&str>| {
            let mut profile = Profile::new("cloudpss", BackendKind::Cloudpss);
            profile.url = url.map(str::to_string);
            if let Some(a) = api {
                profile.options.insert("api_url".into(), a.into());
            }
            let (g, s) = endpoints(&BackendContext {
                profile,
                state_dir: std::env::temp_dir(),
            })
            .unwrap();
            (g.to_string(), s.to_string())
        };
        assert_eq!(
            ends(None, None),
            (
                "https://cloudpss.net/graphql".into(),
                "https://cloudpss.net/".into()
            )
        );
        assert_eq!(
            ends(None, Some("http://10.0.0.1:8080/x")).0,
            "http://10.0.0.1:8080/x/graphql"
        );
        assert_eq!(
            ends(
                Some("http://gql.example/graphql"),
                Some("http://api.example/")
            ),
            (
                "http://gql.example/graphql".into(),
                "http://api.example/".into()
            )
        );
        let mut profile = Profile::new("cloudpss", BackendKind::Cloudpss);
        profile.options.insert("api_url".into(), "ftp://x/".into());
        let e = endpoints(&BackendContext {
            profile,
            state_dir: std::env::temp_dir(),
        })
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
    }
}
