//! `batch --wait` and `batch --dry-run`: runs a batch file as a pipeline. Lines are submitted
//! once their prerequisites (`after`) have succeeded, failed jobs are resubmitted (`retries`),
//! and every submission and final state goes to the journal first, so a run killed at any
//! point and started again with the same journal submits nothing twice: finished lines stay
//! done, running jobs are watched again, the rest runs when its turn comes.
//!
//! The rules live in [`crate::pipeline`]; this module does the I/O: submitting through the
//! ledger, polling, the journal, events and reports.

use super::Outcome;
use super::submission::{Lookups, Submission, SubmitOptions, prefetch, submit_spec};
use crate::error::{Error, ErrorKind, Result, exit};
use crate::model::{Job, JobState};
use crate::output::{OutputMode, PipelineDisplay, PipelineRow, Printer, Report, error_json};
use crate::pipeline::{self, Finish, Line, Output, Plan, Record, Scheduler, Status, attempt_key};
use crate::report::{self, Case, ReportTarget, Verdict};
use crate::session::{Bound, Session};
use chrono::Utc;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Settings of one pipeline run.
#[derive(Debug)]
pub struct RunOptions<'a> {
    /// The batch file (for messages and the report title).
    pub file: &'a Path,
    /// Journal path (`None` when reading stdin without `--journal`).
    pub journal: Option<PathBuf>,
    /// Submissions in flight per profile (`None`: each profile's `max_in_flight`).
    pub concurrency: Option<usize>,
    /// Hard deadline of the whole run.
    pub timeout: Option<Duration>,
    /// `--report` targets.
    pub reports: &'a [ReportTarget],
    /// The run id of derived keys (`--new-run`), if any.
    pub run: Option<String>,
    /// Send again submissions whose outcome is unknown on unsearchable platforms.
    pub resubmit_unknown: bool,
}

/// A pipeline event (`-o ndjson`), besides `line` objects and the final `result`.
#[derive(Debug, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum PipelineEvent<'a> {
    /// An attempt was accepted by its platform (or found already submitted).
    Submitted {
        line: usize,
        key: &'a str,
        attempt: u32,
        attempt_key: String,
        #[serde(rename = "ref")]
        reference: &'a str,
        existing: bool,
        job: &'a Job,
    },
    /// A watched job changed state.
    State {
        line: Option<usize>,
        key: Option<&'a str>,
        #[serde(rename = "ref")]
        reference: &'a str,
        state: JobState,
        native_state: Option<&'a str>,
        at: chrono::DateTime<Utc>,
        job: &'a Job,
    },
    /// A failed attempt will be submitted again.
    Retry {
        line: usize,
        key: &'a str,
        #[serde(rename = "ref")]
        reference: &'a str,
        attempt: u32,
        attempt_key: String,
        delay_ms: u128,
    },
    /// A line will not be submitted.
    Blocked {
        line: usize,
        key: &'a str,
        reason: &'a str,
    },
    /// Transient trouble watching a job.
    Warning {
        #[serde(rename = "ref")]
        reference: &'a str,
        message: String,
        at: chrono::DateTime<Utc>,
    },
    /// Always the last line.
    Result {
        exit_code: i32,
        jobs: &'a [Job],
        lines: &'a [PipelineRow],
    },
}

/// The flags of `batch --wait` / `batch --dry-run`.
#[derive(Debug)]
pub struct BatchFlags<'a> {
    /// The batch file, `-` for stdin.
    pub file: &'a Path,
    /// Its text (read once: stdin cannot be read twice).
    pub text: String,
    /// Submissions in flight per profile (`None`: each profile's `max_in_flight`).
    pub concurrency: Option<usize>,
    /// `--journal`.
    pub journal: Option<PathBuf>,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--timeout`.
    pub timeout: Option<&'a str>,
    /// `--report`.
    pub reports: &'a [ReportTarget],
    /// `--new-run`: fresh derived keys and a fresh journal.
    pub new_run: bool,
    /// `--resubmit-unknown`.
    pub resubmit_unknown: bool,
}

/// Whether a batch file uses `after` or `retries` (and so runs as a pipeline). A file that
/// does not parse is left to the plain batch, whose error names the line.
pub fn is_pipeline(text: &str) -> bool {
    pipeline::parse(text, None).is_ok_and(|lines| lines.iter().any(Line::orchestrated))
}

/// The run id of the journal's last `--new-run` header, if any.
fn journal_run(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["run"].as_str().map(String::from))
}

/// `batch --wait` and `batch --dry-run`.
pub async fn batch(f: BatchFlags<'_>, s: &Session, p: &Printer) -> Result<Outcome> {
    let stdin = f.file == Path::new("-");
    let text = f.text;
    if f.dry_run {
        return dry_run(&text, s);
    }
    let timeout = f
        .timeout
        .map(|t| {
            crate::config::parse_duration(t)
                .map_err(|e| Error::usage(format!("--timeout: {}", e.message)))
        })
        .transpose()?;
    // The journal sits next to the file unless named; stdin has none unless named.
    let journal = f.journal.or_else(|| {
        (!stdin).then(|| {
            let mut j = f.file.as_os_str().to_owned();
            j.push(".journal");
            PathBuf::from(j)
        })
    });
    // A new run gets fresh derived keys and a journal that starts with its id; a re-run of
    // it (without --new-run) finds the id there and so the same keys.
    let run_id = if f.new_run {
        let id = super::batch::new_run_id();
        if let Some(j) = &journal {
            std::fs::write(j, format!("{}\n", serde_json::json!({ "run": id })))
                .map_err(|e| Error::io(format!("journal {}", j.display()), e))?;
        }
        Some(id)
    } else {
        journal.as_deref().and_then(journal_run)
    };
    let o = RunOptions {
        file: f.file,
        journal,
        concurrency: f.concurrency,
        timeout,
        reports: f.reports,
        run: run_id,
        resubmit_unknown: f.resubmit_unknown,
    };
    run(&text, o, s, p).await
}

/// A validated pipeline, each line's bound profile, and each external prerequisite as
/// (profile, id).
type Prepared = (Plan, Vec<Bound>, Vec<(String, String)>);

/// Validates the file as a pipeline and resolves every line's profile, before anything is sent.
fn prepare(text: &str, run: Option<&str>, s: &Session) -> Result<Prepared> {
    let plan = pipeline::plan(pipeline::parse(text, run)?)?;
    let mut bounds = Vec::with_capacity(plan.lines.len());
    for l in &plan.lines {
        let profile = l
            .spec
            .profile
            .clone()
            .or_else(|| l.spec.backend.clone())
            .unwrap_or_else(|| s.selected.clone());
        let n = l.line;
        let bound = s
            .bound(&profile)
            .map_err(|e| Error::usage(format!("line {n}: {}", e.message)))?;
        bound
            .backend
            .validate(&l.spec)
            .map_err(|e| Error::usage(format!("line {n}: {}", e.message)))?;
        bounds.push(bound);
    }
    let mut externals = Vec::new();
    for r in &plan.externals {
        let target = s.resolve(r).map_err(|e| {
            let lines: Vec<String> = plan
                .lines
                .iter()
                .filter(|l| l.after.contains(r))
                .map(|l| l.line.to_string())
                .collect();
            Error::usage(format!(
                "line {}: `after` names '{r}': {}",
                lines.join(", "),
                e.message
            ))
        })?;
        externals.push(target);
    }
    Ok((plan, bounds, externals))
}

/// `batch --dry-run`: validates and prints the levels the pipeline would run in.
pub fn dry_run(text: &str, s: &Session) -> Result<Outcome> {
    let (plan, bounds, _) = prepare(text, None, s)?;
    let rows: Vec<Value> = plan
        .levels
        .iter()
        .enumerate()
        .flat_map(|(level, idxs)| {
            let plan = &plan;
            let bounds = &bounds;
            idxs.iter().map(move |&i| {
                let l = &plan.lines[i];
                serde_json::json!({
                    "level": level + 1, "line": l.line, "key": l.key(),
                    "name": l.spec.name, "profile": bounds[i].profile.name,
                    "after": l.after, "retries": l.retries,
                })
            })
        })
        .collect();
    Ok(Outcome::ok(Report::PipelinePlan(rows)))
}

fn read_records(path: &Path) -> Vec<Record> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            Record::from_json(&v).or_else(|| {
                // A row of a plain `batch` run of the same file: its job counts as attempt 1.
                let outcome = v["outcome"].as_str()?;
                if !matches!(outcome, "submitted" | "reconciled" | "skipped") {
                    return None;
                }
                let reference = v["ref"].as_str()?.to_string();
                Some(Record::Submitted {
                    line: v["line"].as_u64()? as usize,
                    key: v["key"].as_str()?.to_string(),
                    attempt: 1,
                    job: Output {
                        id: reference.split_once(':')?.1.to_string(),
                        reference,
                    },
                })
            })
        })
        .collect()
}

fn append(path: Option<&Path>, record: &Record) -> Result<()> {
    let Some(path) = path else { return Ok(()) };
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("journal {}", path.display()), e))?;
    writeln!(f, "{}", record.to_json())
        .and_then(|()| f.sync_data())
        .map_err(|e| Error::io(format!("journal {}", path.display()), e))
}

type Sent = (usize, u32, Result<(Job, bool)>);

/// A submission's job and whether it was submitted before (found in the ledger or on the
/// platform by its key), or why there is none (refused, or an outcome still unknown).
pub(super) fn settled(sub: Submission) -> Result<(Job, bool)> {
    match sub {
        Submission::Sent(j) => Ok((j, false)),
        Submission::Earlier(j) | Submission::Reconciled(j) => Ok((j, true)),
        Submission::Unknown(e) | Submission::Failed(e) => Err(e),
    }
}

/// What every submission of one run shares.
#[derive(Clone, Copy)]
struct Sending<'a> {
    s: &'a Session,
    lookups: &'a Lookups,
    resubmit_unknown: bool,
}

async fn send(
    i: usize,
    attempt: u32,
    bound: Bound,
    spec: crate::model::JobSpec,
    gate: Rc<Semaphore>,
    how: Sending<'_>,
) -> Sent {
    // Not `validated`: the spec's placeholders were filled only now.
    let opts = SubmitOptions {
        resubmit_unknown: how.resubmit_unknown,
        gate: Some(&gate),
        lookups: Some(how.lookups),
        ..SubmitOptions::default()
    };
    let sub = submit_spec(&bound, &spec, how.s, opts).await;
    (i, attempt, settled(sub))
}

/// One pipeline run in progress.
struct Run<'a> {
    s: &'a Session,
    p: &'a Printer,
    journal: Option<PathBuf>,
    sched: Scheduler,
    bounds: Vec<Bound>,
    externals: Vec<(String, String)>,
    /// Last observed job of each line's current attempt.
    jobs: Vec<Option<Job>>,
    ext_jobs: Vec<Option<Job>>,
    /// Each line's first decided outcome (`submitted`, `skipped`…) and error.
    outcome: Vec<Option<String>>,
    error: Vec<Option<Value>>,
    retry_at: Vec<Option<Instant>>,
    submit_code: i32,
    display: PipelineDisplay,
    last_answer: BTreeMap<String, Instant>,
}

/// `batch --wait`.
pub async fn run(text: &str, o: RunOptions<'_>, s: &Session, p: &Printer) -> Result<Outcome> {
    let started_at = Utc::now();
    let (plan, bounds, externals) = prepare(text, o.run.as_deref(), s)?;
    let n = plan.lines.len();
    let mut sched = Scheduler::new(plan);
    let mut outcome = vec![None; n];
    if let Some(j) = o.journal.as_deref() {
        for r in read_records(j) {
            sched.replay(&r);
        }
        for (i, st) in sched.status.iter().enumerate() {
            if !matches!(st, Status::Waiting) {
                outcome[i] = Some("skipped".to_string());
            }
        }
    }
    let display = PipelineDisplay::new(p, &sched);
    let mut run = Run {
        s,
        p,
        journal: o.journal.clone(),
        ext_jobs: vec![None; externals.len()],
        externals,
        jobs: vec![None; n],
        outcome,
        error: vec![None; n],
        retry_at: vec![None; n],
        submit_code: 0,
        bounds,
        sched,
        display,
        last_answer: BTreeMap::new(),
    };
    for i in 0..n {
        if run.outcome[i].is_some() {
            p.pipeline_line(&run.row(i));
        }
    }
    // `--timeout` bounds the whole run, the lookups of a re-run included.
    let deadline = o.timeout.map(|t| tokio::time::Instant::now() + t);
    let lookups = match deadline {
        Some(d) => tokio::time::timeout_at(d, run.prefetch())
            .await
            .unwrap_or_default(),
        None => run.prefetch().await,
    };
    let ended = run.drive(&o, &lookups, deadline).await;
    run.display.clear();
    if ended.is_ok() {
        run.fill_finished_jobs().await;
    }
    let (code, stop_error) = match ended {
        Ok(stopped) => (run.exit_code(stopped), None),
        Err(e) => (e.exit_code(), Some(e)),
    };
    if let Some(e) = &stop_error {
        p.error(e);
    }
    if code == exit::INTERRUPTED {
        p.warn("interrupted; the jobs keep running; run the same command again to resume");
    }
    let rows: Vec<PipelineRow> = (0..n).map(|i| run.row(i)).collect();
    let jobs: Vec<Job> = run.jobs.iter().flatten().cloned().collect();
    let mut code = code;
    if !o.reports.is_empty() {
        let mut cases: Vec<Case> = (0..n).map(|i| run.case(i)).collect();
        report::add_output(s, &mut cases, &jobs).await;
        let title = format!("jobctl batch {}", o.file.display());
        if let Err(e) = write_reports(o.reports, &title, &cases, started_at, p) {
            p.error(&e);
            if code == exit::SUCCESS {
                code = e.exit_code();
            }
        }
    }
    p.event(&PipelineEvent::Result {
        exit_code: code,
        jobs: &jobs,
        lines: &rows,
    });
    Ok(Outcome {
        report: Report::Pipeline(rows),
        code,
    })
}

/// Writes the reports; annotations go to stdout only where stdout is for people.
pub fn write_reports(
    targets: &[ReportTarget],
    title: &str,
    cases: &[Case],
    started: chrono::DateTime<Utc>,
    p: &Printer,
) -> Result<()> {
    let summary = std::env::var_os("GITHUB_STEP_SUMMARY")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    if p.mode == OutputMode::Table {
        report::write_reports(
            targets,
            title,
            cases,
            started,
            &mut std::io::stdout(),
            summary,
        )
    } else {
        report::write_reports(
            targets,
            title,
            cases,
            started,
            &mut std::io::stderr(),
            summary,
        )
    }
}

/// Why the drive loop stopped early.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Stopped {
    Finished,
    TimedOut,
    Interrupted,
}

impl Run<'_> {
    fn key(&self, i: usize) -> &str {
        self.sched.plan.lines[i].key()
    }

    fn line(&self, i: usize) -> &Line {
        &self.sched.plan.lines[i]
    }

    /// Reads the final job of lines finished in an earlier run (the journal holds their state,
    /// not the job), so every row and report case carries its job. Best effort: a job that
    /// cannot be read stays null.
    async fn fill_finished_jobs(&mut self) {
        let mut groups: BTreeMap<String, Vec<(usize, String)>> = BTreeMap::new();
        for (i, st) in self.sched.status.iter().enumerate() {
            if let (Status::Done { job, .. }, None) = (st, &self.jobs[i]) {
                let profile = self.bounds[i].profile.name.clone();
                groups.entry(profile).or_default().push((i, job.id.clone()));
            }
        }
        for (profile, items) in groups {
            let Ok(bound) = self.s.bound(&profile) else {
                continue;
            };
            let ids: Vec<String> = items.iter().map(|(_, id)| id.clone()).collect();
            let read = bound.backend.statuses(&ids);
            let Ok(results) = tokio::time::timeout(Duration::from_secs(30), read).await else {
                continue;
            };
            for ((i, _), r) in items.into_iter().zip(results) {
                if let Ok(job) = r {
                    self.jobs[i] = Some(self.s.finish_job(&bound, job));
                }
            }
        }
    }

    /// Prints line `i`'s row as it was just decided.
    fn show_line(&self, i: usize) {
        let row = self.row(i);
        self.display.suspend(|| self.p.pipeline_line(&row));
    }

    /// The row of line `i` as it stands.
    fn row(&self, i: usize) -> PipelineRow {
        let l = self.line(i);
        let (state, attempts, reason) = match &self.sched.status[i] {
            Status::Waiting => ("waiting".to_string(), 0, None),
            Status::Submitting { attempt } => ("submitting".to_string(), *attempt, None),
            Status::Running { attempt, .. } => (
                self.jobs[i]
                    .as_ref()
                    .map_or("submitted".to_string(), |j| j.state.to_string()),
                *attempt,
                None,
            ),
            Status::RetryDue { next } => ("retrying".to_string(), next - 1, None),
            Status::Done {
                attempts, state, ..
            } => (state.to_string(), *attempts, None),
            Status::SubmitFailed { attempt, error } => {
                ("not submitted".to_string(), *attempt, Some(error.clone()))
            }
            Status::Blocked { reason } => ("blocked".to_string(), 0, Some(reason.clone())),
        };
        let reference = match &self.sched.status[i] {
            Status::Running { job, .. } | Status::Done { job, .. } => Some(job.reference.clone()),
            _ => None,
        };
        let outcome = match (&self.outcome[i], &self.sched.status[i]) {
            (Some(o), _) => o.clone(),
            (None, Status::Blocked { .. }) => "blocked".to_string(),
            (None, _) => "pending".to_string(),
        };
        PipelineRow {
            line: l.line,
            key: Some(l.key().to_string()),
            reference,
            outcome,
            error: self.error[i].clone(),
            state,
            attempts,
            profile: self.bounds[i].profile.name.clone(),
            waiting_on: if matches!(self.sched.status[i], Status::Waiting) {
                self.sched.waiting_on(i)
            } else {
                Vec::new()
            },
            reason,
            job: self.jobs[i].clone(),
        }
    }

    /// The report case of line `i`.
    fn case(&self, i: usize) -> Case {
        let l = self.line(i);
        let name = l.spec.name.clone().unwrap_or_else(|| l.key().to_string());
        let now = Utc::now();
        let mut case = match (&self.sched.status[i], &self.jobs[i]) {
            (Status::Running { .. } | Status::Done { .. }, Some(job)) => {
                Case::from_job(job, Some(&name), now)
            }
            (st, _) => {
                let verdict = match st {
                    Status::Blocked { reason } => Verdict::Skipped {
                        message: format!("blocked: {reason}"),
                    },
                    Status::SubmitFailed { error, .. } => Verdict::Failed {
                        message: format!("not submitted: {error}"),
                        output: Vec::new(),
                    },
                    Status::Done { state, .. } => match state {
                        JobState::Succeeded => Verdict::Passed,
                        JobState::Canceled => Verdict::Skipped {
                            message: "canceled".into(),
                        },
                        _ => Verdict::Failed {
                            message: format!("{state}"),
                            output: Vec::new(),
                        },
                    },
                    _ => Verdict::Error {
                        message: "the pipeline stopped before this line ran".into(),
                    },
                };
                Case {
                    name: name.clone(),
                    classname: self.bounds[i].profile.name.clone(),
                    reference: None,
                    state: self.row(i).state,
                    attempts: 0,
                    time: Duration::ZERO,
                    verdict,
                }
            }
        };
        if l.spec.name.is_none() {
            case.name = name;
        }
        case.state = self.row(i).state;
        case.attempts = self.row(i).attempts;
        case
    }

    /// Exit code once the loop stopped: 1 if a job failed, else 5 if one was canceled, else 3
    /// on timeout, else the worst refused submission.
    fn exit_code(&self, stopped: Stopped) -> i32 {
        let mut states: Vec<JobState> = self
            .sched
            .status
            .iter()
            .filter_map(|s| match s {
                Status::Done { state, .. } => Some(*state),
                _ => None,
            })
            .collect();
        states.extend(
            self.ext_jobs
                .iter()
                .flatten()
                .filter(|j| j.terminal)
                .map(|j| j.state),
        );
        if states.contains(&JobState::Failed) {
            exit::JOB_FAILED
        } else if states.contains(&JobState::Canceled) {
            exit::CANCELED
        } else if stopped == Stopped::Interrupted {
            exit::INTERRUPTED
        } else if stopped == Stopped::TimedOut {
            exit::TIMEOUT
        } else {
            self.submit_code
        }
    }

    /// Looks up, in one listing per profile, the lines due now whose earlier submission has
    /// an unknown outcome (the run before was killed), as a plain batch does; lines that
    /// become due later are looked up one by one, if at all.
    async fn prefetch(&self) -> Lookups {
        let due: Vec<(usize, crate::model::JobSpec)> = self
            .due()
            .into_iter()
            .map(|(i, attempt)| (i, self.sched.spec_for(i, attempt)))
            .collect();
        let lines: Vec<(&Bound, &crate::model::JobSpec)> = due
            .iter()
            .map(|(i, spec)| (&self.bounds[*i], spec))
            .collect();
        prefetch(self.s, &lines).await
    }

    async fn drive(
        &mut self,
        o: &RunOptions<'_>,
        lookups: &Lookups,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Stopped> {
        let base = self
            .bounds
            .iter()
            .map(|b| b.profile.poll_interval)
            .min()
            .unwrap_or(Duration::from_secs(2))
            .max(Duration::from_millis(200));
        let max_interval = Duration::from_secs(15).max(base);
        let mut delay = base;
        let mut next_poll = tokio::time::Instant::now();
        let mut inflight = FuturesUnordered::new();
        // Per profile: lines being submitted, and the gate whose permits are its platform
        // slots (held only for the request, as in a plain batch).
        let mut sending: BTreeMap<String, (usize, Rc<Semaphore>)> = BTreeMap::new();
        let how = Sending {
            s: self.s,
            lookups,
            resubmit_unknown: o.resubmit_unknown,
        };
        let mut sigint = super::interrupt_signal();
        let mut interrupt = std::pin::pin!(async move {
            match sigint.as_mut() {
                Some(s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        });
        loop {
            // Launch what is due, in file order, within each profile's limit: a slow platform
            // holds back its own lines, not the other platforms' ones.
            for (i, attempt) in self.due() {
                let profile = &self.bounds[i].profile.name;
                let limit = o
                    .concurrency
                    .unwrap_or(self.bounds[i].profile.max_in_flight)
                    .max(1);
                let (busy, gate) = sending
                    .entry(profile.clone())
                    .or_insert_with(|| (0, Rc::new(Semaphore::new(limit))));
                if *busy >= limit.saturating_mul(2) {
                    continue;
                }
                *busy += 1;
                let gate = gate.clone();
                self.sched.submitting(i, attempt);
                self.retry_at[i] = None;
                let spec = self.sched.spec_for(i, attempt);
                inflight.push(send(i, attempt, self.bounds[i].clone(), spec, gate, how));
            }
            self.display.update(&self.sched, &self.jobs);
            if self.sched.all_final() && inflight.is_empty() {
                return Ok(Stopped::Finished);
            }
            let wake = self.next_retry().map_or(next_poll, |r| r.min(next_poll));
            let wake = deadline.map_or(wake, |d| d.min(wake));
            tokio::select! {
                Some((i, attempt, result)) = inflight.next(), if !inflight.is_empty() => {
                    if let Some((n, _)) = sending.get_mut(&self.bounds[i].profile.name) {
                        *n = n.saturating_sub(1);
                    }
                    self.sent(i, attempt, result)?;
                    // A new job is worth a prompt first look.
                    next_poll = next_poll.min(tokio::time::Instant::now() + base);
                }
                _ = tokio::time::sleep_until(wake) => {
                    if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                        return Ok(Stopped::TimedOut);
                    }
                    if tokio::time::Instant::now() >= next_poll {
                        // The deadline and Ctrl-C hold while a slow platform is being asked.
                        let far = tokio::time::Instant::now() + Duration::from_secs(86_400 * 365);
                        let changed = tokio::select! {
                            r = self.poll() => r?,
                            _ = tokio::time::sleep_until(deadline.unwrap_or(far)) => {
                                return Ok(Stopped::TimedOut);
                            }
                            _ = &mut interrupt => {
                                return self.settle(&mut inflight, &sending).await;
                            }
                        };
                        delay = if changed { base } else { delay.mul_f64(1.5).min(max_interval) };
                        next_poll = tokio::time::Instant::now() + delay;
                    }
                }
                _ = &mut interrupt => return self.settle(&mut inflight, &sending).await,
            }
        }
    }

    /// After Ctrl-C: lines still waiting for a platform slot are not sent (their keys are
    /// freed), and the submissions already at a platform get up to
    /// [`super::batch::SETTLE_ON_INTERRUPT`] to answer and be journaled, as in a plain batch,
    /// so a clean interrupt leaves no outcome unknown.
    async fn settle<F: std::future::Future<Output = Sent>>(
        &mut self,
        inflight: &mut FuturesUnordered<F>,
        sending: &BTreeMap<String, (usize, Rc<Semaphore>)>,
    ) -> Result<Stopped> {
        sending.values().for_each(|(_, gate)| gate.close());
        let until = tokio::time::Instant::now() + super::batch::SETTLE_ON_INTERRUPT;
        while let Ok(Some((i, attempt, result))) =
            tokio::time::timeout_at(until, inflight.next()).await
        {
            // Not sent: the line stays waiting, and the next run sends it.
            if matches!(&result, Err(e) if e.kind == ErrorKind::Interrupted) {
                continue;
            }
            self.sent(i, attempt, result)?;
        }
        Ok(Stopped::Interrupted)
    }

    /// (line, attempt) pairs to submit now: ready lines, then retries whose pause is over.
    fn due(&self) -> Vec<(usize, u32)> {
        let now = Instant::now();
        let mut due: Vec<(usize, u32)> = self.sched.ready().into_iter().map(|i| (i, 1)).collect();
        for (i, st) in self.sched.status.iter().enumerate() {
            if let Status::RetryDue { next } = st {
                if self.retry_at[i].is_none_or(|t| t <= now) {
                    due.push((i, *next));
                }
            }
        }
        due.sort_unstable();
        due
    }

    fn next_retry(&self) -> Option<tokio::time::Instant> {
        self.retry_at
            .iter()
            .flatten()
            .min()
            .map(|t| tokio::time::Instant::from_std(*t))
    }

    /// Handles the answer to one submission.
    fn sent(&mut self, i: usize, attempt: u32, result: Result<(Job, bool)>) -> Result<()> {
        let key = self.key(i).to_string();
        match result {
            Ok((job, existing)) => {
                let out = Output {
                    id: job.id.clone(),
                    reference: job.reference.clone(),
                };
                append(
                    self.journal.as_deref(),
                    &Record::Submitted {
                        line: self.line(i).line,
                        key: key.clone(),
                        attempt,
                        job: out.clone(),
                    },
                )?;
                self.sched.submitted(i, attempt, out);
                self.p.event(&PipelineEvent::Submitted {
                    line: self.line(i).line,
                    key: &key,
                    attempt,
                    attempt_key: attempt_key(&key, attempt),
                    reference: &job.reference,
                    existing,
                    job: &job,
                });
                if self.outcome[i].is_none() {
                    self.outcome[i] =
                        Some(if existing { "reconciled" } else { "submitted" }.into());
                    self.show_line(i);
                } else if self.p.mode == OutputMode::Table {
                    self.display.note(
                        self.p,
                        &format!(
                            "{}  {}  attempt {attempt} submitted",
                            self.line(i).line,
                            job.reference
                        ),
                    );
                }
                self.jobs[i] = None;
            }
            Err(e) => {
                self.submit_code = self.submit_code.max(e.exit_code());
                let err = error_json(&e)["error"].clone();
                let blocked = self.sched.submit_failed(i, attempt, e.to_string());
                if self.outcome[i].is_none() {
                    self.outcome[i] = Some("failed".into());
                }
                self.error[i] = Some(err);
                let n = self.line(i).line;
                self.display
                    .suspend(|| eprintln!("jobctl: error: line {n} ({key}): {e}"));
                self.p.event(&serde_json::json!({
                    "event": "error", "line": self.line(i).line, "key": key,
                    "ref": Value::Null, "error": error_json(&e)["error"],
                }));
                self.show_line(i);
                self.announce_blocked(&blocked);
            }
        }
        Ok(())
    }

    fn announce_blocked(&mut self, blocked: &[usize]) {
        for &j in blocked {
            let key = self.key(j).to_string();
            let Status::Blocked { reason } = &self.sched.status[j] else {
                continue;
            };
            let reason = reason.clone();
            self.p.event(&PipelineEvent::Blocked {
                line: self.line(j).line,
                key: &key,
                reason: &reason,
            });
            if self.outcome[j].is_none() {
                self.outcome[j] = Some("blocked".into());
            }
            self.show_line(j);
        }
    }

    /// One round of status queries for running jobs and pending external prerequisites,
    /// grouped by profile. Returns whether anything changed.
    async fn poll(&mut self) -> Result<bool> {
        let mut groups: BTreeMap<String, Vec<(Target, String)>> = BTreeMap::new();
        for (i, job) in self.sched.running() {
            let profile = self.bounds[i].profile.name.clone();
            groups
                .entry(profile)
                .or_default()
                .push((Target::Line(i), job.id));
        }
        for e in self.sched.externals_to_watch() {
            let (profile, id) = self.externals[e].clone();
            groups
                .entry(profile)
                .or_default()
                .push((Target::External(e), id));
        }
        let mut changed = false;
        for (profile, targets) in groups {
            let bound = self.s.bound(&profile)?;
            let ids: Vec<String> = targets.iter().map(|(_, id)| id.clone()).collect();
            let results = bound.backend.statuses(&ids).await;
            for ((target, id), result) in targets.into_iter().zip(results) {
                match result {
                    Ok(job) => {
                        self.last_answer.insert(profile.clone(), Instant::now());
                        let job = self.s.finish_job(&bound, job);
                        changed |= self.observed(target, job)?;
                    }
                    Err(e) => {
                        let e = e
                            .in_profile(&profile, bound.profile.backend.as_str())
                            .during("status");
                        if matches!(
                            e.kind,
                            ErrorKind::Auth | ErrorKind::Usage | ErrorKind::NotSupported
                        ) {
                            return Err(e);
                        }
                        let since = *self
                            .last_answer
                            .entry(profile.clone())
                            .or_insert_with(Instant::now);
                        if since.elapsed() >= Duration::from_secs(300) {
                            return Err(Error::unavailable(format!(
                                "profile '{profile}' gave no usable answer for 5 minutes; giving up (the jobs may still be running; run the same command again to resume)"
                            )));
                        }
                        let reference = format!("{profile}:{id}");
                        self.p.event(&PipelineEvent::Warning {
                            reference: &reference,
                            message: e.to_string(),
                            at: Utc::now(),
                        });
                        if self.p.mode == OutputMode::Table {
                            self.display
                                .note(self.p, &format!("warning: {reference}: {e} (will retry)"));
                        }
                    }
                }
            }
        }
        Ok(changed)
    }

    /// Takes in one observation; returns whether the state changed.
    fn observed(&mut self, target: Target, job: Job) -> Result<bool> {
        let prev = match target {
            Target::Line(i) => self.jobs[i].as_ref(),
            Target::External(e) => self.ext_jobs[e].as_ref(),
        };
        let changed =
            prev.is_none_or(|p| p.state != job.state || p.native_state != job.native_state);
        if changed {
            let (line, key) = match target {
                Target::Line(i) => (Some(self.line(i).line), Some(self.key(i))),
                Target::External(_) => (None, None),
            };
            self.p.event(&PipelineEvent::State {
                line,
                key,
                reference: &job.reference,
                state: job.state,
                native_state: job.native_state.as_deref(),
                at: Utc::now(),
                job: &job,
            });
            if self.p.mode == OutputMode::Table {
                self.display.change(
                    self.p,
                    &format!(
                        "{}  {}",
                        job.reference,
                        crate::output::paint_state(job.state, job.state.as_str())
                    ),
                );
            }
        }
        let terminal = job.terminal;
        let state = job.state;
        match target {
            Target::External(e) => {
                self.ext_jobs[e] = Some(job);
                if terminal {
                    let blocked = self.sched.external_finished(e, state);
                    self.announce_blocked(&blocked);
                }
            }
            Target::Line(i) => {
                self.jobs[i] = Some(job);
                if terminal {
                    self.line_finished(i, state)?;
                }
            }
        }
        Ok(changed)
    }

    fn line_finished(&mut self, i: usize, state: JobState) -> Result<()> {
        let Status::Running { attempt, job } = self.sched.status[i].clone() else {
            return Ok(());
        };
        let key = self.key(i).to_string();
        append(
            self.journal.as_deref(),
            &Record::Finished {
                line: self.line(i).line,
                key: key.clone(),
                attempt,
                state,
            },
        )?;
        match self.sched.finished(i, state) {
            Finish::Retry { next, delay } => {
                self.retry_at[i] = Some(Instant::now() + delay);
                self.p.event(&PipelineEvent::Retry {
                    line: self.line(i).line,
                    key: &key,
                    reference: &job.reference,
                    attempt: next,
                    attempt_key: attempt_key(&key, next),
                    delay_ms: delay.as_millis(),
                });
                if self.p.mode == OutputMode::Table {
                    self.display.note(
                        self.p,
                        &format!(
                            "{}  {} failed; attempt {next} of {} in {}",
                            self.line(i).line,
                            job.reference,
                            self.line(i).retries + 1,
                            humantime::format_duration(delay)
                        ),
                    );
                }
            }
            Finish::Done { blocked, .. } => self.announce_blocked(&blocked),
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Target {
    Line(usize),
    External(usize),
}
