//! The submission path shared by `submit` and `batch`: exactly once across crashes and faults.
//!
//! Every submission is recorded in the ledger before it is sent. Its fate is then one of:
//! accepted (`submitted`), certainly refused (`failed`, the key is free again), or sent without
//! a usable answer (`unknown`: the platform may hold the job). A later submission of the same
//! key never sends an unknown one blindly: it asks the platform, through
//! [`crate::backend::JobBackend::find_by_key`], whether a job carrying the key exists — adopting
//! it when found, sending once when certainly absent, and reporting it as unknown when the
//! platform cannot be searched (unless the user asks to resubmit).

use crate::backend::KeyLookup;
use crate::error::{Error, ErrorKind, Result};
use crate::http::delivery;
use crate::ledger::{Begin, Entry, Ledger};
use crate::model::{Job, JobSpec, JobState};
use crate::session::{Bound, Session};
use std::future::Future;
use std::time::{Duration, Instant};

/// How long a submission waits for another process sending the same key right now.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(30);

/// What became of one submission.
// One value per line, dropped once printed: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Submission {
    /// Sent now and accepted.
    Sent(Job),
    /// The ledger already held this key as submitted (an earlier run or invocation).
    Earlier(Job),
    /// An earlier submission's outcome was unknown; the platform holds its job.
    Reconciled(Job),
    /// Sent, or sent earlier, without a usable answer: the platform may hold the job.
    Unknown(Error),
    /// Refused, or never sent.
    Failed(Error),
}

impl Submission {
    /// The batch outcome word (`submitted`, `skipped`, `reconciled`, `unknown`, `failed`).
    pub fn outcome(&self) -> &'static str {
        match self {
            Submission::Sent(_) => "submitted",
            Submission::Earlier(_) => "skipped",
            Submission::Reconciled(_) => "reconciled",
            Submission::Unknown(_) => "unknown",
            Submission::Failed(_) => "failed",
        }
    }

    /// The job, for the outcomes that have one.
    pub fn job(&self) -> Option<&Job> {
        match self {
            Submission::Sent(j) | Submission::Earlier(j) | Submission::Reconciled(j) => Some(j),
            Submission::Unknown(_) | Submission::Failed(_) => None,
        }
    }

    /// The error, for the outcomes without a job.
    pub fn error(&self) -> Option<&Error> {
        match self {
            Submission::Unknown(e) | Submission::Failed(e) => Some(e),
            _ => None,
        }
    }
}

/// Submits `spec` through the ledger (validated, recorded before sending, idempotent by key,
/// reconciled when an earlier outcome is unknown). `resubmit_unknown` sends again a key whose
/// outcome is unknown on a platform that cannot be searched.
pub async fn submit_spec(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    resubmit_unknown: bool,
) -> Submission {
    submit_spec_until(bound, spec, s, resubmit_unknown, None).await
}

/// [`submit_spec`] that gives up at `deadline` (`submit --wait --timeout`, counted from the
/// start of the command): a submission still without an answer then is recorded as unknown
/// and reported with a timeout error (exit 3), so a slow platform never stretches the
/// deadline.
pub async fn submit_spec_until(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    resubmit_unknown: bool,
    deadline: Option<Instant>,
) -> Submission {
    match submit_inner(bound, spec, s, resubmit_unknown, deadline).await {
        Ok(sub) => sub,
        Err(e) => Submission::Failed(in_profile(bound, e)),
    }
}

/// Runs `fut` until `deadline`: `None` when the deadline came first.
async fn until<F: Future>(deadline: Option<Instant>, fut: F) -> Option<F::Output> {
    match deadline {
        Some(d) => tokio::time::timeout_at(d.into(), fut).await.ok(),
        None => Some(fut.await),
    }
}

/// The error of a submission the `--timeout` deadline cut off: exit 3, saying what is known
/// of its fate.
fn deadline_error(bound: &Bound, spec: &JobSpec, what: &str) -> Error {
    let mut e = unknown_error(bound, spec, &format!("--timeout reached {what}"));
    e.kind = ErrorKind::Timeout;
    e
}

fn in_profile(bound: &Bound, e: Error) -> Error {
    e.in_profile(&bound.profile.name, bound.profile.backend.as_str())
        .during("submit")
}

async fn submit_inner(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    resubmit_unknown: bool,
    deadline: Option<Instant>,
) -> Result<Submission> {
    if !spec.uploads.is_empty()
        && !bound
            .backend
            .capabilities()
            .contains(&crate::model::Capability::Upload)
    {
        return Err(Error::not_supported(
            bound.profile.backend.as_str(),
            "submit --upload",
            "this platform has no file staging jobctl can use",
        ));
    }
    bound.backend.validate(spec)?;
    let ledger = s.ledger()?;
    let profile = &bound.profile.name;
    let mut entry = match ledger.begin(profile, bound.profile.backend.as_str(), spec)? {
        Begin::New(seq) => return Ok(send(bound, spec, s, &ledger, seq, deadline).await),
        Begin::Existing(entry) => entry,
    };
    same_spec(&entry, spec)?;
    let in_flight_until = Instant::now() + IN_FLIGHT_WAIT;
    // Another process (or another line of this batch) is sending the key right now: its
    // answer is the answer. Wait for it rather than racing it.
    while entry.in_flight() {
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(Submission::Unknown(deadline_error(
                bound,
                spec,
                "while another jobctl process was still sending it",
            )));
        }
        if Instant::now() >= in_flight_until {
            return Ok(Submission::Unknown(unknown_error(
                bound,
                spec,
                &format!(
                    "another jobctl process (pid {}) has been sending it since {}",
                    entry.pid.unwrap_or_default(),
                    entry.submitted_at.to_rfc3339()
                ),
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let key = spec.key.as_deref().unwrap_or_default();
        match ledger.by_key(profile, key)? {
            Some(e) => entry = e,
            // Refused meanwhile: its key is free, so this is a new submission.
            None => {
                return Box::pin(submit_inner(bound, spec, s, resubmit_unknown, deadline)).await;
            }
        }
    }
    match entry.status.as_str() {
        "submitted" => Ok(Submission::Earlier(
            earlier_job(bound, &entry, s, deadline).await,
        )),
        "failed" => Box::pin(submit_inner(bound, spec, s, resubmit_unknown, deadline)).await,
        _ => reconcile(bound, spec, s, &ledger, entry, resubmit_unknown, deadline).await,
    }
}

/// Refuses a key reused for another job: returning the earlier job would silently drop the
/// new spec.
fn same_spec(entry: &Entry, spec: &JobSpec) -> Result<()> {
    let new = serde_json::to_value(spec).map_err(|e| Error::io("job spec", e))?;
    if entry.spec == new {
        return Ok(());
    }
    let earlier = entry
        .reference
        .clone()
        .unwrap_or_else(|| format!("{}:(outcome unknown)", entry.profile));
    Err(Error::usage(format!(
        "key '{}' was already used for a different job spec ({earlier}, submitted {}); use another key, or the same spec to get that job back",
        entry.key.as_deref().unwrap_or_default(),
        entry.submitted_at.format("%Y-%m-%d %H:%M:%S UTC")
    )))
}

/// The job of an earlier accepted submission, as the platform sees it now.
async fn earlier_job(bound: &Bound, entry: &Entry, s: &Session, deadline: Option<Instant>) -> Job {
    let id = entry.id.clone().unwrap_or_default();
    let job = match until(deadline, bound.backend.status(&id)).await {
        Some(Ok(j)) => j,
        // The submission stands even when its job cannot be read right now.
        Some(Err(_)) | None => Job::new(id, JobState::Unknown, None),
    };
    s.finish_job(bound, job)
}

/// Settles a submission whose earlier outcome is unknown by asking the platform.
async fn reconcile(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    ledger: &Ledger,
    entry: Entry,
    resubmit_unknown: bool,
    deadline: Option<Instant>,
) -> Result<Submission> {
    let since = entry.submitted_at;
    let lookup = if spec.key.is_some() {
        match until(deadline, bound.backend.find_by_key(spec, since)).await {
            Some(found) => found,
            None => {
                mark_unknown(ledger, &entry)?;
                return Ok(Submission::Unknown(deadline_error(
                    bound,
                    spec,
                    "while looking up the key of an earlier submission whose outcome is unknown; run again to settle it",
                )));
            }
        }
    } else {
        Ok(KeyLookup::Unsearchable)
    };
    match lookup {
        Ok(KeyLookup::Found(job)) => {
            ledger.complete(entry.seq, &job.id)?;
            Ok(Submission::Reconciled(s.finish_job(bound, job)))
        }
        Ok(KeyLookup::Absent) => {
            resend(bound, spec, s, ledger, &entry, resubmit_unknown, deadline).await
        }
        Ok(KeyLookup::Unsearchable) if resubmit_unknown => {
            resend(bound, spec, s, ledger, &entry, resubmit_unknown, deadline).await
        }
        Ok(KeyLookup::Unsearchable) => {
            mark_unknown(ledger, &entry)?;
            Ok(Submission::Unknown(unknown_error(
                bound,
                spec,
                &format!(
                    "it was sent at {} without a usable answer, and the {} backend cannot look keys up; check `jobctl list`, then run again with --resubmit-unknown to send it again",
                    entry.submitted_at.to_rfc3339(),
                    bound.profile.backend
                ),
            )))
        }
        Err(e) => {
            mark_unknown(ledger, &entry)?;
            Ok(Submission::Unknown(unknown_error(
                bound,
                spec,
                &format!(
                    "it was sent at {} without a usable answer, and looking its key up failed: {}",
                    entry.submitted_at.to_rfc3339(),
                    e.message
                ),
            )))
        }
    }
}

/// A `sending` row of a dead process becomes `unknown`, so `history` tells the truth.
fn mark_unknown(ledger: &Ledger, entry: &Entry) -> Result<()> {
    if entry.status == "sending" {
        ledger.unknown(entry.seq, "the process sending it ended before its answer")?;
    }
    Ok(())
}

/// Claims the row (only one process may resend it) and sends it once more.
async fn resend(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    ledger: &Ledger,
    entry: &Entry,
    resubmit_unknown: bool,
    deadline: Option<Instant>,
) -> Result<Submission> {
    if !ledger.claim(entry)? {
        // Someone else claimed it between our read and now: start over and follow them.
        return Box::pin(submit_inner(bound, spec, s, resubmit_unknown, deadline)).await;
    }
    Ok(send(bound, spec, s, ledger, entry.seq, deadline).await)
}

/// Sends a recorded submission and records its fate.
async fn send(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    ledger: &Ledger,
    seq: i64,
    deadline: Option<Instant>,
) -> Submission {
    let (result, fate) = delivery::track(until(deadline, bound.backend.submit(spec))).await;
    let Some(result) = result else {
        // Cut off in flight: the platform may have acted on it, so its key is not freed.
        let e = deadline_error(
            bound,
            spec,
            &format!(
                "before the platform answered the submission; {}",
                rerun_hint(spec)
            ),
        );
        let _ = ledger.unknown(seq, &e.to_string());
        return Submission::Unknown(e);
    };
    match result {
        Ok(job) => {
            if let Err(e) = ledger.complete(seq, &job.id) {
                // The platform holds the job (and its key): report it, and say why a later
                // run may look it up again.
                tracing::warn!(
                    "job {} was accepted but the ledger could not record it: {e}",
                    job.id
                );
            }
            Submission::Sent(s.finish_job(bound, job))
        }
        Err(e) => {
            let e = in_profile(bound, e);
            if fate.outcome_unknown(e.kind) {
                let _ = ledger.unknown(seq, &e.to_string());
                Submission::Unknown(unknown_error(
                    bound,
                    spec,
                    &format!("{}; {}", e.message, rerun_hint(spec)),
                ))
            } else {
                let _ = ledger.fail(seq, &e.to_string());
                Submission::Failed(e)
            }
        }
    }
}

/// What to do about a submission whose outcome is unknown.
fn rerun_hint(spec: &JobSpec) -> &'static str {
    match &spec.key {
        Some(_) => "run again to look its key up on the platform",
        None => "it had no key, so check `jobctl list` before sending it again",
    }
}

/// The error of an unknown outcome: exit 7 (it may settle later), naming the key.
fn unknown_error(bound: &Bound, spec: &JobSpec, why: &str) -> Error {
    let what = match &spec.key {
        Some(k) => format!("the outcome of the submission with key '{k}' is unknown"),
        None => "the outcome of the submission is unknown".to_string(),
    };
    in_profile(
        bound,
        Error::new(ErrorKind::Platform, format!("{what}: {why}")),
    )
}
