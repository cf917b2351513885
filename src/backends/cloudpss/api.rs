//! Wire level: the typed GraphQL operations (one `.graphql` file each, checked against
//! `schema.graphql` at compile time) and [`Api::post`], which turns HTTP failures, GraphQL
//! `errors[]` and missing data into typed [`Error`]s.

use crate::config::{Profile, Secret};
use crate::error::{Error, Result};
use crate::http::{HttpClient, HttpResponse, Idempotency, default_transient, snippet};
use graphql_client::GraphQLQuery;
use serde::Deserialize;
use serde_json::Value;

// Rust types for the schema's custom scalars and for the enums kept as verbatim strings
// (so an unknown status from a newer server is reported, not rejected).
type JSONObject = serde_json::Map<String, Value>;
type Timestamp = Value;
type DateTime = String;
type ResourceId = String;
type FindCondition = Value;
type JsonWebToken = String;
type JobStatus = String;
type AccountChallengeType = String;

/// Name of the version header the platform sends with every answer.
pub const VERSION_HEADER: &str = "x-cloudpss-version";

macro_rules! operation {
    ($name:ident, $file:literal) => {
        #[doc = concat!("The operation in `", $file, "`.")]
        #[derive(GraphQLQuery)]
        #[graphql(
                                            schema_path = "src/backends/cloudpss/schema.graphql",
                                            query_path = $file,
                                            extern_enums("JobStatus", "AccountChallengeType"),
                                            variables_derives = "Clone",
                                            response_derives = "Clone"
                                        )]
        pub struct $name;
    };
}

/// The generated operation types (one module per operation, named after it in snake case).
#[allow(missing_docs)]
mod generated {
    use super::*;

    operation!(
        ChallengeQuery,
        "src/backends/cloudpss/queries/challenge.graphql"
    );
    operation!(
        CreateTokenMutation,
        "src/backends/cloudpss/queries/create_token.graphql"
    );
    operation!(
        TokenInfoQuery,
        "src/backends/cloudpss/queries/token_info.graphql"
    );
    operation!(
        SystemInfoQuery,
        "src/backends/cloudpss/queries/system_info.graphql"
    );
    operation!(
        CreateJobMutation,
        "src/backends/cloudpss/queries/create_job.graphql"
    );
    operation!(JobQuery, "src/backends/cloudpss/queries/job.graphql");
    operation!(JobsQuery, "src/backends/cloudpss/queries/jobs.graphql");
    operation!(
        AbortJobMutation,
        "src/backends/cloudpss/queries/abort_job.graphql"
    );
    operation!(
        JobPoliciesQuery,
        "src/backends/cloudpss/queries/job_policies.graphql"
    );
}

pub use generated::*;

/// A successful answer: its data and the server version it announced.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    /// The `data` member.
    pub data: T,
    /// `X-Cloudpss-Version`, when sent.
    pub version: Option<String>,
}

/// One entry of a GraphQL `errors[]` array.
#[derive(Debug, Clone, Deserialize)]
pub struct GqlError {
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// Server-defined details; `code` is what we classify by.
    #[serde(default)]
    pub extensions: Option<serde_json::Map<String, Value>>,
}

impl GqlError {
    fn code(&self) -> Option<String> {
        match self.extensions.as_ref()?.get("code")? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawResponse {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<GqlError>>,
}

/// Classifies a non-empty `errors[]` by the first error's `extensions.code`, keeping every
/// message. Codes: UNAUTHENTICATED → an expired/invalid token (a fresh login may cure it),
/// FORBIDDEN → refused, NOT_FOUND, BAD_USER_INPUT → invalid parameters; anything else is an
/// unclassified platform error.
pub fn classify(errors: &[GqlError]) -> Error {
    let text = errors
        .iter()
        .map(|e| e.message.trim())
        .filter(|m| !m.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    let text = if text.is_empty() {
        "the platform reported an error without a message".to_string()
    } else {
        text
    };
    let code = errors.iter().find_map(GqlError::code);
    let lower = text.to_ascii_lowercase();
    let message = format!("CloudPSS: {text}");
    let quota = code.as_deref().is_some_and(|c| {
        let c = c.to_ascii_uppercase();
        c.contains("QUOTA") || c.contains("RESOURCE_EXHAUSTED")
    }) || lower.contains("quota")
        || lower.contains("insufficient balance")
        || text.contains("配额")
        || text.contains("余额");
    let err = match code.as_deref() {
        // A refused quota will be refused again: permission/quota (4), not "try later".
        _ if quota => Error::auth(message),
        Some("UNAUTHENTICATED") => Error::auth(message).expired_token(),
        Some("FORBIDDEN") => Error::auth(message),
        Some("NOT_FOUND") => Error::not_found(message),
        Some("BAD_USER_INPUT") | Some("BAD_REQUEST") => Error::usage(message),
        Some(_) => Error::platform(message),
        // Without a code, only a clearly token-related message counts as an auth failure.
        None if lower.contains("token")
            && (lower.contains("expired") || lower.contains("invalid")) =>
        {
            Error::auth(message).expired_token()
        }
        None => Error::platform(message),
    };
    match code {
        Some(c) => err.with_code(c),
        None => err,
    }
}

/// Interprets a whole HTTP answer to a GraphQL request.
pub fn interpret<T: serde::de::DeserializeOwned>(
    resp: &HttpResponse,
    url: &str,
) -> Result<Reply<T>> {
    let status = resp.status.as_u16();
    let version = resp
        .headers
        .get(VERSION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_string());
    let parsed: Option<RawResponse> = serde_json::from_slice(&resp.body).ok();
    // A GraphQL error list explains the failure best, whatever the HTTP status.
    if let Some(errors) = parsed.as_ref().and_then(|p| p.errors.as_ref()) {
        if !errors.is_empty() {
            return Err(classify(errors));
        }
    }
    if !resp.status.is_success() {
        let http = format!("HTTP {status}");
        let body = snippet(&resp.body);
        return Err(match status {
            401 => Error::auth(format!("CloudPSS refused the token ({http}): {body}"))
                .expired_token()
                .with_code(http),
            403 => Error::auth(format!("CloudPSS refused access ({http}): {body}")).with_code(http),
            429 | 500..=599 => {
                Error::unavailable(format!("CloudPSS is unavailable ({http}): {body}"))
                    .with_code(http)
            }
            _ => Error::protocol(format!(
                "unexpected {http} from {url} (is CLOUDPSS_API_URL the platform's base URL, or CLOUDPSS_GQL_URL its GraphQL endpoint?): {body}"
            ))
            .with_code(http),
        });
    }
    let Some(raw) = parsed else {
        return Err(Error::protocol(format!(
            "CloudPSS answered with something that is not a GraphQL response: {}",
            snippet(&resp.body)
        )));
    };
    let data = match raw.data {
        Some(Value::Null) | None => {
            return Err(Error::protocol(
                "CloudPSS answered without data and without errors",
            ));
        }
        Some(d) => d,
    };
    let data = serde_json::from_value(data).map_err(|e| {
        Error::protocol(format!(
            "CloudPSS answered with unexpected data: {}",
            crate::http::redact::serde_reason(&e)
        ))
    })?;
    Ok(Reply { data, version })
}

/// The GraphQL endpoint of one profile.
#[derive(Debug, Clone)]
pub struct Api {
    http: HttpClient,
    url: url::Url,
    profile: String,
}

impl Api {
    /// A client for `url` (the GraphQL endpoint) with the profile's HTTP settings.
    pub fn new(profile: &Profile, url: url::Url) -> Result<Self> {
        Ok(Api {
            http: HttpClient::new(profile, "cloudpss")?,
            url,
            profile: profile.name.clone(),
        })
    }

    /// The endpoint.
    pub fn url(&self) -> &url::Url {
        &self.url
    }

    /// The HTTP client (shared with the output streams).
    pub fn http(&self) -> &HttpClient {
        &self.http
    }

    /// Sends one operation, with the bearer token when given, and returns its typed data.
    pub async fn post<Q: GraphQLQuery>(
        &self,
        token: Option<&Secret>,
        variables: Q::Variables,
        idempotency: Idempotency,
    ) -> Result<Reply<Q::ResponseData>> {
        let body = Q::build_query(variables);
        let url = self.url.clone();
        let resp = self
            .http
            .send(idempotency, default_transient, |c| {
                let req = c
                    .post(url.clone())
                    .header("content-type", "application/json; charset=utf-8")
                    .json(&body);
                match token {
                    Some(t) => req.bearer_auth(t.expose()),
                    None => req,
                }
            })
            .await?;
        interpret(&resp, self.url.as_str()).map_err(|e| e.in_profile(&self.profile, "cloudpss"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;
    use bytes::Bytes;
    use reqwest::StatusCode;
    use reqwest::header::HeaderMap;

    fn resp(status: u16, body: &str) -> HttpResponse {
        HttpResponse {
            status: StatusCode::from_u16(status).unwrap(),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn errors_are_classified_by_code_and_keep_the_message() {
        let r = resp(
            200,
            r#"{"data":null,"errors":[{"message":"token expired","extensions":{"code":"UNAUTHENTICATED"}}]}"#,
        );
        let e = interpret::<Value>(&r, "u").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Auth);
        assert!(e.token_expired);
        assert_eq!(e.code.as_deref(), Some("UNAUTHENTICATED"));
        assert!(e.message.contains("token expired"));

        let r = resp(
            200,
            r#"{"errors":[{"message":"disk on fire","extensions":{"code":"E42"}}]}"#,
        );
        let e = interpret::<Value>(&r, "u").unwrap_err();
        assert_eq!(
            (e.kind, e.code.as_deref()),
            (ErrorKind::Platform, Some("E42"))
        );
        assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE);
    }

    #[test]
    fn missing_data_and_bad_bodies_are_protocol_errors() {
        let e = interpret::<Value>(&resp(200, r#"{"data":null}"#), "u").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        let e = interpret::<Value>(&resp(200, "<html>"), "u").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Protocol);
        let e = interpret::<Value>(&resp(404, "Not Found"), "http://x/").unwrap_err();
        assert!(e.message.contains("CLOUDPSS_GQL_URL"), "{e}");
        let e = interpret::<Value>(&resp(503, "busy"), "u").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Unavailable);
        let e = interpret::<Value>(&resp(401, ""), "u").unwrap_err();
        assert!(e.token_expired && e.kind == ErrorKind::Auth);
    }

    #[test]
    fn the_job_fragment_is_identical_in_every_operation_using_it() {
        let dir = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/backends/cloudpss/queries/"
        );
        let frag = |f: &str| {
            let text = std::fs::read_to_string(format!("{dir}{f}")).unwrap();
            text[text.find("fragment JobFields").unwrap()..].to_string()
        };
        assert_eq!(frag("job.graphql"), frag("jobs.graphql"));
        assert_eq!(frag("job.graphql"), frag("create_job.graphql"));
    }
}
