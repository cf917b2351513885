//! jobctl: submit, list, inspect, abort and watch jobs on very different platforms behind one
//! [`backend::JobBackend`] trait.
//!
//! - [`model`]: the normalised job, state and spec types every backend speaks.
//! - [`backend`]: the trait and the registry that builds a backend from a profile.
//! - [`config`]: profiles from the config file and environment.
//! - [`http`]: retries, backoff, token cache and pagination, shared by the remote backends.
//! - [`backends`]: one folder per platform.
//! - [`ledger`]: the local SQLite record of every submission.
//! - [`watch`]: the polling engine behind `watch`, `wait` and `submit --wait`.
//! - [`pipeline`]: `after`/`retries` of batch files, their order and scheduling.
//! - [`report`]: JUnit and GitHub Actions reports of a wait.
//! - [`cli`] and [`output`]: the command line and the one printer.
//!
//! The offline simulator of every platform, jobctl-sim, is its own crate under `sim/`.

#![warn(missing_docs)]

pub mod backend;
pub mod backends;
pub mod cli;
pub mod config;
pub mod error;
pub mod http;
pub mod ledger;
pub mod model;
pub mod output;
pub mod pipeline;
pub mod report;
pub mod session;
pub mod watch;

pub use backend::JobBackend;
pub use error::{Error, ErrorKind, Result};
