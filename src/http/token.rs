//! Token renewal written once: one owner-only cache file per profile under `<state>/cache/`,
//! reused until it expires, renewed (or obtained again) when it is about to, and replaced once
//! transparently when the platform refuses it. Backends say *how* to obtain a token (a
//! [`TokenSource`]); [`TokenStore`] decides *when*.

use crate::config::Secret;
use crate::error::{Error, ErrorKind, Result};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
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
    /// Backend-specific data that belongs with the token (region, user id…).
    #[serde(default)]
    pub data: serde_json::Value,
    /// When it was obtained (sizes the renewal margin for short-lived tokens).
    #[serde(default)]
    pub obtained_at: Option<DateTime<Utc>>,
    /// Whose token it is (see [`TokenStore::bound_to`]); set by the store.
    #[serde(default)]
    pub identity: Option<String>,
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
            identity: None,
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

/// How a backend obtains tokens. The [`TokenStore`] calls it when it has no usable token.
pub trait TokenSource: Sync {
    /// Obtains a brand-new token (password login, token command, OAuth grant, or checking a
    /// pre-issued token). A refusal here is final: it must not be marked
    /// [`Error::expired_token`].
    fn login(&self) -> impl Future<Output = Result<CachedToken>> + Send;

    /// Trades `stale`, a cached token that expired or is about to, for a new one without a
    /// full login (AC's `/tokens/next`). `Ok(None)` means "log in instead", which is the
    /// default; an error is logged and also leads to a login.
    fn renew(
        &self,
        _stale: &CachedToken,
    ) -> impl Future<Output = Result<Option<CachedToken>>> + Send {
        std::future::ready(Ok(None))
    }

    /// Whether a token the platform refused can be replaced by obtaining another. False for a
    /// pre-issued token that only the user can replace: the refusal is then reported at once.
    fn can_replace(&self) -> bool {
        true
    }

    /// Whether this platform refusing a token it has just issued can only be a passing
    /// inconsistency (its refusal names the token itself, e.g. HTTP 401), so the caller should
    /// retry later rather than report refused credentials. False for platforms whose refusal
    /// codes also mean "this user may not do that" (AC's 10008/10009): a second refusal right
    /// after a fresh login is then a real permission problem (exit 4).
    fn fresh_refusal_is_transient(&self) -> bool {
        true
    }
}

/// The token cache of one profile.
#[derive(Debug)]
pub struct TokenStore {
    path: Option<PathBuf>,
    identity: Option<String>,
    /// Shared, not copied: every request reads it, and it carries backend data (a map).
    current: Mutex<Option<Arc<CachedToken>>>,
}

impl TokenStore {
    /// A store backed by `<cache_dir>/<profile>.token.json`.
    pub fn new(cache_dir: &Path, profile: &str) -> Self {
        TokenStore {
            path: Some(cache_dir.join(format!("{profile}.token.json"))),
            identity: None,
            current: Mutex::new(None),
        }
    }

    /// A store that never touches the disk (pre-issued tokens, tests).
    pub fn in_memory() -> Self {
        TokenStore {
            path: None,
            identity: None,
            current: Mutex::new(None),
        }
    }

    /// Binds the store to the credentials it caches for (server URL, user, region, token
    /// command…; never a secret): a cached token obtained under another identity — the
    /// profile now points elsewhere — is never sent, and is replaced on the next login.
    pub fn bound_to(mut self, identity: impl Into<String>) -> Self {
        self.identity = Some(identity.into());
        self
    }

    fn ours(&self, t: &CachedToken) -> bool {
        self.identity.is_none() || t.identity == self.identity
    }

    /// A fresh token: from memory, else from disk, else renewed from a stale one, else from
    /// `source.login()`. The lock is held meanwhile so concurrent requests of this process
    /// obtain one token, not several.
    pub async fn get(&self, source: &impl TokenSource) -> Result<Arc<CachedToken>> {
        let mut guard = self.current.lock().await;
        // The common case, on every request: the token in memory is good.
        if let Some(t) = guard.as_ref().filter(|t| self.ours(t) && t.is_fresh()) {
            return Ok(t.clone());
        }
        let in_memory = guard.clone().filter(|t| self.ours(t));
        // Another process may have obtained a newer one meanwhile.
        let on_disk = self.read_file().filter(|t| self.ours(t));
        if let Some(t) = on_disk.as_ref().filter(|t| t.is_fresh()) {
            let t = Arc::new(t.clone());
            *guard = Some(t.clone());
            return Ok(t);
        }
        let in_memory = in_memory.map(Arc::unwrap_or_clone);
        let cached = on_disk.or(in_memory);
        let renewed = match &cached {
            Some(stale) => match source.renew(stale).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::info!("token renewal failed ({e}); logging in");
                    None
                }
            },
            None => None,
        };
        let mut t = match renewed {
            Some(t) => t,
            None => source.login().await?,
        };
        t.identity = self.identity.clone();
        self.write_file(&t)?;
        let t = Arc::new(t);
        *guard = Some(t.clone());
        Ok(t)
    }

    /// Runs `op` with a token; if the platform refuses the token as expired or invalid (an
    /// Auth error marked [`Error::expired_token`]) and the source can replace it, forgets it,
    /// obtains another and retries `op`. `op` gets its own handle on the token, so its future
    /// borrows nothing from the cache and stays `Send` inside `#[async_trait]`.
    ///
    /// A short-lived token can expire while `op` is still retrying a flaky platform, so a
    /// renewed token that is refused *after* it expired is renewed again (a few times). One
    /// refused while still fresh, right after a successful login, is not a refusal of the
    /// credentials (they were just accepted) but a platform inconsistency: it is reported as
    /// retryable unavailability (exit 7, and `watch` keeps trying), never as exit 4.
    pub async fn with_token<T, F, Fut>(&self, source: &impl TokenSource, op: F) -> Result<T>
    where
        F: Fn(Arc<CachedToken>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut token = self.get(source).await?;
        let mut renewals = 0u32;
        loop {
            match op(token.clone()).await {
                Err(e) if e.kind == ErrorKind::Auth && e.token_expired && source.can_replace() => {
                    if renewals > 0 && (token.is_fresh() || renewals >= MAX_RENEWALS) {
                        return Err(if source.fresh_refusal_is_transient() {
                            refused_after_renewal(e)
                        } else {
                            e
                        });
                    }
                    tracing::info!("token refused ({}), obtaining a new one", e.message);
                    renewals += 1;
                    self.invalidate(&token).await;
                    token = self.get(source).await?;
                }
                other => return other,
            }
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
    pub async fn put(&self, mut token: CachedToken) -> Result<()> {
        token.identity = self.identity.clone();
        self.write_file(&token)?;
        *self.current.lock().await = Some(Arc::new(token));
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

/// How many times one operation may renew a token that expired while it was being retried.
const MAX_RENEWALS: u32 = 3;

/// The error for a token refused right after a successful login: retryable, exit 7.
fn refused_after_renewal(e: Error) -> Error {
    let mut out = Error::unavailable(format!(
        "the platform refused a token it had just issued ({}); the login itself succeeded, so this is treated as a passing platform problem",
        e.message
    ));
    out.code = e.code;
    out.profile = e.profile;
    out.backend = e.backend;
    out.operation = e.operation;
    out
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

    /// A source counting logins and renewals; tokens are `tok0`, `tok1`… (`ren…` renewed).
    #[derive(Default)]
    struct Counting {
        logins: AtomicU32,
        renewals: AtomicU32,
        renews: bool,
        fixed: bool,
        lifetime: Option<chrono::Duration>,
    }

    impl TokenSource for Counting {
        async fn login(&self) -> Result<CachedToken> {
            let n = self.logins.fetch_add(1, Ordering::SeqCst);
            Ok(CachedToken::new(
                format!("tok{n}"),
                self.lifetime.map(|l| Utc::now() + l),
            ))
        }
        async fn renew(&self, stale: &CachedToken) -> Result<Option<CachedToken>> {
            if !self.renews {
                return Ok(None);
            }
            self.renewals.fetch_add(1, Ordering::SeqCst);
            Ok(Some(CachedToken::new(
                format!("ren-{}", stale.token.expose()),
                None,
            )))
        }
        fn can_replace(&self) -> bool {
            !self.fixed
        }
    }

    /// Refuses `tok0` as expired, accepts anything else.
    async fn refuse_first(t: Arc<CachedToken>) -> Result<String> {
        if t.token.expose() == "tok0" {
            Err(Error::auth("expired").expired_token())
        } else {
            Ok(t.token.expose().to_string())
        }
    }

    #[tokio::test]
    async fn caches_on_disk_privately_and_relogs_once() {
        let dir = tempfile::tempdir().unwrap();
        let source = Counting::default();
        let store = TokenStore::new(dir.path(), "p");
        let seen = store.with_token(&source, refuse_first).await.unwrap();
        assert_eq!(seen, "tok1");
        assert_eq!(source.logins.load(Ordering::SeqCst), 2);
        let file = dir.path().join("p.token.json");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // A second store (another process) reuses the file without logging in.
        let other = TokenStore::new(dir.path(), "p");
        let t = other.get(&source).await.unwrap();
        assert_eq!(t.token.expose(), "tok1");
        assert_eq!(source.logins.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_token_cached_for_another_identity_is_never_sent() {
        let dir = tempfile::tempdir().unwrap();
        let source = Counting::default();
        let alice = TokenStore::new(dir.path(), "p").bound_to("https://a|alice");
        assert_eq!(alice.get(&source).await.unwrap().token.expose(), "tok0");
        // The profile now names another user: same file, different identity.
        let bob = TokenStore::new(dir.path(), "p").bound_to("https://a|bob");
        assert_eq!(bob.get(&source).await.unwrap().token.expose(), "tok1");
        let again = TokenStore::new(dir.path(), "p").bound_to("https://a|bob");
        assert_eq!(again.get(&source).await.unwrap().token.expose(), "tok1");
        assert_eq!(source.logins.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_stale_token_is_renewed_rather_than_logged_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let source = Counting {
            renews: true,
            lifetime: Some(chrono::Duration::seconds(-5)),
            ..Counting::default()
        };
        let store = TokenStore::new(dir.path(), "p");
        assert_eq!(store.get(&source).await.unwrap().token.expose(), "tok0");
        // tok0 was born expired: the next request renews it instead of logging in.
        let t = TokenStore::new(dir.path(), "p").get(&source).await.unwrap();
        assert_eq!(t.token.expose(), "ren-tok0");
        assert_eq!(source.logins.load(Ordering::SeqCst), 1);
        assert_eq!(source.renewals.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_refused_token_that_cannot_be_replaced_is_reported_at_once() {
        let source = Counting {
            fixed: true,
            ..Counting::default()
        };
        let e = TokenStore::in_memory()
            .with_token(&source, refuse_first)
            .await
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert_eq!(source.logins.load(Ordering::SeqCst), 1);
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

    /// A token source made of a closure, for tests that count or script logins.
    struct FnSource<F>(F);
    impl<F, Fut> TokenSource for FnSource<F>
    where
        F: Fn() -> Fut + Sync,
        Fut: Future<Output = Result<CachedToken>> + Send,
    {
        fn login(&self) -> impl Future<Output = Result<CachedToken>> + Send {
            (self.0)()
        }
    }

    struct Refusing;
    impl TokenSource for Refusing {
        async fn login(&self) -> Result<CachedToken> {
            Err(Error::auth("bad password"))
        }
    }

    #[tokio::test]
    async fn a_fresh_token_refused_after_renewal_is_transient_not_auth() {
        let store = TokenStore::in_memory();
        let logins = AtomicU32::new(0);
        let e = store
            .with_token(
                &FnSource(|| async {
                    logins.fetch_add(1, Ordering::SeqCst);
                    Ok(CachedToken::new("t", None))
                }),
                |_t: Arc<CachedToken>| async {
                    Err::<(), _>(Error::auth("refused").expired_token())
                },
            )
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE, "{e}");
        assert!(e.retryable);
        assert_eq!(
            logins.load(Ordering::SeqCst),
            2,
            "one renewal, then give up"
        );
    }

    #[tokio::test]
    async fn a_token_that_expired_during_retries_is_renewed_again() {
        let store = TokenStore::in_memory();
        let logins = AtomicU32::new(0);
        // Every token is refused until the third login, and each is already stale when refused.
        let seen = store
            .with_token(
                &FnSource(|| async {
                    let n = logins.fetch_add(1, Ordering::SeqCst);
                    let mut t = CachedToken::new(format!("t{n}"), Some(Utc::now()));
                    t.obtained_at = Some(Utc::now() - chrono::Duration::seconds(2));
                    Ok(t)
                }),
                |t: Arc<CachedToken>| async move {
                    if t.token.expose() == "t2" {
                        Ok(2)
                    } else {
                        Err(Error::auth("expired").expired_token())
                    }
                },
            )
            .await
            .unwrap();
        assert_eq!(seen, 2);
    }

    #[tokio::test]
    async fn a_refused_login_is_not_retried_forever() {
        let store = TokenStore::in_memory();
        let e = store
            .with_token(&Refusing, |_t: Arc<CachedToken>| async { Ok(()) })
            .await
            .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::AUTH);
    }
}
