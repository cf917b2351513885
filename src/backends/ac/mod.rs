//! The ac backend: Sugon AC / SCNet HPC clusters through the OpenAPI v2 (aliases `scnet`,
//! `hpc`).
//!
//! A job id is `SCHEDULER.JOB` (e.g. `1638523853.35919`): the job APIs need the scheduler id
//! next to the Slurm job id, and a reference must work from a later process.

pub mod api;
pub mod auth;
pub mod files;
pub mod mapping;

use crate::backend::{BackendContext, CheckSink, JobBackend, LogSink};
use crate::error::{Error, ErrorKind, Result};
use crate::http::pagination::{self, Page};
use crate::http::token::{CachedToken, TokenStore};
use crate::http::{HttpClient, Idempotency};
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Capability, Check, CommandRule, FetchProgress, Job,
    JobSpec, JobState, ListQuery, LogsRequest, ProgressFn, QueueInfo, SpecRules,
};
use api::{Api, Names, join, page_items};
use async_trait::async_trait;
use auth::{Auth, Overrides, Site, SiteCache};
use bytes::Bytes;
use chrono::{FixedOffset, Utc};
use mapping::{JobKey, Source, to_job};
use reqwest::StatusCode;
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

const BACKEND: &str = "ac";

/// Option keys of `--opt` (README "ac").
const OPTIONS: &[&str] = &[
    "scheduler",
    "queue",
    "nodes",
    "ppn",
    "nproc",
    "gpus",
    "dcus",
    "memory",
    "wall_time",
    "workdir",
    "exclusive",
    "app",
];

/// Where SCNet's AK/SK token endpoint lives unless `AC_LOGIN_URL` says otherwise.
const DEFAULT_LOGIN_URL: &str = "https://api.scnet.cn";

/// Page size of the job lists.
const PAGE: usize = 100;

/// How long `submit` trusts the cached queue list, in seconds.
const QUEUE_TTL_SECS: i64 = 300;

/// How far back `list` looks in the history.
const HISTORY_DAYS: i64 = 7;

/// Builds the ac backend for a profile.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Ok(Arc::new(AcBackend::new(ctx)?))
}

/// The ac backend of one profile.
#[derive(Debug)]
pub struct AcBackend {
    ctx: BackendContext,
    api: Api,
    auth: Auth,
    overrides: Overrides,
    sites: SiteCache,
    site: tokio::sync::Mutex<Option<Site>>,
    offset: FixedOffset,
    /// Files larger than this are uploaded in chunks of this size.
    chunk: u64,
    /// `<cache>/<profile>.ac-queues.json`: the queue list, reused for a few minutes.
    queue_cache: std::path::PathBuf,
}

impl AcBackend {
    /// Reads the profile; sends nothing.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        let ac = ctx.require_url("AC_URL")?;
        let p = &ctx.profile;
        let names = Names::of(p);
        let api = Api {
            http: HttpClient::new(p, BACKEND)?,
            names: names.clone(),
        };
        let offset = mapping::parse_offset(p.option("utc_offset").unwrap_or("+08:00"))
            .map_err(|e| names.in_setting("utc_offset", e))?;
        let password = p.secret("password").cloned();
        let access_key = p
            .option("access_key")
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(str::to_string);
        let secret_key = p.secret("secret_key").cloned();
        let logs_in = p.username.is_some()
            && (password.is_some() || (access_key.is_some() && secret_key.is_some()));
        let login_raw = p.option("login_url").unwrap_or(DEFAULT_LOGIN_URL);
        let login_url = url::Url::parse(login_raw)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
            .ok_or_else(|| {
                Error::usage(format!(
                    "profile '{}': invalid {} '{login_raw}': give the login host, e.g. {DEFAULT_LOGIN_URL}",
                    p.name,
                    names.get("login_url")
                ))
            })?;
        let cache = ctx.cache_dir();
        let opt = |k: &str| {
            p.option(k)
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        let overrides = Overrides {
            hpc: opt("hpc_url"),
            efile: opt("efile_url"),
            scheduler: opt("scheduler_id"),
        };
        if let Some(s) = &overrides.scheduler {
            if !s.chars().all(|c| c.is_ascii_digit()) {
                return Err(Error::usage(format!(
                    "{} must be a number, got '{s}'",
                    names.get("scheduler_id")
                )));
            }
        }
        let missing = auth::missing_credentials(
            p,
            p.username.is_some(),
            access_key.is_some(),
            secret_key.is_some(),
        );
        let mut auth = Auth {
            api: api.clone(),
            ac,
            login_url,
            user: p.username.clone(),
            access_key,
            secret_key,
            password,
            org_id: opt("org_id"),
            preissued: p.secret("token").cloned(),
            region: opt("region"),
            store: TokenStore::in_memory(),
            missing,
        };
        let chunk = match p.option("upload_chunk_size") {
            Some(c) => parse_size(c).map_err(|e| names.in_setting("upload_chunk_size", e))?,
            None => files::DEFAULT_CHUNK,
        };
        // A pre-issued token is the user's to manage: it is not written to disk.
        if logs_in {
            auth.store = TokenStore::new(&cache, &p.name).bound_to(auth.key());
        }
        Ok(AcBackend {
            chunk,
            queue_cache: cache.join(format!("{}.ac-queues.json", p.name)),
            sites: SiteCache {
                path: cache.join(format!("{}.ac-site.json", p.name)),
            },
            ctx,
            api,
            auth,
            overrides,
            site: tokio::sync::Mutex::new(None),
            offset,
        })
    }

    /// The discovery result for `tok`: memory, disk cache, or a fresh discovery.
    async fn site(&self, tok: &CachedToken) -> Result<Site> {
        let key = format!(
            "{}|{}|{:?}|{:?}|{:?}",
            tok.data.get("key").and_then(Value::as_str).unwrap_or(""),
            tok.data
                .get("region_id")
                .and_then(Value::as_str)
                .unwrap_or(""),
            self.overrides.hpc,
            self.overrides.efile,
            self.overrides.scheduler
        );
        let mut guard = self.site.lock().await;
        if let Some(s) = guard.as_ref().filter(|s| s.key == key) {
            return Ok(s.clone());
        }
        let mut site = match self.sites.load(&key) {
            Some(s) => s,
            None => {
                let s = auth::discover(&self.api, &self.auth.ac, tok, &self.overrides, key).await?;
                if let Err(e) = self.sites.save(&s) {
                    tracing::warn!("cannot cache AC discovery: {e}");
                }
                s
            }
        };
        if site.compute_user.is_none() {
            site.compute_user = self.ctx.profile.username.clone();
        }
        *guard = Some(site.clone());
        Ok(site)
    }

    /// Runs `op` with a token and the site it works with. When the platform refuses the
    /// token, the profile's token store obtains another once and `op` runs again.
    async fn with_session<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<CachedToken>, Site) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let op = &op;
        self.auth
            .store
            .with_token(&self.auth, |tok: Arc<CachedToken>| async move {
                let site = self.site(&tok).await?;
                op(tok, site).await
            })
            .await
            .map_err(|e| self.auth.explain(e))
    }

    fn hpc(&self, site: &Site, path: &str) -> Result<url::Url> {
        join(&site.hpc_url()?, path)
    }

    /// The cluster user's home directory, for the default work directory.
    async fn home(&self, tok: &CachedToken, site: &Site) -> Result<String> {
        if let Some(h) = &site.home {
            return Ok(h.clone());
        }
        let data = self
            .api
            .get(
                &join(&self.auth.ac, "/ac/openapi/v2/user")?,
                &tok.token,
                &[],
            )
            .await?;
        let home = mapping::text(
            data.as_object().unwrap_or(&Map::new()),
            &["homePath", "home", "homeDir"],
        )
        .ok_or_else(|| {
            Error::platform(
                "the AC platform did not say where the home directory is; set --opt workdir=PATH",
            )
        })?;
        let mut guard = self.site.lock().await;
        if let Some(s) = guard.as_mut().filter(|s| s.key == site.key) {
            s.home = Some(home.clone());
            if let Err(e) = self.sites.save(s) {
                tracing::warn!("cannot cache AC discovery: {e}");
            }
        }
        Ok(home)
    }

    /// One job, realtime first, then history (a finished job leaves the realtime list after
    /// about five minutes).
    async fn lookup(&self, tok: &CachedToken, site: &Site, key: &JobKey) -> Result<Job> {
        match self.realtime(tok, site, key).await? {
            Some(job) => Ok(job),
            None => self.history(tok, site, key).await,
        }
    }

    /// One job from the realtime detail; `None` when the realtime list no longer has it.
    async fn realtime(&self, tok: &CachedToken, site: &Site, key: &JobKey) -> Result<Option<Job>> {
        let url = self.hpc(site, &format!("/hpc/openapi/v2/jobs/{}", key.job))?;
        match self
            .api
            .get(
                &url,
                &tok.token,
                &[("strJobManagerID", key.scheduler.clone())],
            )
            .await
        {
            Ok(Value::Object(o)) if !o.is_empty() => {
                let mut job = to_job(&o, Some(key), Source::Realtime, self.offset)?;
                job.id = key.id();
                Ok(Some(job))
            }
            Ok(_) => Ok(None),
            Err(e) if is_missing(&e) || gone_from_realtime(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// One job from the history.
    async fn history(&self, tok: &CachedToken, site: &Site, key: &JobKey) -> Result<Job> {
        let url = self.hpc(
            site,
            &format!("/hpc/openapi/v2/historyjobs/{}/{}", key.scheduler, key.job),
        )?;
        let not_found = |why: String| {
            Error::not_found(format!(
                "job {} is in neither the realtime list nor the history of scheduler {}{why}",
                key.job, key.scheduler
            ))
        };
        match self.api.get(&url, &tok.token, &[]).await {
            Ok(Value::Object(o)) if !o.is_empty() => {
                let mut job = to_job(&o, Some(key), Source::History, self.offset)?;
                job.id = key.id();
                Ok(job)
            }
            Ok(_) => Err(not_found(String::new())),
            Err(e) if is_missing(&e) => {
                let mut nf = not_found(format!(": {}", e.message));
                nf.code = e.code;
                Err(nf)
            }
            Err(e) => Err(e),
        }
    }

    /// The jobs of `keys` that the realtime lists still show, one walk per scheduler that
    /// stops as soon as every wanted job was seen.
    async fn realtime_many(
        &self,
        tok: &CachedToken,
        site: &Site,
        keys: &[Option<JobKey>],
    ) -> Result<HashMap<JobKey, Job>> {
        let mut by_scheduler: BTreeMap<&str, Vec<&JobKey>> = BTreeMap::new();
        for k in keys.iter().flatten() {
            by_scheduler
                .entry(k.scheduler.as_str())
                .or_default()
                .push(k);
        }
        let mut found: HashMap<JobKey, Job> = HashMap::new();
        for (scheduler, wanted) in &by_scheduler {
            let want: Vec<&str> = wanted.iter().map(|k| k.job.as_str()).collect();
            let records = self
                .realtime_pages(tok, site, scheduler, None, |got| {
                    want.iter().all(|w| {
                        got.iter()
                            .any(|r| mapping::text(r, &["jobId"]).as_deref() == Some(*w))
                    })
                })
                .await?;
            for r in records {
                let Some(job_id) = mapping::text(&r, &["jobId", "id"]) else {
                    continue;
                };
                let key = JobKey {
                    scheduler: scheduler.to_string(),
                    job: job_id,
                };
                if wanted.contains(&&key) {
                    let mut job = to_job(&r, Some(&key), Source::Realtime, self.offset)?;
                    job.id = key.id();
                    found.insert(key, job);
                }
            }
        }
        Ok(found)
    }

    /// A job the realtime list did not show: gone from it (finished long enough ago, so in the
    /// history), or just submitted and not listed yet (its realtime detail), or not ours.
    async fn finished(&self, tok: &CachedToken, site: &Site, key: &JobKey) -> Result<Job> {
        match self.history(tok, site, key).await {
            Err(e) if e.kind == ErrorKind::NotFound => match self.realtime(tok, site, key).await {
                Ok(Some(job)) => Ok(job),
                Ok(None) => Err(e),
                Err(other) => Err(other),
            },
            other => other,
        }
    }

    /// Adds the finished jobs of the last week from the history (those not already in
    /// `jobs`), newest first, until the query's limit is reached.
    async fn history_list(
        &self,
        tok: &CachedToken,
        site: &Site,
        query: &ListQuery,
        jobs: &mut BTreeMap<String, Job>,
    ) -> Result<()> {
        let limit = query.limit;
        let terminal = [JobState::Succeeded, JobState::Failed, JobState::Canceled];
        let state_code = single_code(&query.states, &terminal);
        let url = self.hpc(site, "/hpc/openapi/v2/historyjobs")?;
        let now = Utc::now();
        let from = now - chrono::Duration::days(HISTORY_DAYS);
        let mut from_history = 0usize;
        let (url, state_code, offset) = (&url, &state_code, self.offset);
        pagination::walk(
            0usize,
            |start: usize| async move {
                let mut q = vec![
                    ("strClusterNameList", site.scheduler.clone()),
                    ("startTime", mapping::format_time(from, offset)),
                    ("endTime", mapping::format_time(now, offset)),
                    ("timeType", "CUSTOM".to_string()),
                    ("isQueryByQueueTime", "false".to_string()),
                    ("sort", "DESC".to_string()),
                    ("orderBy", "jobId".to_string()),
                    ("start", start.to_string()),
                    ("limit", PAGE.to_string()),
                ];
                if let Some(u) = &site.compute_user {
                    q.push(("strUser", u.clone()));
                }
                if let Some(c) = state_code {
                    q.push(("jobState", c.to_string()));
                }
                let data = self.api.get(url, &tok.token, &q).await?;
                let (items, total) = page_items(&data);
                let next = pagination::next_offset(start, items.len(), total);
                Ok(Page::new(items, next))
            },
            |items| {
                for r in items {
                    let key = JobKey {
                        scheduler: site.scheduler.clone(),
                        job: mapping::text(&r, &["jobId", "id"]).unwrap_or_default(),
                    };
                    if let Ok(job) = to_job(&r, Some(&key), Source::History, offset) {
                        if query.wants(job.state) && !jobs.contains_key(&job.id) {
                            from_history += 1;
                            jobs.insert(job.id.clone(), job);
                        }
                    }
                }
                limit.is_none_or(|l| from_history < l)
            },
        )
        .await?;
        Ok(())
    }

    /// Pages of the realtime list of `scheduler` for the user, until `enough` says stop.
    async fn realtime_pages(
        &self,
        tok: &CachedToken,
        site: &Site,
        scheduler: &str,
        stat: Option<&str>,
        mut enough: impl FnMut(&[Map<String, Value>]) -> bool,
    ) -> Result<Vec<Map<String, Value>>> {
        let url = self.hpc(site, "/hpc/openapi/v2/jobs")?;
        let url = &url;
        let mut out = Vec::new();
        pagination::walk(
            0usize,
            |start: usize| async move {
                let mut q = vec![
                    ("strClusterIDList", scheduler.to_string()),
                    ("start", start.to_string()),
                    ("limit", PAGE.to_string()),
                ];
                if let Some(u) = &site.compute_user {
                    q.push(("strJobOwner", u.clone()));
                }
                if let Some(s) = stat {
                    q.push(("strJobStat", s.to_string()));
                }
                let data = self.api.get(url, &tok.token, &q).await?;
                let (items, total) = page_items(&data);
                let next = pagination::next_offset(start, items.len(), total);
                Ok(Page::new(items, next))
            },
            |items| {
                out.extend(items);
                !enough(&out)
            },
        )
        .await?;
        Ok(out)
    }

    fn spec_checks(&self, spec: &JobSpec) -> Result<()> {
        let opt = |k: &str| spec.opt_str(k).filter(|v| !v.trim().is_empty());
        for k in ["nodes", "ppn", "nproc", "gpus", "dcus"] {
            if let Some(v) = opt(k) {
                if v.trim().parse::<u32>().map_or(true, |n| n == 0) {
                    return Err(Error::usage(format!(
                        "option `{k}` must be a positive whole number, got '{v}'"
                    )));
                }
            }
        }
        if opt("ppn").is_some() && opt("nproc").is_some() {
            return Err(Error::usage(
                "options `ppn` (cores per node) and `nproc` (total cores) exclude each other",
            ));
        }
        if let Some(w) = opt("wall_time") {
            wall_time(&w)?;
        }
        if let Some(e) = opt("exclusive") {
            crate::config::parse_bool(&e)
                .map_err(|err| Error::usage(format!("option `exclusive`: {}", err.message)))?;
        }
        if let Some(s) = opt("scheduler") {
            if !s.chars().all(|c| c.is_ascii_digit()) {
                return Err(Error::usage(format!(
                    "option `scheduler` must be a scheduler id (a number), got '{s}'"
                )));
            }
        }
        if let Some(a) = opt("app") {
            app_path(&a)?;
        }
        if let Some(n) = &spec.name {
            if n.is_empty()
                || n.chars().any(|c| {
                    c.is_whitespace() || c.is_control() || matches!(c, '/' | '\'' | '"' | '\\')
                })
            {
                return Err(Error::usage(format!(
                    "job name `name` '{n}' must be non-empty, without spaces, slashes or quotes (it becomes a directory name)"
                )));
            }
        }
        if let Some(cmd) = &spec.command {
            if command_text(cmd).trim().is_empty() {
                return Err(Error::usage("the job's `command` is empty"));
            }
        }
        Ok(())
    }

    /// Output (or error) file of a job: the platform's path, else the default naming.
    fn stream_path(job: &Job, stderr: bool) -> Result<String> {
        let field = if stderr { "stderr" } else { "stdout" };
        if let Some(p) = job.extra.get(field).and_then(Value::as_str) {
            return Ok(p.to_string());
        }
        let job_id = job.id.rsplit('.').next().unwrap_or(&job.id);
        match job.extra.get("workdir").and_then(Value::as_str) {
            Some(w) => Ok(format!(
                "{}/std.{}.{job_id}",
                w.trim_end_matches('/'),
                if stderr { "err" } else { "out" }
            )),
            None => Err(Error::not_found(format!(
                "the platform reports no {field} file for job {}",
                job.id
            ))),
        }
    }

    /// Bytes of `path` from `offset` on (`None` when the file does not exist yet).
    async fn read_from(
        &self,
        tok: &CachedToken,
        site: &Site,
        path: &str,
        offset: u64,
    ) -> Result<Option<Bytes>> {
        let url = join(&site.efile_url()?, "/openapi/v2/file/download")?;
        let resp = self
            .api
            .http
            .send(Idempotency::Idempotent, api::transient, |c| {
                let mut r = c
                    .get(url.clone())
                    .header("token", tok.token.expose())
                    .query(&[("path", path)]);
                if offset > 0 {
                    r = r.header(reqwest::header::RANGE, format!("bytes={offset}-"));
                }
                r
            })
            .await?;
        match resp.status {
            StatusCode::PARTIAL_CONTENT => Ok(Some(resp.body)),
            StatusCode::RANGE_NOT_SATISFIABLE => Ok(Some(Bytes::new())),
            StatusCode::NOT_FOUND => Ok(None),
            StatusCode::OK if !is_json(&resp.headers) => {
                // A server that ignores Range sends everything again.
                let skip = (offset as usize).min(resp.body.len());
                Ok(Some(resp.body.slice(skip..)))
            }
            _ => match api::decode(&resp) {
                Err(e) if is_missing(&e) => Ok(None),
                Err(e) => Err(e),
                Ok(_) => Err(Error::protocol(format!(
                    "the AC file service answered a download of {path} with an envelope instead of the file"
                ))),
            },
        }
    }

    /// What `fetch` downloads, as (remote path, local relative path): every file of the job's
    /// working directory, and the output streams wherever they are. A working directory that
    /// is the home directory itself is not walked (that would copy the whole account).
    async fn fetch_list(
        &self,
        tok: &CachedToken,
        site: &Site,
        job: &Job,
    ) -> Result<Vec<(String, String)>> {
        let mut out: Vec<(String, String)> = Vec::new();
        let workdir = job
            .extra
            .get("workdir")
            .and_then(Value::as_str)
            .map(|w| w.trim_end_matches('/').to_string())
            .filter(|w| !w.is_empty());
        if let Some(w) = workdir {
            let home = site.home.as_deref().map(|h| h.trim_end_matches('/'));
            if home == Some(w.as_str()) || w.matches('/').count() < 2 {
                tracing::warn!(
                    "job {} runs in {w}; fetching only its output streams",
                    job.id
                );
            } else {
                let efile = files::Efile {
                    api: &self.api,
                    base: site.efile_url()?,
                    token: &tok.token,
                };
                match efile.walk(&w).await {
                    Ok(list) => out.extend(list.into_iter().map(|rel| (format!("{w}/{rel}"), rel))),
                    // Not created yet (the job has not started) or already cleaned up.
                    Err(e) if is_missing(&e) || e.code.as_deref() == Some("1001") => {}
                    Err(e) => return Err(e),
                }
            }
        }
        for stderr in [false, true] {
            if let Ok(p) = Self::stream_path(job, stderr) {
                if !out.iter().any(|(r, _)| *r == p) {
                    let name = p.rsplit('/').next().unwrap_or("output").to_string();
                    out.push((p, name));
                }
            }
        }
        Ok(out)
    }

    /// Streams one file into `dest/rel`; `None` when it does not exist.
    async fn download(
        &self,
        tok: &CachedToken,
        site: &Site,
        path: &str,
        rel: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Option<Artifact>> {
        let url = join(&site.efile_url()?, "/openapi/v2/file/download")?;
        let mut resp = self
            .api
            .http
            .send_stream(|c| {
                c.get(url.clone())
                    .header("token", tok.token.expose())
                    .query(&[("path", path)])
            })
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() || is_json(resp.headers()) {
            let headers = resp.headers().clone();
            let body = resp
                .bytes()
                .await
                .map_err(|e| self.api.http.transport_error(&e))?;
            let r = crate::http::HttpResponse {
                status,
                headers,
                body,
            };
            return match api::decode(&r) {
                Err(e) if is_missing(&e) => Ok(None),
                Err(e) => Err(e),
                Ok(_) => Err(Error::protocol(format!(
                    "the AC file service answered a download of {path} with an envelope instead of the file"
                ))),
            };
        }
        // Only plain components: a listing cannot make jobctl write outside `dest`.
        let parts: Vec<&str> = rel
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect();
        let name = if parts.is_empty() {
            "output".to_string()
        } else {
            parts.join("/")
        };
        let target = dest.join(&name);
        if let Some(parent) = target.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| Error::io(parent.display(), e))?;
        }
        if let Some(len) = resp.content_length() {
            progress(FetchProgress::Expect(len));
        }
        let mut file = tokio::fs::File::create(&target)
            .await
            .map_err(|e| Error::io(target.display(), e))?;
        let mut bytes = 0u64;
        loop {
            let chunk = match resp.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    drop(file);
                    let _ = tokio::fs::remove_file(&target).await;
                    return Err(self.api.http.transport_error(&e));
                }
            };
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(target.display(), e))?;
            bytes += chunk.len() as u64;
            progress(FetchProgress::Done(chunk.len() as u64));
        }
        file.flush()
            .await
            .map_err(|e| Error::io(target.display(), e))?;
        Ok(Some(Artifact {
            name,
            path: target,
            bytes,
            entries: Vec::new(),
        }))
    }

    /// The user's queues on `scheduler`: from the short-lived cache unless `fresh`, else from
    /// the platform. The flag says whether the answer is fresh.
    async fn queue_list(
        &self,
        tok: &CachedToken,
        site: &Site,
        scheduler: &str,
        fresh: bool,
    ) -> Result<(Vec<QueueInfo>, bool)> {
        let key = format!("{}|{scheduler}", site.key);
        if !fresh {
            if let Some(data) = self.cached_queues(&key) {
                return Ok((mapping::to_queues(&data), false));
            }
        }
        let user = site.compute_user.clone().ok_or_else(|| {
            Error::usage(format!(
                "cannot tell the cluster user whose queues to list; set {}",
                self.auth.api.names.get("username")
            ))
        })?;
        let url = self.hpc(
            site,
            &format!("/hpc/openapi/v2/queuenames/users/{}", urlencode(&user)),
        )?;
        let data = self
            .api
            .get(
                &url,
                &tok.token,
                &[("strJobManagerID", scheduler.to_string())],
            )
            .await?;
        let record = json!({"key": key, "at": Utc::now().timestamp(), "data": data});
        if let Ok(bytes) = serde_json::to_vec(&record) {
            if let Err(e) = crate::http::token::write_private(&self.queue_cache, &bytes) {
                tracing::warn!("cannot cache AC queues: {e}");
            }
        }
        Ok((mapping::to_queues(&data), true))
    }

    fn cached_queues(&self, key: &str) -> Option<Value> {
        let text = std::fs::read_to_string(&self.queue_cache).ok()?;
        let v: Value = serde_json::from_str(&text).ok()?;
        let age = Utc::now().timestamp() - v.get("at")?.as_i64()?;
        (v.get("key")?.as_str()? == key && (0..QUEUE_TTL_SECS).contains(&age))
            .then(|| v.get("data").cloned())
            .flatten()
    }

    /// Refuses a queue the user does not have, or a wall time / core count over its limits,
    /// before anything is sent. A queue list the platform cannot give does not block the job.
    async fn check_queue(
        &self,
        tok: &CachedToken,
        site: &Site,
        scheduler: &str,
        spec: &JobSpec,
    ) -> Result<()> {
        let opt = |k: &str| {
            spec.opt_str(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let Some(queue) = opt("queue") else {
            return Ok(());
        };
        let mut listed = match self.queue_list(tok, site, scheduler, false).await {
            Ok(l) => l,
            Err(e) if e.kind == ErrorKind::Auth => return Err(e),
            Err(e) => {
                tracing::warn!("cannot check queue '{queue}' before submitting: {e}");
                return Ok(());
            }
        };
        if !listed.1 && !listed.0.iter().any(|q| q.name == queue) {
            // A queue granted since the cache was written.
            listed = self.queue_list(tok, site, scheduler, true).await?;
        }
        let queues = listed.0;
        if queues.is_empty() {
            return Ok(());
        }
        let Some(q) = queues.iter().find(|q| q.name == queue) else {
            let names: Vec<&str> = queues.iter().map(|q| q.name.as_str()).collect();
            return Err(Error::usage(format!(
                "queue '{queue}' is not one of your queues on scheduler {scheduler}: {} (see `jobctl queues`)",
                names.join(", ")
            )));
        };
        let limit = |k: &str| q.limits.get(k).and_then(Value::as_u64).filter(|n| *n > 0);
        if let (Some(w), Some(max)) = (
            opt("wall_time"),
            q.limits.get("max_wall_time").and_then(Value::as_str),
        ) {
            let wanted = mapping::parse_elapsed(&wall_time(&w)?);
            let most = mapping::parse_elapsed(max);
            if let (Some(wanted), Some(most)) = (wanted, most) {
                if wanted > most && most > chrono::Duration::zero() {
                    return Err(Error::usage(format!(
                        "wall time {} exceeds the maximum {max} of queue '{queue}'",
                        wall_time(&w)?
                    )));
                }
            }
        }
        let num = |k: &str| opt(k).and_then(|v| v.parse::<u64>().ok());
        if let (Some(ppn), Some(max)) = (num("ppn"), limit("max_cores_per_node")) {
            if ppn > max {
                return Err(Error::usage(format!(
                    "ppn {ppn} exceeds the {max} cores per node of queue '{queue}'"
                )));
            }
        }
        let total =
            num("nproc").or_else(|| Some(num("nodes").unwrap_or(1) * num("ppn").unwrap_or(1)));
        if let (Some(total), Some(max)) = (total, limit("max_cores")) {
            if total > max {
                return Err(Error::usage(format!(
                    "{total} cores exceed the maximum {max} of queue '{queue}'"
                )));
            }
        }
        Ok(())
    }

    /// Creates the working directory (when jobctl chose it, or files go into it) and uploads
    /// `uploads` into it. A directory the user named and nothing to upload is left as it is.
    async fn stage(
        &self,
        tok: &CachedToken,
        site: &Site,
        workdir: &str,
        invented: bool,
        uploads: &[files::UploadArg],
    ) -> Result<()> {
        let efile = files::Efile {
            api: &self.api,
            base: site.efile_url()?,
            token: &tok.token,
        };
        let plan = files::plan(uploads, workdir)?;
        if uploads.is_empty() && !invented {
            return Ok(());
        }
        for dir in &plan.dirs {
            if let Err(mut e) = efile.mkdir(dir).await {
                // Name the local file that needed the directory.
                let prefix = format!("{dir}/");
                if let Some((local, ..)) = plan
                    .files
                    .iter()
                    .find(|(_, d, ..)| d == dir || d.starts_with(&prefix))
                {
                    e.message = format!("{} (for {})", e.message, local.display());
                }
                return Err(e);
            }
        }
        for (local, dir, name, size) in &plan.files {
            tracing::info!("uploading {} to {dir}/{name}", local.display());
            efile.put(local, dir, name, *size, self.chunk).await?;
        }
        Ok(())
    }

    async fn read_with_session(&self, path: &str, offset: u64) -> Result<Option<Bytes>> {
        self.with_session(|tok, site| async move {
            let (tok, site) = (&tok, &site);
            self.read_from(tok, site, path, offset).await
        })
        .await
    }

    async fn status_inner(&self, id: &str) -> Result<Job> {
        JobKey::parse(id, Some("0"))?;
        self.with_session(|tok, site| async move {
            let (tok, site) = (&tok, &site);
            let key = JobKey::parse(id, Some(&site.scheduler))?;
            self.lookup(tok, site, &key).await
        })
        .await
    }
}

/// The default working directory's name: the idempotency key when there is one (a retried
/// submission finds its uploads again), else the job name made unique.
fn workdir_name(key: Option<&str>, name: &str) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                    c
                } else {
                    '_'
                }
            })
            .collect::<String>()
            .trim_start_matches('.')
            .to_string()
    };
    match key.map(clean).filter(|k| !k.is_empty()) {
        Some(k) => k,
        None => format!("{}-{:08x}", clean(name), rand::random::<u32>()),
    }
}

/// Percent-encodes one path segment.
fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// Parses `upload_chunk_size` (`AC_UPLOAD_CHUNK_SIZE`): bytes, or with a `K`/`M`/`G` suffix.
fn parse_size(raw: &str) -> Result<u64> {
    let t = raw.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m = match c.to_ascii_uppercase() {
                'K' => 1024,
                'M' => 1024 * 1024,
                'G' => 1024 * 1024 * 1024,
                _ => 0,
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    // A chunk is held in memory while it is sent: at most 1 GiB.
    match num
        .trim()
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
    {
        Some(n) if n > 0 && n <= 1024 * 1024 * 1024 => Ok(n),
        _ => Err(Error::usage(format!(
            "invalid size '{raw}': write bytes or e.g. 512K, 8M (at most 1G)"
        ))),
    }
}

/// Whether an error means "no such job / file" rather than a real failure.
fn is_missing(e: &Error) -> bool {
    e.kind == ErrorKind::NotFound || e.code.as_deref() == Some("10004")
}

/// Whether the realtime detail's refusal says the job is not (or no longer) there. The exact
/// answer is undocumented; clients see a "不存在" / "not found" message or an HTTP 404 page,
/// and any of them sends the lookup to the history, which has the final word.
fn gone_from_realtime(e: &Error) -> bool {
    if matches!(e.kind, ErrorKind::Auth | ErrorKind::Unavailable) {
        return false;
    }
    let m = e.message.to_lowercase();
    [
        "不存在",
        "not found",
        "not exist",
        "no such job",
        "http 404",
    ]
    .iter()
    .any(|n| m.contains(n))
}

fn is_json(h: &reqwest::header::HeaderMap) -> bool {
    h.get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

/// The script text: one argument verbatim, several joined with shell quoting.
pub fn command_text(cmd: &[String]) -> String {
    match cmd {
        [one] => one.clone(),
        many => shell_words::join(many),
    }
}

/// `wall_time` as `HH:MM:SS`: accepted as written, or as a duration (`90m`, `2h`).
pub fn wall_time(raw: &str) -> Result<String> {
    let t = raw.trim();
    let parts: Vec<&str> = t.split(':').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
    {
        return Ok(t.to_string());
    }
    let d = crate::config::parse_duration(t).map_err(|_| {
        Error::usage(format!(
            "option `wall_time` must be HH:MM:SS or a duration like 90m, got '{raw}'"
        ))
    })?;
    let s = d.as_secs();
    if s == 0 {
        return Err(Error::usage("option `wall_time` must be longer than zero"));
    }
    Ok(format!(
        "{:02}:{:02}:{:02}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    ))
}

/// `--opt app=TYPE/NAME` split into the template path parts.
fn app_path(raw: &str) -> Result<(String, String)> {
    let ok = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    match raw.trim().split_once('/') {
        Some((t, n)) if ok(t) && ok(n) => Ok((t.to_string(), n.to_string())),
        _ => Err(Error::usage(format!(
            "option `app` must be TYPE/NAME (e.g. BASIC/BASE), got '{raw}'"
        ))),
    }
}

/// `mapAppJobInfo` of a submission: the `GAP_*` fields of the app template, from the spec's
/// options (`opt`) and what `submit` resolved.
fn app_job_info(
    opt: &dyn Fn(&str) -> Option<String>,
    cmd: &str,
    name: &str,
    workdir: &str,
    wall: Option<&str>,
    exclusive: bool,
    app_name: &str,
) -> BTreeMap<&'static str, String> {
    let nproc = opt("nproc");
    // Cores per node default to one unless a total core count was asked for.
    let ppn = opt("ppn").or_else(|| nproc.is_none().then(|| "1".to_string()));
    [
        ("GAP_CMD_FILE", cmd.to_string()),
        ("GAP_SUBMIT_TYPE", "cmd".to_string()),
        ("GAP_JOB_NAME", name.to_string()),
        ("GAP_WORK_DIR", workdir.to_string()),
        ("GAP_QUEUE", opt("queue").unwrap_or_default()),
        ("GAP_NNODE", opt("nodes").unwrap_or_else(|| "1".to_string())),
        ("GAP_NODE_STRING", String::new()),
        ("GAP_PPN", ppn.unwrap_or_default()),
        ("GAP_NPROC", nproc.unwrap_or_default()),
        ("GAP_NGPU", opt("gpus").unwrap_or_default()),
        ("GAP_NDCU", opt("dcus").unwrap_or_default()),
        ("GAP_JOB_MEM", opt("memory").unwrap_or_default()),
        ("GAP_WALL_TIME", wall.unwrap_or_default().to_string()),
        (
            "GAP_EXCLUSIVE",
            if exclusive { "1" } else { "" }.to_string(),
        ),
        ("GAP_APPNAME", app_name.to_string()),
        ("GAP_MULTI_SUB", String::new()),
        ("GAP_STD_OUT_FILE", format!("{workdir}/std.out.%j")),
        ("GAP_STD_ERR_FILE", format!("{workdir}/std.err.%j")),
    ]
    .into_iter()
    .collect()
}

/// The job just submitted, as far as jobctl knows it without asking: queued, with the output
/// files the template names.
fn submitted_job(scheduler: &str, job_id: &str, name: &str, workdir: &str) -> Job {
    let key = JobKey {
        scheduler: scheduler.to_string(),
        job: job_id.to_string(),
    };
    let mut job = Job::new(key.id(), JobState::Queued, None);
    job.name = Some(name.to_string());
    job.created_at = Some(Utc::now());
    job.extra.insert("scheduler_id".into(), scheduler.into());
    job.extra.insert("workdir".into(), workdir.into());
    job.extra.insert(
        "stdout".into(),
        format!("{workdir}/std.out.{job_id}").into(),
    );
    job.extra.insert(
        "stderr".into(),
        format!("{workdir}/std.err.{job_id}").into(),
    );
    job
}

/// Converts the submit answer's `data` to a job id.
/// The job name that carries the spec's idempotency key: the key itself, or `NAME--KEY`
/// when the spec has a name of its own (AC jobs have no other free field a list shows).
fn carried_name(spec: &JobSpec) -> Option<String> {
    let name = spec.name.clone().filter(|n| !n.trim().is_empty());
    match (name, spec.key.as_deref()) {
        (Some(n), Some(k)) if n != k => Some(format!("{n}--{k}")),
        (Some(n), _) => Some(n),
        (None, Some(k)) => Some(k.to_string()),
        (None, None) => None,
    }
}

fn submitted_id(data: &Value) -> Option<String> {
    match data {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => mapping::text(o, &["jobId", "id"]),
        _ => None,
    }
}

/// `strJobStat`/`jobState` for a state filter when it names exactly one native code.
fn single_code(states: &[JobState], allowed: &[JobState]) -> Option<&'static str> {
    let codes: Vec<&str> = states
        .iter()
        .filter(|s| allowed.contains(s))
        .flat_map(|s| mapping::native_codes(*s).iter().copied())
        .collect();
    (codes.len() == 1 && states.len() == 1).then(|| codes[0])
}

#[async_trait]
impl JobBackend for AcBackend {
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
            Capability::Queues,
            Capability::Upload,
        ]
        .into_iter()
        .collect()
    }

    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Required,
            args: false,
            options: OPTIONS,
            required_options: &[],
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(BACKEND, spec)?;
        self.spec_checks(spec)?;
        for u in &spec.uploads {
            files::UploadArg::parse(u)?;
        }
        Ok(())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        self.validate(spec)?;
        let cmd = command_text(spec.command.as_deref().unwrap_or_default());
        let opt = |k: &str| {
            spec.opt_str(k)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let (app_type, app_name) = match opt("app") {
            Some(a) => app_path(&a)?,
            None => ("BASIC".to_string(), "BASE".to_string()),
        };
        let name = carried_name(spec).unwrap_or_else(|| {
            format!(
                "jobctl_{}",
                Utc::now().with_timezone(&self.offset).format("%m%d_%H%M%S")
            )
        });
        let wall = opt("wall_time").map(|w| wall_time(&w)).transpose()?;
        let exclusive = opt("exclusive")
            .map(|e| crate::config::parse_bool(&e))
            .transpose()?
            .unwrap_or(false);
        let uploads = spec
            .uploads
            .iter()
            .map(|u| files::UploadArg::parse(u))
            .collect::<Result<Vec<_>>>()?;
        let dir_name = workdir_name(spec.key.as_deref(), &name);
        // The operation may run twice (a refused token): it borrows what it needs.
        let (opt, cmd, name, wall) = (&opt, &cmd, &name, &wall);
        let (app_type, app_name) = (&app_type, &app_name);
        let (uploads, dir_name) = (&uploads, &dir_name);
        self.with_session(|tok, site| async move {
            let (tok, site) = (&tok, &site);
            let scheduler = opt("scheduler").unwrap_or_else(|| site.scheduler.clone());
            self.check_queue(tok, site, &scheduler, spec).await?;
            let (workdir, invented) = match opt("workdir") {
                Some(w) => (w.trim_end_matches('/').to_string(), false),
                None => (
                    format!(
                        "{}/jobctl/{dir_name}",
                        self.home(tok, site).await?.trim_end_matches('/')
                    ),
                    true,
                ),
            };
            self.stage(tok, site, &workdir, invented, uploads).await?;
            let info = app_job_info(
                &opt,
                cmd,
                name,
                &workdir,
                wall.as_deref(),
                exclusive,
                app_name,
            );
            // The documented example sends the scheduler id as a number.
            let manager = scheduler
                .parse::<u64>()
                .map(Value::from)
                .unwrap_or_else(|_| Value::String(scheduler.clone()));
            let body = json!({"strJobManagerID": manager, "mapAppJobInfo": info});
            let url = self.hpc(
                site,
                &format!("/hpc/openapi/v2/apptemplates/{app_type}/{app_name}/job"),
            )?;
            let data = self
                .api
                .post_json(&url, &tok.token, &body, Idempotency::NotIdempotent)
                .await?;
            let job_id = submitted_id(&data).ok_or_else(|| {
                Error::protocol(format!(
                    "the AC platform accepted the job but returned no job id (data: {data})"
                ))
            })?;
            let mut job = submitted_job(&scheduler, &job_id, name, &workdir);
            job.queue = opt("queue");
            job.owner = site.compute_user.clone();
            job.extra
                .insert("app".into(), format!("{app_type}/{app_name}").into());
            Ok(job)
        })
        .await
    }

    async fn status(&self, id: &str) -> Result<Job> {
        self.status_inner(id).await
    }

    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        // Ids that do not parse are answered without asking the platform.
        let parsed: Vec<Result<()>> = ids
            .iter()
            .map(|id| JobKey::parse(id, Some("0")).map(|_| ()))
            .collect();
        let outcome: Result<Vec<Result<Job>>> = self
            .with_session(|tok, site| async move {
                let (tok, site) = (&tok, &site);
                let keys: Vec<Option<JobKey>> = ids
                    .iter()
                    .map(|id| JobKey::parse(id, Some(&site.scheduler)).ok())
                    .collect();
                let found = self.realtime_many(tok, site, &keys).await?;
                let mut out = Vec::with_capacity(keys.len());
                for key in &keys {
                    let Some(key) = key else {
                        out.push(Err(Error::usage("invalid id")));
                        continue;
                    };
                    if let Some(job) = found.get(key) {
                        out.push(Ok(job.clone()));
                        continue;
                    }
                    let r = self.finished(tok, site, key).await;
                    if let Err(e) = &r {
                        if e.kind == ErrorKind::Auth && e.token_expired {
                            return Err(e.clone());
                        }
                    }
                    out.push(r);
                }
                Ok(out)
            })
            .await;
        match outcome {
            Ok(results) => results
                .into_iter()
                .zip(parsed)
                .map(|(r, p)| match p {
                    Err(e) => Err(e),
                    Ok(()) => r,
                })
                .collect(),
            Err(e) => parsed
                .into_iter()
                .map(|p| Err(p.err().unwrap_or_else(|| e.clone())))
                .collect(),
        }
    }

    /// The key travels in the job name; realtime and history lists are searched.
    async fn find_by_key(
        &self,
        spec: &JobSpec,
        since: chrono::DateTime<Utc>,
    ) -> Result<crate::backend::KeyLookup> {
        let query = [crate::backend::KeyQuery { spec, since }];
        let mut found = self.find_by_keys(&query, &|_| false).await;
        found
            .pop()
            .unwrap_or(Ok(crate::backend::KeyLookup::Unsearchable))
    }

    /// The realtime and history lists are read once for every key.
    async fn find_by_keys(
        &self,
        queries: &[crate::backend::KeyQuery<'_>],
        _known: crate::backend::KnownJob<'_>,
    ) -> Vec<Result<crate::backend::KeyLookup>> {
        use crate::backend::KeyLookup;
        let wanted: Vec<Option<String>> = queries
            .iter()
            .map(|q| carried_name(q.spec).filter(|_| q.spec.key.is_some()))
            .collect();
        if wanted.iter().all(Option::is_none) {
            return wanted.iter().map(|_| Ok(KeyLookup::Unsearchable)).collect();
        }
        let jobs = match self.list(&ListQuery::default()).await {
            Ok(jobs) => jobs,
            Err(e) => return queries.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut by_name: HashMap<&str, &Job> = HashMap::new();
        for j in &jobs {
            if let Some(n) = j.name.as_deref() {
                by_name.entry(n).or_insert(j);
            }
        }
        // The history reaches back HISTORY_DAYS; a day less leaves room for clock skew and
        // for the job's own run time.
        let oldest = Utc::now() - chrono::Duration::days(HISTORY_DAYS - 1);
        wanted
            .iter()
            .zip(queries)
            .map(|(w, q)| {
                let Some(name) = w else {
                    return Ok(KeyLookup::Unsearchable);
                };
                Ok(match by_name.get(name.as_str()) {
                    Some(j) => KeyLookup::Found((*j).clone()),
                    None if q.since >= oldest => KeyLookup::Absent,
                    None => KeyLookup::Undecided(format!(
                        "it was sent more than {} days ago, and the job lists reach back {HISTORY_DAYS} days, so its absence proves nothing",
                        HISTORY_DAYS - 1
                    )),
                })
            })
            .collect()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        self.with_session(|tok, site| async move {
            let (tok, site) = (&tok, &site);
            let limit = query.limit;
            let realtime_states = [
                JobState::Queued,
                JobState::Running,
                JobState::Suspended,
                JobState::Succeeded,
                JobState::Failed,
                JobState::Canceled,
                JobState::Unknown,
            ];
            let stat = single_code(&query.states, &realtime_states);
            let mut jobs: BTreeMap<String, Job> = BTreeMap::new();
            let records = self
                .realtime_pages(tok, site, &site.scheduler, stat, |_| false)
                .await?;
            for r in records {
                let key = JobKey {
                    scheduler: site.scheduler.clone(),
                    job: mapping::text(&r, &["jobId", "id"]).unwrap_or_default(),
                };
                if let Ok(job) = to_job(&r, Some(&key), Source::Realtime, self.offset) {
                    if query.wants(job.state) {
                        jobs.insert(job.id.clone(), job);
                    }
                }
            }
            let wants_finished = query.states.is_empty()
                || query
                    .states
                    .iter()
                    .any(|s| s.is_terminal() || *s == JobState::Unknown);
            if wants_finished {
                self.history_list(tok, site, query, &mut jobs).await?;
            }
            let mut out: Vec<Job> = jobs.into_values().collect();
            out.sort_by_key(|j| std::cmp::Reverse(mapping::sort_key(j)));
            if let Some(l) = limit {
                out.truncate(l);
            }
            Ok(out)
        })
        .await
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        let run = async {
            JobKey::parse(id, Some("0"))?;
            self.with_session(|tok, site| async move {
                let (tok, site) = (&tok, &site);
                let key = JobKey::parse(id, Some(&site.scheduler))?;
                let job = self.lookup(tok, site, &key).await?;
                if job.terminal {
                    return Ok(AbortOutcome::AlreadyTerminal);
                }
                let user = job
                    .owner
                    .clone()
                    .or_else(|| site.compute_user.clone())
                    .ok_or_else(|| {
                        Error::usage(format!(
                            "cannot tell the job's cluster user; set {}",
                            self.auth.api.names.get("username")
                        ))
                    })?;
                let url = self.hpc(site, "/hpc/openapi/v2/jobs")?;
                let info = format!("{},{user}:{}:", key.scheduler, key.job);
                self.api
                    .delete_form(
                        &url,
                        &tok.token,
                        &[("jobMethod", "5".to_string()), ("strJobInfoMap", info)],
                    )
                    .await?;
                Ok(AbortOutcome::Requested)
            })
            .await
        };
        let r: Result<_> = run.await;
        r
    }

    async fn logs(&self, id: &str, req: LogsRequest, out: LogSink<'_>) -> Result<()> {
        let which = if req.stderr { "error" } else { "output" };
        let mut offset = 0u64;
        let mut seen_file = false;
        loop {
            let job = self.status_inner(id).await?;
            let path = Self::stream_path(&job, req.stderr)?;
            let chunk = self.read_with_session(&path, offset).await?;
            if let Some(bytes) = chunk {
                seen_file = true;
                if !bytes.is_empty() {
                    out.write_all(&bytes)
                        .await
                        .map_err(|e| Error::io("writing logs", e))?;
                    out.flush()
                        .await
                        .map_err(|e| Error::io("writing logs", e))?;
                    offset += bytes.len() as u64;
                }
            }
            // The state was read before the file, so after a terminal state the file is whole.
            if !req.follow || job.terminal {
                if !seen_file {
                    return Err(Error::not_found(format!(
                        "job {} has no {which} file ({path}) yet{}",
                        job.id,
                        if job.terminal {
                            ""
                        } else {
                            "; it has not started"
                        }
                    )));
                }
                return Ok(());
            }
            tokio::time::sleep(self.ctx.profile.poll_interval).await;
        }
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let run = async {
            let job = self.status_inner(id).await?;
            let job = &job;
            let wanted = self
                .with_session(|tok, site| async move {
                    let (tok, site) = (&tok, &site);
                    self.fetch_list(tok, site, job).await
                })
                .await?;
            let mut artifacts = Vec::new();
            for (remote, rel) in &wanted {
                let got = self
                    .with_session(|tok, site| async move {
                        let (tok, site) = (&tok, &site);
                        self.download(tok, site, remote, rel, dest, progress).await
                    })
                    .await?;
                artifacts.extend(got);
            }
            if artifacts.is_empty() {
                let names: Vec<&str> = wanted.iter().map(|(r, _)| r.as_str()).collect();
                return Err(Error::not_found(format!(
                    "job {} has no output files yet ({})",
                    job.id,
                    names.join(", ")
                )));
            }
            Ok(artifacts)
        };
        let r: Result<_> = run.await;
        r
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.with_session(|tok, site| async move {
            Ok(self.queue_list(&tok, &site, &site.scheduler, true).await?.0)
        })
        .await
    }

    async fn login(&self) -> Result<String> {
        let run = async {
            self.auth.store.clear().await?;
            self.with_session(|tok, site| async move {
                let (tok, site) = (&tok, &site);
                let region = tok
                    .data
                    .get("region_name")
                    .or_else(|| tok.data.get("region_id"))
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                let until = tok
                    .expires_at
                    .map(|t| format!(", token valid until {}", t.to_rfc3339()))
                    .unwrap_or_default();
                Ok(format!(
                    "region {region}, cluster user {}, scheduler {}{until}",
                    site.compute_user.as_deref().unwrap_or("?"),
                    site.scheduler
                ))
            })
            .await
        };
        let r: Result<_> = run.await;
        r
    }

    async fn logout(&self) -> Result<()> {
        self.auth.store.clear().await?;
        *self.site.lock().await = None;
        self.sites.clear()?;
        Ok(())
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        let tok = match self.auth.token().await {
            Ok(t) => {
                report(Check::pass(
                    "reachability",
                    format!("{} answered", self.auth.login_host()),
                ));
                let region = t
                    .data
                    .get("region_name")
                    .or_else(|| t.data.get("region_id"))
                    .and_then(Value::as_str)
                    .unwrap_or("?")
                    .to_string();
                report(Check::pass(
                    "authentication",
                    format!("token for region {region}"),
                ));
                t
            }
            Err(e) => {
                if matches!(e.kind, ErrorKind::Unavailable) {
                    report(Check::fail("reachability", e.to_string()));
                } else {
                    report(Check::pass(
                        "reachability",
                        format!("{} answered", self.auth.login_host()),
                    ));
                    report(Check::fail("authentication", e.to_string()));
                }
                return;
            }
        };
        let site = match self.site(&tok).await {
            Ok(s) => {
                report(Check::pass(
                    "discovery",
                    format!(
                        "hpc {}, efile {}, scheduler {}",
                        s.hpc, s.efile, s.scheduler
                    ),
                ));
                s
            }
            Err(e) => {
                report(Check::fail("discovery", e.to_string()));
                return;
            }
        };
        let probe = async {
            let url = self.hpc(&site, "/hpc/openapi/v2/cluster")?;
            self.api.get(&url, &tok.token, &[]).await
        };
        match probe.await {
            Ok(_) => report(Check::pass(
                "api version",
                "OpenAPI v2 (/hpc/openapi/v2/cluster answered with the v2 envelope)",
            )),
            Err(e) => report(Check::fail("api version", e.to_string())),
        }
        match self.queue_list(&tok, &site, &site.scheduler, true).await {
            Ok((queues, _)) if queues.is_empty() => report(Check::pass(
                "queues",
                "the platform lists no queues for this user (submit without --queue)",
            )),
            Ok((queues, _)) => {
                let names: Vec<String> = queues
                    .iter()
                    .map(
                        |q| match q.limits.get("max_wall_time").and_then(Value::as_str) {
                            Some(w) => format!("{} (max {w})", q.name),
                            None => q.name.clone(),
                        },
                    )
                    .collect();
                report(Check::pass("queues", names.join(", ")));
            }
            Err(e) => report(Check::fail("queues", e.to_string())),
        }
    }
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_script_text() {
        assert_eq!(
            command_text(&["module load x; ./run.sh".into()]),
            "module load x; ./run.sh"
        );
        assert_eq!(
            command_text(&["echo".into(), "a b".into(), "it's".into()]),
            "echo 'a b' 'it'\\''s'"
        );
    }

    #[test]
    fn chunk_sizes_parse_with_suffixes_and_bounds() {
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("8M").unwrap(), 8 * 1024 * 1024);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        for bad in ["0", "2G", "x", "12Q", "-1", "99999999999999999999K"] {
            assert_eq!(parse_size(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        assert!(workdir_name(Some("case 7/a"), "x").starts_with("case_7_a"));
        let fresh = workdir_name(None, "demo");
        assert!(fresh.starts_with("demo-") && fresh.len() == 13, "{fresh}");
        assert_ne!(fresh, workdir_name(None, "demo"));
    }

    #[test]
    fn wall_times_accept_both_forms() {
        assert_eq!(wall_time("24:00:00").unwrap(), "24:00:00");
        assert_eq!(wall_time("90m").unwrap(), "01:30:00");
        assert!(wall_time("soon").is_err());
        assert!(wall_time("0s").is_err());
    }

    #[test]
    fn filters_map_to_one_native_code_or_none() {
        let all = JobState::ALL;
        assert_eq!(single_code(&[JobState::Running], &all), Some("statR"));
        assert_eq!(single_code(&[JobState::Queued], &all), None);
        assert_eq!(
            single_code(&[JobState::Running, JobState::Suspended], &all),
            None
        );
        assert_eq!(single_code(&[], &all), None);
        assert_eq!(submitted_id(&json!(35919)).as_deref(), Some("35919"));
        assert_eq!(submitted_id(&json!("12")).as_deref(), Some("12"));
        assert_eq!(submitted_id(&json!(null)), None);
    }
}
