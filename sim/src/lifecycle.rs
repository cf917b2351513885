//! Simulated job lifecycles: queued for a while, running for a while, then an outcome that
//! tests control globally (`--fail-ratio`) or per job (arguments `sim_outcome`,
//! `sim_duration`, `sim_queue`, `sim_exit_code`).

use super::SimConfig;
use rand::Rng;
use serde_json::{Map, Value};
use std::time::{Duration, Instant};

/// How one simulated job will behave, decided at submission.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobPlan {
    /// Time spent queued.
    pub queue: Duration,
    /// Time spent running.
    pub run: Duration,
    /// Whether it ends successfully.
    pub succeed: bool,
    /// Exit code reported at the end (0 on success, 1 by default on failure).
    pub exit_code: i64,
}

impl JobPlan {
    /// Reads per-job overrides from job arguments; falls back to the global settings.
    pub fn from_args(config: &SimConfig, args: &Map<String, Value>) -> Self {
        let dur = |key: &str| {
            args.get(key).and_then(|v| match v {
                Value::Number(n) => n.as_f64().map(Duration::from_secs_f64),
                Value::String(s) => crate::parse_duration(s).ok(),
                _ => None,
            })
        };
        let outcome = args
            .get("sim_outcome")
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase);
        let succeed = match outcome.as_deref() {
            Some("fail") | Some("failed") => false,
            Some("succeed") | Some("success") | Some("succeeded") => true,
            _ => !(config.fail_ratio > 0.0 && rand::rng().random_bool(config.fail_ratio.min(1.0))),
        };
        let exit_code = args
            .get("sim_exit_code")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(if succeed { 0 } else { 1 });
        JobPlan {
            queue: dur("sim_queue").unwrap_or(config.queue_duration),
            run: dur("sim_duration").unwrap_or(config.job_duration),
            succeed,
            exit_code,
        }
    }
}

/// Where a simulated job is in its life.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Phase {
    /// Waiting.
    Queued,
    /// Running, with progress in [0, 1].
    Running(f64),
    /// Cancellation requested, not yet effective.
    Cancelling,
    /// Ended successfully.
    Succeeded,
    /// Ended with a failure.
    Failed,
    /// Canceled.
    Canceled,
}

impl Phase {
    /// Whether the job has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Canceled)
    }
}

/// A job's clock: derives its phase from elapsed time, so no background task is needed.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// When it was submitted.
    pub created: Instant,
    /// Wall-clock submission time.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// The plan.
    pub plan: JobPlan,
    /// When cancellation was requested, if it was.
    pub cancel_requested: Option<Instant>,
    /// How long a cancellation takes to become effective.
    pub cancel_delay: Duration,
}

impl Lifecycle {
    /// Starts a clock now.
    pub fn new(plan: JobPlan) -> Self {
        Lifecycle {
            created: Instant::now(),
            created_at: chrono::Utc::now(),
            plan,
            cancel_requested: None,
            cancel_delay: Duration::from_millis(300),
        }
    }

    /// Phase at `now`.
    pub fn phase_at(&self, now: Instant) -> Phase {
        let natural = self.natural_phase(now);
        match self.cancel_requested {
            Some(at) if !self.natural_phase(at).is_terminal() => {
                if now.duration_since(at) >= self.cancel_delay {
                    Phase::Canceled
                } else {
                    Phase::Cancelling
                }
            }
            _ => natural,
        }
    }

    /// Phase now.
    pub fn phase(&self) -> Phase {
        self.phase_at(Instant::now())
    }

    fn natural_phase(&self, now: Instant) -> Phase {
        let t = now.duration_since(self.created);
        if t < self.plan.queue {
            Phase::Queued
        } else if t < self.plan.queue + self.plan.run {
            let p = (t - self.plan.queue).as_secs_f64() / self.plan.run.as_secs_f64().max(1e-9);
            Phase::Running(p.clamp(0.0, 1.0))
        } else if self.plan.succeed {
            Phase::Succeeded
        } else {
            Phase::Failed
        }
    }

    /// Requests cancellation; returns false when the job had already ended.
    pub fn cancel(&mut self) -> bool {
        let now = Instant::now();
        if self.phase_at(now).is_terminal() {
            return false;
        }
        self.cancel_requested.get_or_insert(now);
        true
    }

    /// Wall-clock time the job started running, once it has.
    pub fn started_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let t = self.created.elapsed();
        // A job canceled while still queued never started.
        let canceled_in_queue = self
            .cancel_requested
            .is_some_and(|at| at.duration_since(self.created) < self.plan.queue);
        (t >= self.plan.queue && !canceled_in_queue)
            .then(|| self.created_at + chrono_dur(self.plan.queue))
    }

    /// Wall-clock time the job ended, once it has.
    pub fn ended_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let now = Instant::now();
        match self.phase_at(now) {
            Phase::Canceled => self.cancel_requested.map(|at| {
                self.created_at + chrono_dur(at.duration_since(self.created) + self.cancel_delay)
            }),
            Phase::Succeeded | Phase::Failed => {
                Some(self.created_at + chrono_dur(self.plan.queue + self.plan.run))
            }
            _ => None,
        }
    }
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or_else(|_| chrono::Duration::zero())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_follow_the_plan_and_cancellation() {
        let plan = JobPlan {
            queue: Duration::from_secs(1),
            run: Duration::from_secs(2),
            succeed: false,
            exit_code: 3,
        };
        let l = Lifecycle::new(plan);
        let t0 = l.created;
        assert_eq!(l.phase_at(t0), Phase::Queued);
        assert!(
            matches!(l.phase_at(t0 + Duration::from_secs(2)), Phase::Running(p) if (p - 0.5).abs() < 1e-6)
        );
        assert_eq!(l.phase_at(t0 + Duration::from_secs(4)), Phase::Failed);
        let mut queued = l.clone();
        queued.cancel_requested = Some(t0 + Duration::from_millis(100));
        assert_eq!(
            queued.phase_at(t0 + Duration::from_secs(2)),
            Phase::Canceled
        );
        let mut l2 = l.clone();
        l2.cancel_requested = Some(t0 + Duration::from_millis(1500));
        assert_eq!(
            l2.phase_at(t0 + Duration::from_millis(1600)),
            Phase::Cancelling
        );
        assert_eq!(l2.phase_at(t0 + Duration::from_secs(4)), Phase::Canceled);
    }

    #[test]
    fn per_job_arguments_override_globals() {
        let cfg = SimConfig {
            fail_ratio: 1.0,
            ..SimConfig::default()
        };
        let mut args = Map::new();
        args.insert("sim_outcome".into(), "succeed".into());
        args.insert("sim_duration".into(), "250ms".into());
        let p = JobPlan::from_args(&cfg, &args);
        assert!(p.succeed);
        assert_eq!(p.run, Duration::from_millis(250));
        let p = JobPlan::from_args(&cfg, &Map::new());
        assert!(!p.succeed);
        assert_eq!(p.exit_code, 1);
    }
}
