//! The watch engine behind `watch`, `wait`, `submit --wait` and `abort --wait`.
//!
//! It polls each profile with one `statuses` call per round (so backends can answer many jobs
//! with one list request), stretches the interval from `--interval` towards `--max-interval`
//! while nothing changes, and decides the exit code by CONTRACT §6. A failed *query* is a
//! warning and a retry, never a failed job; a profile that gives no answer at all for
//! `--unreachable-timeout` ends the wait with exit 7.

use crate::error::{Error, ErrorKind, exit};
use crate::model::{Job, JobState};
use crate::output::{OutputMode, Printer, paint_state};
use crate::session::Session;
use chrono::Utc;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How to wait.
#[derive(Debug, Clone)]
pub struct WatchOptions {
    /// First polling interval.
    pub interval: Duration,
    /// Largest polling interval.
    pub max_interval: Duration,
    /// Give up (exit 3) after this long.
    pub timeout: Option<Duration>,
    /// Give up (exit 7) when a profile answers nothing for this long.
    pub unreachable_timeout: Duration,
    /// Return once one job is terminal.
    pub any: bool,
    /// Return as soon as one job fails or is canceled.
    pub fail_fast: bool,
    /// Show the live display (watch on a terminal).
    pub live: bool,
    /// Print state changes to stderr when not live (watch in table mode).
    pub notes: bool,
    /// `abort --wait`: any terminal state is success.
    pub abort_mode: bool,
}

/// A watch/wait event (CONTRACT §3), one ndjson line each.
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
    /// Always the last line.
    Result {
        /// The exit code jobctl exits with.
        exit_code: i32,
        /// Last known state of every job.
        jobs: &'a [Job],
    },
}

/// How a wait ended.
#[derive(Debug)]
pub struct Outcome {
    /// Exit code (0, 1, 3, 5, 6, 7, 130…).
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

/// Waits for `targets` (profile, id) and streams events through `printer`.
pub async fn run(
    session: &Session,
    targets: &[(String, String)],
    opts: &WatchOptions,
    printer: &Printer,
) -> Outcome {
    let started = Instant::now();
    let mut jobs: Vec<Option<Job>> = vec![None; targets.len()];
    let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (p, _)) in targets.iter().enumerate() {
        groups.entry(p.as_str()).or_default().push(i);
    }
    let mut last_answer: BTreeMap<&str, Instant> = groups.keys().map(|p| (*p, started)).collect();
    let display = Display::new(opts.live, targets);
    // Registered now, not on first poll, so a Ctrl-C right after the first event is caught.
    let mut sigint = crate::cli::interrupt_signal();
    let mut interrupt = std::pin::pin!(async move {
        match sigint.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    });
    let mut delay = opts.interval;
    let mut first_terminal: Option<usize> = None;

    let finish = |jobs: &Vec<Option<Job>>, code: i32, error: Option<Error>| {
        let list: Vec<Job> = jobs.iter().flatten().cloned().collect();
        Outcome {
            exit_code: code,
            jobs: list,
            error,
        }
    };

    loop {
        let mut changed = false;
        for (profile, idxs) in &groups {
            let bound = match session.bound(profile) {
                Ok(b) => b,
                Err(e) => return finish(&jobs, e.exit_code(), Some(e)),
            };
            let ids: Vec<String> = idxs.iter().map(|&i| targets[i].1.clone()).collect();
            // Deadlines are hard: a poll (with its retries) never outlives --timeout or the
            // profile's --unreachable-timeout.
            let mut deadline = last_answer[profile] + opts.unreachable_timeout;
            if let Some(t) = opts.timeout {
                deadline = deadline.min(started + t);
            }
            let results = tokio::select! {
                r = bound.backend.statuses(&ids) => r,
                _ = tokio::time::sleep_until(deadline.into()) => {
                    let e = Error::unavailable("no answer before the deadline")
                        .in_profile(&bound.profile.name, bound.profile.backend.as_str());
                    ids.iter().map(|_| Err(e.clone())).collect()
                }
                _ = &mut interrupt => {
                    display.clear();
                    return finish(&jobs, exit::INTERRUPTED, None);
                }
            };
            for (&i, result) in idxs.iter().zip(results) {
                let reference = format!("{profile}:{}", targets[i].1);
                match result {
                    Ok(job) => {
                        last_answer.insert(profile, Instant::now());
                        let job = session.finish_job(&bound, job);
                        let prev = jobs[i].as_ref();
                        let now = Utc::now();
                        let state_changed = prev.is_none_or(|p| {
                            p.state != job.state || p.native_state != job.native_state
                        });
                        if state_changed {
                            changed = true;
                            printer.event(&Event::State {
                                reference: &job.reference,
                                state: job.state,
                                native_state: job.native_state.as_deref(),
                                at: now,
                                job: &job,
                            });
                            if opts.notes {
                                printer.note(&format!(
                                    "{}  {}{}",
                                    job.reference,
                                    paint_state(job.state, job.state.as_str()),
                                    job.native_state
                                        .as_deref()
                                        .filter(|n| *n != job.state.as_str())
                                        .map(|n| format!(" ({n})"))
                                        .unwrap_or_default()
                                ));
                            }
                        } else if prev.is_some_and(|p| p.progress != job.progress) {
                            changed = true;
                            printer.event(&Event::Progress {
                                reference: &job.reference,
                                progress: job.progress,
                                at: now,
                                job: &job,
                            });
                        }
                        if job.terminal && first_terminal.is_none() {
                            first_terminal = Some(i);
                        }
                        jobs[i] = Some(job);
                    }
                    Err(e) => {
                        let e = e
                            .in_profile(&bound.profile.name, bound.profile.backend.as_str())
                            .about(reference.clone());
                        let fatal = match e.kind {
                            ErrorKind::NotFound => jobs[i].is_none(),
                            ErrorKind::Auth | ErrorKind::Usage | ErrorKind::NotSupported => true,
                            _ => false,
                        };
                        if fatal {
                            display.clear();
                            return finish(&jobs, e.exit_code(), Some(e));
                        }
                        if e.kind == ErrorKind::NotFound {
                            // The platform answered, it just lost sight of the job for a moment.
                            last_answer.insert(profile, Instant::now());
                        }
                        printer.event(&Event::Warning {
                            reference: Some(&reference),
                            message: e.to_string(),
                            at: Utc::now(),
                        });
                        if printer.mode == OutputMode::Table {
                            display.suspend(|| {
                                printer.warn(&format!("{reference}: {e} (will retry)"))
                            });
                        }
                    }
                }
            }
        }
        display.update(&jobs, started);

        // Decide whether we are done.
        let terminal: Vec<&Job> = jobs.iter().flatten().filter(|j| j.terminal).collect();
        let all_terminal = jobs.iter().all(|j| j.as_ref().is_some_and(|j| j.terminal));
        if opts.abort_mode {
            if all_terminal {
                display.clear();
                return finish(&jobs, exit::SUCCESS, None);
            }
        } else {
            if opts.fail_fast {
                if let Some(j) = terminal
                    .iter()
                    .find(|j| matches!(j.state, JobState::Failed | JobState::Canceled))
                {
                    let code = job_code(j.state);
                    display.clear();
                    return finish(&jobs, code, None);
                }
            }
            if opts.any {
                if let Some(i) = first_terminal {
                    let code = jobs[i].as_ref().map_or(0, |j| job_code(j.state));
                    display.clear();
                    return finish(&jobs, code, None);
                }
            }
            if all_terminal {
                display.clear();
                return finish(&jobs, aggregate(&jobs, false), None);
            }
        }
        for (profile, at) in &last_answer {
            if at.elapsed() >= opts.unreachable_timeout {
                display.clear();
                let e = Error::unavailable(format!(
                    "profile '{profile}' gave no usable answer for {}; giving up (the jobs may still be running)",
                    humantime::format_duration(Duration::from_secs(at.elapsed().as_secs()))
                ));
                return finish(&jobs, e.exit_code(), Some(e));
            }
        }
        let elapsed = started.elapsed();
        if let Some(t) = opts.timeout {
            if elapsed >= t {
                display.clear();
                let code = if opts.abort_mode {
                    exit::TIMEOUT
                } else {
                    aggregate(&jobs, true)
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
                return finish(&jobs, code, e);
            }
        }
        delay = if changed {
            opts.interval
        } else {
            (delay.mul_f64(1.5)).min(opts.max_interval)
        };
        let mut sleep = delay;
        if let Some(t) = opts.timeout {
            sleep = sleep.min(t.saturating_sub(elapsed));
        }
        for at in last_answer.values() {
            sleep = sleep.min(opts.unreachable_timeout.saturating_sub(at.elapsed()));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = &mut interrupt => {
                display.clear();
                return finish(&jobs, exit::INTERRUPTED, None);
            }
        }
    }
}

/// The live terminal display: one line per job (up to a limit) and a summary line.
struct Display {
    multi: Option<MultiProgress>,
    bars: Vec<ProgressBar>,
    summary: Option<ProgressBar>,
}

const MAX_LINES: usize = 20;

impl Display {
    fn new(live: bool, targets: &[(String, String)]) -> Self {
        if !live {
            return Display {
                multi: None,
                bars: Vec::new(),
                summary: None,
            };
        }
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {prefix}  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        let mut bars = Vec::new();
        for (p, id) in targets.iter().take(MAX_LINES) {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_prefix(format!("{p}:{id}"));
            bar.set_message("waiting for first answer");
            bar.enable_steady_tick(Duration::from_millis(120));
            bars.push(bar);
        }
        let summary = (targets.len() > 1).then(|| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        Display {
            multi: Some(multi),
            bars,
            summary,
        }
    }

    fn update(&self, jobs: &[Option<Job>], started: Instant) {
        if self.multi.is_none() {
            return;
        }
        for (bar, job) in self.bars.iter().zip(jobs) {
            if let Some(j) = job {
                let since = j
                    .started_at
                    .or(j.created_at)
                    .map(|t| (Utc::now() - t).to_std().unwrap_or_default())
                    .unwrap_or_else(|| started.elapsed());
                let end = j
                    .ended_at
                    .zip(j.started_at.or(j.created_at))
                    .map(|(e, s)| (e - s).to_std().unwrap_or_default());
                let elapsed = end.unwrap_or(since);
                let mut progress = j
                    .progress
                    .map(|p| format!(" {:>3.0}%", p * 100.0))
                    .unwrap_or_default();
                // Backends that know what the job is doing name it (cloudpss progress titles).
                if let Some(title) = j.extra.get("progress_title").and_then(|t| t.as_str()) {
                    progress.push_str(&format!(" {title}"));
                }
                bar.set_message(format!(
                    "{}{}  {}{}",
                    paint_state(j.state, j.state.as_str()),
                    j.native_state
                        .as_deref()
                        .filter(|n| *n != j.state.as_str())
                        .map(|n| format!(" ({n})"))
                        .unwrap_or_default(),
                    humantime::format_duration(Duration::from_secs(elapsed.as_secs())),
                    progress
                ));
            }
        }
        if let Some(s) = &self.summary {
            let mut counts: BTreeMap<JobState, usize> = BTreeMap::new();
            for j in jobs.iter().flatten() {
                *counts.entry(j.state).or_default() += 1;
            }
            let parts: Vec<String> = counts.iter().map(|(k, v)| format!("{v} {k}")).collect();
            s.set_message(format!(
                "{} jobs: {}  ({} elapsed)",
                jobs.len(),
                parts.join(", "),
                humantime::format_duration(Duration::from_secs(started.elapsed().as_secs()))
            ));
        }
    }

    fn suspend(&self, f: impl FnOnce()) {
        match &self.multi {
            Some(m) => m.suspend(f),
            None => f(),
        }
    }

    fn clear(&self) {
        for b in self.bars.iter().chain(self.summary.iter()) {
            b.finish_and_clear();
        }
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
        assert_eq!(aggregate(&[job(JobState::Succeeded)], false), 0);
        assert_eq!(
            aggregate(&[job(JobState::Canceled), job(JobState::Failed)], true),
            1
        );
        assert_eq!(
            aggregate(&[job(JobState::Canceled), job(JobState::Running)], true),
            5
        );
        assert_eq!(aggregate(&[job(JobState::Running), None], true), 3);
    }
}
