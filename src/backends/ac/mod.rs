//! The ac backend (not implemented yet).

use crate::backend::{BackendContext, JobBackend};
use crate::error::{Error, Result};
use std::sync::Arc;

/// Builds the ac backend for a profile.
pub fn build(_ctx: BackendContext) -> Result<Arc<dyn JobBackend>> {
    Err(Error::not_supported("ac", "any operation", "this backend is not implemented yet"))
}
