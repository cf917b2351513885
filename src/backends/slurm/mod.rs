//! The slurm backend: any Slurm cluster through slurmrestd's REST API.
//!
//! - `api`: the per-version interface, its registry, the raw request and Slurm's `errors[]`.
//! - `v0_0_38`: Slurm 22.05's API (one module per version; discovery picks the newest the
//!   server offers among those jobctl speaks).
//! - `auth`: user name and JWT, pre-issued or minted by a `token_command`.
//! - `mapping`: states, wait statuses, output-file patterns, spec → submission.
//!
//! Job ids are Slurm's numeric job ids. Output files are read where they are visible from this
//! machine (same host or shared filesystem); slurmrestd offers no way to read them.

pub mod api;
pub mod auth;
pub mod mapping;
pub mod v0_0_38;

use crate::backend::{
    BackendContext, CheckSink, JobBackend, KeyLookup, KeyQuery, KnownJob, LogSink,
};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{HttpClient, Idempotency};
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Capability, Check, CommandRule, FetchProgress, Job,
    JobSpec, JobState, ListQuery, LogsRequest, ProgressFn, QueueInfo, SpecRules,
};
use api::{ApiVersion, Failure, RestClient};
use async_trait::async_trait;
use mapping::NativeJob;
use reqwest::Method;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::OnceCell;

const NAME: &str = "slurm";

/// Builds the slurm backend for a profile.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Ok(Arc::new(SlurmBackend::new(ctx)?))
}

/// A Slurm cluster behind slurmrestd.
#[derive(Debug)]
pub struct SlurmBackend {
    profile: String,
    client: RestClient,
    auth: auth::Auth,
    /// `api_version` from the profile, when the user pinned one.
    pinned: Option<String>,
    /// The version in use, discovered on first use.
    api: OnceCell<&'static dyn ApiVersion>,
    poll_interval: Duration,
}

impl SlurmBackend {
    /// A backend for `ctx.profile`; fails (exit 2) on a missing URL or a bad option.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        let url = ctx.require_url("SLURM_REST_URL")?;
        let profile = &ctx.profile;
        let pinned = profile
            .option("api_version")
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string);
        if let Some(v) = &pinned {
            if api::find_version(v).is_none() {
                return Err(Error::usage(format!(
                    "profile '{}': api_version '{v}' is not one jobctl speaks ({})",
                    profile.name,
                    api::supported_names()
                )));
            }
        }
        let http = HttpClient::new(profile, NAME)?;
        Ok(SlurmBackend {
            profile: profile.name.clone(),
            client: RestClient::new(http, url, profile),
            auth: auth::Auth::new(profile, &ctx.cache_dir())?,
            pinned,
            api: OnceCell::new(),
            poll_interval: profile.poll_interval.min(Duration::from_secs(2)),
        })
    }

    /// One authenticated call. A failure that looks like a refused token is confirmed with a
    /// ping; if the ping is refused too, the error becomes an authentication failure that a
    /// new token may cure.
    async fn call_with(
        &self,
        api: &dyn ApiVersion,
        (user, token): (&str, &crate::config::Secret),
        method: Method,
        tail: &str,
        body: Option<&bytes::Bytes>,
        idem: Idempotency,
    ) -> Result<Value> {
        let path = api.path(tail);
        match self
            .client
            .call(method, &path, user, token, body, idem)
            .await
        {
            Ok(v) => Ok(v),
            Err(Failure {
                error,
                suspect_auth: true,
            }) => {
                let ping = self
                    .client
                    .call(
                        Method::GET,
                        &api.path("ping"),
                        user,
                        token,
                        None,
                        Idempotency::Idempotent,
                    )
                    .await;
                match ping {
                    Err(f) if f.suspect_auth || f.error.kind == ErrorKind::Auth => {
                        let mut e = Error::auth(format!(
                            "the Slurm controller refused the token of user '{user}' (it is invalid or expired): {}",
                            error.message
                        ));
                        e.code = error.code.clone();
                        Err(self.client.explain(e).expired_token())
                    }
                    _ => Err(error),
                }
            }
            Err(f) => Err(f.error),
        }
    }

    /// The API version to use: pinned, or discovered once per process.
    async fn api(&self) -> Result<&'static dyn ApiVersion> {
        self.api
            .get_or_try_init(|| async {
                if let Some(v) = self.pinned.as_deref().and_then(api::find_version) {
                    return Ok(v);
                }
                let token = self.auth.token().await?;
                let user = self.auth.user_for(&token)?;
                self.discover(&user, &token.token).await
            })
            .await
            .copied()
    }

    /// Probes `…/ping` of each version jobctl speaks, newest first. A version the server does
    /// not serve answers 404; any Slurm answer (even a refusal) proves the version exists.
    /// When none is served, the server's OpenAPI document says what it offers instead.
    async fn discover(
        &self,
        user: &str,
        token: &crate::config::Secret,
    ) -> Result<&'static dyn ApiVersion> {
        for v in api::SUPPORTED {
            let resp = self
                .client
                .send(
                    Method::GET,
                    &v.path("ping"),
                    user,
                    token,
                    None,
                    Idempotency::Idempotent,
                )
                .await?;
            if resp.status == reqwest::StatusCode::UNAUTHORIZED {
                return Err(self.client.explain(
                    api::classify(&resp)
                        .err()
                        .map(|f| f.error)
                        .unwrap_or_else(|| Error::auth("slurmrestd refused the credentials")),
                ));
            }
            let is_slurm = serde_json::from_slice::<Value>(&resp.body)
                .ok()
                .is_some_and(|b| b.get("meta").is_some() || b.get("errors").is_some());
            if !is_slurm
                && (resp.status.is_server_error()
                    || resp.status == reqwest::StatusCode::TOO_MANY_REQUESTS)
            {
                // An overloaded or restarting slurmrestd says nothing about the versions it
                // serves: a transient failure, not "not supported".
                return Err(Error::unavailable(format!(
                    "slurmrestd failed while jobctl probed API version {} (HTTP {}: {}); try again later",
                    v.version(),
                    resp.status.as_u16(),
                    crate::http::snippet(&resp.body)
                )));
            }
            if resp.status != reqwest::StatusCode::NOT_FOUND && is_slurm {
                tracing::debug!(profile = %self.profile, version = v.version(), "slurmrestd API version");
                return Ok(*v);
            }
            if resp.status != reqwest::StatusCode::NOT_FOUND {
                // The path exists but what answers is not slurmrestd (an HTML portal, a
                // garbled body): an unusable answer (exit 7), not "version not supported".
                return Err(api::classify(&resp).err().map(|f| f.error).unwrap_or_else(|| {
                    Error::protocol(format!(
                        "the ping of slurmrestd {} answered HTTP {} with something that is not a Slurm answer: {}",
                        v.version(),
                        resp.status.as_u16(),
                        crate::http::snippet(&resp.body)
                    ))
                }));
            }
        }
        let offered = match self
            .client
            .call(
                Method::GET,
                "openapi",
                user,
                token,
                None,
                Idempotency::Idempotent,
            )
            .await
        {
            Ok(doc) => api::versions_in_openapi(&doc),
            Err(_) => Vec::new(),
        };
        let offered = if offered.is_empty() {
            "none that could be read".to_string()
        } else {
            offered.join(", ")
        };
        Err(Error::new(
            ErrorKind::NotSupported,
            format!(
                "slurmrestd at {} serves no API version jobctl speaks: it offers {offered}; jobctl speaks {}",
                self.client.base(),
                api::supported_names()
            ),
        ))
    }

    /// An authenticated request against the discovered version.
    async fn request(
        &self,
        method: Method,
        tail: &str,
        body: Option<&bytes::Bytes>,
        idem: Idempotency,
    ) -> Result<(Value, &'static dyn ApiVersion)> {
        let api = self.api().await?;
        let (v, _) = self.authenticated(api, method, tail, body, idem).await?;
        Ok((v, api))
    }

    /// [`Self::call_with`] with the current token; when the controller refuses it and a new
    /// one can be minted, mints it and tries once more. Returns the answer and the user the
    /// request was made for.
    async fn authenticated(
        &self,
        api: &dyn ApiVersion,
        method: Method,
        tail: &str,
        body: Option<&bytes::Bytes>,
        idem: Idempotency,
    ) -> Result<(Value, String)> {
        self.auth
            .with_token(|token| {
                let method = method.clone();
                async move {
                    let user = self.auth.user_for(&token)?;
                    let v = self
                        .call_with(api, (&user, &token.token), method, tail, body, idem)
                        .await?;
                    Ok((v, user))
                }
            })
            .await
    }

    fn job_id(&self, id: &str) -> Result<u64> {
        id.trim().parse::<u64>().map_err(|_| {
            Error::usage(format!(
                "'{id}' is not a Slurm job id (a number, e.g. slurm:1234)"
            ))
        })
    }

    async fn native(&self, id: &str) -> Result<(NativeJob, &'static str)> {
        let n = self.job_id(id)?;
        let (body, api) = self
            .request(
                Method::GET,
                &format!("job/{n}"),
                None,
                Idempotency::Idempotent,
            )
            .await?;
        let jobs = api.jobs(&body)?;
        jobs.into_iter()
            .find(|j| j.job_id == n)
            .map(|j| (j, api.version()))
            .ok_or_else(|| Error::not_found(format!("Slurm knows no job {n}")).with_code("2017"))
    }

    async fn all_jobs(&self) -> Result<(Vec<NativeJob>, &'static str)> {
        let (body, api) = self
            .request(Method::GET, "jobs", None, Idempotency::Idempotent)
            .await?;
        let jobs = api.jobs(&body)?;
        Ok((jobs, api.version()))
    }

    /// The local file holding the job's output (or error) stream, or why there is none.
    async fn output_file(&self, id: &str, stderr: bool, op: &str) -> Result<(PathBuf, Job)> {
        let (native, version) = self.native(id).await?;
        let job = mapping::to_job(&native, version);
        let Some(path) = mapping::output_path(&native, stderr) else {
            return Err(Error::not_supported(
                NAME,
                op,
                format!("Slurm reports no output file for job {id} (no working directory)"),
            ));
        };
        let mut candidates = vec![PathBuf::from(&path)];
        // `%N` is the short host name of the node that ran the script; the controller only
        // knows the node name, which on a single-host cluster is often `localhost`.
        if native.stdout.as_deref().unwrap_or("").contains("%N")
            || native.stderr.as_deref().unwrap_or("").contains("%N")
        {
            if let Some(host) = local_short_hostname() {
                let pattern = if stderr {
                    native
                        .stderr
                        .clone()
                        .filter(|s| !s.is_empty())
                        .or(native.stdout.clone())
                } else {
                    native.stdout.clone()
                };
                if let Some(p) = pattern {
                    let alt = mapping::expand_pattern(&p, &native, Some(&host));
                    let alt = if alt.starts_with('/') {
                        alt
                    } else {
                        format!(
                            "{}/{alt}",
                            native.cwd.clone().unwrap_or_default().trim_end_matches('/')
                        )
                    };
                    candidates.push(PathBuf::from(alt));
                }
            }
        }
        for c in &candidates {
            match tokio::fs::metadata(c).await {
                Ok(m) if m.is_file() => return Ok((c.clone(), job)),
                _ => continue,
            }
        }
        if job.state == JobState::Queued {
            return Err(Error::not_found(format!(
                "job {id} has not started yet, so it has no output; its output will be written to {path} on the cluster"
            )));
        }
        Err(Error::not_supported(
            NAME,
            op,
            format!(
                "slurmrestd does not serve job output; the job's {} file {path} is not readable from this machine (jobctl reads it only on the cluster's host or a shared filesystem)",
                if stderr { "error" } else { "output" }
            ),
        ))
    }
}

fn local_short_hostname() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    if name.is_empty() {
        return None;
    }
    Some(name.split('.').next().unwrap_or(name).to_string())
}

#[async_trait]
impl JobBackend for SlurmBackend {
    fn name(&self) -> &'static str {
        NAME
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
        ]
        .into_iter()
        .collect()
    }

    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Required,
            args: true,
            options: mapping::OPTIONS,
            required_options: &[],
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(NAME, spec)?;
        mapping::submit_request(spec).map(|_| ())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        // `validate` again (a caller may skip it), without building the request twice.
        self.spec_rules().check(NAME, spec)?;
        let req = mapping::submit_request(spec)?;
        let api = self.api().await?;
        let body = api.submit_body(&req)?;
        let (answer, user) = self
            .authenticated(
                api,
                Method::POST,
                "job/submit",
                Some(&body),
                Idempotency::NotIdempotent,
            )
            .await?;
        let id = api.submitted_id(&answer)?;
        // The answer carries only the id. slurmctld schedules asynchronously, so a job just
        // accepted is pending; reading it back would double the requests of every batch
        // submission for nothing a user needs (the next poll shows what Slurm made of it).
        let mut job = Job::new(id.to_string(), JobState::Queued, Some("PENDING".into()));
        job.name = Some(req.name.clone());
        job.queue = req.partition.clone();
        job.created_at = Some(chrono::Utc::now());
        job.extra
            .insert("api_version".into(), Value::from(api.version()));
        if let Some(m) = req.time_limit {
            job.extra
                .insert("time_limit_minutes".into(), Value::from(m));
        }
        job.extra
            .insert("workdir".into(), Value::from(req.workdir.clone()));
        // The job runs as the user the request was made for (taken from the token).
        job.owner = Some(user);
        Ok(job)
    }

    /// The key travels in the job's comment. slurmctld forgets a job `MinJobAge` (default
    /// 300 s) after it ended, so a key not seen is only certainly absent while its
    /// submission is younger than that.
    async fn find_by_key(
        &self,
        spec: &JobSpec,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<KeyLookup> {
        let query = [KeyQuery { spec, since }];
        let mut found = self.find_by_keys(&query, &|_| false).await;
        found.pop().unwrap_or(Ok(KeyLookup::Unsearchable))
    }

    /// One `GET jobs` answers every key.
    async fn find_by_keys(
        &self,
        queries: &[KeyQuery<'_>],
        _known: KnownJob<'_>,
    ) -> Vec<Result<KeyLookup>> {
        let (jobs, version) = match self.all_jobs().await {
            Ok(all) => all,
            Err(e) => return queries.iter().map(|_| Err(e.clone())).collect(),
        };
        let mut by_comment: HashMap<&str, &NativeJob> = HashMap::new();
        for n in &jobs {
            if let Some(c) = n.comment.as_deref() {
                by_comment.entry(c).or_insert(n);
            }
        }
        let now = chrono::Utc::now();
        queries
            .iter()
            .map(|q| {
                let Some(key) = q.spec.key.as_deref() else {
                    return Ok(KeyLookup::Unsearchable);
                };
                let wanted = mapping::key_comment(key);
                if let Some(n) = by_comment.get(wanted.as_str()) {
                    return Ok(KeyLookup::Found(mapping::to_job(n, version)));
                }
                if now - q.since < chrono::Duration::seconds(240) {
                    Ok(KeyLookup::Absent)
                } else {
                    Ok(KeyLookup::Undecided(
                        "it is older than 4 minutes, and slurmctld forgets a job MinJobAge (300 s by default) after it ended, so its absence from the job list proves nothing".into(),
                    ))
                }
            })
            .collect()
    }

    async fn status(&self, id: &str) -> Result<Job> {
        let (native, version) = self.native(id).await?;
        Ok(mapping::to_job(&native, version))
    }

    /// One `GET jobs` answers every id; ids the list lacks (hidden by the cluster's privacy
    /// settings, or not numeric) are asked for one by one.
    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        // One job: its own record, not the whole cluster's list.
        if let [id] = ids {
            return vec![self.status(id).await];
        }
        let all = match self.all_jobs().await {
            Ok(a) => a,
            Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
        };
        let (jobs, version) = all;
        let by_id: HashMap<u64, &NativeJob> = jobs.iter().map(|j| (j.job_id, j)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let found = id
                .trim()
                .parse::<u64>()
                .ok()
                .and_then(|n| by_id.get(&n).copied());
            match found {
                Some(n) => out.push(Ok(mapping::to_job(n, version))),
                None => out.push(self.status(id).await),
            }
        }
        out
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        let (jobs, version) = self.all_jobs().await?;
        // `list` shows the caller's own jobs unless asked otherwise (README "Commands").
        let me = self
            .auth
            .token()
            .await
            .and_then(|t| self.auth.user_for(&t))
            .ok();
        let mut jobs: Vec<(i64, u64, Job)> = jobs
            .iter()
            .filter(|n| me.is_none() || n.user_name == me)
            .map(|n| {
                (
                    n.submit_time.unwrap_or(0),
                    n.job_id,
                    mapping::to_job(n, version),
                )
            })
            .filter(|(_, _, j)| query.wants(j.state))
            .collect();
        jobs.sort_by_key(|(submitted, id, _)| std::cmp::Reverse((*submitted, *id)));
        let mut out: Vec<Job> = jobs.into_iter().map(|(_, _, j)| j).collect();
        if let Some(l) = query.limit {
            out.truncate(l);
        }
        Ok(out)
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        let job = self.status(id).await.map_err(|e| {
            let mut e = e;
            e.operation = Some("abort".into());
            e
        })?;
        if job.terminal {
            return Ok(AbortOutcome::AlreadyTerminal);
        }
        let n = self.job_id(id)?;
        // No signal parameter: Slurm then cancels like `scancel`, and the job ends CANCELLED
        // (an explicit SIGTERM that kills the script would end it FAILED).
        self.request(
            Method::DELETE,
            &format!("job/{n}"),
            None,
            Idempotency::Idempotent,
        )
        .await?;
        Ok(AbortOutcome::Requested)
    }

    async fn logs(&self, id: &str, req: LogsRequest, out: LogSink<'_>) -> Result<()> {
        let (path, mut job) = self.output_file(id, req.stderr, "logs").await?;
        let io = |e: std::io::Error| Error::io(path.display(), e);
        let mut offset: u64 = 0;
        loop {
            offset += copy_from(&path, offset, out).await.map_err(io)?;
            if !req.follow || job.terminal {
                break;
            }
            tokio::time::sleep(self.poll_interval).await;
            job = self.status(id).await?;
            if job.terminal {
                // One last read after the end: the last lines may land just before it.
                copy_from(&path, offset, out).await.map_err(io)?;
                break;
            }
        }
        out.flush().await.map_err(io)?;
        Ok(())
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let (stdout, _) = self.output_file(id, false, "fetch").await?;
        let mut files = vec![stdout.clone()];
        if let Ok((stderr, _)) = self.output_file(id, true, "fetch").await {
            if stderr != stdout {
                files.push(stderr);
            }
        }
        let mut artifacts = Vec::new();
        for src in files {
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("slurm-{id}.out"));
            let target = dest.join(&name);
            let bytes = tokio::fs::copy(&src, &target).await.map_err(|e| {
                Error::io(
                    format!("copying {} to {}", src.display(), target.display()),
                    e,
                )
            })?;
            progress(FetchProgress::Done(bytes));
            artifacts.push(Artifact {
                name,
                path: target,
                bytes,
                entries: Vec::new(),
            });
        }
        Ok(artifacts)
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        let (body, api) = self
            .request(Method::GET, "partitions", None, Idempotency::Idempotent)
            .await?;
        api.partitions(&body)
    }

    async fn login(&self) -> Result<String> {
        let op = async {
            if !self.auth.configured() {
                return Err(self.auth.missing());
            }
            self.auth.clear().await?;
            let token = self.auth.token().await?;
            let user = self.auth.user_for(&token)?;
            // Prove the controller accepts it.
            let api = self.api().await?;
            self.call_with(
                api,
                (&user, &token.token),
                Method::GET,
                "ping",
                None,
                Idempotency::Idempotent,
            )
            .await?;
            Ok(match token.expires_at {
                Some(exp) => format!(
                    "token for Slurm user {user} valid until {}",
                    exp.to_rfc3339()
                ),
                None => format!("token for Slurm user {user} accepted"),
            })
        };
        op.await
    }

    async fn logout(&self) -> Result<()> {
        self.auth.clear().await.map(|_| ())
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        let token = match self.auth.token().await {
            Ok(t) => t,
            Err(e) => {
                report(Check::fail("credentials", e.message));
                return;
            }
        };
        let user = match self.auth.user_for(&token) {
            Ok(u) => u,
            Err(e) => {
                report(Check::fail("credentials", e.message));
                return;
            }
        };
        report(Check::pass(
            "credentials",
            match token.expires_at {
                Some(exp) => format!("user {user}, token valid until {}", exp.to_rfc3339()),
                None => format!("user {user}, token without expiry"),
            },
        ));
        let api = match self.api().await {
            Ok(a) => {
                report(Check::pass(
                    "reachability",
                    format!("slurmrestd answers at {}", self.client.base()),
                ));
                a
            }
            Err(e) => {
                let name = if e.kind == ErrorKind::NotSupported {
                    "api version"
                } else {
                    "reachability"
                };
                report(Check::fail(name, e.message));
                return;
            }
        };
        let ping = self
            .authenticated(api, Method::GET, "ping", None, Idempotency::Idempotent)
            .await;
        match ping {
            Ok((body, _)) => {
                report(Check::pass(
                    "authentication",
                    format!("the controller accepts user {user}"),
                ));
                let release = body
                    .pointer("/meta/Slurm/release")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown release");
                report(Check::pass(
                    "api version",
                    format!(
                        "{} (Slurm {release}); jobctl speaks {}",
                        api.version(),
                        api::supported_names()
                    ),
                ));
            }
            Err(e) => report(Check::fail("authentication", e.message)),
        }
    }
}

/// Appends the bytes of `path` from `offset` on to `out`; returns how many were copied.
async fn copy_from(path: &Path, offset: u64, out: LogSink<'_>) -> std::io::Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut buf = Vec::new();
    f.read_to_end(&mut buf).await?;
    out.write_all(&buf).await?;
    Ok(buf.len() as u64)
}

#[cfg(test)]
mod proptests;
