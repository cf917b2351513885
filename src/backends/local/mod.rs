//! The local backend: commands run as detached processes on this machine. It is the default
//! when nothing is configured, so a newcomer can run a real job with no setup.
//!
//! `submit` records the job in a SQLite store under the state directory and starts a
//! supervisor (jobctl re-executing itself as `jobctl __supervise`) in a new session; the
//! supervisor runs the command in its own process group with stdout/stderr captured to files
//! and records start, end and exit code. A supervisor that vanished (kill -9, reboot) is
//! detected from its pid, start time and the kernel boot id, so no job stays "running" forever.

pub mod mapping;
pub mod store;
pub mod supervisor;

use crate::backend::{BackendContext, CheckSink, JobBackend, LogSink};
use crate::error::{Error, Result};
use crate::model::*;
use async_trait::async_trait;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use store::{Row, Store};
use tokio::io::AsyncWriteExt;

/// Runs commands as detached local processes.
#[derive(Debug)]
pub struct LocalBackend {
    ctx: BackendContext,
    store: Store,
}

impl LocalBackend {
    /// Opens the local store in the state directory.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        let store = Store::open(&ctx.state_dir)?;
        Ok(LocalBackend { ctx, store })
    }

    fn parse_id(id: &str) -> Result<i64> {
        id.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
            Error::not_found(format!(
                "local job '{id}' does not exist (local ids are numbers)"
            ))
        })
    }

    fn row(&self, id: &str) -> Result<Row> {
        let n = Self::parse_id(id)?;
        let row = self
            .store
            .get(n)?
            .ok_or_else(|| Error::not_found(format!("local job {n} does not exist")))?;
        self.reconcile(row)
    }

    /// Detects a vanished supervisor and records the job's loss, so it is never reported
    /// running forever.
    fn reconcile(&self, row: Row) -> Result<Row> {
        if !matches!(row.state.as_str(), "queued" | "running") {
            return Ok(row);
        }
        if mapping::supervisor_alive(&row) {
            return Ok(row);
        }
        // The supervisor is gone. Is the command still running by itself?
        let same_boot = row.boot_id.as_deref() == mapping::boot_id().as_deref();
        if same_boot && row.pgid.is_some_and(mapping::group_alive) {
            return Ok(row);
        }
        let reason = format!(
            "the supervisor (pid {}) vanished before the job ended{}; its exit code is unknown",
            row.supervisor_pid.unwrap_or_default(),
            if same_boot {
                ""
            } else {
                " (the machine was rebooted)"
            }
        );
        let state = if row.cancel_requested {
            "canceled"
        } else {
            "failed"
        };
        self.store.set_ended(row.id, state, None, Some(&reason))?;
        self.store
            .get(row.id)?
            .ok_or_else(|| Error::not_found(format!("local job {} does not exist", row.id)))
    }

    /// The variables a job never inherits: every credential variable jobctl knows of.
    fn scrubbed_vars(&self) -> Vec<String> {
        let mut vars = crate::config::builtin_secret_vars();
        for v in &self.ctx.profile.secret_vars {
            if !vars.contains(v) {
                vars.push(v.clone());
            }
        }
        vars
    }

    /// Cancels a job: SIGTERM to its group, then SIGKILL after `grace` (at once when zero).
    async fn cancel(&self, id: &str, grace: std::time::Duration) -> Result<AbortOutcome> {
        let row = self.row(id)?;
        if !self.store.request_cancel(row.id)? {
            return Ok(AbortOutcome::AlreadyTerminal);
        }
        let grace_file = supervisor::grace_file(&self.store, row.id);
        if let Some(dir) = grace_file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
        }
        std::fs::write(&grace_file, grace.as_millis().to_string())
            .map_err(|e| Error::io(grace_file.display(), e))?;
        if let Some(pgid) = row.pgid {
            if grace.is_zero() {
                let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
            } else {
                supervisor::terminate(pgid);
            }
        }
        if mapping::supervisor_alive(&row) {
            if let Some(pid) = row.supervisor_pid {
                // Tells the supervisor to start the SIGTERM → SIGKILL grace clock.
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGUSR1);
            }
        } else {
            // Nobody will record the end: do it here, and make sure the group is gone.
            if let Some(pgid) = row.pgid {
                tokio::time::sleep(grace.min(std::time::Duration::from_millis(500))).await;
                let _ = killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL);
            }
            self.store.set_ended(
                row.id,
                "canceled",
                None,
                Some("canceled; the supervisor had vanished, so the exit code is unknown"),
            )?;
        }
        Ok(AbortOutcome::Requested)
    }

    fn spawn_supervisor(&self, id: i64) -> Result<()> {
        let exe = std::env::current_exe()
            .map_err(|e| Error::io("cannot find the jobctl executable", e))?;
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("__supervise")
            .arg("--state-dir")
            .arg(&self.ctx.state_dir)
            .arg(id.to_string())
            .env(
                supervisor::JOB_UMASK_VAR,
                format!("{:o}", crate::config::user_umask()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The job inherits the supervisor's environment: platform credentials stay behind
        // (a job that needs one gets it explicitly with --arg, applied by the supervisor).
        for var in self.scrubbed_vars() {
            cmd.env_remove(var);
        }
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid() is async-signal-safe and touches no memory of the parent; it
        // detaches the supervisor from our terminal and session so it survives our exit and
        // Ctrl-C in the terminal that started it.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::io("cannot start the job supervisor", e))?;
        let pid = i64::from(child.id());
        self.store
            .set_supervisor(id, pid, mapping::proc_start_time(pid))?;
        // The supervisor is reaped by init once we exit; while we live (submit --wait), a
        // thread reaps it so it does not linger as a zombie.
        std::thread::spawn(move || {
            let mut child = child;
            let _ = child.wait();
        });
        Ok(())
    }
}

#[async_trait]
impl JobBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn capabilities(&self) -> Capabilities {
        use Capability::*;
        [
            Submit,
            Status,
            BatchStatus,
            List,
            Abort,
            Logs,
            FollowLogs,
            Fetch,
        ]
        .into_iter()
        .collect()
    }

    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Required,
            args: true,
            options: &["workdir", "shell"],
            required_options: &[],
        }
    }

    fn validate(&self, spec: &JobSpec) -> Result<()> {
        self.spec_rules().check(self.name(), spec)?;
        let shell = match spec.options.get("shell") {
            None => false,
            Some(v) => crate::config::parse_bool(&value_to_string(v))
                .map_err(|e| Error::usage(format!("option `shell`: {}", e.message)))?,
        };
        let n = spec.command.as_ref().map_or(0, Vec::len);
        if shell && n != 1 {
            return Err(Error::usage(format!(
                "option `shell=true` takes the command as one argument (got {n}); quote it: -- 'echo a | wc -c'"
            )));
        }
        if let Some(w) = spec.opt_str("workdir") {
            if !Path::new(&w).is_dir() {
                return Err(Error::usage(format!(
                    "option `workdir`: {w} is not a directory"
                )));
            }
        }
        for key in spec.args.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return Err(Error::usage(format!(
                    "--arg `{key}` is not a valid environment variable name"
                )));
            }
        }
        Ok(())
    }

    async fn submit(&self, spec: &JobSpec) -> Result<Job> {
        let command = spec.command.clone().unwrap_or_default();
        let shell = spec
            .opt_str("shell")
            .map(|v| crate::config::parse_bool(&v))
            .transpose()?
            .unwrap_or(false);
        let workdir = spec.opt_str("workdir").map(|w| {
            std::fs::canonicalize(&w)
                .map(|p| p.display().to_string())
                .unwrap_or(w)
        });
        let id = self.store.insert(
            spec.key.as_deref(),
            spec.name.as_deref(),
            &command,
            &spec.args,
            workdir.as_deref(),
            shell,
            mapping::boot_id().as_deref(),
        )?;
        if let Err(e) = self.spawn_supervisor(id) {
            self.store.set_ended(
                id,
                "failed",
                None,
                Some(&format!("supervisor did not start: {e}")),
            )?;
            return Err(e);
        }
        let row = self.row(&id.to_string())?;
        Ok(mapping::to_job(&row, &self.store))
    }

    /// The local store records each job's key in the same insert that creates it.
    async fn find_by_key(
        &self,
        spec: &JobSpec,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> Result<crate::backend::KeyLookup> {
        use crate::backend::KeyLookup;
        let Some(key) = spec.key.as_deref() else {
            return Ok(KeyLookup::Unsearchable);
        };
        match self.store.find_key(key)? {
            Some(id) => Ok(KeyLookup::Found(self.status(&id.to_string()).await?)),
            None => Ok(KeyLookup::Absent),
        }
    }

    async fn status(&self, id: &str) -> Result<Job> {
        let row = self.row(id)?;
        Ok(mapping::to_job(&row, &self.store))
    }

    async fn statuses(&self, ids: &[String]) -> Vec<Result<Job>> {
        let nums: Vec<i64> = ids.iter().filter_map(|i| Self::parse_id(i).ok()).collect();
        let rows = match self.store.get_many(&nums) {
            Ok(r) => r,
            Err(e) => return ids.iter().map(|_| Err(e.clone())).collect(),
        };
        let by_id: HashMap<i64, &_> = rows.iter().map(|r| (r.id, r)).collect();
        ids.iter()
            .map(|id| {
                let n = Self::parse_id(id)?;
                let row = by_id
                    .get(&n)
                    .map(|r| (*r).clone())
                    .ok_or_else(|| Error::not_found(format!("local job {n} does not exist")))?;
                let row = self.reconcile(row)?;
                Ok(mapping::to_job(&row, &self.store))
            })
            .collect()
    }

    async fn list(&self, query: &ListQuery) -> Result<Vec<Job>> {
        let fetch_limit = if query.states.is_empty() {
            query.limit
        } else {
            None
        };
        let mut out = Vec::new();
        for row in self.store.list(fetch_limit)? {
            let row = self.reconcile(row)?;
            let job = mapping::to_job(&row, &self.store);
            if query.wants(job.state) {
                out.push(job);
                if query.limit.is_some_and(|l| out.len() >= l) {
                    break;
                }
            }
        }
        Ok(out)
    }

    async fn abort(&self, id: &str) -> Result<AbortOutcome> {
        // Read when aborting, so the grace is the aborting user's choice, not the submitter's.
        let grace = supervisor::grace_from_env()?;
        self.cancel(id, grace).await
    }

    async fn abort_force(&self, id: &str) -> Result<AbortOutcome> {
        self.cancel(id, std::time::Duration::ZERO).await
    }

    async fn logs(&self, id: &str, req: LogsRequest, out: LogSink<'_>) -> Result<()> {
        let row = self.row(id)?;
        let path = self.store.output_path(row.id, req.stderr);
        let mut offset = 0u64;
        loop {
            let terminal = self
                .row(id)?
                .state
                .parse::<JobState>()
                .map(JobState::is_terminal)
                .unwrap_or(true);
            if !path.exists() && terminal {
                return Err(Error::not_found(format!(
                    "local job {} has no {} file",
                    row.id,
                    if req.stderr { "stderr" } else { "stdout" }
                )));
            }
            offset += copy_from(&path, offset, out).await?;
            if !req.follow || terminal {
                if terminal {
                    // The command may have written more between our read and its end.
                    copy_from(&path, offset, out).await?;
                }
                return Ok(());
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    async fn fetch(
        &self,
        id: &str,
        dest: &Path,
        _progress: ProgressFn<'_>,
    ) -> Result<Vec<Artifact>> {
        let row = self.row(id)?;
        let mut artifacts = Vec::new();
        for stderr in [false, true] {
            let src = self.store.output_path(row.id, stderr);
            if !src.exists() {
                continue;
            }
            let name = src
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let target = dest.join(&name);
            let bytes = tokio::fs::copy(&src, &target)
                .await
                .map_err(|e| Error::io(format!("copying to {}", target.display()), e))?;
            artifacts.push(Artifact {
                name,
                path: target,
                bytes,
                entries: Vec::new(),
            });
        }
        if artifacts.is_empty() {
            return Err(Error::not_found(format!(
                "local job {} has no output files yet (state {})",
                row.id, row.state
            )));
        }
        Ok(artifacts)
    }

    async fn doctor(&self, report: CheckSink<'_>) {
        let probe = self.ctx.state_dir.join(".doctor-probe");
        match std::fs::write(&probe, b"ok") {
            Ok(()) => {
                let _ = std::fs::remove_file(&probe);
                report(Check::pass(
                    "state directory",
                    self.ctx.state_dir.display().to_string(),
                ));
            }
            Err(e) => report(Check::fail(
                "state directory",
                format!("{} is not writable: {e}", self.ctx.state_dir.display()),
            )),
        }
        match std::env::current_exe() {
            Ok(p) => report(Check::pass(
                "supervisor",
                format!("{} __supervise", p.display()),
            )),
            Err(e) => report(Check::fail("supervisor", e.to_string())),
        }
        report(if Path::new("/bin/sh").exists() {
            Check::pass("shell", "/bin/sh (for --opt shell=true)")
        } else {
            Check::fail("shell", "/bin/sh not found: --opt shell=true will fail")
        });
    }
}

/// Appends the bytes of `path` from `offset` to `out`; returns how many were copied.
async fn copy_from(path: &Path, offset: u64, out: LogSink<'_>) -> Result<u64> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Error::io(path.display(), e)),
    };
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| Error::io(path.display(), e))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .map_err(|e| Error::io(path.display(), e))?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])
            .await
            .map_err(|e| Error::io("writing output", e))?;
        total += n as u64;
    }
    out.flush()
        .await
        .map_err(|e| Error::io("writing output", e))?;
    Ok(total)
}
