//! The ledger: a SQLite database (WAL) in the state directory recording every submission
//! *before* it is sent, so a crash between "sent" and "recorded" leaves a trace, `submit --key`
//! is idempotent, and `history` works across profiles.

use crate::error::{Error, Result};
use crate::model::JobSpec;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

/// One recorded submission.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// Ledger sequence number.
    pub seq: i64,
    /// `PROFILE:ID` once the platform accepted the job.
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// Profile submitted to.
    pub profile: String,
    /// Backend of that profile.
    pub backend: String,
    /// Platform job id, once known.
    pub id: Option<String>,
    /// Idempotency key.
    pub key: Option<String>,
    /// Job name from the spec.
    pub name: Option<String>,
    /// `sending` (recorded, a process is sending it), `submitted`, `failed` (refused: the key
    /// is free again) or `unknown` (sent, but no usable answer came back).
    pub status: String,
    /// Error text of a failed submission.
    pub error: Option<String>,
    /// When the submission was recorded.
    pub submitted_at: DateTime<Utc>,
    /// The spec as submitted.
    pub spec: serde_json::Value,
    /// The process that recorded a `sending` row (to tell an in-flight one from a dead one).
    #[serde(skip)]
    pub pid: Option<i64>,
}

impl Entry {
    /// Whether this `sending` row belongs to a live process (this one — another line of the
    /// same batch — or another jobctl sending the same key right now), as opposed to one that
    /// died mid-send.
    pub fn in_flight(&self) -> bool {
        if self.status != "sending" {
            return false;
        }
        match self.pid {
            Some(pid) if pid == i64::from(std::process::id()) => true,
            Some(pid) => i32::try_from(pid)
                .is_ok_and(|p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok()),
            None => false,
        }
    }
}

/// Result of [`Ledger::begin`].
// One value per invocation, never stored in bulk: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Begin {
    /// A new row was recorded; send the job, then call `complete` or `fail`.
    New(i64),
    /// The key was already submitted: this is the earlier submission.
    Existing(Entry),
}

/// Handle to the ledger database.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS submissions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    profile TEXT NOT NULL,
    backend TEXT NOT NULL,
    key TEXT,
    name TEXT,
    spec TEXT NOT NULL,
    job_id TEXT,
    status TEXT NOT NULL,
    error TEXT,
    submitted_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS submissions_profile_key ON submissions(profile, key) WHERE key IS NOT NULL;
CREATE INDEX IF NOT EXISTS submissions_job_id ON submissions(job_id);
";

/// Columns added after the first release, created in place on older ledgers.
const MIGRATIONS: &[(&str, &str)] = &[("pid", "ALTER TABLE submissions ADD COLUMN pid INTEGER")];

impl Ledger {
    /// Opens (creating if needed) `<state_dir>/ledger.sqlite`.
    pub fn open(state_dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::io(format!("state directory {}", state_dir.display()), e))?;
        let path = state_dir.join("ledger.sqlite");
        let conn = Connection::open(&path)
            .map_err(|e| Error::io(format!("ledger {}", path.display()), e))?;
        conn.busy_timeout(Duration::from_secs(30))?;
        // WAL lets readers proceed while one process writes; NORMAL sync is durable across
        // process crashes, which is what the ledger must survive.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.execute_batch(SCHEMA)?;
        for (column, sql) in MIGRATIONS {
            let present = conn
                .prepare("SELECT 1 FROM pragma_table_info('submissions') WHERE name = ?1")?
                .exists([column])?;
            if !present {
                conn.execute_batch(sql)?;
            }
        }
        Ok(Ledger {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>) -> Result<T> {
        let mut conn = self
            .conn
            .lock()
            .map_err(|_| Error::io("ledger", "lock poisoned"))?;
        f(&mut conn).map_err(Error::from)
    }

    /// Records a submission about to be sent. With a key already recorded for this profile,
    /// returns the earlier entry instead (submitted, in flight or of unknown outcome); a key
    /// whose earlier submission was refused is reused.
    pub fn begin(&self, profile: &str, backend: &str, spec: &JobSpec) -> Result<Begin> {
        let spec_json = serde_json::to_string(spec).map_err(|e| Error::io("ledger", e))?;
        let now = Utc::now().to_rfc3339();
        let outcome = self.with(|conn| {
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            if let Some(key) = &spec.key {
                let existing = tx
                    .query_row(
                        &format!("SELECT {COLUMNS} FROM submissions WHERE profile = ?1 AND key = ?2"),
                        params![profile, key],
                        row_to_entry,
                    )
                    .optional()?;
                match existing {
                    Some(e) if e.status == "failed" => {
                        tx.execute("DELETE FROM submissions WHERE seq = ?1", params![e.seq])?;
                    }
                    Some(e) => {
                        tx.commit()?;
                        return Ok(Begin::Existing(e));
                    }
                    None => {}
                }
            }
            tx.execute(
                "INSERT INTO submissions (profile, backend, key, name, spec, status, submitted_at, updated_at, pid)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'sending', ?6, ?6, ?7)",
                params![profile, backend, spec.key, spec.name, spec_json, now, std::process::id()],
            )?;
            let seq = tx.last_insert_rowid();
            tx.commit()?;
            Ok(Begin::New(seq))
        })?;
        Ok(outcome)
    }

    /// Marks a recorded submission as accepted with the platform's job id.
    pub fn complete(&self, seq: i64, job_id: &str) -> Result<()> {
        let now = Utc::now().to_rfc3339();
        self.with(|c| {
            c.execute(
                "UPDATE submissions SET job_id = ?1, status = 'submitted', updated_at = ?2 WHERE seq = ?3",
                params![job_id, now, seq],
            )
        })?;
        Ok(())
    }

    /// Marks a recorded submission as refused; its key becomes free again.
    pub fn fail(&self, seq: i64, error: &str) -> Result<()> {
        self.set_status(seq, "failed", Some(error))
    }

    /// Marks a recorded submission as sent without a usable answer: the key stays taken
    /// until the platform is asked about it.
    pub fn unknown(&self, seq: i64, error: &str) -> Result<()> {
        self.set_status(seq, "unknown", Some(error))
    }

    /// Takes over a `sending`/`unknown` row to send it again (the platform certainly does not
    /// hold it, or the user asked to resubmit), recording this process as its sender. False
    /// when the row changed since `entry` was read (another process claimed it first).
    pub fn claim(&self, entry: &Entry) -> Result<bool> {
        let now = Utc::now().to_rfc3339();
        let n = self.with(|c| {
            c.execute(
                "UPDATE submissions SET status = 'sending', error = NULL, updated_at = ?1, pid = ?2
                 WHERE seq = ?3 AND status = ?4 AND pid IS ?5",
                params![now, std::process::id(), entry.seq, entry.status, entry.pid],
            )
        })?;
        Ok(n == 1)
    }

    fn set_status(&self, seq: i64, status: &str, error: Option<&str>) -> Result<()> {
        let now = Utc::now().to_rfc3339();
        self.with(|c| {
            c.execute(
                "UPDATE submissions SET status = ?1, error = ?2, updated_at = ?3 WHERE seq = ?4",
                params![status, error, now, seq],
            )
        })?;
        Ok(())
    }

    /// Most recent submissions across profiles, newest first.
    pub fn history(&self, limit: Option<usize>) -> Result<Vec<Entry>> {
        let limit = limit.map(|l| l as i64).unwrap_or(-1);
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM submissions ORDER BY seq DESC LIMIT ?1"
            ))?;
            st.query_map(params![limit], row_to_entry)?.collect()
        })
    }

    /// Accepted submissions of one profile, newest first.
    pub fn for_profile(&self, profile: &str, limit: Option<usize>) -> Result<Vec<Entry>> {
        let limit = limit.map(|l| l as i64).unwrap_or(-1);
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM submissions WHERE profile = ?1 AND job_id IS NOT NULL ORDER BY seq DESC LIMIT ?2"
            ))?;
            st.query_map(params![profile, limit], row_to_entry)?.collect()
        })
    }

    /// Accepted submissions whose platform id is `id`, in any profile.
    pub fn find_id(&self, id: &str) -> Result<Vec<Entry>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM submissions WHERE job_id = ?1 ORDER BY seq DESC"
            ))?;
            st.query_map(params![id], row_to_entry)?.collect()
        })
    }

    /// The accepted submission of `id` in `profile`, if this machine made it.
    pub fn get(&self, profile: &str, id: &str) -> Result<Option<Entry>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM submissions WHERE profile = ?1 AND job_id = ?2 ORDER BY seq DESC LIMIT 1"),
                params![profile, id],
                row_to_entry,
            )
            .optional()
        })
    }

    /// Submissions of `profile` whose outcome is not settled (`unknown`, or `sending` — in
    /// flight, or left so by a process that died), so a re-run can look them up in bulk.
    pub fn unsettled(&self, profile: &str) -> Result<Vec<Entry>> {
        self.with(|c| {
            let mut st = c.prepare(&format!(
                "SELECT {COLUMNS} FROM submissions WHERE profile = ?1 AND status IN ('unknown', 'sending') AND key IS NOT NULL"
            ))?;
            st.query_map(params![profile], row_to_entry)?.collect()
        })
    }

    /// The entry with this idempotency key in `profile`, if any.
    pub fn by_key(&self, profile: &str, key: &str) -> Result<Option<Entry>> {
        self.with(|c| {
            c.query_row(
                &format!("SELECT {COLUMNS} FROM submissions WHERE profile = ?1 AND key = ?2"),
                params![profile, key],
                row_to_entry,
            )
            .optional()
        })
    }
}

const COLUMNS: &str =
    "seq, profile, backend, key, name, spec, job_id, status, error, submitted_at, pid";

fn row_to_entry(row: &rusqlite::Row<'_>) -> rusqlite::Result<Entry> {
    let profile: String = row.get(1)?;
    let id: Option<String> = row.get(6)?;
    let spec_text: String = row.get(5)?;
    let submitted: String = row.get(9)?;
    Ok(Entry {
        seq: row.get(0)?,
        reference: id.as_ref().map(|i| format!("{profile}:{i}")),
        backend: row.get(2)?,
        key: row.get(3)?,
        name: row.get(4)?,
        spec: serde_json::from_str(&spec_text).unwrap_or(serde_json::Value::Null),
        id,
        status: row.get(7)?,
        error: row.get(8)?,
        submitted_at: DateTime::parse_from_rfc3339(&submitted)
            .map(|d| d.with_timezone(&Utc))
            .unwrap_or_default(),
        pid: row.get(10)?,
        profile,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_idempotent_per_profile_and_failures_free_them() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let spec = JobSpec {
            key: Some("k1".into()),
            ..JobSpec::default()
        };
        let Begin::New(seq) = l.begin("local", "local", &spec).unwrap() else {
            panic!("first submission must be new")
        };
        l.complete(seq, "17").unwrap();
        match l.begin("local", "local", &spec).unwrap() {
            Begin::Existing(e) => assert_eq!(e.reference.as_deref(), Some("local:17")),
            Begin::New(_) => panic!("duplicate key accepted"),
        }
        // Same key, other profile: independent.
        assert!(matches!(
            l.begin("other", "local", &spec).unwrap(),
            Begin::New(_)
        ));
        let spec2 = JobSpec {
            key: Some("k2".into()),
            ..JobSpec::default()
        };
        let Begin::New(seq2) = l.begin("local", "local", &spec2).unwrap() else {
            panic!()
        };
        l.fail(seq2, "refused").unwrap();
        assert!(matches!(
            l.begin("local", "local", &spec2).unwrap(),
            Begin::New(_)
        ));
        assert_eq!(l.find_id("17").unwrap().len(), 1);
        assert_eq!(l.history(Some(2)).unwrap().len(), 2);
    }

    #[test]
    fn unknown_keys_stay_taken_and_only_one_process_claims_them() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let spec = JobSpec {
            key: Some("k".into()),
            ..JobSpec::default()
        };
        let Begin::New(seq) = l.begin("p", "local", &spec).unwrap() else {
            panic!("new")
        };
        l.unknown(seq, "answer lost").unwrap();
        let Begin::Existing(e) = l.begin("p", "local", &spec).unwrap() else {
            panic!("an unknown outcome must not free its key")
        };
        assert_eq!(e.status, "unknown");
        assert!(!e.in_flight());
        assert!(l.claim(&e).unwrap(), "the first claim wins");
        assert!(!l.claim(&e).unwrap(), "a stale read cannot claim it again");
        let now = l.by_key("p", "k").unwrap().unwrap();
        assert_eq!(now.status, "sending");
        // Sent by this very process: in flight, to be waited for rather than raced.
        assert!(now.in_flight());
    }
}
