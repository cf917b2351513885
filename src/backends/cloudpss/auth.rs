//! Login: the challenge/answer flow (`accountChallenge` → the PASSWORD item →
//! `createAccountToken`), or a pre-issued `CLOUDPSS_TOKEN` checked with `accountToken`.
//! Password tokens are cached per profile by [`TokenStore`], bound to the user and endpoint
//! they belong to, so changing either forces a fresh login.

use super::api::{
    Api, ChallengeQuery, CreateTokenMutation, TokenInfoQuery, challenge_query,
    create_token_mutation, token_info_query,
};
use crate::backend::BackendContext;
use crate::config::Secret;
use crate::error::{Error, ErrorKind, Result};
use crate::http::Idempotency;
use crate::http::token::{CachedToken, TokenSource, TokenStore};
use chrono::{DateTime, Utc};
use serde_json::json;

/// What the profile offers to prove who we are.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// User name and password: challenge and answer.
    Password {
        /// Account name.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// A pre-issued token (`CLOUDPSS_TOKEN`); it wins over a password when both are set.
    Token(Secret),
    /// Nothing configured.
    Missing,
}

/// Login and the token cache of one profile.
#[derive(Debug)]
pub struct Auth {
    creds: Credentials,
    store: TokenStore,
    profile: String,
    /// What to say when no credentials are configured (names this profile's keys).
    missing: Error,
}

fn expiry(raw: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(raw.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// A login-time refusal is final: it is not an expired token that another login could cure.
fn refused(e: Error, what: &str) -> Error {
    match e.kind {
        ErrorKind::Auth | ErrorKind::NotFound | ErrorKind::Usage => {
            let mut e2 = Error::auth(format!("{what}: {}", e.message));
            e2.code = e.code;
            e2
        }
        _ => e,
    }
}

impl Auth {
    /// Reads the credentials of the profile in `ctx`, whose GraphQL endpoint is `url`.
    pub fn new(ctx: &BackendContext, url: &url::Url) -> Self {
        let p = &ctx.profile;
        let creds = match (p.secret("token"), p.username.as_ref(), p.secret("password")) {
            (Some(t), _, _) => Credentials::Token(t.clone()),
            (None, Some(u), Some(pw)) => Credentials::Password {
                username: u.clone(),
                password: pw.clone(),
            },
            _ => Credentials::Missing,
        };
        // A pre-issued token is already at hand: keep it off the disk.
        let store = match &creds {
            Credentials::Password { username, .. } => {
                TokenStore::new(&ctx.cache_dir(), &p.name).bound_to(format!("{url}|{username}"))
            }
            _ => TokenStore::in_memory(),
        };
        Auth {
            creds,
            store,
            profile: p.name.clone(),
            missing: p.missing_credentials(&[&["username", "password"], &["token"]]),
        }
    }

    /// The token cache.
    pub fn store(&self) -> &TokenStore {
        &self.store
    }

    /// Which credentials are configured.
    pub fn credentials(&self) -> &Credentials {
        &self.creds
    }

    /// Obtains a token: logs in with the password, or checks the pre-issued token.
    pub async fn login(&self, api: &Api) -> Result<CachedToken> {
        // The answers carry tokens: no part of them may be quoted in an error.
        crate::http::redact::auth_exchange(self.login_exchange(api)).await
    }

    async fn login_exchange(&self, api: &Api) -> Result<CachedToken> {
        match &self.creds {
            Credentials::Missing => Err(self.missing.clone()),
            Credentials::Token(token) => self
                .inspect(api, token)
                .await
                .map_err(|e| refused(e, "CLOUDPSS_TOKEN was refused")),
            Credentials::Password { username, password } => self
                .password_login(api, username, password)
                .await
                .map_err(|e| refused(e, &format!("login as '{username}' refused"))),
        }
    }

    /// Asks the platform who owns `token` and until when it is valid.
    pub async fn inspect(&self, api: &Api, token: &Secret) -> Result<CachedToken> {
        let vars = token_info_query::Variables {
            input: token_info_query::AccountTokenInput {
                token: Some(token.expose().to_string()),
                sign: None,
            },
        };
        let reply = api
            .post::<TokenInfoQuery>(Some(token), vars, Idempotency::Idempotent)
            .await?;
        let info = reply.data.account_token;
        let mut t = CachedToken::new(token.expose(), expiry(&info.expiration_time));
        t.data = json!({ "user": info.user.name, "url": api.url().as_str() });
        Ok(t)
    }

    async fn password_login(
        &self,
        api: &Api,
        username: &str,
        password: &Secret,
    ) -> Result<CachedToken> {
        let vars = challenge_query::Variables {
            input: challenge_query::AccountChallengeInput {
                name: username.to_string(),
                scopes: None,
            },
        };
        let challenge = api
            .post::<ChallengeQuery>(None, vars, Idempotency::Idempotent)
            .await?
            .data
            .account_challenge;
        // The vendor's example looks in the first group; any group offering a password will do.
        let item = challenge
            .groups
            .iter()
            .flat_map(|g| g.items.iter())
            .find(|i| i.type_ == "PASSWORD")
            .ok_or_else(|| {
                Error::auth(format!(
                    "account '{username}' offers no password login; use a pre-issued CLOUDPSS_TOKEN"
                ))
            })?;
        let mut answer = serde_json::Map::new();
        answer.insert("password".into(), password.expose().into());
        let vars = create_token_mutation::Variables {
            input: create_token_mutation::CreateAccountTokenInput {
                id: challenge.id.clone(),
                answers: vec![create_token_mutation::AccountChallengeAnswerInput {
                    id: item.id.clone(),
                    answer,
                }],
                expiration_time: None,
            },
        };
        // Answering the same challenge twice only issues a second token: safe to retry.
        let created = api
            .post::<CreateTokenMutation>(None, vars, Idempotency::Idempotent)
            .await?
            .data
            .create_account_token;
        let mut t = CachedToken::new(created.token, expiry(&created.expiration_time));
        t.data = json!({ "user": created.user.name, "url": api.url().as_str() });
        tracing::debug!(profile = %self.profile, user = %created.user.name, "logged in to CloudPSS");
        Ok(t)
    }
}

/// Where the token store of a profile gets its tokens: [`Auth::login`] against one endpoint.
#[derive(Debug)]
pub struct Login<'a> {
    /// The profile's credentials.
    pub auth: &'a Auth,
    /// The endpoint.
    pub api: &'a Api,
}

impl TokenSource for Login<'_> {
    async fn login(&self) -> Result<CachedToken> {
        self.auth.login(self.api).await
    }
}

/// The user a token belongs to, as recorded at login.
pub fn user_of(token: &CachedToken) -> Option<String> {
    token
        .data
        .get("user")
        .and_then(|v| v.as_str())
        .map(str::to_string)
}
