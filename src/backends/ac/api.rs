//! Wire level of the AC OpenAPI v2: the `{code, msg, data}` envelope, the platform's error
//! codes, and the raw requests. Everything goes through [`HttpClient`] so retries, backoff and
//! TLS options stay in one place.

use crate::config::{BackendKind, Profile, Secret};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{HttpClient, HttpResponse, Idempotency, default_transient, snippet};
use reqwest::StatusCode;
use serde_json::Value;
use url::Url;

/// Codes the platform uses for transient trouble on its side ("connection interrupted",
/// "operation timed out"); worth the same retries as an HTTP 503.
const TRANSIENT_CODES: &[&str] = &["10012", "10013"];

/// Retry classification: HTTP 408/429/5xx, plus envelopes carrying a transient code.
pub fn transient(r: &HttpResponse) -> bool {
    default_transient(r)
        || serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v.get("code").map(code_string))
            .is_some_and(|c| TRANSIENT_CODES.contains(&c.as_str()))
}

/// Retry classification of reads: also `10001` ("internal error"), which the platform answers
/// to reads during its own hiccups; a write is never repeated on it (it may have happened).
pub fn transient_read(r: &HttpResponse) -> bool {
    transient(r)
        || serde_json::from_slice::<Value>(&r.body)
            .ok()
            .and_then(|v| v.get("code").map(code_string))
            .is_some_and(|c| c == "10001")
}

/// The envelope's `code`, which is documented as a string but is a number on some endpoints.
pub fn code_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// The typed error for a platform error code. The message always carries the code and the
/// platform's own text, so a user can look it up.
pub fn code_error(code: &str, msg: &str, status: StatusCode) -> Error {
    use ErrorKind::*;
    let (kind, meaning, token_may_be_stale) = match code {
        "10001" => (Platform, "internal error", false),
        "10003" => (Usage, "missing parameters", false),
        "10004" => (Usage, "invalid parameters", false),
        "10007" => (Auth, "the user is frozen", false),
        // The platform has no documented "token expired" code; an expired or foreign token is
        // refused as a permission problem, so these two get one fresh login.
        "10008" => (Auth, "permission denied", true),
        "10009" => (Auth, "no permission to use this API", true),
        "10010" => (Usage, "file verification failed", false),
        "10011" => (Usage, "file too large", false),
        "10012" => (Unavailable, "connection interrupted", false),
        "10013" => (Unavailable, "operation timed out", false),
        "815005" => (
            Platform,
            "job submission failed, the scheduler did not answer",
            false,
        ),
        // sbatch refusing the job is final: a quota/QOS limit (4) or an invalid request (bad
        // queue, resources beyond the queue's limits) (2); the same job would be refused again.
        "815007" if is_quota(msg) => (Auth, "job submission refused by a quota", false),
        "815007" => (
            Usage,
            "job submission failed, sbatch refused the job",
            false,
        ),
        _ if status == StatusCode::UNAUTHORIZED => (Auth, "unauthorized", true),
        _ if status == StatusCode::FORBIDDEN => (Auth, "forbidden", false),
        _ => (Platform, "platform error", false),
    };
    let text = if msg.trim().is_empty() {
        "(no message)"
    } else {
        msg.trim()
    };
    let mut e = Error::new(kind, format!("AC error {code} ({meaning}): {text}")).with_code(code);
    if kind == Auth && (token_may_be_stale || status == StatusCode::UNAUTHORIZED) {
        e = e.expired_token();
    }
    e
}

/// Whether a scheduler refusal is about a quota or accounting limit of the user rather than
/// about the job's own parameters.
fn is_quota(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    [
        "quota",
        "qosmax",
        "assocmax",
        "assocgrp",
        "qosgrp",
        "maxsubmit",
        "accounting policy",
    ]
    .iter()
    .any(|w| m.contains(w))
        || msg.contains("配额")
        || msg.contains("余额")
}

/// Unwraps the envelope: `data` on success, a typed error otherwise. Non-JSON answers (an
/// HTML error page from a gateway) become protocol errors quoting the start of the body.
pub fn decode(resp: &HttpResponse) -> Result<Value> {
    let parsed: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let Some(Value::Object(obj)) = parsed else {
        return Err(match resp.status {
            StatusCode::UNAUTHORIZED => Error::auth(format!(
                "the AC platform refused the token (HTTP 401): {}",
                snippet(&resp.body)
            ))
            .expired_token(),
            StatusCode::FORBIDDEN => Error::auth(format!(
                "the AC platform refused access (HTTP 403): {}",
                snippet(&resp.body)
            )),
            s => Error::protocol(format!(
                "the AC platform answered HTTP {} with something that is not a JSON envelope: {}",
                s.as_u16(),
                snippet(&resp.body)
            )),
        });
    };
    let Some(code) = obj.get("code").map(code_string) else {
        return Err(Error::protocol(format!(
            "the AC platform answered HTTP {} without an envelope `code`: {}",
            resp.status.as_u16(),
            snippet(&resp.body)
        )));
    };
    // "0" is documented; the AK/SK token endpoint is seen answering 200.
    if (code == "0" || code == "200") && resp.status.is_success() {
        return Ok(obj.get("data").cloned().unwrap_or(Value::Null));
    }
    let msg = obj
        .get("msg")
        .map(crate::model::value_to_string)
        .unwrap_or_default();
    if code == "0" || code == "200" {
        return Err(Error::protocol(format!(
            "the AC platform answered HTTP {} with a success envelope: {msg}",
            resp.status.as_u16()
        )));
    }
    Err(code_error(&code, &msg, resp.status))
}

/// `base` + `path`, tolerating a trailing slash on the base.
pub fn join(base: &Url, path: &str) -> Result<Url> {
    let text = format!("{}{}", base.as_str().trim_end_matches('/'), path);
    Url::parse(&text).map_err(|e| Error::usage(format!("invalid AC URL '{text}': {e}")))
}

/// One AC request; a thin layer over [`HttpClient`] adding the `token` header.
#[derive(Debug, Clone)]
pub struct Api {
    /// The shared client.
    pub http: HttpClient,
    /// How the profile's settings are named in the hints of its errors.
    pub names: Names,
}

/// How a profile's settings are named in messages: the `AC_*` variables for the built-in `ac`
/// profile, the config keys of a configured one ([`Profile::setting_name`]), so a hint never
/// sends the user to a variable their profile does not read.
#[derive(Debug, Clone, Default)]
pub struct Names(Vec<(&'static str, String)>);

impl Names {
    /// The names of every AC setting of `p`.
    pub fn of(p: &Profile) -> Self {
        Names(
            BackendKind::Ac
                .env_vars()
                .iter()
                .map(|(_, key, _)| (*key, p.setting_name(key)))
                .collect(),
        )
    }

    /// The name of setting `key` as this profile spells it.
    pub fn get(&self, key: &str) -> String {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, name)| name.clone())
            .unwrap_or_else(|| format!("`{key}`"))
    }

    /// A parser's error about a value, said of the setting `key` that held it.
    pub fn in_setting(&self, key: &str, e: Error) -> Error {
        Error::usage(format!("{}: {}", self.get(key), e.message))
    }
}

impl Api {
    /// `GET url?query` with the token header.
    pub async fn get(&self, url: &Url, token: &Secret, query: &[(&str, String)]) -> Result<Value> {
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient_read, |c| {
                c.get(url.clone())
                    .header("token", token.expose())
                    .query(query)
            })
            .await?;
        decode(&resp)
    }

    /// `POST url` with a JSON body and the token header.
    pub async fn post_json(
        &self,
        url: &Url,
        token: &Secret,
        body: &Value,
        idempotency: Idempotency,
    ) -> Result<Value> {
        let resp = self
            .http
            .send(idempotency, transient, |c| {
                c.post(url.clone())
                    .header("token", token.expose())
                    .json(body)
            })
            .await?;
        decode(&resp)
    }

    /// `DELETE url` with a form body, as the job control endpoint wants.
    pub async fn delete_form(
        &self,
        url: &Url,
        token: &Secret,
        form: &[(&str, String)],
    ) -> Result<Value> {
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.delete(url.clone())
                    .header("token", token.expose())
                    .form(form)
            })
            .await?;
        decode(&resp)
    }

    /// `POST {ac}/ac/openapi/v2/tokens`: credentials in headers, one token per region.
    pub async fn login(
        &self,
        ac: &Url,
        user: &str,
        password: &Secret,
        org_id: Option<&str>,
    ) -> Result<Vec<RegionToken>> {
        // The answer carries every regional token: no part of it may be quoted in an error.
        crate::http::redact::auth_exchange(self.login_exchange(ac, user, password, org_id)).await
    }

    async fn login_exchange(
        &self,
        ac: &Url,
        user: &str,
        password: &Secret,
        org_id: Option<&str>,
    ) -> Result<Vec<RegionToken>> {
        let url = join(ac, "/ac/openapi/v2/tokens")?;
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                let mut req = c
                    .post(url.clone())
                    .header("user", user)
                    .header("password", password.expose())
                    .json(&serde_json::json!({}));
                if let Some(org) = org_id {
                    req = req.header("orgId", org);
                }
                req
            })
            .await?;
        let data = decode(&resp).map_err(|e| {
            // A fresh login cannot cure a refused login.
            let mut e = e;
            e.token_expired = false;
            if e.code.as_deref() == Some("10003") && org_id.is_none() {
                e.message
                    .push_str(&format!(" (is {} set?)", self.names.get("org_id")));
            }
            e
        })?;
        region_tokens(&data)
    }

    /// `POST {ac}/ac/openapi/v2/tokens/next`: a new token for an old one.
    pub async fn renew(&self, ac: &Url, token: &Secret) -> Result<Secret> {
        let url = join(ac, "/ac/openapi/v2/tokens/next")?;
        let data = crate::http::redact::auth_exchange(self.post_json(
            &url,
            token,
            &serde_json::json!({}),
            Idempotency::Idempotent,
        ))
        .await?;
        let new = match &data {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("token").and_then(Value::as_str).map(str::to_string),
            _ => None,
        };
        new.filter(|t| !t.is_empty())
            .map(Secret::new)
            .ok_or_else(|| Error::protocol("the AC token renewal returned no token"))
    }
}

/// One entry of the token list: a region and its token (none when suspended or unpaid).
#[derive(Debug, Clone)]
pub struct RegionToken {
    /// `clusterId`; `0` is the platform token.
    pub cluster_id: String,
    /// `clusterName`.
    pub cluster_name: String,
    /// The token, absent for unusable regions.
    pub token: Option<Secret>,
}

/// The regions of a token list (password or AK/SK login). `clusterId` may be a number or a
/// string, and the platform entry (`0`) may come anywhere in the list.
pub fn region_tokens(data: &Value) -> Result<Vec<RegionToken>> {
    let Value::Array(items) = data else {
        return Err(Error::protocol(
            "the AC token endpoint did not return a list of regions",
        ));
    };
    Ok(items
        .iter()
        .filter_map(|i| {
            Some(RegionToken {
                cluster_id: i.get("clusterId").map(code_string)?,
                cluster_name: i
                    .get("clusterName")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string(),
                token: i
                    .get("token")
                    .and_then(Value::as_str)
                    .filter(|t| !t.is_empty())
                    .map(Secret::new),
            })
        })
        .collect())
}

/// The `{total, list}` page shape of the job lists (also accepts a bare array).
pub fn page_items(data: &Value) -> (Vec<serde_json::Map<String, Value>>, Option<u64>) {
    let (list, total) = match data {
        Value::Array(a) => (Some(a), None),
        Value::Object(o) => (
            o.get("list")
                .or_else(|| o.get("records"))
                .and_then(Value::as_array),
            o.get("total").and_then(|t| {
                t.as_u64()
                    .or_else(|| t.as_str().and_then(|s| s.parse().ok()))
            }),
        ),
        _ => (None, None),
    };
    let items = list
        .map(|l| l.iter().filter_map(|v| v.as_object().cloned()).collect())
        .unwrap_or_default();
    (items, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use reqwest::header::HeaderMap;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn envelope_success_and_numeric_codes() {
        let d = decode(&resp(200, r#"{"code":"0","msg":"success","data":{"a":1}}"#)).unwrap();
        assert_eq!(d["a"], 1);
        let d = decode(&resp(200, r#"{"code":0,"msg":"success"}"#)).unwrap();
        assert!(d.is_null());
    }

    #[test]
    fn every_documented_code_is_typed_and_quoted() {
        let cases = [
            ("10001", 7),
            ("10003", 2),
            ("10004", 2),
            ("10007", 4),
            ("10008", 4),
            ("10009", 4),
            ("10010", 2),
            ("10011", 2),
            ("10012", 7),
            ("10013", 7),
            ("815005", 7),
            ("815007", 2),
            ("424242", 7),
        ];
        for (code, exit) in cases {
            let body = format!(r#"{{"code":"{code}","msg":"平台说明 {code}","data":null}}"#);
            let e = decode(&resp(200, &body)).unwrap_err();
            assert_eq!(e.exit_code(), exit, "{code}");
            assert_eq!(e.code.as_deref(), Some(code));
            assert!(
                e.message.contains(code) && e.message.contains("平台说明"),
                "{e}"
            );
        }
        let e = decode(&resp(200, r#"{"code":"10007","msg":"frozen"}"#)).unwrap_err();
        assert!(
            !e.token_expired,
            "a frozen user is not cured by a new login"
        );
        let e = decode(&resp(200, r#"{"code":"10008","msg":"x"}"#)).unwrap_err();
        assert!(e.token_expired);
    }

    #[test]
    fn transient_codes_are_retried() {
        assert!(transient(&resp(200, r#"{"code":"10012","msg":"x"}"#)));
        assert!(transient(&resp(503, "<html></html>")));
        assert!(!transient(&resp(200, r#"{"code":"10004","msg":"x"}"#)));
        let internal = resp(200, r#"{"code":"10001","msg":"internal_error"}"#);
        assert!(transient_read(&internal) && !transient(&internal));
    }

    #[test]
    fn html_pages_are_protocol_errors() {
        let e = decode(&resp(502, "<html><body>Bad Gateway</body></html>")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        assert!(
            e.message.contains("Bad Gateway") && e.message.contains("502"),
            "{e}"
        );
        let e = decode(&resp(401, "<html>login</html>")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(e.token_expired);
        let e = decode(&resp(200, r#"{"total":1}"#)).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
    }

    #[test]
    fn pages_accept_both_shapes() {
        let (items, total) =
            page_items(&serde_json::json!({"total": "3", "list": [{"jobId": "1"}]}));
        assert_eq!((items.len(), total), (1, Some(3)));
        let (items, total) = page_items(&serde_json::json!([{"jobId": "1"}, 5]));
        assert_eq!((items.len(), total), (1, None));
    }
}
