//! octoplant records to jobctl's model: export orders (`Operation`) to [`Job`]s, gRPC status
//! codes to names and error kinds, and job specs to the `exportContents` of a new order.

use crate::error::{Error, ErrorKind, Result};
use crate::model::{Job, JobSpec, JobState};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

/// Every key of `ExportContents` (platforms.md §3.4), in the platform's spelling.
pub const EXPORT_KINDS: [&str; 13] = [
    "projectTree",
    "jobList",
    "jobResults",
    "unequalJobResults",
    "userManagement",
    "componentTypes",
    "componentLog",
    "eventLog",
    "adminLog",
    "standardLibraryManagement",
    "componentsWithStdLibAssignments",
    "assetState",
    "usageInformation",
];

/// gRPC code CANCELLED, which a cancelled order carries in its `error`.
pub const CODE_CANCELLED: i64 = 1;
/// gRPC code FAILED_PRECONDITION (e.g. cancelling or downloading a finished/unfinished order).
pub const CODE_FAILED_PRECONDITION: i64 = 9;

/// The name of a gRPC status code, as the platform's documentation prints it.
pub fn code_name(code: i64) -> &'static str {
    match code {
        0 => "OK",
        1 => "CANCELLED",
        2 => "UNKNOWN",
        3 => "INVALID_ARGUMENT",
        4 => "DEADLINE_EXCEEDED",
        5 => "NOT_FOUND",
        6 => "ALREADY_EXISTS",
        7 => "PERMISSION_DENIED",
        8 => "RESOURCE_EXHAUSTED",
        9 => "FAILED_PRECONDITION",
        10 => "ABORTED",
        11 => "OUT_OF_RANGE",
        12 => "UNIMPLEMENTED",
        13 => "INTERNAL",
        14 => "UNAVAILABLE",
        15 => "DATA_LOSS",
        16 => "UNAUTHENTICATED",
        _ => "UNRECOGNISED_CODE",
    }
}

/// How jobctl treats a gRPC status code returned for a request: refusals are invalid input
/// (2) or permission/quota (4); only what may succeed later is 7.
pub fn code_kind(code: i64) -> ErrorKind {
    match code {
        // INVALID_ARGUMENT, ALREADY_EXISTS, FAILED_PRECONDITION, OUT_OF_RANGE: the request as
        // sent will be refused again.
        3 | 6 | 9 | 11 => ErrorKind::Usage,
        5 => ErrorKind::NotFound,
        // PERMISSION_DENIED, RESOURCE_EXHAUSTED (a quota), UNAUTHENTICATED.
        7 | 8 | 16 => ErrorKind::Auth,
        12 => ErrorKind::NotSupported,
        // Transient by nature: worth trying again later.
        4 | 10 | 14 => ErrorKind::Unavailable,
        _ => ErrorKind::Platform,
    }
}

/// `google.rpc.Status`, the body of every error answer and the `error` of a failed order.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RpcStatus {
    /// gRPC code (0–16).
    #[serde(default, deserialize_with = "lenient_i64")]
    pub code: Option<i64>,
    /// Human-readable message.
    #[serde(default)]
    pub message: Option<String>,
    /// `Any` objects with an `@type`.
    #[serde(default)]
    pub details: Vec<Value>,
}

impl RpcStatus {
    /// `NAME: message`, plus the details' types and contents when there are any.
    pub fn describe(&self) -> String {
        let code = self.code.unwrap_or(2);
        let mut text = format!(
            "{}: {}",
            code_name(code),
            self.message.as_deref().unwrap_or("(no message)")
        );
        if !self.details.is_empty() {
            let details = Value::Array(self.details.clone()).to_string();
            let short: String = details.chars().take(300).collect();
            text.push_str(&format!(" (details: {short})"));
        }
        text
    }

    /// The jobctl error for this status, carrying the numeric code as the platform's code.
    pub fn to_error(&self) -> Error {
        let code = self.code.unwrap_or(2);
        let mut e = Error::new(code_kind(code), self.describe()).with_code(code.to_string());
        if code == 16 {
            // The bearer token was refused; a new password grant may cure it.
            e = e.expired_token();
        }
        e
    }
}

/// `ExportState`, the `metadata` of an order.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExportState {
    /// The export id.
    #[serde(default)]
    pub name: Option<String>,
    /// Server system id.
    #[serde(default)]
    pub system_id: Option<String>,
    /// License serial number of the server.
    #[serde(default)]
    pub license_serial_number: Option<String>,
    /// `STATE_PENDING`, `STATE_RUNNING`, `STATE_SUCCEEDED`, `STATE_FAILED`, `STATE_UNSPECIFIED`.
    #[serde(default)]
    pub state: Option<String>,
    /// The step being processed (while running, and on error).
    #[serde(default)]
    pub current_sub_process: Option<String>,
    /// Steps done (int64: grpc-gateway sends a string).
    #[serde(default, deserialize_with = "lenient_i64")]
    pub finished_sub_processes: Option<i64>,
    /// Steps still to do.
    #[serde(default, deserialize_with = "lenient_i64")]
    pub open_sub_processes: Option<i64>,
}

/// A long-running `Operation`: one export order.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Operation {
    /// Order name, used in later URLs; the job id.
    #[serde(default)]
    pub name: Option<String>,
    /// Progress information.
    #[serde(default)]
    pub metadata: Option<ExportState>,
    /// Whether the order ended (then `error` or `response` is set).
    #[serde(default)]
    pub done: Option<bool>,
    /// Set on failure or cancellation.
    #[serde(default)]
    pub error: Option<RpcStatus>,
    /// Set on success.
    #[serde(default)]
    pub response: Option<Value>,
}

impl Operation {
    /// Reads an order answer: a JSON object (serde would also take a positional array),
    /// holding something of an order ([`Operation::usable`]).
    pub fn parse(resp: &crate::http::HttpResponse) -> Result<Self> {
        let v: Value = resp.json()?;
        if !v.is_object() {
            return Err(Error::protocol(format!(
                "octoplant answered with {} where an order was expected: {}",
                match v {
                    Value::Array(_) => "a list",
                    _ => "a bare value",
                },
                crate::http::snippet(&resp.body)
            )));
        }
        serde_json::from_value::<Operation>(v)
            .map_err(|e| {
                Error::protocol(format!(
                    "octoplant answered with an order of an unexpected shape: {}",
                    crate::http::redact::serde_reason(&e)
                ))
            })?
            .usable()
    }

    /// The order, if the answer describes one at all. An answer with none of `name`,
    /// `metadata`, `done`, `error` and `response` (`{}` from a broken proxy) would otherwise
    /// read as an order in an unknown state, and `wait` would poll it until its timeout.
    pub fn usable(self) -> Result<Self> {
        let meta_state = self.metadata.as_ref().and_then(|m| m.state.as_ref());
        if self.name.is_none()
            && meta_state.is_none()
            && self.done.is_none()
            && self.error.is_none()
            && self.response.is_none()
        {
            return Err(Error::protocol(
                "octoplant answered with an order that has no name, state, done flag, error or response: the answer is unusable",
            ));
        }
        Ok(self)
    }
}

/// Accepts an int64 written as a JSON number or (grpc-gateway's habit) a string.
fn lenient_i64<'de, D: Deserializer<'de>>(de: D) -> std::result::Result<Option<i64>, D::Error> {
    Ok(match Option::<Value>::deserialize(de)? {
        Some(Value::Number(n)) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The normalised state of an order.
pub fn state_of(op: &Operation) -> JobState {
    let native = op.metadata.as_ref().and_then(|m| m.state.as_deref());
    let done = op.done.unwrap_or(false);
    if let Some(err) = &op.error {
        // A cancelled order has no state of its own: it ends with gRPC CANCELLED.
        if err.code == Some(CODE_CANCELLED) {
            return JobState::Canceled;
        }
        if done || err.code.is_some_and(|c| c != 0) {
            return JobState::Failed;
        }
    }
    match native {
        Some("STATE_PENDING") => JobState::Queued,
        Some("STATE_RUNNING") => JobState::Running,
        // Downloads are only valid once `done` is set too; until then it is still finishing.
        Some("STATE_SUCCEEDED") if done => JobState::Succeeded,
        Some("STATE_SUCCEEDED") => JobState::Running,
        Some("STATE_FAILED") => JobState::Failed,
        _ if done && op.response.is_some() => JobState::Succeeded,
        _ => JobState::Unknown,
    }
}

/// Builds the job for an order; `id` is used when the answer omits the order's name.
pub fn job_from_operation(id: &str, op: &Operation) -> Job {
    let meta = op.metadata.clone().unwrap_or_default();
    let state = state_of(op);
    let mut job = Job::new(
        op.name.clone().unwrap_or_else(|| id.to_string()),
        state,
        meta.state.clone(),
    );
    if let (Some(f), Some(o)) = (meta.finished_sub_processes, meta.open_sub_processes) {
        let (f, o) = (f.max(0), o.max(0));
        if f + o > 0 {
            job.progress = Some(f as f64 / (f + o) as f64);
        }
    }
    match (&op.error, state) {
        (Some(err), JobState::Failed | JobState::Canceled) => job.reason = Some(err.describe()),
        (None, JobState::Failed) => {
            job.reason = meta
                .current_sub_process
                .as_ref()
                .map(|s| format!("failed during {s}"));
        }
        _ => {}
    }
    let extra = &mut job.extra;
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            extra.insert(key.to_string(), v);
        }
    };
    put(
        "current_sub_process",
        meta.current_sub_process.map(Value::String),
    );
    put(
        "finished_sub_processes",
        meta.finished_sub_processes.map(Value::from),
    );
    put(
        "open_sub_processes",
        meta.open_sub_processes.map(Value::from),
    );
    put("system_id", meta.system_id.map(Value::String));
    put(
        "license_serial_number",
        meta.license_serial_number.map(Value::String),
    );
    put("done", op.done.map(Value::Bool));
    put(
        "error_code",
        op.error
            .as_ref()
            .and_then(|e| e.code)
            .map(|c| Value::String(code_name(c).to_string())),
    );
    job
}

/// The canonical spelling of an export kind, accepting any case and `_`/`-` separators
/// (`project_tree`, `ProjectTree`, `project-tree` → `projectTree`).
pub fn canonical_kind(raw: &str) -> Option<&'static str> {
    let squash = |s: &str| {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .collect::<String>()
            .to_ascii_lowercase()
    };
    let wanted = squash(raw.trim());
    EXPORT_KINDS.iter().copied().find(|k| squash(k) == wanted)
}

fn unknown_kind(raw: &str, field: &str) -> Error {
    Error::usage(format!(
        "unknown export kind `{raw}` (field `options.{field}`); known kinds: {}",
        EXPORT_KINDS.join(", ")
    ))
}

/// Kinds named by a string (`projectTree` or `projectTree,jobList`) or an array of them.
fn kinds_from(value: &Value, field: &str) -> Result<Vec<&'static str>> {
    let names: Vec<String> = match value {
        Value::String(s) => s
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    other => {
                        return Err(Error::usage(format!(
                            "field `options.{field}`: expected export kind names, got {other}"
                        )));
                    }
                }
            }
            out
        }
        other => {
            return Err(Error::usage(format!(
                "field `options.{field}`: expected an export kind name, got {other}"
            )));
        }
    };
    names
        .iter()
        .map(|n| canonical_kind(n).ok_or_else(|| unknown_kind(n, field)))
        .collect()
}

/// The `exportContents` object of a new order, from `--opt exports=…` (an object of kinds and
/// their options, or a list of kinds) and `--opt export=KIND` (one kind, a comma-separated
/// list, or an array). Refuses unknown kinds and an empty request before anything is sent.
pub fn export_contents(spec: &JobSpec) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(v) = spec.options.get("exports") {
        match v {
            Value::Object(m) => {
                for (k, opts) in m {
                    let kind = canonical_kind(k).ok_or_else(|| unknown_kind(k, "exports"))?;
                    let opts = match opts {
                        Value::Object(_) => opts.clone(),
                        // The flat `{"projectTree": true}` form seen in the wild means "default options".
                        Value::Bool(true) | Value::Null => Value::Object(Map::new()),
                        Value::Bool(false) => continue,
                        other => {
                            return Err(Error::usage(format!(
                                "field `options.exports.{k}`: expected an object of export options, got {other}"
                            )));
                        }
                    };
                    out.insert(kind.to_string(), opts);
                }
            }
            other => {
                for kind in kinds_from(other, "exports")? {
                    out.entry(kind).or_insert_with(|| Value::Object(Map::new()));
                }
            }
        }
    }
    if let Some(v) = spec.options.get("export") {
        for kind in kinds_from(v, "export")? {
            out.entry(kind).or_insert_with(|| Value::Object(Map::new()));
        }
    }
    if out.is_empty() {
        return Err(Error::usage(
            "nothing to export: name at least one kind with --opt export=KIND or --opt exports='{\"projectTree\":{}}' (field `options.export`)",
        ));
    }
    Ok(out)
}

/// Export kinds recorded in a ledger spec, for `extra.exports` (best effort).
pub fn kinds_of_spec(spec: &Value) -> Option<Value> {
    let spec: JobSpec = serde_json::from_value(spec.clone()).ok()?;
    let contents = export_contents(&spec).ok()?;
    Some(Value::Array(
        contents.keys().cloned().map(Value::String).collect(),
    ))
}

/// Makes a file name safe to create in the destination directory: no directories, no
/// control characters, not hidden, not empty.
pub fn sanitize_file_name(raw: &str) -> Option<String> {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, ':' | '*' | '?' | '"' | '<' | '>' | '|') {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').to_string();
    (!cleaned.is_empty()).then_some(cleaned)
}

/// The file name of a `Content-Disposition` header (`filename*=UTF-8''…` preferred).
pub fn disposition_file_name(header: &str) -> Option<String> {
    let mut plain = None;
    for part in header.split(';').map(str::trim) {
        let Some((key, value)) = part.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "filename*" => {
                let v = value.trim();
                let encoded = v.split_once("''").map(|(_, rest)| rest).unwrap_or(v);
                if let Ok(decoded) = percent_decode(encoded) {
                    return Some(decoded);
                }
            }
            "filename" => plain = Some(value.trim().trim_matches('"').to_string()),
            _ => {}
        }
    }
    plain
}

fn percent_decode(s: &str) -> std::result::Result<String, ()> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or(())?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| ())?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn op(v: Value) -> Operation {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn states_follow_metadata_done_and_error() {
        let running = op(
            json!({"name":"o1","done":false,"metadata":{"state":"STATE_RUNNING",
            "finishedSubProcesses":"1","openSubProcesses":"3","currentSubProcess":"exporting jobList"}}),
        );
        let j = job_from_operation("o1", &running);
        assert_eq!(j.state, JobState::Running);
        assert_eq!(j.native_state.as_deref(), Some("STATE_RUNNING"));
        assert_eq!(j.progress, Some(0.25));
        assert_eq!(j.extra["current_sub_process"], "exporting jobList");

        let pending = op(json!({"name":"o1","metadata":{"state":"STATE_PENDING"}}));
        assert_eq!(state_of(&pending), JobState::Queued);

        let ok = op(
            json!({"name":"o1","done":true,"metadata":{"state":"STATE_SUCCEEDED",
            "finishedSubProcesses":4,"openSubProcesses":0},"response":{"name":"o1"}}),
        );
        let j = job_from_operation("o1", &ok);
        assert_eq!(j.state, JobState::Succeeded);
        assert_eq!(j.progress, Some(1.0));
        assert!(j.terminal);

        // Not yet `done`: not downloadable, so not succeeded either.
        let finishing = op(json!({"done":false,"metadata":{"state":"STATE_SUCCEEDED"}}));
        assert_eq!(state_of(&finishing), JobState::Running);

        let failed = op(json!({"done":true,"metadata":{"state":"STATE_FAILED"},
            "error":{"code":13,"message":"disk full","details":[]}}));
        let j = job_from_operation("o2", &failed);
        assert_eq!(j.id, "o2");
        assert_eq!(j.state, JobState::Failed);
        assert_eq!(j.reason.as_deref(), Some("INTERNAL: disk full"));

        let canceled = op(json!({"done":true,"metadata":{"state":"STATE_FAILED"},
            "error":{"code":1,"message":"canceled"}}));
        let j = job_from_operation("o3", &canceled);
        assert_eq!(j.state, JobState::Canceled);
        assert_eq!(j.native_state.as_deref(), Some("STATE_FAILED"));

        let unspecified = op(json!({"metadata":{"state":"STATE_UNSPECIFIED"}}));
        assert_eq!(state_of(&unspecified), JobState::Unknown);
        assert_eq!(state_of(&Operation::default()), JobState::Unknown);
    }

    #[test]
    fn rpc_codes_map_to_kinds_and_name_themselves() {
        let s: RpcStatus =
            serde_json::from_value(json!({"code":5,"message":"order x not found","details":[]}))
                .unwrap();
        let e = s.to_error();
        assert_eq!(e.kind, ErrorKind::NotFound);
        assert_eq!(e.code.as_deref(), Some("5"));
        assert!(e.message.starts_with("NOT_FOUND: "), "{e}");
        let e = RpcStatus {
            code: Some(16),
            ..RpcStatus::default()
        }
        .to_error();
        assert_eq!((e.kind, e.token_expired), (ErrorKind::Auth, true));
        assert_eq!(code_kind(7), ErrorKind::Auth);
        assert_eq!(code_kind(3), ErrorKind::Usage);
        assert_eq!(code_kind(14), ErrorKind::Unavailable);
        assert_eq!(code_kind(13), ErrorKind::Platform);
        assert_eq!(code_name(99), "UNRECOGNISED_CODE");
    }

    fn spec(options: Value) -> JobSpec {
        JobSpec {
            options: options.as_object().unwrap().clone(),
            ..JobSpec::default()
        }
    }

    #[test]
    fn export_contents_accepts_every_documented_form() {
        let c = export_contents(&spec(json!({"export":"projectTree"}))).unwrap();
        assert_eq!(Value::Object(c), json!({"projectTree":{}}));
        let c = export_contents(&spec(json!({"export":["job_list","EventLog"]}))).unwrap();
        assert_eq!(Value::Object(c), json!({"jobList":{},"eventLog":{}}));
        let c = export_contents(&spec(json!({
            "exports":{"jobResults":{"lastXDays":7},"projectTree":true},
            "export":"adminLog,jobResults"
        })))
        .unwrap();
        assert_eq!(
            Value::Object(c),
            json!({"jobResults":{"lastXDays":7},"projectTree":{},"adminLog":{}})
        );
        for kind in EXPORT_KINDS {
            assert_eq!(canonical_kind(kind), Some(kind));
        }
    }

    #[test]
    fn export_contents_refuses_unknown_and_empty_requests() {
        let e = export_contents(&spec(json!({"export":"versions"}))).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.message.contains("versions") && e.message.contains("projectTree"));
        let e = export_contents(&spec(json!({"exports":{"projectTree":"yes"}}))).unwrap_err();
        assert!(e.message.contains("options.exports.projectTree"), "{e}");
        let e = export_contents(&spec(json!({}))).unwrap_err();
        assert!(e.message.contains("nothing to export"), "{e}");
        let e = export_contents(&spec(json!({"export":3}))).unwrap_err();
        assert!(e.message.contains("options.export"), "{e}");
    }

    #[test]
    fn download_names_are_made_safe() {
        assert_eq!(
            disposition_file_name("attachment; filename=\"export-1.zip\"").as_deref(),
            Some("export-1.zip")
        );
        assert_eq!(
            disposition_file_name("attachment; filename=\"a.zip\"; filename*=UTF-8''b%20c.zip")
                .as_deref(),
            Some("b c.zip")
        );
        assert_eq!(disposition_file_name("inline"), None);
        assert_eq!(
            sanitize_file_name("../../etc/passwd").as_deref(),
            Some("passwd")
        );
        assert_eq!(sanitize_file_name("..").as_deref(), None);
        assert_eq!(sanitize_file_name("C:\\x\\y.zip").as_deref(), Some("y.zip"));
        assert_eq!(sanitize_file_name("a:b?.zip").as_deref(), Some("a_b_.zip"));
    }
}
