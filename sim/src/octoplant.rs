//! Simulated octoplant server: the OAuth2 password grant, export orders (`/v1/order`) whose
//! sub-processes advance with time, cancellation, ZIP downloads and gRPC-gateway style errors
//! (`{code, message, details}` with the HTTP status grpc-gateway would use).
//!
//! Besides the configured user, a second user `viewer` (same password) may log in but may not
//! order or cancel exports, so clients can be tested against PERMISSION_DENIED.
//!
//! Per-order controls travel in any export kind's options: `sim_outcome`, `sim_duration`,
//! `sim_queue` (e.g. `--opt exports='{"projectTree":{"sim_outcome":"fail"}}'`).

use super::{Lifecycle, Phase, SimConfig, SimState};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The client id of the public export API client.
pub const CLIENT_ID: &str = "public-api";
/// The client secret octoplant's documentation publishes for [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "ff99971a-f8c3-4d21-5345-f7cb021b4b54";
/// A user that may log in and read, but not order or cancel exports.
pub const READ_ONLY_USER: &str = "viewer";
/// What `/v1/status/api_version` reports.
pub const API_VERSION: &str = "1.2.0-sim";

/// Every export kind of `ExportContents`, with the formats it supports (default first).
pub const EXPORT_KINDS: [(&str, &[&str]); 13] = [
    ("projectTree", &["JSON", "XML"]),
    ("jobList", &["CSV", "JSON"]),
    ("jobResults", &["CSV", "JSON"]),
    ("unequalJobResults", &["CSV", "JSON"]),
    ("userManagement", &["JSON", "XML"]),
    ("componentTypes", &["JSON", "XML"]),
    ("componentLog", &["CSV", "JSON"]),
    ("eventLog", &["CSV", "JSON"]),
    ("adminLog", &["CSV", "JSON"]),
    ("standardLibraryManagement", &["CSV", "JSON"]),
    ("componentsWithStdLibAssignments", &["CSV", "JSON"]),
    ("assetState", &["CSV", "JSON"]),
    ("usageInformation", &["JSON"]),
];

/// gRPC status codes used by the simulator.
mod code {
    pub const CANCELLED: i32 = 1;
    pub const INVALID_ARGUMENT: i32 = 3;
    pub const NOT_FOUND: i32 = 5;
    pub const PERMISSION_DENIED: i32 = 7;
    pub const FAILED_PRECONDITION: i32 = 9;
    pub const INTERNAL: i32 = 13;
    pub const UNAUTHENTICATED: i32 = 16;
}

/// The HTTP status grpc-gateway answers for a gRPC code.
fn http_status(code: i32) -> StatusCode {
    match code {
        0 => StatusCode::OK,
        1 => StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        3 | 9 | 11 => StatusCode::BAD_REQUEST,
        4 => StatusCode::GATEWAY_TIMEOUT,
        5 => StatusCode::NOT_FOUND,
        6 | 10 => StatusCode::CONFLICT,
        7 => StatusCode::FORBIDDEN,
        8 => StatusCode::TOO_MANY_REQUESTS,
        12 => StatusCode::NOT_IMPLEMENTED,
        14 => StatusCode::SERVICE_UNAVAILABLE,
        16 => StatusCode::UNAUTHORIZED,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn rpc_error(code: i32, message: impl Into<String>, details: Vec<Value>) -> Response {
    let body = json!({ "code": code, "message": message.into(), "details": details });
    (http_status(code), axum::Json(body)).into_response()
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = json!({ "error": error, "error_description": description });
    (status, axum::Json(body)).into_response()
}

fn bad_field(field: &str, description: &str) -> Response {
    rpc_error(
        code::INVALID_ARGUMENT,
        format!("invalid {field}: {description}"),
        vec![json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{ "field": field, "description": description }],
        })],
    )
}

#[derive(Debug)]
struct Token {
    user: String,
    expires: Instant,
}

#[derive(Debug)]
struct Order {
    life: Lifecycle,
    /// Requested kinds with their chosen format, in request order.
    exports: Vec<(String, String)>,
    contents: Map<String, Value>,
    owner: String,
}

impl Order {
    /// Steps of the export: one per requested kind, then packaging.
    fn steps(&self) -> Vec<String> {
        let mut s: Vec<String> = self
            .exports
            .iter()
            .map(|(k, _)| format!("exporting {k}"))
            .collect();
        s.push("packaging archive".into());
        s
    }

    /// The `Operation` object for this order as the server would show it now.
    fn operation(&self, name: &str) -> Value {
        let steps = self.steps();
        let total = steps.len() as i64;
        let phase = self.life.phase();
        let progress_at = |p: f64| ((p * total as f64).floor() as i64).clamp(0, total - 1);
        // Where the export stood when it stopped (failure halfway, cancel at request time).
        let stopped_at = |at: Option<Instant>| {
            let run = self.life.plan.run.as_secs_f64().max(1e-9);
            let t = at
                .map(|a| a.duration_since(self.life.created))
                .unwrap_or(self.life.plan.queue + self.life.plan.run / 2);
            let p = (t.as_secs_f64() - self.life.plan.queue.as_secs_f64()).max(0.0) / run;
            progress_at(p.min(1.0))
        };
        let (state, finished, current, done, error) = match phase {
            Phase::Queued => ("STATE_PENDING", 0, None, false, None),
            Phase::Running(p) => {
                let f = progress_at(p);
                (
                    "STATE_RUNNING",
                    f,
                    Some(steps[f as usize].clone()),
                    false,
                    None,
                )
            }
            Phase::Cancelling => {
                // Cancellation is not visible until it takes effect: the order looks as it
                // did when cancel was requested.
                let at = self.life.cancel_requested.unwrap_or(self.life.created);
                if at.duration_since(self.life.created) < self.life.plan.queue {
                    ("STATE_PENDING", 0, None, false, None)
                } else {
                    let f = stopped_at(Some(at));
                    (
                        "STATE_RUNNING",
                        f,
                        Some(steps[f as usize].clone()),
                        false,
                        None,
                    )
                }
            }
            Phase::Succeeded => ("STATE_SUCCEEDED", total, None, true, None),
            Phase::Failed => {
                let f = stopped_at(None);
                let step = steps[f as usize].clone();
                let err = json!({
                    "code": code::INTERNAL,
                    "message": format!("{step} failed: simulated export failure"),
                    "details": [],
                });
                ("STATE_FAILED", f, Some(step), true, Some(err))
            }
            Phase::Canceled => {
                let f = stopped_at(self.life.cancel_requested);
                let err = json!({
                    "code": code::CANCELLED,
                    "message": "export order canceled by request",
                    "details": [],
                });
                ("STATE_FAILED", f, None, true, Some(err))
            }
        };
        let mut metadata = json!({
            "name": name,
            "systemId": "SIM-SYSTEM-01",
            "licenseSerialNumber": "SIM-0000-0000",
            "state": state,
            // grpc-gateway renders int64 as JSON strings.
            "finishedSubProcesses": finished.to_string(),
            "openSubProcesses": (total - finished).to_string(),
        });
        if let Some(c) = current {
            metadata["currentSubProcess"] = Value::String(c);
        }
        let mut op = json!({ "name": name, "metadata": metadata, "done": done });
        match error {
            Some(e) => op["error"] = e,
            None if done => op["response"] = json!({ "name": name }),
            None => {}
        }
        op
    }

    /// The export archive: `contents.json` plus one file per requested kind.
    fn zip(&self, name: &str) -> std::io::Result<Vec<u8>> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        let mut files = Vec::new();
        for (kind, format) in &self.exports {
            let ext = format.to_ascii_lowercase();
            let file = format!("{kind}.{ext}");
            w.start_file(file.as_str(), opts)?;
            w.write_all(sample_export(kind, format, &self.contents).as_bytes())?;
            files.push(json!({ "kind": kind, "format": format, "file": file }));
        }
        let contents = json!({
            "order": name,
            "createdAt": self.life.created_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "orderedBy": self.owner,
            "systemId": "SIM-SYSTEM-01",
            "exports": files,
        });
        w.start_file("contents.json", opts)?;
        w.write_all(serde_json::to_string_pretty(&contents)?.as_bytes())?;
        Ok(w.finish()?.into_inner())
    }
}

/// Plausible export data; jobResults is long enough that downloads arrive in several chunks.
fn sample_export(kind: &str, format: &str, contents: &Map<String, Value>) -> String {
    let rows = if kind == "jobResults" { 5000 } else { 5 };
    let options = contents.get(kind).cloned().unwrap_or(Value::Null);
    match format {
        "CSV" => {
            let mut s = String::from("id;component;timestamp;result\n");
            for i in 0..rows {
                s.push_str(&format!(
                    "{i};/Plant/Line{}/PLC{};2026-01-01T00:{:02}:00Z;{}\n",
                    i % 7,
                    i % 13,
                    i % 60,
                    if i % 11 == 0 { "unequal" } else { "equal" }
                ));
            }
            s
        }
        "XML" => {
            let mut s = format!("<?xml version=\"1.0\"?>\n<{kind}>\n");
            for i in 0..rows {
                s.push_str(&format!(
                    "  <item id=\"{i}\" component=\"/Plant/PLC{i}\"/>\n"
                ));
            }
            s.push_str(&format!("</{kind}>\n"));
            s
        }
        _ => {
            let items: Vec<Value> = (0..rows)
                .map(|i| json!({ "id": i, "component": format!("/Plant/PLC{i}") }))
                .collect();
            serde_json::to_string_pretty(
                &json!({ "kind": kind, "options": options, "items": items }),
            )
            .unwrap_or_default()
        }
    }
}

/// The octoplant part of the simulator state.
#[derive(Debug)]
struct Octo {
    sim: Arc<SimState>,
    tokens: Mutex<HashMap<String, Token>>,
    orders: Mutex<HashMap<String, Order>>,
}

type Shared = Arc<Octo>;

impl Octo {
    /// The user a request's bearer token belongs to, or the UNAUTHENTICATED answer.
    fn authorize(&self, headers: &HeaderMap) -> Result<String, Response> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let Some(token) = token else {
            return Err(rpc_error(
                code::UNAUTHENTICATED,
                "missing bearer token",
                vec![],
            ));
        };
        let tokens = self.tokens.lock().map_err(|_| internal())?;
        match tokens.get(token) {
            None => Err(rpc_error(code::UNAUTHENTICATED, "invalid token", vec![])),
            Some(t) if t.expires <= Instant::now() => {
                Err(rpc_error(code::UNAUTHENTICATED, "token expired", vec![]))
            }
            Some(t) => Ok(t.user.clone()),
        }
    }
}

fn internal() -> Response {
    rpc_error(code::INTERNAL, "simulator state unavailable", vec![])
}

/// Routes of the simulated octoplant platform.
pub fn router(state: Arc<SimState>) -> Router {
    let octo = Arc::new(Octo {
        sim: state,
        tokens: Mutex::new(HashMap::new()),
        orders: Mutex::new(HashMap::new()),
    });
    Router::new()
        .route("/v1/oauth2/token", post(token))
        .route("/v1/order", post(run_export))
        .route("/v1/order/{name}", get(get_operation))
        .route("/v1/order/{name}/cancel", post(cancel_export))
        .route("/v1/order/{name}/download", get(download_export))
        .route("/v1/status/api_version", get(api_version))
        .with_state(octo)
}

async fn api_version() -> Response {
    axum::Json(json!({ "version": API_VERSION })).into_response()
}

async fn token(State(octo): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let form_encoded = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form_encoded {
        return rpc_error(
            code::INVALID_ARGUMENT,
            "the token endpoint expects an application/x-www-form-urlencoded body",
            vec![],
        );
    }
    let Ok(form) = serde_urlencoded::from_bytes::<HashMap<String, String>>(&body) else {
        return rpc_error(code::INVALID_ARGUMENT, "malformed form body", vec![]);
    };
    let field = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    // The token endpoint answers failures the OAuth2 way (RFC 6749 §5.2), unlike the order
    // endpoints' google.rpc.Status.
    if field("grant_type") != "password" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only the password grant is enabled for this client",
        );
    }
    if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "invalid client credentials",
        );
    }
    let config = &octo.sim.config;
    // Windows-style `DOMAIN\user` names log in as `user`.
    let user = field("username").rsplit('\\').next().unwrap_or("");
    let known_user = user == config.username || user == READ_ONLY_USER;
    if !known_user || field("password") != config.password {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "invalid username or password",
        );
    }
    let access = uuid::Uuid::new_v4().simple().to_string();
    let ttl = config.token_ttl;
    match octo.tokens.lock() {
        Ok(mut t) => {
            t.insert(
                access.clone(),
                Token {
                    user: user.to_string(),
                    expires: Instant::now() + ttl,
                },
            );
        }
        Err(_) => return internal(),
    }
    let scope = if user == READ_ONLY_USER {
        "read"
    } else {
        "read write"
    };
    axum::Json(json!({
        "access_token": access,
        "token_type": "Bearer",
        "expires_in": ttl.as_secs().max(1),
        "scope": scope,
    }))
    .into_response()
}

/// The requested `exportContents` and each kind with its chosen format.
type Requested = (Map<String, Value>, Vec<(String, String)>);

/// Checks `exportContents` and picks each kind's format; the error is the platform's answer.
fn parse_contents(body: &Value) -> Result<Requested, Response> {
    let Some(contents) = body.get("exportContents") else {
        return Err(bad_field("exportContents", "is required"));
    };
    let Some(contents) = contents.as_object() else {
        return Err(bad_field("exportContents", "must be an object"));
    };
    if contents.is_empty() {
        return Err(bad_field("exportContents", "requests no export"));
    }
    let mut exports = Vec::new();
    for (kind, options) in contents {
        let field = format!("exportContents.{kind}");
        let Some((_, formats)) = EXPORT_KINDS.iter().find(|(k, _)| k == kind) else {
            return Err(bad_field(&field, "unknown export kind"));
        };
        let Some(options) = options.as_object() else {
            return Err(bad_field(&field, "must be an object"));
        };
        let format = match options.get("exportType").and_then(Value::as_str) {
            None | Some("EXPORT_TYPE_UNSPECIFIED") => formats[0].to_string(),
            Some(t) => {
                let f = t.strip_prefix("EXPORT_TYPE_").unwrap_or(t);
                if !formats.contains(&f) {
                    return Err(bad_field(
                        &format!("{field}.exportType"),
                        &format!("{t} is not available for {kind}"),
                    ));
                }
                f.to_string()
            }
        };
        exports.push((kind.clone(), format));
    }
    Ok((contents.clone(), exports))
}

/// Per-order lifecycle controls (`sim_outcome`, `sim_duration`, `sim_queue`) found in any
/// export kind's options, e.g. `{"projectTree": {"sim_outcome": "fail"}}`: jobctl passes
/// export options through unchanged, so tests can steer one order without a global setting.
fn sim_controls(contents: &Map<String, Value>) -> Map<String, Value> {
    contents
        .values()
        .filter_map(Value::as_object)
        .flat_map(|o| o.iter())
        .filter(|(k, _)| k.starts_with("sim_"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn run_export(State(octo): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    let user = match octo.authorize(&headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    if user == READ_ONLY_USER {
        return rpc_error(
            code::PERMISSION_DENIED,
            format!("user {user} may not order exports"),
            vec![],
        );
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return rpc_error(code::INVALID_ARGUMENT, "request body is not JSON", vec![]);
    };
    let (contents, exports) = match parse_contents(&body) {
        Ok(x) => x,
        Err(r) => return r,
    };
    let name = uuid::Uuid::new_v4().to_string();
    let order = Order {
        life: Lifecycle::new(octo.sim.plan(&sim_controls(&contents))),
        exports,
        contents,
        owner: user,
    };
    let op = order.operation(&name);
    let label = body.to_string();
    match octo.orders.lock() {
        Ok(mut o) => {
            o.insert(name, order);
        }
        Err(_) => return internal(),
    }
    octo.sim.record_job("octoplant", &label);
    octo.sim.after_create(axum::Json(op).into_response())
}

fn not_found(name: &str) -> Response {
    rpc_error(
        code::NOT_FOUND,
        format!("export order {name} not found"),
        vec![],
    )
}

async fn get_operation(
    State(octo): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = octo.authorize(&headers) {
        return r;
    }
    let Ok(orders) = octo.orders.lock() else {
        return internal();
    };
    match orders.get(&name) {
        Some(o) => axum::Json(o.operation(&name)).into_response(),
        None => not_found(&name),
    }
}

async fn cancel_export(
    State(octo): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let user = match octo.authorize(&headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Ok(mut orders) = octo.orders.lock() else {
        return internal();
    };
    let Some(order) = orders.get_mut(&name) else {
        return not_found(&name);
    };
    if user == READ_ONLY_USER {
        return rpc_error(
            code::PERMISSION_DENIED,
            format!("user {user} may not cancel exports"),
            vec![],
        );
    }
    if !order.life.cancel() {
        return rpc_error(
            code::FAILED_PRECONDITION,
            format!("export order {name} has already finished"),
            vec![],
        );
    }
    axum::Json(json!({})).into_response()
}

async fn download_export(
    State(octo): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = octo.authorize(&headers) {
        return r;
    }
    let archive = {
        let Ok(orders) = octo.orders.lock() else {
            return internal();
        };
        let Some(order) = orders.get(&name) else {
            return not_found(&name);
        };
        if order.life.phase() != Phase::Succeeded {
            let op = order.operation(&name);
            let state = op["metadata"]["state"]
                .as_str()
                .unwrap_or("STATE_UNSPECIFIED");
            return rpc_error(
                code::FAILED_PRECONDITION,
                format!("export order {name} is not downloadable in state {state}"),
                vec![],
            );
        }
        order.zip(&name)
    };
    match archive {
        Ok(bytes) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "application/zip".to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"export-{name}.zip\""),
                ),
            ],
            bytes,
        )
            .into_response(),
        Err(e) => rpc_error(code::INTERNAL, format!("cannot build archive: {e}"), vec![]),
    }
}

/// Environment variables pointing jobctl's built-in octoplant profile at the simulator.
pub fn env_vars(base: &str, config: &SimConfig) -> Vec<(String, String)> {
    vec![
        ("OCTOPLANT_URL".into(), base.to_string()),
        ("OCTOPLANT_USERNAME".into(), config.username.clone()),
        ("OCTOPLANT_PASSWORD".into(), config.password.clone()),
        ("OCTOPLANT_CLIENT_ID".into(), CLIENT_ID.into()),
        ("OCTOPLANT_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SimHandle, start};
    use std::time::Duration;

    async fn sim(config: SimConfig) -> (SimHandle, reqwest::Client) {
        let h = start(config).await.unwrap();
        (h, reqwest::Client::new())
    }

    async fn login(h: &SimHandle, c: &reqwest::Client, user: &str) -> reqwest::Response {
        c.post(format!("{}/v1/oauth2/token", h.base_url))
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", h.state.config.password.as_str()),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ])
            .send()
            .await
            .unwrap()
    }

    async fn token(h: &SimHandle, c: &reqwest::Client, user: &str) -> String {
        let v: Value = login(h, c, user).await.json().await.unwrap();
        v["access_token"].as_str().unwrap().to_string()
    }

    async fn order(h: &SimHandle, c: &reqwest::Client, tok: &str, body: Value) -> (u16, Value) {
        let r = c
            .post(format!("{}/v1/order", h.base_url))
            .bearer_auth(tok)
            .json(&body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    #[tokio::test]
    async fn the_password_grant_checks_form_client_and_user() {
        let (h, c) = sim(SimConfig::default()).await;
        let r = login(&h, &c, "jobctl").await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["token_type"], "Bearer");
        assert_eq!(v["expires_in"], 3600);
        assert_eq!(login(&h, &c, "CORP\\jobctl").await.status(), 200);
        let r = login(&h, &c, "mallory").await;
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"], "invalid_grant");
        // JSON instead of a form is refused as an invalid argument.
        let r = c
            .post(format!("{}/v1/oauth2/token", h.base_url))
            .json(&json!({"grant_type":"password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], 3);
        let r = c
            .post(format!("{}/v1/oauth2/token", h.base_url))
            .form(&[
                ("grant_type", "password"),
                ("username", "jobctl"),
                ("password", crate::DEFAULT_PASSWORD),
                ("client_id", CLIENT_ID),
                ("client_secret", "wrong"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"], "invalid_client");
        assert!(v["error_description"].as_str().unwrap().contains("client"));
    }

    #[tokio::test]
    async fn tokens_expire_after_the_configured_ttl() {
        let (h, c) = sim(SimConfig {
            token_ttl: Duration::from_millis(300),
            ..SimConfig::default()
        })
        .await;
        let tok = token(&h, &c, "jobctl").await;
        let (status, _) = order(&h, &c, &tok, json!({"exportContents":{"projectTree":{}}})).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let (status, body) =
            order(&h, &c, &tok, json!({"exportContents":{"projectTree":{}}})).await;
        assert_eq!(status, 401);
        assert_eq!(body["code"], 16);
        assert_eq!(body["message"], "token expired");
    }

    #[tokio::test]
    async fn orders_are_validated_and_viewers_may_not_order() {
        let (h, c) = sim(SimConfig::default()).await;
        let tok = token(&h, &c, "jobctl").await;
        for (body, field) in [
            (json!({}), "exportContents"),
            (json!({"exportContents":{}}), "exportContents"),
            (
                json!({"exportContents":{"versions":{}}}),
                "exportContents.versions",
            ),
            (
                json!({"exportContents":{"jobList":{"exportType":"EXPORT_TYPE_XML"}}}),
                "exportContents.jobList.exportType",
            ),
        ] {
            let (status, v) = order(&h, &c, &tok, body).await;
            assert_eq!(status, 400);
            assert_eq!(v["code"], 3);
            assert_eq!(v["details"][0]["fieldViolations"][0]["field"], field);
        }
        let viewer = token(&h, &c, READ_ONLY_USER).await;
        let (status, v) = order(
            &h,
            &c,
            &viewer,
            json!({"exportContents":{"projectTree":{}}}),
        )
        .await;
        assert_eq!((status, v["code"].as_i64()), (403, Some(7)));
        let r = c
            .get(format!("{}/v1/order/nope", h.base_url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(r.json::<Value>().await.unwrap()["code"], 5);
    }

    #[tokio::test]
    async fn an_order_progresses_and_downloads_as_a_zip() {
        let (h, c) = sim(SimConfig {
            queue_duration: Duration::from_millis(100),
            job_duration: Duration::from_millis(600),
            ..SimConfig::default()
        })
        .await;
        let tok = token(&h, &c, "jobctl").await;
        let (status, op) = order(
            &h,
            &c,
            &tok,
            json!({"exportContents":{"projectTree":{"exportType":"EXPORT_TYPE_XML"},"jobList":{}}}),
        )
        .await;
        assert_eq!(status, 200);
        let name = op["name"].as_str().unwrap().to_string();
        assert_eq!(op["done"], false);
        assert_eq!(op["metadata"]["openSubProcesses"], "3");
        let early = c
            .get(format!("{}/v1/order/{name}/download", h.base_url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(early.status(), 400);
        assert_eq!(early.json::<Value>().await.unwrap()["code"], 9);
        let mut saw_running = false;
        let last = loop {
            let v: Value = c
                .get(format!("{}/v1/order/{name}", h.base_url))
                .bearer_auth(&tok)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["metadata"]["state"] == "STATE_RUNNING" {
                saw_running = true;
                assert!(v["metadata"]["currentSubProcess"].is_string());
            }
            if v["done"] == true {
                break v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(saw_running);
        assert_eq!(last["metadata"]["state"], "STATE_SUCCEEDED");
        assert_eq!(last["metadata"]["finishedSubProcesses"], "3");
        assert_eq!(last["response"]["name"], name.as_str());
        let r = c
            .get(format!("{}/v1/order/{name}/download", h.base_url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let disposition = r.headers()[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .to_string();
        assert!(disposition.contains(&format!("export-{name}.zip")));
        let bytes = r.bytes().await.unwrap();
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
        let mut names: Vec<String> = zip.file_names().map(String::from).collect();
        names.sort();
        assert_eq!(names, ["contents.json", "jobList.csv", "projectTree.xml"]);
        let contents: Value =
            serde_json::from_reader(zip.by_name("contents.json").unwrap()).unwrap();
        assert_eq!(contents["order"], name.as_str());
        assert_eq!(contents["exports"].as_array().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn cancelled_orders_end_with_grpc_cancelled() {
        let (h, c) = sim(SimConfig {
            job_duration: Duration::from_secs(5),
            ..SimConfig::default()
        })
        .await;
        let tok = token(&h, &c, "jobctl").await;
        let (_, op) = order(&h, &c, &tok, json!({"exportContents":{"eventLog":{}}})).await;
        let name = op["name"].as_str().unwrap();
        let cancel = |tok: String| {
            let url = format!("{}/v1/order/{name}/cancel", h.base_url);
            let c = c.clone();
            async move { c.post(url).bearer_auth(tok).send().await.unwrap() }
        };
        let viewer = token(&h, &c, READ_ONLY_USER).await;
        assert_eq!(cancel(viewer).await.status(), 403);
        assert_eq!(cancel(tok.clone()).await.status(), 200);
        tokio::time::sleep(Duration::from_millis(400)).await;
        let v: Value = c
            .get(format!("{}/v1/order/{name}", h.base_url))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["done"], true);
        assert_eq!(v["error"]["code"], 1);
        // Cancelling a finished order is a failed precondition.
        let again = cancel(tok.clone()).await;
        assert_eq!(again.status(), 400);
        assert_eq!(again.json::<Value>().await.unwrap()["code"], 9);
    }

    #[test]
    fn env_vars_point_the_builtin_profile_at_the_simulator() {
        let vars = env_vars("http://127.0.0.1:9", &SimConfig::default());
        let get = |k: &str| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("OCTOPLANT_URL"), Some("http://127.0.0.1:9"));
        assert_eq!(get("OCTOPLANT_USERNAME"), Some("jobctl"));
        assert_eq!(get("OCTOPLANT_PASSWORD"), Some(crate::DEFAULT_PASSWORD));
        assert_eq!(get("OCTOPLANT_CLIENT_SECRET"), Some(CLIENT_SECRET));
    }
}
