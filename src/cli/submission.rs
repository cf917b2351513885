//! The submission path shared by `submit` and `batch`: exactly once across crashes and faults.
//!
//! Every submission is recorded in the ledger before it is sent. Its fate is then one of:
//! accepted (`submitted`), certainly refused (`failed`, the key is free again), or sent without
//! a usable answer (`unknown`: the platform may hold the job). A later submission of the same
//! key never sends an unknown one blindly: it asks the platform, through
//! [`crate::backend::JobBackend::find_by_keys`], whether a job carrying the key exists — adopting
//! it when found, sending once when certainly absent, and reporting it as unknown when the
//! platform cannot be searched or cannot tell (unless the user asks to resubmit). `batch` asks
//! about all its unsettled lines at once ([`prefetch`]), one listing per profile.

use crate::backend::{KeyLookup, KeyQuery};
use crate::error::{Error, ErrorKind, Result};
use crate::http::delivery;
use crate::ledger::{Begin, Entry, Ledger};
use crate::model::{Job, JobSpec, JobState};
use crate::session::{Bound, Session};
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

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

    /// The job, taken out (for the outcomes with one).
    pub fn into_job(self) -> Option<Job> {
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

/// Key lookups made ahead of a batch's submissions ([`prefetch`]): one platform listing per
/// profile instead of one per unsettled line. Each answer settles the line it was asked for,
/// once.
#[derive(Debug, Default)]
pub struct Lookups {
    /// By profile and key: the ledger row looked up (its `seq`) and the platform's answer.
    answers: Mutex<HashMap<(String, String), Answer>>,
}

/// A looked-up ledger row (its `seq`) and the platform's answer about its key.
type Answer = (i64, Result<KeyLookup>);

impl Lookups {
    /// The answer for this ledger row, if one was fetched for it (and not used yet).
    fn take(&self, profile: &str, key: &str, seq: i64) -> Option<Result<KeyLookup>> {
        let mut answers = self.answers.lock().ok()?;
        let k = (profile.to_string(), key.to_string());
        match answers.get(&k) {
            Some((s, _)) if *s == seq => answers.remove(&k).map(|(_, r)| r),
            _ => None,
        }
    }
}

/// Looks up, in one pass per profile, every line whose key the ledger holds with an unsettled
/// outcome (`unknown`, or `sending` by a process that died). Lines without such a key, and any
/// profile whose ledger read or listing fails, are left to the per-line path.
pub async fn prefetch(s: &Session, lines: &[(&Bound, &JobSpec)]) -> Lookups {
    let lookups = Lookups::default();
    let Ok(ledger) = s.ledger() else {
        return lookups;
    };
    let mut by_profile: BTreeMap<&str, (&Bound, Vec<&JobSpec>)> = BTreeMap::new();
    for (bound, spec) in lines {
        if spec.key.is_some() {
            by_profile
                .entry(bound.profile.name.as_str())
                .or_insert_with(|| (bound, Vec::new()))
                .1
                .push(spec);
        }
    }
    for (profile, (bound, specs)) in by_profile {
        let Ok(unsettled) = ledger.unsettled(profile) else {
            continue;
        };
        let unsettled: HashMap<&str, &Entry> = unsettled
            .iter()
            .filter(|e| !e.in_flight())
            .filter_map(|e| e.key.as_deref().map(|k| (k, e)))
            .collect();
        let picked: Vec<(&JobSpec, &Entry)> = specs
            .into_iter()
            .filter_map(|spec| {
                let entry = unsettled.get(spec.key.as_deref()?)?;
                same_spec(entry, spec).ok().map(|_| (spec, *entry))
            })
            .collect();
        if picked.is_empty() {
            continue;
        }
        let queries: Vec<KeyQuery<'_>> = picked
            .iter()
            .map(|(spec, e)| KeyQuery {
                spec,
                since: e.submitted_at,
            })
            .collect();
        let known = |id: &str| ledger.get(profile, id).ok().flatten().is_some();
        let results = bound.backend.find_by_keys(&queries, &known).await;
        if let Ok(mut answers) = lookups.answers.lock() {
            for ((_, entry), r) in picked.iter().zip(results) {
                let key = entry.key.clone().unwrap_or_default();
                answers.insert((profile.to_string(), key), (entry.seq, r));
            }
        }
    }
    lookups
}

/// Submits `spec` through the ledger (validated, recorded before sending, idempotent by key,
/// reconciled when an earlier outcome is unknown), as `opts` says.
pub async fn submit_spec(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    opts: SubmitOptions<'_>,
) -> Submission {
    finish(bound, submit_inner(bound, spec, s, opts).await)
}

fn finish(bound: &Bound, r: Result<Submission>) -> Submission {
    match r {
        Ok(sub) => sub,
        Err(e) => Submission::Failed(in_profile(bound, e)),
    }
}

/// Runs `fut` until `deadline`; `None` when the deadline came first.
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
    flags: SubmitOptions<'_>,
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
    if !flags.validated {
        bound.backend.validate(spec)?;
    }
    let ledger = s.ledger()?;
    let profile = &bound.profile.name;
    let mut entry = match ledger
        .begin(profile, bound.profile.backend.as_str(), spec)
        .await?
    {
        Begin::New(seq) => return Ok(send(bound, spec, s, &ledger, seq, flags).await),
        Begin::Existing(entry) => entry,
    };
    same_spec(&entry, spec)?;
    let deadline = tokio::time::Instant::now() + IN_FLIGHT_WAIT;
    // Another process (or another line of this batch) is sending the key right now: its
    // answer is the answer. Wait for it rather than racing it.
    while entry.in_flight() {
        if tokio::time::Instant::now() >= deadline {
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
            None => return Box::pin(submit_inner(bound, spec, s, flags)).await,
        }
    }
    match entry.status.as_str() {
        "submitted" => Ok(Submission::Earlier(
            earlier_job(bound, &entry, s, flags).await,
        )),
        "failed" => Box::pin(submit_inner(bound, spec, s, flags)).await,
        _ => reconcile(bound, spec, s, &ledger, entry, flags).await,
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
async fn earlier_job(bound: &Bound, entry: &Entry, s: &Session, flags: SubmitOptions<'_>) -> Job {
    let id = entry.id.clone().unwrap_or_default();
    let read = in_slot(flags.gate, bound.backend.status(&id));
    let job = match until(flags.deadline, read).await {
        Some(Some(Ok(j))) => j,
        // The submission stands even when its job cannot be read right now (or the run was
        // interrupted before it was asked).
        _ => Job::new(id, JobState::Unknown, None),
    };
    s.finish_job(bound, job)
}

/// How one submission is made; the default is a lone `submit`.
#[derive(Clone, Copy, Default)]
pub struct SubmitOptions<'a> {
    /// Send again a key whose outcome is unknown on a platform that cannot be searched
    /// (`--resubmit-unknown`).
    pub resubmit_unknown: bool,
    /// Answers looked up ahead for unsettled keys ([`prefetch`]): an unknown earlier outcome
    /// found there is settled without asking the platform again.
    pub lookups: Option<&'a Lookups>,
    /// `submit --wait --timeout` (counted from the start of the command): a submission still
    /// without an answer then is recorded as unknown and reported with a timeout error
    /// (exit 3), so a slow platform never stretches the deadline.
    pub deadline: Option<Instant>,
    /// The profile's platform slots (`batch` and pipelines): a permit is held only while the
    /// platform is asked (the submission, a key lookup, the status of an earlier job), so the
    /// ledger writes on either side of the request overlap other lines' requests instead of
    /// holding a slot idle. A submission that reaches a closed gate (the run was interrupted)
    /// is not sent: its ledger row is marked refused, which frees its key, and it ends
    /// `Failed` with an `Interrupted` error; a key lookup not yet made leaves its row unknown
    /// for the next run, and ends the same way.
    pub gate: Option<&'a Semaphore>,
    /// The caller validated the spec already (`batch` checks every line before sending any).
    pub validated: bool,
}

/// Asks the platform about one key (when no answer was looked up ahead).
async fn look_up(
    bound: &Bound,
    spec: &JobSpec,
    ledger: &Ledger,
    entry: &Entry,
) -> Result<KeyLookup> {
    let profile = bound.profile.name.as_str();
    let query = [KeyQuery {
        spec,
        since: entry.submitted_at,
    }];
    let known = |id: &str| ledger.get(profile, id).ok().flatten().is_some();
    let mut found = bound.backend.find_by_keys(&query, &known).await;
    found.pop().unwrap_or(Ok(KeyLookup::Unsearchable))
}

/// Settles a submission whose earlier outcome is unknown by asking the platform.
async fn reconcile(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    ledger: &Ledger,
    entry: Entry,
    flags: SubmitOptions<'_>,
) -> Result<Submission> {
    let resubmit_unknown = flags.resubmit_unknown;
    let lookup = match spec.key.as_deref() {
        None => Ok(KeyLookup::Unsearchable),
        Some(key) => match flags
            .lookups
            .and_then(|l| l.take(&bound.profile.name, key, entry.seq))
        {
            Some(answer) => answer,
            None => match until(
                flags.deadline,
                in_slot(flags.gate, look_up(bound, spec, ledger, &entry)),
            )
            .await
            {
                Some(Some(found)) => found,
                Some(None) => {
                    mark_unknown(ledger, &entry).await?;
                    return Ok(Submission::Failed(Error::new(
                        ErrorKind::Interrupted,
                        "interrupted before its key was looked up; a re-run settles it",
                    )));
                }
                None => {
                    mark_unknown(ledger, &entry).await?;
                    return Ok(Submission::Unknown(deadline_error(
                        bound,
                        spec,
                        "while looking up the key of an earlier submission whose outcome is unknown; run again to settle it",
                    )));
                }
            },
        },
    };
    match lookup {
        Ok(KeyLookup::Found(job)) => {
            ledger.complete(entry.seq, &job.id).await?;
            Ok(Submission::Reconciled(s.finish_job(bound, job)))
        }
        Ok(KeyLookup::Absent) => resend(bound, spec, s, ledger, &entry, flags).await,
        Ok(KeyLookup::Unsearchable | KeyLookup::Undecided(_)) if resubmit_unknown => {
            resend(bound, spec, s, ledger, &entry, flags).await
        }
        Ok(KeyLookup::Undecided(why)) => {
            mark_unknown(ledger, &entry).await?;
            Ok(Submission::Unknown(unknown_error(
                bound,
                spec,
                &format!(
                    "it was sent at {} without a usable answer, and {why}; check `jobctl list`, then run again with --resubmit-unknown to send it again",
                    entry.submitted_at.to_rfc3339(),
                ),
            )))
        }
        Ok(KeyLookup::Unsearchable) => {
            mark_unknown(ledger, &entry).await?;
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
            mark_unknown(ledger, &entry).await?;
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
async fn mark_unknown(ledger: &Ledger, entry: &Entry) -> Result<()> {
    if entry.status == "sending" {
        ledger
            .unknown(entry.seq, "the process sending it ended before its answer")
            .await?;
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
    flags: SubmitOptions<'_>,
) -> Result<Submission> {
    if !ledger.claim(entry)? {
        // Someone else claimed it between our read and now: start over and follow them.
        return Box::pin(submit_inner(bound, spec, s, flags)).await;
    }
    Ok(send(bound, spec, s, ledger, entry.seq, flags).await)
}

/// Runs `fut` holding one of the profile's platform slots, when there is a gate (see
/// [`SubmitOptions::gate`]); `None`, without running it, when the gate was closed because
/// the run was interrupted.
async fn in_slot<F: Future>(gate: Option<&Semaphore>, fut: F) -> Option<F::Output> {
    let _permit = match gate {
        Some(gate) => Some(gate.acquire().await.ok()?),
        None => None,
    };
    Some(fut.await)
}

/// Sends a recorded submission and records its fate.
async fn send(
    bound: &Bound,
    spec: &JobSpec,
    s: &Session,
    ledger: &Ledger,
    seq: i64,
    flags: SubmitOptions<'_>,
) -> Submission {
    let Some((result, fate)) = in_slot(
        flags.gate,
        delivery::track(until(flags.deadline, bound.backend.submit(spec))),
    )
    .await
    else {
        let e = Error::new(
            ErrorKind::Interrupted,
            "interrupted before it was sent; a re-run sends it",
        );
        let _ = ledger.fail(seq, &e.message).await;
        return Submission::Failed(e);
    };
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
        let _ = ledger.unknown(seq, &e.to_string()).await;
        return Submission::Unknown(e);
    };
    match result {
        Ok(job) => {
            if let Err(e) = ledger.complete(seq, &job.id).await {
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
                let _ = ledger.unknown(seq, &e.to_string()).await;
                Submission::Unknown(unknown_error(
                    bound,
                    spec,
                    &format!("{}; {}", e.message, rerun_hint(spec)),
                ))
            } else {
                let _ = ledger.fail(seq, &e.to_string()).await;
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
