//! The octoplant backend: export orders of an octoplant server (`/v1/order`) as jobs.
//!
//! An order is submitted with the kinds to export, polled until `done`, and its result is a
//! ZIP archive streamed to disk by `fetch`. The platform cannot list orders, so `list` shows
//! the orders this machine submitted (from the ledger) with their current state.

pub mod api;
pub mod auth;
pub mod mapping;

use crate::backend::{BackendContext, CheckSink, JobBackend};
use crate::error::{Error, ErrorKind, Result};
use crate::ledger::Ledger;
use crate::model::{
    AbortOutcome, Artifact, Capabilities, Capability, Check, CommandRule, FetchProgress, Job,
    JobSpec, JobState, ListQuery, ProgressFn, SpecRules,
};
use api::{Api, BACKEND};
use async_trait::async_trait;
use futures::StreamExt;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;

/// How many orders `list` and `statuses` query at once.
const CONCURRENCY: usize = 8;

/// Builds the octoplant backend for a profile.
pub fn build(ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Ok(Arc::new(OctoplantBackend::new(ctx)?))
}

/// Export orders of one octoplant server.
#[derive(Debug)]
pub struct OctoplantBackend {
    ctx: BackendContext,
    api: Api,
}

impl OctoplantBackend {
    /// A backend for the context's profile; sends nothing yet.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        let base = ctx.require_url("OCTOPLANT_URL")?;
        let api = Api::new(&ctx.profile, base, &ctx.cache_dir())?;
        Ok(OctoplantBackend { ctx, api })
    }

    async fn order(&self, id: &str) -> Result<Job> {
        let op = self.api.get_order(id).await?;
        Ok(mapping::job_from_operation(id, &op))
    }

    /// The error for fetching an order that has no archive (yet): exit 6, naming its state.
    fn nothing_to_fetch(job: &Job) -> Error {
        let native = job.native_state.as_deref().unwrap_or("no state");
        let why = match job.state {
            JobState::Failed | JobState::Canceled => format!(
                "it ended {} ({native}){} and produced no export",
                job.state.as_str(),
                job.reason
                    .as_deref()
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ),
            state => {
                let progress = job
                    .progress
                    .map(|p| format!(", {:.0}% done", p * 100.0))
                    .unwrap_or_default();
                format!(
                    "it is {} ({native}{progress}); try again once it has succeeded, e.g. after `jobctl wait`",
                    state.as_str()
                )
            }
        };
        Error::not_found(format!(
            "export order {} has nothing to download: {why}",
            job.id
        ))
    }

    /// Streams the order's archive into `dest`, returning the artifact.
    async fn download_to(
        &self,
        id: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Artifact> {
        let resp = match self.api.download(id).await {
            Ok(r) => r,
            // The order may have been listed as succeeded a moment ago, yet the server still
            // refuses: say what state it is in.
            Err(e) if e.code.as_deref() == Some("9") => {
                let job = self.order(id).await?;
                return Err(Self::nothing_to_fetch(&job));
            }
            Err(e) => return Err(e),
        };
        let served = resp
            .headers()
            .get(reqwest::header::CONTENT_DISPOSITION)
            .and_then(|v| v.to_str().ok())
            .and_then(mapping::disposition_file_name)
            .and_then(|n| mapping::sanitize_file_name(&n));
        let name = served.unwrap_or_else(|| {
            let stem = mapping::sanitize_file_name(id).unwrap_or_else(|| "export".into());
            format!("{stem}.zip")
        });
        let expected = resp.content_length();
        if let Some(len) = expected {
            progress(FetchProgress::Expect(len));
        }
        let final_path = dest.join(&name);
        let part = dest.join(format!(".{name}.part"));
        let result = self
            .stream_to(resp, &part, expected, progress)
            .await
            .and_then(|bytes| {
                let entries = zip_entries(&part).map_err(|e| {
                    Error::protocol(format!(
                        "the download of order {id} is not a ZIP archive: {e}"
                    ))
                })?;
                Ok((bytes, entries))
            });
        let (bytes, entries) = match result {
            Ok(x) => x,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&part, &final_path)
            .await
            .map_err(|e| Error::io(final_path.display(), e))?;
        Ok(Artifact {
            name,
            path: final_path,
            bytes,
            entries,
        })
    }

    async fn stream_to(
        &self,
        resp: reqwest::Response,
        part: &PathBuf,
        expected: Option<u64>,
        progress: ProgressFn<'_>,
    ) -> Result<u64> {
        let mut file = tokio::fs::File::create(part)
            .await
            .map_err(|e| Error::io(part.display(), e))?;
        let mut stream = resp.bytes_stream();
        let mut written = 0u64;
        let stall = self.api.timeout();
        loop {
            let next = tokio::time::timeout(stall, stream.next())
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "download stalled: no data for {}s after {written} bytes",
                        stall.as_secs()
                    ))
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|e| self.api.http().transport_error(&e))?;
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::io(part.display(), e))?;
            written += chunk.len() as u64;
            progress(FetchProgress::Done(chunk.len() as u64));
        }
        file.flush()
            .await
            .map_err(|e| Error::io(part.display(), e))?;
        file.sync_all()
            .await
            .map_err(|e| Error::io(part.display(), e))?;
        if let Some(len) = expected {
            if len != written {
                return Err(Error::unavailable(format!(
                    "download truncated: got {written} of {len} bytes"
                )));
            }
        }
        Ok(written)
    }
}

/// The entry names of a ZIP file; fails when it is not one.
fn zip_entries(path: &Path) -> std::result::Result<Vec<String>, String> {
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let archive = zip::ZipArchive::new(std::io::BufReader::new(file)).map_err(|e| e.to_string())?;
    Ok(archive.file_names().map(String::from).collect::<Vec<_>>()).map(|mut v| {
        v.sort();
        v
    })
}

#[async_trait]
impl JobBackend for OctoplantBackend {
    fn name(&self) -> &'static str {
        BACKEND
    }

    fn capabilities(&self) -> Capabilities {
        [
            Capability::Submit,
            Capability::Status,
            Capability::List,
            Capability::Abort,
            Capability::Fetch,
            Capability::Login,
        ]
        .into_iter()
        .collect()
    }

    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Forbidden,
            args: false,
            options: &["exports", "export"],
            required_options: &[],
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(self.name(), spec)?;
        mapping::export_contents(spec).map(|_| ())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        let contents = mapping::export_contents(spec)?;
        let op = self.api.run_export(&contents).await?;
        let Some(name) = op.name.clone().filter(|n| !n.trim().is_empty()) else {
            return Err(Error::protocol(
                "the server accepted the export order but returned no order name",
            ));
        };
        if name.chars().any(char::is_whitespace) {
            return Err(Error::protocol(format!(
                "the server returned an order name with whitespace: '{name}'"
            )));
        }
        let mut job = mapping::job_from_operation(&name, &op);
        job.name = spec.name.clone();
        job.created_at = Some(chrono::Utc::now());
        job.extra.insert(
            "exports".into(),
            Value::Array(contents.keys().cloned().map(Value::String).collect()),
        );
        Ok(job)
    }

    async fn status(&self, id: &str) -> Result<Job> {
        self.order(id).await
    }

    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        // No batch endpoint: bounded concurrency keeps many references quick without
        // flooding the server.
        let queries: Vec<_> = ids.iter().map(|id| self.status(id)).collect();
        futures::stream::iter(queries)
            .buffered(CONCURRENCY)
            .collect()
            .await
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        let profile = self.ctx.profile.name.clone();
        let state_dir = self.ctx.state_dir.clone();
        // With a state filter the ledger's newest N may not hold N matches: read it all.
        let ledger_limit = if query.states.is_empty() {
            query.limit
        } else {
            None
        };
        let entries = tokio::task::spawn_blocking(move || {
            Ledger::open(&state_dir)?.for_profile(&profile, ledger_limit)
        })
        .await
        .map_err(|e| Error::io("ledger", e))??;
        let entries: Vec<_> = entries
            .into_iter()
            .filter(|e| e.backend == BACKEND && e.id.is_some())
            .collect();
        let results: Vec<Result<Job>> = futures::stream::iter(entries)
            .map(|entry| async move {
                let id = entry.id.clone().unwrap_or_default();
                let mut job = match self.order(&id).await {
                    Ok(job) => job,
                    // Servers forget old orders; the ledger still remembers them.
                    Err(e) if e.kind == ErrorKind::NotFound => {
                        let mut j = Job::new(id.clone(), JobState::Unknown, None);
                        j.reason = Some(format!(
                            "the server no longer knows this order ({})",
                            e.message
                        ));
                        j
                    }
                    Err(e) => return Err(e),
                };
                if job.name.is_none() {
                    job.name = entry.name.clone();
                }
                job.created_at.get_or_insert(entry.submitted_at);
                if let Some(kinds) = mapping::kinds_of_spec(&entry.spec) {
                    job.extra.entry("exports").or_insert(kinds);
                }
                Ok(job)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        let mut jobs = Vec::new();
        for r in results {
            let job = r?;
            if query.wants(job.state) {
                jobs.push(job);
            }
        }
        if let Some(limit) = query.limit {
            jobs.truncate(limit);
        }
        Ok(jobs)
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        // Whether cancelling a finished order is an error is undocumented: look first.
        let job = self.order(id).await?;
        if job.terminal {
            return Ok(AbortOutcome::AlreadyTerminal);
        }
        match self.api.cancel(id).await {
            Ok(()) => Ok(AbortOutcome::Requested),
            Err(e) if e.code.as_deref() == Some("9") => {
                // It finished between the two requests.
                let job = self.order(id).await?;
                if job.terminal {
                    Ok(AbortOutcome::AlreadyTerminal)
                } else {
                    Err(e)
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let job = self.order(id).await?;
        if job.state != JobState::Succeeded {
            return Err(Self::nothing_to_fetch(&job));
        }
        tokio::fs::create_dir_all(dest)
            .await
            .map_err(|e| Error::io(dest.display(), e))?;
        let artifact = self.download_to(id, dest, progress).await?;
        Ok(vec![artifact])
    }

    async fn login(&self) -> Result<String> {
        let token = self.api.grant().await?;
        let until = token.expires_at;
        self.api.tokens().put(token).await?;
        let who = self.api.username().unwrap_or("?");
        Ok(match until {
            Some(t) => format!(
                "logged in as {who}; token valid until {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => format!("logged in as {who}; the server gave no token lifetime"),
        })
    }

    async fn logout(&self) -> Result<()> {
        self.api.tokens().clear().await.map(|_| ())
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        let base = self.api.url(&[]);
        let raw = match self.api.api_version_raw().await {
            Ok(r) => {
                report(Check::pass(
                    "reachability",
                    format!("{base} answered (HTTP {})", r.status.as_u16()),
                ));
                Some(r)
            }
            Err(e) => {
                report(Check::fail(
                    "reachability",
                    format!("{base}: {}", e.message),
                ));
                return;
            }
        };
        let authed = match self.login().await {
            Ok(msg) => {
                let client = self.api.client_id().unwrap_or("?");
                report(Check::pass(
                    "authentication",
                    format!("{msg} (client {client})"),
                ));
                true
            }
            Err(e) => {
                report(Check::fail("authentication", e.message));
                false
            }
        };
        let version = match raw {
            Some(r) if r.status.is_success() => api::version_of(&r),
            _ if authed => self.api.api_version().await,
            Some(r) => Err(api::classify(r.status, &r.body)),
            None => Err(Error::unavailable("no answer")),
        };
        report(match version {
            Ok(v) if v.starts_with("1.") => Check::pass(
                "api version",
                format!("{v} (jobctl speaks the v1 export API)"),
            ),
            Ok(v) => Check::fail(
                "api version",
                format!("{v}: jobctl was written for API 1.x; results may differ"),
            ),
            Err(e) => Check::fail("api version", e.message),
        });
    }
}

#[cfg(test)]
mod proptests;
