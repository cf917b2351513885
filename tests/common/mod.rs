//! The one harness every integration test uses: a simulator on a free port (on its own
//! runtime, so tests may block), a sandbox with its own state, home and working directory, a
//! `jobctl` command with one environment policy, in-process backends built from the same
//! variables the CLI reads, request counters and wait helpers with deadlines.
//!
//! Each test binary compiles this module and uses a part of it.
#![allow(dead_code)]

use jobctl::backend::{BackendContext, JobBackend};
use jobctl::config::{Config, ConfigFile, EnvSource, Profile};
use jobctl::model::Job;
use jobctl_sim::{SimConfig, SimHandle};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// How long any wait helper waits before it fails the test. A safety cap against hangs, not a
/// timing assertion: simulated jobs end in a second or two.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// Prefixes of every built-in profile's generic variables (`<P>_POLL_INTERVAL`, …).
pub const PROFILE_PREFIXES: [&str; 6] = [
    "LOCAL_",
    "CLOUDPSS_",
    "AC_",
    "OCTOPLANT_",
    "NEBULA_",
    "SLURM_",
];

// ---------------------------------------------------------------------------------------------
// The simulator

/// A jobctl-sim on a free loopback port, served by its own runtime thread so that a test may
/// block (run the `jobctl` binary, sleep) without starving it. Derefs to [`SimHandle`];
/// dropping it stops the server.
pub struct Sim {
    handle: Option<SimHandle>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Sim {
    /// Starts a simulator with `config` (its `listen` is forced to `127.0.0.1:0`).
    pub fn start(config: SimConfig) -> Sim {
        let config = SimConfig {
            listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            ..config
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("simulator runtime");
        // A channel instead of `block_on`, which refuses to run inside an async test.
        let (tx, rx) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            let _ = tx.send(jobctl_sim::start(config).await);
        });
        let handle = rx
            .recv()
            .expect("simulator task")
            .expect("simulator starts");
        Sim {
            handle: Some(handle),
            runtime: Some(runtime),
        }
    }

    /// Requests served so far for one `METHOD /path/pattern` (`GET /slurm/v0.0.38/jobs`).
    pub fn hits(&self, endpoint: &str) -> u64 {
        self.state.stats().get(endpoint).copied().unwrap_or(0)
    }

    /// Requests served so far, all endpoints together.
    pub fn total(&self) -> u64 {
        self.state.stats().values().sum()
    }

    /// Requests served so far to endpoints whose key contains `part`.
    pub fn hits_like(&self, part: &str) -> u64 {
        self.state
            .stats()
            .iter()
            .filter(|(k, _)| k.contains(part))
            .map(|(_, n)| n)
            .sum()
    }

    /// `GET path` on the simulator (its `/_sim/…` endpoints) as JSON, without an async client.
    pub fn get_json(&self, path: &str) -> Value {
        use std::io::{Read, Write};
        let mut conn = std::net::TcpStream::connect(self.addr).expect("simulator reachable");
        write!(
            conn,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("request sent");
        let mut raw = String::new();
        conn.read_to_string(&mut raw).expect("answer read");
        let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {raw}"))
    }

    /// Replaces the fault settings (`PUT /_sim/faults`) for the requests that follow.
    pub fn set_faults(&self, faults: jobctl_sim::Faults) {
        self.state.set_faults(faults);
    }
}

impl Deref for Sim {
    type Target = SimHandle;
    fn deref(&self) -> &SimHandle {
        self.handle.as_ref().expect("simulator running")
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        // `shutdown_background` is the one way to drop a runtime inside an async test.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// One endpoint's count in a snapshot of the simulator's counters (`sim.state.stats()`).
pub fn count(stats: &BTreeMap<String, u64>, endpoint: &str) -> u64 {
    stats.get(endpoint).copied().unwrap_or(0)
}

/// Starts a simulator with `config`.
pub fn sim(config: SimConfig) -> Sim {
    Sim::start(config)
}

/// Settings for tests that wait for jobs: 100 ms queued, 600 ms running.
pub fn quick() -> SimConfig {
    SimConfig {
        queue_duration: Duration::from_millis(100),
        job_duration: Duration::from_millis(600),
        ..SimConfig::default()
    }
}

/// A simulator with [`quick`] settings.
pub fn quick_sim() -> Sim {
    sim(quick())
}

// ---------------------------------------------------------------------------------------------
// In-process backends

/// Builds a backend the way the CLI does: a profile resolved from exactly these variables (no
/// process environment) and an optional config file, with a state directory.
#[derive(Debug, Clone)]
pub struct Setup {
    profile: String,
    vars: BTreeMap<String, String>,
    config: String,
}

impl Setup {
    /// The profile `name` (a built-in backend name, or one the config file defines).
    pub fn new(name: &str) -> Self {
        Setup {
            profile: name.to_string(),
            vars: BTreeMap::new(),
            config: String::new(),
        }
    }

    /// The built-in profile `name` pointed at `sim`, polling every 100 ms.
    pub fn sim(name: &str, sim: &SimHandle) -> Self {
        let mut s = Setup::new(name).vars(sim.env());
        for prefix in PROFILE_PREFIXES {
            s = s.var(&format!("{prefix}POLL_INTERVAL"), "100ms");
        }
        s
    }

    /// Adds variables.
    pub fn vars(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.vars.extend(vars);
        self
    }

    /// Sets one variable; an empty value removes it.
    pub fn var(mut self, key: &str, value: &str) -> Self {
        if value.is_empty() {
            self.vars.remove(key);
        } else {
            self.vars.insert(key.to_string(), value.to_string());
        }
        self
    }

    /// Sets variables (as [`Setup::var`]).
    pub fn with(mut self, vars: &[(&str, &str)]) -> Self {
        for (k, v) in vars {
            self = self.var(k, v);
        }
        self
    }

    /// Removes variables.
    pub fn without(mut self, keys: &[&str]) -> Self {
        for k in keys {
            self.vars.remove(*k);
        }
        self
    }

    /// The config file's text.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = toml.to_string();
        self
    }

    /// The resolved profile.
    pub fn profile(&self) -> jobctl::Result<Profile> {
        let config = Config {
            file: ConfigFile::parse(&self.config)?,
            env: EnvSource::fixed(self.vars.clone()),
        };
        config.profile(&self.profile)
    }

    /// The backend, or the error building it gave.
    pub fn build(&self, state_dir: &Path) -> jobctl::Result<Arc<dyn JobBackend>> {
        build_profile(self.profile()?, state_dir)
    }

    /// The backend (the test fails when it cannot be built).
    pub fn backend(&self, state_dir: &Path) -> Arc<dyn JobBackend> {
        self.build(state_dir)
            .unwrap_or_else(|e| panic!("profile {} builds: {e}", self.profile))
    }
}

/// Builds the backend of an already resolved profile.
pub fn build_profile(profile: Profile, state_dir: &Path) -> jobctl::Result<Arc<dyn JobBackend>> {
    jobctl::backend::build(BackendContext {
        profile,
        state_dir: state_dir.to_path_buf(),
    })
}

/// The built-in profile `name` pointed at `sim`, as a backend.
pub fn backend(sim: &SimHandle, name: &str, state_dir: &Path) -> Arc<dyn JobBackend> {
    Setup::sim(name, sim).backend(state_dir)
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// A backend as tests hold it: `Arc<dyn JobBackend>` or `&dyn JobBackend`.
pub trait AnyBackend {
    /// The backend itself.
    fn get(&self) -> &dyn JobBackend;
}

impl AnyBackend for Arc<dyn JobBackend> {
    fn get(&self) -> &dyn JobBackend {
        self.as_ref()
    }
}

impl AnyBackend for dyn JobBackend {
    fn get(&self) -> &dyn JobBackend {
        self
    }
}

/// Polls `f` until it returns `Some`, failing the test after `limit` with `what` in the message.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`eventually`] for blocking code (the CLI).
pub fn eventually_blocking<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "gave up after {limit:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Polls `status` until the job satisfies `done`; every read must succeed.
pub async fn wait_until(
    b: &(impl AnyBackend + ?Sized),
    id: &str,
    limit: Duration,
    done: impl Fn(&Job) -> bool,
) -> Job {
    let start = Instant::now();
    loop {
        let job = b.get().status(id).await.expect("status");
        if done(&job) {
            return job;
        }
        assert!(
            start.elapsed() < limit,
            "job {id} still {} after {limit:?}",
            job.state
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls until the job is terminal.
pub async fn wait_terminal(b: &(impl AnyBackend + ?Sized), id: &str) -> Job {
    wait_until(b, id, DEADLINE, |j| j.terminal).await
}

/// Polls until the job is terminal and returns every observation, in order.
pub async fn observe_until_terminal(b: &(impl AnyBackend + ?Sized), id: &str) -> Vec<Job> {
    let mut seen = Vec::new();
    let start = Instant::now();
    loop {
        let job = b.get().status(id).await.expect("status");
        let done = job.terminal;
        seen.push(job);
        if done {
            return seen;
        }
        assert!(start.elapsed() < DEADLINE, "job {id} did not end: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------------
// The jobctl binary

/// A directory of its own for one test: home, working directory (so no `.env` or config file
/// of the machine is read), `state/` as the state directory, `config/` as `XDG_CONFIG_HOME`.
/// Every `jobctl` it runs gets one environment policy: nothing of the caller's environment but
/// `PATH`; the variables given with [`Sandbox::sim`]/[`Sandbox::var`]; no colour; no progress.
pub struct Sandbox {
    dir: tempfile::TempDir,
    vars: Vec<(String, String)>,
    secrets: Vec<String>,
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

impl Sandbox {
    /// A sandbox for the local backend (or for tests that set their own variables).
    pub fn new() -> Self {
        Sandbox {
            dir: tempfile::tempdir().expect("temp dir"),
            vars: Vec::new(),
            secrets: Vec::new(),
        }
    }

    /// A sandbox whose built-in profiles point at `sim`, polling every 100 ms.
    pub fn with_sim(sim: &SimHandle) -> Self {
        Sandbox::new().sim(sim)
    }

    /// Points the built-in profiles at `sim`; its password must never show in any output.
    pub fn sim(mut self, sim: &SimHandle) -> Self {
        self.vars.extend(sim.env());
        for prefix in PROFILE_PREFIXES {
            self.vars
                .push((format!("{prefix}POLL_INTERVAL"), "100ms".into()));
        }
        self.secrets.push(sim.state.config.password.clone());
        self
    }

    /// Sets a variable for every command (after the simulator's, so it wins).
    pub fn var(mut self, key: &str, value: &str) -> Self {
        self.vars.push((key.to_string(), value.to_string()));
        self
    }

    /// Removes a variable the simulator set.
    pub fn without(mut self, key: &str) -> Self {
        self.vars.retain(|(k, _)| k != key);
        self
    }

    /// The sandbox directory (home and working directory).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The state directory.
    pub fn state(&self) -> PathBuf {
        self.path().join("state")
    }

    /// `program` under the policy (for scripts that run `jobctl` themselves).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
        let mut c = std::process::Command::new(program);
        c.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.path())
            .env("JOBCTL_STATE_DIR", self.state())
            .env("XDG_CONFIG_HOME", self.path().join("config"))
            .env("XDG_STATE_HOME", self.path().join("xdg-state"))
            .env("NO_COLOR", "1")
            .envs(self.vars.iter().cloned())
            .current_dir(self.path());
        c
    }

    /// `jobctl` under the policy, as a std command.
    pub fn std_cmd(&self) -> std::process::Command {
        let mut c = self.command(assert_cmd::cargo::cargo_bin("jobctl"));
        c.arg("--no-progress");
        c
    }

    /// `jobctl` under the policy, as an assert_cmd command (`write_stdin`, `assert`).
    pub fn cmd(&self) -> assert_cmd::Command {
        assert_cmd::Command::from_std(self.std_cmd())
    }

    /// Runs `jobctl ARGS` → (exit code, stdout, stderr). No secret may show in either stream.
    pub fn run(&self, args: &[&str]) -> (i32, String, String) {
        let out = self.std_cmd().args(args).output().expect("jobctl runs");
        self.checked(out)
    }

    /// Runs `jobctl ARGS` → its raw output (secrets checked as in [`Sandbox::run`]).
    pub fn output(&self, args: &[&str]) -> std::process::Output {
        let out = self.std_cmd().args(args).output().expect("jobctl runs");
        self.checked(out.clone());
        out
    }

    /// Runs a prepared command (from [`Sandbox::command`]) → (exit code, stdout, stderr).
    pub fn run_cmd(&self, mut cmd: std::process::Command) -> (i32, String, String) {
        self.checked(cmd.output().expect("jobctl runs"))
    }

    fn checked(&self, out: std::process::Output) -> (i32, String, String) {
        let stdout = text(&out.stdout);
        let stderr = text(&out.stderr);
        for s in &self.secrets {
            assert!(
                !stdout.contains(s.as_str()) && !stderr.contains(s.as_str()),
                "a secret shows in the output: {stdout} / {stderr}"
            );
        }
        (out.status.code().unwrap_or(-1), stdout, stderr)
    }

    /// Runs `jobctl -o json ARGS` and parses stdout (which must be one JSON value).
    pub fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["-o", "json"];
        all.extend_from_slice(args);
        let (code, out, err) = self.run(&all);
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("exit {code}: stdout is not JSON ({e}): {out} / {err}"))
    }

    /// `jobctl submit -o quiet ARGS`, which must succeed; returns the reference.
    pub fn submit(&self, args: &[&str]) -> String {
        let mut all = vec!["submit", "-o", "quiet"];
        all.extend_from_slice(args);
        let (code, out, err) = self.run(&all);
        assert_eq!(code, 0, "submit {args:?} failed: {err}");
        out.trim().to_string()
    }

    /// `jobctl -o json status REF`.
    pub fn status_json(&self, reference: &str) -> Value {
        self.json(&["status", reference])
    }

    /// Polls `status` until `pred` holds for the job.
    pub fn wait_state(&self, reference: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually_blocking(
            &format!("{reference} reaches the expected state"),
            DEADLINE,
            || Some(self.status_json(reference)).filter(|j| pred(j)),
        )
    }

    /// Polls `status` until the job is terminal.
    pub fn wait_terminal(&self, reference: &str) -> Value {
        self.wait_state(reference, |j| j["terminal"] == true)
    }

    /// Starts `jobctl -o ndjson ARGS` in the background; returns the child and its stdout's
    /// JSON lines as they come.
    pub fn spawn_ndjson(&self, args: &[&str]) -> (Child, Receiver<Value>) {
        let mut child = self
            .std_cmd()
            .args(["-o", "ndjson"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("jobctl starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        (child, rx)
    }
}

/// Bytes as text (lossy).
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every key a job object carries in `json`/`ndjson` output.
pub const JOB_KEYS: [&str; 17] = [
    "ref",
    "profile",
    "backend",
    "id",
    "name",
    "state",
    "native_state",
    "terminal",
    "created_at",
    "started_at",
    "ended_at",
    "exit_code",
    "reason",
    "owner",
    "queue",
    "progress",
    "extra",
];

/// Asserts `j` is a job object with exactly the documented keys.
pub fn assert_job_shape(j: &Value) {
    let obj = j
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {j}"));
    for k in JOB_KEYS {
        assert!(obj.contains_key(k), "job lacks key {k}: {j}");
    }
    assert_eq!(obj.len(), JOB_KEYS.len(), "unexpected keys: {j}");
}

/// The real Slurm cluster `scripts/slurm-up.sh` started: the variables of its
/// `JOBCTL_SLURM_ENV` file and the directory its jobs may write to. `None` (with SKIPPED said
/// on stderr) when there is none, unless `JOBCTL_REQUIRE_SLURM=1`, which makes that a failure.
pub fn real_slurm() -> Option<(std::collections::BTreeMap<String, String>, PathBuf)> {
    let skip = |why: &str| {
        if std::env::var("JOBCTL_REQUIRE_SLURM").is_ok_and(|v| v == "1") {
            panic!(
                "JOBCTL_REQUIRE_SLURM=1 but no Slurm cluster: {why} (run scripts/slurm-up.sh first)"
            );
        }
        // Straight to the descriptor: libtest's capture would hide a passing test's print.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: no Slurm cluster ({why}); run `bash scripts/slurm-up.sh` and set JOBCTL_SLURM_ENV"
        );
        None
    };
    let Ok(path) = std::env::var("JOBCTL_SLURM_ENV") else {
        return skip("JOBCTL_SLURM_ENV is not set");
    };
    let Ok(iter) = dotenvy::from_path_iter(&path) else {
        return skip(&format!("cannot read {path}"));
    };
    let vars: std::collections::BTreeMap<String, String> = iter.filter_map(|r| r.ok()).collect();
    for key in ["SLURM_REST_URL", "SLURM_USER_NAME", "SLURM_JWT"] {
        if !vars.contains_key(key) {
            return skip(&format!("{path} has no {key}"));
        }
    }
    let job_dir = PathBuf::from(
        vars.get("SLURM_TEST_JOB_DIR")
            .cloned()
            .unwrap_or_else(|| "/tmp".into()),
    );
    Some((vars, job_dir))
}
