//! The supervisor: a detached copy of jobctl (`jobctl __supervise`) that starts the job's
//! command in its own process group, waits for it, and records how it ended. It exists so a
//! job outlives the `jobctl submit` that started it and still gets its exit code recorded.

use super::store::Store;
use crate::error::{Error, Result};
use crate::model::value_to_string;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

/// Default time a canceled job gets between SIGTERM and SIGKILL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// The grace period of an abort, from `JOBCTL_LOCAL_GRACE` of the process that aborts.
pub fn grace_from_env() -> Result<Duration> {
    match std::env::var("JOBCTL_LOCAL_GRACE") {
        Ok(v) if !v.trim().is_empty() => crate::config::parse_duration(&v)
            .map_err(|e| Error::usage(format!("JOBCTL_LOCAL_GRACE: {}", e.message))),
        _ => Ok(DEFAULT_GRACE),
    }
}

/// The file through which `abort` tells the supervisor the grace period it chose.
pub fn grace_file(store: &Store, id: i64) -> std::path::PathBuf {
    store.job_dir(id).join("grace-ms")
}

/// The grace period the aborting process asked for (default when it wrote none).
fn grace_period(store: &Store, id: i64) -> Duration {
    std::fs::read_to_string(grace_file(store, id))
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_GRACE)
}

/// Environment variable carrying the user's umask from `submit` to the job's command.
pub const JOB_UMASK_VAR: &str = "JOBCTL_JOB_UMASK";

/// Runs job `id` from the store in `state_dir` to completion. Called in the detached process.
pub async fn run(state_dir: &Path, id: i64) -> Result<()> {
    let store = Store::open(state_dir)?;
    let row = store
        .get(id)
        .map_err(|e| Error::io("supervisor", e))?
        .ok_or_else(|| Error::not_found(format!("local job {id} does not exist")))?;
    let mut usr1 = signal(SignalKind::user_defined1()).map_err(|e| Error::io("signal", e))?;
    if row.cancel_requested {
        store.set_ended(id, "canceled", None, Some("canceled before it started"))?;
        return Ok(());
    }
    let dir = store.job_dir(id);
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
    let open = |p: std::path::PathBuf| {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .map_err(|e| Error::io(p.display(), e))
    };
    let out = open(store.output_path(id, false))?;
    let err = open(store.output_path(id, true))?;

    let mut cmd = if row.shell {
        let mut c = tokio::process::Command::new("/bin/sh");
        c.arg("-c")
            .arg(row.command.first().cloned().unwrap_or_default());
        c
    } else {
        let (program, args) = row
            .command
            .split_first()
            .ok_or_else(|| Error::usage(format!("local job {id} has an empty command")))?;
        let mut c = tokio::process::Command::new(program);
        c.args(args);
        c
    };
    for (k, v) in &row.env {
        cmd.env(k, value_to_string(v));
    }
    // The command gets the umask of the user who submitted it, not jobctl's owner-only one.
    let job_umask = std::env::var(JOB_UMASK_VAR)
        .ok()
        .and_then(|m| u32::from_str_radix(m.trim(), 8).ok())
        .unwrap_or(0o022);
    cmd.env_remove(JOB_UMASK_VAR);
    // SAFETY: umask() is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(job_umask));
            Ok(())
        });
    }
    if let Some(w) = &row.workdir {
        cmd.current_dir(w);
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        // Its own group, so abort can signal the command and everything it started at once.
        .process_group(0)
        .kill_on_drop(false);

    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            let what = row.command.first().cloned().unwrap_or_default();
            store.set_ended(
                id,
                "failed",
                Some(code),
                Some(&format!("cannot start `{what}`: {e}")),
            )?;
            return Ok(());
        }
    };
    let pgid = child.id().map(i64::from).unwrap_or_default();
    store.set_running(id, pgid)?;
    // abort may have come between our first look and the spawn.
    let mut kill_at: Option<tokio::time::Instant> = None;
    if store.get(id)?.is_some_and(|r| r.cancel_requested) {
        terminate(pgid);
        kill_at = Some(tokio::time::Instant::now() + grace_period(&store, id));
    }

    let status = loop {
        let deadline =
            kill_at.unwrap_or_else(|| tokio::time::Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            s = child.wait() => break s,
            _ = usr1.recv() => {
                // abort sent SIGTERM already; start the clock for SIGKILL.
                terminate(pgid);
                kill_at.get_or_insert(tokio::time::Instant::now() + grace_period(&store, id));
            }
            _ = tokio::time::sleep_until(deadline), if kill_at.is_some() => {
                let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
                kill_at = None;
            }
        }
    };
    let canceled = store.get(id)?.is_some_and(|r| r.cancel_requested);
    match status {
        Ok(s) => {
            use std::os::unix::process::ExitStatusExt;
            let (code, reason) = match (s.code(), s.signal()) {
                (Some(c), _) => (i64::from(c), None),
                (None, Some(sig)) => {
                    let name = Signal::try_from(sig)
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_else(|_| format!("signal {sig}"));
                    (128 + i64::from(sig), Some(format!("killed by {name}")))
                }
                (None, None) => (-1, Some("ended without exit code".to_string())),
            };
            let state = if canceled {
                "canceled"
            } else if code == 0 {
                "succeeded"
            } else {
                "failed"
            };
            let reason = if canceled {
                Some(reason.map_or("canceled".to_string(), |r| format!("canceled ({r})")))
            } else if code != 0 && reason.is_none() {
                Some(format!("exited with code {code}"))
            } else {
                reason
            };
            store.set_ended(id, state, Some(code), reason.as_deref())?;
        }
        Err(e) => {
            store.set_ended(
                id,
                "failed",
                None,
                Some(&format!("lost track of the command: {e}")),
            )?;
        }
    }
    Ok(())
}

/// Sends SIGTERM to a process group, ignoring a group that is already gone.
pub fn terminate(pgid: i64) {
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGTERM);
    }
}
