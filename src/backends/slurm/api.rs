//! slurmrestd on the wire: the per-version interface ([`ApiVersion`]) and its registry, the
//! raw request with Slurm's authentication headers, the `errors[]` parser and the
//! classification of Slurm's answers into jobctl errors.
//!
//! slurmrestd reports nearly every failure — an unknown job, an invalid partition, a refused
//! token — as HTTP 500 with an `errors[]` array, in one of two shapes:
//! `{error_number, error, description, source}` or `{error_code, error}`. Such an answer is a
//! final verdict, not a server hiccup, so [`slurm_transient`] does not retry it.

use super::mapping::{NativeJob, SubmitRequest};
use crate::config::{Profile, Secret};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{HttpClient, HttpResponse, Idempotency, default_transient, snippet};
use crate::model::QueueInfo;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::fmt;

/// One slurmrestd API version: how its requests are shaped and its answers read. Adding a
/// version means one new module implementing this and one line in [`SUPPORTED`].
pub trait ApiVersion: Send + Sync + fmt::Debug {
    /// The version as it appears in paths (`v0.0.38`).
    fn version(&self) -> &'static str;

    /// The request path of `tail` (`ping`, `jobs`, `job/submit`, `job/42`).
    fn path(&self, tail: &str) -> String {
        format!("slurm/{}/{tail}", self.version())
    }

    /// The JSON body of `POST job/submit`, serialized.
    fn submit_body(&self, req: &SubmitRequest) -> Result<bytes::Bytes>;

    /// The new job's id from the submission answer.
    fn submitted_id(&self, body: &Value) -> Result<u64>;

    /// The job records of a `GET job/{id}` or `GET jobs` answer.
    fn jobs(&self, body: &Value) -> Result<Vec<NativeJob>>;

    /// The partitions of a `GET partitions` answer, as queues.
    fn partitions(&self, body: &Value) -> Result<Vec<QueueInfo>>;
}

/// The versions jobctl speaks, newest first; discovery picks the first the server offers.
pub const SUPPORTED: &[&dyn ApiVersion] = &[&super::v0_0_38::V0_0_38];

/// The supported version named `name` (`v0.0.38` or `0.0.38`).
pub fn find_version(name: &str) -> Option<&'static dyn ApiVersion> {
    let want = name.trim().trim_start_matches('v');
    SUPPORTED
        .iter()
        .copied()
        .find(|v| v.version().trim_start_matches('v') == want)
}

/// Names of the supported versions, for messages.
pub fn supported_names() -> String {
    SUPPORTED
        .iter()
        .map(|v| v.version())
        .collect::<Vec<_>>()
        .join(", ")
}

/// API versions named by the paths of an OpenAPI document (`/slurm/v0.0.40/ping` → v0.0.40).
pub fn versions_in_openapi(doc: &Value) -> Vec<String> {
    let mut out: Vec<String> = doc
        .get("paths")
        .and_then(Value::as_object)
        .map(|paths| {
            paths
                .keys()
                .filter_map(|p| p.strip_prefix("/slurm/"))
                .filter_map(|p| p.split('/').next())
                .filter(|v| v.starts_with('v'))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.dedup();
    out
}

/// One entry of Slurm's `errors[]`, whichever of its two shapes it came in.
#[derive(Debug, Clone, PartialEq)]
pub struct SlurmError {
    /// `error_number` or `error_code`.
    pub code: Option<i64>,
    /// `error`: the text of the error number.
    pub error: Option<String>,
    /// `description`: what was being done.
    pub description: Option<String>,
    /// `source`: the Slurm function that failed.
    pub source: Option<String>,
}

impl SlurmError {
    /// `description: error` without repeating the same words twice.
    pub fn text(&self) -> String {
        let d = self.description.as_deref().filter(|s| !s.is_empty());
        let e = self.error.as_deref().filter(|s| !s.is_empty());
        match (d, e) {
            (Some(d), Some(e)) if d.contains(e) => d.to_string(),
            (Some(d), Some(e)) => format!("{e} ({d})"),
            (Some(d), None) => d.to_string(),
            (None, Some(e)) => e.to_string(),
            (None, None) => "unspecified error".to_string(),
        }
    }
}

fn int_of(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn text_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_string)
}

/// Reads `errors[]` from an answer body, tolerating both shapes (and junk entries).
pub fn parse_errors(body: &Value) -> Vec<SlurmError> {
    body.get("errors")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(Value::as_object)
                .map(|o| SlurmError {
                    code: int_of(o.get("error_number")).or_else(|| int_of(o.get("error_code"))),
                    error: text_of(o.get("error")),
                    description: text_of(o.get("description")),
                    source: text_of(o.get("source")),
                })
                // Entries with a zero code and no text are success markers of some versions.
                .filter(|e| {
                    e.code.unwrap_or(0) != 0 || e.error.is_some() || e.description.is_some()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Slurm error numbers that mean the controller could not be reached or answered in time:
/// trying again later may succeed.
const TRANSIENT_CODES: &[i64] = &[
    1001, // SLURM_COMMUNICATIONS_CONNECTION_ERROR
    1002, // SLURM_COMMUNICATIONS_SEND_ERROR
    1003, // SLURM_COMMUNICATIONS_RECEIVE_ERROR
    1004, // SLURM_COMMUNICATIONS_SHUTDOWN_ERROR
    5004, // SLURM_PROTOCOL_SOCKET_IMPL_TIMEOUT
];

/// Transient classification for slurmrestd. A 500 that carries a readable `errors[]` is
/// Slurm's final answer (unknown job, invalid partition, refused token) and is not retried —
/// unless its error numbers say the controller was unreachable. Everything else follows
/// [`default_transient`].
pub fn slurm_transient(r: &HttpResponse) -> bool {
    if r.status == StatusCode::INTERNAL_SERVER_ERROR {
        if let Ok(body) = serde_json::from_slice::<Value>(&r.body) {
            let errors = parse_errors(&body);
            if !errors.is_empty() {
                return errors
                    .iter()
                    .any(|e| e.code.is_some_and(|c| TRANSIENT_CODES.contains(&c)));
            }
        }
    }
    default_transient(r)
}

/// Slurm error numbers meaning "the request's parameters are invalid" (exit 2).
const USAGE_CODES: &[i64] = &[
    2000, // ESLURM_INVALID_PARTITION_NAME
    2001, // ESLURM_DEFAULT_PARTITION_NOT_SET
    2004, // ESLURM_REQUESTED_NODES_NOT_IN_PARTITION
    2005, // ESLURM_TOO_MANY_REQUESTED_CPUS
    2006, // ESLURM_INVALID_NODE_COUNT
    2008, // ESLURM_JOB_MISSING_SIZE_SPECIFICATION
    2009, // ESLURM_JOB_SCRIPT_MISSING
    2012, // ESLURM_PATHNAME_TOO_LONG
    2014, // ESLURM_REQUESTED_NODE_CONFIG_UNAVAILABLE
    2015, // ESLURM_REQUESTED_PART_CONFIG_UNAVAILABLE
    2018, // ESLURM_INVALID_NODE_NAME
    2025, // ESLURM_BAD_TASK_COUNT
    2029, // ESLURM_INVALID_FEATURE
    2045, // ESLURM_INVALID_ACCOUNT
    2048, // ESLURM_INVALID_LICENSES
    2051, // ESLURM_INVALID_TIME_LIMIT
    2053, // ESLURM_RESERVATION_INVALID
    2127, // "environment must be set"
];

/// Slurm error numbers meaning "not allowed" (exit 4): refused credentials, permissions and
/// quotas (an accounting/QOS limit is a quota).
const AUTH_CODES: &[i64] = &[
    1007, // SLURM_PROTOCOL_AUTHENTICATION_ERROR
    2002, // ESLURM_ACCESS_DENIED
    2010, // ESLURM_USER_ID_MISSING
    2050, // ESLURM_ACCOUNTING_POLICY
    2052, // ESLURM_RESERVATION_ACCESS
];

/// What the controller answers when it cannot authenticate the caller's token: the
/// connection is dropped (5005) or the read fails without an error number (-1). The same
/// answers can have other causes, so such a failure is confirmed with a ping before it is
/// called an authentication failure.
const MAYBE_AUTH_CODES: &[i64] = &[-1, 5005];

/// A failed call: the error to report, and whether a refused token might be the cause.
#[derive(Debug)]
pub struct Failure {
    /// The error as classified from the answer alone.
    pub error: Error,
    /// The controller's answer is the one it gives for a bad or expired token.
    pub suspect_auth: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            suspect_auth: false,
        }
    }
}

/// Turns one slurmrestd answer into its JSON body, or a classified failure.
pub fn classify(resp: &HttpResponse) -> std::result::Result<Value, Failure> {
    let body: Option<Value> = serde_json::from_slice(&resp.body).ok();
    let errors = body.as_ref().map(parse_errors).unwrap_or_default();
    let status = resp.status;
    if status.is_success() && errors.is_empty() {
        let body = body.ok_or_else(|| {
            Failure::from(Error::protocol(format!(
                "slurmrestd answered HTTP {} with a body that is not JSON: {}",
                status.as_u16(),
                snippet(&resp.body)
            )))
        })?;
        return check_shape(body, &resp.body).map_err(Failure::from);
    }
    if let Some(first) = errors.first() {
        let code = first.code;
        let all: Vec<String> = errors
            .iter()
            .map(|e| match e.code {
                Some(c) => format!("Slurm error {c}: {}", e.text()),
                None => e.text(),
            })
            .collect();
        let message = all.join("; ");
        let text = message.to_ascii_lowercase();
        let kind = match code {
            Some(2017) => ErrorKind::NotFound,
            Some(c) if AUTH_CODES.contains(&c) => ErrorKind::Auth,
            Some(c) if USAGE_CODES.contains(&c) => ErrorKind::Usage,
            Some(c) if (9000..10000).contains(&c) => ErrorKind::Usage,
            Some(c) if TRANSIENT_CODES.contains(&c) => ErrorKind::Unavailable,
            _ if status == StatusCode::BAD_REQUEST => ErrorKind::Usage,
            _ if text.contains("invalid") || text.contains("unknown key") => ErrorKind::Usage,
            _ => ErrorKind::Platform,
        };
        let mut error = Error::new(kind, message);
        if let Some(c) = code {
            error = error.with_code(c.to_string());
        }
        let suspect_auth = code.is_some_and(|c| MAYBE_AUTH_CODES.contains(&c));
        return Err(Failure {
            error,
            suspect_auth,
        });
    }
    let detail = snippet(&resp.body);
    let error = match status {
        // Which settings to check depends on the profile: `RestClient::explain` adds them.
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::auth(format!(
            "slurmrestd refused the credentials (HTTP {}: {detail})",
            status.as_u16()
        )),
        StatusCode::NOT_FOUND => Error::protocol(format!(
            "slurmrestd does not serve this path (HTTP 404: {detail})"
        )),
        StatusCode::BAD_REQUEST => Error::usage(format!(
            "slurmrestd rejected the request (HTTP 400: {detail})"
        )),
        s if s.is_server_error() => {
            Error::unavailable(format!("slurmrestd failed (HTTP {}: {detail})", s.as_u16()))
        }
        s => Error::protocol(format!(
            "unexpected answer from slurmrestd (HTTP {}: {detail})",
            s.as_u16()
        )),
    };
    Err(Failure {
        suspect_auth: status == StatusCode::UNAUTHORIZED,
        error,
    })
}

/// Every slurmrestd answer is an object whose `meta` (when present) is an object and whose
/// `errors` and `warnings` (when present) are lists. Anything else is not slurmrestd speaking
/// (a proxy, a garbled answer) and must not be read as "no errors, no jobs".
pub fn check_shape(body: Value, raw: &[u8]) -> Result<Value> {
    let problem = match &body {
        Value::Object(o) => {
            if o.get("meta").is_some_and(|m| !m.is_object()) {
                Some("its `meta` is not an object")
            } else if ["errors", "warnings"]
                .iter()
                .any(|k| o.get(*k).is_some_and(|v| !v.is_array()))
            {
                Some("its `errors` or `warnings` is not a list")
            } else {
                None
            }
        }
        _ => Some("it is not a JSON object"),
    };
    match problem {
        Some(why) => Err(Error::protocol(format!(
            "slurmrestd's answer is unusable: {why}: {}",
            snippet(raw)
        ))),
        None => Ok(body),
    }
}

/// The raw slurmrestd client: base URL, HTTP policy, authentication headers.
#[derive(Debug, Clone)]
pub struct RestClient {
    http: HttpClient,
    base: url::Url,
    /// What to check when the credentials are refused, in the profile's own setting names.
    auth_hint: String,
}

impl RestClient {
    /// A client for the slurmrestd at `base` (a trailing path, e.g. behind a proxy, is kept).
    pub fn new(http: HttpClient, mut base: url::Url, profile: &Profile) -> Self {
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let auth_hint = format!(
            "check {} and the token ({} or {})",
            profile.setting_name("username"),
            profile.setting_name("token"),
            profile.setting_name("token_command")
        );
        RestClient {
            http,
            base,
            auth_hint,
        }
    }

    /// Adds to refused credentials which of the profile's settings to check.
    pub fn explain(&self, mut e: Error) -> Error {
        // Once: a refusal may be reported again around an earlier one.
        if e.kind == ErrorKind::Auth && !e.message.contains(&self.auth_hint) {
            e.message = format!("{}; {}", e.message, self.auth_hint);
        }
        e
    }

    /// The base URL, for messages.
    pub fn base(&self) -> &url::Url {
        &self.base
    }

    /// Sends one request with `user`'s token and returns the raw answer (transport errors are
    /// already retried by [`HttpClient`]).
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        user: &str,
        token: &Secret,
        body: Option<&bytes::Bytes>,
        idempotency: Idempotency,
    ) -> Result<HttpResponse> {
        let url = self
            .base
            .join(path)
            .map_err(|e| Error::usage(format!("invalid slurmrestd URL for {path}: {e}")))?;
        self.http
            .send(idempotency, slurm_transient, |c| {
                let mut rb = c
                    .request(method.clone(), url.clone())
                    .header("X-SLURM-USER-NAME", user)
                    .header("X-SLURM-USER-TOKEN", token.expose())
                    .header(reqwest::header::ACCEPT, "application/json");
                if let Some(b) = body {
                    // slurmrestd refuses bodies without this exact content type.
                    rb = rb
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(b.clone());
                }
                rb
            })
            .await
    }

    /// [`Self::send`] followed by [`classify`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        user: &str,
        token: &Secret,
        body: Option<&bytes::Bytes>,
        idempotency: Idempotency,
    ) -> std::result::Result<Value, Failure> {
        let resp = self
            .send(method, path, user, token, body, idempotency)
            .await?;
        classify(&resp).map_err(|mut f| {
            f.error = self.explain(f.error);
            f
        })
    }
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
    fn both_error_shapes_are_read() {
        let body: Value = serde_json::from_str(
            r#"{"errors":[{"description":"Unable to find JobId=9999","error_number":2017,"error":"Invalid job id specified","source":"slurm_load_job"},
                           {"error_code":2000,"error":"Invalid partition name specified"}, 7]}"#,
        )
        .unwrap();
        let errs = parse_errors(&body);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].code, Some(2017));
        assert_eq!(errs[0].source.as_deref(), Some("slurm_load_job"));
        assert_eq!(errs[1].code, Some(2000));
        assert_eq!(errs[1].text(), "Invalid partition name specified");
    }

    #[test]
    fn unknown_job_is_not_found_and_not_retried() {
        let r = resp(
            500,
            r#"{"errors":[{"description":"Unable to find JobId=9","error_number":2017,"error":"Invalid job id specified","source":"slurm_load_job"}],"jobs":[]}"#,
        );
        assert!(!slurm_transient(&r));
        let f = classify(&r).unwrap_err();
        assert_eq!(f.error.kind, ErrorKind::NotFound);
        assert_eq!(f.error.code.as_deref(), Some("2017"));
        assert!(f.error.message.contains("Unable to find JobId=9"));
        assert!(!f.suspect_auth);
    }

    #[test]
    fn classification_of_other_answers() {
        let f = classify(&resp(
            500,
            r#"{"errors":[{"error_code":2000,"error":"Invalid partition name specified"}]}"#,
        ))
        .unwrap_err();
        assert_eq!(f.error.exit_code(), crate::error::exit::USAGE);
        let f = classify(&resp(400, r#"{"errors":[{"error":"environment must be set","error_code":2127},{"error_code":9001,"error":"Failure during parsing"}]}"#)).unwrap_err();
        assert_eq!(f.error.exit_code(), crate::error::exit::USAGE);
        assert!(f.error.message.contains("9001"));
        let f = classify(&resp(500, r#"{"errors":[{"description":"Failed while looking for jobs","error_number":-1,"error":"Unspecified error","source":"slurm_load_jobs"}]}"#)).unwrap_err();
        assert!(f.suspect_auth);
        assert_eq!(f.error.exit_code(), crate::error::exit::UNAVAILABLE);
        let f = classify(&resp(401, "Authentication failure")).unwrap_err();
        assert_eq!(f.error.exit_code(), crate::error::exit::AUTH);
        let f = classify(&resp(200, "not json")).unwrap_err();
        assert_eq!(f.error.kind, ErrorKind::Protocol);
        // An unreachable controller is worth retrying; a bare 503 too.
        let down = resp(
            500,
            r#"{"errors":[{"error_number":1001,"error":"Unable to contact slurm controller (connect failure)"}]}"#,
        );
        assert!(slurm_transient(&down));
        assert!(slurm_transient(&resp(503, "busy")));
        assert!(slurm_transient(&resp(500, "<html>oops</html>")));
        assert_eq!(
            classify(&resp(200, r#"{"errors":[],"jobs":[]}"#)).unwrap()["jobs"],
            Value::Array(vec![])
        );
    }

    #[test]
    fn versions_come_from_openapi_paths() {
        let doc: Value = serde_json::from_str(
            r#"{"paths":{"/slurm/v0.0.38/ping":{},"/slurm/v0.0.37/jobs":{},"/slurmdb/v0.0.38/jobs":{},"/openapi":{}}}"#,
        )
        .unwrap();
        assert_eq!(versions_in_openapi(&doc), vec!["v0.0.37", "v0.0.38"]);
        assert!(find_version("0.0.38").is_some());
        assert!(find_version("v0.0.38").is_some());
        assert!(find_version("v0.0.40").is_none());
    }
}
