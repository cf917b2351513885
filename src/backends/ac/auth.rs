//! Tokens and discovery.
//!
//! The platform issues one token per region. jobctl keeps the token of the region it works in
//! (the configured one, else the first usable) in the profile's [`TokenStore`], bound to the
//! platform URL, user and region; [`Auth`] is the store's [`TokenSource`]: it renews a token
//! with `/tokens/next` when it is about to expire, and logs in when there is none or the
//! platform refused it.
//! Discovery (`/center` for the region's hosts, `/cluster` for the scheduler id, `/user` for the
//! home directory) runs once per profile and is cached next to the token.
//!
//! Two logins produce the same per-region token list: AK/SK ([`aksk_login`], what SCNet users
//! have) and password + orgId (what integrators have). Renewal does not care which one it was.

use super::api::{Api, Names, RegionToken, code_string, decode, join, region_tokens, transient};
use crate::config::{Profile, Secret};
use crate::error::{Error, ErrorKind, Result};
use crate::http::Idempotency;
use crate::http::token::{CachedToken, TokenSource, TokenStore, write_private};
use base64::Engine;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::Sha256;
use std::path::PathBuf;
use std::sync::Arc;
use url::Url;

/// The AK/SK signature: HMAC-SHA256 with the secret key over the compact JSON
/// `{"accessKey":…,"timestamp":…,"user":…}` (keys sorted, no spaces), as lowercase hex.
pub fn signature(access_key: &str, timestamp: &str, user: &str, secret_key: &Secret) -> String {
    // Built by hand rather than through a JSON map so the key order never depends on which
    // serde_json features the build happens to unify.
    let text = format!(
        "{{\"accessKey\":{},\"timestamp\":{},\"user\":{}}}",
        Value::from(access_key),
        Value::from(timestamp),
        Value::from(user)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret_key.expose().as_bytes()) else {
        // HMAC takes keys of any length; this branch cannot be reached.
        return String::new();
    };
    mac.update(text.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `POST {login}/api/user/v3/tokens` signed with the access key: the same per-region token
/// list as the password login.
pub async fn aksk_login(
    api: &Api,
    login: &Url,
    user: &str,
    access_key: &str,
    secret_key: &Secret,
) -> Result<Vec<RegionToken>> {
    let url = join(login, "/api/user/v3/tokens")?;
    let resp = api
        .http
        .send(Idempotency::Idempotent, transient, |c| {
            // Signed per attempt: a retry after a backoff must not carry a stale timestamp.
            let ts = Utc::now().timestamp().to_string();
            c.post(url.clone())
                .header("user", user)
                .header("accessKey", access_key)
                .header("signature", signature(access_key, &ts, user, secret_key))
                .header("timestamp", ts)
        })
        .await?;
    let data = decode(&resp).map_err(|e| aksk_refused(e, &api.names))?;
    region_tokens(&data)
}

/// A refused AK/SK login is an authentication failure whatever code carried it (the platform
/// answers a bad signature or a stale timestamp as a parameter problem); trouble on the
/// platform's side stays what it is.
fn aksk_refused(mut e: Error, names: &Names) -> Error {
    e.token_expired = false;
    let platform_trouble = matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Protocol)
        || e.code.as_deref() == Some("10001");
    if !platform_trouble {
        e.kind = ErrorKind::Auth;
        e.retryable = false;
        e.message.push_str(&format!(
            " (the AK/SK login was refused: check {} and {}, that {} is the current platform login name, and this machine's clock)",
            names.get("access_key"),
            names.get("secret_key"),
            names.get("username"),
        ));
    }
    e
}

/// Renewal stops working once a token has been expired for this long (platform rule).
const RENEWAL_LIMIT: chrono::Duration = chrono::Duration::hours(24);

/// What jobctl reads from a token's JWT payload (without verifying it: it is ours to send, not
/// to trust).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Claims {
    /// `computeUser`: the cluster's Unix user.
    pub compute_user: Option<String>,
    /// `expireTime` (epoch milliseconds).
    pub expires_at: Option<DateTime<Utc>>,
    /// `clusterId`: the region the token belongs to (`0` = platform token).
    pub cluster_id: Option<String>,
}

/// Decodes the claims of a JWT-shaped token; anything else gives empty claims.
pub fn claims(token: &str) -> Claims {
    let Some(payload) = token.split('.').nth(1) else {
        return Claims::default();
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok();
    let Some(v) = bytes.and_then(|b| serde_json::from_slice::<Value>(&b).ok()) else {
        return Claims::default();
    };
    let s = |k: &str| {
        v.get(k)
            .map(code_string)
            .filter(|s| !s.is_empty() && s != "null")
    };
    Claims {
        compute_user: s("computeUser"),
        expires_at: s("expireTime")
            .and_then(|ms| ms.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis),
        cluster_id: s("clusterId"),
    }
}

/// Credentials and region choice of a profile.
#[derive(Debug)]
pub struct Auth {
    /// Raw requests.
    pub api: Api,
    /// The platform host.
    pub ac: Url,
    /// The AK/SK login host (`AC_LOGIN_URL`).
    pub login_url: Url,
    /// `AC_USER`.
    pub user: Option<String>,
    /// `AC_ACCESS_KEY`.
    pub access_key: Option<String>,
    /// `AC_SECRET_KEY`.
    pub secret_key: Option<Secret>,
    /// `AC_PASSWORD`.
    pub password: Option<Secret>,
    /// `AC_ORG_ID`.
    pub org_id: Option<String>,
    /// `AC_TOKEN`, a pre-issued regional token.
    pub preissued: Option<Secret>,
    /// `AC_REGION`: a clusterId or clusterName.
    pub region: Option<String>,
    /// The token cache, bound to [`Auth::key`].
    pub store: TokenStore,
    /// The error for a profile without usable credentials ([`missing_credentials`]).
    pub missing: Error,
}

/// The error for a profile without usable credentials (exit 2). It names the keys of *that*
/// profile (the `AC_*` variables for the built-in one, its config keys for a configured one),
/// and which part of an AK/SK login is missing when only some of it is set.
pub fn missing_credentials(p: &Profile, user: bool, access_key: bool, secret_key: bool) -> Error {
    let mut e = p.missing_credentials(&[
        &["username", "access_key", "secret_key"],
        &["username", "password", "org_id"],
        &["token"],
    ]);
    let absent = match (user, access_key, secret_key) {
        (false, true, _) | (false, _, true) => Some("username"),
        (true, true, false) => Some("secret_key"),
        (true, false, true) => Some("access_key"),
        _ => None,
    };
    if let Some(key) = absent {
        e.message
            .push_str(&format!(" ({} is missing)", p.setting_name(key)));
    }
    e
}

impl Auth {
    /// Identifies whose token a cached one is, so a changed user, URL or region is noticed.
    pub fn key(&self) -> String {
        format!(
            "{}|{}|{}",
            self.ac,
            self.user.as_deref().unwrap_or(""),
            self.region.as_deref().unwrap_or("")
        )
    }

    fn uses_password(&self) -> bool {
        self.user.is_some() && self.password.is_some()
    }

    fn uses_aksk(&self) -> bool {
        self.user.is_some() && self.access_key.is_some() && self.secret_key.is_some()
    }

    /// The host a login talks to: the AK/SK login host, else the platform host.
    pub fn login_host(&self) -> &Url {
        if self.uses_aksk() {
            &self.login_url
        } else {
            &self.ac
        }
    }

    /// The name of setting `key` as this profile spells it (see [`Names`]).
    fn name(&self, key: &str) -> String {
        self.api.names.get(key)
    }

    /// The settings of an AK/SK login, as this profile spells them.
    fn login_settings(&self) -> String {
        format!(
            "{}, {} and {}",
            self.name("username"),
            self.name("access_key"),
            self.name("secret_key")
        )
    }

    /// Whether jobctl can log in by itself (AK/SK or password), rather than only use a
    /// pre-issued token.
    pub fn can_login(&self) -> bool {
        self.uses_aksk() || self.uses_password()
    }

    /// A usable token for the profile's region.
    pub async fn token(&self) -> Result<Arc<CachedToken>> {
        self.store.get(self).await
    }

    /// Adds a hint to an authentication failure of a pre-issued token.
    pub fn explain(&self, mut e: Error) -> Error {
        if e.kind == ErrorKind::Auth && !self.can_login() && self.preissued.is_some() {
            e.message.push_str(&format!(
                " (the pre-issued {} was refused: issue a new one, or set {})",
                self.name("token"),
                self.login_settings()
            ));
        }
        e
    }

    /// A fresh token: a password login, or the pre-issued token (renewed when it expired).
    pub async fn obtain(&self) -> Result<CachedToken> {
        if self.can_login() {
            return self.region_login().await;
        }
        if let Some(tok) = &self.preissued {
            let c = claims(tok.expose());
            if c.cluster_id.as_deref() == Some("0") {
                return Err(Error::usage(format!(
                    "{} is the platform token (clusterId 0), which the job APIs refuse: give a regional token, or set {}",
                    self.name("token"),
                    self.login_settings()
                )));
            }
            let data = json!({"key": self.key(), "region_id": c.cluster_id});
            let expired = c.expires_at.is_some_and(|t| t <= Utc::now());
            if expired {
                let new = self.api.renew(&self.ac, tok).await.map_err(|mut e| {
                    e.message = format!(
                        "{} has expired and cannot be renewed: {}",
                        self.name("token"),
                        e.message
                    );
                    e
                })?;
                return Ok(self.cached(new, &data));
            }
            return Ok(self.cached(tok.clone(), &data));
        }
        Err(self.missing.clone())
    }

    fn cached(&self, token: Secret, data: &Value) -> CachedToken {
        let c = claims(token.expose());
        let mut data = data.clone();
        if let (Some(obj), Some(u)) = (data.as_object_mut(), &c.compute_user) {
            obj.insert("compute_user".into(), Value::String(u.clone()));
        }
        CachedToken {
            token,
            expires_at: c.expires_at,
            data,
            obtained_at: Some(chrono::Utc::now()),
            identity: None,
        }
    }

    /// Logs in (AK/SK when configured, else password); picks the configured region, else the
    /// first usable one.
    pub async fn region_login(&self) -> Result<CachedToken> {
        let regions = match (
            &self.user,
            &self.access_key,
            &self.secret_key,
            &self.password,
        ) {
            (Some(user), Some(ak), Some(sk), _) => {
                aksk_login(&self.api, &self.login_url, user, ak, sk).await?
            }
            (Some(user), _, _, Some(password)) => {
                self.api
                    .login(&self.ac, user, password, self.org_id.as_deref())
                    .await?
            }
            _ => {
                return Err(Error::usage(format!(
                    "logging in needs {} with {} and {}, or with {}",
                    self.name("username"),
                    self.name("access_key"),
                    self.name("secret_key"),
                    self.name("password")
                )));
            }
        };
        let chosen = choose_region(&regions, self.region.as_deref(), &self.api.names)?;
        let token = chosen.token.clone().ok_or_else(|| {
            Error::auth(format!(
                "region {} ({}) has no token for this account (suspended or unpaid?)",
                chosen.cluster_name, chosen.cluster_id
            ))
        })?;
        Ok(self.cached(
            token,
            &json!({
                "key": self.key(),
                "region_id": chosen.cluster_id,
                "region_name": chosen.cluster_name,
            }),
        ))
    }
}

impl TokenSource for Auth {
    async fn login(&self) -> Result<CachedToken> {
        self.obtain().await
    }

    /// `/tokens/next` trades a password token that expired less than a day ago (platform rule)
    /// or is about to for a new one, without sending the password again.
    async fn renew(&self, stale: &CachedToken) -> Result<Option<CachedToken>> {
        let recent = stale
            .expires_at
            .is_some_and(|e| Utc::now() - e < RENEWAL_LIMIT);
        if !self.can_login() || !recent {
            return Ok(None);
        }
        let new = self.api.renew(&self.ac, &stale.token).await?;
        Ok(Some(self.cached(new, &stale.data)))
    }

    /// AC refuses stale tokens with its permission codes, so a refusal that survives a fresh
    /// login is a real permission problem.
    fn fresh_refusal_is_transient(&self) -> bool {
        false
    }
}

/// The region to work in: `wanted` by id or name, else the first with a token that is not the
/// platform token.
pub fn choose_region<'a>(
    regions: &'a [RegionToken],
    wanted: Option<&str>,
    settings: &Names,
) -> Result<&'a RegionToken> {
    let usable = |r: &&RegionToken| r.cluster_id != "0";
    if let Some(w) = wanted {
        return regions
            .iter()
            .filter(usable)
            .find(|r| r.cluster_id == w || r.cluster_name.eq_ignore_ascii_case(w))
            .ok_or_else(|| {
                let names: Vec<String> = regions
                    .iter()
                    .filter(usable)
                    .map(|r| format!("{} ({})", r.cluster_name, r.cluster_id))
                    .collect();
                Error::usage(format!(
                    "{} '{w}' is not one of this account's regions: {}",
                    settings.get("region"),
                    if names.is_empty() {
                        "none".to_string()
                    } else {
                        names.join(", ")
                    }
                ))
            });
    }
    regions
        .iter()
        .filter(usable)
        .find(|r| r.token.is_some())
        .ok_or_else(|| {
            Error::auth("the AC account has no usable region (every regional token is empty)")
        })
}

/// Where the job and file APIs of the profile's region live.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Site {
    /// Which token key and region this was discovered for.
    pub key: String,
    /// `scheme://host:port` of the hpc service.
    pub hpc: String,
    /// Base of the efile service, ending in `/efile`.
    pub efile: String,
    /// Default scheduler id.
    pub scheduler: String,
    /// The cluster user (owner of jobs, `strJobInfoMap` user).
    pub compute_user: Option<String>,
    /// The cluster user's home directory, once looked up.
    pub home: Option<String>,
}

impl Site {
    /// The hpc base as a URL.
    pub fn hpc_url(&self) -> Result<Url> {
        Url::parse(&self.hpc)
            .map_err(|e| Error::usage(format!("invalid AC hpc URL '{}': {e}", self.hpc)))
    }
    /// The efile base as a URL.
    pub fn efile_url(&self) -> Result<Url> {
        Url::parse(&self.efile)
            .map_err(|e| Error::usage(format!("invalid AC efile URL '{}': {e}", self.efile)))
    }
}

/// Where `needle` starts in the path part of `url` (not in its host).
fn path_find(url: &str, needle: &str) -> Option<usize> {
    let host_start = url.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = host_start + url[host_start..].find('/')?;
    url[path_start..].find(needle).map(|i| path_start + i)
}

/// Keeps only what precedes `/hpc` in a listed hpc URL (`/center` lists service URLs, the job
/// paths add `/hpc/openapi/v2` themselves).
pub fn normalize_hpc(raw: &str) -> String {
    let t = raw.trim().trim_end_matches('/');
    match path_find(t, "/hpc") {
        Some(i) => t[..i].to_string(),
        None => t.to_string(),
    }
}

/// Makes an efile URL end in `/efile`, as the file paths expect.
pub fn normalize_efile(raw: &str) -> String {
    let t = raw.trim().trim_end_matches('/');
    match path_find(t, "/efile") {
        Some(i) => format!("{}/efile", &t[..i]),
        None => format!("{t}/efile"),
    }
}

/// The first enabled URL of a `/center` list (`enable` may be a boolean or a string; entries
/// without it count as enabled).
pub fn enabled_url(list: Option<&Value>) -> Option<String> {
    list?.as_array()?.iter().find_map(|e| {
        let url = match e {
            Value::String(s) => return Some(s.clone()),
            Value::Object(o) => o.get("url")?.as_str()?.to_string(),
            _ => return None,
        };
        let enabled = match e.get("enable") {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(v) => code_string(v).eq_ignore_ascii_case("true"),
        };
        enabled.then_some(url)
    })
}

/// Reads and writes the discovery cache of one profile.
#[derive(Debug)]
pub struct SiteCache {
    /// `<cache>/<profile>.ac-site.json`.
    pub path: PathBuf,
}

impl SiteCache {
    /// The cached site for `key`, if any.
    pub fn load(&self, key: &str) -> Option<Site> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        serde_json::from_str::<Site>(&text)
            .ok()
            .filter(|s| s.key == key)
    }
    /// Stores `site` (owner-only file).
    pub fn save(&self, site: &Site) -> Result<()> {
        let bytes =
            serde_json::to_vec_pretty(site).map_err(|e| Error::io("AC discovery cache", e))?;
        write_private(&self.path, &bytes)
    }
    /// Forgets the cache.
    pub fn clear(&self) -> Result<bool> {
        if self.path.exists() {
            std::fs::remove_file(&self.path).map_err(|e| Error::io(self.path.display(), e))?;
            return Ok(true);
        }
        Ok(false)
    }
}

/// Configured overrides of discovery (`AC_HPC_URL`, `AC_EFILE_URL`, `AC_SCHEDULER_ID`).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `hpc_url`.
    pub hpc: Option<String>,
    /// `efile_url`.
    pub efile: Option<String>,
    /// `scheduler_id`.
    pub scheduler: Option<String>,
}

/// Discovers what `overrides` leaves open, using the regional token: the region's hosts and
/// cluster user from `/center`, the scheduler id from `/cluster`.
pub async fn discover(
    api: &Api,
    ac: &Url,
    token: &CachedToken,
    overrides: &Overrides,
    key: String,
) -> Result<Site> {
    let mut site = Site {
        key,
        compute_user: token
            .data
            .get("compute_user")
            .and_then(Value::as_str)
            .map(str::to_string),
        ..Site::default()
    };
    if overrides.hpc.is_none() || overrides.efile.is_none() {
        discover_hosts(api, ac, token, overrides, &mut site).await?;
    }
    if let Some(h) = &overrides.hpc {
        site.hpc = normalize_hpc(h);
    }
    if let Some(e) = &overrides.efile {
        site.efile = normalize_efile(e);
    }
    site.scheduler = match &overrides.scheduler {
        Some(s) => s.clone(),
        None => discover_scheduler(api, token, &site).await?,
    };
    Ok(site)
}

/// The `/center` entry of the token's region. Documented as an array of regions, observed as
/// one object per regional token.
fn region_info(data: &Value, region_id: Option<&str>, region_name: Option<&str>) -> Value {
    match data {
        Value::Array(items) => items
            .iter()
            .find(|i| {
                let id = i.get("id").or_else(|| i.get("clusterId")).map(code_string);
                let name = i
                    .get("name")
                    .or_else(|| i.get("clusterName"))
                    .and_then(Value::as_str);
                (region_id.is_some() && id.as_deref() == region_id)
                    || (region_name.is_some() && name == region_name)
            })
            .or_else(|| items.first())
            .cloned()
            .unwrap_or(Value::Null),
        other => other.clone(),
    }
}

/// Fills the hpc and efile hosts (those not overridden), the cluster user and the home
/// directory from `/center`.
async fn discover_hosts(
    api: &Api,
    ac: &Url,
    token: &CachedToken,
    overrides: &Overrides,
    site: &mut Site,
) -> Result<()> {
    let data = api
        .get(&join(ac, "/ac/openapi/v2/center")?, &token.token, &[])
        .await?;
    let region_id = token.data.get("region_id").and_then(Value::as_str);
    let region_name = token.data.get("region_name").and_then(Value::as_str);
    let info = region_info(&data, region_id, region_name);
    let region = region_name.or(region_id).unwrap_or("?");
    let listed = |key: &str, variable: &str| {
        enabled_url(info.get(key)).ok_or_else(|| {
            Error::platform(format!(
                "the AC platform lists no enabled {} URL for region {region}; set {variable}",
                if key == "hpcUrls" { "hpc" } else { "efile" }
            ))
        })
    };
    if overrides.hpc.is_none() {
        site.hpc = normalize_hpc(&listed("hpcUrls", &api.names.get("hpc_url"))?);
    }
    if overrides.efile.is_none() {
        site.efile = normalize_efile(&listed("efileUrls", &api.names.get("efile_url"))?);
    }
    // Clients read the cluster user and home from a nested `clusterUserInfo`; flat fields
    // are the older shape.
    let user_info = info.get("clusterUserInfo");
    let field = |nested: &str, flat: &str| {
        user_info
            .and_then(|u| u.get(nested))
            .or_else(|| info.get(flat))
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    if site.compute_user.is_none() {
        site.compute_user = field("userName", "clusterUserName");
    }
    site.home = field("homePath", "homePath");
    Ok(())
}

/// The region's default scheduler id, the first `/cluster` lists.
async fn discover_scheduler(api: &Api, token: &CachedToken, site: &Site) -> Result<String> {
    let data = api
        .get(
            &join(&site.hpc_url()?, "/hpc/openapi/v2/cluster")?,
            &token.token,
            &[],
        )
        .await?;
    data.as_array()
        .and_then(|a| a.iter().find_map(|c| c.get("id").map(code_string)))
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            Error::platform(format!(
                "the AC platform lists no scheduler for this region; set {}",
                api.names.get("scheduler_id")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendKind;

    fn region(id: &str, name: &str, token: Option<&str>) -> RegionToken {
        RegionToken {
            cluster_id: id.into(),
            cluster_name: name.into(),
            token: token.map(Secret::new),
        }
    }

    #[test]
    fn region_choice_skips_platform_and_empty_tokens() {
        let rs = vec![
            region("0", "ac", Some("p")),
            region("1", "frozen", None),
            region("2", "east", Some("e")),
            region("3", "west", Some("w")),
        ];
        assert_eq!(
            choose_region(&rs, None, &Names::default())
                .unwrap()
                .cluster_id,
            "2"
        );
        assert_eq!(
            choose_region(&rs, Some("WEST"), &Names::default())
                .unwrap()
                .cluster_id,
            "3"
        );
        assert_eq!(
            choose_region(&rs, Some("3"), &Names::default())
                .unwrap()
                .cluster_id,
            "3"
        );
        let e = choose_region(&rs, Some("north"), &Names::default()).unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::USAGE);
        assert!(e.message.contains("east (2)"), "{e}");
        assert!(e.message.contains("north"));
        assert!(choose_region(&rs, Some("ac"), &Names::default()).is_err());
        assert!(choose_region(&rs[..2], None, &Names::default()).is_err());
    }

    #[test]
    fn signatures_match_an_independent_hmac_sha256() {
        // Reference value computed with Python's hmac/hashlib over the same compact JSON.
        let sig = signature("ak-1", "1764100000", "alice", &Secret::new("sk-1"));
        assert_eq!(
            sig,
            "058e14d242be388919e16246bdceb528f8a324c871903a5ff5766c5f38960096"
        );
        assert_eq!(sig.len(), 64);
        assert!(
            sig.chars()
                .all(|c| c.is_ascii_digit() || c.is_ascii_lowercase())
        );
        assert_ne!(
            sig,
            signature("ak-1", "1764100001", "alice", &Secret::new("sk-1"))
        );
    }

    #[test]
    fn refused_aksk_logins_are_auth_errors_but_outages_are_not() {
        let names = Names::of(&Profile::new("ac", BackendKind::Ac));
        let refused =
            || Error::usage("AC error 10004 (invalid parameters): 签名错误").with_code("10004");
        let e = aksk_refused(refused(), &names);
        assert_eq!(e.exit_code(), 4);
        assert!(
            e.message.contains("AC_SECRET_KEY") && e.message.contains("签名错误"),
            "{e}"
        );
        let e = aksk_refused(
            Error::platform("AC error 10001 (internal error): x").with_code("10001"),
            &names,
        );
        assert_eq!(e.exit_code(), 7);
        let e = aksk_refused(Error::unavailable("down"), &names);
        assert_eq!(e.exit_code(), 7);
        // A configured profile reads its own keys, not the AC_* variables: the hint names them.
        let e = aksk_refused(refused(), &Names::of(&Profile::new("hpc", BackendKind::Ac)));
        assert!(
            e.message.contains("`secret_key_env`")
                && e.message.contains("`access_key`")
                && !e.message.contains("AC_"),
            "{e}"
        );
    }

    #[test]
    fn documented_sample_token_claims() {
        let tok = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjb21wdXRlVXNlciI6InNsdXJtdGVzdCIsImFjY291bnRTdGF0dXMiOiJUcmlhbCIsImNyZWF0b3IiOiJhYyIsInJvbGUiOiIxIiwiZXhwaXJlVGltZSI6IjE2ODU2MDAyMjU2MTUiLCJjbHVzdGVySWQiOiIxMTExMiIsImludm9rZXIiOiI2MDQ4Y2U3YmExNWMyYWYyZThjZWMxMjk5MWVjMTNjZiIsInVzZXIiOiJzbHVybXRlc3QiLCJ1c2VySWQiOiIxMTY1NTA0ODU0MSJ9.iLCKJ8PnDDK0_SA2NPYm1WozUG8D5ojwFqFhwaJCDc8";
        let c = claims(tok);
        assert_eq!(c.compute_user.as_deref(), Some("slurmtest"));
        assert_eq!(c.cluster_id.as_deref(), Some("11112"));
        assert_eq!(c.expires_at.unwrap().timestamp_millis(), 1_685_600_225_615);
        assert_eq!(claims("opaque"), Claims::default());
        assert_eq!(claims("a.!!!.c"), Claims::default());
    }

    #[test]
    fn listed_urls_are_normalised() {
        assert_eq!(
            normalize_hpc("https://h:65106/hpc/openapi/v2/"),
            "https://h:65106"
        );
        assert_eq!(normalize_hpc("https://h:65106"), "https://h:65106");
        assert_eq!(normalize_hpc("https://gw/site1/hpc"), "https://gw/site1");
        assert_eq!(normalize_efile("https://h:65107"), "https://h:65107/efile");
        assert_eq!(normalize_efile("https://efile.x/"), "https://efile.x/efile");
        assert_eq!(normalize_hpc("https://hpc.x"), "https://hpc.x");
        assert_eq!(
            normalize_efile("https://h:65107/efile/openapi/v2"),
            "https://h:65107/efile"
        );
        let list =
            json!([{"url": "http://a", "enable": "false"}, {"url": "http://b", "enable": "true"}]);
        assert_eq!(enabled_url(Some(&list)).as_deref(), Some("http://b"));
        let list = json!([{"url": "http://a", "enable": false}]);
        assert_eq!(enabled_url(Some(&list)), None);
        assert_eq!(
            enabled_url(Some(&json!([{"url": "http://c"}]))).as_deref(),
            Some("http://c")
        );
    }
}
