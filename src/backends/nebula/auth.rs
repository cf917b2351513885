//! Connecting to Explorer and caching its `explorer_token` session cookie.
//!
//! `/connect` takes the NebulaGraph account as a base64 Bearer credential plus the graphd
//! address and port; the answer's cookie is what every other call presents. The cookie is cached
//! per profile with its `Max-Age`, bound to the URL, user and graphd it was issued for so that a
//! changed configuration never sends one server's session to another.

use super::api::{self, Api, codes};
use crate::config::{Profile, Secret};
use crate::error::{Error, ErrorKind, Result};
use crate::http::token::{CachedToken, TokenSource, TokenStore};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use std::sync::Arc;

/// How the account is encoded in the Bearer credential of `/connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthEncoding {
    /// base64 of the JSON array `["user","password"]` (current docs; the default).
    Json,
    /// base64 of `user:password` (Explorer 3.1/3.2 docs).
    Colon,
}

impl AuthEncoding {
    /// Parses the `auth_encoding` option.
    pub(crate) fn parse(raw: Option<&str>) -> Result<Self> {
        match raw.map(|s| s.trim().to_ascii_lowercase()).as_deref() {
            None | Some("") | Some("json") => Ok(AuthEncoding::Json),
            Some("colon") => Ok(AuthEncoding::Colon),
            Some(other) => Err(Error::usage(format!(
                "NEBULA_AUTH_ENCODING / auth_encoding must be `json` or `colon`, not `{other}`"
            ))),
        }
    }
}

/// The base64 Bearer credential for `/connect`.
pub(crate) fn bearer(username: &str, password: &Secret, encoding: AuthEncoding) -> Secret {
    let plain = match encoding {
        AuthEncoding::Json => json!([username, password.expose()]).to_string(),
        AuthEncoding::Colon => format!("{username}:{}", password.expose()),
    };
    Secret::new(STANDARD.encode(plain))
}

/// Everything `/connect` needs, checked before any request is sent.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    username: String,
    password: Secret,
    address: String,
    port: u16,
    encoding: AuthEncoding,
}

/// graphd's default port, used when NEBULA_PORT is not set.
const DEFAULT_GRAPHD_PORT: u16 = 9669;

impl Credentials {
    /// Reads the credentials from the profile, naming the variable to set when one is missing.
    pub(crate) fn from_profile(p: &Profile) -> Result<Self> {
        let username = p
            .username
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| p.missing_credentials(&[&["username", "password"]]))?;
        let password = p
            .secret("password")
            .cloned()
            .ok_or_else(|| p.missing_credentials(&[&["username", "password"]]))?;
        let address = p
            .option("address")
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .ok_or_else(|| {
                Error::usage(format!(
                    "profile '{}' has no graphd address: set NEBULA_ADDRESS or `address` (the NebulaGraph graphd host as the Explorer server sees it)",
                    p.name
                ))
            })?
            .to_string();
        let port = match p.option("port").map(str::trim) {
            None | Some("") => DEFAULT_GRAPHD_PORT,
            Some(raw) => raw.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                Error::usage(format!(
                    "profile '{}': NEBULA_PORT / `port` must be a port number, not `{raw}`",
                    p.name
                ))
            })?,
        };
        let encoding = AuthEncoding::parse(p.option("auth_encoding"))?;
        Ok(Credentials {
            username,
            password,
            address,
            port,
            encoding,
        })
    }
}

/// The session of one profile: its credentials, token cache and the API to connect with.
#[derive(Debug)]
pub(crate) struct Session {
    creds: Result<Credentials>,
    store: TokenStore,
}

impl Session {
    /// A session; a configuration problem is kept and reported by the first operation. The
    /// cached cookie is bound to the Explorer URL, user and graphd address, so a cookie of
    /// another server or user is never sent.
    pub(crate) fn new(creds: Result<Credentials>, store: TokenStore, api: Option<&Api>) -> Self {
        let store = match (&creds, api) {
            (Ok(c), Some(api)) => store.bound_to(Self::binding(api, c).to_string()),
            _ => store,
        };
        Session { creds, store }
    }

    fn creds(&self) -> Result<&Credentials> {
        self.creds.as_ref().map_err(Clone::clone)
    }

    /// What a cached cookie is bound to.
    fn binding(api: &Api, c: &Credentials) -> Value {
        json!({
            "url": api.base().as_str(),
            "username": c.username,
            "address": c.address,
            "port": c.port,
        })
    }

    /// Connects and returns the new session cookie as a cached token.
    pub(crate) async fn connect(&self, api: &Api) -> Result<CachedToken> {
        // The answer sets the session cookie: no part of it may be quoted in an error.
        crate::http::redact::auth_exchange(self.connect_exchange(api)).await
    }

    async fn connect_exchange(&self, api: &Api) -> Result<CachedToken> {
        let c = self.creds()?;
        let bearer = bearer(&c.username, &c.password, c.encoding);
        let resp = api
            .connect(&bearer, &c.address, c.port)
            .await
            .map_err(|e| connect_error(e, c))?;
        let (token, max_age) = api::session_cookie(&resp.headers).ok_or_else(|| {
            Error::protocol(format!(
                "connect succeeded but set no `{}` cookie",
                api::COOKIE_NAME
            ))
        })?;
        let expires_at = max_age.map(|s| chrono::Utc::now() + chrono::Duration::seconds(s.max(0)));
        let mut cached = CachedToken::new(token, expires_at);
        cached.data = Self::binding(api, c);
        Ok(cached)
    }

    /// Runs `op` with a valid cookie: cached while fresh, else a new connect; when the platform
    /// answers 40104000/40104001 the cookie is dropped and `op` is tried once more after one
    /// new connect.
    pub(crate) async fn with_token<T, F, Fut>(&self, api: &Api, op: F) -> Result<T>
    where
        F: Fn(Secret) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        self.creds()?;
        let source = Connect { session: self, api };
        self.store
            .with_token(&source, |t: Arc<CachedToken>| op(t.token.clone()))
            .await
    }

    /// Connects afresh and caches the cookie; returns when it expires.
    pub(crate) async fn login(&self, api: &Api) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let t = self.connect(api).await?;
        let expires = t.expires_at;
        self.store.put(t).await?;
        Ok(expires)
    }

    /// Forgets the cached cookie; true when there was one.
    pub(crate) async fn logout(&self) -> Result<bool> {
        self.store.clear().await
    }
}

/// The store's token source: a new `/connect` of one session against one Explorer.
struct Connect<'a> {
    session: &'a Session,
    api: &'a Api,
}

impl TokenSource for Connect<'_> {
    async fn login(&self) -> Result<CachedToken> {
        self.session.connect(self.api).await
    }
}

/// On `/connect`, codes mean something more specific than elsewhere: a bad request is how
/// Explorer refuses a wrong account, and a parameter error means the graphd address or port.
fn connect_error(e: Error, c: &Credentials) -> Error {
    match e.code.as_deref().and_then(|s| s.parse::<i64>().ok()) {
        Some(codes::BAD_REQUEST) => {
            let mut a = Error::auth(format!(
                "{} (user `{}` refused, or graphd {}:{} unreachable from Explorer)",
                e.message, c.username, c.address, c.port
            ));
            a.code = e.code;
            a
        }
        Some(codes::PARAM) => Error::usage(format!(
            "{}: check NEBULA_ADDRESS / NEBULA_PORT ({}:{})",
            e.message, c.address, c.port
        ))
        .with_code(codes::PARAM.to_string()),
        // A refused login is final: it must not look like an expired token.
        _ if e.kind == ErrorKind::Auth => {
            let mut a = Error::auth(format!("{} (user `{}`)", e.message, c.username));
            a.code = e.code;
            a
        }
        _ => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_matches_the_documented_examples() {
        let pw = Secret::new("123");
        assert_eq!(
            bearer("root", &pw, AuthEncoding::Json).expose(),
            "WyJyb290IiwiMTIzIl0="
        );
        assert_eq!(
            bearer("root", &pw, AuthEncoding::Colon).expose(),
            "cm9vdDoxMjM="
        );
    }

    #[test]
    fn encoding_option_is_checked() {
        assert_eq!(AuthEncoding::parse(None).unwrap(), AuthEncoding::Json);
        assert_eq!(
            AuthEncoding::parse(Some("COLON")).unwrap(),
            AuthEncoding::Colon
        );
        let e = AuthEncoding::parse(Some("base32")).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(e.message.contains("base32"));
    }

    #[test]
    fn missing_settings_name_their_variable() {
        let mut p = Profile::new("nebula", crate::config::BackendKind::Nebula);
        p.username = Some("root".into());
        p.secrets.insert("password".into(), Secret::new("pw"));
        let e = Credentials::from_profile(&p).unwrap_err();
        assert!(e.message.contains("NEBULA_ADDRESS"), "{e}");
        p.options.insert("address".into(), "graphd".into());
        p.options.insert("port".into(), "http".into());
        let e = Credentials::from_profile(&p).unwrap_err();
        assert!(e.message.contains("NEBULA_PORT"), "{e}");
        p.options.remove("port");
        let c = Credentials::from_profile(&p).unwrap();
        assert_eq!(c.port, 9669);
        assert!(!format!("{c:?}").contains("pw\""));
    }
}
