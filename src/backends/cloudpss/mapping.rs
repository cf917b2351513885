//! CloudPSS job records and statuses → jobctl's [`Job`] and [`JobState`].

use super::api;
use crate::model::{Job, JobState};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Map, Value};

/// Every native status, in the order of the platform's enum.
pub const NATIVE_STATUSES: [&str; 9] = [
    "WAITING",
    "RUNNING",
    "TIMED_OUT",
    "FAILED",
    "COMPLETED",
    "ABORTING",
    "ABORTED",
    "KILLED",
    "CANCELED",
];

/// The normalised state of a native status. TIMED_OUT and KILLED are failures (the native
/// value stays in `native_state`); ABORTED (stopped while running) and CANCELED (stopped
/// before it started) are both `canceled`.
pub fn state_of(native: &str) -> JobState {
    match native {
        "WAITING" => JobState::Queued,
        "RUNNING" => JobState::Running,
        "ABORTING" => JobState::Cancelling,
        "COMPLETED" => JobState::Succeeded,
        "FAILED" | "TIMED_OUT" | "KILLED" => JobState::Failed,
        "ABORTED" | "CANCELED" => JobState::Canceled,
        _ => JobState::Unknown,
    }
}

/// The native statuses that map to `state` (empty for states CloudPSS never reports).
pub fn natives_of(state: JobState) -> Vec<&'static str> {
    NATIVE_STATUSES
        .iter()
        .copied()
        .filter(|n| state_of(n) == state)
        .collect()
}

/// A short explanation for end states whose status alone is terse.
fn reason_of(native: &str) -> Option<&'static str> {
    match native {
        "TIMED_OUT" => Some("the job exceeded the maximum duration of its policy"),
        "KILLED" => Some("the job was killed by the platform"),
        "ABORTED" => Some("aborted while running"),
        "CANCELED" => Some("canceled before it started"),
        _ => None,
    }
}

/// Parses a CloudPSS `Timestamp`: epoch milliseconds (number or numeric string), or RFC 3339.
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    let ms = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(n) => n,
            Err(_) => {
                return DateTime::parse_from_rfc3339(s.trim())
                    .ok()
                    .map(|t| t.with_timezone(&Utc));
            }
        },
        _ => return None,
    };
    if !ms.is_finite() {
        return None;
    }
    // Values this small can only be seconds (before 1973 in milliseconds).
    let ms = if ms.abs() < 1e11 { ms * 1000.0 } else { ms };
    Utc.timestamp_millis_opt(ms as i64).single()
}

/// The job fields jobctl reads, whichever operation returned them.
#[derive(Debug, Clone, Default)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// Native status, verbatim.
    pub status: String,
    /// `createTime`.
    pub create_time: Option<Value>,
    /// `startTime`.
    pub start_time: Option<Value>,
    /// `endTime`.
    pub end_time: Option<Value>,
    /// Executing user.
    pub user: String,
    /// Context resource ids (the first is the function).
    pub context: Vec<String>,
    /// Job arguments.
    pub args: Map<String, Value>,
    /// Priority.
    pub priority: f64,
    /// Queue position while waiting.
    pub position: Option<i64>,
    /// Input stream token.
    pub input: String,
    /// Output stream id.
    pub output: String,
    /// Policy name.
    pub policy_name: Option<String>,
    /// Queue id.
    pub queue: Option<String>,
    /// Maximum duration (s) of the policy.
    pub max_duration: Option<f64>,
    /// Resources: cpu, ecpu, mem.
    pub tres: Option<(i64, f64, f64)>,
    /// Machine name.
    pub machine: Option<String>,
}

/// Each operation's generated `JobFields` is its own type; they all become a [`JobRecord`].
macro_rules! from_job_fields {
    ($($m:ident),*) => {$(
        impl From<api::$m::JobFields> for JobRecord {
            fn from(j: api::$m::JobFields) -> Self {
                JobRecord {
                    id: j.id,
                    status: j.status,
                    create_time: Some(j.create_time),
                    start_time: j.start_time,
                    end_time: j.end_time,
                    user: j.user,
                    context: j.context,
                    args: j.args,
                    priority: j.priority,
                    position: j.position,
                    input: j.input,
                    output: j.output,
                    policy_name: j.policy.as_ref().map(|p| p.name.clone()),
                    queue: j.policy.as_ref().map(|p| p.queue.clone()),
                    max_duration: j.policy.as_ref().map(|p| p.max_duration),
                    tres: j.policy.as_ref().map(|p| (p.tres.cpu, p.tres.ecpu, p.tres.mem)),
                    machine: j.machine.map(|m| m.name),
                }
            }
        }
    )*};
}

from_job_fields!(job_query, jobs_query, create_job_mutation);

/// Builds the normalised job; `ref`, `profile` and `backend` are stamped by the session.
pub fn to_job(r: JobRecord) -> Job {
    let state = state_of(&r.status);
    let mut job = Job::new(r.id, state, Some(r.status.clone()));
    job.created_at = r.create_time.as_ref().and_then(parse_time);
    job.started_at = r.start_time.as_ref().and_then(parse_time);
    job.ended_at = r.end_time.as_ref().and_then(parse_time);
    job.owner = Some(r.user).filter(|u| !u.is_empty());
    job.queue = r.queue.filter(|q| !q.is_empty());
    job.reason = reason_of(&r.status).map(str::to_string);
    let mut extra = Map::new();
    if let Some(f) = r.context.first() {
        extra.insert("function".into(), Value::from(f.clone()));
    }
    extra.insert("context".into(), Value::from(r.context));
    extra.insert("args".into(), Value::Object(r.args));
    extra.insert("priority".into(), Value::from(r.priority));
    if let Some(p) = r.position {
        extra.insert("position".into(), Value::from(p));
    }
    if let Some(name) = r.policy_name {
        extra.insert("policy".into(), Value::from(name));
    }
    if let Some(d) = r.max_duration {
        extra.insert("max_duration".into(), Value::from(d));
    }
    if let Some((cpu, ecpu, mem)) = r.tres {
        extra.insert(
            "tres".into(),
            serde_json::json!({"cpu": cpu, "ecpu": ecpu, "mem": mem}),
        );
    }
    if let Some(m) = r.machine {
        extra.insert("machine".into(), Value::from(m));
    }
    // Stream ids: the job's output is read from the message stream named by `output`.
    extra.insert("input".into(), Value::from(r.input));
    extra.insert("output".into(), Value::from(r.output));
    job.extra = extra;
    job
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_nine_statuses_are_mapped() {
        let expected = [
            ("WAITING", JobState::Queued),
            ("RUNNING", JobState::Running),
            ("TIMED_OUT", JobState::Failed),
            ("FAILED", JobState::Failed),
            ("COMPLETED", JobState::Succeeded),
            ("ABORTING", JobState::Cancelling),
            ("ABORTED", JobState::Canceled),
            ("KILLED", JobState::Failed),
            ("CANCELED", JobState::Canceled),
        ];
        for (native, state) in expected {
            assert_eq!(state_of(native), state, "{native}");
        }
        assert_eq!(state_of("PAUSED"), JobState::Unknown);
        assert_eq!(
            natives_of(JobState::Failed),
            vec!["TIMED_OUT", "FAILED", "KILLED"]
        );
        assert!(natives_of(JobState::Suspended).is_empty());
    }

    #[test]
    fn timestamps_are_epoch_millis_or_rfc3339() {
        let t = parse_time(&Value::from(1_705_377_106_000i64)).unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-16T03:51:46+00:00");
        assert_eq!(parse_time(&Value::from("1705377106000")), Some(t));
        assert_eq!(parse_time(&Value::from("2024-01-16T03:51:46Z")), Some(t));
        assert_eq!(parse_time(&Value::from(1_705_377_106i64)), Some(t));
        assert_eq!(parse_time(&Value::from("soon")), None);
        assert_eq!(parse_time(&Value::Null), None);
    }

    #[test]
    fn a_record_keeps_the_native_status_and_fills_the_job() {
        let r = JobRecord {
            id: "j1".into(),
            status: "KILLED".into(),
            create_time: Some(Value::from(1_705_377_106_000i64)),
            user: "alice".into(),
            context: vec!["function/CloudPSS/hello".into()],
            queue: Some("1".into()),
            ..JobRecord::default()
        };
        let j = to_job(r);
        assert_eq!(j.state, JobState::Failed);
        assert!(j.terminal);
        assert_eq!(j.native_state.as_deref(), Some("KILLED"));
        assert_eq!(j.owner.as_deref(), Some("alice"));
        assert_eq!(j.queue.as_deref(), Some("1"));
        assert_eq!(j.extra["function"], "function/CloudPSS/hello");
        assert!(j.reason.is_some());
    }
}
