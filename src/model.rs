//! The normalised job model shared by every backend (CONTRACT §3 and §4).

use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

/// The normalised state of a job. `native_state` on [`Job`] keeps the platform's own value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Accepted, waiting for resources.
    Queued,
    /// Executing.
    Running,
    /// Paused by the platform or an operator.
    Suspended,
    /// A cancellation was requested and is in progress.
    Cancelling,
    /// Finished successfully.
    Succeeded,
    /// Finished unsuccessfully (includes time-outs, kills, node failures).
    Failed,
    /// Canceled before or while running.
    Canceled,
    /// The platform reported something jobctl cannot classify.
    Unknown,
}

impl JobState {
    /// Every state, in display order.
    pub const ALL: [JobState; 8] = [
        JobState::Queued,
        JobState::Running,
        JobState::Suspended,
        JobState::Cancelling,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Canceled,
        JobState::Unknown,
    ];

    /// True exactly for `succeeded`, `failed` and `canceled`.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Canceled
        )
    }

    /// The lower-case name used in output and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Suspended => "suspended",
            JobState::Cancelling => "cancelling",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Canceled => "canceled",
            JobState::Unknown => "unknown",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let lower = s.trim().to_ascii_lowercase();
        let state = match lower.as_str() {
            "queued" | "pending" => JobState::Queued,
            "running" => JobState::Running,
            "suspended" => JobState::Suspended,
            "cancelling" | "canceling" => JobState::Cancelling,
            "succeeded" | "success" | "completed" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "canceled" | "cancelled" => JobState::Canceled,
            "unknown" => JobState::Unknown,
            _ => {
                return Err(Error::usage(format!(
                    "unknown state '{s}': expected one of queued, running, suspended, cancelling, succeeded, failed, canceled, unknown"
                )));
            }
        };
        Ok(state)
    }
}

/// One job as every command reports it. All keys are always serialised (unknown = `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// `PROFILE:ID`, the reference accepted by every command.
    #[serde(rename = "ref")]
    pub reference: String,
    /// Profile the job belongs to.
    pub profile: String,
    /// Backend name (`local`, `cloudpss`, …).
    pub backend: String,
    /// Backend-defined identifier, never containing whitespace.
    pub id: String,
    /// Job name, where known.
    pub name: Option<String>,
    /// Normalised state.
    pub state: JobState,
    /// The platform's own state value, verbatim.
    pub native_state: Option<String>,
    /// True exactly when `state` is terminal.
    pub terminal: bool,
    /// When the job was created / submitted.
    pub created_at: Option<DateTime<Utc>>,
    /// When it started running.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Exit code of the job's command, where the platform reports one.
    pub exit_code: Option<i64>,
    /// Why the job is in its state (error text, signal, vanished supervisor…).
    pub reason: Option<String>,
    /// Owning user.
    pub owner: Option<String>,
    /// Queue / partition.
    pub queue: Option<String>,
    /// Completion in [0, 1] where the platform reports it.
    pub progress: Option<f64>,
    /// Backend-specific fields.
    pub extra: Map<String, Value>,
}

impl Job {
    /// A job with only an id and a state; the backend fills the rest, the session stamps
    /// `ref`, `profile` and `backend`.
    pub fn new(id: impl Into<String>, state: JobState, native_state: Option<String>) -> Self {
        Job {
            reference: String::new(),
            profile: String::new(),
            backend: String::new(),
            id: id.into(),
            name: None,
            state,
            native_state,
            terminal: state.is_terminal(),
            created_at: None,
            started_at: None,
            ended_at: None,
            exit_code: None,
            reason: None,
            owner: None,
            queue: None,
            progress: None,
            extra: Map::new(),
        }
    }

    /// Sets `state` and keeps `terminal` consistent with it.
    pub fn set_state(&mut self, state: JobState) {
        self.state = state;
        self.terminal = state.is_terminal();
    }

    /// Fills `ref`, `profile` and `backend`, and re-derives `terminal`.
    pub fn stamp(&mut self, profile: &str, backend: &str) {
        self.profile = profile.to_string();
        self.backend = backend.to_string();
        self.reference = format!("{profile}:{}", self.id);
        self.terminal = self.state.is_terminal();
        if let Some(p) = self.progress {
            self.progress = Some(p.clamp(0.0, 1.0));
        }
    }
}

/// A job specification: what `submit`, `--spec` files and `batch` lines describe (CONTRACT §4).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// Profile to submit to (default: the selected profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// Backend, as an alternative to `profile` (selects the built-in profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
    /// Job name.
    #[serde(default)]
    pub name: Option<String>,
    /// Idempotency key.
    #[serde(default)]
    pub key: Option<String>,
    /// The command, for backends that run one.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Job arguments / inputs (`--arg`).
    #[serde(default)]
    pub args: Map<String, Value>,
    /// Backend options (`--opt`).
    #[serde(default)]
    pub options: Map<String, Value>,
}

impl JobSpec {
    /// An option as a string: JSON strings unquoted, other values in their JSON form.
    pub fn opt_str(&self, key: &str) -> Option<String> {
        self.options.get(key).map(value_to_string)
    }
}

/// Renders a JSON value as a plain string (strings without quotes).
pub fn value_to_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// Parses `VALUE` of `KEY=VALUE`: JSON when it parses, otherwise the string itself.
pub fn parse_value(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_string()))
}

/// Parses `KEY=VALUE` as used by `--arg` and `--opt`.
pub fn parse_key_value(flag: &str, raw: &str) -> Result<(String, Value)> {
    match raw.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), parse_value(v))),
        _ => Err(Error::usage(format!(
            "{flag} expects KEY=VALUE, got '{raw}'"
        ))),
    }
}

/// Whether a backend needs, accepts or refuses a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandRule {
    /// A command must be given.
    Required,
    /// A command must not be given.
    Forbidden,
}

/// What a backend accepts in a [`JobSpec`]; checked before any request is sent.
#[derive(Debug, Clone)]
pub struct SpecRules {
    /// Command requirement.
    pub command: CommandRule,
    /// Whether `--arg` is meaningful for this backend.
    pub args: bool,
    /// Option keys the backend understands.
    pub options: &'static [&'static str],
    /// Option keys that must be present.
    pub required_options: &'static [&'static str],
}

impl SpecRules {
    /// Checks `spec` against these rules; the error names the offending field (exit 2).
    pub fn check(&self, backend: &str, spec: &JobSpec) -> Result<()> {
        let has_command = spec.command.as_ref().is_some_and(|c| !c.is_empty());
        match self.command {
            CommandRule::Required if !has_command => {
                return Err(Error::usage(format!(
                    "the {backend} backend needs a command: add it after `--`, e.g. `jobctl submit -- echo hello`"
                )));
            }
            CommandRule::Forbidden if has_command => {
                return Err(Error::usage(format!(
                    "the {backend} backend does not run a command: remove the arguments after `--` (field `command`)"
                )));
            }
            _ => {}
        }
        if !self.args && !spec.args.is_empty() {
            let keys: Vec<&str> = spec.args.keys().map(String::as_str).collect();
            return Err(Error::usage(format!(
                "the {backend} backend takes no --arg (field `args`: {})",
                keys.join(", ")
            )));
        }
        for key in spec.options.keys() {
            if !self.options.contains(&key.as_str()) {
                return Err(Error::usage(format!(
                    "unknown option `{key}` for the {backend} backend; known options: {}",
                    self.options.join(", ")
                )));
            }
        }
        for key in self.required_options {
            let missing = match spec.options.get(*key) {
                None | Some(Value::Null) => true,
                Some(Value::String(s)) => s.trim().is_empty(),
                _ => false,
            };
            if missing {
                return Err(Error::usage(format!(
                    "the {backend} backend requires option `{key}` (--opt {key}=…)"
                )));
            }
        }
        Ok(())
    }
}

/// Operations a backend offers; `profiles` prints them and the CLI refuses the rest with exit 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// `submit`.
    Submit,
    /// `status`.
    Status,
    /// `statuses` answered with one list-type request rather than one per job.
    BatchStatus,
    /// `list`.
    List,
    /// `abort`.
    Abort,
    /// `logs`.
    Logs,
    /// `logs --follow`.
    FollowLogs,
    /// `fetch`.
    Fetch,
    /// `login` / `logout`.
    Login,
    /// `queues`: the queues, partitions or job policies a profile may submit to.
    Queues,
}

/// One queue (AC queue, Slurm partition, CloudPSS job policy) a profile may submit to.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueInfo {
    /// The name `submit` takes (`--queue`, `--partition`, `--opt queue=`).
    pub name: String,
    /// A human description where the platform has one.
    pub description: Option<String>,
    /// The platform's limits (free cores, max wall time…), numbers where they are numbers.
    /// Flattened into the JSON object next to `name`.
    #[serde(flatten)]
    pub limits: Map<String, Value>,
}

/// The set of capabilities of a backend.
pub type Capabilities = BTreeSet<Capability>;

/// Filters for `list`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these normalised states (empty = all).
    pub states: Vec<JobState>,
    /// At most this many jobs (`None` = no limit, `--all`).
    pub limit: Option<usize>,
    /// Backend-specific listing options (`list --opt`), checked against
    /// [`crate::backend::JobBackend::list_options`] before any request.
    pub options: Map<String, Value>,
}

impl ListQuery {
    /// Whether `state` passes the state filter.
    pub fn wants(&self, state: JobState) -> bool {
        self.states.is_empty() || self.states.contains(&state)
    }
}

/// What `logs` should read.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogsRequest {
    /// Keep reading until the job ends.
    pub follow: bool,
    /// Read the error stream instead of the output stream.
    pub stderr: bool,
    /// Print structured output as one JSON object per message (`-o ndjson`).
    pub ndjson: bool,
    /// Colour the output (a terminal, colours not turned off).
    pub color: bool,
}

/// One file written by `fetch`.
#[derive(Debug, Clone, Serialize)]
pub struct Artifact {
    /// File name as the platform serves it.
    pub name: String,
    /// Where it was written.
    pub path: std::path::PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Entries, for archives.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<String>,
}

/// The outcome of an `abort` request for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AbortOutcome {
    /// The platform accepted the cancellation.
    Requested,
    /// The job had already ended; nothing was done.
    AlreadyTerminal,
}

/// One line of `doctor`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub detail: String,
}

impl Check {
    /// A passing check.
    pub fn pass(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: true,
            detail: detail.into(),
        }
    }
    /// A failing check.
    pub fn fail(name: impl Into<String>, detail: impl Into<String>) -> Self {
        Check {
            name: name.into(),
            ok: false,
            detail: detail.into(),
        }
    }
}

/// A parsed job reference: `PROFILE:ID` or a bare `ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    /// Explicit profile, if the reference named one.
    pub profile: Option<String>,
    /// The backend-defined id.
    pub id: String,
}

impl FromStr for JobRef {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() || s.chars().any(char::is_whitespace) {
            return Err(Error::usage(format!(
                "invalid job reference '{s}': expected PROFILE:ID or ID, without spaces"
            )));
        }
        match s.split_once(':') {
            Some((p, id)) if !p.is_empty() && !id.is_empty() && is_profile_name(p) => Ok(JobRef {
                profile: Some(p.to_string()),
                id: id.to_string(),
            }),
            Some((p, id)) if p.is_empty() || id.is_empty() => Err(Error::usage(format!(
                "invalid job reference '{s}': expected PROFILE:ID"
            ))),
            _ => Ok(JobRef {
                profile: None,
                id: s.to_string(),
            }),
        }
    }
}

/// Profile names: letters, digits, `-`, `_`, `.`.
pub fn is_profile_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn values_are_json_when_they_parse() {
        assert_eq!(parse_value("3"), Value::from(3));
        assert_eq!(parse_value("true"), Value::Bool(true));
        assert_eq!(parse_value("{\"a\":1}")["a"], Value::from(1));
        assert_eq!(parse_value("hi"), Value::String("hi".into()));
        assert_eq!(parse_value(""), Value::String(String::new()));
    }

    #[test]
    fn key_value_needs_an_equals_sign() {
        assert!(parse_key_value("--arg", "novalue").is_err());
        assert!(parse_key_value("--arg", "=x").is_err());
        let (k, v) = parse_key_value("--arg", "a=b=c").unwrap();
        assert_eq!((k.as_str(), v), ("a", Value::String("b=c".into())));
    }

    #[test]
    fn references_split_on_the_first_colon() {
        let r: JobRef = "ac:1638523853.35919".parse().unwrap();
        assert_eq!(r.profile.as_deref(), Some("ac"));
        assert_eq!(r.id, "1638523853.35919");
        let r: JobRef = "9f1c".parse().unwrap();
        assert_eq!(r.profile, None);
        assert!("local:".parse::<JobRef>().is_err());
        assert!("a b".parse::<JobRef>().is_err());
        let r: JobRef = "octoplant:orders/abc:1".parse().unwrap();
        assert_eq!(r.id, "orders/abc:1");
    }

    #[test]
    fn rules_name_the_wrong_field() {
        let rules = SpecRules {
            command: CommandRule::Forbidden,
            args: true,
            options: &["function", "queue"],
            required_options: &["function"],
        };
        let mut spec = JobSpec::default();
        let e = rules.check("cloudpss", &spec).unwrap_err();
        assert!(e.message.contains("function"), "{e}");
        spec.options.insert("function".into(), "f/x".into());
        spec.options.insert("colour".into(), "red".into());
        let e = rules.check("cloudpss", &spec).unwrap_err();
        assert!(e.message.contains("colour"), "{e}");
        spec.options.remove("colour");
        spec.command = Some(vec!["echo".into()]);
        let e = rules.check("cloudpss", &spec).unwrap_err();
        assert!(e.message.contains("command"), "{e}");
    }

    proptest! {
        #[test]
        fn reference_parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<JobRef>();
        }

        #[test]
        fn state_names_round_trip(i in 0usize..8) {
            let st = JobState::ALL[i];
            prop_assert_eq!(st.as_str().parse::<JobState>().unwrap(), st);
        }
    }
}
