//! `batch`: submit every spec of a JSON-lines file, exactly once across re-runs, crashes and
//! faults.
//!
//! Each line gets an idempotency key (its own `key`, or one derived from the run, the line
//! number and the line's text), so the ledger — not the journal — decides what was already
//! submitted: a re-run skips what was done, reconciles what was sent without a usable answer,
//! and sends the rest. The journal (`FILE.journal`) keeps the run id (`--new-run` starts a new
//! one) and a line per decided spec for people and tools.

use super::Outcome;
use super::args::WaitTuning;
use super::commands::watch_options;
use super::submission::{Submission, SubmitOptions, prefetch, submit_spec};
use crate::error::{Error, ErrorKind, Result, exit};
use crate::model::{Job, JobSpec};
use crate::output::{BatchRow, OutputMode, Printer, Report, WatchView, error_json};
use crate::session::{Bound, Session};
use crate::watch::{self, Event};
use futures::StreamExt;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long an interrupted batch lets its in-flight submissions settle before it exits.
pub(super) const SETTLE_ON_INTERRUPT: Duration = Duration::from_secs(10);

/// Flags of `batch`.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Submissions in flight per profile (default: each profile's `max_in_flight`).
    pub concurrency: Option<usize>,
    /// Journal path (default: `FILE.journal`; none for stdin).
    pub journal: Option<PathBuf>,
    /// Wait for the jobs.
    pub wait: bool,
    /// With `wait`: the deadline.
    pub timeout: Option<String>,
    /// Start a new run (fresh derived keys).
    pub new_run: bool,
    /// Resubmit unknown outcomes on unsearchable platforms.
    pub resubmit_unknown: bool,
}

/// Parses the batch file; any malformed line fails the whole batch before anything is sent.
/// Lines without a `key` get one derived from `run` (none for the first run of a file), the
/// line number and the line's text. Orchestration fields (`after`, `retries`) need `--wait`:
/// without it nothing would wait for a prerequisite or resubmit a failed job, so such a file
/// is refused rather than half-run.
pub fn parse(text: &str, run: Option<&str>) -> Result<Vec<(usize, JobSpec)>> {
    let lines = crate::pipeline::parse(text, run)?;
    let orchestrated: Vec<String> = lines
        .iter()
        .filter(|l| l.orchestrated())
        .map(|l| l.line.to_string())
        .collect();
    if !orchestrated.is_empty() {
        return Err(Error::usage(format!(
            "line {}: `after` and `retries` need `batch --wait` (jobctl runs the pipeline while it waits); `--dry-run` shows the order",
            orchestrated.join(", ")
        )));
    }
    Ok(lines.into_iter().map(|l| (l.line, l.spec)).collect())
}

/// What an earlier journal says: the run id and the lines done with a reference.
#[derive(Debug, Default)]
struct Journal {
    run: Option<String>,
    done: BTreeMap<usize, (Option<String>, String)>,
}

fn read_journal(path: &Path) -> Journal {
    let mut j = Journal::default();
    let Ok(text) = std::fs::read_to_string(path) else {
        return j;
    };
    for line in text.lines() {
        // A line torn by a crash is simply not there.
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let Some(run) = v["run"].as_str() {
            // A new run starts a new journal; keep only what follows its header.
            j = Journal {
                run: Some(run.to_string()),
                done: BTreeMap::new(),
            };
            continue;
        }
        let outcome = v["outcome"].as_str().unwrap_or_default();
        if let (Some(n), Some(r)) = (v["line"].as_u64(), v["ref"].as_str()) {
            if outcome != "failed" && outcome != "unknown" {
                let key = v["key"].as_str().map(String::from);
                j.done.insert(n as usize, (key, r.to_string()));
            }
        }
    }
    j
}

/// Appends decided lines to the journal. Neither synced nor flushed per line: the ledger is
/// what a re-run trusts for exactly-once; the journal only saves it a lookup and keeps the run
/// id, so a write per line (a system call each, at thousands of lines a second) buys nothing.
struct JournalWriter {
    path: PathBuf,
    file: Option<std::io::BufWriter<std::fs::File>>,
    flushed: std::time::Instant,
}

/// How stale the journal file may get while a batch runs.
const JOURNAL_FLUSH: Duration = Duration::from_millis(200);

impl JournalWriter {
    fn open(path: Option<PathBuf>, truncate: bool) -> Result<Self> {
        let Some(path) = path else {
            return Ok(JournalWriter {
                path: PathBuf::new(),
                file: None,
                flushed: std::time::Instant::now(),
            });
        };
        let mut o = std::fs::OpenOptions::new();
        o.create(true);
        if truncate {
            o.write(true).truncate(true);
        } else {
            o.append(true);
        }
        let f = o
            .open(&path)
            .map_err(|e| Error::io(format!("journal {}", path.display()), e))?;
        Ok(JournalWriter {
            path,
            file: Some(std::io::BufWriter::new(f)),
            flushed: std::time::Instant::now(),
        })
    }

    /// Writes out what is buffered.
    fn flush(&mut self) -> Result<()> {
        self.flushed = std::time::Instant::now();
        match self.file.as_mut() {
            Some(f) => f
                .flush()
                .map_err(|e| Error::io(format!("journal {}", self.path.display()), e)),
            None => Ok(()),
        }
    }

    fn write(&mut self, v: &impl serde::Serialize) -> Result<()> {
        let Some(f) = self.file.as_mut() else {
            return Ok(());
        };
        serde_json::to_writer(&mut *f, v).map_err(|e| Error::io("journal", e))?;
        writeln!(f).map_err(|e| Error::io(format!("journal {}", self.path.display()), e))?;
        if self.flushed.elapsed() >= JOURNAL_FLUSH {
            self.flush()?;
        }
        Ok(())
    }
}

/// The batch file's text (`-`: stdin, read once).
pub(super) fn read_input(file: &Path) -> Result<String> {
    if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::usage(format!("cannot read stdin: {e}")))
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| Error::usage(format!("cannot read {}: {e}", file.display())))
    }
}

/// References for `watch`/`wait --from`: one per line, or JSON lines carrying a `ref` (each
/// reference once, in order of first appearance; lines without one, like a `result` event,
/// are skipped).
pub fn refs_from(path: &Path) -> Result<Vec<String>> {
    let text = read_input(path)?;
    let mut seen = std::collections::HashSet::new();
    let mut refs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let reference = if t.starts_with('{') {
            // Only `ref` is read: the rest (a `result` event lists every job) is skipped
            // without being held in memory.
            #[derive(serde::Deserialize)]
            struct RefOnly {
                #[serde(rename = "ref")]
                reference: Option<Value>,
            }
            let v: RefOnly = serde_json::from_str(t).map_err(|e| {
                Error::usage(format!(
                    "{}: line {}: invalid JSON: {e}",
                    path.display(),
                    i + 1
                ))
            })?;
            match v.reference {
                Some(Value::String(r)) => r,
                _ => continue,
            }
        } else {
            t.to_string()
        };
        if seen.insert(reference.clone()) {
            refs.push(reference);
        }
    }
    Ok(refs)
}

/// A run id: the time in milliseconds, in hex (short, sortable, unique per machine).
pub(super) fn new_run_id() -> String {
    format!("{:x}", chrono::Utc::now().timestamp_millis())
}

/// Resolves every line's profile and validates every spec before anything is sent.
fn resolve(specs: Vec<(usize, JobSpec)>, s: &Session) -> Result<Vec<(usize, JobSpec, Bound)>> {
    let mut work = Vec::with_capacity(specs.len());
    for (n, spec) in specs {
        let profile = spec
            .profile
            .clone()
            .or_else(|| spec.backend.clone())
            .unwrap_or_else(|| s.selected.clone());
        let bound = s
            .bound(&profile)
            .map_err(|e| Error::usage(format!("line {n}: {}", e.message)))?;
        bound
            .backend
            .validate(&spec)
            .map_err(|e| Error::usage(format!("line {n}: {}", e.message)))?;
        work.push((n, spec, bound));
    }
    Ok(work)
}

fn row_of(n: usize, key: Option<String>, sub: &Submission) -> BatchRow {
    BatchRow {
        line: n,
        key,
        reference: sub.job().map(|j| j.reference.clone()),
        outcome: sub.outcome(),
        error: sub.error().map(|e| error_json(e)["error"].clone()),
        job: None,
    }
}

/// Counts per outcome, for the summary line and the exit code.
#[derive(Debug, Default)]
struct Tally {
    counts: BTreeMap<&'static str, usize>,
    code: i32,
}

impl Tally {
    fn add(&mut self, outcome: &str, error: Option<&Error>) {
        let key = match outcome {
            "submitted" => "submitted",
            "skipped" => "skipped",
            "reconciled" => "reconciled",
            "unknown" => "unknown",
            _ => "failed",
        };
        *self.counts.entry(key).or_default() += 1;
        if let Some(e) = error {
            self.code = self.code.max(e.exit_code());
        }
    }

    fn get(&self, k: &str) -> usize {
        self.counts.get(k).copied().unwrap_or(0)
    }

    fn summary(&self, total: usize) -> String {
        let ok = self.get("submitted") + self.get("reconciled") + self.get("skipped");
        let mut parts = vec![format!("{ok} succeeded")];
        for (k, label) in [
            ("failed", "failed"),
            ("unknown", "unknown (run again to settle them)"),
        ] {
            if self.get(k) > 0 {
                parts.push(format!("{} {label}", self.get(k)));
            }
        }
        let mut line = format!("{total} lines: {}", parts.join(", "));
        let mut detail = Vec::new();
        for k in ["submitted", "reconciled", "skipped"] {
            if self.get(k) > 0 {
                detail.push(format!("{} {k}", self.get(k)));
            }
        }
        if !detail.is_empty() {
            line.push_str(&format!(" ({})", detail.join(", ")));
        }
        if self.get("skipped") > 0 {
            line.push_str(&format!(
                "; {} already submitted in an earlier run (--new-run submits them again)",
                self.get("skipped")
            ));
        }
        line
    }
}

fn progress_bar(p: &Printer, len: usize) -> indicatif::ProgressBar {
    if !p.progress || len == 0 {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(
        Some(len as u64),
        indicatif::ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bar:30} {pos}/{len} submitted · {msg} · {per_sec} · ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar.set_message("0 failed");
    bar
}

/// A line to send: its number, spec and bound profile.
type Line = (usize, JobSpec, Bound);

/// Runs `send` on every line, with at most `limit` (or each profile's `max_in_flight`)
/// requests of one profile at its platform at a time: a slow or rate-limiting platform holds
/// back its own lines, not the other platforms' ones. `send` gets the line's profile gate,
/// whose permits are those platform slots; twice as many lines as slots are under way, so a
/// line's ledger writes overlap the other lines' requests. Answers come in the order they
/// arrive. The gates are returned too, to be closed on Ctrl-C.
fn in_flight_per_profile<'a, F, Fut, T>(
    lines: Vec<Line>,
    limit: Option<usize>,
    send: F,
) -> (
    impl futures::Stream<Item = T> + Unpin + 'a,
    Vec<Rc<Semaphore>>,
)
where
    F: Fn(Line, Rc<Semaphore>) -> Fut + Clone + 'a,
    Fut: std::future::Future<Output = T> + 'a,
    T: 'a,
{
    let mut by_profile: Vec<(String, usize, Vec<Line>)> = Vec::new();
    for line in lines {
        let name = &line.2.profile.name;
        match by_profile.iter_mut().find(|(p, _, _)| p == name) {
            Some((_, _, group)) => group.push(line),
            None => {
                let cap = limit.unwrap_or(line.2.profile.max_in_flight).max(1);
                by_profile.push((name.clone(), cap, vec![line]));
            }
        }
    }
    let mut gates = Vec::with_capacity(by_profile.len());
    let streams: Vec<_> = by_profile
        .into_iter()
        .map(|(_, cap, group)| {
            let send = send.clone();
            let gate = Rc::new(Semaphore::new(cap));
            gates.push(gate.clone());
            futures::stream::iter(group)
                .map(move |line| send(line, gate.clone()))
                .buffer_unordered(cap.saturating_mul(2))
                .boxed_local()
        })
        .collect();
    (futures::stream::select_all(streams), gates)
}

/// Runs `batch`.
pub async fn run(
    file: &Path,
    text: String,
    opts: &BatchOptions,
    s: &Session,
    p: &Printer,
) -> Result<Outcome> {
    let stdin = file == Path::new("-");
    let journal_path = opts.journal.clone().or_else(|| {
        (!stdin).then(|| {
            let mut j = file.as_os_str().to_owned();
            j.push(".journal");
            PathBuf::from(j)
        })
    });
    let earlier = match (&journal_path, opts.new_run) {
        (Some(path), false) => read_journal(path),
        _ => Journal::default(),
    };
    let run = if opts.new_run {
        Some(new_run_id())
    } else {
        earlier.run.clone()
    };
    let work = resolve(parse(&text, run.as_deref())?, s)?;
    let total = work.len();
    let mut journal = JournalWriter::open(journal_path, opts.new_run)?;
    if opts.new_run {
        journal.write(&json!({ "run": run }))?;
        // The run id decides every derived key: a re-run must find it even after a crash.
        journal.flush()?;
    }

    let mut rows: Vec<BatchRow> = Vec::with_capacity(total);
    let mut jobs: BTreeMap<usize, Job> = BTreeMap::new();
    let keep_jobs = p.mode == OutputMode::Ndjson && !opts.wait;
    let mut tally = Tally::default();
    let mut pending = Vec::new();
    for (n, spec, bound) in work {
        match earlier.done.get(&n) {
            Some((key, reference)) if key == &spec.key => {
                let row = BatchRow {
                    line: n,
                    key: spec.key.clone(),
                    reference: Some(reference.clone()),
                    outcome: "skipped",
                    error: None,
                    job: None,
                };
                tally.add("skipped", None);
                p.batch_line(&row);
                rows.push(row);
            }
            _ => pending.push((n, spec, bound)),
        }
    }

    // Lines an earlier run left unsettled are looked up first, in one listing per profile.
    let lookups = {
        let lines: Vec<(&Bound, &JobSpec)> = pending.iter().map(|(_, spec, b)| (b, spec)).collect();
        prefetch(s, &lines).await
    };
    let lookups = &lookups;
    let bar = progress_bar(p, pending.len());
    let stop = Arc::new(AtomicBool::new(false));
    let (mut stream, gates) =
        in_flight_per_profile(pending, opts.concurrency, |(n, spec, bound), gate| {
            let stop = stop.clone();
            async move {
                // Lines not started when Ctrl-C came stay unsent (a re-run sends them).
                if stop.load(Ordering::SeqCst) {
                    return (n, spec.key, None);
                }
                let how = SubmitOptions {
                    resubmit_unknown: opts.resubmit_unknown,
                    lookups: Some(lookups),
                    gate: Some(&gate),
                    validated: true,
                    ..SubmitOptions::default()
                };
                let sub = submit_spec(&bound, &spec, s, how).await;
                // Recorded, but the gate closed before its turn: not sent either.
                if sub
                    .error()
                    .is_some_and(|e| e.kind == ErrorKind::Interrupted)
                {
                    return (n, spec.key, None);
                }
                (n, spec.key, Some(sub))
            }
        });

    let mut sigint = super::interrupt_signal();
    let mut interrupted = false;
    let mut settle_deadline = None;
    let mut not_sent = 0usize;
    loop {
        let next = tokio::select! {
            next = stream.next() => next,
            _ = async {
                match (sigint.as_mut(), interrupted) {
                    (Some(sig), false) => { sig.recv().await; }
                    _ => std::future::pending::<()>().await,
                }
            } => {
                interrupted = true;
                stop.store(true, Ordering::SeqCst);
                gates.iter().for_each(|g| g.close());
                settle_deadline = Some(tokio::time::Instant::now() + SETTLE_ON_INTERRUPT);
                continue;
            }
            _ = async {
                match settle_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending::<()>().await,
                }
            } => break,
        };
        let Some((n, key, sub)) = next else { break };
        let Some(sub) = sub else {
            not_sent += 1;
            continue;
        };
        let row = row_of(n, key, &sub);
        tally.add(row.outcome, sub.error());
        // Only the ndjson `result` event lists the jobs (`--wait` reads them back from the
        // platform): other runs keep none, which spares a big batch a copy of every job.
        if keep_jobs {
            if let Some(job) = sub.into_job() {
                jobs.insert(n, job);
            }
        }
        journal.write(&row)?;
        p.batch_line(&row);
        bar.inc(1);
        if tally.get("failed") + tally.get("unknown") > 0 {
            bar.set_message(format!(
                "{} failed, {} unknown",
                tally.get("failed"),
                tally.get("unknown")
            ));
        }
        rows.push(row);
    }
    drop(stream);
    journal.flush()?;
    bar.finish_and_clear();
    rows.sort_by_key(|r| r.line);

    if interrupted {
        let left = total - rows.len();
        p.render(Report::Batch(rows));
        p.warn(&format!(
            "interrupted: {left} of {total} lines not submitted{}; run the same command again to resume",
            if not_sent < left {
                " or still in flight"
            } else {
                ""
            }
        ));
        return Ok(Outcome {
            report: Report::Nothing,
            code: exit::INTERRUPTED,
        });
    }
    if p.mode == OutputMode::Table {
        eprintln!("{}", tally.summary(total));
    }
    if !opts.wait {
        let jobs: Vec<Job> = jobs.into_values().collect();
        p.event(&Event::Result {
            exit_code: tally.code,
            jobs: &jobs,
        });
        return Ok(Outcome {
            report: Report::Batch(rows),
            code: tally.code,
        });
    }
    wait_rows(rows, tally.code, opts, s, p).await
}

/// `batch --wait`: waits for every job and attaches its final state to its line.
async fn wait_rows(
    mut rows: Vec<BatchRow>,
    submit_code: i32,
    opts: &BatchOptions,
    s: &Session,
    p: &Printer,
) -> Result<Outcome> {
    let mut targets = Vec::new();
    for r in &rows {
        if let Some(reference) = &r.reference {
            targets.push(s.resolve(reference)?);
        }
    }
    let tuning = WaitTuning {
        timeout: opts.timeout.clone(),
        interval: None,
        max_interval: "30s".into(),
        unreachable_timeout: "5m".into(),
    };
    let interval = s
        .selected_bound()
        .map(|b| b.profile.poll_interval)
        .unwrap_or_default();
    let wopts = watch_options(&tuning, interval.max(Duration::from_millis(200)), p)?;
    let view = WatchView::without_notes(p, &targets);
    let out = watch::run(s, &targets, &wopts, &view, super::interrupted()).await;
    view.finish();
    if let Some(e) = &out.error {
        // json prints one value: the error goes to stderr, the lines carry what is known.
        if p.mode == OutputMode::Json {
            eprintln!("jobctl: error: {e}");
        } else if p.mode == OutputMode::Ndjson {
            p.event(
                &json!({"event": "error", "ref": Value::Null, "error": error_json(e)["error"]}),
            );
        } else {
            p.error(e);
        }
    }
    if out.exit_code == exit::INTERRUPTED {
        p.warn("interrupted; the jobs keep running");
    }
    p.event(&Event::Result {
        exit_code: code_of(out.exit_code, submit_code),
        jobs: &out.jobs,
    });
    let by_ref: HashMap<&str, &Job> = out.jobs.iter().map(|j| (j.reference.as_str(), j)).collect();
    for r in &mut rows {
        let job = r
            .reference
            .as_deref()
            .and_then(|reference| by_ref.get(reference).map(|j| Box::new((*j).clone())));
        r.job = Some(job);
    }
    Ok(Outcome {
        report: Report::Batch(rows),
        code: code_of(out.exit_code, submit_code),
    })
}

/// A job outcome (1, 5, 3, 130…) wins over a submission failure; otherwise the latter.
fn code_of(watch_code: i32, submit_code: i32) -> i32 {
    if watch_code != 0 {
        watch_code
    } else {
        submit_code
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_named_and_keys_are_derived() {
        let e = parse("{\"command\":[\"true\"]}\n\n# note\n{oops}\n", None).unwrap_err();
        assert!(e.message.starts_with("line 4:"), "{e}");
        let text = "{\"command\":[\"true\"]}\n{\"key\":\"mine\",\"command\":[\"true\"]}\n";
        let specs = parse(text, None).unwrap();
        assert_eq!(specs.len(), 2);
        assert!(specs[0].1.key.as_deref().unwrap().starts_with("batch-1-"));
        assert_eq!(specs[1].1.key.as_deref(), Some("mine"));
        // The same line gives the same key on a re-run; a new run gives fresh ones, but an
        // explicit key stays.
        assert_eq!(
            parse("{\"command\":[\"true\"]}", None).unwrap()[0].1.key,
            specs[0].1.key
        );
        let again = parse(text, Some("abc")).unwrap();
        assert_ne!(again[0].1.key, specs[0].1.key);
        assert!(
            again[0]
                .1
                .key
                .as_deref()
                .unwrap()
                .starts_with("batch-abc-1-")
        );
        assert_eq!(again[1].1.key.as_deref(), Some("mine"));
    }

    #[test]
    fn the_journal_keeps_the_last_run_and_ignores_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        std::fs::write(
            &path,
            "{\"line\":1,\"key\":\"a\",\"ref\":\"local:1\",\"outcome\":\"submitted\"}\n\
             {\"run\":\"r2\"}\n\
             {\"line\":2,\"key\":\"b\",\"ref\":\"local:2\",\"outcome\":\"submitted\"}\n\
             {\"line\":3,\"key\":\"c\",\"ref\":null,\"outcome\":\"unknown\"}\n\
             {\"line\":4,\"key\":",
        )
        .unwrap();
        let j = read_journal(&path);
        assert_eq!(j.run.as_deref(), Some("r2"));
        assert_eq!(j.done.keys().copied().collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn references_come_from_plain_lines_or_json_lines_with_a_ref() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("refs");
        std::fs::write(
            &path,
            "local:1\n\n{\"event\":\"line\",\"ref\":\"local:2\"}\n{\"event\":\"line\",\"ref\":null}\n\
             {\"event\":\"result\",\"jobs\":[]}\nlocal:1\n",
        )
        .unwrap();
        assert_eq!(refs_from(&path).unwrap(), vec!["local:1", "local:2"]);
        std::fs::write(&path, "{oops\n").unwrap();
        assert!(refs_from(&path).unwrap_err().message.contains("line 1"));
    }

    #[test]
    fn the_summary_counts_every_outcome() {
        let mut t = Tally::default();
        for _ in 0..3 {
            t.add("submitted", None);
        }
        t.add("skipped", None);
        t.add("failed", Some(&Error::usage("bad")));
        let s = t.summary(5);
        assert!(s.starts_with("5 lines: 4 succeeded, 1 failed"), "{s}");
        assert!(s.contains("1 already submitted in an earlier run"), "{s}");
        assert_eq!(t.code, 2);
    }
}
