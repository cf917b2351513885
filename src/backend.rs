//! The [`JobBackend`] trait every platform implements, and the registry that builds one from a
//! [`Profile`].

use crate::config::{BackendKind, Profile};
use crate::error::{Error, Result};
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Check, Job, JobSpec, ListQuery, LogsRequest, ProgressFn,
    QueueInfo, SpecRules,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWrite;

/// What the platform knows about a submission's idempotency key ([`JobBackend::find_by_key`]).
// One value per lookup, never stored in bulk: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum KeyLookup {
    /// The platform holds a job carrying the key: that is the submission's job.
    Found(Job),
    /// The platform certainly holds no job carrying the key.
    Absent,
    /// The platform cannot be searched by key (it stores no caller value, or lists no jobs).
    Unsearchable,
    /// The platform was searched but cannot tell whether it holds the job; the text says why
    /// (e.g. jobs no recorded submission accounts for were created around its send time).
    Undecided(String),
}

/// One key to look up ([`JobBackend::find_by_keys`]): the spec carrying it and when its
/// submission was recorded (by this machine's clock).
#[derive(Debug, Clone, Copy)]
pub struct KeyQuery<'a> {
    /// The spec as submitted, with its key.
    pub spec: &'a JobSpec,
    /// When the submission was recorded, before it was sent.
    pub since: DateTime<Utc>,
}

/// Whether the ledger already holds a job id of this profile as some submission's job; lets a
/// backend whose jobs carry no key tell such jobs from ones no submission accounts for.
pub type KnownJob<'a> = &'a (dyn Fn(&str) -> bool + Send + Sync);

/// Where `logs` writes: stdout in the CLI, a buffer in tests.
pub type LogSink<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

/// Where `doctor` hands each [`Check`] the moment it is known, so a check that hangs does not
/// hold back the news of the ones before it.
pub type CheckSink<'a> = &'a mut (dyn FnMut(Check) + Send);

/// Runs `doctor` to the end and returns its checks in order, for callers that want them all
/// at once rather than as they come (tests, library users).
pub async fn collect_checks(backend: &(impl JobBackend + ?Sized)) -> Vec<Check> {
    let mut checks = Vec::new();
    backend.doctor(&mut |c| checks.push(c)).await;
    checks
}

/// One platform behind jobctl. Object-safe: the CLI holds an `Arc<dyn JobBackend>`.
///
/// Contract for implementers:
/// - Return [`Job`]s with `id`, `state`, `native_state` and whatever else the platform knows;
///   the session stamps `ref`, `profile` and `backend` afterwards.
/// - Never panic on platform input; classify failures with [`crate::error::ErrorKind`].
/// - Use [`crate::http`] for every request so retries, backoff and token renewal stay in one
///   place.
/// - An operation the platform lacks keeps its default body, which returns a typed
///   "not supported" error (exit 8).
#[async_trait]
pub trait JobBackend: Send + Sync + fmt::Debug {
    /// The backend's name (`local`, `cloudpss`, …).
    fn name(&self) -> &'static str;

    /// Operations this backend offers.
    fn capabilities(&self) -> Capabilities;

    /// What a job spec may contain for this backend.
    fn spec_rules(&self) -> SpecRules;

    /// Checks a spec before anything is sent; the default applies [`Self::spec_rules`].
    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(self.name(), spec)
    }

    /// Submits one job (already validated) and returns it with its id.
    async fn submit(&self, spec: &JobSpec) -> Result<Job>;

    /// Looks for the job an earlier submission of `spec` (with its idempotency key) created,
    /// given that it was recorded (by this machine's clock) at `since`. Backends carry the key into the platform request
    /// (a job name, comment or argument) so a submission whose answer was lost can be found;
    /// those that cannot keep this default.
    async fn find_by_key(&self, _spec: &JobSpec, _since: DateTime<Utc>) -> Result<KeyLookup> {
        Ok(KeyLookup::Unsearchable)
    }

    /// Looks up many keys at once, one result per query in the same order: what a re-run
    /// settling many unknown submissions calls, so the platform is listed once per profile
    /// rather than once per key. `known` tells jobs the ledger already accounts for. The
    /// default asks [`Self::find_by_key`] for each query.
    async fn find_by_keys(
        &self,
        queries: &[KeyQuery<'_>],
        _known: KnownJob<'_>,
    ) -> Vec<Result<KeyLookup>> {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            out.push(self.find_by_key(q.spec, q.since).await);
        }
        out
    }

    /// Current state of one job; [`crate::error::ErrorKind::NotFound`] when it does not exist.
    async fn status(&self, id: &str) -> Result<Job>;

    /// The most ids worth one [`Self::statuses`] call: a backend that asks the platform about
    /// ids a page at a time says its page size, so a watch of thousands of jobs asks (and holds
    /// the full answers for) one page at a time. The default: every id at once (one listing).
    fn status_batch(&self) -> usize {
        usize::MAX
    }

    /// Current state of many jobs, one result per id in the same order. The default asks one by
    /// one; backends with a list endpoint override this with one request per page.
    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.push(self.status(id).await);
        }
        out
    }

    /// Jobs of this profile, newest first.
    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>>;

    /// Option keys `list --opt` accepts for this backend (none by default).
    fn list_options(&self) -> &'static [&'static str] {
        &[]
    }

    /// Requests cancellation of one job.
    async fn abort(&self, id: &str) -> Result<AbortOutcome>;

    /// Called once before a wait starts polling this profile. Backends that learn progress
    /// out of band (CloudPSS output streams) start following it then, so one-shot reads such
    /// as `status` never pay for it.
    fn begin_watch(&self) {}

    /// `abort --force`: stops the job at once, without the grace period a normal cancellation
    /// gives it, where the platform can.
    async fn abort_force(&self, _id: &str) -> Result<AbortOutcome> {
        Err(Error::not_supported(
            self.name(),
            "abort --force",
            "the platform has no forced cancellation; use `abort` without --force",
        ))
    }

    /// Writes the job's output (or error stream) to `out`; with `follow`, until the job ends.
    async fn logs(&self, _id: &str, _req: LogsRequest, _out: LogSink<'_>) -> Result<()> {
        Err(Error::not_supported(
            self.name(),
            "logs",
            "the platform exposes no job output",
        ))
    }

    /// Downloads the job's artifacts into `dest` (an existing directory).
    async fn fetch(
        &self,
        _id: &str,
        _dest: &Path,
        _progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        Err(Error::not_supported(
            self.name(),
            "fetch",
            "the platform exposes no artifacts",
        ))
    }

    /// The queues / partitions / job policies this profile may submit to, with their limits.
    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        Err(Error::not_supported(
            self.name(),
            "queues",
            "the platform has no queues jobctl can list",
        ))
    }

    /// Obtains and caches a token; returns a short description ("token valid until …").
    async fn login(&self) -> Result<String> {
        Err(Error::not_supported(
            self.name(),
            "login",
            "this backend needs no credentials",
        ))
    }

    /// Forgets the cached token.
    async fn logout(&self) -> Result<()> {
        Err(Error::not_supported(
            self.name(),
            "logout",
            "this backend needs no credentials",
        ))
    }

    /// Reachability, authentication and API version checks, each handed to `report` as soon as
    /// it is decided rather than all at the end.
    async fn doctor(&self, report: CheckSink<'_>);
}

/// What a backend constructor gets: its profile and where it may keep state.
#[derive(Debug, Clone)]
pub struct BackendContext {
    /// The resolved profile (URL, credentials, options).
    pub profile: Profile,
    /// The state directory (ledger, token cache, local jobs).
    pub state_dir: PathBuf,
}

impl BackendContext {
    /// Directory for this profile's caches (tokens, discovery results), created on demand.
    pub fn cache_dir(&self) -> PathBuf {
        self.state_dir.join("cache")
    }

    /// The profile's base URL, or a usage error naming the variable to set.
    pub fn require_url(&self, env_hint: &str) -> Result<url::Url> {
        let raw = self.profile.url.as_deref().ok_or_else(|| {
            Error::usage(format!(
                "profile '{}' has no URL: set {env_hint} or `url` in the config file",
                self.profile.name
            ))
        })?;
        url::Url::parse(raw).map_err(|e| {
            Error::usage(format!(
                "profile '{}': invalid URL '{raw}': {e}",
                self.profile.name
            ))
        })
    }
}

/// Builds the backend a profile names. Every error it returns names the profile, the backend
/// and the operation: that context is attached here, once for every backend, so neither the
/// backends nor the commands attach it themselves.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    use crate::backends;
    let profile = ctx.profile.name.clone();
    let kind = ctx.profile.backend;
    let built: Result<Arc<dyn JobBackend>> = match kind {
        BackendKind::Local => {
            backends::local::LocalBackend::new(ctx).map(|b| Arc::new(b) as Arc<dyn JobBackend>)
        }
        BackendKind::Cloudpss => backends::cloudpss::build(ctx),
        BackendKind::Ac => backends::ac::build(ctx),
        BackendKind::Octoplant => backends::octoplant::build(ctx),
        BackendKind::Nebula => backends::nebula::build(ctx),
        BackendKind::Slurm => backends::slurm::build(ctx),
    };
    let backend = built.map_err(|e| e.in_profile(&profile, kind.as_str()))?;
    Ok(Arc::new(InContext {
        inner: backend,
        profile,
    }))
}

/// A backend whose errors carry their context (profile, backend, operation).
#[derive(Debug)]
struct InContext {
    inner: Arc<dyn JobBackend>,
    profile: String,
}

impl InContext {
    fn ctx(&self, operation: &'static str) -> impl Fn(Error) -> Error + '_ {
        move |e| {
            e.in_profile(&self.profile, self.inner.name())
                .during(operation)
        }
    }
}

#[async_trait]
impl JobBackend for InContext {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn spec_rules(&self) -> SpecRules {
        self.inner.spec_rules()
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.inner.validate(spec).map_err(self.ctx("submit"))
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        self.inner.submit(spec).await.map_err(self.ctx("submit"))
    }

    async fn find_by_key(&self, spec: &JobSpec, since: DateTime<Utc>) -> Result<KeyLookup> {
        let r = self.inner.find_by_key(spec, since).await;
        r.map_err(self.ctx("submit"))
    }

    async fn find_by_keys(
        &self,
        queries: &[KeyQuery<'_>],
        known: KnownJob<'_>,
    ) -> Vec<Result<KeyLookup>> {
        let ctx = self.ctx("submit");
        let results = self.inner.find_by_keys(queries, known).await;
        results.into_iter().map(|r| r.map_err(&ctx)).collect()
    }

    async fn status(&self, id: &str) -> Result<Job> {
        self.inner.status(id).await.map_err(self.ctx("status"))
    }

    fn status_batch(&self) -> usize {
        self.inner.status_batch()
    }

    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        let ctx = self.ctx("status");
        let results = self.inner.statuses(ids).await;
        results.into_iter().map(|r| r.map_err(&ctx)).collect()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        self.inner.list(query).await.map_err(self.ctx("list"))
    }

    fn list_options(&self) -> &'static [&'static str] {
        self.inner.list_options()
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        self.inner.abort(id).await.map_err(self.ctx("abort"))
    }

    fn begin_watch(&self) {
        self.inner.begin_watch()
    }

    async fn abort_force(&self, id: &str) -> Result<AbortOutcome> {
        self.inner.abort_force(id).await.map_err(self.ctx("abort"))
    }

    async fn logs(&self, id: &str, req: LogsRequest, out: LogSink<'_>) -> Result<()> {
        self.inner
            .logs(id, req, out)
            .await
            .map_err(self.ctx("logs"))
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let r = self.inner.fetch(id, dest, progress).await;
        r.map_err(self.ctx("fetch"))
    }

    async fn queues(&self) -> Result<Vec<QueueInfo>> {
        self.inner.queues().await.map_err(self.ctx("queues"))
    }

    async fn login(&self) -> Result<String> {
        self.inner.login().await.map_err(self.ctx("login"))
    }

    async fn logout(&self) -> Result<()> {
        self.inner.logout().await.map_err(self.ctx("logout"))
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        self.inner.doctor(report).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Profile;

    #[tokio::test]
    async fn errors_name_profile_backend_and_operation_once() {
        let dir = tempfile::tempdir().unwrap();
        let b = build(BackendContext {
            profile: Profile::new("mine", BackendKind::Local),
            state_dir: dir.path().to_path_buf(),
        })
        .unwrap();
        let e = b.status("424242").await.unwrap_err();
        assert_eq!(e.profile.as_deref(), Some("mine"));
        assert_eq!(e.backend.as_deref(), Some("local"));
        assert_eq!(e.operation.as_deref(), Some("status"));
        let text = e.to_string();
        assert!(
            text.starts_with("[profile mine, backend local, status] "),
            "{text}"
        );
        assert_eq!(text.matches("profile mine").count(), 1, "{text}");
        let e = b.abort("424242").await.unwrap_err();
        assert_eq!(e.operation.as_deref(), Some("abort"));
    }
}
