//! The [`JobBackend`] trait every platform implements, and the registry that builds one from a
//! [`Profile`].

use crate::config::{BackendKind, Profile};
use crate::error::{Error, Result};
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Check, Job, JobSpec, ListQuery, LogsRequest, QueueInfo,
    SpecRules,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use indicatif::ProgressBar;
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
}

/// Where `logs` writes: stdout in the CLI, a buffer in tests.
pub type LogSink<'a> = &'a mut (dyn AsyncWrite + Unpin + Send);

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
    /// among jobs created since `since`. Backends carry the key into the platform request
    /// (a job name, comment or argument) so a submission whose answer was lost can be found;
    /// those that cannot keep this default.
    async fn find_by_key(&self, _spec: &JobSpec, _since: DateTime<Utc>) -> Result<KeyLookup> {
        Ok(KeyLookup::Unsearchable)
    }

    /// Current state of one job; [`crate::error::ErrorKind::NotFound`] when it does not exist.
    async fn status(&self, id: &str) -> Result<Job>;

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
        _progress: &ProgressBar,
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

    /// Reachability, authentication and API version checks.
    async fn doctor(&self) -> Vec<Check>;
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

/// Builds the backend a profile names.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    use crate::backends;
    let backend: Arc<dyn JobBackend> = match ctx.profile.backend {
        BackendKind::Local => Arc::new(backends::local::LocalBackend::new(ctx)?),
        BackendKind::Cloudpss => backends::cloudpss::build(ctx)?,
        BackendKind::Ac => backends::ac::build(ctx)?,
        BackendKind::Octoplant => backends::octoplant::build(ctx)?,
        BackendKind::Nebula => backends::nebula::build(ctx)?,
        BackendKind::Slurm => backends::slurm::build(ctx)?,
    };
    Ok(backend)
}
