//! The watch engine behind `watch`, `wait`, `submit --wait` and `abort --wait`.
//!
//! It polls every profile concurrently, with one `statuses` call per profile and round (so
//! backends can answer many jobs with one list request, and a slow platform holds back no
//! other), stretches the interval from `--interval` towards `--max-interval` while nothing
//! changes, and decides the exit code (README "Exit codes" and "Waiting"). A failed *query* is
//! a warning and a retry, never a failed job; a profile that gives no answer at all for
//! `--unreachable-timeout` ends the wait with exit 7.
//!
//! The engine only produces [`Event`]s (to an [`Observer`]) and an [`Outcome`]; how they look
//! — ndjson lines, a live terminal display, notes on stderr — is the output layer's business.

use crate::error::{Error, ErrorKind, exit};
use crate::model::{Job, JobState};
use crate::session::{Bound, Session};
use chrono::Utc;
use futures::stream::StreamExt;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// How to wait.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// First polling interval.
    pub interval: Duration,
    /// Largest polling interval.
    pub max_interval: Duration,
    /// Give up (exit 3) this long after [`WatchOptions::started`].
    pub timeout: Option<Duration>,
    /// When the `--timeout` clock started: the start of the command for `submit --wait`, so
    /// a slow submission does not stretch the deadline.
    pub started: Instant,
    /// Give up (exit 7) when a profile answers nothing for this long.
    pub unreachable_timeout: Duration,
    /// Return once one job is terminal.
    pub any: bool,
    /// Return as soon as one job fails or is canceled.
    pub fail_fast: bool,
    /// `abort --wait`: any terminal state is success.
    pub abort_mode: bool,
    /// Keep each job's backend-specific fields (`extra`): only JSON output shows them, and
    /// at thousands of jobs they are most of a watch's memory.
    pub details: bool,
}

/// A watch/wait event, one ndjson line each (README "Output").
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A job's state changed (or was first observed).
    State {
        /// Reference.
        #[serde(rename = "ref")]
        reference: &'a str,
        /// Normalised state.
        state: JobState,
        /// Native state.
        native_state: Option<&'a str>,
        /// When it was observed.
        at: chrono::DateTime<Utc>,
        /// The job.
        job: &'a Job,
    },
    /// A job's progress changed.
    Progress {
        /// Reference.
        #[serde(rename = "ref")]
        reference: &'a str,
        /// Progress in [0, 1].
        progress: Option<f64>,
        /// When it was observed.
        at: chrono::DateTime<Utc>,
        /// The job.
        job: &'a Job,
    },
    /// Transient trouble; the job's state is unchanged by it.
    Warning {
        /// Reference, when the trouble concerns one job.
        #[serde(rename = "ref")]
        reference: Option<&'a str>,
        /// What happened.
        message: String,
        /// When.
        at: chrono::DateTime<Utc>,
    },
    /// Always the last line (written by the command once the engine returned).
    Result {
        /// The exit code jobctl exits with.
        exit_code: i32,
        /// Last known state of every job.
        jobs: &'a [Job],
    },
}

/// Who hears what the engine sees: the CLI's printer and live display, or a test.
pub trait Observer {
    /// A state change, progress change or warning, as soon as it is known.
    fn event(&self, event: &Event<'_>);

    /// A polling round ended; `jobs` holds the last known state of every target, in order
    /// (`None`: no answer yet).
    fn round(&self, _jobs: &[Option<Job>], _started: Instant) {}
}

/// How a wait ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (see [`crate::error::exit`]).
    pub exit_code: i32,
    /// Last known state of every job that was observed.
    pub jobs: Vec<Job>,
    /// The error that ended the wait early, if any.
    pub error: Option<Error>,
}

/// Exit code for a set of terminal/non-terminal jobs by the precedence 1, 5, 3.
pub fn aggregate(jobs: &[Option<Job>], timed_out: bool) -> i32 {
    let states: Vec<JobState> = jobs.iter().flatten().map(|j| j.state).collect();
    if states.contains(&JobState::Failed) {
        exit::JOB_FAILED
    } else if states.contains(&JobState::Canceled) {
        exit::CANCELED
    } else if timed_out {
        exit::TIMEOUT
    } else {
        exit::SUCCESS
    }
}

fn job_code(state: JobState) -> i32 {
    match state {
        JobState::Failed => exit::JOB_FAILED,
        JobState::Canceled => exit::CANCELED,
        _ => exit::SUCCESS,
    }
}

/// Waits for `targets` (profile, id), telling `observer` what happens, until the jobs end,
/// the options say stop, or `interrupt` completes (exit 130; the jobs keep running).
pub async fn run(
    session: &Session,
    targets: &[(String, String)],
    opts: &WatchOptions,
    observer: &dyn Observer,
    interrupt: impl Future<Output = ()>,
) -> Outcome {
    let mut w = Watch::new(session, targets, opts, observer);
    w.begin();
    let mut interrupt = std::pin::pin!(interrupt);
    let mut delay = opts.interval;
    loop {
        let round = tokio::select! {
            r = w.round() => Some(r),
            _ = &mut interrupt => None,
        };
        let changed = match round {
            None => return w.finish(exit::INTERRUPTED, None),
            Some(Err(e)) => return w.finish(e.exit_code(), Some(e)),
            Some(Ok(changed)) => changed,
        };
        observer.round(&w.jobs, w.started);
        if let Some((code, error)) = w.verdict() {
            return w.finish(code, error);
        }
        delay = if changed {
            opts.interval
        } else {
            delay.mul_f64(1.5).min(opts.max_interval)
        };
        let mut sleep = delay;
        if let Some(t) = opts.timeout {
            sleep = sleep.min(t.saturating_sub(w.started.elapsed()));
        }
        for at in w.last_answer.values() {
            sleep = sleep.min(opts.unreachable_timeout.saturating_sub(at.elapsed()));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = &mut interrupt => return w.finish(exit::INTERRUPTED, None),
        }
    }
}

/// The state of one wait.
struct Watch<'a> {
    session: &'a Session,
    targets: &'a [(String, String)],
    opts: &'a WatchOptions,
    observer: &'a dyn Observer,
    started: Instant,
    /// Last known state of each target.
    jobs: Vec<Option<Job>>,
    /// Target positions per profile.
    groups: BTreeMap<String, Vec<usize>>,
    /// When each profile last gave a usable answer.
    last_answer: BTreeMap<String, Instant>,
    first_terminal: Option<usize>,
}

impl<'a> Watch<'a> {
    fn new(
        session: &'a Session,
        targets: &'a [(String, String)],
        opts: &'a WatchOptions,
        observer: &'a dyn Observer,
    ) -> Self {
        let started = opts.started;
        let mut groups: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for (i, (p, _)) in targets.iter().enumerate() {
            groups.entry(p.clone()).or_default().push(i);
        }
        // The unreachable clock starts now: whatever came before (a submission) was answered.
        let now = Instant::now();
        let last_answer = groups.keys().map(|p| (p.clone(), now)).collect();
        Watch {
            session,
            targets,
            opts,
            observer,
            started,
            jobs: vec![None; targets.len()],
            groups,
            last_answer,
            first_terminal: None,
        }
    }

    /// Tells each profile's backend that a wait begins (out-of-band progress starts then).
    fn begin(&self) {
        for profile in self.groups.keys() {
            if let Ok(bound) = self.session.bound(profile) {
                bound.backend.begin_watch();
            }
        }
    }

    fn finish(&self, exit_code: i32, error: Option<Error>) -> Outcome {
        Outcome {
            exit_code,
            jobs: self.jobs.iter().flatten().cloned().collect(),
            error,
        }
    }

    /// Polls every profile at once and absorbs each answer as it arrives, so a quick
    /// platform's news is not held back by a slow one. Returns whether anything changed; an
    /// error ends the wait.
    async fn round(&mut self) -> Result<bool, Error> {
        let mut polls = Vec::new();
        for (profile, idxs) in &self.groups {
            let bound = self.session.bound(profile)?;
            // Deadlines are hard: a poll (with its retries) never outlives --timeout or the
            // profile's --unreachable-timeout.
            let mut deadline = self.last_answer[profile] + self.opts.unreachable_timeout;
            if let Some(t) = self.opts.timeout {
                deadline = deadline.min(self.started + t);
            }
            // A profile's batches are asked one after the other and each is absorbed as it
            // arrives: the full answers of one batch at a time are held, never of every job.
            let batch = bound.backend.status_batch().max(1);
            let chunks: Vec<Vec<usize>> = idxs.chunks(batch).map(<[usize]>::to_vec).collect();
            let targets = self.targets;
            let profile = profile.clone();
            polls.push(
                futures::stream::iter(chunks)
                    .then(move |idxs| {
                        let (bound, profile) = (bound.clone(), profile.clone());
                        async move {
                            let ids: Vec<String> =
                                idxs.iter().map(|&i| targets[i].1.clone()).collect();
                            let statuses = bound.backend.statuses(&ids);
                            let results =
                                match tokio::time::timeout_at(deadline.into(), statuses).await {
                                    Ok(results) => results,
                                    Err(_) => {
                                        let e = Error::unavailable("no answer before the deadline")
                                            .in_profile(
                                                &bound.profile.name,
                                                bound.profile.backend.as_str(),
                                            );
                                        ids.iter().map(|_| Err(e.clone())).collect()
                                    }
                                };
                            (profile, idxs, bound, results)
                        }
                    })
                    .boxed(),
            );
        }
        let mut polls = futures::stream::select_all(polls);
        let mut changed = false;
        while let Some((profile, idxs, bound, results)) = polls.next().await {
            for (i, result) in idxs.into_iter().zip(results) {
                changed |= match result {
                    Ok(job) => self.absorb(&profile, &bound, i, job),
                    Err(e) => self.trouble(&profile, i, e)?,
                };
            }
        }
        Ok(changed)
    }

    /// Records an answer for target `i`; true when its state or progress changed.
    fn absorb(&mut self, profile: &str, bound: &Bound, i: usize, job: Job) -> bool {
        self.last_answer.insert(profile.to_string(), Instant::now());
        let prev = self.jobs[i].as_ref();
        let mut job = match prev {
            // What the ledger adds (name, creation time) was added at the first answer: a
            // round over thousands of jobs must not read the ledger once per job again.
            Some(p) => {
                let mut job = job;
                job.stamp(&bound.profile.name, bound.profile.backend.as_str());
                if job.name.is_none() {
                    job.name.clone_from(&p.name);
                }
                job.created_at = job.created_at.or(p.created_at);
                job
            }
            None => self.session.finish_job(bound, job),
        };
        if !self.opts.details {
            // The live display shows a progress title; nothing else of `extra` is printed.
            job.extra.retain(|k, _| k == "progress_title");
        }
        let now = Utc::now();
        let changed =
            if prev.is_none_or(|p| p.state != job.state || p.native_state != job.native_state) {
                self.observer.event(&Event::State {
                    reference: &job.reference,
                    state: job.state,
                    native_state: job.native_state.as_deref(),
                    at: now,
                    job: &job,
                });
                true
            } else if prev.is_some_and(|p| p.progress != job.progress) {
                self.observer.event(&Event::Progress {
                    reference: &job.reference,
                    progress: job.progress,
                    at: now,
                    job: &job,
                });
                true
            } else {
                false
            };
        if job.terminal && self.first_terminal.is_none() {
            self.first_terminal = Some(i);
        }
        self.jobs[i] = Some(job);
        changed
    }

    /// A failed query for target `i`: a warning and a retry, unless retrying cannot help
    /// (refused credentials, bad input, a job that never existed).
    fn trouble(&mut self, profile: &str, i: usize, e: Error) -> Result<bool, Error> {
        let reference = format!("{profile}:{}", self.targets[i].1);
        let e = e.about(reference.clone());
        let fatal = match e.kind {
            ErrorKind::NotFound => self.jobs[i].is_none(),
            ErrorKind::Auth | ErrorKind::Usage | ErrorKind::NotSupported => true,
            _ => false,
        };
        if fatal {
            return Err(e);
        }
        if e.kind == ErrorKind::NotFound {
            // The platform answered, it just lost sight of the job for a moment.
            self.last_answer.insert(profile.to_string(), Instant::now());
        }
        self.observer.event(&Event::Warning {
            reference: Some(&reference),
            message: e.to_string(),
            at: Utc::now(),
        });
        Ok(false)
    }

    /// Whether the wait is over after this round, with which exit code and error.
    fn verdict(&self) -> Option<(i32, Option<Error>)> {
        if let Some(code) = self.jobs_verdict() {
            return Some((code, None));
        }
        for (profile, at) in &self.last_answer {
            if at.elapsed() >= self.opts.unreachable_timeout {
                let e = Error::unavailable(format!(
                    "profile '{profile}' gave no usable answer for {}; giving up (the jobs may still be running)",
                    humantime::format_duration(Duration::from_secs(at.elapsed().as_secs()))
                ));
                return Some((e.exit_code(), Some(e)));
            }
        }
        let t = self.opts.timeout?;
        if self.started.elapsed() < t {
            return None;
        }
        let code = if self.opts.abort_mode {
            exit::TIMEOUT
        } else {
            aggregate(&self.jobs, true)
        };
        let e = (code == exit::TIMEOUT).then(|| {
            Error::new(
                ErrorKind::Timeout,
                format!(
                    "timed out after {} with jobs still not finished",
                    humantime::format_duration(t)
                ),
            )
        });
        Some((code, e))
    }

    /// The exit code when the jobs' states alone end the wait.
    fn jobs_verdict(&self) -> Option<i32> {
        let all_terminal = self
            .jobs
            .iter()
            .all(|j| j.as_ref().is_some_and(|j| j.terminal));
        if self.opts.abort_mode {
            return all_terminal.then_some(exit::SUCCESS);
        }
        if self.opts.fail_fast {
            let bad =
                self.jobs.iter().flatten().find(|j| {
                    j.terminal && matches!(j.state, JobState::Failed | JobState::Canceled)
                });
            if let Some(j) = bad {
                return Some(job_code(j.state));
            }
        }
        if self.opts.any {
            if let Some(i) = self.first_terminal {
                return Some(
                    self.jobs[i]
                        .as_ref()
                        .map_or(exit::SUCCESS, |j| job_code(j.state)),
                );
            }
        }
        all_terminal.then(|| aggregate(&self.jobs, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(state: JobState) -> Option<Job> {
        Some(Job::new("1", state, None))
    }

    #[test]
    fn precedence_is_failed_then_canceled_then_timeout() {
        assert_eq!(aggregate(&[job(JobState::Succeeded)], false), exit::SUCCESS);
        assert_eq!(
            aggregate(&[job(JobState::Canceled), job(JobState::Failed)], true),
            exit::JOB_FAILED
        );
        assert_eq!(
            aggregate(&[job(JobState::Canceled), job(JobState::Running)], true),
            exit::CANCELED
        );
        assert_eq!(
            aggregate(&[job(JobState::Running), None], true),
            exit::TIMEOUT
        );
    }
}
