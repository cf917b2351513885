//! One function per command. Each returns data ([`Outcome`]); none prints job data itself
//! (streams — logs, watch events — go through the printer or the log sink).

use super::Outcome;
use super::args::{Command, GlobalArgs, SubmitArgs, WaitTuning, WatchArgs};
use super::submission::{SubmitOptions, submit_spec};
use crate::config::parse_duration;
use crate::error::{Error, ErrorKind, Result, exit};
use crate::model::{
    AbortOutcome, FetchProgress, JobSpec, JobState, ListQuery, LogsRequest, parse_key_value,
};
use crate::output::{AbortRow, OutputMode, Printer, ProfileRow, Report, WatchView};
use crate::report::{Case, ReportTarget, Verdict};
use crate::session::{Bound, Session};
use crate::watch::{self, Event, WatchOptions};
use indicatif::ProgressBar;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::time::Duration;

/// Dispatches one command.
pub async fn run(cmd: Command, g: &GlobalArgs, s: &Session, p: &Printer) -> Result<Outcome> {
    match cmd {
        Command::Submit(a) => submit(a, g, s, p).await,
        Command::Status { refs } => status(&refs, s, p).await,
        Command::List {
            states,
            limit,
            all,
            opts,
        } => list(&states, limit, all, &opts, s).await,
        Command::Abort {
            refs,
            wait,
            timeout,
            force,
        } => abort(&refs, AbortFlags { wait, force }, timeout.as_deref(), s, p).await,
        Command::Watch(a) => watch_cmd(a, true, s, p).await,
        Command::Wait(a) => watch_cmd(a, false, s, p).await,
        Command::Logs {
            reference,
            follow,
            stderr,
        } => {
            let req = LogsRequest {
                follow,
                stderr,
                ndjson: p.mode == OutputMode::Ndjson,
                color: p.color,
            };
            logs(&reference, req, s).await
        }
        Command::Fetch { reference, dest } => fetch(&reference, &dest, s, p).await,
        Command::Batch {
            file,
            concurrency,
            journal,
            wait,
            timeout,
            new_run,
            resubmit_unknown,
            dry_run,
            reports,
        } => {
            let file_text = super::batch::read_input(&file)?;
            // A file that uses `after`/`retries`, a dry run or CI reports make a pipeline run;
            // anything else is a plain batch.
            if dry_run
                || (wait && (!reports.is_empty() || super::pipeline::is_pipeline(&file_text)))
            {
                let o = super::pipeline::BatchFlags {
                    file: &file,
                    text: file_text,
                    concurrency,
                    journal,
                    dry_run,
                    timeout: timeout.as_deref(),
                    reports: &reports,
                    new_run,
                    resubmit_unknown,
                };
                return super::pipeline::batch(o, s, p).await;
            }
            let opts = super::batch::BatchOptions {
                concurrency,
                journal,
                wait,
                timeout,
                new_run,
                resubmit_unknown,
            };
            super::batch::run(&file, file_text, &opts, s, p).await
        }
        Command::History { limit } => Ok(Outcome::ok(Report::History(
            s.ledger()?.history(Some(limit))?,
        ))),
        Command::Login { profile } => login(profile, s, p).await,
        Command::Logout { profile } => logout(profile, s, p).await,
        Command::Profiles => Ok(Outcome::ok(profiles(s))),
        Command::Doctor { profile } => doctor(profile, s, p).await,
        Command::Queues { profile } => queues(profile, s).await,
        Command::Completions { shell } => Ok(Outcome::ok(completions(shell, s))),
    }
}

/// The completion script; profile names are those configured when it is generated.
fn completions(shell: clap_complete::Shell, s: &Session) -> Report {
    use clap::CommandFactory;
    let names = s.config.profile_names();
    let mut cmd = super::args::Cli::command().mut_arg("profile", |a| {
        a.value_parser(clap::builder::PossibleValuesParser::new(names))
    });
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut cmd, "jobctl", &mut buf);
    Report::Raw(String::from_utf8_lossy(&buf).into_owned())
}

/// The smallest polling interval: below it a watch would flood the platform with requests.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

fn dur(flag: &str, v: &str) -> Result<Duration> {
    parse_duration(v).map_err(|e| Error::usage(format!("{flag}: {}", e.message)))
}

/// Watch options from flags; the first interval defaults to the profile's `poll_interval`.
/// `--timeout` counts from now.
pub(super) fn watch_options(
    t: &WaitTuning,
    default_interval: Duration,
    p: &Printer,
) -> Result<WatchOptions> {
    let mut interval = match &t.interval {
        Some(v) => dur("--interval", v)?,
        None => default_interval,
    };
    if interval < MIN_INTERVAL {
        p.warn(&format!(
            "polling interval {} is below the floor; polling every {} instead",
            humantime::format_duration(interval),
            humantime::format_duration(MIN_INTERVAL)
        ));
        interval = MIN_INTERVAL;
    }
    let max_interval = dur("--max-interval", &t.max_interval)?.max(interval);
    Ok(WatchOptions {
        interval,
        max_interval,
        timeout: t
            .timeout
            .as_deref()
            .map(|v| dur("--timeout", v))
            .transpose()?,
        started: std::time::Instant::now(),
        unreachable_timeout: dur("--unreachable-timeout", &t.unreachable_timeout)?,
        any: false,
        fail_fast: false,
        abort_mode: false,
        details: matches!(p.mode, OutputMode::Json | OutputMode::Ndjson),
    })
}

/// Runs the watch engine and turns its outcome into a command outcome (result event, error).
/// `live` asks for the live terminal display (watch, submit --wait).
pub(super) async fn wait_for(
    targets: &[(String, String)],
    opts: &WatchOptions,
    live: bool,
    s: &Session,
    p: &Printer,
) -> Outcome {
    let out = run_watch(targets, opts, live, s, p).await;
    conclude(out, targets, &Reports::none(), s, p).await
}

/// The CI reports a wait writes when it ends (`--report`).
pub(super) struct Reports<'a> {
    targets: &'a [ReportTarget],
    title: String,
    started: chrono::DateTime<chrono::Utc>,
    attempts: u32,
}

impl<'a> Reports<'a> {
    fn none() -> Self {
        Reports::new(&[], String::new())
    }

    fn new(targets: &'a [ReportTarget], title: String) -> Self {
        Reports {
            targets,
            title,
            started: chrono::Utc::now(),
            attempts: 1,
        }
    }
}

/// The watch engine, with its error and an interruption said on stderr.
async fn run_watch(
    targets: &[(String, String)],
    opts: &WatchOptions,
    live: bool,
    s: &Session,
    p: &Printer,
) -> watch::Outcome {
    let view = WatchView::new(p, live, targets);
    let out = watch::run(s, targets, opts, &view, super::interrupted()).await;
    view.finish();
    if let Some(e) = &out.error {
        p.error_event(e);
    }
    if out.exit_code == exit::INTERRUPTED {
        p.warn("interrupted; the jobs keep running");
    }
    out
}

/// Writes the reports of a finished wait, then the result event (always the last line).
async fn conclude(
    out: watch::Outcome,
    targets: &[(String, String)],
    reports: &Reports<'_>,
    s: &Session,
    p: &Printer,
) -> Outcome {
    let mut code = out.exit_code;
    if !reports.targets.is_empty() {
        let now = chrono::Utc::now();
        let mut cases: Vec<Case> = targets
            .iter()
            .map(|(profile, id)| {
                let reference = format!("{profile}:{id}");
                match out.jobs.iter().find(|j| j.reference == reference) {
                    Some(job) => Case::from_job(job, None, now),
                    None => Case {
                        name: reference.clone(),
                        classname: profile.clone(),
                        reference: Some(reference),
                        state: "unknown".into(),
                        attempts: 1,
                        time: Duration::ZERO,
                        verdict: Verdict::Error {
                            message: "the job could not be read before the wait ended".into(),
                        },
                    },
                }
            })
            .collect();
        if reports.attempts > 1 {
            cases.iter_mut().for_each(|c| c.attempts = reports.attempts);
        }
        crate::report::add_output(s, &mut cases, &out.jobs).await;
        if let Err(e) = super::pipeline::write_reports(
            reports.targets,
            &reports.title,
            &cases,
            reports.started,
            p,
        ) {
            p.error(&e);
            if code == exit::SUCCESS {
                code = e.exit_code();
            }
        }
    }
    p.event(&Event::Result {
        exit_code: code,
        jobs: &out.jobs,
    });
    Outcome {
        report: Report::WatchResult {
            exit_code: code,
            jobs: out.jobs,
        },
        code,
    }
}

/// Builds the spec from `--spec` and flags (flags win).
pub(super) fn build_spec(a: &SubmitArgs) -> Result<JobSpec> {
    let mut spec = match a.spec.as_deref() {
        None => JobSpec::default(),
        Some(src) => {
            let text = if src == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::usage(format!("--spec -: cannot read stdin: {e}")))?
            } else {
                std::fs::read_to_string(src)
                    .map_err(|e| Error::usage(format!("--spec {src}: {e}")))?
            };
            serde_json::from_str(&text)
                .map_err(|e| Error::usage(format!("--spec {src}: invalid job spec: {e}")))?
        }
    };
    if a.name.is_some() {
        spec.name = a.name.clone();
    }
    if a.key.is_some() {
        spec.key = a.key.clone();
    }
    if !a.command.is_empty() {
        if a.command[0].trim().is_empty() {
            return Err(Error::usage(
                "the command after `--` is empty: name the program to run, e.g. `-- echo hi`",
            ));
        }
        spec.command = Some(a.command.clone());
    }
    spec.uploads.extend(a.uploads.iter().cloned());
    let mut opts: Vec<String> = a.opts.clone();
    let shorthands = [
        ("function", &a.function),
        ("queue", &a.queue),
        ("workflow", &a.workflow),
        ("partition", &a.partition),
    ];
    for (k, v) in shorthands {
        if let Some(v) = v {
            opts.push(format!("{k}={v}"));
        }
    }
    for e in &a.export {
        opts.push(format!("export={e}"));
    }
    merge_pairs("--opt", &opts, &mut spec.options)?;
    Ok(spec)
}

/// Adds the `--arg KEY=VALUE` flags to `spec` the way `backend` takes them: as environment
/// variables, VALUE exactly as typed and each variable once; or as JSON arguments, VALUE
/// parsed as JSON when it parses and a repeated KEY collecting an array.
pub(super) fn apply_args(
    raw: &[String],
    backend: crate::config::BackendKind,
    spec: &mut JobSpec,
) -> Result<()> {
    if !backend.args_are_env() {
        return merge_pairs("--arg", raw, &mut spec.args);
    }
    let mut given: Vec<&str> = Vec::new();
    for r in raw {
        let Some((k, v)) = r.split_once('=').filter(|(k, _)| !k.trim().is_empty()) else {
            return Err(Error::usage(format!("--arg expects KEY=VALUE, got '{r}'")));
        };
        let k = k.trim();
        if given.contains(&k) {
            return Err(Error::usage(format!(
                "--arg {k} is given twice: for the {backend} backend it is an environment variable, which has one value"
            )));
        }
        given.push(k);
        spec.args
            .insert(k.to_string(), Value::String(v.to_string()));
    }
    Ok(())
}

/// Merges KEY=VALUE flags; a key given several times collects an array.
fn merge_pairs(flag: &str, raw: &[String], into: &mut Map<String, Value>) -> Result<()> {
    let mut seen: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for r in raw {
        let (k, v) = parse_key_value(flag, r)?;
        seen.entry(k).or_default().push(v);
    }
    for (k, mut vs) in seen {
        let v = if vs.len() == 1 {
            vs.remove(0)
        } else {
            Value::Array(vs)
        };
        into.insert(k, v);
    }
    Ok(())
}

async fn submit(a: SubmitArgs, g: &GlobalArgs, s: &Session, p: &Printer) -> Result<Outcome> {
    // `--timeout` counts from here: a slow submission must not stretch it.
    let started = std::time::Instant::now();
    let mut spec = build_spec(&a)?;
    // The spec file may name a profile; explicit -p/-b win over it.
    let profile = match (&g.profile, &g.backend, &spec.profile, &spec.backend) {
        (None, None, Some(sp), _) => sp.clone(),
        (None, None, None, Some(sb)) => sb.clone(),
        _ => s.selected.clone(),
    };
    let bound = s.bound(&profile)?;
    apply_args(&a.args, bound.profile.backend, &mut spec)?;
    // Wait flags are checked before anything is sent.
    let opts = if a.wait {
        Some(WatchOptions {
            started,
            ..watch_options(&a.watch, bound.profile.poll_interval, p)?
        })
    } else {
        None
    };
    let deadline = opts.as_ref().and_then(|o| o.timeout).map(|t| started + t);
    let submission = submit_spec(
        &bound,
        &spec,
        s,
        SubmitOptions {
            resubmit_unknown: a.resubmit_unknown,
            deadline,
            ..SubmitOptions::default()
        },
    )
    .await;
    let existing = !matches!(submission, super::submission::Submission::Sent(_));
    let job = match submission {
        super::submission::Submission::Sent(j)
        | super::submission::Submission::Earlier(j)
        | super::submission::Submission::Reconciled(j) => j,
        super::submission::Submission::Unknown(e) | super::submission::Submission::Failed(e) => {
            return if a.wait { failed_stream(e, p) } else { Err(e) };
        }
    };
    if existing {
        eprintln!(
            "{}: key '{}' was already submitted before; not submitting again",
            job.reference,
            spec.key.as_deref().unwrap_or_default()
        );
    }
    let Some(opts) = opts else {
        return Ok(Outcome::ok(Report::Submitted { job, existing }));
    };
    // Print the reference at once, then behave like watch. In json mode the one JSON value is
    // the final result, which carries the job.
    if p.mode != OutputMode::Json {
        p.render(Report::Submitted {
            job: job.clone(),
            existing,
        });
    }
    let mut reports = Reports::new(&a.reports, "jobctl submit".into());
    let (job, targets, watched, attempts) =
        match watch_with_retries(&bound, &spec, job, &opts, a.retries, s, p).await {
            Ok(done) => done,
            Err(e) => return failed_stream(e, p),
        };
    reports.attempts = attempts;
    let mut out = conclude(watched, &targets, &reports, s, p).await;
    if out.code == exit::SUCCESS {
        if let Some(dir) = &a.fetch {
            let fetched = fetch(&job.reference, dir, s, p).await?;
            p.render(out.report);
            out.report = fetched.report;
        }
    }
    if p.mode == OutputMode::Quiet {
        out.report = Report::Nothing;
    }
    Ok(out)
}

/// Watches a submitted job; while it failed (not canceled) and attempts remain, submits it
/// again after a pause, with its own key (`KEY#2`…) so a re-run of the same command finds
/// every attempt in the ledger. `--timeout` bounds all attempts together; Ctrl-C during a
/// pause ends like Ctrl-C during a wait. Returns the last attempt's job, its target, how its
/// wait ended and the number of attempts.
async fn watch_with_retries(
    bound: &Bound,
    spec: &JobSpec,
    first: crate::model::Job,
    opts: &WatchOptions,
    retries: u32,
    s: &Session,
    p: &Printer,
) -> Result<(
    crate::model::Job,
    Vec<(String, String)>,
    watch::Outcome,
    u32,
)> {
    let deadline = opts.timeout.map(|t| opts.started + t);
    let mut job = first;
    let mut targets = vec![(bound.profile.name.clone(), job.id.clone())];
    let mut watched = run_watch(&targets, opts, true, s, p).await;
    let mut attempt = 1;
    while attempt <= retries
        && watched.exit_code == exit::JOB_FAILED
        && watched.jobs.iter().any(|j| j.state == JobState::Failed)
    {
        let delay = crate::pipeline::retry_delay(attempt + 1);
        let left = deadline.map(|d| d.saturating_duration_since(std::time::Instant::now()));
        if left.is_some_and(|l| l <= delay) {
            // The next attempt could not even start before the deadline.
            break;
        }
        attempt += 1;
        let key = spec
            .key
            .as_deref()
            .map(|k| crate::pipeline::attempt_key(k, attempt));
        p.event(&serde_json::json!({
            "event": "retry", "ref": job.reference, "attempt": attempt,
            "key": key, "delay_ms": delay.as_millis(),
        }));
        p.note(&format!(
            "{} failed; attempt {attempt} of {} in {}",
            job.reference,
            retries + 1,
            humantime::format_duration(delay)
        ));
        let mut sigint = super::interrupt_signal();
        let interrupted = async {
            match sigint.as_mut() {
                Some(sig) => {
                    sig.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = interrupted => {
                p.warn("interrupted; the jobs keep running");
                watched.exit_code = exit::INTERRUPTED;
                return Ok((job, targets, watched, attempt - 1));
            }
        }
        let mut next = spec.clone();
        next.key = key;
        let (again, existing) = super::pipeline::settled(
            submit_spec(
                bound,
                &next,
                s,
                SubmitOptions {
                    deadline,
                    ..SubmitOptions::default()
                },
            )
            .await,
        )?;
        if p.mode != OutputMode::Json {
            p.render(Report::Submitted {
                job: again.clone(),
                existing,
            });
        }
        job = again;
        targets = vec![(bound.profile.name.clone(), job.id.clone())];
        // Same options, same clock: `--timeout` bounds all attempts together.
        watched = run_watch(&targets, opts, true, s, p).await;
    }
    Ok((job, targets, watched, attempt))
}

/// Groups resolved references by profile, keeping each one's position.
fn group(refs: &[String], s: &Session) -> Result<Vec<(String, String)>> {
    refs.iter().map(|r| s.resolve(r)).collect()
}

async fn status(refs: &[String], s: &Session, p: &Printer) -> Result<Outcome> {
    let targets = group(refs, s)?;
    let mut items: Vec<Option<Result<crate::model::Job>>> = vec![None; targets.len()];
    let mut by_profile: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, (p, _)) in targets.iter().enumerate() {
        by_profile.entry(p).or_default().push(i);
    }
    for (profile, idxs) in by_profile {
        let bound = s.bound(profile)?;
        let ids: Vec<String> = idxs.iter().map(|&i| targets[i].1.clone()).collect();
        let results = bound.backend.statuses(&ids).await;
        for (&i, r) in idxs.iter().zip(results) {
            let reference = format!("{}:{}", bound.profile.name, targets[i].1);
            items[i] = Some(
                r.map(|j| s.finish_job(&bound, j))
                    .map_err(|e| e.about(reference)),
            );
        }
    }
    let items: Vec<Result<crate::model::Job>> = items.into_iter().flatten().collect();
    let code = items
        .iter()
        .filter_map(|r| r.as_ref().err())
        .map(Error::exit_code)
        .max()
        .unwrap_or(exit::SUCCESS);
    if p.mode == OutputMode::Quiet {
        // quiet status answers with its exit code alone; errors still go to stderr.
        for e in items.iter().filter_map(|r| r.as_ref().err()) {
            eprintln!("jobctl: error: {e}");
        }
        return Ok(Outcome {
            code,
            report: Report::Nothing,
        });
    }
    Ok(Outcome {
        code,
        report: Report::Jobs {
            single: refs.len() == 1,
            items,
            refs: targets.iter().map(|(p, id)| format!("{p}:{id}")).collect(),
        },
    })
}

async fn list(
    states: &[String],
    limit: Option<usize>,
    all: bool,
    opts: &[String],
    s: &Session,
) -> Result<Outcome> {
    let states: Vec<JobState> = states
        .iter()
        .filter(|x| !x.trim().is_empty())
        .map(|x| x.parse())
        .collect::<Result<_>>()?;
    let mut options = Map::new();
    merge_pairs("--opt", opts, &mut options)?;
    let query = ListQuery {
        states,
        limit: if all { None } else { Some(limit.unwrap_or(50)) },
        options,
    };
    let bound = s.selected_bound()?;
    let known = bound.backend.list_options();
    if let Some(bad) = query.options.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(Error::usage(format!(
            "list: unknown option `{bad}` for the {} backend{}",
            bound.profile.backend,
            if known.is_empty() {
                " (it takes none)".to_string()
            } else {
                format!("; known: {}", known.join(", "))
            }
        ))
        .in_profile(&bound.profile.name, bound.profile.backend.as_str()));
    }
    let jobs = bound.backend.list(&query).await?;
    let items = jobs
        .into_iter()
        .map(|j| Ok(s.finish_job(&bound, j)))
        .collect();
    Ok(Outcome::ok(Report::Jobs {
        items,
        single: false,
        refs: Vec::new(),
    }))
}

/// `abort --wait` / `--force`.
#[derive(Debug, Clone, Copy)]
struct AbortFlags {
    wait: bool,
    force: bool,
}

async fn abort(
    refs: &[String],
    flags: AbortFlags,
    timeout: Option<&str>,
    s: &Session,
    p: &Printer,
) -> Result<Outcome> {
    let wait = flags.wait;
    let timeout = timeout.map(|t| dur("--timeout", t)).transpose()?;
    let targets = group(refs, s)?;
    let mut rows = Vec::new();
    let mut code = exit::SUCCESS;
    let mut pending = Vec::new();
    for (profile, id) in &targets {
        let bound = s.bound(profile)?;
        let outcome = if flags.force {
            bound.backend.abort_force(id).await
        } else {
            bound.backend.abort(id).await
        };
        match &outcome {
            Ok(AbortOutcome::Requested) => pending.push((profile.clone(), id.clone())),
            Ok(AbortOutcome::AlreadyTerminal) => {}
            Err(e) => code = code.max(e.exit_code()),
        }
        rows.push(AbortRow {
            reference: format!("{profile}:{id}"),
            outcome,
        });
    }
    if !wait || pending.is_empty() {
        return Ok(Outcome {
            report: Report::Aborts(rows),
            code,
        });
    }
    p.render(Report::Aborts(rows));
    let interval = s.bound(&pending[0].0)?.profile.poll_interval;
    let tuning = WaitTuning {
        timeout: None,
        interval: None,
        max_interval: "10s".into(),
        unreachable_timeout: "5m".into(),
    };
    let mut opts = watch_options(&tuning, interval, p)?;
    opts.timeout = timeout;
    opts.abort_mode = true;
    let mut out = wait_for(&pending, &opts, false, s, p).await;
    out.code = out.code.max(code);
    Ok(out)
}

async fn watch_cmd(a: WatchArgs, live: bool, s: &Session, p: &Printer) -> Result<Outcome> {
    let prepared = (|| {
        let mut refs = a.refs.clone();
        if let Some(from) = &a.from {
            refs.extend(super::batch::refs_from(from)?);
        }
        if refs.is_empty() {
            return Err(Error::usage("no job references to wait for"));
        }
        let targets = group(&refs, s)?;
        let interval = targets
            .iter()
            .filter_map(|(pr, _)| s.bound(pr).ok().map(|b| b.profile.poll_interval))
            .min()
            .unwrap_or(Duration::from_secs(2));
        let mut opts = watch_options(&a.tuning, interval, p)?;
        opts.any = a.any;
        opts.fail_fast = a.fail_fast;
        Ok((targets, opts))
    })();
    match prepared {
        Ok((targets, opts)) => {
            let title = if live { "jobctl watch" } else { "jobctl wait" };
            let reports = Reports::new(&a.reports, title.into());
            let out = run_watch(&targets, &opts, live, s, p).await;
            Ok(conclude(out, &targets, &reports, s, p).await)
        }
        // Even a refusal before the first poll (a bad reference) is an event.
        Err(e) => failed_stream(e, p),
    }
}

/// An error that ends an event stream before its result: in ndjson mode an error event
/// followed by the result event (so every line is an event and `result` stays last), else
/// the error as is.
fn failed_stream(e: Error, p: &Printer) -> Result<Outcome> {
    if p.mode != OutputMode::Ndjson {
        return Err(e);
    }
    p.error_event(&e);
    p.event(&Event::Result {
        exit_code: e.exit_code(),
        jobs: &[],
    });
    Ok(Outcome {
        report: Report::Nothing,
        code: e.exit_code(),
    })
}

async fn logs(reference: &str, req: LogsRequest, s: &Session) -> Result<Outcome> {
    let (profile, id) = s.resolve(reference)?;
    let bound = s.bound(&profile)?;
    let mut stdout = tokio::io::stdout();
    let interrupted = super::interrupted();
    tokio::select! {
        r = bound.backend.logs(&id, req, &mut stdout) => {
            // tokio's stdout buffers: what a backend wrote must reach a pipe before we exit.
            let flushed = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
            r?;
            flushed.map_err(|e| Error::io("writing output", e))?;
        }
        _ = interrupted => {
            return Ok(Outcome { report: Report::Nothing, code: exit::INTERRUPTED });
        }
    }
    Ok(Outcome::ok(Report::Nothing))
}

async fn fetch(
    reference: &str,
    dest: &std::path::Path,
    s: &Session,
    p: &Printer,
) -> Result<Outcome> {
    let (profile, id) = s.resolve(reference)?;
    let bound = s.bound(&profile)?;
    let created = !dest.exists();
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::io(format!("cannot create {}", dest.display()), e))?;
    let bar = if p.progress {
        let b = ProgressBar::new(0);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{spinner} {bytes}/{total_bytes} {bytes_per_sec} {wide_bar}",
        ) {
            b.set_style(style);
        }
        b
    } else {
        ProgressBar::hidden()
    };
    let report = |p: FetchProgress| match p {
        FetchProgress::Expect(n) => bar.inc_length(n),
        FetchProgress::Done(n) => bar.inc(n),
    };
    let result = bound.backend.fetch(&id, dest, &report).await;
    bar.finish_and_clear();
    let arts = result?;
    user_permissions(created.then_some(dest), &arts);
    Ok(Outcome::ok(Report::Artifacts(arts)))
}

/// Fetched files belong to the user: they get the user's umask, not jobctl's owner-only one.
fn user_permissions(created: Option<&std::path::Path>, arts: &[crate::model::Artifact]) {
    use std::os::unix::fs::PermissionsExt;
    let mask = crate::config::user_umask();
    if let Some(dir) = created {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777 & !mask));
    }
    for a in arts {
        let _ = std::fs::set_permissions(&a.path, std::fs::Permissions::from_mode(0o666 & !mask));
    }
}

fn target_profile(profile: Option<String>, s: &Session) -> String {
    profile.unwrap_or_else(|| s.selected.clone())
}

/// A message for people, or its JSON form in json/ndjson mode.
fn said(p: &Printer, value: Value, text: String) -> Report {
    match p.mode {
        OutputMode::Json | OutputMode::Ndjson => {
            let json = if p.mode == OutputMode::Json {
                serde_json::to_string_pretty(&value)
            } else {
                serde_json::to_string(&value)
            };
            eprintln!("{text}");
            Report::Raw(json.map(|j| j + "\n").unwrap_or_default())
        }
        _ => Report::Message(text),
    }
}

async fn login(profile: Option<String>, s: &Session, p: &Printer) -> Result<Outcome> {
    let bound = s.bound(&target_profile(profile, s))?;
    let msg = bound.backend.login().await?;
    let value = serde_json::json!({"profile": bound.profile.name, "backend": bound.profile.backend,
        "logged_in": true, "message": msg});
    let text = format!("logged in to profile {}: {msg}", bound.profile.name);
    Ok(Outcome::ok(said(p, value, text)))
}

async fn logout(profile: Option<String>, s: &Session, p: &Printer) -> Result<Outcome> {
    let bound = s.bound(&target_profile(profile, s))?;
    let name = &bound.profile.name;
    // Every backend caches its token as `cache/<profile>.token.json`.
    let cached = s
        .state_dir
        .join("cache")
        .join(format!("{name}.token.json"))
        .exists();
    bound.backend.logout().await?;
    let text = if cached {
        format!("forgot the cached token of profile {name}")
    } else {
        format!("profile {name} had no cached token; nothing to forget")
    };
    let value = serde_json::json!({"profile": name, "backend": bound.profile.backend,
        "had_token": cached, "message": text});
    Ok(Outcome::ok(said(p, value, text)))
}

fn profiles(s: &Session) -> Report {
    let selected = s
        .config
        .profile(&s.selected)
        .map(|p| p.name)
        .unwrap_or_default();
    let rows = s
        .config
        .profile_names()
        .into_iter()
        .map(|name| match s.config.profile(&name) {
            Ok(profile) => {
                let built = s.bound(&name);
                ProfileRow {
                    selected: profile.name == selected,
                    name: profile.name.clone(),
                    backend: profile.backend.to_string(),
                    url: profile.url.clone(),
                    credentials: profile.has_credentials(),
                    source: profile.source.to_string(),
                    capabilities: built
                        .as_ref()
                        .map(|b| {
                            b.backend
                                .capabilities()
                                .iter()
                                .map(|c| {
                                    serde_json::to_value(c)
                                        .ok()
                                        .and_then(|v| v.as_str().map(String::from))
                                        .unwrap_or_default()
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                    error: built.err().map(|e| e.message),
                }
            }
            Err(e) => ProfileRow {
                name: name.clone(),
                backend: "?".into(),
                url: None,
                credentials: false,
                source: "config file".into(),
                selected: name == selected,
                capabilities: Vec::new(),
                error: Some(e.message),
            },
        })
        .collect();
    Report::Profiles(rows)
}

async fn queues(profile: Option<String>, s: &Session) -> Result<Outcome> {
    let bound = s.bound(&target_profile(profile, s))?;
    let queues = bound.backend.queues().await?;
    Ok(Outcome::ok(Report::Queues(queues)))
}

async fn doctor(profile: Option<String>, s: &Session, p: &Printer) -> Result<Outcome> {
    let bound = s.bound(&target_profile(profile, s))?;
    let (name, backend) = (
        bound.profile.name.clone(),
        bound.profile.backend.to_string(),
    );
    // Each check reports what it finds at once, rather than retrying a refused connection.
    crate::http::set_refused_budget(Duration::ZERO);
    p.doctor_start(&name, &backend);
    let mut checks = Vec::new();
    bound
        .backend
        .doctor(&mut |c| {
            p.doctor_check(&name, &backend, &c);
            checks.push(c);
        })
        .await;
    let code = if checks.iter().all(|c| c.ok) {
        exit::SUCCESS
    } else {
        ErrorKind::Unavailable.exit_code()
    };
    Ok(Outcome {
        report: Report::Doctor {
            profile: name,
            backend,
            checks,
            exit_code: code,
        },
        code,
    })
}
