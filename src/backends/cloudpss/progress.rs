//! Live progress of running jobs, from the `progress` messages of their output streams.
//!
//! GraphQL has no progress field, so the first time `status` sees a job running, a background
//! task starts following its output stream and remembers the latest `progress` message (value
//! in [0,1] and title). Later observations of the job carry it: `progress` is the value and
//! `extra.progress_title` the title. At most [`MAX_TRACKED`] streams are followed at once
//! (enough for the live display of a handful of jobs); a task ends with its stream, and all
//! end when the backend is dropped.

use super::streams::StreamClient;
use crate::model::Job;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::task::JoinHandle;

/// Streams followed at the same time.
pub const MAX_TRACKED: usize = 8;

/// The latest progress message of one job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Progress {
    /// `data.value`, clamped to [0,1].
    pub value: Option<f64>,
    /// `data.title`.
    pub title: Option<String>,
}

#[derive(Debug)]
struct Tracked {
    latest: Arc<Mutex<Progress>>,
    task: JoinHandle<()>,
}

/// Follows output streams of running jobs for their progress.
#[derive(Debug, Default)]
pub struct ProgressTracker {
    jobs: Mutex<HashMap<String, Tracked>>,
    /// Set once a wait begins: only then are streams followed.
    enabled: std::sync::atomic::AtomicBool,
}

impl Drop for ProgressTracker {
    fn drop(&mut self) {
        if let Ok(jobs) = self.jobs.lock() {
            for t in jobs.values() {
                t.task.abort();
            }
        }
    }
}

/// Reads a progress message's value and title.
pub fn progress_of(msg: &Value) -> Option<Progress> {
    if msg.get("type").and_then(Value::as_str) != Some("progress") {
        return None;
    }
    let data = msg.get("data")?;
    Some(Progress {
        value: data
            .get("value")
            .and_then(Value::as_f64)
            .filter(|v| v.is_finite())
            .map(|v| v.clamp(0.0, 1.0)),
        title: data
            .get("title")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string),
    })
}

impl ProgressTracker {
    /// Starts following the streams of running jobs from the next observation on.
    pub fn enable(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds what is known of `job`'s progress, and starts following its stream when it runs.
    pub fn observe(&self, job: &mut Job, streams: &StreamClient) {
        let Ok(mut jobs) = self.jobs.lock() else {
            return;
        };
        if let Some(t) = jobs.get(&job.id) {
            let p = t.latest.lock().map(|p| p.clone()).unwrap_or_default();
            apply(job, &p);
            if job.terminal {
                t.task.abort();
            }
            return;
        }
        let running = job.native_state.as_deref() == Some("RUNNING");
        let output = job
            .extra
            .get("output")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let active = jobs.values().filter(|t| !t.task.is_finished()).count();
        let enabled = self.enabled.load(std::sync::atomic::Ordering::Relaxed);
        if !enabled || !running || output.is_empty() || active >= MAX_TRACKED {
            return;
        }
        let latest = Arc::new(Mutex::new(Progress::default()));
        let task = tokio::spawn(follow(streams.clone(), output, latest.clone()));
        jobs.insert(job.id.clone(), Tracked { latest, task });
    }
}

fn apply(job: &mut Job, p: &Progress) {
    if p.value.is_some() {
        job.progress = p.value;
    }
    if let Some(t) = &p.title {
        job.extra
            .insert("progress_title".into(), Value::String(t.clone()));
    }
}

async fn follow(streams: StreamClient, output: String, latest: Arc<Mutex<Progress>>) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Value>(256);
    let reader = async {
        let r = streams.read(&output, true, tx).await;
        if let Err(e) = r {
            tracing::debug!(stream = %output, "progress: {}", e.message);
        }
    };
    let updater = async {
        while let Some(msg) = rx.recv().await {
            if let Some(p) = progress_of(&msg) {
                if let Ok(mut l) = latest.lock() {
                    *l = p;
                }
            }
        }
    };
    tokio::join!(reader, updater);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn progress_messages_give_a_clamped_value_and_a_title() {
        let m = json!({"type": "progress", "key": "progress-1", "data": {"value": 1.5, "title": "meshing"}});
        assert_eq!(
            progress_of(&m),
            Some(Progress {
                value: Some(1.0),
                title: Some("meshing".into())
            })
        );
        assert_eq!(progress_of(&json!({"type": "log"})), None);
        let mut job = Job::new("j", crate::model::JobState::Running, None);
        apply(
            &mut job,
            &Progress {
                value: Some(0.25),
                title: Some("step 5".into()),
            },
        );
        assert_eq!(job.progress, Some(0.25));
        assert_eq!(job.extra["progress_title"], "step 5");
    }
}
