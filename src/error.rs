//! The one error type of jobctl and the process exit codes (README "Exit codes").
//!
//! Every failure, from a bad flag to a platform refusing a token, becomes an [`Error`] whose
//! [`ErrorKind`] decides the process exit code in exactly one place: [`ErrorKind::exit_code`].
//! The codes themselves are named once, in [`exit`]; nothing else in the crate writes a number.

use serde::Serialize;
use std::fmt;

/// The process exit codes, as the README's "Exit codes" table documents them. Scripts depend
/// on these numbers: change one only together with that table.
pub mod exit {
    /// Success; for watch/wait/`submit --wait`: every awaited job succeeded.
    pub const SUCCESS: i32 = 0;
    /// At least one awaited job failed.
    pub const JOB_FAILED: i32 = 1;
    /// Usage error or invalid input (flags, spec, reference, config, duration).
    pub const USAGE: i32 = 2;
    /// `--timeout` reached while a job was still not terminal.
    pub const TIMEOUT: i32 = 3;
    /// Authentication or permission refused.
    pub const AUTH: i32 = 4;
    /// At least one awaited job was canceled, and none failed.
    pub const CANCELED: i32 = 5;
    /// Job, resource or artifact not found.
    pub const NOT_FOUND: i32 = 6;
    /// Platform unreachable or its answer unusable, or a local I/O failure.
    pub const UNAVAILABLE: i32 = 7;
    /// The operation is not supported by this backend.
    pub const NOT_SUPPORTED: i32 = 8;
    /// Interrupted (Ctrl-C); the jobs keep running.
    pub const INTERRUPTED: i32 = 130;
}

/// What went wrong, at the granularity a script needs to react to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Bad flags, spec, reference, config or duration; or the platform said "invalid parameters".
    Usage,
    /// `--timeout` expired while a job was not terminal.
    Timeout,
    /// Authentication or permission refused.
    Auth,
    /// Job, resource or artifact not found.
    NotFound,
    /// The platform could not be reached (after retries), or TLS verification failed.
    Unavailable,
    /// The platform answered with something unusable (not JSON, missing fields).
    Protocol,
    /// The platform reported an error it does not classify.
    Platform,
    /// A local I/O failure (state directory, destination file).
    Io,
    /// The backend does not offer this operation.
    NotSupported,
    /// Interrupted by the user (Ctrl-C).
    Interrupted,
}

impl ErrorKind {
    /// The process exit code for this kind: the one place errors become exit codes.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => exit::USAGE,
            ErrorKind::Timeout => exit::TIMEOUT,
            ErrorKind::Auth => exit::AUTH,
            ErrorKind::NotFound => exit::NOT_FOUND,
            ErrorKind::Unavailable | ErrorKind::Protocol | ErrorKind::Platform | ErrorKind::Io => {
                exit::UNAVAILABLE
            }
            ErrorKind::NotSupported => exit::NOT_SUPPORTED,
            ErrorKind::Interrupted => exit::INTERRUPTED,
        }
    }

    /// Whether trying the same request again later may succeed.
    pub fn default_retryable(self) -> bool {
        matches!(self, ErrorKind::Unavailable)
    }
}

/// A jobctl error: a kind, a message, and the context that makes it actionable.
#[derive(Debug, Clone, Serialize)]
pub struct Error {
    /// Classification, which decides the exit code.
    pub kind: ErrorKind,
    /// Human-readable message (never contains secrets).
    pub message: String,
    /// The platform's own error code, when it gave one.
    pub code: Option<String>,
    /// Whether the operation may succeed when retried.
    pub retryable: bool,
    /// Profile the operation ran against, when known.
    pub profile: Option<String>,
    /// Backend name, when known.
    pub backend: Option<String>,
    /// Operation (`submit`, `status`, …), when known.
    pub operation: Option<String>,
    /// Set when an authentication failure means "your token expired" and a fresh login may help.
    #[serde(skip)]
    pub token_expired: bool,
    /// Seconds the platform asked us to wait (Retry-After), when it said so.
    #[serde(skip)]
    pub retry_after: Option<std::time::Duration>,
    /// The job reference the error is about, when it is about one (multi-job output).
    #[serde(skip)]
    pub reference: Option<String>,
}

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            // Messages quote platforms (their error texts, details, URLs): the last line of
            // defence that keeps a known secret or a token-looking value out of them.
            message: crate::http::redact::mask(&message.into()),
            code: None,
            retryable: kind.default_retryable(),
            profile: None,
            backend: None,
            operation: None,
            token_expired: false,
            retry_after: None,
            reference: None,
        }
    }

    /// Usage / invalid input (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Usage, message)
    }
    /// Not found (exit 6).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }
    /// Authentication refused (exit 4).
    pub fn auth(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Auth, message)
    }
    /// Unreachable (exit 7, retryable).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    /// Unusable answer (exit 7).
    pub fn protocol(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Protocol, message)
    }
    /// Unclassified platform error (exit 7).
    pub fn platform(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Platform, message)
    }
    /// Local I/O failure (exit 7).
    pub fn io(context: impl fmt::Display, err: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Io, format!("{context}: {err}"))
    }
    /// Operation not supported by a backend (exit 8).
    pub fn not_supported(backend: &str, operation: &str, why: impl fmt::Display) -> Self {
        let mut e = Self::new(
            ErrorKind::NotSupported,
            format!("the {backend} backend does not support {operation}: {why}"),
        );
        e.backend = Some(backend.to_string());
        e.operation = Some(operation.to_string());
        e
    }

    /// Attach the platform's own error code.
    pub fn with_code(mut self, code: impl Into<String>) -> Self {
        self.code = Some(code.into());
        self
    }
    /// Override whether the error is retryable.
    pub fn with_retryable(mut self, retryable: bool) -> Self {
        self.retryable = retryable;
        self
    }
    /// Mark an auth failure as an expired/invalid token, which a fresh login may cure.
    pub fn expired_token(mut self) -> Self {
        self.token_expired = true;
        self
    }
    /// Fill in profile and backend unless already set.
    pub fn in_profile(mut self, profile: &str, backend: &str) -> Self {
        self.profile.get_or_insert_with(|| profile.to_string());
        self.backend.get_or_insert_with(|| backend.to_string());
        self
    }
    /// Says which job reference the error is about (shown as `ref` in JSON output).
    pub fn about(mut self, reference: impl Into<String>) -> Self {
        self.reference = Some(reference.into());
        self
    }
    /// Fill in the operation unless already set.
    pub fn during(mut self, operation: &str) -> Self {
        self.operation.get_or_insert_with(|| operation.to_string());
        self
    }
    /// The exit code this error leads to.
    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ctx = Vec::new();
        if let Some(p) = &self.profile {
            ctx.push(format!("profile {p}"));
        }
        if let Some(b) = &self.backend {
            ctx.push(format!("backend {b}"));
        }
        if let Some(o) = &self.operation {
            ctx.push(o.clone());
        }
        if !ctx.is_empty() {
            write!(f, "[{}] ", ctx.join(", "))?;
        }
        write!(f, "{}", self.message)?;
        if let Some(c) = &self.code {
            if !self.message.contains(c.as_str()) {
                write!(f, " (platform code {c})")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::io("state database", e)
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::io("i/o", e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(ErrorKind::Usage.exit_code(), 2);
        assert_eq!(ErrorKind::Timeout.exit_code(), 3);
        assert_eq!(ErrorKind::Auth.exit_code(), 4);
        assert_eq!(ErrorKind::NotFound.exit_code(), 6);
        assert_eq!(ErrorKind::Unavailable.exit_code(), 7);
        assert_eq!(ErrorKind::Protocol.exit_code(), 7);
        assert_eq!(ErrorKind::NotSupported.exit_code(), 8);
        assert_eq!(ErrorKind::Interrupted.exit_code(), 130);
    }

    #[test]
    fn messages_never_carry_a_known_secret() {
        let _ = crate::config::Secret::new("tr0ub4dor-and-3");
        let e = Error::platform("the server echoed tr0ub4dor-and-3 back");
        assert_eq!(e.message, "the server echoed *** back");
    }

    #[test]
    fn display_names_context_and_code() {
        let e = Error::platform("quota exceeded")
            .with_code("10008")
            .in_profile("prod", "ac")
            .during("submit");
        assert_eq!(
            e.to_string(),
            "[profile prod, backend ac, submit] quota exceeded (platform code 10008)"
        );
    }
}
