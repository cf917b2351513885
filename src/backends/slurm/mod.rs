//! The slurm backend (not implemented yet).

use crate::backend::{BackendContext, JobBackend};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Builds the slurm backend for a profile.
pub fn build(_ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Err(Error::not_supported(
        "slurm",
        "any operation",
        "this backend is not implemented yet",
    ))
}
