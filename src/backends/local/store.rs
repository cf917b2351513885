//! The local job store: a SQLite table of jobs plus one directory of output files per job.

use crate::error::{Error, Result};
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One local job as stored.
#[derive(Debug, Clone)]
pub struct Row {
    /// Numeric id (the `ID` of `local:ID`).
    pub id: i64,
    /// Job name.
    pub name: Option<String>,
    /// Command and arguments.
    pub command: Vec<String>,
    /// Environment variables from `--arg`.
    pub env: Map<String, Value>,
    /// Working directory.
    pub workdir: Option<String>,
    /// Run through `sh -c`.
    pub shell: bool,
    /// `queued`, `running`, `succeeded`, `failed`, `canceled`.
    pub state: String,
    /// When submitted.
    pub created_at: DateTime<Utc>,
    /// When the command started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub ended_at: Option<DateTime<Utc>>,
    /// Exit code (128+n for signal n).
    pub exit_code: Option<i64>,
    /// Why it ended this way.
    pub reason: Option<String>,
    /// Process group of the command.
    pub pgid: Option<i64>,
    /// The supervisor's pid.
    pub supervisor_pid: Option<i64>,
    /// The supervisor's start time in clock ticks since boot (guards against pid reuse).
    pub supervisor_start: Option<i64>,
    /// Kernel boot id at submission (a reboot means the supervisor is gone).
    pub boot_id: Option<String>,
    /// A cancellation was requested.
    pub cancel_requested: bool,
    /// When cancellation was requested.
    pub cancel_at: Option<DateTime<Utc>>,
}

/// Handle to the local store.
#[derive(Debug)]
pub struct Store {
    conn: std::sync::Mutex<Connection>,
    root: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT,
    command TEXT NOT NULL,
    env TEXT NOT NULL,
    workdir TEXT,
    shell INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL,
    created_at TEXT NOT NULL,
    started_at TEXT,
    ended_at TEXT,
    exit_code INTEGER,
    reason TEXT,
    pgid INTEGER,
    supervisor_pid INTEGER,
    supervisor_start INTEGER,
    boot_id TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    cancel_at TEXT
);
";

const COLS: &str = "id, name, command, env, workdir, shell, state, created_at, started_at, ended_at, exit_code, reason, pgid, supervisor_pid, supervisor_start, boot_id, cancel_requested, cancel_at";

fn ts(s: Option<String>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn to_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    let command: String = r.get(2)?;
    let env: String = r.get(3)?;
    Ok(Row {
        id: r.get(0)?,
        name: r.get(1)?,
        command: serde_json::from_str(&command).unwrap_or_default(),
        env: serde_json::from_str(&env).unwrap_or_default(),
        workdir: r.get(4)?,
        shell: r.get::<_, i64>(5)? != 0,
        state: r.get(6)?,
        created_at: ts(r.get(7)?).unwrap_or_default(),
        started_at: ts(r.get(8)?),
        ended_at: ts(r.get(9)?),
        exit_code: r.get(10)?,
        reason: r.get(11)?,
        pgid: r.get(12)?,
        supervisor_pid: r.get(13)?,
        supervisor_start: r.get(14)?,
        boot_id: r.get(15)?,
        cancel_requested: r.get::<_, i64>(16)? != 0,
        cancel_at: ts(r.get(17)?),
    })
}

impl Store {
    /// Opens `<state_dir>/local/jobs.sqlite`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        let root = state_dir.join("local");
        std::fs::create_dir_all(root.join("jobs"))
            .map_err(|e| Error::io(format!("state directory {}", root.display()), e))?;
        let conn = Connection::open(root.join("jobs.sqlite"))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        // Stores made before idempotency keys were carried gain the column in place.
        let has_key: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'key'")?
            .exists([])?;
        if !has_key {
            // Several processes may open an old store at once: the one that loses the race
            // finds the column already there, which is the state it wanted.
            match conn.execute_batch("ALTER TABLE jobs ADD COLUMN key TEXT;") {
                Err(e) if e.to_string().contains("duplicate column name") => {}
                other => other?,
            }
        }
        conn.execute_batch("CREATE INDEX IF NOT EXISTS jobs_key ON jobs(key);")?;
        Ok(Store {
            conn: std::sync::Mutex::new(conn),
            root,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T> {
        let conn = self
            .conn
            .lock()
            .map_err(|_| Error::io("local store", "lock poisoned"))?;
        f(&conn).map_err(Error::from)
    }

    /// Directory holding a job's output files.
    pub fn job_dir(&self, id: i64) -> PathBuf {
        self.root.join("jobs").join(id.to_string())
    }

    /// Path of the job's stdout (or stderr) capture file.
    pub fn output_path(&self, id: i64, stderr: bool) -> PathBuf {
        let ext = if stderr { "err" } else { "out" };
        self.job_dir(id).join(format!("job-{id}.{ext}"))
    }

    /// Inserts a queued job, carrying the submission's idempotency key, and returns its id.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        key: Option<&str>,
        name: Option<&str>,
        command: &[String],
        env: &Map<String, Value>,
        workdir: Option<&str>,
        shell: bool,
        boot_id: Option<&str>,
    ) -> Result<i64> {
        let command = serde_json::to_string(command).map_err(|e| Error::io("local store", e))?;
        let env = serde_json::to_string(env).map_err(|e| Error::io("local store", e))?;
        let now = Utc::now().to_rfc3339();
        self.with(|c| {
            c.execute(
                "INSERT INTO jobs (name, command, env, workdir, shell, state, created_at, boot_id, key) VALUES (?1, ?2, ?3, ?4, ?5, 'queued', ?6, ?7, ?8)",
                params![name, command, env, workdir, shell as i64, now, boot_id, key],
            )?;
            Ok(c.last_insert_rowid())
        })
    }

    /// The newest job carrying idempotency key `key`, if any.
    pub fn find_key(&self, key: &str) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row(
                "SELECT id FROM jobs WHERE key = ?1 ORDER BY id DESC LIMIT 1",
                params![key],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// One job, if it exists.
    pub fn get(&self, id: i64) -> Result<Option<Row>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLS} FROM jobs WHERE id = ?1"),
                params![id],
                to_row,
            )
            .optional()
        })
    }

    /// Several jobs in one query.
    pub fn get_many(&self, ids: &[i64]) -> Result<Vec<Row>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let list = ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {COLS} FROM jobs WHERE id IN ({list})"))?;
            st.query_map([], to_row)?.collect()
        })
    }

    /// Newest jobs first.
    pub fn list(&self, limit: Option<usize>) -> Result<Vec<Row>> {
        let limit = limit.map(|l| l as i64).unwrap_or(-1);
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLS} FROM jobs ORDER BY id DESC LIMIT ?1"
            ))?;
            st.query_map(params![limit], to_row)?.collect()
        })
    }

    /// Records the supervisor process.
    pub fn set_supervisor(&self, id: i64, pid: i64, start: Option<i64>) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET supervisor_pid = ?1, supervisor_start = ?2 WHERE id = ?3",
                params![pid, start, id],
            )
        })?;
        Ok(())
    }

    /// Marks the command as started.
    pub fn set_running(&self, id: i64, pgid: i64) -> Result<()> {
        let now = Utc::now().to_rfc3339();
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = 'running', pgid = ?1, started_at = ?2 WHERE id = ?3 AND state = 'queued'",
                params![pgid, now, id],
            )
        })?;
        Ok(())
    }

    /// Records the end of a job, unless it already ended.
    pub fn set_ended(
        &self,
        id: i64,
        state: &str,
        exit_code: Option<i64>,
        reason: Option<&str>,
    ) -> Result<()> {
        let now = Utc::now().to_rfc3339();
        self.with(|c| {
            c.execute(
                "UPDATE jobs SET state = ?1, exit_code = ?2, reason = ?3, ended_at = ?4 WHERE id = ?5 AND state IN ('queued', 'running')",
                params![state, exit_code, reason, now, id],
            )
        })?;
        Ok(())
    }

    /// Records a cancellation request; false when the job had already ended.
    pub fn request_cancel(&self, id: i64) -> Result<bool> {
        let now = Utc::now().to_rfc3339();
        let n = self.with(|c| {
            c.execute(
                "UPDATE jobs SET cancel_requested = 1, cancel_at = COALESCE(cancel_at, ?1) WHERE id = ?2 AND state IN ('queued', 'running')",
                params![now, id],
            )
        })?;
        Ok(n > 0)
    }
}
