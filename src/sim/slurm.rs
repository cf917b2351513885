//! Simulated slurm API (filled in by the slurm backend work).

use super::{SimConfig, SimState};
use axum::Router;
use std::sync::Arc;

/// Routes of the simulated slurm platform.
pub fn router(_state: Arc<SimState>) -> Router {
    Router::new()
}

/// Environment variables pointing jobctl's built-in slurm profile at the simulator.
pub fn env_vars(_base: &str, _config: &SimConfig) -> Vec<(String, String)> {
    Vec::new()
}
