//! Command-line definitions (clap derive). Every command carries help text and an example.

use crate::output::OutputMode;
use crate::report::ReportTarget;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

const EXAMPLES: &str = "Examples:
  jobctl submit --wait -- echo hello            run a local job and wait for it
  jobctl -b cloudpss submit --opt function=function/CloudPSS/hello --arg message=hi --wait
  jobctl list --state running                   jobs of the selected profile
  jobctl watch local:17 cloudpss:9f1c           wait for jobs on several platforms
  jobctl -o ndjson wait local:17                machine-readable event stream

Exit codes: 0 ok, 1 a job failed, 2 usage/invalid input, 3 timeout, 4 auth refused,
5 a job was canceled, 6 not found, 7 platform unreachable/unusable, 8 not supported,
130 interrupted.";

/// Help heading of the flags every command takes, so a command's own flags come first.
const GLOBAL: &str = "Global options";

/// Backend names `-b` takes (aliases included), offered by shell completion.
pub const BACKENDS: [&str; 8] = [
    "local",
    "cloudpss",
    "ac",
    "scnet",
    "hpc",
    "octoplant",
    "nebula",
    "slurm",
];

/// State names `list --state` takes, offered by shell completion.
fn state_values() -> clap::builder::PossibleValuesParser {
    use clap::builder::PossibleValue;
    clap::builder::PossibleValuesParser::new([
        PossibleValue::new("queued").alias("pending"),
        PossibleValue::new("running"),
        PossibleValue::new("suspended"),
        PossibleValue::new("cancelling").alias("canceling"),
        PossibleValue::new("succeeded").aliases(["success", "completed"]),
        PossibleValue::new("failed"),
        PossibleValue::new("canceled").alias("cancelled"),
        PossibleValue::new("unknown"),
    ])
}

/// jobctl: submit, list, inspect, abort and watch jobs on CloudPSS, AC/SCNet, octoplant,
/// NebulaGraph Explorer, Slurm and local processes.
#[derive(Debug, Parser)]
#[command(name = "jobctl", version, after_help = EXAMPLES, propagate_version = true)]
pub struct Cli {
    /// Global flags.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags valid before or after any subcommand.
#[derive(Debug, Args, Clone)]
pub struct GlobalArgs {
    /// Profile to use (else JOBCTL_PROFILE, else default_profile, else local).
    #[arg(short, long, global = true, value_name = "NAME", help_heading = GLOBAL)]
    pub profile: Option<String>,
    /// Use the built-in profile of this backend.
    #[arg(short, long, global = true, value_name = "NAME", help_heading = GLOBAL,
          value_parser = clap::builder::PossibleValuesParser::new(BACKENDS))]
    pub backend: Option<String>,
    /// Output format (env JOBCTL_OUTPUT) [default: table].
    #[arg(short, long, global = true, value_enum, value_name = "MODE", help_heading = GLOBAL)]
    pub output: Option<OutputMode>,
    /// Config file (else JOBCTL_CONFIG, else $XDG_CONFIG_HOME/jobctl/config.toml).
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub config: Option<PathBuf>,
    /// Environment file (default: ./.env when present).
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub env_file: Option<PathBuf>,
    /// State directory (env JOBCTL_STATE_DIR; default $XDG_STATE_HOME/jobctl).
    #[arg(long, global = true, value_name = "PATH", help_heading = GLOBAL)]
    pub state_dir: Option<PathBuf>,
    /// More logging to stderr (-v info, -vv debug, -vvv trace); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Never show progress bars or spinners.
    #[arg(long, global = true, help_heading = GLOBAL)]
    pub no_progress: bool,
    /// Colour on stdout and in logs (NO_COLOR is honoured in auto mode).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "auto",
        value_name = "WHEN",
        help_heading = GLOBAL
    )]
    pub color: ColorMode,
}

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorMode {
    /// Colour when stdout is a terminal and NO_COLOR is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// The commands.
// One value per invocation, never stored in bulk: variant sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Submit one job and print its reference.
    #[command(after_help = "Examples:
  jobctl submit -- echo hello
  jobctl submit --name build --opt workdir=/tmp --arg GREETING=hi --wait -- sh -c 'echo $GREETING'
  jobctl submit --opt shell=true -- 'sleep 2; echo done'
  jobctl -b cloudpss submit --function function/CloudPSS/hello --arg message=hi --wait
  jobctl submit --spec job.json --key nightly-2026-11-21")]
    Submit(SubmitArgs),
    /// Show the current state of jobs.
    #[command(after_help = "Examples:
  jobctl status local:17
  jobctl -o json status local:17 local:18")]
    Status {
        /// Job references (PROFILE:ID, or an ID of the selected profile).
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
    },
    /// List jobs of the selected profile, newest first.
    #[command(after_help = "Examples:
  jobctl list
  jobctl -b slurm list --state running --state queued
  jobctl list --all -o ndjson")]
    List {
        /// Only jobs in this state (repeatable or comma-separated).
        #[arg(long = "state", value_name = "STATE", value_delimiter = ',', value_parser = state_values())]
        states: Vec<String>,
        /// At most N jobs [default: 50].
        #[arg(long, value_name = "N", conflicts_with = "all")]
        limit: Option<usize>,
        /// Every job (follows every page).
        #[arg(long)]
        all: bool,
        /// Backend listing option KEY=VALUE (nebula: workflow=ID lists one workflow's jobs).
        #[arg(long = "opt", value_name = "KEY=VALUE")]
        opts: Vec<String>,
    },
    /// Request cancellation of jobs.
    #[command(
        visible_alias = "cancel",
        after_help = "Examples:
  jobctl abort local:17
  jobctl cancel --wait --timeout 1m local:17 local:18
  jobctl abort --force local:17                 no grace period"
    )]
    Abort {
        /// Job references.
        #[arg(required = true, value_name = "REF")]
        refs: Vec<String>,
        /// Wait until each job is terminal.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 3).
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        /// Kill at once (local: SIGKILL, no grace period) where the backend can.
        #[arg(long)]
        force: bool,
    },
    /// Wait for jobs, showing live progress on a terminal.
    #[command(after_help = "Examples:
  jobctl watch local:17
  jobctl watch --timeout 10m --fail-fast ac:1638523853.35919 ac:1638523853.35920
  jobctl -o ndjson watch local:17 | jq -c 'select(.event==\"state\")'")]
    Watch(WatchArgs),
    /// Wait for jobs without the live display (for scripts).
    #[command(after_help = "Examples:
  jobctl wait local:17 && echo ok
  jobctl wait --any --timeout 30m slurm:101 slurm:102")]
    Wait(WatchArgs),
    /// Print a job's output.
    #[command(after_help = "Examples:
  jobctl logs local:17
  jobctl logs --follow local:17
  jobctl logs --stderr ac:1638523853.35919")]
    Logs {
        /// Job reference.
        #[arg(value_name = "REF")]
        reference: String,
        /// Keep printing until the job ends.
        #[arg(short, long)]
        follow: bool,
        /// The error stream instead of the output.
        #[arg(long)]
        stderr: bool,
    },
    /// Download a job's artifacts.
    #[command(after_help = "Examples:
  jobctl fetch local:17 --dest out/
  jobctl fetch octoplant:5550b2ea-1294-4bdc-aae1-0a8c85e9d5a7 --dest exports/")]
    Fetch {
        /// Job reference.
        #[arg(value_name = "REF")]
        reference: String,
        /// Directory to write into (created if needed).
        #[arg(long, value_name = "PATH", default_value = ".")]
        dest: PathBuf,
    },
    /// Submit every job spec of a JSON-lines file.
    #[command(after_help = "Examples:
  jobctl batch jobs.jsonl
  jobctl batch jobs.jsonl --concurrency 8 --wait --timeout 1h -o ndjson
  jobctl batch pipeline.jsonl --dry-run
  jobctl batch pipeline.jsonl --wait --report junit=report.xml --report github")]
    Batch {
        /// JSON-lines file, one job spec per line (`-` for stdin).
        #[arg(value_name = "FILE")]
        file: PathBuf,
        /// Submissions in flight at once [default: 16 for remote platforms, 4 when a line
        /// runs on the local backend; in a pipeline (after/retries): 4 per profile].
        #[arg(long, value_name = "N")]
        concurrency: Option<usize>,
        /// Journal of outcomes, so a re-run skips what was done [default: FILE.journal].
        #[arg(long, value_name = "PATH")]
        journal: Option<PathBuf>,
        /// Wait for every submitted job, running `after`/`retries` lines as a pipeline.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (exit 3).
        #[arg(long, value_name = "DUR")]
        timeout: Option<String>,
        /// Start a new run of a file that was run before: fresh derived keys, so every line
        /// is submitted again.
        #[arg(long)]
        new_run: bool,
        /// Send again the lines whose earlier submission has an unknown outcome on platforms
        /// that cannot be searched by key (may create a duplicate).
        #[arg(long)]
        resubmit_unknown: bool,
        /// Validate the file and print the order (levels) its lines would run in; send nothing.
        #[arg(long, conflicts_with = "wait")]
        dry_run: bool,
        /// With --wait: write a CI report, junit=PATH or github (repeatable).
        #[arg(long = "report", value_name = "KIND", requires = "wait")]
        reports: Vec<ReportTarget>,
    },
    /// Jobs this machine submitted, from the ledger, across profiles.
    #[command(after_help = "Examples:
  jobctl history
  jobctl history --limit 5 -o json")]
    History {
        /// At most N entries.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
    },
    /// Obtain and cache a profile's token.
    #[command(after_help = "Example:\n  jobctl login cloudpss")]
    Login {
        /// Profile [default: the selected one].
        profile: Option<String>,
    },
    /// Forget a profile's cached token.
    #[command(after_help = "Example:\n  jobctl logout cloudpss")]
    Logout {
        /// Profile [default: the selected one].
        profile: Option<String>,
    },
    /// List configured profiles.
    #[command(after_help = "Example:\n  jobctl profiles -o json")]
    Profiles,
    /// List the queues, partitions or job policies a profile may submit to, with their limits.
    #[command(after_help = "Examples:\n  jobctl -b ac queues\n  jobctl queues cloudpss -o json")]
    Queues {
        /// Profile [default: the selected one].
        profile: Option<String>,
    },
    /// Check reachability, authentication and API version of a profile.
    #[command(after_help = "Examples:\n  jobctl doctor\n  jobctl doctor cloudpss")]
    Doctor {
        /// Profile [default: the selected one].
        profile: Option<String>,
    },
    /// Print a shell completion script (it completes commands, flags, backend names, states
    /// and the profile names configured when it is generated).
    #[command(
        after_help = "Example:\n  jobctl completions bash > ~/.local/share/bash-completion/completions/jobctl"
    )]
    Completions {
        /// Shell.
        shell: clap_complete::Shell,
    },
}

/// Flags of `submit`.
#[derive(Debug, Args, Clone, Default)]
pub struct SubmitArgs {
    /// Job name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// Job argument / input KEY=VALUE (repeatable). Environment variables (local, slurm) get
    /// VALUE exactly as typed; JSON backends (cloudpss, nebula) parse it as JSON when it parses.
    #[arg(long = "arg", value_name = "KEY=VALUE")]
    pub args: Vec<String>,
    /// Backend option KEY=VALUE (repeatable; a repeated KEY collects an array).
    #[arg(long = "opt", value_name = "KEY=VALUE")]
    pub opts: Vec<String>,
    /// JSON job spec file, or `-` for stdin (flags override it).
    #[arg(long, value_name = "FILE")]
    pub spec: Option<String>,
    /// Idempotency key: if already submitted for this profile, print that job instead.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// Shorthand for --opt function=RID (cloudpss).
    #[arg(long, value_name = "RID")]
    pub function: Option<String>,
    /// Shorthand for --opt queue=Q.
    #[arg(long, value_name = "Q")]
    pub queue: Option<String>,
    /// Shorthand for --opt workflow=ID (nebula).
    #[arg(long, value_name = "ID")]
    pub workflow: Option<String>,
    /// Shorthand for --opt export=KIND (octoplant; repeatable).
    #[arg(long, value_name = "KIND")]
    pub export: Vec<String>,
    /// Shorthand for --opt partition=P (slurm).
    #[arg(long, value_name = "P")]
    pub partition: Option<String>,
    /// Upload LOCAL (a file, or a directory recursively) into the job's working directory
    /// before submitting, as REMOTE (relative to the working directory unless absolute).
    /// Repeatable; backends that stage files (ac).
    #[arg(long = "upload", value_name = "LOCAL[:REMOTE]")]
    pub uploads: Vec<String>,
    /// Wait for the job like `watch`.
    #[arg(long)]
    pub wait: bool,
    /// With --key: send again a submission whose earlier outcome is unknown on a platform
    /// that cannot be searched by key (may create a duplicate).
    #[arg(long, requires = "key")]
    pub resubmit_unknown: bool,
    /// With --wait: fetch the artifacts into this directory once the job succeeded.
    #[arg(long, value_name = "DIR", requires = "wait")]
    pub fetch: Option<PathBuf>,
    /// With --wait: submit a failed job again up to N times (keys KEY#2, KEY#3…).
    #[arg(long, value_name = "N", requires = "wait", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(crate::pipeline::MAX_RETRIES)))]
    pub retries: u32,
    /// With --wait: write a CI report, junit=PATH or github (repeatable).
    #[arg(long = "report", value_name = "KIND", requires = "wait")]
    pub reports: Vec<ReportTarget>,
    /// Wait options.
    #[command(flatten)]
    pub watch: WaitTuning,
    /// The command and its arguments, after `--`.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Polling flags shared by watch, wait and submit --wait.
#[derive(Debug, Args, Clone, Default)]
pub struct WaitTuning {
    /// Give up after this long (exit 3).
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<String>,
    /// First polling interval, at least 100ms [default: the profile's poll_interval].
    #[arg(long, value_name = "DUR")]
    pub interval: Option<String>,
    /// Largest polling interval.
    #[arg(long, value_name = "DUR", default_value = "30s")]
    pub max_interval: String,
    /// Give up (exit 7) when a platform answers nothing for this long.
    #[arg(long, value_name = "DUR", default_value = "5m")]
    pub unreachable_timeout: String,
}

/// Flags of watch and wait.
#[derive(Debug, Args, Clone)]
pub struct WatchArgs {
    /// Job references.
    #[arg(required_unless_present = "from", value_name = "REF")]
    pub refs: Vec<String>,
    /// Read references from FILE (`-` for stdin): one per line, or JSON lines carrying a
    /// `ref` (the ndjson output of `batch`, `submit`, `watch`).
    #[arg(long, value_name = "FILE")]
    pub from: Option<std::path::PathBuf>,
    /// Polling options.
    #[command(flatten)]
    pub tuning: WaitTuning,
    /// Return once any one job is terminal, with that job's code.
    #[arg(long)]
    pub any: bool,
    /// Return as soon as one job fails or is canceled.
    #[arg(long)]
    pub fail_fast: bool,
    /// Write a CI report once the wait ends: junit=PATH or github (repeatable).
    #[arg(long = "report", value_name = "KIND")]
    pub reports: Vec<ReportTarget>,
}
