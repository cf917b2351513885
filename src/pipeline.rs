//! Pipelines: the orchestration fields of a batch file (`after`, `retries`), their validation,
//! the order they run in, output substitution between lines (`${KEY.id}`, `${KEY.ref}`), and
//! the scheduling state machine that `batch --wait` drives.
//!
//! Everything here is pure: no I/O, no clock. The driver (`batch --wait`) feeds it what
//! happened (a submission, a job's final state, a journal record after a crash) and asks what
//! to do next, so every rule of the pipeline is unit-tested without a platform.

use crate::error::{Error, Result};
use crate::model::{JobSpec, JobState};
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Upper bound of `retries`: more resubmissions than this is a typo, not a plan.
pub const MAX_RETRIES: u32 = 100;

/// One line of a batch file: the job spec and its orchestration fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number in the file.
    pub line: usize,
    /// The job spec (its `key` is always set: given, or derived from the line).
    pub spec: JobSpec,
    /// `after` as written: line keys or job references.
    pub after: Vec<String>,
    /// How many times a failed job is submitted again.
    pub retries: u32,
}

impl Line {
    /// The line's key (always present after [`parse`]).
    pub fn key(&self) -> &str {
        self.spec.key.as_deref().unwrap_or_default()
    }

    /// Whether the line uses an orchestration field (and so needs `batch --wait`).
    pub fn orchestrated(&self) -> bool {
        !self.after.is_empty() || self.retries > 0
    }
}

/// A stable 64-bit FNV-1a hash: derived keys must not change between Rust releases.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Parses a batch file; any malformed line fails the whole file before anything is sent.
/// Blank lines and lines starting with `#` are skipped. A line without `key` gets one derived
/// from `run` (none for the first run of a file, else the id `--new-run` chose), its number
/// and its text, so a re-run of the same file and run gives the same keys.
pub fn parse(text: &str, run: Option<&str>) -> Result<Vec<Line>> {
    let mut lines = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let t = raw.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let bad = |what: String| Error::usage(format!("line {n}: invalid job spec: {what}"));
        let mut object: Map<String, Value> =
            serde_json::from_str(t).map_err(|e| bad(e.to_string()))?;
        let after = match object.remove("after") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
                    other => Err(bad(format!(
                        "`after` holds keys or job references as strings, got {other}"
                    ))),
                })
                .collect::<Result<_>>()?,
            Some(other) => {
                return Err(bad(format!(
                    "`after` is a key or an array of keys, got {other}"
                )));
            }
        };
        let retries = match object.remove("retries") {
            None | Some(Value::Null) => 0,
            Some(v) => match v.as_u64() {
                Some(r) if r <= u64::from(MAX_RETRIES) => r as u32,
                _ => {
                    return Err(bad(format!(
                        "`retries` is a whole number from 0 to {MAX_RETRIES}, got {v}"
                    )));
                }
            },
        };
        let mut spec: JobSpec =
            serde_json::from_value(Value::Object(object)).map_err(|e| bad(e.to_string()))?;
        match &spec.key {
            Some(k) if k.trim().is_empty() => return Err(bad("`key` is empty".into())),
            Some(_) => {}
            None => {
                let hash = fnv1a(t.as_bytes());
                spec.key = Some(match run {
                    None => format!("batch-{n}-{hash:016x}"),
                    Some(r) => format!("batch-{r}-{n}-{hash:016x}"),
                });
            }
        }
        lines.push(Line {
            line: n,
            spec,
            after,
            retries,
        });
    }
    Ok(lines)
}

/// The idempotency key of attempt `attempt` (1-based) of a line: the line's key, then `KEY#2`…
pub fn attempt_key(key: &str, attempt: u32) -> String {
    if attempt <= 1 {
        key.to_string()
    } else {
        format!("{key}#{attempt}")
    }
}

/// The wait before attempt `next` (2, 3…): 2 s, doubling, at most 1 minute. Retries of a failed
/// job are about platform hiccups (a node lost, a licence busy); a short, growing pause gives
/// them time to clear without stalling the pipeline.
pub fn retry_delay(next: u32) -> Duration {
    let doublings = next.saturating_sub(2).min(5);
    Duration::from_secs(2u64 << doublings).min(Duration::from_secs(60))
}

/// A prerequisite of a line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Dep {
    /// Another line of the file (index into the plan's lines).
    Line(usize),
    /// An existing job, by reference as written (index into [`Plan::externals`]).
    External(usize),
}

/// A validated pipeline: every prerequisite resolved, no cycles.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The lines, in file order.
    pub lines: Vec<Line>,
    /// Each line's prerequisites.
    pub deps: Vec<Vec<Dep>>,
    /// Job references named in `after` that are not keys of the file, deduplicated.
    pub externals: Vec<String>,
    /// Lines grouped by level: level 0 has no line prerequisite, level k+1 needs level ≤ k.
    pub levels: Vec<Vec<usize>>,
}

/// Builds the plan: resolves `after`, refuses duplicate keys, self-references, unknown keys,
/// cycles and `${KEY.…}` placeholders that do not name a prerequisite — all before anything is
/// sent (exit 2, naming the lines).
pub fn plan(lines: Vec<Line>) -> Result<Plan> {
    let mut by_key: BTreeMap<&str, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if let Some(first) = by_key.insert(l.key(), i) {
            problems.push(format!(
                "lines {} and {} have the same key '{}'",
                lines[first].line,
                l.line,
                l.key()
            ));
        }
    }
    let mut externals: Vec<String> = Vec::new();
    let mut deps: Vec<Vec<Dep>> = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        let mut mine = BTreeSet::new();
        for a in &l.after {
            if a == l.key() {
                problems.push(format!(
                    "line {}: `after` names the line itself ('{a}')",
                    l.line
                ));
            } else if let Some(&j) = by_key.get(a.as_str()) {
                mine.insert(Dep::Line(j));
            } else if looks_like_reference(a) {
                let e = match externals.iter().position(|x| x == a) {
                    Some(e) => e,
                    None => {
                        externals.push(a.clone());
                        externals.len() - 1
                    }
                };
                mine.insert(Dep::External(e));
            } else {
                problems.push(format!(
                    "line {}: `after` names '{a}', which is neither a key of this file nor a job reference (PROFILE:ID)",
                    l.line
                ));
            }
        }
        debug_assert!(deps.len() == i);
        deps.push(mine.into_iter().collect());
    }
    if !problems.is_empty() {
        return Err(Error::usage(problems.join("; ")));
    }
    let levels = levels(&lines, &deps)?;
    let plan = Plan {
        lines,
        deps,
        externals,
        levels,
    };
    plan.check_placeholders()?;
    Ok(plan)
}

fn looks_like_reference(s: &str) -> bool {
    matches!(s.split_once(':'), Some((p, id)) if !p.is_empty() && !id.is_empty())
        && !s.chars().any(char::is_whitespace)
}

/// Kahn's algorithm by rounds; what is left over lies on or behind a cycle.
fn levels(lines: &[Line], deps: &[Vec<Dep>]) -> Result<Vec<Vec<usize>>> {
    let n = lines.len();
    let mut level: Vec<Option<usize>> = vec![None; n];
    let mut out: Vec<Vec<usize>> = Vec::new();
    loop {
        let round: Vec<usize> = (0..n)
            .filter(|&i| level[i].is_none())
            .filter(|&i| {
                deps[i].iter().all(|d| match d {
                    Dep::Line(j) => level[*j].is_some_and(|l| l < out.len()),
                    Dep::External(_) => true,
                })
            })
            .collect();
        if round.is_empty() {
            break;
        }
        for &i in &round {
            level[i] = Some(out.len());
        }
        out.push(round);
    }
    if level.iter().all(Option::is_some) {
        return Ok(out);
    }
    Err(Error::usage(describe_cycle(lines, deps, &level)))
}

/// Names one cycle among the lines Kahn's algorithm could not place, as `line 2 (key a) →
/// line 5 (key b) → line 2 (key a)`.
fn describe_cycle(lines: &[Line], deps: &[Vec<Dep>], level: &[Option<usize>]) -> String {
    let stuck: Vec<usize> = (0..lines.len()).filter(|&i| level[i].is_none()).collect();
    // Every stuck line has a stuck prerequisite, so walking prerequisites must revisit a line.
    let mut path = vec![stuck[0]];
    loop {
        let here = path[path.len() - 1];
        let next = deps[here].iter().find_map(|d| match d {
            Dep::Line(j) if level[*j].is_none() => Some(*j),
            _ => None,
        });
        let Some(next) = next else { break };
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            let names: Vec<String> = cycle
                .iter()
                .map(|&i| format!("line {} (key {})", lines[i].line, lines[i].key()))
                .collect();
            return format!(
                "`after` forms a cycle: {} (each must run before the next)",
                names.join(" → ")
            );
        }
        path.push(next);
    }
    let names: Vec<String> = stuck.iter().map(|&i| lines[i].line.to_string()).collect();
    format!("`after` forms a cycle among lines {}", names.join(", "))
}

/// A `${KEY.id}` / `${KEY.ref}` placeholder found in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Placeholder {
    start: usize,
    end: usize,
    key: String,
    field: Field,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    Ref,
}

/// Finds placeholders; `$${` is an escaped, literal `${`. `${…}` without `.id`/`.ref` at the
/// end is left alone (it is shell syntax, not ours).
fn placeholders(s: &str) -> Vec<Placeholder> {
    let mut found = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes.get(i + 1) == Some(&b'$') && bytes.get(i + 2) == Some(&b'{') {
            i += 3;
            continue;
        }
        if bytes[i] == b'$' && bytes[i + 1] == b'{' {
            if let Some(close) = s[i + 2..].find('}') {
                let inner = &s[i + 2..i + 2 + close];
                let parsed = inner
                    .strip_suffix(".id")
                    .map(|k| (k, Field::Id))
                    .or_else(|| inner.strip_suffix(".ref").map(|k| (k, Field::Ref)));
                if let Some((key, field)) = parsed.filter(|(k, _)| !k.is_empty()) {
                    found.push(Placeholder {
                        start: i,
                        end: i + 2 + close + 1,
                        key: key.to_string(),
                        field,
                    });
                    i += 2 + close + 1;
                    continue;
                }
            }
        }
        i += 1;
    }
    found
}

fn strings_of(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| strings_of(x, out)),
        Value::Object(o) => o.values().for_each(|x| strings_of(x, out)),
        _ => {}
    }
}

fn spec_strings(spec: &JobSpec) -> Vec<String> {
    let mut out = Vec::new();
    out.extend(spec.name.iter().cloned());
    out.extend(spec.command.iter().flatten().cloned());
    spec.args.values().for_each(|v| strings_of(v, &mut out));
    spec.options.values().for_each(|v| strings_of(v, &mut out));
    out
}

/// What a placeholder is replaced with: a finished prerequisite's job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Job id on its platform.
    pub id: String,
    /// `PROFILE:ID`.
    pub reference: String,
}

/// Replaces placeholders in one string; `$${` becomes `${`.
fn substitute_str(s: &str, outputs: &BTreeMap<String, Output>) -> String {
    let mut result = String::with_capacity(s.len());
    let mut last = 0;
    for p in placeholders(s) {
        result.push_str(&s[last..p.start]);
        match outputs.get(&p.key) {
            Some(o) => result.push_str(match p.field {
                Field::Id => &o.id,
                Field::Ref => &o.reference,
            }),
            None => result.push_str(&s[p.start..p.end]),
        }
        last = p.end;
    }
    result.push_str(&s[last..]);
    result.replace("$${", "${")
}

fn substitute_value(v: &mut Value, outputs: &BTreeMap<String, Output>) {
    match v {
        Value::String(s) => *s = substitute_str(s, outputs),
        Value::Array(a) => a.iter_mut().for_each(|x| substitute_value(x, outputs)),
        Value::Object(o) => o.values_mut().for_each(|x| substitute_value(x, outputs)),
        _ => {}
    }
}

/// The spec with `${KEY.id}` / `${KEY.ref}` replaced by the prerequisites' jobs. Placeholders
/// were checked by [`plan`], so every one names a prerequisite that has succeeded by now.
pub fn substitute(spec: &JobSpec, outputs: &BTreeMap<String, Output>) -> JobSpec {
    let mut s = spec.clone();
    s.name = s.name.map(|n| substitute_str(&n, outputs));
    if let Some(cmd) = &mut s.command {
        for c in cmd.iter_mut() {
            *c = substitute_str(c, outputs);
        }
    }
    s.args
        .values_mut()
        .for_each(|v| substitute_value(v, outputs));
    s.options
        .values_mut()
        .for_each(|v| substitute_value(v, outputs));
    s
}

impl Plan {
    /// Every line a line waits for, directly or through others.
    pub fn ancestors(&self, i: usize) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = vec![i];
        while let Some(x) = stack.pop() {
            for d in &self.deps[x] {
                if let Dep::Line(j) = d {
                    if seen.insert(*j) {
                        stack.push(*j);
                    }
                }
            }
        }
        seen
    }

    fn check_placeholders(&self) -> Result<()> {
        let mut problems = Vec::new();
        for (i, l) in self.lines.iter().enumerate() {
            let ancestors = self.ancestors(i);
            for s in spec_strings(&l.spec) {
                for p in placeholders(&s) {
                    let ok = self
                        .lines
                        .iter()
                        .position(|x| x.key() == p.key)
                        .is_some_and(|j| ancestors.contains(&j));
                    if !ok {
                        problems.push(format!(
                            "line {}: `${{{}.{}}}` does not name a line this one runs `after` (use a key listed in `after`, or write `$${{` for a literal `${{`)",
                            l.line,
                            p.key,
                            if p.field == Field::Id { "id" } else { "ref" }
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::usage(problems.join("; ")))
        }
    }

    /// Index of the line with `key`.
    pub fn index_of(&self, key: &str) -> Option<usize> {
        self.lines.iter().position(|l| l.key() == key)
    }
}

/// Where a line is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Status {
    /// Waiting for prerequisites (or for its turn).
    Waiting,
    /// A submission of this attempt is being sent.
    Submitting {
        /// 1-based attempt.
        attempt: u32,
    },
    /// The attempt was accepted and has not ended.
    Running {
        /// 1-based attempt.
        attempt: u32,
        /// Its job.
        job: Output,
    },
    /// The attempt failed; attempt `next` is due after a pause.
    RetryDue {
        /// The attempt to submit next.
        next: u32,
    },
    /// Finished: the last attempt ended (`succeeded`, `failed`, `canceled`).
    Done {
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's job.
        job: Output,
        /// Its final state.
        state: JobState,
    },
    /// A submission was refused; nothing runs for this line.
    SubmitFailed {
        /// The attempt that was refused.
        attempt: u32,
        /// Why.
        error: String,
    },
    /// Not submitted because a prerequisite failed, was canceled or was itself blocked.
    Blocked {
        /// What it waited for and why that ended the line.
        reason: String,
    },
}

impl Status {
    /// Whether nothing more will happen to the line.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            Status::Done { .. } | Status::SubmitFailed { .. } | Status::Blocked { .. }
        )
    }
}

/// State of a prerequisite job that is not a line of the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtStatus {
    /// Not terminal yet (or not observed yet).
    Pending,
    /// Terminal in this state.
    Ended(JobState),
}

/// What happened to a line after its job ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Finish {
    /// The line is done in `state`; `blocked` lists lines that will now never run.
    Done {
        /// Final state of the line's last attempt.
        state: JobState,
        /// Lines blocked by it (transitively), with the reason each was given.
        blocked: Vec<usize>,
    },
    /// Another attempt is due after `delay`.
    Retry {
        /// The next attempt's number.
        next: u32,
        /// Pause before submitting it.
        delay: Duration,
    },
}

/// The scheduling state machine of one pipeline run.
#[derive(Debug, Clone)]
pub struct Scheduler {
    /// The validated plan.
    pub plan: Plan,
    /// Each line's status.
    pub status: Vec<Status>,
    /// Each external prerequisite's status.
    pub external: Vec<ExtStatus>,
}

impl Scheduler {
    /// A fresh run of `plan`: every line waiting.
    pub fn new(plan: Plan) -> Self {
        Scheduler {
            status: vec![Status::Waiting; plan.lines.len()],
            external: vec![ExtStatus::Pending; plan.externals.len()],
            plan,
        }
    }

    /// Lines whose prerequisites have all succeeded and that are waiting: submit these now
    /// (in file order).
    pub fn ready(&self) -> Vec<usize> {
        (0..self.plan.lines.len())
            .filter(|&i| self.status[i] == Status::Waiting)
            .filter(|&i| self.plan.deps[i].iter().all(|d| self.dep_succeeded(d)))
            .collect()
    }

    fn dep_succeeded(&self, d: &Dep) -> bool {
        match d {
            Dep::Line(j) => matches!(
                self.status[*j],
                Status::Done {
                    state: JobState::Succeeded,
                    ..
                }
            ),
            Dep::External(e) => self.external[*e] == ExtStatus::Ended(JobState::Succeeded),
        }
    }

    /// The prerequisites of line `i` that have not succeeded yet, as written in `after`.
    pub fn waiting_on(&self, i: usize) -> Vec<String> {
        self.plan.deps[i]
            .iter()
            .filter(|d| !self.dep_succeeded(d))
            .map(|d| self.dep_name(d))
            .collect()
    }

    fn dep_name(&self, d: &Dep) -> String {
        match d {
            Dep::Line(j) => self.plan.lines[*j].key().to_string(),
            Dep::External(e) => self.plan.externals[*e].clone(),
        }
    }

    /// The outputs `${KEY.…}` of line `i` may use: its succeeded ancestors' jobs by key.
    pub fn outputs_for(&self, i: usize) -> BTreeMap<String, Output> {
        self.plan
            .ancestors(i)
            .into_iter()
            .filter_map(|j| match &self.status[j] {
                Status::Done {
                    job,
                    state: JobState::Succeeded,
                    ..
                } => Some((self.plan.lines[j].key().to_string(), job.clone())),
                _ => None,
            })
            .collect()
    }

    /// The spec to submit for attempt `attempt` of line `i`: placeholders filled, attempt key.
    pub fn spec_for(&self, i: usize, attempt: u32) -> JobSpec {
        let line = &self.plan.lines[i];
        let mut spec = substitute(&line.spec, &self.outputs_for(i));
        spec.key = Some(attempt_key(line.key(), attempt));
        spec
    }

    /// Marks attempt `attempt` of line `i` as being sent.
    pub fn submitting(&mut self, i: usize, attempt: u32) {
        self.status[i] = Status::Submitting { attempt };
    }

    /// Records that attempt `attempt` of line `i` was accepted as `job`.
    pub fn submitted(&mut self, i: usize, attempt: u32, job: Output) {
        self.status[i] = Status::Running { attempt, job };
    }

    /// Records that a submission was refused; the line's dependents are blocked.
    pub fn submit_failed(&mut self, i: usize, attempt: u32, error: String) -> Vec<usize> {
        self.status[i] = Status::SubmitFailed { attempt, error };
        self.block_dependents(i)
    }

    /// Records the final state of line `i`'s current attempt and decides what follows: a retry
    /// (failed, attempts left; never for canceled) or the end of the line, blocking its
    /// dependents unless it succeeded.
    pub fn finished(&mut self, i: usize, state: JobState) -> Finish {
        let (attempt, job) = match &self.status[i] {
            Status::Running { attempt, job } => (*attempt, job.clone()),
            // A job that was not running cannot finish; keep the line as it is.
            _ => {
                return Finish::Done {
                    state,
                    blocked: Vec::new(),
                };
            }
        };
        let retries = self.plan.lines[i].retries;
        if state == JobState::Failed && attempt <= retries {
            let next = attempt + 1;
            self.status[i] = Status::RetryDue { next };
            return Finish::Retry {
                next,
                delay: retry_delay(next),
            };
        }
        self.status[i] = Status::Done {
            attempts: attempt,
            job,
            state,
        };
        let blocked = if state == JobState::Succeeded {
            Vec::new()
        } else {
            self.block_dependents(i)
        };
        Finish::Done { state, blocked }
    }

    /// Records the final state of an external prerequisite; returns the lines it blocks.
    pub fn external_finished(&mut self, e: usize, state: JobState) -> Vec<usize> {
        self.external[e] = ExtStatus::Ended(state);
        if state == JobState::Succeeded {
            return Vec::new();
        }
        let reason = format!("prerequisite {} {}", self.plan.externals[e], state);
        let direct: Vec<usize> = (0..self.plan.lines.len())
            .filter(|&i| self.plan.deps[i].contains(&Dep::External(e)))
            .collect();
        let mut blocked = Vec::new();
        for i in direct {
            if self.status[i] == Status::Waiting {
                self.status[i] = Status::Blocked {
                    reason: reason.clone(),
                };
                blocked.push(i);
                blocked.extend(self.block_dependents(i));
            }
        }
        blocked
    }

    /// Blocks every waiting line behind line `i`, transitively; returns them in file order.
    fn block_dependents(&mut self, i: usize) -> Vec<usize> {
        let mut blocked = Vec::new();
        let mut stack = vec![i];
        while let Some(x) = stack.pop() {
            let what = match &self.status[x] {
                Status::Done { state, .. } => format!("{state}"),
                Status::SubmitFailed { .. } => "could not be submitted".to_string(),
                _ => "was blocked".to_string(),
            };
            let reason = format!(
                "prerequisite {} (line {}) {what}",
                self.plan.lines[x].key(),
                self.plan.lines[x].line
            );
            for j in 0..self.plan.lines.len() {
                if self.status[j] == Status::Waiting && self.plan.deps[j].contains(&Dep::Line(x)) {
                    self.status[j] = Status::Blocked {
                        reason: reason.clone(),
                    };
                    blocked.push(j);
                    stack.push(j);
                }
            }
        }
        blocked.sort_unstable();
        blocked
    }

    /// Whether every line is final.
    pub fn all_final(&self) -> bool {
        self.status.iter().all(Status::is_final)
    }

    /// Jobs being watched: (line index, its running job).
    pub fn running(&self) -> Vec<(usize, Output)> {
        self.status
            .iter()
            .enumerate()
            .filter_map(|(i, s)| match s {
                Status::Running { job, .. } => Some((i, job.clone())),
                _ => None,
            })
            .collect()
    }

    /// External prerequisites still to watch: only those some waiting line still needs.
    pub fn externals_to_watch(&self) -> Vec<usize> {
        (0..self.plan.externals.len())
            .filter(|&e| self.external[e] == ExtStatus::Pending)
            .filter(|&e| {
                (0..self.plan.lines.len()).any(|i| {
                    self.status[i] == Status::Waiting
                        && self.plan.deps[i].contains(&Dep::External(e))
                })
            })
            .collect()
    }

    /// Replays one journal record of an earlier run of the same file (see [`Record`]).
    /// Records about unknown lines are ignored: the file may have been edited since.
    pub fn replay(&mut self, record: &Record) {
        match record {
            Record::Submitted {
                key, attempt, job, ..
            } => {
                if let Some(i) = self.plan.index_of(key) {
                    let current = match &self.status[i] {
                        Status::Running { attempt, .. } | Status::Submitting { attempt } => {
                            *attempt
                        }
                        Status::RetryDue { next } => next - 1,
                        Status::Done { attempts, .. } => *attempts,
                        _ => 0,
                    };
                    if *attempt > current {
                        self.status[i] = Status::Running {
                            attempt: *attempt,
                            job: job.clone(),
                        };
                    }
                }
            }
            Record::Finished {
                key,
                attempt,
                state,
                ..
            } => {
                if let Some(i) = self.plan.index_of(key) {
                    if matches!(&self.status[i], Status::Running { attempt: a, .. } if a == attempt)
                    {
                        // Blocking is recomputed from final states, so the result is not needed.
                        let _ = self.finished(i, *state);
                    }
                }
            }
        }
    }
}

/// A journal record of a pipeline run: what a re-run must know to redo nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Attempt `attempt` of the line with `key` was accepted as `job`.
    Submitted {
        /// Line number (informative; lines are matched by key).
        line: usize,
        /// The line's key (not the attempt key).
        key: String,
        /// 1-based attempt.
        attempt: u32,
        /// The job.
        job: Output,
    },
    /// That attempt ended in `state`.
    Finished {
        /// Line number.
        line: usize,
        /// The line's key.
        key: String,
        /// 1-based attempt.
        attempt: u32,
        /// Final state.
        state: JobState,
    },
}

impl Record {
    /// The journal line (one JSON object).
    pub fn to_json(&self) -> Value {
        match self {
            Record::Submitted {
                line,
                key,
                attempt,
                job,
            } => serde_json::json!({
                "event": "submitted", "line": line, "key": key, "attempt": attempt,
                "attempt_key": attempt_key(key, *attempt), "ref": job.reference, "id": job.id,
                "outcome": "submitted",
            }),
            Record::Finished {
                line,
                key,
                attempt,
                state,
            } => serde_json::json!({
                "event": "finished", "line": line, "key": key, "attempt": attempt,
                "state": state,
            }),
        }
    }

    /// Reads a journal line; `None` for lines that are not pipeline records (other journal
    /// entries, a line torn by a crash).
    pub fn from_json(v: &Value) -> Option<Record> {
        let line = v["line"].as_u64()? as usize;
        let key = v["key"].as_str()?.to_string();
        let attempt = v["attempt"].as_u64().map_or(1, |a| a as u32).max(1);
        match v["event"].as_str()? {
            "submitted" => {
                let reference = v["ref"].as_str()?.to_string();
                let id = match v["id"].as_str() {
                    Some(id) => id.to_string(),
                    None => reference.split_once(':')?.1.to_string(),
                };
                Some(Record::Submitted {
                    line,
                    key,
                    attempt,
                    job: Output { id, reference },
                })
            }
            "finished" => Some(Record::Finished {
                line,
                key,
                attempt,
                state: serde_json::from_value(v["state"].clone()).ok()?,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn file(lines: &[Value]) -> String {
        lines
            .iter()
            .map(|l| l.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn plan_of(lines: &[Value]) -> Result<Plan> {
        plan(parse(&file(lines), None)?)
    }

    fn out(id: &str) -> Output {
        Output {
            id: id.into(),
            reference: format!("local:{id}"),
        }
    }

    #[test]
    fn parse_takes_after_and_retries_out_of_the_spec() {
        let lines = parse(
            &file(&[
                json!({"key":"a","command":["true"]}),
                json!({"key":"b","after":"a","retries":2,"command":["true"]}),
                json!({"key":"c","after":["a","b"],"command":["true"]}),
            ]),
            None,
        )
        .unwrap();
        assert_eq!(lines[1].after, vec!["a"]);
        assert_eq!(lines[1].retries, 2);
        assert_eq!(lines[2].after, vec!["a", "b"]);
        assert!(lines[2].orchestrated() && !lines[0].orchestrated());
        // The spec itself carries no orchestration fields, so the ledger records the job only.
        assert_eq!(lines[1].spec.key.as_deref(), Some("b"));
    }

    #[test]
    fn parse_refuses_bad_fields_naming_the_line() {
        for (bad, what) in [
            (json!({"retries": -1, "command":["x"]}), "`retries`"),
            (json!({"retries": "2", "command":["x"]}), "`retries`"),
            (json!({"retries": 1000, "command":["x"]}), "`retries`"),
            (json!({"after": 3, "command":["x"]}), "`after`"),
            (json!({"after": [""], "command":["x"]}), "`after`"),
            (json!({"key": "", "command":["x"]}), "`key`"),
            (json!({"afterr": "a", "command":["x"]}), "afterr"),
        ] {
            let e = parse(&format!("# c\n{bad}"), None).unwrap_err();
            assert!(e.message.starts_with("line 2:"), "{e}");
            assert!(e.message.contains(what), "{e}");
            assert_eq!(e.exit_code(), 2);
        }
    }

    #[test]
    fn derived_keys_are_stable_across_runs() {
        let text = "{\"command\":[\"true\"]}\n\n{\"command\":[\"true\"]}";
        let a = parse(text, None).unwrap();
        let b = parse(text, None).unwrap();
        let fresh = parse(text, Some("r1")).unwrap();
        assert!(fresh[0].key().starts_with("batch-r1-1-"));
        assert_eq!(a[0].key(), b[0].key());
        assert!(a[0].key().starts_with("batch-1-"));
        assert!(a[1].key().starts_with("batch-3-"));
        assert_ne!(a[0].key(), a[1].key());
    }

    #[test]
    fn levels_follow_prerequisites() {
        let p = plan_of(&[
            json!({"key":"post","after":["sim","prep"],"command":["x"]}),
            json!({"key":"prep","command":["x"]}),
            json!({"key":"sim","after":"prep","command":["x"]}),
            json!({"key":"other","command":["x"]}),
            json!({"key":"ext","after":"slurm:42","command":["x"]}),
        ])
        .unwrap();
        assert_eq!(p.levels, vec![vec![1, 3, 4], vec![2], vec![0]]);
        assert_eq!(p.externals, vec!["slurm:42"]);
        assert_eq!(p.deps[4], vec![Dep::External(0)]);
    }

    #[test]
    fn cycles_self_references_unknown_and_duplicate_keys_are_refused() {
        let e = plan_of(&[
            json!({"key":"a","after":"c","command":["x"]}),
            json!({"key":"b","after":"a","command":["x"]}),
            json!({"key":"c","after":"b","command":["x"]}),
            json!({"key":"d","after":"a","command":["x"]}),
        ])
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(e.message.contains("cycle"), "{e}");
        for n in ["line 1 (key a)", "line 2 (key b)", "line 3 (key c)"] {
            assert!(e.message.contains(n), "{e}");
        }
        assert!(!e.message.contains("line 4"), "{e}");

        let e = plan_of(&[json!({"key":"a","after":"a","command":["x"]})]).unwrap_err();
        assert!(
            e.message.contains("line 1") && e.message.contains("itself"),
            "{e}"
        );

        let e = plan_of(&[json!({"key":"a","after":"nope","command":["x"]})]).unwrap_err();
        assert!(
            e.message.contains("line 1") && e.message.contains("'nope'"),
            "{e}"
        );

        let e = plan_of(&[
            json!({"key":"a","command":["x"]}),
            json!({"key":"a","command":["y"]}),
        ])
        .unwrap_err();
        assert!(e.message.contains("lines 1 and 2"), "{e}");
    }

    #[test]
    fn placeholders_are_replaced_with_prerequisite_outputs() {
        let p = plan_of(&[
            json!({"key":"study","profile":"cloudpss","options":{"function":"f"}}),
            json!({"key":"post","after":"study","name":"post-${study.id}",
                   "command":["read ${study.ref} ${HOME} $${study.id}"],
                   "args":{"SRC":"${study.id}","N":3},"options":{"x":["${study.ref}"]}}),
        ])
        .unwrap();
        let mut s = Scheduler::new(p);
        s.submitted(
            0,
            1,
            Output {
                id: "9f1c".into(),
                reference: "cloudpss:9f1c".into(),
            },
        );
        s.finished(0, JobState::Succeeded);
        let spec = s.spec_for(1, 2);
        assert_eq!(spec.name.as_deref(), Some("post-9f1c"));
        assert_eq!(
            spec.command.unwrap(),
            vec!["read cloudpss:9f1c ${HOME} ${study.id}"]
        );
        assert_eq!(spec.args["SRC"], "9f1c");
        assert_eq!(spec.args["N"], 3);
        assert_eq!(spec.options["x"], json!(["cloudpss:9f1c"]));
        assert_eq!(spec.key.as_deref(), Some("post#2"));
    }

    #[test]
    fn placeholders_must_name_a_prerequisite() {
        let e = plan_of(&[
            json!({"key":"a","command":["x"]}),
            json!({"key":"b","command":["echo ${a.id}"]}),
        ])
        .unwrap_err();
        assert!(
            e.message.contains("line 2") && e.message.contains("${a.id}"),
            "{e}"
        );
        // Transitive prerequisites are fine: they have succeeded too.
        plan_of(&[
            json!({"key":"a","command":["x"]}),
            json!({"key":"b","after":"a","command":["x"]}),
            json!({"key":"c","after":"b","command":["echo ${a.ref}"]}),
        ])
        .unwrap();
    }

    #[test]
    fn a_failure_blocks_dependents_transitively_and_others_run_on() {
        let p = plan_of(&[
            json!({"key":"a","command":["x"]}),
            json!({"key":"b","after":"a","command":["x"]}),
            json!({"key":"c","after":"b","command":["x"]}),
            json!({"key":"d","command":["x"]}),
            json!({"key":"e","after":["a","d"],"command":["x"]}),
        ])
        .unwrap();
        let mut s = Scheduler::new(p);
        assert_eq!(s.ready(), vec![0, 3]);
        s.submitting(0, 1);
        s.submitting(3, 1);
        assert!(s.ready().is_empty());
        s.submitted(0, 1, out("1"));
        s.submitted(3, 1, out("2"));
        assert_eq!(s.waiting_on(4), vec!["a", "d"]);
        assert_eq!(
            s.finished(3, JobState::Succeeded),
            Finish::Done {
                state: JobState::Succeeded,
                blocked: vec![]
            }
        );
        assert_eq!(s.waiting_on(4), vec!["a"]);
        assert_eq!(
            s.finished(0, JobState::Canceled),
            Finish::Done {
                state: JobState::Canceled,
                blocked: vec![1, 2, 4]
            }
        );
        assert!(s.all_final());
        match &s.status[2] {
            Status::Blocked { reason } => assert!(reason.contains("b (line 2)"), "{reason}"),
            other => panic!("{other:?}"),
        }
        match &s.status[1] {
            Status::Blocked { reason } => assert!(reason.contains("canceled"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_jobs_are_retried_but_canceled_ones_are_not() {
        let p = plan_of(&[
            json!({"key":"a","retries":2,"command":["x"]}),
            json!({"key":"b","retries":2,"command":["x"]}),
            json!({"key":"c","after":"a","command":["x"]}),
        ])
        .unwrap();
        let mut s = Scheduler::new(p);
        s.submitted(0, 1, out("1"));
        s.submitted(1, 1, out("2"));
        assert_eq!(
            s.finished(0, JobState::Failed),
            Finish::Retry {
                next: 2,
                delay: Duration::from_secs(2)
            }
        );
        assert_eq!(s.status[0], Status::RetryDue { next: 2 });
        assert_eq!(s.spec_for(0, 2).key.as_deref(), Some("a#2"));
        s.submitted(0, 2, out("3"));
        assert_eq!(
            s.finished(0, JobState::Failed),
            Finish::Retry {
                next: 3,
                delay: Duration::from_secs(4)
            }
        );
        s.submitted(0, 3, out("4"));
        assert_eq!(
            s.finished(0, JobState::Failed),
            Finish::Done {
                state: JobState::Failed,
                blocked: vec![2]
            }
        );
        assert!(matches!(s.status[0], Status::Done { attempts: 3, .. }));
        assert_eq!(
            s.finished(1, JobState::Canceled),
            Finish::Done {
                state: JobState::Canceled,
                blocked: vec![]
            }
        );
    }

    #[test]
    fn external_prerequisites_gate_and_block() {
        let p = plan_of(&[
            json!({"key":"a","after":"slurm:7","command":["x"]}),
            json!({"key":"b","after":"a","command":["x"]}),
            json!({"key":"c","after":"slurm:8","command":["x"]}),
        ])
        .unwrap();
        let mut s = Scheduler::new(p);
        assert!(s.ready().is_empty());
        assert_eq!(s.externals_to_watch(), vec![0, 1]);
        assert_eq!(s.external_finished(1, JobState::Failed), vec![2]);
        assert!(s.external_finished(0, JobState::Succeeded).is_empty());
        assert_eq!(s.ready(), vec![0]);
        assert!(s.externals_to_watch().is_empty());
    }

    #[test]
    fn a_submission_refused_blocks_dependents() {
        let p = plan_of(&[
            json!({"key":"a","command":["x"]}),
            json!({"key":"b","after":"a","command":["x"]}),
        ])
        .unwrap();
        let mut s = Scheduler::new(p);
        assert_eq!(s.submit_failed(0, 1, "bad queue".into()), vec![1]);
        assert!(s.all_final());
    }

    #[test]
    fn replaying_the_journal_restores_progress_without_redoing_anything() {
        let lines = [
            json!({"key":"a","retries":1,"command":["x"]}),
            json!({"key":"b","after":"a","command":["x"]}),
            json!({"key":"c","after":"b","command":["x"]}),
        ];
        let records = vec![
            Record::Submitted {
                line: 1,
                key: "a".into(),
                attempt: 1,
                job: out("1"),
            },
            Record::Finished {
                line: 1,
                key: "a".into(),
                attempt: 1,
                state: JobState::Failed,
            },
            Record::Submitted {
                line: 1,
                key: "a".into(),
                attempt: 2,
                job: out("2"),
            },
            Record::Finished {
                line: 1,
                key: "a".into(),
                attempt: 2,
                state: JobState::Succeeded,
            },
            Record::Submitted {
                line: 2,
                key: "b".into(),
                attempt: 1,
                job: out("3"),
            },
        ];
        let mut s = Scheduler::new(plan_of(&lines).unwrap());
        for r in &records {
            // Through JSON, as a re-run reads them.
            let back = Record::from_json(&r.to_json()).unwrap();
            assert_eq!(&back, r);
            s.replay(&back);
        }
        assert!(matches!(
            s.status[0],
            Status::Done {
                attempts: 2,
                state: JobState::Succeeded,
                ..
            }
        ));
        assert_eq!(s.running(), vec![(1, out("3"))]);
        // c waits for b, which is watched again rather than submitted again.
        assert!(s.ready().is_empty());

        // A retry that was due but not yet sent is still due after a crash.
        let mut s = Scheduler::new(plan_of(&lines).unwrap());
        s.replay(&records[0]);
        s.replay(&records[1]);
        assert_eq!(s.status[0], Status::RetryDue { next: 2 });
        // Records of an old, edited file (unknown keys) and torn lines are ignored.
        s.replay(&Record::Submitted {
            line: 9,
            key: "zz".into(),
            attempt: 1,
            job: out("9"),
        });
        assert_eq!(Record::from_json(&json!({"line": 1})), None);
    }

    #[test]
    fn retry_delays_grow_and_are_capped() {
        assert_eq!(retry_delay(2), Duration::from_secs(2));
        assert_eq!(retry_delay(3), Duration::from_secs(4));
        assert_eq!(retry_delay(50), Duration::from_secs(60));
        assert_eq!(attempt_key("k", 1), "k");
        assert_eq!(attempt_key("k", 3), "k#3");
    }

    proptest::proptest! {
        /// On any acyclic file with any outcomes, the scheduler submits a line only after all
        /// its prerequisites succeeded, retries only failures and at most `retries` times, and
        /// ends with every line final: done exactly when all prerequisites succeeded, blocked
        /// otherwise.
        #[test]
        fn any_pipeline_runs_to_a_consistent_end(
            shape in proptest::collection::vec(
                (proptest::collection::vec(0usize..8, 0..3), 0u32..3, proptest::collection::vec(0u8..3, 3)),
                1..8,
            )
        ) {
            let lines: Vec<Value> = shape
                .iter()
                .enumerate()
                .map(|(i, (deps, retries, _))| {
                    let after: Vec<String> = deps
                        .iter()
                        .filter(|&&d| d < i)
                        .map(|d| format!("k{d}"))
                        .collect();
                    json!({"key": format!("k{i}"), "after": after, "retries": retries, "command": ["x"]})
                })
                .collect();
            let mut s = Scheduler::new(plan_of(&lines).unwrap());
            let mut attempts = vec![0u32; lines.len()];
            let outcome = |i: usize, a: u32| match shape[i].2[(a as usize - 1).min(2)] {
                0 => JobState::Succeeded,
                1 => JobState::Failed,
                _ => JobState::Canceled,
            };
            for _ in 0..100 {
                let mut due: Vec<(usize, u32)> = s.ready().into_iter().map(|i| (i, 1)).collect();
                for (i, st) in s.status.iter().enumerate() {
                    if let Status::RetryDue { next } = st {
                        due.push((i, *next));
                    }
                }
                if due.is_empty() {
                    break;
                }
                for (i, a) in due {
                    for d in &s.plan.deps[i] {
                        proptest::prop_assert!(s.dep_succeeded(d), "line {i} ran before {d:?}");
                    }
                    attempts[i] = a;
                    s.submitted(i, a, out(&format!("{i}-{a}")));
                    let state = outcome(i, a);
                    if let Finish::Retry { next, .. } = s.finished(i, state) {
                        proptest::prop_assert_eq!(state, JobState::Failed);
                        proptest::prop_assert_eq!(next, a + 1);
                    }
                }
            }
            proptest::prop_assert!(s.all_final());
            for i in 0..lines.len() {
                proptest::prop_assert!(attempts[i] <= shape[i].1 + 1);
                let deps_ok = s.plan.deps[i].iter().all(|d| s.dep_succeeded(d));
                match &s.status[i] {
                    Status::Done { state, attempts: n, .. } => {
                        proptest::prop_assert!(deps_ok);
                        proptest::prop_assert_eq!(*n, attempts[i]);
                        proptest::prop_assert_eq!(*state, outcome(i, *n));
                    }
                    Status::Blocked { .. } => proptest::prop_assert!(!deps_ok),
                    other => proptest::prop_assert!(false, "line {} ended {:?}", i, other),
                }
            }
        }
    }
}
