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
            Some(pid) if pid == i64::from(*PID) => true,
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
///
/// Reads go through one connection; the writes on the submission path (`begin`, `complete`,
/// `fail`, `unknown`) go to a writer thread that commits whatever has queued up meanwhile in
/// one transaction (group commit). Each caller still gets its answer only after its write is
/// committed, so "recorded before sent" holds, while a batch with many submissions in flight
/// pays for one commit per group instead of two per job.
#[derive(Debug)]
pub struct Ledger {
    conn: Mutex<Connection>,
    path: std::path::PathBuf,
    /// Started on the first write: read-only uses (history, status) need no thread.
    writer: Mutex<Option<std::sync::mpsc::Sender<Op>>>,
}

/// A write queued for the writer thread, with where its answer goes.
enum Op {
    Begin {
        profile: String,
        backend: String,
        key: Option<String>,
        name: Option<String>,
        spec: String,
        reply: tokio::sync::oneshot::Sender<Result<Begin>>,
    },
    Set {
        seq: i64,
        status: &'static str,
        job_id: Option<String>,
        error: Option<String>,
        reply: tokio::sync::oneshot::Sender<Result<()>>,
    },
}

/// Most writes committed in one transaction: bounds how long one group holds the database.
const MAX_GROUP: usize = 512;

/// How long the writer lets a burst of writes gather before committing it. Larger groups mean
/// fewer commits and fewer wake-ups of the submitting thread: 2 ms took about a tenth off
/// jobctl's CPU per submission against 0.2 ms (and 5 ms began to limit throughput). The wait
/// costs a submission no platform time, since `batch` does its ledger writes outside the
/// platform slots; a lone write (one `submit`) does not wait at all (see [`BUSY`]).
const GATHER: Duration = Duration::from_millis(2);

/// Writes closer together than this are a burst worth gathering ([`GATHER`]).
const BUSY: Duration = Duration::from_millis(10);

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
        let conn = connect(&path)?;
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
            path,
            writer: Mutex::new(None),
        })
    }

    /// The writer thread's queue, starting the thread on first use.
    fn writer(&self) -> Result<std::sync::mpsc::Sender<Op>> {
        let mut slot = self
            .writer
            .lock()
            .map_err(|_| Error::io("ledger", "lock poisoned"))?;
        if let Some(w) = slot.as_ref() {
            return Ok(w.clone());
        }
        let conn = connect(&self.path)?;
        let (writer, queue) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("jobctl-ledger".into())
            .spawn(move || write_groups(conn, queue))
            .map_err(|e| Error::io("ledger writer thread", e))?;
        *slot = Some(writer.clone());
        Ok(writer)
    }

    /// Queues a write and waits until the transaction holding it is committed.
    async fn write<T>(
        &self,
        op: impl FnOnce(tokio::sync::oneshot::Sender<Result<T>>) -> Op,
    ) -> Result<T> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.writer()?
            .send(op(reply))
            .map_err(|_| Error::io("ledger", "the ledger writer has stopped"))?;
        answer
            .await
            .map_err(|_| Error::io("ledger", "the ledger writer has stopped"))?
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
    pub async fn begin(&self, profile: &str, backend: &str, spec: &JobSpec) -> Result<Begin> {
        let spec_json = serde_json::to_string(spec).map_err(|e| Error::io("ledger", e))?;
        self.write(|reply| Op::Begin {
            profile: profile.to_string(),
            backend: backend.to_string(),
            key: spec.key.clone(),
            name: spec.name.clone(),
            spec: spec_json,
            reply,
        })
        .await
    }

    /// Marks a recorded submission as accepted with the platform's job id.
    pub async fn complete(&self, seq: i64, job_id: &str) -> Result<()> {
        self.set_status(seq, "submitted", Some(job_id), None).await
    }

    /// Marks a recorded submission as refused; its key becomes free again.
    pub async fn fail(&self, seq: i64, error: &str) -> Result<()> {
        self.set_status(seq, "failed", None, Some(error)).await
    }

    /// Marks a recorded submission as sent without a usable answer: the key stays taken
    /// until the platform is asked about it.
    pub async fn unknown(&self, seq: i64, error: &str) -> Result<()> {
        self.set_status(seq, "unknown", None, Some(error)).await
    }

    async fn set_status(
        &self,
        seq: i64,
        status: &'static str,
        job_id: Option<&str>,
        error: Option<&str>,
    ) -> Result<()> {
        self.write(|reply| Op::Set {
            seq,
            status,
            job_id: job_id.map(String::from),
            error: error.map(String::from),
            reply,
        })
        .await
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
                params![now, *PID, entry.seq, entry.status, entry.pid],
            )
        })?;
        Ok(n == 1)
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
            c.prepare_cached(&format!("SELECT {COLUMNS} FROM submissions WHERE profile = ?1 AND job_id = ?2 ORDER BY seq DESC LIMIT 1"))?
                .query_row(params![profile, id], row_to_entry)
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
            c.prepare_cached(BY_KEY)?
                .query_row(params![profile, key], row_to_entry)
                .optional()
        })
    }
}

/// A connection with the ledger's settings.
fn connect(path: &Path) -> Result<Connection> {
    let conn =
        Connection::open(path).map_err(|e| Error::io(format!("ledger {}", path.display()), e))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    // WAL lets readers proceed while one process writes; NORMAL sync is durable across
    // process crashes, which is what the ledger must survive.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    Ok(conn)
}

/// The writer thread: takes whatever writes have queued up, applies them in one transaction,
/// commits, then answers each. Ends when the ledger is dropped.
fn write_groups(mut conn: Connection, queue: std::sync::mpsc::Receiver<Op>) {
    let mut last_commit: Option<std::time::Instant> = None;
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        // Writes arrive in bursts (a batch's answers come in together): a moment's wait
        // gathers the rest of the burst into this commit instead of the next ones. A write
        // long after the last commit (one `submit`) is not part of a burst: it is committed
        // at once.
        if last_commit.is_some_and(|t| t.elapsed() < BUSY) {
            std::thread::sleep(GATHER);
        }
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let tx = match conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => {
                let e = Error::from(e);
                group.into_iter().for_each(|op| op.answer_error(&e));
                continue;
            }
        };
        // One write's failure (a constraint, say) is that write's answer; the group's
        // other writes still commit. A group is one moment: one timestamp serves all of it.
        let now = Utc::now().to_rfc3339();
        let answers: Vec<(Op, Result<Answer>)> = group
            .into_iter()
            .map(|op| {
                let r = apply(&tx, &op, &now);
                (op, r)
            })
            .collect();
        let committed = tx.commit();
        last_commit = Some(std::time::Instant::now());
        match committed {
            Ok(()) => answers.into_iter().for_each(|(op, r)| op.answer(r)),
            Err(e) => {
                let e = Error::from(e);
                answers.into_iter().for_each(|(op, _)| op.answer_error(&e));
            }
        }
    }
}

/// What one write produced, before it is handed back.
// Short-lived, one per write in a group: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
enum Answer {
    Begin(Begin),
    Done,
}

impl Op {
    fn answer(self, r: Result<Answer>) {
        match self {
            Op::Begin { reply, .. } => {
                let _ = reply.send(r.and_then(|a| match a {
                    Answer::Begin(b) => Ok(b),
                    Answer::Done => Err(Error::io("ledger", "unexpected answer")),
                }));
            }
            Op::Set { reply, .. } => {
                let _ = reply.send(r.map(|_| ()));
            }
        }
    }

    fn answer_error(self, e: &Error) {
        let copy = || Error::io("ledger", e.message.clone());
        match self {
            Op::Begin { reply, .. } => {
                let _ = reply.send(Err(copy()));
            }
            Op::Set { reply, .. } => {
                let _ = reply.send(Err(copy()));
            }
        }
    }
}

/// Applies one write inside the group's transaction.
fn apply(tx: &rusqlite::Transaction<'_>, op: &Op, now: &str) -> Result<Answer> {
    match op {
        Op::Begin {
            profile,
            backend,
            key,
            name,
            spec,
            ..
        } => {
            // A new key is the common case: insert first, and read the earlier row only when
            // the key turns out to be taken.
            let insert = || -> rusqlite::Result<usize> {
                tx.prepare_cached(
                    "INSERT INTO submissions (profile, backend, key, name, spec, status, submitted_at, updated_at, pid)
                     VALUES (?1, ?2, ?3, ?4, ?5, 'sending', ?6, ?6, ?7)
                     ON CONFLICT (profile, key) WHERE key IS NOT NULL DO NOTHING",
                )?
                .execute(params![profile, backend, key, name, spec, now, *PID])
            };
            if insert()? == 0 {
                let earlier = tx
                    .prepare_cached(BY_KEY)?
                    .query_row(params![profile, key], row_to_entry)?;
                if earlier.status != "failed" {
                    return Ok(Answer::Begin(Begin::Existing(earlier)));
                }
                // A refused submission frees its key: this one takes its place.
                tx.prepare_cached("DELETE FROM submissions WHERE seq = ?1")?
                    .execute(params![earlier.seq])?;
                insert()?;
            }
            Ok(Answer::Begin(Begin::New(tx.last_insert_rowid())))
        }
        Op::Set {
            seq,
            status,
            job_id,
            error,
            ..
        } => {
            tx.prepare_cached(
                "UPDATE submissions SET status = ?1, job_id = COALESCE(?2, job_id), error = ?3, updated_at = ?4 WHERE seq = ?5",
            )?
            .execute(params![status, job_id, error, now, seq])?;
            Ok(Answer::Done)
        }
    }
}

/// This process's id, recorded on the rows it is sending (read once: it is a system call).
static PID: std::sync::LazyLock<u32> = std::sync::LazyLock::new(std::process::id);

const COLUMNS: &str =
    "seq, profile, backend, key, name, spec, job_id, status, error, submitted_at, pid";

/// The entry of `(profile, key)`; the columns are [`COLUMNS`], spelled out so the statement
/// is a constant.
const BY_KEY: &str = "SELECT seq, profile, backend, key, name, spec, job_id, status, error, submitted_at, pid FROM submissions WHERE profile = ?1 AND key = ?2";

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
    fn the_key_lookup_reads_the_columns_row_to_entry_expects() {
        assert!(BY_KEY.starts_with(&format!("SELECT {COLUMNS} FROM")));
    }

    #[tokio::test]
    async fn keys_are_idempotent_per_profile_and_failures_free_them() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let spec = JobSpec {
            key: Some("k1".into()),
            ..JobSpec::default()
        };
        let Begin::New(seq) = l.begin("local", "local", &spec).await.unwrap() else {
            panic!("first submission must be new")
        };
        l.complete(seq, "17").await.unwrap();
        match l.begin("local", "local", &spec).await.unwrap() {
            Begin::Existing(e) => assert_eq!(e.reference.as_deref(), Some("local:17")),
            Begin::New(_) => panic!("duplicate key accepted"),
        }
        // Same key, other profile: independent.
        assert!(matches!(
            l.begin("other", "local", &spec).await.unwrap(),
            Begin::New(_)
        ));
        let spec2 = JobSpec {
            key: Some("k2".into()),
            ..JobSpec::default()
        };
        let Begin::New(seq2) = l.begin("local", "local", &spec2).await.unwrap() else {
            panic!()
        };
        l.fail(seq2, "refused").await.unwrap();
        assert!(matches!(
            l.begin("local", "local", &spec2).await.unwrap(),
            Begin::New(_)
        ));
        assert_eq!(l.find_id("17").unwrap().len(), 1);
        assert_eq!(l.history(Some(2)).unwrap().len(), 2);
    }

    #[tokio::test]
    async fn unknown_keys_stay_taken_and_only_one_process_claims_them() {
        let dir = tempfile::tempdir().unwrap();
        let l = Ledger::open(dir.path()).unwrap();
        let spec = JobSpec {
            key: Some("k".into()),
            ..JobSpec::default()
        };
        let Begin::New(seq) = l.begin("p", "local", &spec).await.unwrap() else {
            panic!("new")
        };
        l.unknown(seq, "answer lost").await.unwrap();
        let Begin::Existing(e) = l.begin("p", "local", &spec).await.unwrap() else {
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
