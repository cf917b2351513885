//! slurmrestd API v0.0.38 (Slurm 22.05, Debian 12): `job_state` is a plain string, numbers
//! are plain integers, `environment` is a dictionary and `script` sits beside `job`.

use super::api::ApiVersion;
use super::mapping::{NativeJob, SubmitRequest};
use crate::error::{Error, Result};
use serde_json::{Map, Value, json};

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

    fn submit_body(&self, req: &SubmitRequest) -> Value {
        let mut job = Map::new();
        job.insert("name".into(), json!(req.name));
        job.insert("current_working_directory".into(), json!(req.workdir));
        job.insert("environment".into(), json!(req.environment));
        if let Some(p) = &req.partition {
            job.insert("partition".into(), json!(p));
        }
        if let Some((lo, hi)) = req.nodes {
            job.insert("nodes".into(), json!([lo, hi]));
        }
        if let Some(t) = req.tasks {
            job.insert("tasks".into(), json!(t));
        }
        if let Some(c) = req.cpus_per_task {
            job.insert("cpus_per_task".into(), json!(c));
        }
        if let Some(m) = req.memory_per_node {
            job.insert("memory_per_node".into(), json!(m));
        }
        if let Some(t) = req.time_limit {
            job.insert("time_limit".into(), json!(t));
        }
        if let Some(o) = &req.stdout {
            job.insert("standard_output".into(), json!(o));
        }
        if let Some(e) = &req.stderr {
            job.insert("standard_error".into(), json!(e));
        }
        if let Some(c) = &req.comment {
            job.insert("comment".into(), json!(c));
        }
        json!({ "job": job, "script": req.script })
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ..SubmitRequest::default()
        };
        let b = V0_0_38.submit_body(&req);
        assert_eq!(b["script"], "#!/bin/sh\ntrue\n");
        assert_eq!(b["job"]["environment"]["PATH"], "/bin");
        assert_eq!(b["job"]["nodes"], json!([1, 2]));
        assert_eq!(b["job"]["time_limit"], 5);
        assert!(b["job"].get("partition").is_none());
        assert_eq!(V0_0_38.submitted_id(&json!({"job_id": 7})).unwrap(), 7);
        assert!(V0_0_38.submitted_id(&json!({})).is_err());
    }
}
