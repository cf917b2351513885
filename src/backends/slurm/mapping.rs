//! Version-neutral Slurm knowledge: job states, wait statuses, output-path patterns, and the
//! translation of a jobctl spec into a submission (and of a Slurm job record into a [`Job`]).
//!
//! The per-version modules (`v0_0_38`, …) only convert between their wire shapes and the
//! neutral [`SubmitRequest`] / [`NativeJob`] defined here, so everything a user can observe is
//! decided in one place whatever API version the server speaks.

use crate::error::{Error, Result};
use crate::model::{Job, JobSpec, JobState, value_to_string};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Working directory used when the spec names none. slurmrestd would otherwise use its own
/// working directory, which rarely exists for the job's user on the compute node.
pub const DEFAULT_WORKDIR: &str = "/tmp";

/// `PATH` given to jobs whose `--arg`s set none: a REST submission inherits no environment.
pub const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A submission, independent of the API version that will carry it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubmitRequest {
    /// Batch script text, starting with `#!`.
    pub script: String,
    /// Job name.
    pub name: String,
    /// Partition, when given.
    pub partition: Option<String>,
    /// Minimum and maximum node count.
    pub nodes: Option<(u32, u32)>,
    /// Number of tasks.
    pub tasks: Option<u32>,
    /// CPUs per task.
    pub cpus_per_task: Option<u32>,
    /// Memory per node in MiB.
    pub memory_per_node: Option<u64>,
    /// Time limit in minutes.
    pub time_limit: Option<u32>,
    /// Working directory.
    pub workdir: String,
    /// Standard output path pattern.
    pub stdout: Option<String>,
    /// Standard error path pattern.
    pub stderr: Option<String>,
    /// Environment of the job (always non-empty: the server requires the field).
    pub environment: BTreeMap<String, String>,
    /// The job's comment: carries the submission's idempotency key ([`key_comment`]).
    pub comment: Option<String>,
}

/// The comment that carries idempotency key `key` on the cluster (`squeue -o %k` shows it).
pub fn key_comment(key: &str) -> String {
    format!("jobctl-key:{key}")
}

/// A Slurm job record, independent of the API version that carried it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NativeJob {
    /// Job id.
    pub job_id: u64,
    /// Job name.
    pub name: Option<String>,
    /// The job's comment.
    pub comment: Option<String>,
    /// The state as the server wrote it (`FAILED`, or `RUNNING,COMPLETING` for list-valued
    /// states of newer API versions).
    pub state: String,
    /// `state_reason` (`None`, `Resources`, `NonZeroExitCode`, `TimeLimit`…).
    pub state_reason: Option<String>,
    /// Free-text state description.
    pub state_description: Option<String>,
    /// The raw wait status of the batch script (`exit 3` gives 768).
    pub exit_code: Option<i64>,
    /// Owner.
    pub user_name: Option<String>,
    /// Partition.
    pub partition: Option<String>,
    /// Seconds since the epoch; 0 means unknown.
    pub submit_time: Option<i64>,
    /// Seconds since the epoch; for pending jobs an estimate.
    pub start_time: Option<i64>,
    /// Seconds since the epoch; for running jobs the projected end.
    pub end_time: Option<i64>,
    /// Time limit in minutes.
    pub time_limit: Option<i64>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Standard output pattern, unexpanded.
    pub stdout: Option<String>,
    /// Standard error pattern, unexpanded.
    pub stderr: Option<String>,
    /// Allocated nodes.
    pub nodes: Option<String>,
    /// Node running the batch script.
    pub batch_host: Option<String>,
    /// Array master job id, for array tasks.
    pub array_job_id: Option<u64>,
    /// Array task id, for array tasks.
    pub array_task_id: Option<u64>,
}

/// Normalises a Slurm job state. `state` may list flags (`RUNNING,COMPLETING`); the most
/// telling one wins.
pub fn map_state(state: &str) -> JobState {
    let parts: Vec<String> = state
        .split([',', '+', ' '])
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    // A terminal base state decides, whatever flags accompany it.
    for p in &parts {
        let s = base_state(p);
        if s.is_terminal() {
            return s;
        }
    }
    parts
        .iter()
        .map(|p| base_state(p))
        .find(|s| *s != JobState::Unknown)
        .unwrap_or(JobState::Unknown)
}

fn base_state(s: &str) -> JobState {
    match s {
        "PENDING" | "REQUEUED" | "REQUEUE_FED" | "REQUEUE_HOLD" | "RESV_DEL_HOLD"
        | "CONFIGURING" | "POWER_UP_NODE" => JobState::Queued,
        "RUNNING" | "COMPLETING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" | "UPDATE_DB" => {
            JobState::Running
        }
        "SUSPENDED" | "STOPPED" => JobState::Suspended,
        "COMPLETED" => JobState::Succeeded,
        "CANCELLED" | "REVOKED" => JobState::Canceled,
        "FAILED" | "TIMEOUT" | "NODE_FAIL" | "PREEMPTED" | "BOOT_FAIL" | "DEADLINE"
        | "OUT_OF_MEMORY" | "SPECIAL_EXIT" | "RECONFIG_FAIL" => JobState::Failed,
        _ => JobState::Unknown,
    }
}

/// Why a terminal state that is not a plain non-zero exit happened, in words.
fn state_words(state: &str) -> Option<&'static str> {
    let upper = state.to_ascii_uppercase();
    let words = [
        ("TIMEOUT", "time limit reached"),
        ("NODE_FAIL", "a node of the job failed"),
        ("PREEMPTED", "preempted by a higher-priority job"),
        ("BOOT_FAIL", "a node failed to boot"),
        ("DEADLINE", "deadline reached before the job could run"),
        ("OUT_OF_MEMORY", "out of memory"),
        (
            "REVOKED",
            "revoked (the job runs on another cluster of the federation)",
        ),
        ("SPECIAL_EXIT", "special exit (held after a requeue)"),
    ];
    words
        .iter()
        .find(|(k, _)| upper.split(',').any(|p| p.trim() == *k))
        .map(|(_, w)| *w)
}

/// Decodes a raw wait status into (exit code, signal). `exit 3` is 768 → (3, None); a job
/// killed by SIGKILL is 9 → (137, Some(9)). `None` when the value cannot be a wait status.
pub fn decode_wait_status(raw: i64) -> Option<(i64, Option<i32>)> {
    if !(0..=0xffff).contains(&raw) {
        return None;
    }
    let signal = (raw & 0x7f) as i32;
    if signal == 0 {
        Some(((raw >> 8) & 0xff, None))
    } else {
        Some((128 + i64::from(signal), Some(signal)))
    }
}

/// The usual name of a Linux signal number.
pub fn signal_name(n: i32) -> Option<&'static str> {
    const NAMES: [&str; 31] = [
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(n)
        .ok()
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| NAMES.get(i).copied())
}

fn epoch(secs: Option<i64>) -> Option<DateTime<Utc>> {
    secs.filter(|s| *s > 0)
        .and_then(|s| Utc.timestamp_opt(s, 0).single())
}

fn non_empty(s: &Option<String>) -> Option<&str> {
    s.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// Turns a Slurm job record into the normalised [`Job`].
pub fn to_job(n: &NativeJob, api_version: &str) -> Job {
    let state = map_state(&n.state);
    let mut job = Job::new(n.job_id.to_string(), state, Some(n.state.clone()));
    job.name = non_empty(&n.name).map(str::to_string);
    job.owner = non_empty(&n.user_name).map(str::to_string);
    job.queue = non_empty(&n.partition).map(str::to_string);
    job.created_at = epoch(n.submit_time);
    // A pending job's start_time is the scheduler's estimate and a running job's end_time is
    // its projected end: only report what has happened.
    if state != JobState::Queued {
        job.started_at = epoch(n.start_time);
    }
    if state.is_terminal() {
        job.ended_at = epoch(n.end_time);
    }

    let slurm_reason = non_empty(&n.state_reason).filter(|r| *r != "None");
    let mut reasons: Vec<String> = Vec::new();
    let launch_failed = slurm_reason == Some("JobLaunchFailure");
    if state.is_terminal() || n.state.to_ascii_uppercase().contains("COMPLETING") {
        match n.exit_code.and_then(decode_wait_status) {
            // A launch failure stores a Slurm error number where the wait status would be.
            Some(_) if launch_failed => {
                if let Some(raw) = n.exit_code {
                    reasons.push(format!("the job could not be launched (Slurm error {raw})"));
                }
            }
            Some((code, signal)) => {
                job.exit_code = Some(code);
                if let Some(sig) = signal {
                    let name = signal_name(sig).unwrap_or("unknown signal");
                    reasons.push(format!("terminated by signal {sig} ({name})"));
                }
            }
            None => {}
        }
    }
    if state.is_terminal() {
        if let Some(words) = state_words(&n.state) {
            reasons.insert(0, words.to_string());
        }
    }
    if let Some(r) = slurm_reason {
        if !launch_failed {
            reasons.push(r.to_string());
        }
    }
    if let Some(d) = non_empty(&n.state_description) {
        reasons.push(d.to_string());
    }
    if !reasons.is_empty() {
        job.reason = Some(reasons.join("; "));
    }

    let mut extra = Map::new();
    let mut put = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            extra.insert(k.to_string(), v);
        }
    };
    put("api_version", Some(Value::from(api_version)));
    put("state_reason", n.state_reason.clone().map(Value::from));
    put("nodes", non_empty(&n.nodes).map(Value::from));
    put("batch_host", non_empty(&n.batch_host).map(Value::from));
    // Slurm writes an unlimited job's limit as null, 0 or NO_VAL/INFINITE (2^32 - 1 or -2).
    put(
        "time_limit_minutes",
        n.time_limit
            .filter(|m| *m > 0 && *m < 0xffff_fffe)
            .map(Value::from),
    );
    put("workdir", non_empty(&n.cwd).map(Value::from));
    if state.is_terminal() {
        put("exit_status_raw", n.exit_code.map(Value::from));
    }
    put("stdout", output_path(n, false).map(Value::from));
    put("stderr", output_path(n, true).map(Value::from));
    job.extra = extra;
    job
}

/// The job's output (or error) file with its `%` patterns expanded, made absolute against the
/// working directory. Slurm's defaults apply when the job set none: `slurm-%j.out` in the
/// working directory, and standard error joined to standard output.
pub fn output_path(n: &NativeJob, stderr: bool) -> Option<String> {
    let pattern = if stderr {
        non_empty(&n.stderr).or_else(|| non_empty(&n.stdout))
    } else {
        non_empty(&n.stdout)
    };
    let pattern = match pattern {
        Some(p) => p.to_string(),
        None if n.array_task_id.is_some() => "slurm-%A_%a.out".to_string(),
        None => "slurm-%j.out".to_string(),
    };
    let expanded = expand_pattern(&pattern, n, non_empty(&n.batch_host));
    if expanded.starts_with('/') {
        Some(expanded)
    } else {
        let cwd = non_empty(&n.cwd)?;
        Some(format!("{}/{}", cwd.trim_end_matches('/'), expanded))
    }
}

/// Expands sbatch filename patterns (`%j`, `%x`, `%u`, `%N`, `%A`, `%a`, `%%`…, with optional
/// zero-padding width such as `%5j`). `host` stands in for `%N`.
pub fn expand_pattern(pattern: &str, n: &NativeJob, host: Option<&str>) -> String {
    // A backslash anywhere disables expansion, as in sbatch.
    if pattern.contains('\\') {
        return pattern.replace('\\', "");
    }
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(*d);
            chars.next();
        }
        let width: usize = width.parse().unwrap_or(0).min(10);
        let num = |v: u64| format!("{v:0width$}");
        match chars.next() {
            Some('%') => out.push('%'),
            Some('j') => out.push_str(&num(n.job_id)),
            Some('J') => out.push_str(&num(n.job_id)),
            Some('A') => out.push_str(&num(n.array_job_id.unwrap_or(n.job_id))),
            Some('a') => out.push_str(&num(n.array_task_id.unwrap_or(0))),
            Some('s') => out.push_str("batch"),
            Some('n') | Some('t') => out.push_str(&num(0)),
            Some('x') => out.push_str(n.name.as_deref().unwrap_or("")),
            Some('u') => out.push_str(n.user_name.as_deref().unwrap_or("")),
            Some('N') => out.push_str(host.unwrap_or("")),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// Option keys of a Slurm submission (CONTRACT §2).
pub const OPTIONS: &[&str] = &[
    "partition",
    "nodes",
    "tasks",
    "cpus_per_task",
    "memory_per_node",
    "time_limit",
    "workdir",
    "stdout",
    "stderr",
];

/// Builds (and thereby validates) a submission from a spec; errors name the field (exit 2).
pub fn submit_request(spec: &JobSpec) -> Result<SubmitRequest> {
    let command = spec
        .command
        .as_ref()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            Error::usage(
                "the slurm backend needs a command (field `command`): add it after `--`, e.g. `jobctl submit -- 'srun hostname'`",
            )
        })?;
    let body = if command.len() == 1 {
        command[0].clone()
    } else {
        shell_words::join(command)
    };
    if body.trim().is_empty() {
        return Err(Error::usage("the job's command (field `command`) is empty"));
    }
    let mut script = if body.starts_with("#!") {
        body
    } else {
        format!("#!/bin/sh\n{body}")
    };
    if !script.ends_with('\n') {
        script.push('\n');
    }

    let mut environment = BTreeMap::new();
    for (k, v) in &spec.args {
        let valid = !k.is_empty()
            && !k.starts_with(|c: char| c.is_ascii_digit())
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(Error::usage(format!(
                "`--arg {k}=…` (field `args`): Slurm job arguments are environment variables; `{k}` is not a valid variable name"
            )));
        }
        environment.insert(k.clone(), value_to_string(v));
    }
    environment
        .entry("PATH".to_string())
        .or_insert_with(|| DEFAULT_PATH.to_string());

    let opt = |k: &str| spec.options.get(k).filter(|v| !v.is_null());
    let text = |k: &str| -> Result<Option<String>> {
        match opt(k) {
            None => Ok(None),
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
            Some(other) => Err(Error::usage(format!(
                "option `{k}` must be a non-empty text, got {other}"
            ))),
        }
    };
    let workdir = text("workdir")?.unwrap_or_else(|| DEFAULT_WORKDIR.to_string());
    if !workdir.starts_with('/') {
        return Err(Error::usage(format!(
            "option `workdir` must be an absolute path on the cluster, got '{workdir}'"
        )));
    }

    Ok(SubmitRequest {
        script,
        name: spec
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| "jobctl".to_string()),
        partition: text("partition")?,
        nodes: opt("nodes").map(parse_nodes).transpose()?,
        tasks: opt("tasks").map(|v| positive(v, "tasks")).transpose()?,
        cpus_per_task: opt("cpus_per_task")
            .map(|v| positive(v, "cpus_per_task"))
            .transpose()?,
        memory_per_node: opt("memory_per_node").map(parse_memory).transpose()?,
        time_limit: opt("time_limit").map(parse_minutes).transpose()?,
        workdir,
        stdout: text("stdout")?,
        stderr: text("stderr")?,
        environment,
        comment: spec.key.as_deref().map(key_comment),
    })
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn positive(v: &Value, key: &str) -> Result<u32> {
    as_u64(v)
        .filter(|n| *n >= 1)
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(|| {
            Error::usage(format!(
                "option `{key}` must be a whole number ≥ 1, got {v}"
            ))
        })
}

/// `nodes`: `2`, or a range `1-4`.
fn parse_nodes(v: &Value) -> Result<(u32, u32)> {
    let bad = || {
        Error::usage(format!(
            "option `nodes` must be N or MIN-MAX (e.g. 2 or 1-4), got {v}"
        ))
    };
    if let Value::String(s) = v {
        if let Some((a, b)) = s.split_once('-') {
            let a = positive(&Value::from(a.trim()), "nodes").map_err(|_| bad())?;
            let b = positive(&Value::from(b.trim()), "nodes").map_err(|_| bad())?;
            return if a <= b { Ok((a, b)) } else { Err(bad()) };
        }
    }
    let n = positive(v, "nodes").map_err(|_| bad())?;
    Ok((n, n))
}

/// `memory_per_node`: MiB as a number, or with a unit `512M`, `4G`, `1T`.
fn parse_memory(v: &Value) -> Result<u64> {
    let bad = || {
        Error::usage(format!(
            "option `memory_per_node` must be MiB (e.g. 512) or a size such as 4G, got {v}"
        ))
    };
    if let Some(n) = as_u64(v) {
        return if n > 0 { Ok(n) } else { Err(bad()) };
    }
    let Value::String(s) = v else {
        return Err(bad());
    };
    let s = s.trim().to_ascii_uppercase();
    let s = s.strip_suffix('B').unwrap_or(&s);
    let (digits, factor) = match s.chars().last() {
        Some('K') => (&s[..s.len() - 1], 0),
        Some('M') => (&s[..s.len() - 1], 1),
        Some('G') => (&s[..s.len() - 1], 1024),
        Some('T') => (&s[..s.len() - 1], 1024 * 1024),
        _ => return Err(bad()),
    };
    let n: u64 = digits.trim().parse().map_err(|_| bad())?;
    let mib = if factor == 0 {
        n.div_ceil(1024)
    } else {
        n * factor
    };
    if mib == 0 { Err(bad()) } else { Ok(mib) }
}

/// `time_limit`: minutes as a number, or a duration (`90s`, `1h30m`), rounded up to minutes.
fn parse_minutes(v: &Value) -> Result<u32> {
    let bad = || {
        Error::usage(format!(
            "option `time_limit` must be minutes (e.g. 30) or a duration such as 1h30m, got {v}"
        ))
    };
    let minutes = match as_u64(v) {
        Some(n) => n,
        None => match v {
            Value::String(s) => {
                let d = humantime::parse_duration(s.trim()).map_err(|_| bad())?;
                d.as_secs().div_ceil(60)
            }
            _ => return Err(bad()),
        },
    };
    u32::try_from(minutes)
        .ok()
        .filter(|m| *m >= 1)
        .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn native(state: &str, exit: Option<i64>, reason: &str) -> NativeJob {
        NativeJob {
            job_id: 42,
            name: Some("sim".into()),
            state: state.into(),
            state_reason: Some(reason.into()),
            exit_code: exit,
            user_name: Some("alice".into()),
            partition: Some("debug".into()),
            submit_time: Some(1_795_225_431),
            start_time: Some(1_795_225_432),
            end_time: Some(1_795_225_437),
            cwd: Some("/home/alice".into()),
            batch_host: Some("node7".into()),
            ..NativeJob::default()
        }
    }

    #[test]
    fn every_slurm_state_has_a_normalised_state() {
        let table = [
            ("PENDING", JobState::Queued),
            ("REQUEUED", JobState::Queued),
            ("CONFIGURING", JobState::Queued),
            ("RUNNING", JobState::Running),
            ("COMPLETING", JobState::Running),
            ("SUSPENDED", JobState::Suspended),
            ("STOPPED", JobState::Suspended),
            ("COMPLETED", JobState::Succeeded),
            ("CANCELLED", JobState::Canceled),
            ("FAILED", JobState::Failed),
            ("TIMEOUT", JobState::Failed),
            ("NODE_FAIL", JobState::Failed),
            ("PREEMPTED", JobState::Failed),
            ("BOOT_FAIL", JobState::Failed),
            ("DEADLINE", JobState::Failed),
            ("OUT_OF_MEMORY", JobState::Failed),
            ("RUNNING,COMPLETING", JobState::Running),
            ("CANCELLED,COMPLETING", JobState::Canceled),
            ("WHATEVER_NEW", JobState::Unknown),
        ];
        for (native, want) in table {
            assert_eq!(map_state(native), want, "{native}");
        }
    }

    #[test]
    fn wait_statuses_decode_to_exit_codes_and_signals() {
        assert_eq!(decode_wait_status(0), Some((0, None)));
        assert_eq!(decode_wait_status(768), Some((3, None)));
        assert_eq!(decode_wait_status(9), Some((137, Some(9))));
        assert_eq!(decode_wait_status(15), Some((143, Some(15))));
        assert_eq!(decode_wait_status(-1), None);
        assert_eq!(decode_wait_status(1 << 20), None);
        assert_eq!(signal_name(15), Some("SIGTERM"));
        assert_eq!(signal_name(0), None);
    }

    #[test]
    fn a_failed_job_reports_its_exit_code_and_reason() {
        let j = to_job(&native("FAILED", Some(768), "NonZeroExitCode"), "v0.0.38");
        assert_eq!(j.state, JobState::Failed);
        assert!(j.terminal);
        assert_eq!(j.exit_code, Some(3));
        assert_eq!(j.reason.as_deref(), Some("NonZeroExitCode"));
        assert_eq!(j.native_state.as_deref(), Some("FAILED"));
        assert_eq!(j.owner.as_deref(), Some("alice"));
        assert_eq!(j.queue.as_deref(), Some("debug"));
        assert_eq!(
            j.created_at.unwrap().to_rfc3339(),
            "2026-11-21T01:43:51+00:00"
        );
        assert!(j.ended_at.is_some());
        assert_eq!(j.extra["stdout"], "/home/alice/slurm-42.out");
    }

    #[test]
    fn a_signal_and_a_timeout_are_named() {
        let j = to_job(&native("TIMEOUT", Some(15), "TimeLimit"), "v0.0.38");
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.exit_code, Some(143));
        let reason = j.reason.unwrap();
        assert!(reason.starts_with("time limit reached"), "{reason}");
        assert!(reason.contains("signal 15 (SIGTERM)"), "{reason}");
    }

    #[test]
    fn running_jobs_have_no_exit_code_nor_projected_end() {
        let j = to_job(&native("RUNNING", Some(0), "None"), "v0.0.38");
        assert_eq!(j.exit_code, None);
        assert_eq!(j.ended_at, None);
        assert!(j.started_at.is_some());
        assert_eq!(j.reason, None);
        let j = to_job(&native("PENDING", Some(0), "Resources"), "v0.0.38");
        assert_eq!(j.started_at, None);
        assert_eq!(j.reason.as_deref(), Some("Resources"));
    }

    #[test]
    fn a_launch_failure_is_not_mistaken_for_a_signal() {
        let j = to_job(&native("FAILED", Some(4021), "JobLaunchFailure"), "v0.0.38");
        assert_eq!(j.exit_code, None);
        assert!(j.reason.unwrap().contains("Slurm error 4021"));
    }

    #[test]
    fn output_patterns_expand_like_sbatch() {
        let mut n = native("RUNNING", None, "None");
        n.stdout = Some("out/%x-%j-%u-%N.%5j.%%.log".into());
        assert_eq!(
            output_path(&n, false).unwrap(),
            "/home/alice/out/sim-42-alice-node7.00042.%.log"
        );
        // Standard error defaults to standard output.
        assert_eq!(output_path(&n, true), output_path(&n, false));
        n.stderr = Some("/scratch/%A_%a.err".into());
        n.array_job_id = Some(40);
        n.array_task_id = Some(2);
        assert_eq!(output_path(&n, true).unwrap(), "/scratch/40_2.err");
        n.stdout = Some("/tmp/lit\\%j".into());
        assert_eq!(output_path(&n, false).unwrap(), "/tmp/lit%j");
    }

    fn spec(cmd: &[&str]) -> JobSpec {
        JobSpec {
            command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            ..JobSpec::default()
        }
    }

    #[test]
    fn the_command_becomes_a_script() {
        let r = submit_request(&spec(&["echo hi; sleep 1"])).unwrap();
        assert_eq!(r.script, "#!/bin/sh\necho hi; sleep 1\n");
        let r = submit_request(&spec(&["echo", "a b"])).unwrap();
        assert_eq!(r.script, "#!/bin/sh\necho 'a b'\n");
        let r = submit_request(&spec(&["#!/bin/bash\necho x\n"])).unwrap();
        assert_eq!(r.script, "#!/bin/bash\necho x\n");
        assert_eq!(r.workdir, DEFAULT_WORKDIR);
        assert_eq!(r.environment["PATH"], DEFAULT_PATH);
        assert_eq!(r.name, "jobctl");
    }

    #[test]
    fn options_are_parsed_and_bad_ones_name_the_field() {
        let mut s = spec(&["true"]);
        for (k, v) in [
            ("nodes", Value::from("1-2")),
            ("tasks", Value::from(2)),
            ("cpus_per_task", Value::from("3")),
            ("memory_per_node", Value::from("2G")),
            ("time_limit", Value::from("90s")),
            ("partition", Value::from("debug")),
        ] {
            s.options.insert(k.into(), v);
        }
        s.args.insert("N".into(), Value::from(5));
        let r = submit_request(&s).unwrap();
        assert_eq!(r.nodes, Some((1, 2)));
        assert_eq!(r.tasks, Some(2));
        assert_eq!(r.cpus_per_task, Some(3));
        assert_eq!(r.memory_per_node, Some(2048));
        assert_eq!(r.time_limit, Some(2));
        assert_eq!(r.environment["N"], "5");

        for (k, v) in [
            ("nodes", Value::from("3-1")),
            ("tasks", Value::from(0)),
            ("memory_per_node", Value::from("lots")),
            ("time_limit", Value::from("soon")),
            ("workdir", Value::from("relative/dir")),
            ("partition", Value::from(3)),
        ] {
            let mut bad = spec(&["true"]);
            bad.options.insert(k.into(), v);
            let e = submit_request(&bad).unwrap_err();
            assert_eq!(e.exit_code(), crate::error::exit::USAGE);
            assert!(e.message.contains(k), "{k}: {e}");
        }
        let mut bad = spec(&["true"]);
        bad.args.insert("A-B".into(), Value::from(1));
        assert!(submit_request(&bad).unwrap_err().message.contains("A-B"));
        assert!(
            submit_request(&JobSpec::default())
                .unwrap_err()
                .message
                .contains("command")
        );
    }
}
