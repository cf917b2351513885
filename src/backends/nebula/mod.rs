//! The nebula backend: NebulaGraph Explorer workflows run as jobs through the open API
//! (`/api-open/v1`).
//!
//! A job is one run of a workflow; its id is the Explorer job id (a number). `--opt workflow`
//! names the workflow, `--arg TASK.PARAM=VALUE` fills the workflow's task parameters. `logs`
//! prints the job's task table, `fetch` writes each finished task's sample result as a CSV file.

mod api;
mod auth;
mod mapping;

use crate::backend::{
    BackendContext, CheckSink, JobBackend, KeyLookup, KeyQuery, KnownJob, LogSink,
};
use crate::error::{Error, ErrorKind, Result};
use crate::http::HttpClient;
use crate::http::pagination::{self, Page};
use crate::http::token::TokenStore;
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Capability, Check, CommandRule, FetchProgress, Job,
    JobSpec, JobState, ListQuery, LogsRequest, ProgressFn, SpecRules,
};
use api::{Api, JobRecord, codes};
use async_trait::async_trait;
use auth::{Credentials, Session};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// The backend's name in errors and output.
const BACKEND: &str = "nebula";

/// Largest page requested from the job list; the server may clamp it (it says so in `PageSize`).
const DEFAULT_PAGE_SIZE: u64 = 100;

/// How far this machine's clock and the Explorer's may disagree: a lost run is looked for among
/// jobs created from this long before its submission was recorded.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(2);

/// Rows asked for per task sample (the docs' own example uses 1000).
const DEFAULT_SAMPLE_LIMIT: u64 = 1000;

/// Jobs of one NebulaGraph Explorer, reached through one profile.
#[derive(Debug)]
pub struct NebulaBackend {
    api: Result<Api>,
    session: Session,
    page_size: u64,
    sample_limit: u64,
    list_workflow: Option<String>,
    poll_interval: Duration,
}

/// Builds the nebula backend for a profile. Missing settings are reported by the first
/// operation that needs them, so `profiles` can still describe an incomplete profile.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Ok(Arc::new(NebulaBackend::new(ctx)?))
}

/// A positive integer option, or its default.
fn count_option(ctx: &BackendContext, key: &str, default: u64) -> Result<u64> {
    match ctx.profile.option(key) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| {
                Error::usage(format!(
                    "profile '{}': `{key}` must be a positive number, not `{raw}`",
                    ctx.profile.name
                ))
            }),
    }
}

impl NebulaBackend {
    /// The backend for `ctx`; fails only on malformed numeric options.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        let api = ctx
            .require_url("NEBULA_EXPLORER_URL")
            .and_then(|url| Ok(Api::new(HttpClient::new(&ctx.profile, BACKEND)?, url)));
        let session = Session::new(
            Credentials::from_profile(&ctx.profile),
            TokenStore::new(&ctx.cache_dir(), &ctx.profile.name),
            api.as_ref().ok(),
        );
        Ok(NebulaBackend {
            api,
            session,
            page_size: count_option(&ctx, "page_size", DEFAULT_PAGE_SIZE)?,
            sample_limit: count_option(&ctx, "sample_limit", DEFAULT_SAMPLE_LIMIT)?,
            list_workflow: ctx
                .profile
                .option("workflow")
                .map(str::trim)
                .filter(|w| !w.is_empty())
                .map(String::from),
            poll_interval: ctx.profile.poll_interval,
        })
    }

    fn api(&self) -> Result<&Api> {
        self.api.as_ref().map_err(Clone::clone)
    }

    /// Explorer job ids are numbers; anything else cannot name a job.
    fn check_id(id: &str) -> Result<u64> {
        id.trim().parse::<u64>().map_err(|_| {
            Error::usage(format!(
                "invalid nebula job id `{id}`: Explorer job ids are numbers (e.g. nebula:107)"
            ))
        })
    }

    async fn record(&self, id: &str) -> Result<JobRecord> {
        Self::check_id(id)?;
        let api = self.api()?;
        self.session
            .with_token(api, |t| async move { api.job(&t, id).await })
            .await
    }

    /// Walks the list newest first, handing each page to `visit` until it returns false or
    /// the list ends.
    async fn walk(
        &self,
        workflow: Option<&str>,
        filter: &Value,
        visit: impl FnMut(Vec<JobRecord>) -> bool,
    ) -> Result<()> {
        let api = self.api()?;
        pagination::walk(
            1u64,
            |page: u64| async move {
                let answer = self
                    .session
                    .with_token(api, |t| async move {
                        api.jobs(&t, workflow, filter, page, self.page_size).await
                    })
                    .await?;
                let items = answer.items.unwrap_or_default();
                // The server may clamp the page size; its own figure counts pages.
                let served = answer
                    .page_size
                    .filter(|s| *s > 0)
                    .unwrap_or(self.page_size);
                // `total` counts every match; without it, a full page suggests more.
                let more = match answer.total {
                    Some(total) => page * served < total,
                    None => items.len() as u64 >= served,
                };
                Ok(Page::new(items, more.then_some(page + 1)))
            },
            visit,
        )
        .await
    }

    /// Jobs of `workflow` created at or after `from` (epoch ms), as (id, creation time); the
    /// list is filtered by the server and, should it ignore the filter, cut here.
    async fn created_since(&self, workflow: &str, from: i64) -> Result<Vec<(String, Option<i64>)>> {
        let filter = json!({ "orderByCreateTime": "desc", "fromCreateTime": from });
        let mut jobs = Vec::new();
        self.walk(Some(workflow), &filter, |items| {
            let mut older = false;
            for r in &items {
                let created = mapping::job_of(r).created_at.map(|t| t.timestamp_millis());
                if created.is_some_and(|c| c < from) {
                    older = true;
                    continue;
                }
                jobs.push((r.id_text(), created));
            }
            !older
        })
        .await?;
        Ok(jobs)
    }

    /// Settles the lost runs of one workflow from its jobs created since the earliest of them.
    async fn settle_workflow(
        &self,
        workflow: &str,
        queries: &[KeyQuery<'_>],
        known: KnownJob<'_>,
    ) -> Result<Vec<KeyLookup>> {
        let start = |q: &KeyQuery<'_>| (q.since - CLOCK_SKEW).timestamp_millis();
        let from = queries.iter().map(start).min().unwrap_or_default();
        let jobs = self.created_since(workflow, from).await?;
        // Jobs no recorded submission accounts for: any of them may be a lost run's.
        let orphans: Vec<(String, Option<i64>)> =
            jobs.into_iter().filter(|(id, _)| !known(id)).collect();
        Ok(queries
            .iter()
            .map(|q| {
                let start = start(q);
                // A job without a creation time cannot be placed, so it counts everywhere.
                let near: Vec<&str> = orphans
                    .iter()
                    .filter(|(_, c)| c.is_none_or(|c| c >= start))
                    .map(|(id, _)| id.as_str())
                    .collect();
                if near.is_empty() {
                    return KeyLookup::Absent;
                }
                let shown: Vec<&str> = near.iter().take(5).copied().collect();
                KeyLookup::Undecided(format!(
                    "workflow {workflow} has {} job(s) created since {} that no recorded submission accounts for (nebula:{}{}), and nebula runs carry no key to tell which one is this submission's",
                    near.len(),
                    (q.since - CLOCK_SKEW).to_rfc3339(),
                    shown.join(", nebula:"),
                    if near.len() > shown.len() { ", …" } else { "" }
                ))
            })
            .collect())
    }

    /// Builds the run body `{"input": {TASK: {PARAM: value}}}` from `--arg TASK.PARAM=VALUE`.
    fn input(spec: &JobSpec) -> Result<Value> {
        let mut input: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
        for (key, value) in &spec.args {
            let (task, param) = key
                .split_once('.')
                .filter(|(t, p)| !t.trim().is_empty() && !p.trim().is_empty())
                .ok_or_else(|| {
                    Error::usage(format!(
                        "--arg `{key}` (field `args`): nebula inputs are written TASK.PARAM=VALUE, e.g. --arg query_1.name=\"Tim Duncan\""
                    ))
                })?;
            // The open API takes strings and numbers; a flag-like JSON boolean is sent as text.
            let v = match value {
                Value::String(_) | Value::Number(_) => value.clone(),
                Value::Bool(b) => Value::String(b.to_string()),
                other => {
                    return Err(Error::usage(format!(
                        "--arg `{key}` (field `args`): workflow parameters are strings or numbers, not {other}"
                    )));
                }
            };
            input
                .entry(task.trim().to_string())
                .or_default()
                .insert(param.trim().to_string(), v);
        }
        Ok(json!({ "input": input }))
    }
}

/// One line of the task table.
fn task_line(t: &Value) -> String {
    let s = |k: &str| t.get(k).and_then(Value::as_str).unwrap_or("-").to_string();
    format!(
        "{:<34} {:<20} {:<11} {:<20} {}",
        s("id"),
        s("name"),
        s("state"),
        s("started_at"),
        s("ended_at")
    )
}

fn tasks_of(job: &Job) -> Vec<Value> {
    job.extra
        .get("tasks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

/// CSV text of sample rows (RFC 4180 quoting; no header, the columns depend on the algorithm).
fn csv(rows: &[Vec<String>]) -> String {
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .map(|c| {
                if c.contains([',', '"', '\n', '\r']) {
                    format!("\"{}\"", c.replace('"', "\"\""))
                } else {
                    c.clone()
                }
            })
            .collect();
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// A file-name-safe rendering of a task name.
fn safe(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "task".into() } else { s }
}

async fn write(out: &mut LogSink<'_>, text: &str) -> Result<()> {
    // Flushed every time: tokio's stdout holds data back otherwise, and a follower wants each
    // change as it happens.
    out.write_all(text.as_bytes())
        .await
        .map_err(|e| Error::io("writing logs", e))?;
    out.flush().await.map_err(|e| Error::io("writing logs", e))
}

#[async_trait]
impl JobBackend for NebulaBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        [
            Capability::Submit,
            Capability::Status,
            Capability::BatchStatus,
            Capability::List,
            Capability::Abort,
            Capability::Logs,
            Capability::FollowLogs,
            Capability::Fetch,
            Capability::Login,
        ]
        .into_iter()
        .collect()
    }

    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Forbidden,
            args: true,
            options: &["workflow"],
            required_options: &["workflow"],
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(BACKEND, spec)?;
        Self::input(spec).map(|_| ())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        self.validate(spec)?;
        let workflow = spec.opt_str("workflow").unwrap_or_default();
        let workflow = workflow.trim();
        let body = &Self::input(spec)?;
        let api = self.api()?;
        let id = self
            .session
            .with_token(api, |t| async move { api.submit(&t, workflow, body).await })
            .await?;
        // The run answer holds only the id; one detail read fills name, times and tasks. If
        // that read fails the job still exists, so report it as freshly queued.
        match self.status(&id).await {
            Ok(job) => Ok(job),
            Err(e) => {
                tracing::warn!("job {id} was created but could not be read back: {e}");
                let mut job = Job::new(id, JobState::Queued, Some(mapping::PREPARING.to_string()));
                job.extra
                    .insert("workflow_id".into(), Value::String(workflow.to_string()));
                Ok(job)
            }
        }
    }

    /// Runs carry no key (the run request takes only task inputs), but a workflow's job list
    /// says when each job was created. A lost run is certainly absent when its workflow has no
    /// job created since its submission was recorded (less [`CLOCK_SKEW`]) that the ledger
    /// does not already know as another submission's; otherwise it stays undecided, since
    /// which unaccounted job is whose cannot be told. One listing per workflow.
    async fn find_by_keys(
        &self,
        queries: &[KeyQuery<'_>],
        known: KnownJob<'_>,
    ) -> Vec<Result<KeyLookup>> {
        let mut out: Vec<Result<KeyLookup>> = queries
            .iter()
            .map(|_| Ok(KeyLookup::Unsearchable))
            .collect();
        let mut by_workflow: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, q) in queries.iter().enumerate() {
            if let Some(w) = q.spec.opt_str("workflow").filter(|w| !w.trim().is_empty()) {
                by_workflow.entry(w.trim().to_string()).or_default().push(i);
            }
        }
        for (workflow, indices) in by_workflow {
            let group: Vec<KeyQuery<'_>> = indices.iter().map(|i| queries[*i]).collect();
            match self.settle_workflow(&workflow, &group, known).await {
                Ok(answers) => {
                    for (i, a) in indices.iter().zip(answers) {
                        out[*i] = Ok(a);
                    }
                }
                Err(e) => {
                    for i in &indices {
                        out[*i] = Err(e.clone());
                    }
                }
            }
        }
        out
    }

    async fn status(&self, id: &str) -> Result<Job> {
        let record = self.record(id).await?;
        Ok(mapping::job_of(&record))
    }

    /// Reads the paged job list, newest first, until every id is seen; ids the walk did not
    /// reach (older than the oldest wanted id, or jobs the list leaves out) are read one by one.
    ///
    /// One id is read from the detail endpoint instead: it is the same single request and it
    /// carries the tasks (and so `progress`), which list items lack.
    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        if let [id] = ids {
            return vec![self.status(id).await];
        }
        let mut wanted: HashMap<u64, Option<Job>> = HashMap::new();
        for id in ids {
            if let Ok(n) = Self::check_id(id) {
                wanted.insert(n, None);
            }
        }
        let oldest = wanted.keys().min().copied();
        let mut walk_error = None;
        if let Some(oldest) = oldest {
            let filter = json!({ "orderByCreateTime": "desc" });
            let result = self
                .walk(None, &filter, |items| {
                    let mut below = false;
                    for r in &items {
                        let job = mapping::job_of(r);
                        if let Ok(n) = job.id.parse::<u64>() {
                            below |= n < oldest;
                            if let Some(slot) = wanted.get_mut(&n) {
                                *slot = Some(job);
                            }
                        }
                    }
                    // Job ids grow with creation time, so once a page reaches ids older than
                    // the oldest one wanted, further pages cannot help.
                    !below && wanted.values().any(Option::is_none)
                })
                .await;
            if let Err(e) = result {
                walk_error = Some(e);
            }
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = Self::check_id(id)
                .ok()
                .and_then(|n| wanted.get(&n).cloned().flatten());
            out.push(match (found, &walk_error) {
                (Some(job), _) => Ok(job),
                // Auth and configuration failures would only repeat per job.
                (None, Some(e)) if matches!(e.kind, ErrorKind::Auth | ErrorKind::Usage) => {
                    Err(e.clone())
                }
                (None, _) => self.status(id).await,
            });
        }
        out
    }

    fn list_options(&self) -> &'static [&'static str] {
        &["workflow"]
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        let limit = query.limit;
        // The filter takes one status; several `--state`s are one listing each, merged.
        let statuses: Vec<Option<i64>> = if query.states.is_empty() {
            vec![None]
        } else {
            let mut codes: Vec<i64> = query
                .states
                .iter()
                .filter_map(|s| mapping::code_of(*s))
                .collect();
            codes.sort_unstable();
            codes.dedup();
            codes.into_iter().map(Some).collect()
        };
        // `list --opt workflow=ID` wins over the profile's `workflow` option.
        let workflow = query
            .options
            .get("workflow")
            .map(crate::model::value_to_string)
            .or_else(|| self.list_workflow.clone());
        let mut jobs: Vec<(i64, u64, Job)> = Vec::new();
        for status in statuses {
            let mut filter = json!({ "orderByCreateTime": "desc" });
            if let Some(code) = status {
                filter["status"] = json!(code);
            }
            let mut taken = 0usize;
            self.walk(workflow.as_deref(), &filter, |items| {
                for r in &items {
                    let job = mapping::job_of(r);
                    if !query.wants(job.state) {
                        continue;
                    }
                    let created = job.created_at.map(|t| t.timestamp_millis()).unwrap_or(0);
                    let id = job.id.parse::<u64>().unwrap_or(0);
                    jobs.push((created, id, job));
                    taken += 1;
                }
                limit.is_none_or(|l| taken < l)
            })
            .await?;
        }
        jobs.sort_by_key(|j| std::cmp::Reverse((j.0, j.1)));
        let mut out: Vec<Job> = jobs.into_iter().map(|(_, _, j)| j).collect();
        if let Some(l) = limit {
            out.truncate(l);
        }
        Ok(out)
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        let job = self.status(id).await?;
        if job.state.is_terminal() {
            return Ok(AbortOutcome::AlreadyTerminal);
        }
        let api = self.api()?;
        let result = self
            .session
            .with_token(api, |t| async move { api.cancel(&t, id).await })
            .await;
        match result {
            Ok(()) => Ok(AbortOutcome::Requested),
            // The job may have ended between the read and the cancel; Explorer refuses to
            // cancel a finished job with a bad-request code.
            Err(e) if e.code.as_deref() == Some(&codes::BAD_REQUEST.to_string()) => {
                match self.status(id).await {
                    Ok(j) if j.state.is_terminal() => Ok(AbortOutcome::AlreadyTerminal),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn logs(&self, id: &str, req: LogsRequest, mut out: LogSink<'_>) -> Result<()> {
        if req.stderr {
            return Err(Error::not_supported(
                BACKEND,
                "logs --stderr",
                "Explorer reports task states, not output streams",
            ));
        }
        let job = self.status(id).await?;
        let tasks = tasks_of(&job);
        if tasks.is_empty() {
            return Err(Error::not_found(format!(
                "job {id} has no tasks to show (yet)"
            )));
        }
        let mut text = format!(
            "{:<34} {:<20} {:<11} {:<20} {}\n",
            "TASK", "NAME", "STATE", "STARTED", "ENDED"
        );
        for t in &tasks {
            text.push_str(&task_line(t));
            text.push('\n');
        }
        write(&mut out, &text).await?;
        if !req.follow {
            return Ok(());
        }
        // A task's line changes with its state and times, so unseen lines are the news.
        let mut seen: HashSet<String> = tasks.iter().map(task_line).collect();
        let mut job = job;
        while !job.state.is_terminal() {
            tokio::time::sleep(self.poll_interval).await;
            job = match self.status(id).await {
                Ok(j) => j,
                // A failed poll is not the job failing: try again at the next tick.
                Err(e) if e.retryable => {
                    tracing::warn!("reading job {id} failed, retrying: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let mut changed = String::new();
            for t in tasks_of(&job) {
                let line = task_line(&t);
                if seen.insert(line.clone()) {
                    changed.push_str(&line);
                    changed.push('\n');
                }
            }
            write(&mut out, &changed).await?;
        }
        let native = job.native_state.as_deref().unwrap_or("?");
        let mut end = format!("job {id} {} (status {native})", job.state);
        if let Some(r) = &job.reason {
            end.push_str(&format!(": {r}"));
        }
        end.push('\n');
        write(&mut out, &end).await
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let job = self.status(id).await?;
        let done: Vec<(String, String)> = tasks_of(&job)
            .iter()
            .filter(|t| t.get("native_state").and_then(Value::as_str) == Some("2"))
            .filter_map(|t| {
                let tid = t.get("id")?.as_str()?.to_string();
                let name = t.get("name").and_then(Value::as_str).unwrap_or("task");
                Some((tid, name.to_string()))
            })
            .collect();
        if done.is_empty() {
            return Err(Error::not_found(format!(
                "job {id} has no finished task with a result sample yet (state {})",
                job.state
            )));
        }
        progress(FetchProgress::Expect(done.len() as u64));
        let api = self.api()?;
        let mut artifacts = Vec::new();
        for (tid, name) in &done {
            let rows = self
                .session
                .with_token(api, |t| async move {
                    api.sample(&t, id, tid, self.sample_limit).await
                })
                .await?;
            let file = format!("{}_{tid}.csv", safe(name));
            let path = dest.join(&file);
            let text = csv(&rows);
            tokio::fs::write(&path, text.as_bytes())
                .await
                .map_err(|e| Error::io(path.display(), e))?;
            progress(FetchProgress::Done(1));
            artifacts.push(Artifact {
                name: file,
                path,
                bytes: text.len() as u64,
                entries: Vec::new(),
            });
        }
        Ok(artifacts)
    }

    async fn login(&self) -> Result<String> {
        let api = self.api()?;
        let expires = self.session.login(api).await?;
        Ok(match expires {
            Some(t) => format!(
                "connected to {}; session valid until {}",
                api.base(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => format!(
                "connected to {}; session lifetime not announced",
                api.base()
            ),
        })
    }

    async fn logout(&self) -> Result<()> {
        // The open API has no disconnect; forgetting the cookie is all a client can do.
        self.session.logout().await.map(|_| ())
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        let api = match self.api() {
            Ok(a) => a,
            Err(e) => {
                report(Check::fail("configuration", e.message));
                return;
            }
        };
        // Reachability: a list request without a cookie must come back as an Explorer
        // envelope (refusing us), which also shows the URL points at Explorer.
        let probe = api
            .jobs(&crate::config::Secret::new(""), None, &json!({}), 1, 1)
            .await;
        match &probe {
            Err(e) if e.kind == crate::error::ErrorKind::Unavailable => {
                report(Check::fail("reachable", e.message.clone()));
                return;
            }
            Err(e) if e.code.is_none() => {
                report(Check::fail("reachable", e.message.clone()));
                return;
            }
            _ => report(Check::pass(
                "reachable",
                format!("{} answers with Explorer envelopes", api.base()),
            )),
        }
        // Authentication is checked with a fresh connect: a cached cookie would hide a wrong
        // password until it expires.
        if let Err(e) = self.session.login(api).await {
            report(Check::fail("authentication", e.to_string()));
            return;
        }
        report(Check::pass(
            "authentication",
            "connect accepted the account",
        ));
        let listed = self
            .session
            .with_token(api, |t| async move {
                api.jobs(&t, None, &json!({}), 1, 1).await
            })
            .await;
        match listed {
            Err(e) => report(Check::fail("api version", e.to_string())),
            Ok(page) => {
                if page.page.is_some() && page.page_size.is_some() && page.total.is_some() {
                    report(Check::pass(
                        "api version",
                        format!(
                            "api-open/v1 job list answers as documented ({} jobs)",
                            page.total.unwrap_or(0)
                        ),
                    ));
                } else {
                    report(Check::fail(
                        "api version",
                        "api-open/v1 job list lacks total/Page/PageSize: not the documented open API",
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[(&str, Value)]) -> JobSpec {
        let mut s = JobSpec::default();
        s.options.insert("workflow".into(), "4216617528".into());
        for (k, v) in args {
            s.args.insert(k.to_string(), v.clone());
        }
        s
    }

    #[test]
    fn args_become_nested_workflow_input() {
        let body = NebulaBackend::input(&spec(&[
            ("query_1.name", json!("Tim Duncan")),
            ("query_1.limit", json!(5)),
            ("pagerank_1.dry", json!(true)),
        ]))
        .unwrap();
        assert_eq!(
            body,
            json!({"input": {
                "query_1": {"name": "Tim Duncan", "limit": 5},
                "pagerank_1": {"dry": "true"}}})
        );
    }

    #[test]
    fn malformed_args_name_the_key() {
        for (k, v) in [
            ("noparam", json!(1)),
            (".x", json!(1)),
            ("a.b", json!({"c": 1})),
        ] {
            let e = NebulaBackend::input(&spec(&[(k, v)])).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE);
            assert!(e.message.contains(k), "{e}");
        }
    }

    #[test]
    fn csv_quotes_only_what_needs_it() {
        let rows = vec![
            vec!["player100".to_string(), "Duncan, Tim".to_string()],
            vec!["p\"q".to_string(), "0.15".to_string()],
        ];
        assert_eq!(csv(&rows), "player100,\"Duncan, Tim\"\n\"p\"\"q\",0.15\n");
        assert_eq!(safe("Page Rank/1"), "Page_Rank_1");
    }
}
