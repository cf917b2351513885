//! Token cache: one owner-only file per profile under `<state>/cache/`, reused until it
//! expires, renewed once transparently when the platform says it is no longer valid.

use crate::config::Secret;
use crate::error::{Error, ErrorKind, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use tokio::sync::Mutex;

/// Renew a token this long before it expires, so a request never races its expiry.
const EXPIRY_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// A token as cached on disk.
#[derive(Clone, Serialize, Deserialize)]
pub struct CachedToken {
    /// The token (or cookie value) itself.
    #[serde(with = "secret_string")]
    pub token: Secret,
    /// When it stops being valid, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// Backend-specific data that belongs with the token (per-region tokens, user id…).
    #[serde(default)]
    pub data: serde_json::Value,
    /// When it was obtained (sizes the renewal margin for short-lived tokens).
    #[serde(default)]
    pub obtained_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("token", &self.token)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    /// A token without extra data.
    pub fn new(token: impl Into<String>, expires_at: Option<DateTime<Utc>>) -> Self {
        CachedToken {
            token: Secret::new(token),
            expires_at,
            data: serde_json::Value::Null,
            obtained_at: Some(Utc::now()),
        }
    }

    /// Whether it is still usable with a safety margin: 60 s, or a quarter of the token's
    /// lifetime when that is shorter (a 30 s token must not look expired from birth).
    pub fn is_fresh(&self) -> bool {
        let Some(exp) = self.expires_at else {
            return true;
        };
        let margin = match self.obtained_at {
            Some(got) => EXPIRY_MARGIN.min((exp - got) / 4),
            None => EXPIRY_MARGIN,
        };
        exp - margin > Utc::now()
    }
}

mod secret_string {
    use crate::config::Secret;
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Secret, D::Error> {
        String::deserialize(de).map(Secret::new)
    }
}

/// The token cache of one profile.
#[derive(Debug)]
pub struct TokenStore {
    path: Option<PathBuf>,
    current: Mutex<Option<CachedToken>>,
}

impl TokenStore {
    /// A store backed by `<cache_dir>/<profile>.token.json`.
    pub fn new(cache_dir: &Path, profile: &str) -> Self {
        TokenStore {
            path: Some(cache_dir.join(format!("{profile}.token.json"))),
            current: Mutex::new(None),
        }
    }

    /// A store that never touches the disk (pre-issued tokens, tests).
    pub fn in_memory() -> Self {
        TokenStore {
            path: None,
            current: Mutex::new(None),
        }
    }

    /// A fresh token: from memory, else from disk, else by calling `login`. The lock is held
    /// during login so concurrent requests of this process log in once.
    pub async fn get<F, Fut>(&self, login: F) -> Result<CachedToken>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<CachedToken>>,
    {
        let mut guard = self.current.lock().await;
        if let Some(t) = guard.as_ref().filter(|t| t.is_fresh()) {
            return Ok(t.clone());
        }
        if let Some(t) = self.read_file().filter(CachedToken::is_fresh) {
            *guard = Some(t.clone());
            return Ok(t);
        }
        let t = login().await?;
        self.write_file(&t)?;
        *guard = Some(t.clone());
        Ok(t)
    }

    /// Runs `op` with a token; if the platform refuses the token as expired or invalid
    /// (an Auth error marked [`Error::expired_token`]), forgets it, logs in again once and
    /// retries `op` once. `op` gets the token by value, so its future borrows nothing from
    /// the cache and stays `Send` inside `#[async_trait]` methods.
    pub async fn with_token<T, L, LFut, F, Fut>(&self, login: L, op: F) -> Result<T>
    where
        L: Fn() -> LFut,
        LFut: std::future::Future<Output = Result<CachedToken>>,
        F: Fn(CachedToken) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let token = self.get(&login).await?;
        match op(token.clone()).await {
            Err(e) if e.kind == ErrorKind::Auth && e.token_expired => {
                tracing::info!("token refused ({}), logging in again", e.message);
                self.invalidate(&token).await;
                let token = self.get(&login).await?;
                op(token).await
            }
            other => other,
        }
    }

    /// Forgets `stale` (if it is still the current token) so the next `get` logs in.
    pub async fn invalidate(&self, stale: &CachedToken) {
        let mut guard = self.current.lock().await;
        if guard.as_ref().is_none_or(|t| t.token == stale.token) {
            *guard = None;
            if let Some(p) = &self.path {
                if self.read_file().is_some_and(|t| t.token == stale.token) {
                    let _ = std::fs::remove_file(p);
                }
            }
        }
    }

    /// Stores a token obtained elsewhere (e.g. by `login`).
    pub async fn put(&self, token: CachedToken) -> Result<()> {
        self.write_file(&token)?;
        *self.current.lock().await = Some(token);
        Ok(())
    }

    /// Deletes the cached token; true when there was one.
    pub async fn clear(&self) -> Result<bool> {
        *self.current.lock().await = None;
        match &self.path {
            Some(p) if p.exists() => {
                std::fs::remove_file(p).map_err(|e| Error::io(p.display(), e))?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    fn read_file(&self) -> Option<CachedToken> {
        let path = self.path.as_ref()?;
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn write_file(&self, token: &CachedToken) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let json = serde_json::to_vec(token).map_err(|e| Error::io("token cache", e))?;
        write_private(path, &json)
    }
}

/// Writes `bytes` to `path` atomically (temp file + rename) with mode 0600.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir.display(), e))?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::io(tmp.display(), e))?;
    f.write_all(bytes)
        .map_err(|e| Error::io(tmp.display(), e))?;
    f.sync_all().map_err(|e| Error::io(tmp.display(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn caches_on_disk_privately_and_relogs_once() {
        let dir = tempfile::tempdir().unwrap();
        let logins = AtomicU32::new(0);
        let store = TokenStore::new(dir.path(), "p");
        let login = || async {
            let n = logins.fetch_add(1, Ordering::SeqCst);
            Ok(CachedToken::new(format!("tok{n}"), None))
        };
        let seen = store
            .with_token(login, |t: CachedToken| async move {
                if t.token.expose() == "tok0" {
                    Err(Error::auth("expired").expired_token())
                } else {
                    Ok(t.token.expose().to_string())
                }
            })
            .await
            .unwrap();
        assert_eq!(seen, "tok1");
        assert_eq!(logins.load(Ordering::SeqCst), 2);
        let file = dir.path().join("p.token.json");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second store (another process) reuses the file without logging in.
        let other = TokenStore::new(dir.path(), "p");
        let t = other
            .get(|| async { Err(Error::auth("should not log in")) })
            .await
            .unwrap();
        assert_eq!(t.token.expose(), "tok1");
    }

    #[test]
    fn short_lived_tokens_are_fresh_until_near_their_end() {
        let t = CachedToken::new("t", Some(Utc::now() + chrono::Duration::seconds(20)));
        assert!(t.is_fresh());
        let mut stale = CachedToken::new("t", Some(Utc::now() + chrono::Duration::seconds(30)));
        stale.obtained_at = Some(Utc::now() - chrono::Duration::seconds(600));
        assert!(
            !stale.is_fresh(),
            "a long-lived token 30 s from its end is renewed"
        );
        assert!(!CachedToken::new("t", Some(Utc::now())).is_fresh());
    }

    #[tokio::test]
    async fn a_refused_login_is_not_retried_forever() {
        let store = TokenStore::in_memory();
        let e = store
            .with_token(
                || async { Err::<CachedToken, _>(Error::auth("bad password")) },
                |_t: CachedToken| async { Ok(()) },
            )
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::AUTH);
    }
}
