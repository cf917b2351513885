//! AC job records (realtime list, realtime detail, history) to [`Job`], plus the job id format
//! and the platform's naive local times.
//!
//! Field names of the history records are only partly documented, so records are read as JSON
//! objects with a few alternative spellings instead of strict structs: a renamed field loses one
//! value, it does not break `status`.

use crate::error::{Error, Result};
use crate::model::{Job, JobState, QueueInfo};
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use serde_json::{Map, Value};

/// A job's identity on the platform: the scheduler (`jobmanagerId`) and the Slurm job id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobKey {
    /// Scheduler id (`strJobManagerID`, `jobmanagerId`).
    pub scheduler: String,
    /// Job id within the scheduler.
    pub job: String,
}

impl JobKey {
    /// Parses `SCHEDULER.JOB`; a bare `JOB` means the profile's scheduler (`default`).
    pub fn parse(id: &str, default: Option<&str>) -> Result<Self> {
        let id = id.trim();
        let valid_job = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '+'))
        };
        let bad = || {
            Error::usage(format!(
                "invalid ac job id '{id}': expected SCHEDULER.JOB, e.g. 1638523853.35919"
            ))
        };
        match id.split_once('.') {
            Some((s, j))
                if !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()) && valid_job(j) =>
            {
                Ok(JobKey {
                    scheduler: s.to_string(),
                    job: j.to_string(),
                })
            }
            Some(_) => Err(bad()),
            None if valid_job(id) => match default {
                Some(s) => Ok(JobKey {
                    scheduler: s.to_string(),
                    job: id.to_string(),
                }),
                None => Err(bad()),
            },
            None => Err(bad()),
        }
    }

    /// The id printed in references: `SCHEDULER.JOB`.
    pub fn id(&self) -> String {
        format!("{}.{}", self.scheduler, self.job)
    }
}

/// Normalised state of a native AC status code (`statR`, …). Codes are compared
/// case-insensitively because 3P clients show both spellings.
pub fn map_state(native: &str) -> JobState {
    match native.trim().to_ascii_lowercase().as_str() {
        "statr" => JobState::Running,
        "statq" | "statw" | "stath" => JobState::Queued,
        // Requeued: back in the queue, not finished.
        "statrq" => JobState::Queued,
        "stats" => JobState::Suspended,
        "statc" => JobState::Succeeded,
        // Exited abnormally, failed, timed out, node failure.
        "state" | "statd" | "statt" | "statn" => JobState::Failed,
        "statde" => JobState::Canceled,
        // statX ("other") and anything new.
        _ => JobState::Unknown,
    }
}

/// The native codes `strJobStat` / `jobState` filters accept for a normalised state.
pub fn native_codes(state: JobState) -> &'static [&'static str] {
    match state {
        JobState::Queued => &["statQ", "statW", "statH", "statRQ"],
        JobState::Running => &["statR"],
        JobState::Suspended => &["statS"],
        JobState::Succeeded => &["statC"],
        JobState::Failed => &["statE", "statD", "statT", "statN"],
        JobState::Canceled => &["statDE"],
        JobState::Cancelling => &[],
        JobState::Unknown => &["statX"],
    }
}

/// Parses `AC_UTC_OFFSET` (`+08:00`, `+0800`, `+8`, `UTC`).
pub fn parse_offset(raw: &str) -> Result<FixedOffset> {
    let t = raw.trim();
    let bad = || {
        Error::usage(format!(
            "invalid UTC offset '{raw}': write it like +08:00 or -05:30"
        ))
    };
    if t.eq_ignore_ascii_case("utc") || t == "Z" {
        return FixedOffset::east_opt(0).ok_or_else(bad);
    }
    let (sign, rest) = match t.chars().next() {
        Some('+') => (1, &t[1..]),
        Some('-') => (-1, &t[1..]),
        _ => (1, t),
    };
    let (h, m) = if let Some((h, m)) = rest.split_once(':') {
        (h, m)
    } else if rest.len() == 4 {
        rest.split_at(2)
    } else {
        (rest, "0")
    };
    let h: i32 = h.parse().map_err(|_| bad())?;
    let m: i32 = m.parse().map_err(|_| bad())?;
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad());
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad)
}

/// Reads a naive platform time (`2021-11-04 17:55:49` or `2021-11-03T13:56:56`) in `offset`.
/// Empty or unparsable values give `None`: a time is informative, never worth failing over.
pub fn parse_time(raw: &str, offset: FixedOffset) -> Option<DateTime<Utc>> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
        return Some(dt.with_timezone(&Utc));
    }
    let t = t.split('.').next().unwrap_or(t);
    ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(t, f).ok())
        .and_then(|n| offset.from_local_datetime(&n).single())
        .map(|dt| dt.with_timezone(&Utc))
}

/// Formats a time as the platform's naive local time, for history query windows.
pub fn format_time(t: DateTime<Utc>, offset: FixedOffset) -> String {
    t.with_timezone(&offset)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// Parses a Slurm-style elapsed time: `SS`, `MM:SS`, `HH:MM:SS`, `D-HH:MM:SS`.
pub fn parse_elapsed(raw: &str) -> Option<chrono::Duration> {
    let t = raw.trim();
    if t.is_empty() {
        return None;
    }
    let (days, clock) = match t.split_once('-') {
        Some((d, c)) => (d.parse::<i64>().ok()?, c),
        None => (0, t),
    };
    let mut secs = 0i64;
    for part in clock.split(':') {
        secs = secs
            .checked_mul(60)?
            .checked_add(part.parse::<i64>().ok()?)?;
    }
    Some(chrono::Duration::seconds(days * 86_400 + secs))
}

/// Parses `jobExitStatus`: `0`, `"1"`, or Slurm's `"exit:signal"`.
pub fn parse_exit(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.split(':').next()?.trim().parse().ok(),
        _ => None,
    }
}

/// The first present, non-empty field among `names`, as a string.
pub fn text(obj: &Map<String, Value>, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| match obj.get(*n)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    })
}

/// Where a record came from; history records carry exit status and end times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `/hpc/openapi/v2/jobs` (list or detail).
    Realtime,
    /// `/hpc/openapi/v2/historyjobs` (list or detail).
    History,
}

/// Turns one platform record into a [`Job`]. `key` is used when the record lacks ids.
pub fn to_job(
    obj: &Map<String, Value>,
    key: Option<&JobKey>,
    source: Source,
    offset: FixedOffset,
) -> Result<Job> {
    let scheduler = text(
        obj,
        &[
            "jobmanagerId",
            "jobManagerId",
            "strJobManagerID",
            "clusterId",
        ],
    )
    .or_else(|| key.map(|k| k.scheduler.clone()));
    let job_id = text(obj, &["jobId", "id", "jobID"]).or_else(|| key.map(|k| k.job.clone()));
    let (Some(scheduler), Some(job_id)) = (scheduler, job_id) else {
        return Err(Error::protocol(
            "an AC job record has no jobId / jobmanagerId",
        ));
    };
    let key = JobKey {
        scheduler,
        job: job_id,
    };
    let native = text(obj, &["jobStatus", "jobState", "status"]);
    let state = native
        .as_deref()
        .map(map_state)
        .unwrap_or(JobState::Unknown);
    let mut job = Job::new(key.id(), state, native);
    job.name = text(obj, &["jobName", "name"]);
    job.owner = text(obj, &["user", "userName", "strUser", "jobOwner"]);
    job.queue = text(obj, &["queue", "queueName", "strQueueName"]);
    job.reason = text(obj, &["reason", "jobReason"]);
    let time = |names: &[&str]| text(obj, names).and_then(|t| parse_time(&t, offset));
    job.created_at = time(&["jobQueueTime", "jobSubmitTime", "submitTime"]);
    job.started_at = time(&["jobStartTime", "startTime"]);
    job.ended_at = time(&["jobEndTime", "endTime"]);
    // A canceled job's "exit status" is the signal bookkeeping of Slurm, not a program's code.
    if source == Source::History && matches!(state, JobState::Succeeded | JobState::Failed) {
        job.exit_code = obj.get("jobExitStatus").and_then(parse_exit);
    }
    if source == Source::History && job.ended_at.is_none() {
        job.ended_at = time(&["acctTime"]);
    }
    let run_time = text(obj, &["jobRunTime", "jobWalltimeUsed"]);
    if job.ended_at.is_none() && state.is_terminal() {
        // The realtime list has no end time; start + elapsed is the best estimate.
        if let (Some(start), Some(elapsed)) =
            (job.started_at, run_time.as_deref().and_then(parse_elapsed))
        {
            job.ended_at = Some(start + elapsed);
        }
    }
    // A platform without an exit status for a succeeded job still means "exit 0".
    if job.exit_code.is_none() && state == JobState::Succeeded && source == Source::History {
        job.exit_code = Some(0);
    }
    let mut extra = Map::new();
    extra.insert("scheduler_id".into(), Value::String(key.scheduler.clone()));
    extra.insert(
        "source".into(),
        Value::String(match source {
            Source::Realtime => "realtime".into(),
            Source::History => "history".into(),
        }),
    );
    for (out, names) in [
        ("scheduler", &["jobmanagerName"][..]),
        ("workdir", &["workDir", "workdir", "jobWorkDir"][..]),
        ("stdout", &["outputPath", "stdOutFile"][..]),
        ("stderr", &["errorPath", "stdErrFile"][..]),
        ("nodes", &["nodeUsed", "hostName", "nodeList"][..]),
        ("procs", &["procNumUsed", "jobProcNum"][..]),
        ("run_time", &["jobRunTime", "jobWalltimeUsed"][..]),
        ("app", &["appType"][..]),
    ] {
        if let Some(v) = text(obj, names) {
            extra.insert(out.into(), Value::String(v));
        }
    }
    job.extra = extra;
    Ok(job)
}

/// The numeric part of a job id, for newest-first ordering (Slurm ids grow).
pub fn sort_key(job: &Job) -> (u64, String) {
    let num = job
        .id
        .rsplit('.')
        .next()
        .and_then(|j| {
            j.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|d| d.parse().ok())
        })
        .unwrap_or(0);
    (num, job.id.clone())
}

/// Queue fields jobctl shows, as (platform field, jobctl name). The platform sends every value
/// as a string.
const QUEUE_LIMITS: &[(&str, &str)] = &[
    ("queFreeNcpus", "free_cores"),
    ("queFreeNodes", "free_nodes"),
    ("queMaxPPN", "max_cores_per_node"),
    ("queMaxNcpus", "max_cores"),
    ("queMaxWalltime", "max_wall_time"),
    ("queMaxNgpus", "max_gpus_per_node"),
    ("queMaxNdcu", "max_dcus_per_node"),
];

/// A numeric string as a JSON number; anything else as it is.
fn number_or_text(v: &Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => {
            let t = s.trim();
            Some(
                t.parse::<i64>()
                    .map(Value::from)
                    .or_else(|_| t.parse::<f64>().map(Value::from))
                    .unwrap_or_else(|_| Value::String(t.to_string())),
            )
        }
        other => Some(other.clone()),
    }
}

/// One entry of `queuenames/users/{user}`: an object (`queueName`, `queFreeNcpus`, …) or a
/// bare name.
pub fn to_queue(v: &Value) -> Option<QueueInfo> {
    let obj = match v {
        Value::String(s) if !s.trim().is_empty() => {
            return Some(QueueInfo {
                name: s.trim().to_string(),
                description: None,
                limits: Map::new(),
            });
        }
        Value::Object(o) => o,
        _ => return None,
    };
    let name = text(obj, &["queueName", "name", "queue"])?;
    let mut limits = Map::new();
    for (field, shown) in QUEUE_LIMITS {
        if let Some(v) = obj.get(*field).and_then(number_or_text) {
            // A wall time stays `HH:MM:SS`; everything else is a count.
            let v = match (*shown, v) {
                ("max_wall_time", Value::Number(n)) => Value::String(n.to_string()),
                (_, v) => v,
            };
            limits.insert((*shown).to_string(), v);
        }
    }
    Some(QueueInfo {
        name,
        description: text(obj, &["queueDesc", "description"]),
        limits,
    })
}

/// The queue list of `data` (a list, or an object with `list`); `null` means none known.
pub fn to_queues(data: &Value) -> Vec<QueueInfo> {
    let list = match data {
        Value::Array(a) => Some(a),
        Value::Object(o) => o.get("list").and_then(Value::as_array),
        _ => None,
    };
    list.map(|l| l.iter().filter_map(to_queue).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_limits_become_numbers() {
        let data = serde_json::json!([
            {"queueName": "debug", "queFreeNcpus": "64", "queMaxPPN": "32",
             "queMaxWalltime": "00:30:00", "queMaxNcpus": "", "other": "x"},
            "plain",
            42
        ]);
        let q = to_queues(&data);
        assert_eq!(q.len(), 2);
        assert_eq!(q[0].name, "debug");
        assert_eq!(q[0].limits["free_cores"], 64);
        assert_eq!(q[0].limits["max_cores_per_node"], 32);
        assert_eq!(q[0].limits["max_wall_time"], "00:30:00");
        assert!(!q[0].limits.contains_key("max_cores"));
        assert_eq!(q[1].name, "plain");
        let wrapped = serde_json::json!({"list": [{"queueName": "x"}]});
        assert_eq!(to_queues(&wrapped)[0].name, "x");
        assert!(to_queues(&Value::Null).is_empty());
    }
    use serde_json::json;

    fn cst() -> FixedOffset {
        parse_offset("+08:00").unwrap()
    }

    #[test]
    fn every_documented_and_observed_code_is_mapped() {
        let cases = [
            ("statR", JobState::Running),
            ("statQ", JobState::Queued),
            ("statH", JobState::Queued),
            ("statS", JobState::Suspended),
            ("statE", JobState::Failed),
            ("statC", JobState::Succeeded),
            ("statW", JobState::Queued),
            ("statX", JobState::Unknown),
            ("statD", JobState::Failed),
            ("statDE", JobState::Canceled),
            ("statT", JobState::Failed),
            ("statN", JobState::Failed),
            ("statRQ", JobState::Queued),
            ("statZZ", JobState::Unknown),
        ];
        for (code, want) in cases {
            assert_eq!(map_state(code), want, "{code}");
            if want != JobState::Unknown || code == "statX" {
                assert!(native_codes(want).contains(&code), "{code} filter");
            }
        }
    }

    #[test]
    fn ids_carry_the_scheduler() {
        let k = JobKey::parse("1638523853.35919", None).unwrap();
        assert_eq!(
            (k.scheduler.as_str(), k.job.as_str()),
            ("1638523853", "35919")
        );
        assert_eq!(k.id(), "1638523853.35919");
        let k = JobKey::parse("35919", Some("42")).unwrap();
        assert_eq!(k.id(), "42.35919");
        for bad in ["", ".", "abc.1", "1.", "1.a b", "1.2/3"] {
            assert_eq!(
                JobKey::parse(bad, Some("1")).unwrap_err().exit_code(),
                2,
                "{bad}"
            );
        }
        assert!(JobKey::parse("35919", None).is_err());
    }

    #[test]
    fn naive_times_are_read_in_the_platform_zone() {
        let t = parse_time("2021-11-04 17:55:49", cst()).unwrap();
        assert_eq!(t.to_rfc3339(), "2021-11-04T09:55:49+00:00");
        let t = parse_time("2021-11-03T13:56:56", parse_offset("UTC").unwrap()).unwrap();
        assert_eq!(t.to_rfc3339(), "2021-11-03T13:56:56+00:00");
        assert!(parse_time("", cst()).is_none());
        assert!(parse_time("yesterday", cst()).is_none());
        assert_eq!(format_time(t, cst()), "2021-11-03 21:56:56");
        assert_eq!(
            parse_offset("-0530").unwrap().local_minus_utc(),
            -(5 * 3600 + 1800)
        );
        assert!(parse_offset("+25:00").is_err());
    }

    #[test]
    fn elapsed_and_exit_status_forms() {
        assert_eq!(parse_elapsed("2-00:00:58").unwrap().num_seconds(), 172_858);
        assert_eq!(parse_elapsed("01:02:20").unwrap().num_seconds(), 3740);
        assert!(parse_elapsed("x").is_none());
        assert_eq!(parse_exit(&json!("1:0")), Some(1));
        assert_eq!(parse_exit(&json!(3)), Some(3));
        assert_eq!(parse_exit(&json!(null)), None);
    }

    #[test]
    fn realtime_record_from_the_documentation() {
        let rec = json!({
            "jobId": "27", "jobName": "STDIN_0910_094758", "jobStatus": "statC",
            "queue": "debug", "user": "test", "nodeUsed": "h04r3n07", "procNumUsed": 1,
            "jobStartTime": "2021-12-10 16:11:30", "jobRunTime": "00:00:05",
            "jobVncSessionInfo": null, "jobmanagerId": "1638523853",
            "errorPath": "/public/home/test/BASE/STDIN_1210_114429/std.err.27",
            "outputPath": "/public/home/test/BASE/STDIN_1210_114429/std.out.27",
            "workDir": "/public/home/test/BASE/STDIN_1210_114429", "reason": null
        });
        let job = to_job(rec.as_object().unwrap(), None, Source::Realtime, cst()).unwrap();
        assert_eq!(job.id, "1638523853.27");
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.native_state.as_deref(), Some("statC"));
        assert_eq!(job.owner.as_deref(), Some("test"));
        assert_eq!(job.reason, None);
        assert_eq!(
            job.ended_at.unwrap().to_rfc3339(),
            "2021-12-10T08:11:35+00:00"
        );
        assert_eq!(
            job.extra["stdout"],
            "/public/home/test/BASE/STDIN_1210_114429/std.out.27"
        );
        assert_eq!(job.extra["procs"], "1");
    }

    #[test]
    fn history_record_gives_exit_code() {
        let rec = json!({"jobId": "5", "jobState": "statE", "jobExitStatus": "2:0",
            "jobEndTime": "2021-11-03 13:56:56"});
        let key = JobKey::parse("9.5", None).unwrap();
        let job = to_job(rec.as_object().unwrap(), Some(&key), Source::History, cst()).unwrap();
        assert_eq!(job.id, "9.5");
        assert_eq!(job.state, JobState::Failed);
        assert_eq!(job.exit_code, Some(2));
        assert!(to_job(&Map::new(), None, Source::History, cst()).is_err());
    }
}
