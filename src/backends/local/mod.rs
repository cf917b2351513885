//! The local backend: processes on this machine.

use crate::backend::{BackendContext, JobBackend};
use crate::error::{Error, Result};
use crate::model::*;
use async_trait::async_trait;

/// Runs commands as detached local processes.
#[derive(Debug)]
pub struct LocalBackend {
    ctx: BackendContext,
}

impl LocalBackend {
    /// Opens the local store in the state directory.
    pub fn new(ctx: BackendContext) -> Result<Self> {
        Ok(LocalBackend { ctx })
    }
}

#[async_trait]
impl JobBackend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new()
    }
    fn spec_rules(&self) -> SpecRules {
        SpecRules {
            command: CommandRule::Required,
            args: true,
            options: &["workdir", "shell"],
            required_options: &[],
        }
    }
    async fn submit(&self, _spec: &JobSpec) -> Result<Job> {
        Err(Error::not_supported(
            "local",
            "submit",
            format!("{:?}", self.ctx.state_dir),
        ))
    }
    async fn status(&self, _id: &str) -> Result<Job> {
        Err(Error::not_supported("local", "status", "todo"))
    }
    async fn list(&self, _q: &ListQuery) -> Result<Vec<Job>> {
        Err(Error::not_supported("local", "list", "todo"))
    }
    async fn abort(&self, _id: &str) -> Result<AbortOutcome> {
        Err(Error::not_supported("local", "abort", "todo"))
    }
    async fn doctor(&self) -> Vec<Check> {
        Vec::new()
    }
}
