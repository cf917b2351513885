//! Simulated ac API (filled in by the ac backend work).

use super::{SimConfig, SimState};
use axum::Router;
use std::sync::Arc;

/// Routes of the simulated ac platform.
pub fn router(_state: Arc<SimState>) -> Router {
    Router::new()
}

/// Environment variables pointing jobctl's built-in ac profile at the simulator.
pub fn env_vars(_base: &str, _config: &SimConfig) -> Vec<(String, String)> {
    Vec::new()
}
