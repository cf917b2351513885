//! A session: the resolved configuration of one jobctl invocation. It builds backends on
//! demand, resolves job references, stamps jobs with their profile and fills gaps from the
//! ledger.

use crate::backend::{self, BackendContext, JobBackend};
use crate::config::{Config, Profile};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::model::{Job, JobRef};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// A backend bound to the profile it was built for.
#[derive(Debug, Clone)]
pub struct Bound {
    /// The profile (shared: every line of a batch holds its bound profile).
    pub profile: Arc<Profile>,
    /// Its backend.
    pub backend: Arc<dyn JobBackend>,
}

/// Shared state of one invocation.
#[derive(Debug)]
pub struct Session {
    /// Configuration (file + environment).
    pub config: Config,
    /// State directory.
    pub state_dir: PathBuf,
    /// Profile selected by flags/env/config.
    pub selected: String,
    backends: Mutex<HashMap<String, Bound>>,
    ledger: OnceLock<Arc<Ledger>>,
}

impl Session {
    /// A session over `config` using `state_dir`, with `selected` as the default profile.
    pub fn new(config: Config, state_dir: PathBuf, selected: String) -> Self {
        Session {
            config,
            state_dir,
            selected,
            backends: Mutex::new(HashMap::new()),
            ledger: OnceLock::new(),
        }
    }

    /// The ledger, opened on first use.
    pub fn ledger(&self) -> Result<Arc<Ledger>> {
        if let Some(l) = self.ledger.get() {
            return Ok(l.clone());
        }
        let l = Arc::new(Ledger::open(&self.state_dir)?);
        Ok(self.ledger.get_or_init(|| l).clone())
    }

    /// The backend of `profile` (built once per invocation).
    pub fn bound(&self, profile: &str) -> Result<Bound> {
        // Resolving a profile reads the environment and the config file: once per name.
        if let Ok(map) = self.backends.lock() {
            if let Some(b) = map.get(profile) {
                return Ok(b.clone());
            }
        }
        let resolved = self.config.profile(profile)?;
        let key = resolved.name.clone();
        if let Ok(mut map) = self.backends.lock() {
            if let Some(b) = map.get(&key).cloned() {
                map.insert(profile.to_string(), b.clone());
                return Ok(b);
            }
        }
        let backend = backend::build(BackendContext {
            profile: resolved.clone(),
            state_dir: self.state_dir.clone(),
        })?;
        let bound = Bound {
            profile: Arc::new(resolved),
            backend,
        };
        if let Ok(mut map) = self.backends.lock() {
            map.insert(profile.to_string(), bound.clone());
            map.insert(key, bound.clone());
        }
        Ok(bound)
    }

    /// The selected profile's backend.
    pub fn selected_bound(&self) -> Result<Bound> {
        self.bound(&self.selected)
    }

    /// Resolves a reference to (profile name, id). A bare id is looked up in the ledger and
    /// used when exactly one submission has it; otherwise it belongs to the selected profile.
    pub fn resolve(&self, raw: &str) -> Result<(String, String)> {
        let r: JobRef = raw.parse()?;
        if let Some(p) = &r.profile {
            if self.config.has_profile(p) {
                let canonical = self.config.profile(p)?.name;
                return Ok((canonical, r.id));
            }
        }
        let whole = raw.trim().to_string();
        if let Some(hit) = self.resolve_in_ledger(&whole)? {
            return Ok(hit);
        }
        if let Some(p) = r.profile {
            return Err(Error::usage(format!(
                "unknown profile '{p}' in reference '{raw}' (known: {})",
                self.config.profile_names().join(", ")
            )));
        }
        let canonical = self.config.profile(&self.selected)?.name;
        Ok((canonical, whole))
    }

    /// Looks a bare id up in the ledger: the one job with exactly that id, else the one whose
    /// id starts with it (a short id, as git and docker accept). Several candidates are an
    /// error listing them, so a reference never silently changes meaning as the ledger grows.
    fn resolve_in_ledger(&self, id: &str) -> Result<Option<(String, String)>> {
        let Ok(ledger) = self.ledger() else {
            return Ok(None);
        };
        let mut exact: Vec<(String, String)> = Vec::new();
        let mut prefixed: Vec<(String, String)> = Vec::new();
        for e in ledger.history(None)? {
            let Some(job_id) = e.id else { continue };
            let pair = (e.profile, job_id);
            let into = if pair.1 == id {
                &mut exact
            } else if pair.1.starts_with(id) {
                &mut prefixed
            } else {
                continue;
            };
            if !into.contains(&pair) {
                into.push(pair);
            }
        }
        let candidates = if exact.is_empty() { prefixed } else { exact };
        match candidates.len() {
            0 => Ok(None),
            1 => Ok(candidates.into_iter().next()),
            n => {
                let shown: Vec<String> = candidates
                    .iter()
                    .take(10)
                    .map(|(p, i)| format!("{p}:{i}"))
                    .collect();
                Err(Error::usage(format!(
                    "job id '{id}' is ambiguous: {n} submissions in the ledger match ({}{}); write PROFILE:ID",
                    shown.join(", "),
                    if n > 10 { ", …" } else { "" }
                )))
            }
        }
    }

    /// Stamps `ref`/`profile`/`backend` and fills name and creation time from the ledger.
    pub fn finish_job(&self, bound: &Bound, mut job: Job) -> Job {
        job.stamp(&bound.profile.name, bound.profile.backend.as_str());
        if job.name.is_none() || job.created_at.is_none() {
            if let Ok(Some(entry)) = self
                .ledger()
                .and_then(|l| l.get(&bound.profile.name, &job.id))
            {
                job.name = job.name.or(entry.name);
                job.created_at = job.created_at.or(Some(entry.submitted_at));
            }
        }
        job
    }
}
