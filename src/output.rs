//! The one printer: every command returns a [`Report`], and only this module decides how it
//! looks in `table`, `json`, `ndjson` or `quiet` mode (README "Output"). It also shows what
//! the watch engine reports ([`WatchView`]: ndjson events, notes, the live terminal display).

use crate::error::Error;
use crate::ledger::Entry;
use crate::model::{AbortOutcome, Artifact, Check, Job, JobState, QueueInfo};
use crate::watch::{Event, Observer};
use chrono::Utc;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use serde::Serialize;
use serde_json::{Value, json};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod live;

use live::{Board, Frame, LiveModel, Stage};

/// Output mode of `-o/--output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputMode {
    /// Aligned columns for people.
    Table,
    /// Exactly one JSON value on stdout.
    Json,
    /// One JSON object per line; events for watch/wait/batch.
    Ndjson,
    /// References only, or nothing.
    Quiet,
}

/// A row of `profiles`.
#[derive(Debug, Clone, Serialize)]
pub struct ProfileRow {
    /// Profile name.
    pub name: String,
    /// Backend.
    pub backend: String,
    /// URL, if configured.
    pub url: Option<String>,
    /// Whether credentials are present (never the credentials).
    pub credentials: bool,
    /// `built-in` or `config file`.
    pub source: String,
    /// Whether it is the selected profile.
    pub selected: bool,
    /// Capabilities of its backend.
    pub capabilities: Vec<String>,
    /// Why the backend could not be built, if it could not.
    pub error: Option<String>,
}

/// One `abort` outcome.
#[derive(Debug, Clone)]
pub struct AbortRow {
    /// The job reference.
    pub reference: String,
    /// What happened.
    pub outcome: Result<AbortOutcome, Error>,
}

/// One `batch` outcome (README "Batch").
#[derive(Debug, Clone, Serialize)]
pub struct BatchRow {
    /// Line number in the batch file.
    pub line: usize,
    /// Idempotency key used.
    pub key: Option<String>,
    /// Reference, when submitted.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// `submitted`, `skipped`, `reconciled`, `unknown` or `failed`.
    pub outcome: &'static str,
    /// Error, when failed or unknown (the `error` object of an error answer).
    pub error: Option<Value>,
    /// With `--wait`: the job's final state (`null` when there is no job); absent otherwise.
    /// Boxed: a batch holds a row per line, and most never carry a job.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job: Option<Option<Box<Job>>>,
}

impl BatchRow {
    /// What a person reads for this line: the reference or the error, and why it was skipped.
    fn describe(&self) -> String {
        let message = self
            .error
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Value::as_str);
        match (self.outcome, message) {
            ("skipped", _) => "already submitted in an earlier run".to_string(),
            (_, Some(m)) => m.to_string(),
            _ => String::new(),
        }
    }
}

/// One line of a pipeline run (`batch --wait`): the batch row plus where the line ended.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineRow {
    /// Line number in the batch file.
    pub line: usize,
    /// The line's key (attempts use `KEY#2`…).
    pub key: Option<String>,
    /// Reference of the last attempt's job, when one was submitted.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// How the line was first decided: `submitted`, `reconciled`, `skipped` (done in an
    /// earlier run of the same journal), `failed` (refused), `blocked`, or `pending` (the run
    /// stopped before its turn).
    pub outcome: String,
    /// Error of a refused submission.
    pub error: Option<Value>,
    /// Where the line ended: a job state, `blocked`, `not submitted`, `waiting`, `retrying`.
    pub state: String,
    /// Attempts submitted.
    pub attempts: u32,
    /// Profile of the line.
    pub profile: String,
    /// Prerequisites still awaited.
    pub waiting_on: Vec<String>,
    /// Why it is blocked or was not submitted.
    pub reason: Option<String>,
    /// The last attempt's job as last observed (null when there is none).
    pub job: Option<Job>,
}

/// What a command produced.
// One value per invocation, never stored in bulk: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Report {
    /// Nothing to print.
    Nothing,
    /// Jobs (and per-job errors); `single` prints an object rather than an array in json.
    Jobs {
        /// Jobs or the errors met reading them.
        items: Vec<Result<Job, Error>>,
        /// One reference was asked for.
        single: bool,
        /// The reference of each item, in order (`status`), so an error object says which
        /// job it is about; empty when the items are not answers to references (`list`).
        refs: Vec<String>,
    },
    /// A submitted job; `existing` when `--key` matched an earlier submission.
    Submitted {
        /// The job.
        job: Job,
        /// Whether it was an earlier submission.
        existing: bool,
    },
    /// Ledger entries.
    History(Vec<Entry>),
    /// Profiles.
    Profiles(Vec<ProfileRow>),
    /// Doctor checks of one profile, after each was shown with [`Printer::doctor_check`]:
    /// json prints them in one document, ndjson the `result` event, table nothing more.
    Doctor {
        /// Profile.
        profile: String,
        /// Backend.
        backend: String,
        /// Checks.
        checks: Vec<Check>,
        /// Exit code of the command.
        exit_code: i32,
    },
    /// Files written by fetch.
    Artifacts(Vec<Artifact>),
    /// Abort outcomes.
    Aborts(Vec<AbortRow>),
    /// Final state of watched jobs (json mode; ndjson already streamed the result event).
    WatchResult {
        /// Exit code of the wait.
        exit_code: i32,
        /// The jobs.
        jobs: Vec<Job>,
    },
    /// Batch outcomes.
    Batch(Vec<BatchRow>),
    /// A pipeline run's lines (`batch --wait`).
    Pipeline(Vec<PipelineRow>),
    /// The levels `batch --dry-run` would run (objects with `level`, `line`, `key`…).
    PipelinePlan(Vec<Value>),
    /// Queues of one profile.
    Queues(Vec<QueueInfo>),
    /// A message for people (stderr in every mode).
    Message(String),
    /// Text printed as is (completion scripts).
    Raw(String),
}

/// Renders reports, errors and events.
#[derive(Debug, Clone)]
pub struct Printer {
    /// Output mode.
    pub mode: OutputMode,
    /// Use colour on stdout.
    pub color: bool,
    /// Progress display allowed (stderr is a terminal, table mode, no --no-progress).
    pub progress: bool,
}

impl Printer {
    /// A printer for `mode`, deciding colour and progress from the terminal and flags.
    pub fn new(mode: OutputMode, color: Option<bool>, no_progress: bool) -> Self {
        let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color = color.unwrap_or(!no_color_env && std::io::stdout().is_terminal());
        // A terminal that cannot move the cursor (`TERM` unset or `dumb`) gets the plain
        // lines: indicatif would draw nothing there, leaving a wait silent.
        let progress = !no_progress
            && mode == OutputMode::Table
            && std::io::stderr().is_terminal()
            && !console::is_dumb();
        console::set_colors_enabled(color);
        Printer {
            mode,
            color,
            progress,
        }
    }

    fn out(&self, line: &str) {
        let mut stdout = std::io::stdout().lock();
        // A closed pipe (`jobctl list | head`) is not an error worth a panic.
        let _ = writeln!(stdout, "{line}");
    }

    fn json_out(&self, v: &impl Serialize) {
        let text = if self.mode == OutputMode::Json {
            serde_json::to_string_pretty(v)
        } else {
            serde_json::to_string(v)
        };
        if let Ok(t) = text {
            self.out(&t);
        }
    }

    /// Prints a watch/batch event (ndjson mode only).
    pub fn event(&self, ev: &impl Serialize) {
        if self.mode == OutputMode::Ndjson {
            self.json_out(ev);
        }
    }

    /// A line for people on stderr (table mode), e.g. state changes when not on a terminal.
    pub fn note(&self, line: &str) {
        if self.mode == OutputMode::Table {
            eprintln!("{line}");
        }
    }

    /// A warning on stderr, in every mode.
    pub fn warn(&self, line: &str) {
        eprintln!("warning: {line}");
    }

    /// Reports an error: a message on stderr, plus an error object on stdout in json/ndjson.
    pub fn error(&self, e: &Error) {
        eprintln!("jobctl: error: {e}");
        if matches!(self.mode, OutputMode::Json | OutputMode::Ndjson) {
            self.json_out(&error_json(e));
        }
    }

    /// Reports an error inside an ndjson event stream as an event line
    /// (`{"event":"error","ref":…,"error":{…}}`); elsewhere like [`Self::error`].
    pub fn error_event(&self, e: &Error) {
        if self.mode != OutputMode::Ndjson {
            return self.error(e);
        }
        eprintln!("jobctl: error: {e}");
        let mut v = error_json(e);
        if let Value::Object(m) = &mut v {
            m.insert("event".into(), Value::String("error".into()));
            m.insert(
                "ref".into(),
                e.reference.clone().map_or(Value::Null, Value::String),
            );
        }
        self.json_out(&v);
    }

    /// Renders a report.
    pub fn render(&self, report: Report) {
        match report {
            Report::Nothing => {}
            Report::Jobs {
                items,
                single,
                refs,
            } => self.jobs(items, single, &refs),
            Report::Submitted { job, existing } => self.submitted(&job, existing),
            Report::History(entries) => self.history(&entries),
            Report::Profiles(rows) => self.profiles(&rows),
            Report::Doctor {
                profile,
                backend,
                checks,
                exit_code,
            } => self.doctor(&profile, &backend, &checks, exit_code),
            Report::Artifacts(a) => self.artifacts(&a),
            Report::Aborts(rows) => self.aborts(&rows),
            Report::WatchResult { exit_code, jobs } => match self.mode {
                OutputMode::Json => self.json_out(&json!({"exit_code": exit_code, "jobs": jobs})),
                OutputMode::Table => self.job_table(&jobs),
                OutputMode::Ndjson | OutputMode::Quiet => {}
            },
            Report::Batch(rows) => self.batch(&rows),
            Report::Pipeline(rows) => self.pipeline(&rows),
            Report::PipelinePlan(rows) => self.pipeline_plan(&rows),
            Report::Queues(q) => self.queues(&q),
            Report::Message(m) => eprintln!("{m}"),
            Report::Raw(t) => {
                let mut stdout = std::io::stdout().lock();
                let _ = stdout.write_all(t.as_bytes());
            }
        }
    }

    fn jobs(&self, items: Vec<Result<Job, Error>>, single: bool, refs: &[String]) {
        for e in items.iter().filter_map(|r| r.as_ref().err()) {
            eprintln!("jobctl: error: {e}");
        }
        let item_json = |i: usize, it: &Result<Job, Error>| {
            let mut v = item_json(it);
            if let (Some(r), Value::Object(m)) = (refs.get(i).filter(|_| it.is_err()), &mut v) {
                m.insert("ref".into(), Value::String(r.clone()));
            }
            v
        };
        match self.mode {
            OutputMode::Json => {
                let values: Vec<Value> = items
                    .iter()
                    .enumerate()
                    .map(|(i, it)| item_json(i, it))
                    .collect();
                if single && values.len() == 1 {
                    self.json_out(&values[0]);
                } else {
                    self.json_out(&values);
                }
            }
            OutputMode::Ndjson => {
                for (i, it) in items.iter().enumerate() {
                    self.json_out(&item_json(i, it));
                }
            }
            OutputMode::Quiet => {
                for job in items.iter().filter_map(|r| r.as_ref().ok()) {
                    self.out(&job.reference);
                }
            }
            OutputMode::Table => {
                let jobs: Vec<Job> = items.into_iter().filter_map(Result::ok).collect();
                if !jobs.is_empty() || !single {
                    self.job_table(&jobs);
                }
            }
        }
    }

    fn job_table(&self, jobs: &[Job]) {
        let rows: Vec<Vec<String>> = jobs
            .iter()
            .map(|j| {
                vec![
                    j.reference.clone(),
                    j.state.to_string(),
                    j.native_state.clone().unwrap_or_default(),
                    j.exit_code.map(|c| c.to_string()).unwrap_or_default(),
                    j.name.clone().unwrap_or_default(),
                    j.created_at
                        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
                        .unwrap_or_default(),
                    j.reason.clone().unwrap_or_default(),
                ]
            })
            .collect();
        let states: Vec<JobState> = jobs.iter().map(|j| j.state).collect();
        self.table(
            &[
                "REF",
                "STATE",
                "NATIVE",
                "EXIT",
                "NAME",
                "CREATED (UTC)",
                "REASON",
            ],
            &rows,
            |col, row, text| {
                if col == 1 {
                    paint_state(states[row], text)
                } else {
                    text.to_string()
                }
            },
        );
    }

    fn table(
        &self,
        header: &[&str],
        rows: &[Vec<String>],
        paint: impl Fn(usize, usize, &str) -> String,
    ) {
        // Drop columns that are empty in every row (other than REF/STATE), to keep it narrow.
        let keep: Vec<usize> = (0..header.len())
            .filter(|&c| c < 2 || rows.iter().any(|r| !r[c].is_empty()))
            .collect();
        let widths: Vec<usize> = keep
            .iter()
            .map(|&c| {
                rows.iter()
                    .map(|r| r[c].chars().count())
                    .chain([header[c].len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |cells: Vec<String>, raw: &[String]| {
            let mut s = String::new();
            for (i, cell) in cells.iter().enumerate() {
                let last = i + 1 == cells.len();
                s.push_str(cell);
                if !last {
                    let pad = widths[i].saturating_sub(raw[i].chars().count()) + 2;
                    s.push_str(&" ".repeat(pad));
                }
            }
            s
        };
        let head: Vec<String> = keep.iter().map(|&c| header[c].to_string()).collect();
        // Built whole and written at once: a 10,000-row table is one write, not 10,000.
        let mut text = line(head.clone(), &head).trim_end().to_string();
        for (ri, r) in rows.iter().enumerate() {
            let raw: Vec<String> = keep.iter().map(|&c| r[c].clone()).collect();
            let painted: Vec<String> = keep.iter().map(|&c| paint(c, ri, &r[c])).collect();
            text.push('\n');
            text.push_str(line(painted, &raw).trim_end());
        }
        self.out(&text);
    }

    fn submitted(&self, job: &Job, existing: bool) {
        match self.mode {
            OutputMode::Quiet => self.out(&job.reference),
            OutputMode::Json => {
                let mut v = serde_json::to_value(job).unwrap_or(Value::Null);
                if let Value::Object(m) = &mut v {
                    m.insert("existing".into(), Value::Bool(existing));
                }
                self.json_out(&v)
            }
            OutputMode::Ndjson => {
                self.json_out(&json!({"event": "submitted", "ref": job.reference, "existing": existing, "job": job}))
            }
            OutputMode::Table => self.out(&job.reference),
        }
    }

    fn history(&self, entries: &[Entry]) {
        let value = |e: &Entry| {
            json!({"ref": e.reference, "profile": e.profile, "backend": e.backend, "id": e.id,
                   "key": e.key, "name": e.name, "status": e.status, "error": e.error,
                   "submitted_at": e.submitted_at, "spec": e.spec})
        };
        match self.mode {
            OutputMode::Json => self.json_out(&entries.iter().map(value).collect::<Vec<_>>()),
            OutputMode::Ndjson => entries.iter().for_each(|e| self.json_out(&value(e))),
            OutputMode::Quiet => entries
                .iter()
                .filter_map(|e| e.reference.as_deref())
                .for_each(|r| self.out(r)),
            OutputMode::Table => {
                let rows: Vec<Vec<String>> = entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.reference
                                .clone()
                                .unwrap_or_else(|| format!("{}:-", e.profile)),
                            e.status.clone(),
                            e.submitted_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            e.key.clone().unwrap_or_default(),
                            e.name.clone().unwrap_or_default(),
                            e.error.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                self.table(
                    &["REF", "STATUS", "SUBMITTED (UTC)", "KEY", "NAME", "ERROR"],
                    &rows,
                    |_, _, t| t.to_string(),
                );
            }
        }
    }

    fn profiles(&self, rows: &[ProfileRow]) {
        match self.mode {
            OutputMode::Json => self.json_out(&rows),
            OutputMode::Ndjson => rows.iter().for_each(|r| self.json_out(r)),
            OutputMode::Quiet => rows.iter().for_each(|r| self.out(&r.name)),
            OutputMode::Table => {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            format!("{}{}", if r.selected { "*" } else { " " }, r.name),
                            r.backend.clone(),
                            r.url.clone().unwrap_or_else(|| "-".into()),
                            if r.credentials { "yes" } else { "no" }.into(),
                            r.source.clone(),
                            r.error.clone().unwrap_or_else(|| r.capabilities.join(",")),
                        ]
                    })
                    .collect();
                self.table(
                    &[
                        "PROFILE",
                        "BACKEND",
                        "URL",
                        "CREDENTIALS",
                        "SOURCE",
                        "CAPABILITIES",
                    ],
                    &t,
                    |_, _, t| t.to_string(),
                );
            }
        }
    }

    fn queues(&self, queues: &[QueueInfo]) {
        match self.mode {
            OutputMode::Json => self.json_out(&queues),
            OutputMode::Ndjson => queues.iter().for_each(|q| self.json_out(q)),
            OutputMode::Quiet => queues.iter().for_each(|q| self.out(&q.name)),
            OutputMode::Table => {
                // Columns are the union of every queue's limits, in first-seen order, so
                // platforms with different limit names share one printer.
                let mut keys: Vec<&str> = Vec::new();
                for q in queues {
                    for k in q.limits.keys() {
                        if !keys.contains(&k.as_str()) {
                            keys.push(k);
                        }
                    }
                }
                let mut headers: Vec<String> = vec!["QUEUE".into()];
                headers.extend(keys.iter().map(|k| k.to_uppercase()));
                headers.push("DESCRIPTION".into());
                let rows: Vec<Vec<String>> = queues
                    .iter()
                    .map(|q| {
                        let mut row = vec![q.name.clone()];
                        row.extend(keys.iter().map(|k| match q.limits.get(*k) {
                            None | Some(Value::Null) => "-".to_string(),
                            Some(Value::String(s)) => s.clone(),
                            Some(v) => v.to_string(),
                        }));
                        row.push(q.description.clone().unwrap_or_else(|| "-".into()));
                        row
                    })
                    .collect();
                let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
                self.table(&headers, &rows, |_, _, t| t.to_string());
            }
        }
    }

    /// Opens `doctor`'s output: the profile line in table mode, before any check is known.
    pub fn doctor_start(&self, profile: &str, backend: &str) {
        if self.mode == OutputMode::Table {
            self.out(&format!("profile {profile} (backend {backend})"));
        }
    }

    /// One `doctor` check, shown the moment it is decided so that a check that hangs does not
    /// hide the ones before it: a line in table mode, a `check` event in ndjson mode. Json
    /// mode prints every check in one document at the end ([`Report::Doctor`]).
    pub fn doctor_check(&self, profile: &str, backend: &str, c: &Check) {
        match self.mode {
            OutputMode::Table => {
                let mark = if c.ok {
                    console::style("ok  ").green().to_string()
                } else {
                    console::style("FAIL").red().to_string()
                };
                self.out(&format!("  {mark} {:<16} {}", c.name, c.detail));
            }
            OutputMode::Ndjson => self.json_out(&json!({
                "event": "check", "profile": profile, "backend": backend,
                "name": c.name, "ok": c.ok, "detail": c.detail})),
            OutputMode::Json | OutputMode::Quiet => {}
        }
        // A reader of a pipe sees the line now, not when the last check is done.
        let _ = std::io::stdout().lock().flush();
    }

    fn doctor(&self, profile: &str, backend: &str, checks: &[Check], exit_code: i32) {
        let ok = checks.iter().all(|c| c.ok);
        match self.mode {
            OutputMode::Json => self.json_out(&json!({
                "profile": profile, "backend": backend, "ok": ok, "checks": checks})),
            OutputMode::Ndjson => self.json_out(&json!({
                "event": "result", "profile": profile, "backend": backend, "ok": ok,
                "exit_code": exit_code})),
            // Table lines were shown one by one as the checks were decided.
            OutputMode::Table | OutputMode::Quiet => {}
        }
    }

    fn artifacts(&self, arts: &[Artifact]) {
        match self.mode {
            OutputMode::Json => self.json_out(&arts),
            OutputMode::Ndjson => arts.iter().for_each(|a| self.json_out(a)),
            OutputMode::Quiet => arts
                .iter()
                .for_each(|a| self.out(&a.path.display().to_string())),
            OutputMode::Table => {
                for a in arts {
                    self.out(&format!("{}  ({} bytes)", a.path.display(), a.bytes));
                    for e in &a.entries {
                        self.out(&format!("  {e}"));
                    }
                }
            }
        }
    }

    fn aborts(&self, rows: &[AbortRow]) {
        let value = |r: &AbortRow| match &r.outcome {
            Ok(o) => json!({"ref": r.reference, "outcome": o}),
            Err(e) => {
                json!({"ref": r.reference, "outcome": "failed", "error": error_json(e)["error"]})
            }
        };
        for r in rows {
            match &r.outcome {
                Ok(AbortOutcome::AlreadyTerminal) => {
                    eprintln!("{}: already finished, nothing to cancel", r.reference)
                }
                Err(e) => eprintln!("jobctl: error: {e}"),
                Ok(AbortOutcome::Requested) => {}
            }
        }
        match self.mode {
            OutputMode::Json => self.json_out(&rows.iter().map(value).collect::<Vec<_>>()),
            OutputMode::Ndjson => rows.iter().for_each(|r| self.json_out(&value(r))),
            OutputMode::Quiet => {}
            OutputMode::Table => {
                for r in rows {
                    if let Ok(AbortOutcome::Requested) = r.outcome {
                        self.out(&format!("{}  cancellation requested", r.reference));
                    }
                }
            }
        }
    }

    fn batch(&self, rows: &[BatchRow]) {
        match self.mode {
            OutputMode::Json => self.json_out(&rows),
            // Streamed line by line as decided.
            OutputMode::Ndjson => {}
            OutputMode::Quiet => rows
                .iter()
                .filter_map(|r| r.reference.as_deref())
                .for_each(|r| self.out(r)),
            OutputMode::Table => {
                let waited = rows.iter().any(|r| r.job.is_some());
                let states: Vec<Option<JobState>> = rows
                    .iter()
                    .map(|r| r.job.as_ref().and_then(|j| j.as_ref()).map(|j| j.state))
                    .collect();
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .zip(&states)
                    .map(|(r, state)| {
                        let mut cols = vec![
                            r.line.to_string(),
                            r.outcome.to_string(),
                            r.reference.clone().unwrap_or_else(|| "-".into()),
                        ];
                        if waited {
                            cols.push(state.map(|s| s.to_string()).unwrap_or_default());
                        }
                        cols.push(r.describe());
                        cols
                    })
                    .collect();
                let header: &[&str] = if waited {
                    &["LINE", "OUTCOME", "REF", "STATE", "NOTE"]
                } else {
                    &["LINE", "OUTCOME", "REF", "NOTE"]
                };
                self.table(header, &table, |col, row, text| match (col, states[row]) {
                    (3, Some(state)) if waited => paint_state(state, text),
                    _ => text.to_string(),
                });
            }
        }
    }

    /// A batch line as it is decided: ndjson prints `{"event":"line",…}` at once; the other
    /// modes print every line, in line order, at the end.
    pub fn batch_line(&self, row: &BatchRow) {
        if self.mode == OutputMode::Ndjson {
            if let Ok(Value::Object(mut m)) = serde_json::to_value(row) {
                m.insert("event".into(), Value::String("line".into()));
                self.json_out(&m);
            }
        }
    }
}

impl Printer {
    fn pipeline(&self, rows: &[PipelineRow]) {
        match self.mode {
            OutputMode::Json => self.json_out(&rows),
            OutputMode::Ndjson => {}
            OutputMode::Quiet => rows
                .iter()
                .filter_map(|r| r.reference.as_deref())
                .for_each(|r| self.out(r)),
            OutputMode::Table => {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.line.to_string(),
                            r.state.clone(),
                            r.key.clone().unwrap_or_default(),
                            r.reference.clone().unwrap_or_default(),
                            if r.attempts > 1 {
                                r.attempts.to_string()
                            } else {
                                String::new()
                            },
                            r.reason
                                .clone()
                                .or_else(|| r.job.as_ref().and_then(|j| j.reason.clone()))
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                let states: Vec<Option<JobState>> =
                    rows.iter().map(|r| r.state.parse().ok()).collect();
                self.table(
                    &["LINE", "STATE", "KEY", "REF", "ATTEMPTS", "REASON"],
                    &t,
                    |col, row, text| match (col, states[row]) {
                        (1, Some(s)) => paint_state(s, text),
                        _ => text.to_string(),
                    },
                );
            }
        }
    }

    fn pipeline_plan(&self, rows: &[Value]) {
        match self.mode {
            OutputMode::Json => self.json_out(&rows),
            OutputMode::Ndjson => rows.iter().for_each(|r| self.json_out(r)),
            OutputMode::Quiet => {}
            OutputMode::Table => {
                let t: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        let s = |k: &str| match &r[k] {
                            Value::String(s) => s.clone(),
                            Value::Null => String::new(),
                            Value::Array(a) => a
                                .iter()
                                .map(|x| x.as_str().unwrap_or_default().to_string())
                                .collect::<Vec<_>>()
                                .join(","),
                            Value::Number(n) if k == "retries" && n.as_u64() == Some(0) => {
                                String::new()
                            }
                            other => other.to_string(),
                        };
                        vec![
                            s("level"),
                            s("line"),
                            s("key"),
                            s("profile"),
                            s("name"),
                            s("after"),
                            s("retries"),
                        ]
                    })
                    .collect();
                self.table(
                    &[
                        "LEVEL", "LINE", "KEY", "PROFILE", "NAME", "AFTER", "RETRIES",
                    ],
                    &t,
                    |_, _, t| t.to_string(),
                );
            }
        }
    }

    /// A pipeline line as soon as it is decided (table: `LINE  REF  outcome`; ndjson: the
    /// object with `"event":"line"`).
    pub fn pipeline_line(&self, row: &PipelineRow) {
        match self.mode {
            OutputMode::Ndjson => {
                if let Ok(Value::Object(mut m)) = serde_json::to_value(row) {
                    m.insert("event".into(), Value::from("line"));
                    self.json_out(&m);
                }
            }
            OutputMode::Table => {
                let what = match (&row.reference, &row.error, &row.reason) {
                    (Some(r), _, _) => format!("{r}  {}", row.outcome),
                    (None, Some(e), _) => format!(
                        "failed: {}",
                        e.get("message").and_then(Value::as_str).unwrap_or("error")
                    ),
                    (None, None, Some(reason)) => format!("{}: {reason}", row.outcome),
                    (None, None, None) => row.outcome.clone(),
                };
                let line = format!("{}  {what}", row.line);
                self.out(&line);
            }
            _ => {}
        }
    }
}

/// The live view of a pipeline on a terminal: a summary (bar, counts per stage, elapsed)
/// and one line per batch line (state, attempt, what it waits on) — or, when the lines do not
/// fit the terminal, the latest changes and "+N more" — with a final summary line left on
/// stderr; state changes as plain lines on stderr otherwise.
#[derive(Debug)]
pub struct PipelineDisplay {
    board: Option<Arc<Mutex<Board>>>,
    bar: ProgressBar,
    finished: AtomicBool,
}

impl PipelineDisplay {
    /// A display for `sched`'s lines; live only where the printer allows progress.
    pub fn new(p: &Printer, sched: &crate::pipeline::Scheduler) -> Self {
        let hidden = || PipelineDisplay {
            board: None,
            bar: ProgressBar::hidden(),
            finished: AtomicBool::new(false),
        };
        if !p.progress {
            return hidden();
        }
        let names = sched
            .plan
            .lines
            .iter()
            .map(|l| format!("{:>4} {}", l.line, l.key()))
            .collect();
        let board = Arc::new(Mutex::new(Board::new(names)));
        let drawn = board.clone();
        let Some(bar) = live_bar(move |frame| drawn.lock().map(|b| b.render(frame)).ok()) else {
            return hidden();
        };
        PipelineDisplay {
            board: Some(board),
            bar,
            finished: AtomicBool::new(false),
        }
    }

    /// Updates the lines whose status or job changed since the last update.
    pub fn update(&self, sched: &crate::pipeline::Scheduler, jobs: &[Option<Job>]) {
        let Some(Ok(mut board)) = self.board.as_ref().map(|b| b.lock()) else {
            return;
        };
        for (i, status) in sched.status.iter().enumerate() {
            let job = jobs.get(i).and_then(Option::as_ref);
            let print = fingerprint(sched, i, job);
            if board.fingerprint(i) != Some(print) {
                let (stage, text) = pipeline_text(sched, i, status, job);
                board.set(i, print, stage, text);
            }
        }
    }

    /// A line for people on stderr, above the live view when there is one.
    pub fn note(&self, p: &Printer, line: &str) {
        self.suspend(|| p.note(line));
    }

    /// Runs `f` (which prints) with the live view out of the way.
    pub fn suspend(&self, f: impl FnOnce()) {
        self.bar.suspend(f);
    }

    /// A state change for people: on stderr when there is no live view (which shows it).
    pub fn change(&self, p: &Printer, line: &str) {
        if self.board.is_none() {
            p.note(line);
        }
    }

    /// Removes the live view, leaving its final summary line on stderr (once).
    pub fn clear(&self) {
        if self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        self.bar.finish_and_clear();
        let elapsed = self.bar.elapsed();
        if let Some(Ok(b)) = self.board.as_ref().map(|b| b.lock()) {
            eprintln!("{}", b.final_line(elapsed));
        }
    }
}

/// What line `i`'s text is made of, hashed: the text is composed again only when it changes.
fn fingerprint(sched: &crate::pipeline::Scheduler, i: usize, job: Option<&Job>) -> u64 {
    use crate::pipeline::Status;
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    match &sched.status[i] {
        Status::Waiting => (0, sched.waiting_on(i)).hash(&mut h),
        Status::Submitting { attempt } => (1, attempt).hash(&mut h),
        Status::Running { attempt, job: out } => {
            (2, attempt, &out.reference).hash(&mut h);
            job.map(|j| (j.state, &j.native_state, j.progress.map(f64::to_bits)))
                .hash(&mut h);
        }
        Status::RetryDue { next } => (3, next).hash(&mut h),
        Status::Done {
            attempts,
            job: out,
            state,
        } => (4, attempts, &out.reference, state).hash(&mut h),
        Status::SubmitFailed { error, .. } => (5, error).hash(&mut h),
        Status::Blocked { reason } => (6, reason).hash(&mut h),
    }
    // 0 stands for "never drawn".
    h.finish() | 1
}

/// A pipeline line's stage and text (after its number and key).
fn pipeline_text(
    sched: &crate::pipeline::Scheduler,
    i: usize,
    status: &crate::pipeline::Status,
    job: Option<&Job>,
) -> (Stage, String) {
    use crate::pipeline::Status;
    match status {
        Status::Waiting => {
            let on = sched.waiting_on(i);
            let text = if on.is_empty() {
                "ready".to_string()
            } else {
                format!("waiting on {}", on.join(", "))
            };
            (Stage::Waiting, text)
        }
        Status::Submitting { attempt } => {
            (Stage::Submitting, format!("submitting (attempt {attempt})"))
        }
        Status::Running { attempt, job: out } => {
            let state = job.map_or_else(|| "submitted".to_string(), state_text);
            let again = if *attempt > 1 {
                format!("  (attempt {attempt})")
            } else {
                String::new()
            };
            let stage = Stage::Job(job.map_or(JobState::Queued, |j| j.state));
            (stage, format!("{}  {state}{again}", out.reference))
        }
        Status::RetryDue { next } => (Stage::Retrying, format!("failed; attempt {next} soon")),
        Status::Done {
            attempts,
            job: out,
            state,
        } => {
            let done = format!("{}  {}", out.reference, paint_state(*state, state.as_str()));
            let text = if *attempts > 1 {
                format!("{done}  ({attempts} attempts)")
            } else {
                done
            };
            (Stage::Job(*state), text)
        }
        Status::SubmitFailed { error, .. } => (
            Stage::NotSubmitted,
            format!(
                "{}: {error}",
                paint_state(JobState::Failed, "not submitted")
            ),
        ),
        Status::Blocked { reason } => (
            Stage::Blocked,
            format!("{}: {reason}", paint_state(JobState::Canceled, "blocked")),
        ),
    }
}

/// One indicatif line on stderr whose text is `render`'s frame, computed at draw time (so the
/// terminal's size and the elapsed times are current on every tick, not only when a poll
/// answers). `None` when the template cannot be built.
fn live_bar(
    render: impl Fn(&Frame) -> Option<Vec<String>> + Clone + Send + Sync + 'static,
) -> Option<ProgressBar> {
    let frame = move |state: &ProgressState, out: &mut dyn std::fmt::Write| {
        let (rows, cols) = console::Term::stderr().size();
        let frame = Frame {
            // The spinner and its space take two columns of the first line; the other lines
            // are indented to match.
            width: usize::from(cols).saturating_sub(2),
            height: usize::from(rows),
            elapsed: state.elapsed(),
            now: Utc::now(),
        };
        if let Some(lines) = render(&frame) {
            let _ = out.write_str(&lines.join("\n  "));
        }
    };
    let style = ProgressStyle::with_template("{spinner} {frame}").ok()?;
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(style.with_key("frame", frame));
    bar.enable_steady_tick(Duration::from_millis(150));
    Some(bar)
}

/// The `{"error": {...}}` object of json and ndjson output (README "Output").
pub fn error_json(e: &Error) -> Value {
    json!({"error": {
        "kind": e.kind,
        "message": e.to_string(),
        "profile": e.profile,
        "backend": e.backend,
        "code": e.code,
        "retryable": e.retryable,
    }})
}

fn item_json(it: &Result<Job, Error>) -> Value {
    match it {
        Ok(j) => serde_json::to_value(j).unwrap_or(Value::Null),
        Err(e) => {
            let mut v = error_json(e);
            if let (Some(r), Value::Object(m)) = (&e.reference, &mut v) {
                m.insert("ref".into(), Value::String(r.clone()));
            }
            v
        }
    }
}

/// Colours a state name for people.
pub fn paint_state(state: JobState, text: &str) -> String {
    let s = console::style(text);
    match state {
        JobState::Succeeded => s.green(),
        JobState::Failed => s.red(),
        JobState::Canceled | JobState::Cancelling => s.yellow(),
        JobState::Running => s.cyan(),
        _ => s,
    }
    .to_string()
}

/// How a wait looks: every event as an ndjson line (ndjson mode), state changes as notes on
/// stderr (table mode without a terminal, where asked), warnings on stderr (table mode), and
/// the live display on a terminal, which leaves a summary line behind when the wait ends.
pub struct WatchView<'a> {
    printer: &'a Printer,
    notes: bool,
    display: LiveDisplay,
}

impl<'a> WatchView<'a> {
    /// The view of a wait for `targets` (profile, id); `live` asks for the terminal display,
    /// which appears only where the printer allows progress output, and for notes on stderr
    /// where it does not.
    pub fn new(printer: &'a Printer, live: bool, targets: &[(String, String)]) -> Self {
        WatchView {
            printer,
            notes: live && !printer.progress,
            display: LiveDisplay::new(live && printer.progress, targets),
        }
    }

    /// The view of `batch --wait`: the live display on a terminal, but no per-change notes
    /// elsewhere (the batch's rows say where every line ended).
    pub fn without_notes(printer: &'a Printer, targets: &[(String, String)]) -> Self {
        WatchView {
            printer,
            notes: false,
            display: LiveDisplay::new(printer.progress, targets),
        }
    }

    /// Removes the live display and prints its final summary line (before the final report
    /// is printed).
    pub fn finish(&self) {
        self.display.finish();
    }
}

impl Observer for WatchView<'_> {
    fn event(&self, event: &Event<'_>) {
        self.printer.event(event);
        match event {
            Event::State { job, .. } => {
                self.display.show(job);
                if self.notes {
                    self.printer
                        .note(&format!("{}  {}", job.reference, state_text(job)));
                }
            }
            Event::Progress { job, .. } => self.display.show(job),
            Event::Warning {
                reference, message, ..
            } => {
                if self.printer.mode == OutputMode::Table {
                    let what = reference.map(|r| format!("{r}: ")).unwrap_or_default();
                    self.display
                        .suspend(|| self.printer.warn(&format!("{what}{message} (will retry)")));
                }
            }
            Event::Result { .. } => {}
        }
    }

    fn round(&self, jobs: &[Option<Job>], _started: Instant) {
        self.display.update(jobs);
    }
}

/// A painted state, with the native state when it says more: `running (RUNNING_HOT)`.
fn state_text(j: &Job) -> String {
    format!(
        "{}{}",
        paint_state(j.state, j.state.as_str()),
        j.native_state
            .as_deref()
            .filter(|n| *n != j.state.as_str())
            .map(|n| format!(" ({n})"))
            .unwrap_or_default()
    )
}

/// The live terminal display: one indicatif line whose text is the [`LiveModel`]'s frame,
/// redrawn on a steady tick at the terminal's current size.
struct LiveDisplay {
    model: Option<Arc<Mutex<LiveModel>>>,
    bar: ProgressBar,
    finished: AtomicBool,
}

impl LiveDisplay {
    fn new(live: bool, targets: &[(String, String)]) -> Self {
        let hidden = || LiveDisplay {
            model: None,
            bar: ProgressBar::hidden(),
            finished: AtomicBool::new(false),
        };
        if !live {
            return hidden();
        }
        let model = Arc::new(Mutex::new(LiveModel::new(targets)));
        let drawn = model.clone();
        let Some(bar) = live_bar(move |frame| drawn.lock().map(|m| m.render(frame)).ok()) else {
            return hidden();
        };
        LiveDisplay {
            model: Some(model),
            bar,
            finished: AtomicBool::new(false),
        }
    }

    fn with_model(&self, f: impl FnOnce(&mut LiveModel)) {
        if let Some(m) = &self.model {
            if let Ok(mut m) = m.lock() {
                f(&mut m);
            }
        }
    }

    /// Shows one job's news at once, without waiting for the round to end.
    fn show(&self, job: &Job) {
        self.with_model(|m| {
            if let Some(i) = m.position(&job.reference) {
                m.observe(i, job);
            }
        });
    }

    fn update(&self, jobs: &[Option<Job>]) {
        self.with_model(|m| m.observe_all(jobs));
    }

    fn suspend(&self, f: impl FnOnce()) {
        self.bar.suspend(f);
    }

    /// Clears the live area and leaves the final summary line on stderr (once).
    fn finish(&self) {
        if self.model.is_none() || self.finished.swap(true, Ordering::SeqCst) {
            return;
        }
        self.bar.finish_and_clear();
        let elapsed = self.bar.elapsed();
        self.with_model(|m| eprintln!("{}", m.final_line(elapsed)));
    }
}
