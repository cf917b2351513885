//! Explorer status codes, times and job records turned into jobctl's [`Job`].
//!
//! Job and task share one status code table (0–5). Job-level times are epoch milliseconds while
//! task times are ISO-8601 strings with an offset, so both parsers live here.

use super::api::{JobRecord, TaskRecord};
use crate::model::{Job, JobState};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

/// Preparing.
pub(crate) const PREPARING: i64 = 0;
/// Running.
pub(crate) const RUNNING: i64 = 1;
/// Success.
pub(crate) const SUCCESS: i64 = 2;
/// Failed.
pub(crate) const FAILED: i64 = 3;
/// Interrupted (canceled).
pub(crate) const INTERRUPTED: i64 = 4;
/// "Stopping" in the English docs, "pausing" in the Chinese ones.
pub(crate) const STOPPING: i64 = 5;

/// Maps an Explorer job/task status code to a normalised state.
///
/// Code 5 is documented as "Stopping" (EN) and "暂停中"/pausing (CN). Both readings describe a
/// job on its way to a halt that has not ended yet, and the open API offers cancel but no pause,
/// so it maps to `cancelling` — non-terminal either way, and `native_state` keeps the `5`.
pub(crate) fn state_of(code: i64) -> JobState {
    match code {
        PREPARING => JobState::Queued,
        RUNNING => JobState::Running,
        SUCCESS => JobState::Succeeded,
        FAILED => JobState::Failed,
        INTERRUPTED => JobState::Canceled,
        STOPPING => JobState::Cancelling,
        other => {
            tracing::warn!(status = other, "unknown NebulaGraph Explorer status code");
            JobState::Unknown
        }
    }
}

/// The status code to put in a list `filter` for a normalised state, where one exists.
pub(crate) fn code_of(state: JobState) -> Option<i64> {
    match state {
        JobState::Queued => Some(PREPARING),
        JobState::Running => Some(RUNNING),
        JobState::Succeeded => Some(SUCCESS),
        JobState::Failed => Some(FAILED),
        JobState::Canceled => Some(INTERRUPTED),
        JobState::Cancelling => Some(STOPPING),
        JobState::Suspended | JobState::Unknown => None,
    }
}

/// Parses an epoch-milliseconds value (number or numeric string); zero or negative means "not
/// yet", which is how unset times are reported.
pub(crate) fn epoch_ms(v: Option<&Value>) -> Option<DateTime<Utc>> {
    let ms = match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))?,
        Value::String(s) => s.trim().parse::<i64>().ok()?,
        _ => return None,
    };
    if ms <= 0 {
        return None;
    }
    DateTime::from_timestamp_millis(ms)
}

/// Parses a task time: an RFC 3339 / ISO-8601 string with offset, or (tolerated) epoch ms.
pub(crate) fn iso_time(v: Option<&Value>) -> Option<DateTime<Utc>> {
    match v? {
        Value::String(s) if !s.trim().is_empty() => {
            let s = s.trim();
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Some(t.with_timezone(&Utc));
            }
            // Some serialisers drop the `T`; the offset is still required to be unambiguous.
            DateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%:z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
                .or_else(|| epoch_ms(Some(&Value::String(s.to_string()))))
        }
        n @ Value::Number(_) => epoch_ms(Some(n)),
        _ => None,
    }
}

/// RFC 3339 UTC text for `extra`, or `null`.
fn rfc3339(t: Option<DateTime<Utc>>) -> Value {
    t.map(|t| Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
        .unwrap_or(Value::Null)
}

/// A status value as the platform's code: numbers, or numeric strings from lenient servers.
pub(crate) fn status_code(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The native status verbatim as text (`2`), as `native_state` promises.
fn native_text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// One task as it appears in `extra.tasks`.
pub(crate) fn task_json(t: &TaskRecord) -> Value {
    let code = status_code(t.status.as_ref());
    json!({
        "id": t.id,
        "name": t.name,
        "state": code.map(|c| state_of(c).as_str()).unwrap_or("unknown"),
        "native_state": native_text(t.status.as_ref()),
        "started_at": rfc3339(iso_time(t.run_begin_time.as_ref())),
        "ended_at": rfc3339(iso_time(t.run_end_time.as_ref())),
    })
}

/// Turns a job record (detail or list item) into a [`Job`].
pub(crate) fn job_of(r: &JobRecord) -> Job {
    let code = status_code(r.status.as_ref());
    let state = code.map(state_of).unwrap_or(JobState::Unknown);
    let mut job = Job::new(r.id_text(), state, native_text(r.status.as_ref()));
    job.name = r.name.clone().filter(|n| !n.is_empty());
    job.created_at = epoch_ms(r.create_time.as_ref());
    job.started_at = epoch_ms(r.run_begin_time.as_ref());
    job.ended_at = epoch_ms(r.run_end_time.as_ref());
    let mut extra = Map::new();
    if let Some(w) = r.workflow_id.as_ref().and_then(|w| native_text(Some(w))) {
        extra.insert("workflow_id".into(), Value::String(w));
    }
    if let Some(w) = &r.workflow_name {
        extra.insert("workflow_name".into(), Value::String(w.clone()));
    }
    if let Some(tasks) = r.tasks.as_ref().filter(|t| !t.is_empty()) {
        let done = tasks
            .iter()
            .filter(|t| status_code(t.status.as_ref()) == Some(SUCCESS))
            .count();
        job.progress = Some(done as f64 / tasks.len() as f64);
        extra.insert(
            "tasks".into(),
            Value::Array(tasks.iter().map(task_json).collect()),
        );
        job.reason = reason(state, tasks);
    } else if state == JobState::Canceled {
        job.reason = Some("interrupted".into());
    }
    job.extra = extra;
    job
}

/// Why a job ended badly, named after the task that did.
fn reason(state: JobState, tasks: &[TaskRecord]) -> Option<String> {
    let wanted = match state {
        JobState::Failed => FAILED,
        JobState::Canceled => INTERRUPTED,
        _ => return None,
    };
    let culprit = tasks
        .iter()
        .find(|t| status_code(t.status.as_ref()) == Some(wanted));
    let verb = if wanted == FAILED {
        "failed"
    } else {
        "was interrupted"
    };
    Some(match culprit {
        Some(t) => format!(
            "task {} ({}) {verb}",
            t.name.as_deref().unwrap_or("?"),
            t.id.as_deref().unwrap_or("?")
        ),
        None if wanted == FAILED => "failed".into(),
        None => "interrupted".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(v: Value) -> JobRecord {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn every_documented_code_maps_and_only_2_3_4_are_terminal() {
        let terminal: Vec<i64> = (0..=5).filter(|c| state_of(*c).is_terminal()).collect();
        assert_eq!(terminal, vec![2, 3, 4]);
        assert_eq!(state_of(0), JobState::Queued);
        assert_eq!(state_of(1), JobState::Running);
        assert_eq!(state_of(5), JobState::Cancelling);
        assert_eq!(state_of(42), JobState::Unknown);
        for c in 0..=5 {
            assert_eq!(code_of(state_of(c)), Some(c));
        }
    }

    #[test]
    fn both_time_formats_parse_to_utc() {
        let t = epoch_ms(Some(&json!(1657593215000i64))).unwrap();
        assert_eq!(t.to_rfc3339(), "2022-07-12T02:33:35+00:00");
        assert_eq!(epoch_ms(Some(&json!(0))), None);
        assert_eq!(epoch_ms(Some(&json!("1657593215000"))), Some(t));
        let iso = iso_time(Some(&json!("2022-07-12T10:33:35+08:00"))).unwrap();
        assert_eq!(iso, t);
        assert_eq!(iso_time(Some(&json!(""))), None);
        assert_eq!(iso_time(Some(&Value::Null)), None);
        assert_eq!(iso_time(Some(&json!("yesterday"))), None);
    }

    #[test]
    fn a_detail_becomes_a_job_with_tasks_and_progress() {
        let r = record(json!({
            "id": 107, "name": "pr_1", "workflowId": "4216617528", "workflowName": "pr",
            "status": 1, "createTime": 1657593214000i64, "runBeginTime": 1657593215000i64,
            "runEndTime": 0,
            "tasks": [
                {"id": "a1", "name": "Query", "status": 2,
                 "runBeginTime": "2022-07-12T10:33:35+08:00", "runEndTime": "2022-07-12T10:33:36+08:00"},
                {"id": "b2", "name": "PageRank", "status": 1,
                 "runBeginTime": "2022-07-12T10:33:36+08:00", "runEndTime": ""},
            ]
        }));
        let job = job_of(&r);
        assert_eq!(job.id, "107");
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.native_state.as_deref(), Some("1"));
        assert_eq!(job.progress, Some(0.5));
        assert_eq!(job.ended_at, None);
        assert_eq!(job.extra["workflow_id"], "4216617528");
        let tasks = job.extra["tasks"].as_array().unwrap();
        assert_eq!(tasks[0]["state"], "succeeded");
        assert_eq!(tasks[0]["ended_at"], "2022-07-12T02:33:36Z");
        assert_eq!(tasks[1]["ended_at"], Value::Null);
    }

    #[test]
    fn a_failed_job_names_its_failed_task_and_unknown_codes_stay_verbatim() {
        let r = record(json!({"id": "9", "status": 3, "tasks": [
            {"id": "a", "name": "Query", "status": 2},
            {"id": "b", "name": "BFS", "status": 3}]}));
        let job = job_of(&r);
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.reason.as_deref(), Some("task BFS (b) failed"));
        let job = job_of(&record(json!({"id": 10, "status": 7, "tasks": null})));
        assert_eq!(job.state, JobState::Unknown);
        assert_eq!(job.native_state.as_deref(), Some("7"));
        assert_eq!(job.progress, None);
    }
}
