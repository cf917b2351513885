//! Local rows to [`Job`]s, and the process checks behind vanished-supervisor detection.

use super::store::{Row, Store};
use crate::model::{Job, JobState};
use nix::sys::signal::{kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;

/// Converts a stored row to the normalised job.
pub fn to_job(row: &Row, store: &Store) -> Job {
    let state = match row.state.as_str() {
        "queued" => JobState::Queued,
        "running" if row.cancel_requested => JobState::Cancelling,
        "running" => JobState::Running,
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed,
        "canceled" => JobState::Canceled,
        _ => JobState::Unknown,
    };
    let mut job = Job::new(row.id.to_string(), state, Some(row.state.clone()));
    job.name = row.name.clone();
    job.created_at = Some(row.created_at);
    job.started_at = row.started_at;
    job.ended_at = row.ended_at;
    job.exit_code = row.exit_code;
    job.reason = row.reason.clone();
    job.owner = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name);
    let e = &mut job.extra;
    e.insert("command".into(), Value::from(row.command.clone()));
    e.insert("shell".into(), Value::Bool(row.shell));
    e.insert(
        "workdir".into(),
        row.workdir.clone().map_or(Value::Null, Value::String),
    );
    e.insert("pgid".into(), row.pgid.map_or(Value::Null, Value::from));
    e.insert(
        "supervisor_pid".into(),
        row.supervisor_pid.map_or(Value::Null, Value::from),
    );
    e.insert(
        "stdout".into(),
        Value::String(store.output_path(row.id, false).display().to_string()),
    );
    e.insert(
        "stderr".into(),
        Value::String(store.output_path(row.id, true).display().to_string()),
    );
    job
}

/// The kernel's boot id; it changes at every boot.
pub fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string())
}

/// A process's start time (clock ticks since boot, field 22 of `/proc/PID/stat`).
pub fn proc_start_time(pid: i64) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: skip past the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

fn process_state(pid: i64) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

/// Whether the row's supervisor is still the same live process.
pub fn supervisor_alive(row: &Row) -> bool {
    if row.boot_id.as_deref() != boot_id().as_deref() {
        return false;
    }
    let Some(pid) = row.supervisor_pid else {
        // Recorded but not yet started: the submitting process is between insert and spawn.
        return chrono::Utc::now() - row.created_at < chrono::Duration::seconds(30);
    };
    if kill(Pid::from_raw(pid as i32), None).is_err() {
        return false;
    }
    if process_state(pid) == Some('Z') {
        return false;
    }
    match (row.supervisor_start, proc_start_time(pid)) {
        (Some(a), Some(b)) => a == b,
        _ => true,
    }
}

/// Whether any live (non-zombie) process belongs to the group. Zombies count as alive for
/// `kill(2)`, and an orphaned job's zombie may linger when init is slow to reap it.
pub fn group_alive(pgid: i64) -> bool {
    if pgid <= 0 || killpg(Pid::from_raw(pgid as i32), None).is_err() {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    dir.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<i64>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|f| f.parse::<i64>().ok());
        pgrp == Some(pgid) && state != Some("Z")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_start_time_is_readable() {
        let me = std::process::id() as i64;
        assert!(proc_start_time(me).is_some());
        assert!(boot_id().is_some());
    }
}
