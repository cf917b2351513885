//! Logging in to octoplant: the OAuth2 password grant on `/v1/oauth2/token`, form-encoded,
//! with the API client's id and secret. The bearer token is cached per profile by
//! [`crate::http::token::TokenStore`]; the grant is simply repeated when the server refuses
//! it, since whether the server's refresh tokens work for the export API is not documented.

use super::api::classify;
use crate::config::{Profile, Secret};
use crate::error::{Error, ErrorKind, Result};
use crate::http::token::CachedToken;
use crate::http::{HttpClient, Idempotency, default_transient};
use chrono::Utc;
use serde::Deserialize;
use url::Url;

/// Client id of octoplant's public export API client.
pub const DEFAULT_CLIENT_ID: &str = "public-api";
/// The client secret octoplant's own documentation publishes for the `public-api` client
/// ("public client credentials", not a user secret); used only with that client id.
pub const PUBLIC_CLIENT_SECRET: &str = "ff99971a-f8c3-4d21-5345-f7cb021b4b54";

/// What the password grant needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User name (`DOMAIN\user` accepted as is).
    pub username: String,
    /// The user's password.
    pub password: Secret,
    /// OAuth2 client id.
    pub client_id: String,
    /// OAuth2 client secret.
    pub client_secret: Secret,
    /// Where this profile sets the client id and secret, for the hint of a refused client.
    pub client_settings: String,
}

impl Credentials {
    /// Reads the credentials of a profile, or explains which setting is missing (exit 2).
    pub fn from_profile(profile: &Profile) -> Result<Self> {
        let username = profile
            .username
            .clone()
            .filter(|u| !u.trim().is_empty())
            .ok_or_else(|| profile.missing_credentials(&[&["username", "password"]]))?;
        let password = profile
            .secret("password")
            .cloned()
            .ok_or_else(|| profile.missing_credentials(&[&["username", "password"]]))?;
        let client_id = profile
            .option("client_id")
            .filter(|c| !c.trim().is_empty())
            .unwrap_or(DEFAULT_CLIENT_ID)
            .to_string();
        let client_secret = match profile.secret("client_secret") {
            Some(s) => s.clone(),
            None if client_id == DEFAULT_CLIENT_ID => Secret::new(PUBLIC_CLIENT_SECRET),
            None => {
                return Err(Error::usage(format!(
                    "profile '{}' has no client secret for client id '{client_id}': set {}",
                    profile.name,
                    profile.setting_name("client_secret")
                )));
            }
        };
        Ok(Credentials {
            username,
            password,
            client_id,
            client_secret,
            client_settings: format!(
                "{} / {}",
                profile.setting_name("client_id"),
                profile.setting_name("client_secret")
            ),
        })
    }
}

impl Credentials {
    /// Who a token was issued to: cached tokens of another server, user or client are not
    /// reused when the profile is pointed elsewhere.
    pub fn identity(&self, url: &Url) -> serde_json::Value {
        serde_json::json!({
            "url": url.as_str(),
            "username": self.username,
            "client_id": self.client_id,
        })
    }
}

/// The token endpoint's answer (RFC 6749 section 5.1; the swagger leaves it undocumented).
#[derive(Debug, Deserialize)]
struct TokenResponse {
    access_token: Option<String>,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// An OAuth2 error answer (`{error, error_description}`), the other shape a token endpoint
/// may use for failures.
#[derive(Debug, Deserialize)]
struct OAuthError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

/// Runs the password grant and returns the token with its expiry, tagged with `identity`.
pub async fn password_grant(
    http: &HttpClient,
    url: &Url,
    creds: &Credentials,
    identity: serde_json::Value,
) -> Result<CachedToken> {
    // The answer carries the access token: no part of it may be quoted in an error.
    crate::http::redact::auth_exchange(grant(http, url, creds, identity)).await
}

async fn grant(
    http: &HttpClient,
    url: &Url,
    creds: &Credentials,
    identity: serde_json::Value,
) -> Result<CachedToken> {
    let form = [
        ("grant_type", "password"),
        ("username", creds.username.as_str()),
        ("password", creds.password.expose()),
        ("client_id", creds.client_id.as_str()),
        ("client_secret", creds.client_secret.expose()),
    ];
    let body = serde_urlencoded::to_string(form)
        .map_err(|e| Error::usage(format!("cannot encode the login form: {e}")))?;
    // A login has no side effect worth protecting, so it is retried like a read.
    let resp = http
        .send(Idempotency::Idempotent, default_transient, |c| {
            c.post(url.clone())
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .header(reqwest::header::ACCEPT, "application/json")
                .body(body.clone())
        })
        .await?;
    if !resp.status.is_success() {
        return Err(login_refused(resp.status, &resp.body, creds));
    }
    let tr: TokenResponse = resp.json()?;
    let token = tr
        .access_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::protocol("the token endpoint answered without an access_token"))?;
    if let Some(tt) = &tr.token_type {
        if !tt.eq_ignore_ascii_case("bearer") {
            tracing::warn!(token_type = %tt, "unexpected token type; sending it as a bearer token");
        }
    }
    let ttl = tr.expires_in.and_then(|v| match v {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    });
    let expires_at = ttl
        .filter(|s| *s > 0)
        .map(|s| Utc::now() + chrono::Duration::seconds(s));
    let mut cached = CachedToken::new(token, expires_at);
    cached.data = identity;
    Ok(cached)
}

/// What an OAuth2 error code means, for answers without a description; `client_settings`
/// names where the profile sets its client id and secret.
fn oauth_meaning(error: &str, client_settings: &str) -> String {
    match error {
        "invalid_grant" => "wrong user name or password".into(),
        "invalid_client" => format!("the client id or secret was refused ({client_settings})"),
        "unauthorized_client" => "this client may not use the password grant".into(),
        "unsupported_grant_type" => "the password grant is not enabled".into(),
        "invalid_scope" => "the requested scope was refused".into(),
        _ => "no description".into(),
    }
}

/// The error for a refused grant. A refused login is final: it is never marked as an expired
/// token, so it is not retried.
fn login_refused(status: reqwest::StatusCode, body: &[u8], creds: &Credentials) -> Error {
    let user = &creds.username;
    if let Ok(o) = serde_json::from_slice::<OAuthError>(body) {
        let kind = if status.is_server_error() || status.as_u16() == 429 {
            ErrorKind::Unavailable
        } else if matches!(
            o.error.as_str(),
            "invalid_request" | "unsupported_grant_type"
        ) {
            ErrorKind::Usage
        } else {
            ErrorKind::Auth
        };
        let desc = o
            .error_description
            .filter(|d| !d.trim().is_empty())
            .unwrap_or_else(|| oauth_meaning(&o.error, &creds.client_settings));
        return Error::new(
            kind,
            format!("login as {user} refused ({}): {}", o.error, desc.trim()),
        )
        .with_code(o.error);
    }
    if status == reqwest::StatusCode::NOT_FOUND
        && serde_json::from_slice::<serde_json::Value>(body).is_err()
    {
        // Not an octoplant answer at all: most likely the URL points elsewhere.
        return Error::protocol(format!(
            "the server has no token endpoint (HTTP 404): check that the URL is the octoplant API, e.g. https://HOST:64023 (login as {user})"
        ))
        .with_code("404");
    }
    let mut e = classify(status, body);
    e.token_expired = false;
    if matches!(status.as_u16(), 400 | 401 | 403) && e.kind != ErrorKind::Usage {
        e.kind = ErrorKind::Auth;
    }
    e.message = format!("login as {user} refused: {}", e.message);
    e
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendKind;

    #[test]
    fn credentials_default_to_the_public_client() {
        let mut p = Profile::new("octoplant", BackendKind::Octoplant);
        let e = Credentials::from_profile(&p).unwrap_err();
        assert!(e.message.contains("OCTOPLANT_USERNAME"), "{e}");
        p.username = Some("alice".into());
        let e = Credentials::from_profile(&p).unwrap_err();
        assert!(e.message.contains("OCTOPLANT_PASSWORD"), "{e}");
        p.secrets.insert("password".into(), Secret::new("pw"));
        let c = Credentials::from_profile(&p).unwrap();
        assert_eq!(c.client_id, DEFAULT_CLIENT_ID);
        assert_eq!(c.client_secret.expose(), PUBLIC_CLIENT_SECRET);
        // Another client has no published secret: it must be configured.
        p.options.insert("client_id".into(), "my-client".into());
        let e = Credentials::from_profile(&p).unwrap_err();
        assert!(e.message.contains("OCTOPLANT_CLIENT_SECRET"), "{e}");
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
    }

    #[test]
    fn refused_logins_are_final_auth_errors() {
        let body = br#"{"code":16,"message":"invalid username or password","details":[]}"#;
        let e = login_refused(reqwest::StatusCode::UNAUTHORIZED, body, &bob());
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(!e.token_expired);
        assert!(
            e.message.contains("UNAUTHENTICATED") && e.message.contains("bob"),
            "{e}"
        );
        let e = login_refused(
            reqwest::StatusCode::BAD_REQUEST,
            br#"{"error":"invalid_grant","error_description":"bad password"}"#,
            &bob(),
        );
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (ErrorKind::Auth, Some("invalid_grant"))
        );
        assert_eq!(
            e.message,
            "login as bob refused (invalid_grant): bad password"
        );
        let e = login_refused(
            reqwest::StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client"}"#,
            &bob(),
        );
        assert_eq!(e.exit_code(), crate::error::exit::AUTH);
        assert!(
            e.message
                .contains("OCTOPLANT_CLIENT_ID / OCTOPLANT_CLIENT_SECRET"),
            "{e}"
        );
        let e = login_refused(reqwest::StatusCode::BAD_GATEWAY, b"<html>", &bob());
        assert_eq!(e.kind, ErrorKind::Unavailable);
        let e = login_refused(reqwest::StatusCode::NOT_FOUND, b"", &bob());
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
        assert!(e.message.contains("octoplant API"), "{e}");
    }

    #[test]
    fn a_refused_client_names_the_settings_of_the_profile_in_use() {
        let mut p = Profile::new("plant-a", BackendKind::Octoplant);
        p.username = Some("bob".into());
        p.secrets.insert("password".into(), Secret::new("pw"));
        p.options.insert("client_id".into(), "my-client".into());
        let e = Credentials::from_profile(&p).unwrap_err();
        assert!(
            e.message.contains("`client_secret_env`") && !e.message.contains("OCTOPLANT_"),
            "{e}"
        );
        p.secrets.insert("client_secret".into(), Secret::new("s"));
        let creds = Credentials::from_profile(&p).unwrap();
        let e = login_refused(
            reqwest::StatusCode::UNAUTHORIZED,
            br#"{"error":"invalid_client"}"#,
            &creds,
        );
        assert!(
            e.message.contains("(`client_id` / `client_secret_env`)"),
            "{e}"
        );
        assert!(!e.message.contains("OCTOPLANT_"), "{e}");
    }

    /// Credentials of user bob in the built-in profile.
    fn bob() -> Credentials {
        let mut p = Profile::new("octoplant", BackendKind::Octoplant);
        p.username = Some("bob".into());
        p.secrets.insert("password".into(), Secret::new("pw"));
        Credentials::from_profile(&p).unwrap()
    }
}
