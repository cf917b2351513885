//! Wire types and raw requests of the Explorer open API (`/api-open/v1`), and the one function
//! that turns its error envelope into a typed [`Error`].

use crate::config::Secret;
use crate::error::{Error, Result};
use crate::http::{HttpClient, HttpResponse, Idempotency, snippet};
use reqwest::StatusCode;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, COOKIE, HeaderMap, HeaderValue};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use url::Url;

/// Name of the session cookie `/connect` sets.
pub(crate) const COOKIE_NAME: &str = "explorer_token";

/// Documented error codes that get special treatment.
pub(crate) mod codes {
    /// ErrBadRequest.
    pub(crate) const BAD_REQUEST: i64 = 40004000;
    /// ErrParam.
    pub(crate) const PARAM: i64 = 40004001;
    /// ErrUnauthorized.
    pub(crate) const UNAUTHORIZED: i64 = 40104000;
    /// ErrSession.
    pub(crate) const SESSION: i64 = 40104001;
    /// ErrNotFound.
    pub(crate) const NOT_FOUND: i64 = 40404000;
}

/// The documented name of an error code, for messages.
fn code_name(code: i64) -> Option<&'static str> {
    Some(match code {
        40004000 => "ErrBadRequest",
        40004001 => "ErrParam",
        40104000 => "ErrUnauthorized",
        40104001 => "ErrSession",
        40304000 => "ErrForbidden",
        40404000 => "ErrNotFound",
        50004000 => "ErrInternalServer",
        50004001 => "ErrInternalDatabase",
        50004002 => "ErrInternalController",
        50004003 => "ErrInternalLicense",
        90004000 => "ErrUnknown",
        _ => return None,
    })
}

/// Classifies an envelope error code (CONTRACT §6): 40404000 → not found, 401xxxxx/403xxxxx →
/// auth (the two session codes also mark the token as expired so one re-connect is tried),
/// 400040xx → invalid parameters, everything else → a platform error.
pub(crate) fn classify(code: i64, message: &str, what: &str) -> Error {
    let name = code_name(code);
    let detail = match (name, message.trim()) {
        (Some(n), m) if m.is_empty() || m == n => n.to_string(),
        (Some(n), m) => format!("{n}: {m}"),
        (None, "") => "error".to_string(),
        (None, m) => m.to_string(),
    };
    let text = format!("{what}: {detail} (code {code})");
    let err = match code {
        codes::NOT_FOUND => Error::not_found(text),
        codes::UNAUTHORIZED | codes::SESSION => Error::auth(text).expired_token(),
        40100000..=40399999 => Error::auth(text),
        40004000..=40004099 => Error::usage(text),
        _ => Error::platform(text),
    };
    err.with_code(code.to_string())
}

/// Answers worth retrying: 408, 429 and gateway-style 5xx, plus a 500 that is not an Explorer
/// envelope. An envelope with a 500xxxxx code is the platform's considered answer (a missing
/// Dag Controller will not appear within the retry budget), so it is reported at once.
pub(crate) fn transient(r: &HttpResponse) -> bool {
    match r.status {
        StatusCode::REQUEST_TIMEOUT
        | StatusCode::TOO_MANY_REQUESTS
        | StatusCode::BAD_GATEWAY
        | StatusCode::SERVICE_UNAVAILABLE
        | StatusCode::GATEWAY_TIMEOUT => true,
        s if s.is_server_error() => envelope_code(&r.body).is_none(),
        _ => false,
    }
}

/// The `code` of a body when it is an Explorer envelope.
fn envelope_code(body: &[u8]) -> Option<i64> {
    let v: Value = serde_json::from_slice(body).ok()?;
    match v.get("code")? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

#[derive(Deserialize)]
struct Envelope {
    code: Value,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    data: Value,
}

/// Reads an answer: the envelope's `data` as `T` when `code` is 0, else a typed error. Answers
/// that are not envelopes are classified by their HTTP status.
pub(crate) fn decode<T: DeserializeOwned>(resp: &HttpResponse, what: &str) -> Result<T> {
    // An envelope is an object; serde would also read a 3-element array as one, positionally.
    let envelope: Option<Envelope> = serde_json::from_slice::<Value>(&resp.body)
        .ok()
        .filter(Value::is_object)
        .and_then(|v| serde_json::from_value(v).ok());
    let Some(env) = envelope else {
        return Err(http_error(resp, what));
    };
    let code = match &env.code {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| {
        Error::protocol(format!(
            "{what}: answer has no numeric `code`: {}",
            snippet(&resp.body)
        ))
    })?;
    // An early Chinese draft documented 200 as the success code; every later version says 0.
    if code != 0 && code != 200 {
        return Err(classify(code, env.message.as_deref().unwrap_or(""), what));
    }
    serde_json::from_value(env.data).map_err(|e| {
        Error::protocol(format!(
            "{what}: unexpected `data` ({}); answer starts with: {}",
            crate::http::redact::serde_reason(&e),
            snippet(&resp.body)
        ))
    })
}

/// An error for an answer that is not an Explorer envelope.
fn http_error(resp: &HttpResponse, what: &str) -> Error {
    let status = resp.status.as_u16();
    let body = snippet(&resp.body);
    match resp.status {
        StatusCode::UNAUTHORIZED => Error::auth(format!("{what}: HTTP 401 {body}")).expired_token(),
        StatusCode::FORBIDDEN => Error::auth(format!("{what}: HTTP 403 {body}")),
        s if s.is_server_error() => Error::unavailable(format!("{what}: HTTP {status} {body}"))
            .with_code(status.to_string()),
        s if s.is_success() => Error::protocol(format!(
            "{what}: answer is not an Explorer envelope: {body}"
        )),
        _ => Error::protocol(format!(
            "{what}: HTTP {status} without an Explorer envelope (is the URL the Explorer address?): {body}"
        )),
    }
}

/// A job as the detail and list endpoints describe it. Every field is optional so a sparse
/// answer degrades to `null`s instead of failing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobRecord {
    /// Job id (a number in practice; tolerated as a string).
    pub(crate) id: Value,
    /// Job name given by the platform.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Workflow id (a string in answers).
    #[serde(default)]
    pub(crate) workflow_id: Option<Value>,
    /// Workflow name.
    #[serde(default)]
    pub(crate) workflow_name: Option<String>,
    /// Status code 0–5.
    #[serde(default)]
    pub(crate) status: Option<Value>,
    /// Epoch ms.
    #[serde(default)]
    pub(crate) run_begin_time: Option<Value>,
    /// Epoch ms.
    #[serde(default)]
    pub(crate) run_end_time: Option<Value>,
    /// Epoch ms.
    #[serde(default)]
    pub(crate) create_time: Option<Value>,
    /// Tasks (detail only; `null` in lists).
    #[serde(default)]
    pub(crate) tasks: Option<Vec<TaskRecord>>,
}

impl JobRecord {
    /// The id as jobctl's job id.
    pub(crate) fn id_text(&self) -> String {
        crate::model::value_to_string(&self.id)
    }
}

/// One task of a job.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TaskRecord {
    /// 32-hex task id.
    #[serde(default)]
    pub(crate) id: Option<String>,
    /// Algorithm / component name.
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// Status code 0–5.
    #[serde(default)]
    pub(crate) status: Option<Value>,
    /// ISO-8601 with offset.
    #[serde(default)]
    pub(crate) run_begin_time: Option<Value>,
    /// ISO-8601 with offset.
    #[serde(default)]
    pub(crate) run_end_time: Option<Value>,
}

/// One page of a job list. `Page` and `PageSize` are capitalised on the wire.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JobPage {
    /// Jobs matching the filter, over all pages.
    #[serde(default)]
    pub(crate) total: Option<u64>,
    /// The page served.
    #[serde(default, rename = "Page", alias = "page")]
    pub(crate) page: Option<u64>,
    /// The page size the server applied (it may clamp ours).
    #[serde(default, rename = "PageSize", alias = "pageSize")]
    pub(crate) page_size: Option<u64>,
    /// The jobs.
    #[serde(default)]
    pub(crate) items: Option<Vec<JobRecord>>,
}

#[derive(Deserialize)]
struct Created {
    id: Value,
}

#[derive(Deserialize)]
struct Sample {
    #[serde(default)]
    items: Option<Vec<Value>>,
}

/// Raw requests against one Explorer.
#[derive(Debug)]
pub(crate) struct Api {
    http: HttpClient,
    base: Url,
}

/// A cookie header that `Debug` output will not reveal.
fn cookie(token: &Secret) -> Result<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("{COOKIE_NAME}={}", token.expose()))
        .map_err(|_| Error::protocol("the cached explorer_token is not a valid cookie value"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Api {
    /// An API client for the Explorer at `base` (e.g. `http://host:7002`, a path prefix kept).
    pub(crate) fn new(http: HttpClient, base: Url) -> Self {
        Api { http, base }
    }

    /// The base URL (for messages and token binding).
    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// `<base>/api-open/v1/<segments…>`, each segment percent-encoded.
    pub(crate) fn url(&self, segments: &[&str]) -> Result<Url> {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut path = url.path_segments_mut().map_err(|_| {
                Error::usage(format!(
                    "NEBULA_EXPLORER_URL '{}' cannot be a base URL",
                    self.base
                ))
            })?;
            path.pop_if_empty()
                .extend(["api-open", "v1"])
                .extend(segments);
        }
        Ok(url)
    }

    /// `POST /connect`: returns the answer with its headers (the cookie is read by the caller).
    pub(crate) async fn connect(
        &self,
        bearer: &Secret,
        address: &str,
        port: u16,
    ) -> Result<HttpResponse> {
        let url = self.url(&["connect"])?;
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", bearer.expose()))
            .map_err(|_| Error::usage("the nebula credentials cannot be sent in a header"))?;
        auth.set_sensitive(true);
        let body = serde_json::json!({ "address": address, "port": port });
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.post(url.clone())
                    .header(AUTHORIZATION, auth.clone())
                    .json(&body)
            })
            .await?;
        decode::<Value>(&resp, "connect")?;
        Ok(resp)
    }

    /// `GET /jobs/{id}`.
    pub(crate) async fn job(&self, token: &Secret, id: &str) -> Result<JobRecord> {
        let url = self.url(&["jobs", id])?;
        let cookie = cookie(token)?;
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.get(url.clone()).header(COOKIE, cookie.clone())
            })
            .await?;
        decode(&resp, &format!("job {id}"))
    }

    /// `GET /jobs` or `GET /workflows/{workflow}/jobs`, one page.
    pub(crate) async fn jobs(
        &self,
        token: &Secret,
        workflow: Option<&str>,
        filter: &Value,
        page: u64,
        page_size: u64,
    ) -> Result<JobPage> {
        let mut url = match workflow {
            Some(w) => self.url(&["workflows", w, "jobs"])?,
            None => self.url(&["jobs"])?,
        };
        url.query_pairs_mut()
            .append_pair("filter", &filter.to_string())
            .append_pair("page", &page.to_string())
            .append_pair("pageSize", &page_size.to_string());
        let cookie = cookie(token)?;
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.get(url.clone()).header(COOKIE, cookie.clone())
            })
            .await?;
        let what = match workflow {
            Some(w) => format!("jobs of workflow {w}"),
            None => "job list".to_string(),
        };
        decode(&resp, &what)
    }

    /// `POST /workflows/{workflow}/jobs`; returns the new job id. Never repeated once sent.
    pub(crate) async fn submit(
        &self,
        token: &Secret,
        workflow: &str,
        body: &Value,
    ) -> Result<String> {
        let url = self.url(&["workflows", workflow, "jobs"])?;
        let cookie = cookie(token)?;
        let resp = self
            .http
            .send(Idempotency::NotIdempotent, transient, |c| {
                c.post(url.clone())
                    .header(COOKIE, cookie.clone())
                    .json(body)
            })
            .await?;
        let created: Created = decode(&resp, &format!("run workflow {workflow}"))?;
        match created.id {
            Value::Number(n) => Ok(n.to_string()),
            Value::String(s) if !s.trim().is_empty() && !s.contains(char::is_whitespace) => Ok(s),
            other => Err(Error::protocol(format!(
                "run workflow {workflow}: the answer's job id is unusable: {other}"
            ))),
        }
    }

    /// `PUT /jobs/{id}/cancel` (form content type, no body, as documented).
    pub(crate) async fn cancel(&self, token: &Secret, id: &str) -> Result<()> {
        let url = self.url(&["jobs", id, "cancel"])?;
        let cookie = cookie(token)?;
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.put(url.clone()).header(COOKIE, cookie.clone()).header(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/x-www-form-urlencoded"),
                )
            })
            .await?;
        decode::<Value>(&resp, &format!("cancel job {id}"))?;
        Ok(())
    }

    /// `GET /jobs/{id}/tasks/{task}/sample_result?limit=`; rows of cells as text.
    pub(crate) async fn sample(
        &self,
        token: &Secret,
        id: &str,
        task: &str,
        limit: u64,
    ) -> Result<Vec<Vec<String>>> {
        let mut url = self.url(&["jobs", id, "tasks", task, "sample_result"])?;
        url.query_pairs_mut()
            .append_pair("limit", &limit.to_string());
        let cookie = cookie(token)?;
        let resp = self
            .http
            .send(Idempotency::Idempotent, transient, |c| {
                c.get(url.clone()).header(COOKIE, cookie.clone())
            })
            .await?;
        let sample: Sample = decode(&resp, &format!("sample result of task {task} of job {id}"))?;
        Ok(sample.items.unwrap_or_default().iter().map(row).collect())
    }
}

/// One sample row as cells. The docs' example shows arrays of strings; their table says an
/// object with a `result` string; a bare scalar is tolerated too.
fn row(v: &Value) -> Vec<String> {
    let cell = |c: &Value| match c {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    match v {
        Value::Array(cells) => cells.iter().map(cell).collect(),
        Value::Object(o) => match o.get("result") {
            Some(r) => vec![cell(r)],
            None => o.values().map(cell).collect(),
        },
        other => vec![cell(other)],
    }
}

/// Reads `explorer_token` and its `Max-Age` (seconds) from `Set-Cookie` headers.
pub(crate) fn session_cookie(headers: &HeaderMap) -> Option<(String, Option<i64>)> {
    for value in headers.get_all(reqwest::header::SET_COOKIE) {
        let Ok(text) = value.to_str() else { continue };
        let mut parts = text.split(';').map(str::trim);
        let Some((name, token)) = parts.next().and_then(|p| p.split_once('=')) else {
            continue;
        };
        if name.trim() != COOKIE_NAME || token.is_empty() {
            continue;
        }
        let max_age = parts.find_map(|attr| {
            // The published example shows `# Max-Age=…`; tolerate the stray `#`.
            let attr = attr.trim_start_matches('#').trim();
            let (k, v) = attr.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case("max-age")
                .then(|| v.trim().parse::<i64>().ok())
                .flatten()
        });
        return Some((token.trim().to_string(), max_age));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_codes_map_to_exit_codes() {
        let exit = |c| classify(c, "", "x").exit_code();
        assert_eq!(exit(40404000), crate::error::exit::NOT_FOUND);
        assert_eq!(exit(40104000), crate::error::exit::AUTH);
        assert_eq!(exit(40104001), crate::error::exit::AUTH);
        assert_eq!(exit(40304000), crate::error::exit::AUTH);
        assert_eq!(exit(40004000), crate::error::exit::USAGE);
        assert_eq!(exit(40004001), crate::error::exit::USAGE);
        for c in [50004000, 50004001, 50004002, 50004003, 90004000, 12345] {
            assert_eq!(exit(c), crate::error::exit::UNAVAILABLE, "{c}");
        }
        assert!(classify(40104001, "", "x").token_expired);
        assert!(!classify(40304000, "", "x").token_expired);
        let e = classify(50004002, "dag controller down", "run workflow 1");
        assert_eq!(e.code.as_deref(), Some("50004002"));
        assert!(
            e.message
                .contains("ErrInternalController: dag controller down"),
            "{e}"
        );
    }

    #[test]
    fn envelopes_decode_or_classify() {
        let resp = |status: u16, body: &str| HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        };
        let ok: Value = decode(
            &resp(200, r#"{"code":0,"message":"Success","data":{"id":1}}"#),
            "x",
        )
        .unwrap();
        assert_eq!(ok["id"], 1);
        let e = decode::<Value>(
            &resp(404, r#"{"code":40404000,"message":"ErrNotFound"}"#),
            "job 9",
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::NOT_FOUND);
        assert!(e.message.starts_with("job 9: ErrNotFound"), "{e}");
        let e = decode::<Value>(&resp(502, "<html>bad gateway</html>"), "x").unwrap_err();
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
        let e = decode::<Value>(&resp(200, "not json"), "x").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::Protocol);
        assert!(transient(&resp(500, "oops")));
        assert!(!transient(&resp(500, r#"{"code":50004002,"message":"x"}"#)));
        assert!(!transient(&resp(404, "")));
    }

    #[test]
    fn the_session_cookie_and_its_lifetime_are_read() {
        let mut h = HeaderMap::new();
        h.append("set-cookie", HeaderValue::from_static("other=1; Path=/"));
        h.append(
            "set-cookie",
            HeaderValue::from_static("explorer_token=eyJhb.x.y; Path=/; Max-Age=259200; HttpOnly"),
        );
        assert_eq!(session_cookie(&h), Some(("eyJhb.x.y".into(), Some(259200))));
        let mut h = HeaderMap::new();
        h.append(
            "set-cookie",
            HeaderValue::from_static("explorer_token=t; Path=/; # Max-Age=60"),
        );
        assert_eq!(session_cookie(&h), Some(("t".into(), Some(60))));
        assert_eq!(session_cookie(&HeaderMap::new()), None);
    }

    #[test]
    fn sample_rows_accept_every_documented_shape() {
        assert_eq!(
            row(&serde_json::json!(["player110", "0.15"])),
            vec!["player110", "0.15"]
        );
        assert_eq!(row(&serde_json::json!({"result": "a,b"})), vec!["a,b"]);
        assert_eq!(row(&serde_json::json!(3)), vec!["3"]);
    }
}
