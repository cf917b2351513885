//! Slurm's JWT authentication: the user name and token headers, from a pre-issued token
//! (`SLURM_JWT`) or from a `token_command` such as `scontrol token lifespan=3600`.
//!
//! A token from `token_command` is cached per profile by the shared token store and minted
//! again when its `exp` claim comes within a minute, or when the controller refuses it — so a watch that
//! outlives the default one-hour lifetime keeps going.

use crate::config::{Profile, Secret};
use crate::error::{Error, Result};
use crate::http::token::{CachedToken, TokenSource, TokenStore};
use base64::Engine as _;
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// How long a token command may run.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The claims jobctl reads from a Slurm JWT (it never verifies the signature: the
/// controller does).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// `exp`: when the token stops being accepted.
    pub expires_at: Option<DateTime<Utc>>,
    /// `sun`: the Slurm user name the token was minted for.
    pub user: Option<String>,
    /// `iat`: when it was minted (sizes the renewal margin).
    pub issued_at: Option<DateTime<Utc>>,
}

/// Decodes the payload of a JWT; anything that is not one yields empty claims.
pub fn claims(token: &str) -> Claims {
    let Some(payload) = token.split('.').nth(1) else {
        return Claims::default();
    };
    let trimmed = payload.trim_end_matches('=');
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed) else {
        return Claims::default();
    };
    let Ok(v) = serde_json::from_slice::<Value>(&bytes) else {
        return Claims::default();
    };
    let time = |key: &str| {
        v.get(key)
            .and_then(|e| {
                e.as_i64()
                    .or_else(|| e.as_f64().map(|f| f as i64))
                    .or_else(|| e.as_str().and_then(|s| s.parse().ok()))
            })
            .and_then(|s| Utc.timestamp_opt(s, 0).single())
    };
    Claims {
        expires_at: time("exp"),
        user: v.get("sun").and_then(Value::as_str).map(str::to_string),
        issued_at: time("iat"),
    }
}

/// Extracts the token from a token command's output: a `SLURM_JWT=…` line (as `scontrol
/// token` prints, optionally with `export `), or the output itself when it is one word.
pub fn parse_token_output(stdout: &str) -> Option<String> {
    for line in stdout.lines() {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line).trim();
        if let Some(v) = line.strip_prefix("SLURM_JWT=") {
            let v = v.trim().trim_matches(|c| c == '"' || c == '\'');
            if !v.is_empty() {
                return Some(v.to_string());
            }
        }
    }
    let words: Vec<&str> = stdout.split_whitespace().collect();
    match words.as_slice() {
        [one] if !one.contains('=') => Some((*one).to_string()),
        _ => None,
    }
}

/// Credentials of one Slurm profile.
#[derive(Debug)]
pub struct Auth {
    profile: String,
    username: Option<String>,
    static_token: Option<Secret>,
    command: Option<Vec<String>>,
    /// The command as configured, to recognise a cached token minted by another command.
    command_text: Option<String>,
    store: TokenStore,
    /// What to say when no credentials are configured (names this profile's keys).
    missing: Error,
}

impl Auth {
    /// Reads `username`, the `token` secret and the `token_command` option of `profile`.
    pub fn new(profile: &Profile, cache_dir: &Path) -> Result<Self> {
        let command_text = profile
            .option("token_command")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_string);
        let command = match &command_text {
            Some(text) => {
                let argv = shell_words::split(text).map_err(|e| {
                    Error::usage(format!(
                        "profile '{}': cannot parse token_command: {e}",
                        profile.name
                    ))
                })?;
                if argv.is_empty() {
                    return Err(Error::usage(format!(
                        "profile '{}': token_command is empty",
                        profile.name
                    )));
                }
                Some(argv)
            }
            None => None,
        };
        let static_token = profile
            .secret("token")
            .filter(|t| !t.expose().trim().is_empty())
            .cloned();
        // Only minted tokens are cached: a pre-issued one already lives in the environment.
        // A token minted by another command (an earlier configuration) is not ours to reuse.
        let store = match &command_text {
            Some(text) => TokenStore::new(cache_dir, &profile.name).bound_to(text.clone()),
            None => TokenStore::in_memory(),
        };
        Ok(Auth {
            missing: profile.missing_credentials(&[&["token"], &["token_command"]]),
            profile: profile.name.clone(),
            username: profile.username.clone().filter(|u| !u.trim().is_empty()),
            static_token,
            command,
            command_text,
            store,
        })
    }

    /// Whether any credential is configured.
    pub fn configured(&self) -> bool {
        self.command.is_some() || self.static_token.is_some()
    }

    /// The user name to send with `token`: the configured one, else the token's `sun` claim.
    pub fn user_for(&self, token: &CachedToken) -> Result<String> {
        if let Some(u) = &self.username {
            return Ok(u.clone());
        }
        token
            .data
            .get("user")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| {
                Error::usage(format!(
                    "profile '{}' has no user name: set SLURM_USER_NAME (or `username`); the token does not name one",
                    self.profile
                ))
            })
    }

    /// A usable token: cached, pre-issued, or freshly minted.
    pub async fn token(&self) -> Result<Arc<CachedToken>> {
        self.store.get(self).await
    }

    /// Runs `op` with a token; when the controller refuses it and a new one can be minted,
    /// mints it and runs `op` once more.
    pub async fn with_token<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Arc<CachedToken>) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.store.with_token(self, op).await
    }

    /// The error for credentials missing from the configuration (exit 2).
    pub fn missing(&self) -> Error {
        self.missing.clone()
    }

    /// Obtains a token without consulting the cache: the pre-issued one, or the command's.
    pub async fn mint(&self) -> Result<CachedToken> {
        if let Some(argv) = &self.command {
            let token = self.run_command(argv).await?;
            return Ok(self.cached(token));
        }
        let Some(token) = &self.static_token else {
            return Err(self.missing.clone());
        };
        let c = claims(token.expose());
        if let Some(exp) = c.expires_at {
            if exp <= Utc::now() {
                return Err(Error::auth(format!(
                    "the Slurm token of profile '{}' expired at {}: mint a new one (`scontrol token`) or set token_command so jobctl renews it",
                    self.profile,
                    exp.to_rfc3339()
                )));
            }
        }
        Ok(self.cached(token.expose().to_string()))
    }

    fn cached(&self, token: String) -> CachedToken {
        let c = claims(&token);
        let mut t = CachedToken::new(token, c.expires_at);
        // A token minted an hour ago is not young because we only just read it.
        if c.issued_at.is_some() {
            t.obtained_at = c.issued_at;
        }
        t.data = json!({ "user": c.user, "source": self.command_text });
        t
    }

    async fn run_command(&self, argv: &[String]) -> Result<String> {
        let program = &argv[0];
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&argv[1..])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|e| {
            Error::auth(format!(
                "profile '{}': cannot run token_command `{program}`: {e}",
                self.profile
            ))
        })?;
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                Error::auth(format!(
                    "profile '{}': token_command `{program}` did not finish within {}s",
                    self.profile,
                    COMMAND_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| {
                Error::auth(format!(
                    "profile '{}': token_command `{program}` failed: {e}",
                    self.profile
                ))
            })?;
        if !out.status.success() {
            // stderr explains the refusal (`Invalid user id`…); stdout might hold a token and
            // is never shown.
            let err = String::from_utf8_lossy(&out.stderr);
            let err: String = err.trim().chars().take(300).collect();
            return Err(Error::auth(format!(
                "profile '{}': token_command `{program}` failed ({}): {err}",
                self.profile, out.status
            )));
        }
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse_token_output(&stdout).ok_or_else(|| {
            Error::auth(format!(
                "profile '{}': token_command `{program}` printed no SLURM_JWT=… line",
                self.profile
            ))
        })
    }

    /// Forgets the cached token; true when there was one.
    pub async fn clear(&self) -> Result<bool> {
        self.store.clear().await
    }
}

/// Tokens come from the token command, or are the pre-issued one; only a minted token can be
/// replaced when the controller refuses it.
impl TokenSource for Auth {
    async fn login(&self) -> Result<CachedToken> {
        self.mint().await
    }

    fn can_replace(&self) -> bool {
        self.command.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        let e = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!(
            "{}.{}.sig",
            e.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
            e.encode(payload)
        )
    }

    #[test]
    fn claims_give_expiry_and_user() {
        let c = claims(&jwt(
            r#"{"exp":1795227503,"iat":1795227502,"sun":"slurmci"}"#,
        ));
        assert_eq!(c.expires_at.unwrap().timestamp(), 1_795_227_503);
        assert_eq!(c.user.as_deref(), Some("slurmci"));
        assert_eq!(claims("not-a-jwt"), Claims::default());
        assert_eq!(claims("a.!!!.c"), Claims::default());
    }

    #[test]
    fn token_output_is_parsed() {
        assert_eq!(
            parse_token_output("SLURM_JWT=abc.def.ghi\n").as_deref(),
            Some("abc.def.ghi")
        );
        assert_eq!(
            parse_token_output("export SLURM_JWT='x.y.z'\n").as_deref(),
            Some("x.y.z")
        );
        assert_eq!(
            parse_token_output("  tok.en.x \n").as_deref(),
            Some("tok.en.x")
        );
        assert_eq!(parse_token_output("Invalid user id\n"), None);
        assert_eq!(parse_token_output(""), None);
    }

    #[tokio::test]
    async fn an_expired_preissued_token_is_refused_before_any_request() {
        let mut p = Profile::new("slurm", crate::config::BackendKind::Slurm);
        p.secrets.insert(
            "token".into(),
            Secret::new(jwt(r#"{"exp":1000,"sun":"u"}"#)),
        );
        let a = Auth::new(&p, Path::new("/nonexistent")).unwrap();
        let e = a.token().await.unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::AUTH);
        assert!(e.message.contains("expired"), "{e}");
        assert!(!e.message.contains("eyJ"), "no token in messages: {e}");
    }

    #[tokio::test]
    async fn the_user_name_defaults_to_the_token_subject() {
        let mut p = Profile::new("slurm", crate::config::BackendKind::Slurm);
        p.secrets
            .insert("token".into(), Secret::new(jwt(r#"{"sun":"bob"}"#)));
        let a = Auth::new(&p, Path::new("/nonexistent")).unwrap();
        let t = a.token().await.unwrap();
        assert_eq!(a.user_for(&t).unwrap(), "bob");
    }
}
