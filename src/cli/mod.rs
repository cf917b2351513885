//! The command line: parses flags, resolves configuration, runs one command and hands its
//! [`Report`] to the printer. The process exit code is decided here, from the command's
//! outcome or from [`crate::error::ErrorKind::exit_code`].

pub mod args;
mod batch;
mod commands;
mod pipeline;
mod submission;

use crate::config::{Config, ConfigFile, EnvSource};
use crate::error::{Error, Result, exit};
use crate::output::{OutputMode, Printer, Report};
use crate::session::Session;
use args::{Cli, ColorMode};
use clap::Parser;
use std::path::PathBuf;

/// What a command returns: data for the printer and the exit code.
#[derive(Debug)]
pub struct Outcome {
    /// Data to render.
    pub report: Report,
    /// Exit code.
    pub code: i32,
}

impl Outcome {
    fn ok(report: Report) -> Self {
        Outcome {
            report,
            code: exit::SUCCESS,
        }
    }
}

/// Runs jobctl with the process arguments and returns the exit code.
pub fn main() -> i32 {
    // Everything jobctl writes (state directory, tokens, ledger) is owner-only.
    crate::config::restrict_umask();
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The supervisor is internal: parsed by hand so it never shows in help or completions.
    if argv.get(1).is_some_and(|a| a == "__supervise") {
        return supervise(&argv[2..]);
    }
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version (exit 0) and usage errors (exit 2) itself.
            let _ = e.print();
            if let Some(hint) = parse_hint(&e, &argv) {
                eprintln!("{hint}");
            }
            return if e.use_stderr() {
                exit::USAGE
            } else {
                exit::SUCCESS
            };
        }
    };
    init_tracing(cli.global.verbose, cli.global.color);
    // One thread: jobctl waits on the network, and cross-thread wake-ups cost more CPU per
    // request than they save (BENCHMARKS.md); blocking work goes to spawn_blocking.
    let mut builder = tokio::runtime::Builder::new_current_thread();
    let runtime = match builder.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("jobctl: error: cannot start the async runtime: {e}");
            return exit::UNAVAILABLE;
        }
    };
    let (printer, setup) = setup(&cli);
    let session = match setup {
        Ok(s) => s,
        Err(e) => {
            printer.error(&e);
            return e.exit_code();
        }
    };
    let result = runtime.block_on(commands::run(cli.command, &cli.global, &session, &printer));
    // Do not wait for stray blocking tasks (a follow reader) at exit.
    runtime.shutdown_background();
    match result {
        Ok(outcome) => {
            printer.render(outcome.report);
            outcome.code
        }
        Err(e) => {
            printer.error(&e);
            e.exit_code()
        }
    }
}

/// SIGINT, registered at once (the handler must exist before the first event is printed).
fn interrupt_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
}

/// Completes on Ctrl-C. The handler is registered when this is called, not on first poll, so
/// a Ctrl-C right after the first event is already caught.
pub fn interrupted() -> impl std::future::Future<Output = ()> {
    let mut sigint = interrupt_signal();
    async move {
        match sigint.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending::<()>().await,
        }
    }
}

/// A hint for the mistakes clap cannot explain: a command given to `submit` without `--`.
fn parse_hint(e: &clap::Error, argv: &[std::ffi::OsString]) -> Option<String> {
    use clap::error::ErrorKind as K;
    let submit = argv.iter().skip(1).any(|a| a == "submit");
    let has_dashes = argv.iter().any(|a| a == "--");
    if submit && !has_dashes && matches!(e.kind(), K::UnknownArgument | K::InvalidSubcommand) {
        return Some(
            "hint: the job's command goes after `--`, e.g. `jobctl submit -- echo hi`".into(),
        );
    }
    None
}

fn init_tracing(verbose: u8, color: ColorMode) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "warn",
        1 => "jobctl=info",
        2 => "jobctl=debug",
        _ => "jobctl=trace,reqwest=debug",
    };
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() && verbose == 0 => EnvFilter::new(v),
        _ => EnvFilter::new(default),
    };
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let ansi = match color {
        ColorMode::Always => true,
        ColorMode::Never => false,
        ColorMode::Auto => !no_color_env && std::io::stderr().is_terminal(),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(ansi)
        .try_init();
}

/// Resolves output mode, environment, config file, state directory and the selected profile.
fn setup(cli: &Cli) -> (Printer, Result<Session>) {
    let g = &cli.global;
    let env_result = match &g.env_file {
        Some(p) => EnvSource::load(Some(p), true),
        None => EnvSource::load(Some(&PathBuf::from(".env")), false),
    };
    let env_for_mode = env_result.clone().unwrap_or_default();
    let mode_result = match (g.output, env_for_mode.get("JOBCTL_OUTPUT")) {
        (Some(m), _) => Ok(m),
        (None, Some(v)) => <OutputMode as clap::ValueEnum>::from_str(&v, true).map_err(|_| {
            Error::usage(format!(
                "JOBCTL_OUTPUT='{v}' is not one of table, json, ndjson, quiet"
            ))
        }),
        (None, None) => Ok(OutputMode::Table),
    };
    let color = match g.color {
        ColorMode::Always => Some(true),
        ColorMode::Never => Some(false),
        ColorMode::Auto => None,
    };
    let printer = Printer::new(
        *mode_result.as_ref().unwrap_or(&OutputMode::Table),
        color,
        g.no_progress,
    );
    let session = (|| {
        mode_result?;
        let env = env_result?;
        let config_path = g.config.clone().or_else(|| Config::default_path(&env));
        let file = ConfigFile::load(
            config_path,
            g.config.is_some() || env.get("JOBCTL_CONFIG").is_some(),
        )?;
        let config = Config { file, env };
        let state_dir = match &g.state_dir {
            Some(p) => p.clone(),
            None => Config::default_state_dir(&config.env)?,
        };
        crate::config::secure_state_dir(&state_dir)?;
        let selected = select_profile(&config, g.profile.as_deref(), g.backend.as_deref())?;
        Ok(Session::new(config, state_dir, selected))
    })();
    (printer, session)
}

/// `-p` wins; `-b` picks the backend's built-in profile; then JOBCTL_PROFILE, default_profile,
/// `local`.
fn select_profile(config: &Config, profile: Option<&str>, backend: Option<&str>) -> Result<String> {
    let backend = backend
        .map(str::parse::<crate::config::BackendKind>)
        .transpose()?;
    match (profile, backend) {
        (Some(p), b) => {
            let resolved = config.profile(p)?;
            if let Some(b) = b {
                if resolved.backend != b {
                    return Err(Error::usage(format!(
                        "profile '{p}' uses backend {}, not {b}",
                        resolved.backend
                    )));
                }
            }
            Ok(resolved.name)
        }
        (None, Some(b)) => Ok(b.as_str().to_string()),
        (None, None) => {
            let name = config.default_profile_name();
            config.profile(&name)?;
            Ok(name)
        }
    }
}

/// `jobctl __supervise --state-dir DIR ID`, as the local backend starts it.
fn supervise(args: &[std::ffi::OsString]) -> i32 {
    let (Some(flag), Some(dir), Some(id)) = (args.first(), args.get(1), args.get(2)) else {
        eprintln!("jobctl: error: usage: jobctl __supervise --state-dir DIR ID");
        return exit::USAGE;
    };
    let Some(id) = id.to_str().and_then(|i| i.parse::<i64>().ok()) else {
        eprintln!("jobctl: error: __supervise: the job id must be a number");
        return exit::USAGE;
    };
    if flag != "--state-dir" {
        eprintln!("jobctl: error: usage: jobctl __supervise --state-dir DIR ID");
        return exit::USAGE;
    }
    let state_dir = PathBuf::from(dir);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(_) => return exit::UNAVAILABLE,
    };
    match rt.block_on(crate::backends::local::supervisor::run(&state_dir, id)) {
        Ok(()) => exit::SUCCESS,
        Err(e) => {
            eprintln!("jobctl: supervisor: {e}");
            e.exit_code()
        }
    }
}
