//! Configuration: profiles from the config file and the environment (README "Configuration").
//!
//! Precedence is flags > process environment > `.env` > config file > defaults. The `.env` file
//! is read into a map instead of the process environment, so the process environment always
//! wins and nothing global is mutated.

use crate::error::{Error, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// The platforms jobctl knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    /// Processes on this machine.
    Local,
    /// CloudPSS XStudio (GraphQL).
    Cloudpss,
    /// Sugon AC / SCNet (REST OpenAPI v2).
    Ac,
    /// octoplant export orders.
    Octoplant,
    /// NebulaGraph Explorer workflows.
    Nebula,
    /// Slurm through slurmrestd.
    Slurm,
}

impl BackendKind {
    /// Every backend.
    pub const ALL: [BackendKind; 6] = [
        BackendKind::Local,
        BackendKind::Cloudpss,
        BackendKind::Ac,
        BackendKind::Octoplant,
        BackendKind::Nebula,
        BackendKind::Slurm,
    ];

    /// Canonical name, also the name of the built-in profile.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Cloudpss => "cloudpss",
            BackendKind::Ac => "ac",
            BackendKind::Octoplant => "octoplant",
            BackendKind::Nebula => "nebula",
            BackendKind::Slurm => "slurm",
        }
    }

    /// Environment variables read by the built-in profile: (variable, profile key, secret?).
    /// Profile keys `url`, `username` and the generic TLS/timeout keys are fields of
    /// [`Profile`]; everything else lands in [`Profile::options`] or [`Profile::secrets`].
    pub fn env_vars(self) -> &'static [(&'static str, &'static str, bool)] {
        match self {
            BackendKind::Local => &[],
            BackendKind::Cloudpss => &[
                ("CLOUDPSS_GQL_URL", "url", false),
                ("CLOUDPSS_API_URL", "api_url", false),
                ("CLOUDPSS_USERNAME", "username", false),
                ("CLOUDPSS_PASSWORD", "password", true),
                ("CLOUDPSS_TOKEN", "token", true),
            ],
            BackendKind::Ac => &[
                ("AC_URL", "url", false),
                ("AC_USER", "username", false),
                ("AC_ACCESS_KEY", "access_key", false),
                ("AC_SECRET_KEY", "secret_key", true),
                ("AC_LOGIN_URL", "login_url", false),
                ("AC_PASSWORD", "password", true),
                ("AC_ORG_ID", "org_id", false),
                ("AC_TOKEN", "token", true),
                ("AC_REGION", "region", false),
                ("AC_HPC_URL", "hpc_url", false),
                ("AC_EFILE_URL", "efile_url", false),
                ("AC_SCHEDULER_ID", "scheduler_id", false),
                ("AC_UTC_OFFSET", "utc_offset", false),
                ("AC_UPLOAD_CHUNK_SIZE", "upload_chunk_size", false),
            ],
            BackendKind::Octoplant => &[
                ("OCTOPLANT_URL", "url", false),
                ("OCTOPLANT_USERNAME", "username", false),
                ("OCTOPLANT_PASSWORD", "password", true),
                ("OCTOPLANT_CLIENT_ID", "client_id", false),
                ("OCTOPLANT_CLIENT_SECRET", "client_secret", true),
            ],
            BackendKind::Nebula => &[
                ("NEBULA_EXPLORER_URL", "url", false),
                ("NEBULA_USERNAME", "username", false),
                ("NEBULA_PASSWORD", "password", true),
                ("NEBULA_ADDRESS", "address", false),
                ("NEBULA_PORT", "port", false),
                ("NEBULA_AUTH_ENCODING", "auth_encoding", false),
            ],
            BackendKind::Slurm => &[
                ("SLURM_REST_URL", "url", false),
                ("SLURM_USER_NAME", "username", false),
                ("SLURM_JWT", "token", true),
                ("SLURM_TOKEN_COMMAND", "token_command", false),
                ("SLURM_API_VERSION", "api_version", false),
            ],
        }
    }

    /// Whether `--arg` becomes environment variables of the job (values passed exactly as
    /// typed) rather than JSON arguments the platform takes.
    pub fn args_are_env(self) -> bool {
        matches!(self, BackendKind::Local | BackendKind::Slurm)
    }

    /// Profile keys this backend reads beyond the generic ones and those of
    /// [`Self::env_vars`] (defaults for job options, tuning).
    fn extra_profile_keys(self) -> &'static [&'static str] {
        match self {
            BackendKind::Local => &[],
            BackendKind::Cloudpss => &[
                "api_url",
                "abort_timeout",
                "queue",
                "cpu",
                "ecpu",
                "mem",
                "priority",
            ],
            BackendKind::Ac => &["login_url", "access_key", "secret_key"],
            BackendKind::Octoplant => &[],
            BackendKind::Nebula => &["page_size", "sample_limit", "workflow"],
            BackendKind::Slurm => &[],
        }
    }

    /// Every key a `[profiles.NAME]` section of this backend may hold (secrets in their
    /// `<key>_env` form).
    pub fn profile_keys(self) -> Vec<String> {
        let mut keys: Vec<String> = [
            "backend",
            "url",
            "username",
            "user",
            "ca_cert",
            "insecure",
            "timeout",
            "poll_interval",
            "max_in_flight",
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        for (_, key, secret) in self.env_vars() {
            let k = if *secret || SECRET_KEYS.contains(key) {
                format!("{key}_env")
            } else {
                key.to_string()
            };
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        for key in self.extra_profile_keys() {
            let k = if SECRET_KEYS.contains(key) {
                format!("{key}_env")
            } else {
                key.to_string()
            };
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
        keys
    }

    /// Prefix of the generic per-profile variables (`<P>_CA_CERT`, `<P>_INSECURE`,
    /// `<P>_TIMEOUT`, `<P>_POLL_INTERVAL`).
    pub fn env_prefix(self) -> &'static str {
        match self {
            BackendKind::Local => "LOCAL",
            BackendKind::Cloudpss => "CLOUDPSS",
            BackendKind::Ac => "AC",
            BackendKind::Octoplant => "OCTOPLANT",
            BackendKind::Nebula => "NEBULA",
            BackendKind::Slurm => "SLURM",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "local" => BackendKind::Local,
            "cloudpss" => BackendKind::Cloudpss,
            "ac" | "scnet" | "hpc" => BackendKind::Ac,
            "octoplant" => BackendKind::Octoplant,
            "nebula" => BackendKind::Nebula,
            "slurm" => BackendKind::Slurm,
            _ => {
                return Err(Error::usage(format!(
                    "unknown backend '{s}': expected one of local, cloudpss, ac (scnet, hpc), octoplant, nebula, slurm"
                )));
            }
        })
    }
}

/// A secret value (password, token). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret, and registers it so it is masked wherever jobctl quotes text it did not
    /// write itself (platform answers, error chains).
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::http::redact::register(&value);
        Secret(value)
    }
    /// The secret itself: only for building a request, never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One configured backend instance.
#[derive(Debug, Clone)]
pub struct Profile {
    /// Profile name (the `PROFILE` of `PROFILE:ID`).
    pub name: String,
    /// Which backend it uses.
    pub backend: BackendKind,
    /// Base URL of the platform.
    pub url: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Secrets by name (`password`, `token`, `client_secret`), already resolved.
    pub secrets: BTreeMap<String, Secret>,
    /// Other backend options (`org_id`, `region`, `client_id`, …) as strings.
    pub options: BTreeMap<String, String>,
    /// Extra CA certificate (PEM) to trust.
    pub ca_cert: Option<PathBuf>,
    /// Skip TLS verification (a warning is printed).
    pub insecure: bool,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Default polling interval for watch.
    pub poll_interval: Duration,
    /// Most submissions `batch` and pipelines keep in flight to this profile at once.
    pub max_in_flight: usize,
    /// Where this profile came from (`built-in`, `config file`).
    pub source: &'static str,
    /// Environment variables that hold secrets of any profile: the built-in ones and those
    /// named by the config file's `*_env` keys. Local jobs never inherit them.
    pub secret_vars: Vec<String>,
}

impl Profile {
    /// A profile with defaults only.
    pub fn new(name: impl Into<String>, backend: BackendKind) -> Self {
        Profile {
            name: name.into(),
            backend,
            url: None,
            username: None,
            secrets: BTreeMap::new(),
            options: BTreeMap::new(),
            ca_cert: None,
            insecure: false,
            timeout: Duration::from_secs(30),
            poll_interval: if backend == BackendKind::Local {
                Duration::from_millis(500)
            } else {
                Duration::from_secs(2)
            },
            max_in_flight: default_in_flight(backend),
            source: "built-in",
            secret_vars: Vec::new(),
        }
    }

    /// A secret by name.
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name)
    }

    /// An option by name.
    pub fn option(&self, name: &str) -> Option<&str> {
        self.options.get(name).map(String::as_str)
    }

    /// A boolean option (`1/true/yes/on`, `0/false/no/off`).
    pub fn bool_option(&self, name: &str) -> Result<Option<bool>> {
        self.option(name)
            .map(|v| parse_bool(v).map_err(|e| self.invalid(name, e)))
            .transpose()
    }

    fn invalid(&self, key: &str, e: Error) -> Error {
        Error::usage(format!("profile '{}', `{key}`: {}", self.name, e.message))
    }

    /// Whether some credential (password, token, or a command that prints a token) is
    /// configured.
    pub fn has_credentials(&self) -> bool {
        !self.secrets.is_empty()
            || self
                .option("token_command")
                .is_some_and(|c| !c.trim().is_empty())
    }

    /// Where the user sets profile key `key`: the environment variable for a built-in
    /// profile, the config key (`<key>_env` for secrets) for a configured one.
    pub fn setting_name(&self, key: &str) -> String {
        let builtin = self.name == self.backend.as_str();
        let var = self
            .backend
            .env_vars()
            .iter()
            .find(|(_, k, _)| *k == key)
            .map(|(v, _, secret)| (*v, *secret));
        match var {
            Some((v, _)) if builtin => v.to_string(),
            Some((_, true)) => format!("`{key}_env`"),
            _ if SECRET_KEYS.contains(&key) => format!("`{key}_env`"),
            _ => format!("`{key}`"),
        }
    }

    /// The error for credentials missing from the configuration (exit 2): it names the keys
    /// of *this* profile to set, one alternative per slice (`[["username", "password"],
    /// ["token"]]`).
    pub fn missing_credentials(&self, alternatives: &[&[&str]]) -> Error {
        let alts: Vec<String> = alternatives
            .iter()
            .map(|keys| {
                keys.iter()
                    .map(|k| self.setting_name(k))
                    .collect::<Vec<_>>()
                    .join(" and ")
            })
            .collect();
        let whereto = if self.name == self.backend.as_str() {
            String::new()
        } else {
            format!(" in [profiles.{}] of the config file", self.name)
        };
        Error::usage(format!(
            "profile '{}' ({}) has no credentials: set {}{whereto}",
            self.name,
            self.backend,
            alts.join(", or ")
        ))
    }

    /// Applies one `key = value` setting, routing it to the right field.
    fn set(&mut self, key: &str, value: &str, secret: bool) -> Result<()> {
        if secret {
            self.secrets.insert(key.to_string(), Secret::new(value));
            return Ok(());
        }
        match key {
            "url" => self.url = Some(value.to_string()),
            "username" | "user" => self.username = Some(value.to_string()),
            "ca_cert" => self.ca_cert = Some(PathBuf::from(value)),
            "insecure" => self.insecure = parse_bool(value).map_err(|e| self.invalid(key, e))?,
            "timeout" => {
                self.timeout = parse_positive_duration(value).map_err(|e| self.invalid(key, e))?
            }
            "poll_interval" => {
                self.poll_interval =
                    parse_positive_duration(value).map_err(|e| self.invalid(key, e))?
            }
            "max_in_flight" => {
                self.max_in_flight = value
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1024).contains(n))
                    .ok_or_else(|| {
                        self.invalid(
                            key,
                            Error::usage(format!("'{value}' is not a whole number from 1 to 1024")),
                        )
                    })?
            }
            _ => {
                self.options.insert(key.to_string(), value.to_string());
            }
        }
        Ok(())
    }
}

/// Submissions in flight to one profile unless configured: chosen from the measurements in
/// BENCHMARKS.md. A remote submission mostly waits on the network, so throughput grows with
/// requests in flight until the platform is the limit; the cap keeps one batch from flooding a
/// shared platform (which also slows jobctl down with 429/Retry-After). A local job is a
/// process started on this machine, which saturates its cores much sooner.
pub fn default_in_flight(backend: BackendKind) -> usize {
    match backend {
        BackendKind::Local => 4,
        _ => 16,
    }
}

/// Parses durations written `500ms`, `30s`, `5m`, `1h30m` (a bare number means seconds).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let t = s.trim();
    if let Ok(secs) = t.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
    }
    humantime::parse_duration(t).map_err(|e| {
        Error::usage(format!(
            "invalid duration '{s}': {e} (write e.g. 500ms, 30s, 5m, 1h30m)"
        ))
    })
}

/// Like [`parse_duration`], refusing zero (a zero timeout or interval is never meant).
pub fn parse_positive_duration(s: &str) -> Result<Duration> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(Error::usage(format!(
            "invalid duration '{s}': must be more than zero"
        )));
    }
    Ok(d)
}

/// Parses booleans `1/true/yes/on` and `0/false/no/off`.
pub fn parse_bool(s: &str) -> Result<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(Error::usage(format!(
            "invalid boolean '{s}': use 1/true/yes/on or 0/false/no/off"
        ))),
    }
}

/// Environment lookups: the process environment first, then the `.env` file.
#[derive(Debug, Clone, Default)]
pub struct EnvSource {
    dotenv: BTreeMap<String, String>,
    /// Test hook: when set, the process environment is ignored.
    isolated: Option<BTreeMap<String, String>>,
}

impl EnvSource {
    /// Reads `path` (when given and present) as a `.env` file.
    pub fn load(env_file: Option<&Path>, required: bool) -> Result<Self> {
        let mut dotenv = BTreeMap::new();
        if let Some(path) = env_file {
            if path.exists() {
                let iter = dotenvy::from_path_iter(path).map_err(|e| {
                    Error::usage(format!("cannot read env file {}: {e}", path.display()))
                })?;
                for item in iter {
                    let (k, v) = item.map_err(|e| {
                        Error::usage(format!("invalid env file {}: {e}", path.display()))
                    })?;
                    dotenv.insert(k, v);
                }
            } else if required {
                return Err(Error::usage(format!(
                    "env file {} does not exist",
                    path.display()
                )));
            }
        }
        Ok(EnvSource {
            dotenv,
            isolated: None,
        })
    }

    /// An environment made of exactly these variables (for tests).
    pub fn fixed(vars: BTreeMap<String, String>) -> Self {
        EnvSource {
            dotenv: BTreeMap::new(),
            isolated: Some(vars),
        }
    }

    /// A non-empty variable's value.
    pub fn get(&self, name: &str) -> Option<String> {
        let process = match &self.isolated {
            Some(map) => map.get(name).cloned(),
            None => std::env::var(name).ok(),
        };
        process
            .or_else(|| self.dotenv.get(name).cloned())
            .filter(|v| !v.is_empty())
    }
}

/// Variables that carry credentials jobctl reads (every backend's secret variables, and those
/// of logins other builds of jobctl know, so an upgrade never starts leaking them).
pub fn builtin_secret_vars() -> Vec<String> {
    let mut vars: Vec<String> = BackendKind::ALL
        .iter()
        .flat_map(|b| b.env_vars().iter())
        .filter(|(_, _, secret)| *secret)
        .map(|(var, _, _)| (*var).to_string())
        .collect();
    for extra in ["AC_SECRET_KEY", "AC_ACCESS_KEY"] {
        if !vars.iter().any(|v| v == extra) {
            vars.push(extra.to_string());
        }
    }
    vars
}

/// Keys that hold secrets; they must be given by reference (`<key>_env`), never inline.
const SECRET_KEYS: &[&str] = &[
    "password",
    "token",
    "client_secret",
    "jwt",
    "secret",
    "secret_key",
];

/// The config file, parsed but not yet resolved against the environment.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    /// Where it was read from, if anywhere.
    pub path: Option<PathBuf>,
    /// `default_profile`.
    pub default_profile: Option<String>,
    /// Profile sections in file order.
    pub profiles: BTreeMap<String, toml::Table>,
}

impl ConfigFile {
    /// Reads `path`; a missing file is an error only when `required` (it was named explicitly).
    pub fn load(path: Option<PathBuf>, required: bool) -> Result<Self> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        if !path.exists() {
            if required {
                return Err(Error::usage(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            return Ok(Self::default());
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::usage(format!("cannot read config {}: {e}", path.display())))?;
        let mut cfg = Self::parse(&text)
            .map_err(|e| Error::usage(format!("config {}: {}", path.display(), e.message)))?;
        cfg.path = Some(path);
        Ok(cfg)
    }

    /// Parses config text.
    pub fn parse(text: &str) -> Result<Self> {
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| Error::usage(format!("invalid TOML: {}", e.message())))?;
        let mut cfg = ConfigFile::default();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("default_profile", toml::Value::String(s)) => cfg.default_profile = Some(s),
                ("profiles", toml::Value::Table(profiles)) => {
                    for (name, body) in profiles {
                        let toml::Value::Table(body) = body else {
                            return Err(Error::usage(format!("[profiles.{name}] must be a table")));
                        };
                        if !crate::model::is_profile_name(&name) {
                            return Err(Error::usage(format!(
                                "invalid profile name '{name}': use letters, digits, '-', '_', '.'"
                            )));
                        }
                        cfg.profiles.insert(name, body);
                    }
                }
                (other, _) => {
                    return Err(Error::usage(format!(
                        "unknown top-level key `{other}` (expected default_profile, profiles)"
                    )));
                }
            }
        }
        Ok(cfg)
    }
}

/// Everything needed to resolve profiles: the config file and the environment.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Parsed config file.
    pub file: ConfigFile,
    /// Environment (process + `.env`).
    pub env: EnvSource,
}

impl Config {
    /// Default config file path: `JOBCTL_CONFIG`, else `$XDG_CONFIG_HOME/jobctl/config.toml`.
    pub fn default_path(env: &EnvSource) -> Option<PathBuf> {
        if let Some(p) = env.get("JOBCTL_CONFIG") {
            return Some(PathBuf::from(p));
        }
        let base = env
            .get("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| env.get("HOME").map(|h| PathBuf::from(h).join(".config")))?;
        Some(base.join("jobctl").join("config.toml"))
    }

    /// Default state directory: `JOBCTL_STATE_DIR`, else `$XDG_STATE_HOME/jobctl`, else
    /// `~/.local/state/jobctl`.
    pub fn default_state_dir(env: &EnvSource) -> Result<PathBuf> {
        if let Some(p) = env.get("JOBCTL_STATE_DIR") {
            return Ok(PathBuf::from(p));
        }
        if let Some(p) = env.get("XDG_STATE_HOME") {
            return Ok(PathBuf::from(p).join("jobctl"));
        }
        env.get("HOME")
            .map(|h| PathBuf::from(h).join(".local/state/jobctl"))
            .ok_or_else(|| {
                Error::usage("cannot find a state directory: set JOBCTL_STATE_DIR or HOME")
            })
    }

    /// Names of every profile: the built-ins and the config file's.
    pub fn profile_names(&self) -> Vec<String> {
        let mut names: Vec<String> = BackendKind::ALL
            .iter()
            .map(|b| b.as_str().to_string())
            .collect();
        for name in self.file.profiles.keys() {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        names
    }

    /// The profile used when none is named: `JOBCTL_PROFILE`, `default_profile`, `local`.
    pub fn default_profile_name(&self) -> String {
        self.env
            .get("JOBCTL_PROFILE")
            .or_else(|| self.file.default_profile.clone())
            .unwrap_or_else(|| "local".to_string())
    }

    /// Whether `name` names a profile (built-in, alias or configured).
    pub fn has_profile(&self, name: &str) -> bool {
        self.file.profiles.contains_key(name) || name.parse::<BackendKind>().is_ok()
    }

    /// Every variable that holds a secret: [`builtin_secret_vars`] plus the variables the
    /// config file's `*_env` keys name (in any profile).
    pub fn secret_variables(&self) -> Vec<String> {
        let mut vars = builtin_secret_vars();
        for section in self.file.profiles.values() {
            for (key, value) in section {
                if let (true, toml::Value::String(var)) = (key.ends_with("_env"), value) {
                    if !vars.contains(var) {
                        vars.push(var.clone());
                    }
                }
            }
        }
        vars
    }

    /// Resolves a profile by name. Built-in profiles (named after a backend or alias) read the
    /// backend's environment variables on top of a config section of the same name, if any.
    pub fn profile(&self, name: &str) -> Result<Profile> {
        let mut p = self.resolve_profile(name)?;
        p.secret_vars = self.secret_variables();
        Ok(p)
    }

    fn resolve_profile(&self, name: &str) -> Result<Profile> {
        if let Some(section) = self.file.profiles.get(name) {
            let backend = match section.get("backend") {
                Some(toml::Value::String(b)) => b
                    .parse::<BackendKind>()
                    .map_err(|e| Error::usage(format!("profile '{name}': {}", e.message)))?,
                Some(_) => {
                    return Err(Error::usage(format!(
                        "profile '{name}': `backend` must be a string"
                    )));
                }
                None => name.parse::<BackendKind>().map_err(|_| {
                    Error::usage(format!(
                        "profile '{name}' in the config file has no `backend`"
                    ))
                })?,
            };
            let mut profile = Profile::new(name, backend);
            profile.source = "config file";
            self.apply_section(&mut profile, section)?;
            if name == backend.as_str() {
                self.apply_env(&mut profile)?;
            }
            return Ok(profile);
        }
        let backend: BackendKind = name.parse().map_err(|_| {
            let known = self.profile_names().join(", ");
            Error::usage(format!("unknown profile '{name}' (known: {known})"))
        })?;
        // An alias (`scnet`) resolves to the canonical built-in profile (`ac`).
        if backend.as_str() != name && self.file.profiles.contains_key(backend.as_str()) {
            return self.resolve_profile(backend.as_str());
        }
        let mut profile = Profile::new(backend.as_str(), backend);
        self.apply_env(&mut profile)?;
        Ok(profile)
    }

    fn apply_section(&self, profile: &mut Profile, section: &toml::Table) -> Result<()> {
        let name = profile.name.clone();
        let known = profile.backend.profile_keys();
        for (key, value) in section {
            if key == "backend" {
                continue;
            }
            if !known.contains(key) && !SECRET_KEYS.contains(&key.as_str()) {
                return Err(unknown_key(&name, profile.backend, key, &known));
            }
            if SECRET_KEYS.contains(&key.as_str()) {
                return Err(Error::usage(format!(
                    "profile '{name}': `{key}` must not be written in the config file; put it in an environment variable and write `{key}_env = \"VARIABLE\"`"
                )));
            }
            let text = match value {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => {
                    return Err(Error::usage(format!(
                        "profile '{name}': `{key}` must be a string, number or boolean"
                    )));
                }
            };
            if let Some(secret_name) = key.strip_suffix("_env") {
                // A reference to a secret: read it from the environment now.
                if let Some(v) = self.env.get(&text) {
                    profile.set(secret_name, &v, true)?;
                }
                continue;
            }
            profile.set(key, &text, false)?;
        }
        Ok(())
    }

    fn apply_env(&self, profile: &mut Profile) -> Result<()> {
        let backend = profile.backend;
        for (var, key, secret) in backend.env_vars() {
            if let Some(v) = self.env.get(var) {
                profile.set(key, &v, *secret)?;
            }
        }
        let prefix = backend.env_prefix();
        for key in [
            "ca_cert",
            "insecure",
            "timeout",
            "poll_interval",
            "max_in_flight",
        ] {
            let var = format!("{prefix}_{}", key.to_ascii_uppercase());
            if let Some(v) = self.env.get(&var) {
                profile
                    .set(key, &v, false)
                    .map_err(|e| Error::usage(format!("{var}: {}", e.message)))?;
            }
        }
        Ok(())
    }
}

/// The user's umask, saved by [`restrict_umask`] (`u32::MAX` until then).
static USER_UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Makes every file and directory this process creates owner-only (umask 077), whatever the
/// user's umask, and remembers the user's for what jobctl creates on the user's behalf
/// (fetched artifacts, a local job's own files).
pub fn restrict_umask() {
    use nix::sys::stat::{Mode, umask};
    let old = umask(Mode::from_bits_truncate(0o077));
    USER_UMASK.store(old.bits(), std::sync::atomic::Ordering::Relaxed);
}

/// The umask the user started jobctl with (022 when [`restrict_umask`] was not called).
pub fn user_umask() -> u32 {
    match USER_UMASK.load(std::sync::atomic::Ordering::Relaxed) {
        u32::MAX => 0o022,
        m => m,
    }
}

/// Creates the state directory owner-only (0700) and takes back permissions others had on an
/// existing one and on its databases (0600), so tokens and the ledger stay private.
pub fn secure_state_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |e: std::io::Error| Error::io(format!("state directory {}", dir.display()), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        let mode = if meta.is_dir() { 0o700 } else { 0o600 };
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(mode))
                .map_err(io)?;
        }
    }
    Ok(())
}

/// The error for a key no backend setting has, naming the closest valid one.
fn unknown_key(profile: &str, backend: BackendKind, key: &str, known: &[String]) -> Error {
    let closest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), k))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| format!("; did you mean `{k}`?"))
        .unwrap_or_default();
    Error::usage(format!(
        "profile '{profile}': unknown key `{key}` for the {backend} backend{closest} (valid keys: {})",
        known.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> EnvSource {
        EnvSource::fixed(
            vars.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn durations_accept_the_documented_forms() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        let e = parse_duration("soon").unwrap_err();
        assert!(e.message.contains("soon"));
    }

    #[test]
    fn builtin_profile_reads_its_variables_and_hides_secrets() {
        let cfg = Config {
            file: ConfigFile::default(),
            env: env(&[
                ("CLOUDPSS_GQL_URL", "http://127.0.0.1:1/graphql"),
                ("CLOUDPSS_USERNAME", "alice"),
                ("CLOUDPSS_PASSWORD", "hunter2"),
            ]),
        };
        let p = cfg.profile("cloudpss").unwrap();
        assert_eq!(p.url.as_deref(), Some("http://127.0.0.1:1/graphql"));
        assert_eq!(p.secret("password").unwrap().expose(), "hunter2");
        assert!(!format!("{p:?}").contains("hunter2"));
    }

    #[test]
    fn aliases_resolve_to_the_canonical_profile() {
        let cfg = Config {
            file: ConfigFile::default(),
            env: env(&[("AC_URL", "http://127.0.0.1:1")]),
        };
        let p = cfg.profile("scnet").unwrap();
        assert_eq!(p.name, "ac");
        assert_eq!(p.backend, BackendKind::Ac);
    }

    #[test]
    fn config_file_secrets_are_references() {
        let file = ConfigFile::parse(
            "default_profile = \"prod\"\n[profiles.prod]\nbackend = \"cloudpss\"\nurl = \"http://x\"\npassword_env = \"PROD_PW\"\nqueue = 3\n",
        )
        .unwrap();
        let cfg = Config {
            file,
            env: env(&[("PROD_PW", "s3cret"), ("CLOUDPSS_USERNAME", "bob")]),
        };
        let p = cfg.profile("prod").unwrap();
        assert_eq!(p.secret("password").unwrap().expose(), "s3cret");
        assert_eq!(p.option("queue"), Some("3"));
        // Backend variables belong to the built-in profile, not to named ones.
        assert_eq!(p.username, None);
        assert_eq!(cfg.default_profile_name(), "prod");

        let inline =
            ConfigFile::parse("[profiles.x]\nbackend=\"ac\"\npassword=\"oops\"\n").unwrap();
        let cfg = Config {
            file: inline,
            env: env(&[]),
        };
        let e = cfg.profile("x").unwrap_err();
        assert!(e.message.contains("password_env"), "{e}");
    }

    #[test]
    fn unknown_profiles_and_backends_are_usage_errors() {
        let cfg = Config::default();
        assert_eq!(
            cfg.profile("nope").unwrap_err().exit_code(),
            crate::error::exit::USAGE
        );
        let file = ConfigFile::parse("[profiles.y]\nbackend=\"mainframe\"\n").unwrap();
        let cfg = Config {
            file,
            env: env(&[]),
        };
        assert!(cfg.profile("y").unwrap_err().message.contains("mainframe"));
    }
}
