//! Simulated nebula API (filled in by the nebula backend work).

use super::{SimConfig, SimState};
use axum::Router;
use std::sync::Arc;

/// Routes of the simulated nebula platform.
pub fn router(_state: Arc<SimState>) -> Router {
    Router::new()
}

/// Environment variables pointing jobctl's built-in nebula profile at the simulator.
pub fn env_vars(_base: &str, _config: &SimConfig) -> Vec<(String, String)> {
    Vec::new()
}
