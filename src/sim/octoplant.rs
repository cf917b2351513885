//! Simulated octoplant API (filled in by the octoplant backend work).

use super::{SimConfig, SimState};
use axum::Router;
use std::sync::Arc;

/// Routes of the simulated octoplant platform.
pub fn router(_state: Arc<SimState>) -> Router {
    Router::new()
}

/// Environment variables pointing jobctl's built-in octoplant profile at the simulator.
pub fn env_vars(_base: &str, _config: &SimConfig) -> Vec<(String, String)> {
    Vec::new()
}
