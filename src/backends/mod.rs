//! One folder per platform. Each remote backend folder has the same files:
//! `mod.rs` (the [`crate::backend::JobBackend`] impl and `build`), `api.rs` (wire types and raw
//! requests), `auth.rs` (login and token handling) and `mapping.rs` (native states and
//! records to [`crate::model::Job`]).

pub mod ac;
pub mod cloudpss;
pub mod local;
pub mod nebula;
pub mod octoplant;
pub mod slurm;
