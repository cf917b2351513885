//! slurmrestd API v0.0.38 (Slurm 22.05, Debian 12): `job_state` is a plain string, numbers
//! are plain integers, `environment` is a dictionary and `script` sits beside `job`.

use super::api::ApiVersion;
use super::mapping::{NativeJob, SubmitRequest};
use crate::error::{Error, Result};
use crate::model::QueueInfo;
use serde::Serialize;
use serde_json::{Map, Value};

/// The body of `POST job/submit`, written straight from the request (a batch sends thousands:
/// no JSON tree is built for each).
#[derive(Serialize)]
struct SubmitBody<'a> {
    job: JobProperties<'a>,
    script: &'a str,
}

/// The `job` of [`SubmitBody`]; unset options are left out, as slurmrestd expects.
#[derive(Serialize)]
struct JobProperties<'a> {
    name: &'a str,
    current_working_directory: &'a str,
    environment: &'a std::collections::BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partition: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<[u32; 2]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tasks: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cpus_per_task: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_per_node: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    standard_output: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    standard_error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    comment: Option<&'a str>,
}

/// The v0.0.38 dialect.
#[derive(Debug)]
pub struct V0_0_38;

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

/// Reads one partition: its name, state, size and longest time limit. `None` without a name.
fn partition(p: &Value) -> Option<QueueInfo> {
    let name = text(p.get("name")).filter(|n| !n.is_empty())?;
    let mut limits = Map::new();
    limits.insert(
        "state".into(),
        text(p.get("state")).map_or(Value::Null, Value::String),
    );
    for key in ["total_cpus", "total_nodes"] {
        limits.insert(key.into(), int(p.get(key)).map_or(Value::Null, Value::from));
    }
    limits.insert("max_time".into(), time_limit(p.get("max_time_limit")));
    Some(QueueInfo {
        name,
        description: text(p.get("nodes"))
            .filter(|n| !n.is_empty())
            .map(|n| format!("nodes {n}")),
        limits,
    })
}

/// A partition time limit (minutes) as a duration jobctl reads back (`1h`, `2days`),
/// `infinite`, or null when unset. Slurm writes INFINITE as 0xFFFFFFFF and "not set" as
/// 0xFFFFFFFE; later API versions use `{set, infinite, number}`.
fn time_limit(v: Option<&Value>) -> Value {
    const INFINITE: i64 = 0xFFFF_FFFF;
    const NO_VALUE: i64 = 0xFFFF_FFFE;
    let minutes = match v {
        Some(Value::Object(o)) => {
            if o.get("infinite").and_then(Value::as_bool) == Some(true) {
                Some(INFINITE)
            } else if o.get("set").and_then(Value::as_bool) == Some(false) {
                None
            } else {
                int(o.get("number"))
            }
        }
        other => int(other),
    };
    match minutes {
        Some(INFINITE) => Value::from("infinite"),
        Some(NO_VALUE) | None => Value::Null,
        Some(m) if m < 0 => Value::Null,
        Some(m) => Value::from(
            humantime::format_duration(std::time::Duration::from_secs(m as u64 * 60)).to_string(),
        ),
    }
}

/// Reads one job object; `None` when it lacks an id (nothing can be said about it then).
fn native(o: &Map<String, Value>) -> Option<NativeJob> {
    let job_id = int(o.get("job_id")).and_then(|i| u64::try_from(i).ok())?;
    // Array tasks carry their master's id; a zero or absent value means "not an array".
    let array_job_id = int(o.get("array_job_id"))
        .filter(|v| *v > 0)
        .and_then(|v| u64::try_from(v).ok());
    let array_task_id = if array_job_id.is_some() {
        int(o.get("array_task_id")).and_then(|v| u64::try_from(v).ok())
    } else {
        None
    };
    Some(NativeJob {
        job_id,
        name: text(o.get("name")),
        comment: text(o.get("comment")),
        state: text(o.get("job_state")).unwrap_or_else(|| "UNKNOWN".to_string()),
        state_reason: text(o.get("state_reason")),
        state_description: text(o.get("state_description")),
        exit_code: int(o.get("exit_code")),
        user_name: text(o.get("user_name")),
        partition: text(o.get("partition")),
        submit_time: int(o.get("submit_time")),
        start_time: int(o.get("start_time")),
        end_time: int(o.get("end_time")),
        time_limit: int(o.get("time_limit")),
        cwd: text(o.get("current_working_directory")),
        stdout: text(o.get("standard_output")),
        stderr: text(o.get("standard_error")),
        nodes: text(o.get("nodes")),
        batch_host: text(o.get("batch_host")),
        array_job_id,
        array_task_id,
    })
}

impl ApiVersion for V0_0_38 {
    fn version(&self) -> &'static str {
        "v0.0.38"
    }

    fn submit_body(&self, req: &SubmitRequest) -> Result<bytes::Bytes> {
        let body = SubmitBody {
            job: JobProperties {
                name: &req.name,
                current_working_directory: &req.workdir,
                environment: &req.environment,
                partition: req.partition.as_deref(),
                nodes: req.nodes.map(|(lo, hi)| [lo, hi]),
                tasks: req.tasks,
                cpus_per_task: req.cpus_per_task,
                memory_per_node: req.memory_per_node,
                time_limit: req.time_limit,
                standard_output: req.stdout.as_deref(),
                standard_error: req.stderr.as_deref(),
                comment: req.comment.as_deref(),
            },
            script: &req.script,
        };
        serde_json::to_vec(&body)
            .map(bytes::Bytes::from)
            .map_err(|e| Error::io("the Slurm submission", e))
    }

    fn submitted_id(&self, body: &Value) -> Result<u64> {
        int(body.get("job_id"))
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| {
                Error::protocol(format!(
                    "slurmrestd accepted the job but its answer has no job_id: {}",
                    crate::http::snippet(body.to_string().as_bytes())
                ))
            })
    }

    fn jobs(&self, body: &Value) -> Result<Vec<NativeJob>> {
        let list = body.get("jobs").and_then(Value::as_array).ok_or_else(|| {
            Error::protocol(format!(
                "slurmrestd's answer has no `jobs` list: {}",
                crate::http::snippet(body.to_string().as_bytes())
            ))
        })?;
        // An entry that is not a job makes the whole answer unusable: dropping it would turn a
        // garbled answer into "no such job" (exit 6) or an empty list (exit 0).
        list.iter()
            .enumerate()
            .map(|(i, entry)| {
                entry.as_object().and_then(native).ok_or_else(|| {
                    Error::protocol(format!(
                        "slurmrestd's `jobs` entry {i} is not a job (no numeric job_id): {}",
                        crate::http::snippet(entry.to_string().as_bytes())
                    ))
                })
            })
            .collect()
    }

    fn partitions(&self, body: &Value) -> Result<Vec<QueueInfo>> {
        let list = body
            .get("partitions")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                Error::protocol(format!(
                    "slurmrestd's answer has no `partitions` list: {}",
                    crate::http::snippet(body.to_string().as_bytes())
                ))
            })?;
        Ok(list.iter().filter_map(partition).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn partitions_become_queues_with_readable_time_limits() {
        let body = json!({"partitions": [
            {"name": "debug", "state": "UP", "total_cpus": 4, "total_nodes": 1,
             "max_time_limit": 90, "nodes": "n1"},
            {"name": "long", "state": "UP", "max_time_limit": 4294967295u64},
            {"name": "new", "max_time_limit": {"set": true, "infinite": false, "number": 1440}},
            {"name": "unset", "max_time_limit": 4294967294u64},
            {"state": "UP"}
        ]});
        let q = V0_0_38.partitions(&body).unwrap();
        assert_eq!(q.len(), 4, "a partition without a name is skipped");
        assert_eq!(q[0].limits["max_time"], "1h 30m");
        assert_eq!(q[0].limits["total_cpus"], 4);
        assert_eq!(q[0].description.as_deref(), Some("nodes n1"));
        assert_eq!(q[1].limits["max_time"], "infinite");
        assert_eq!(q[2].limits["max_time"], "1day");
        assert!(q[3].limits["max_time"].is_null());
        assert!(V0_0_38.partitions(&json!({"jobs": []})).is_err());
    }

    #[test]
    fn reads_a_job_as_slurm_22_05_writes_it() {
        let body = json!({"meta":{}, "errors":[], "jobs":[
            {"job_id":3,"name":"rest-test","job_state":"COMPLETED","state_reason":"None","state_description":"",
             "user_name":"ci","user_id":1001,"partition":"debug","nodes":"localhost","batch_host":"localhost",
             "exit_code":0,"derived_exit_code":0,"submit_time":1795225431,"start_time":1795225432,"end_time":1795225437,
             "time_limit":5,"current_working_directory":"/tmp","standard_output":"/tmp/rest-test-%j.out",
             "array_job_id":0,"array_task_id":null}
        ]});
        let jobs = V0_0_38.jobs(&body).unwrap();
        assert_eq!(jobs.len(), 1);
        let j = &jobs[0];
        assert_eq!(j.job_id, 3);
        assert_eq!(j.state, "COMPLETED");
        assert_eq!(j.stdout.as_deref(), Some("/tmp/rest-test-%j.out"));
        assert_eq!(j.array_job_id, None);
        assert!(V0_0_38.jobs(&json!({"errors":[]})).is_err());
        // An entry that is not a job spoils the whole answer: it must not read as "no job".
        let mut garbled = body.clone();
        garbled["jobs"][0]["job_id"] = json!("three");
        let e = V0_0_38.jobs(&garbled).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE, "{e}");
        assert!(V0_0_38.jobs(&json!({"jobs":[{"name":"no id"}]})).is_err());
    }

    #[test]
    fn submission_body_has_script_beside_job_and_environment() {
        let req = SubmitRequest {
            script: "#!/bin/sh\ntrue\n".into(),
            name: "x".into(),
            nodes: Some((1, 2)),
            time_limit: Some(5),
            workdir: "/tmp".into(),
            environment: [("PATH".to_string(), "/bin".to_string())].into(),
            stdout: Some("/tmp/%j.out".into()),
            comment: Some("jobctl-key:k1".into()),
            ..SubmitRequest::default()
        };
        let b: Value = serde_json::from_slice(&V0_0_38.submit_body(&req).unwrap()).unwrap();
        assert_eq!(b["script"], "#!/bin/sh\ntrue\n");
        assert_eq!(b["job"]["name"], "x");
        assert_eq!(b["job"]["current_working_directory"], "/tmp");
        assert_eq!(b["job"]["environment"]["PATH"], "/bin");
        assert_eq!(b["job"]["nodes"], json!([1, 2]));
        assert_eq!(b["job"]["time_limit"], 5);
        assert_eq!(b["job"]["standard_output"], "/tmp/%j.out");
        assert_eq!(b["job"]["comment"], "jobctl-key:k1");
        // Options not given are left out, not sent as null.
        for absent in ["partition", "tasks", "cpus_per_task", "standard_error"] {
            assert!(b["job"].get(absent).is_none(), "{absent}: {b}");
        }
        assert_eq!(V0_0_38.submitted_id(&json!({"job_id": 7})).unwrap(), 7);
        assert!(V0_0_38.submitted_id(&json!({})).is_err());
    }
}
