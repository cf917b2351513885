//! The simulated efile service: an in-memory tree under each user's home, with `mkdir`,
//! multipart `upload`, chunked `burst` + `merge`, and `list`. Downloads live next to the job
//! outputs in the parent module.

use super::{Shared, ok, refuse};
use axum::extract::{Multipart, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// Chunks of one `burst` upload, until `merge`.
#[derive(Debug, Default)]
pub(super) struct Parts {
    total_chunks: u32,
    total_size: Option<u64>,
    chunks: BTreeMap<u32, Vec<u8>>,
}

/// The caller's user, or the refusal.
fn user_of(ac: &Shared, headers: &HeaderMap) -> Result<String, Response> {
    ac.check(headers, true).map(|i| i.user)
}

/// Checks that `path` is absolute, clean and inside the user's home.
fn allowed(path: &str, user: &str) -> Result<String, Response> {
    let p = path.trim();
    if !p.starts_with('/') || p.split('/').any(|c| c == ".." || c == ".") {
        return Err(refuse(
            "10004",
            &format!("参数无效: path '{p}' must be absolute"),
        ));
    }
    let p = if p.len() > 1 {
        p.trim_end_matches('/')
    } else {
        p
    };
    let home = format!("/public/home/{user}");
    if p != home && !p.starts_with(&format!("{home}/")) {
        return Err(refuse("10008", &format!("权限不足: {p} is outside {home}")));
    }
    Ok(p.to_string())
}

fn parent(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(i) => &path[..i],
        None => "/",
    }
}

/// `POST /efile/openapi/v2/file/mkdir?path=…&createParents=true`.
pub(super) async fn mkdir(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let user = match user_of(&ac, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(raw) = q.get("path").filter(|p| !p.is_empty()) else {
        return refuse("10003", "参数不全: path");
    };
    let path = match allowed(raw, &user) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let parents = q.get("createParents").is_some_and(|v| v == "true");
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    if data.files.contains_key(&path) || data.is_dir(&path) {
        return refuse("911021", "文件已存在");
    }
    if !parents && !data.is_dir(parent(&path)) {
        return refuse("1001", &format!("未知异常: {} 不存在", parent(&path)));
    }
    let mut cur = String::new();
    for part in path.split('/').filter(|c| !c.is_empty()) {
        cur = format!("{cur}/{part}");
        data.dirs.insert(cur.clone());
    }
    ok(Value::Null)
}

/// Text fields and the `file` part of a multipart request.
async fn read_form(
    mut form: Multipart,
) -> Result<(HashMap<String, String>, Option<(String, Vec<u8>)>), Response> {
    let mut fields = HashMap::new();
    let mut file = None;
    loop {
        let field = match form.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => return Err(refuse("10004", &format!("参数无效: multipart: {e}"))),
        };
        let name = field.name().unwrap_or("").to_string();
        if name == "file" {
            let filename = field.file_name().unwrap_or("").to_string();
            let bytes = field
                .bytes()
                .await
                .map_err(|e| refuse("10004", &format!("参数无效: file: {e}")))?;
            file = Some((filename, bytes.to_vec()));
        } else {
            let text = field
                .text()
                .await
                .map_err(|e| refuse("10004", &format!("参数无效: {name}: {e}")))?;
            fields.insert(name, text);
        }
    }
    Ok((fields, file))
}

/// Where an upload lands: `{path}/{filename}`, checked.
fn target(
    ac: &Shared,
    user: &str,
    dir: Option<&String>,
    filename: &str,
) -> Result<String, Response> {
    let Some(dir) = dir.filter(|d| !d.is_empty()) else {
        return Err(refuse("10003", "参数不全: path"));
    };
    if filename.is_empty() || filename.contains('/') {
        return Err(refuse("10003", "参数不全: file name"));
    }
    let dir = allowed(dir, user)?;
    if filename.starts_with("sim-upload-fail") {
        return Err(refuse("10010", "文件校验失败"));
    }
    let Ok(data) = ac.data.lock() else {
        return Err(refuse("10001", "内部错误"));
    };
    if !data.is_dir(&dir) {
        return Err(refuse("1001", &format!("未知异常: 目录 {dir} 不存在")));
    }
    Ok(format!("{}/{filename}", dir.trim_end_matches('/')))
}

/// `POST /efile/openapi/v2/file/upload`: multipart `path` (directory), `cover`, `file`.
pub(super) async fn upload(
    State(ac): State<Shared>,
    headers: HeaderMap,
    form: Multipart,
) -> Response {
    let user = match user_of(&ac, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (fields, file) = match read_form(form).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let Some((filename, bytes)) = file else {
        return refuse("10003", "参数不全: file");
    };
    let path = match target(&ac, &user, fields.get("path"), &filename) {
        Ok(p) => p,
        Err(r) => return r,
    };
    if bytes.len() > super::UPLOAD_LIMIT {
        return refuse("10011", "文件过大: use the chunked upload (burst)");
    }
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    if data.files.contains_key(&path) && fields.get("cover").map(String::as_str) != Some("cover") {
        return refuse("911021", "文件已存在");
    }
    data.files.insert(path, bytes);
    ok(Value::Null)
}

/// `POST /efile/openapi/v2/file/burst`: one chunk; the fields may come in the form or in the
/// query string (both are seen in clients).
pub(super) async fn burst(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    form: Multipart,
) -> Response {
    let user = match user_of(&ac, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let (mut fields, file) = match read_form(form).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    for (k, v) in q {
        fields.entry(k).or_insert(v);
    }
    let Some((part_name, bytes)) = file else {
        return refuse("10003", "参数不全: file");
    };
    let filename = fields
        .get("filename")
        .cloned()
        .filter(|f| !f.is_empty())
        .unwrap_or(part_name);
    let num = |k: &str| fields.get(k).and_then(|v| v.trim().parse::<u64>().ok());
    let (Some(number), Some(total)) = (num("chunkNumber"), num("totalChunks")) else {
        return refuse("10003", "参数不全: chunkNumber, totalChunks");
    };
    if number == 0 || number > total {
        return refuse("10004", "参数无效: chunkNumber");
    }
    if num("currentChunkSize").is_some_and(|n| n != bytes.len() as u64) {
        return refuse("10010", "文件校验失败: currentChunkSize");
    }
    let path = match target(&ac, &user, fields.get("path"), &filename) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let parts = data.parts.entry(path).or_default();
    parts.total_chunks = total as u32;
    parts.total_size = num("totalSize");
    parts.chunks.insert(number as u32, bytes);
    ok(Value::Null)
}

/// `POST /efile/openapi/v2/file/merge`: joins the chunks of `{path}/{filename}`.
pub(super) async fn merge(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: String,
) -> Response {
    let user = match user_of(&ac, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let form_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let mut fields: HashMap<String, String> = if form_body {
        serde_urlencoded::from_str(&body).unwrap_or_default()
    } else {
        HashMap::new()
    };
    for (k, v) in q {
        fields.entry(k).or_insert(v);
    }
    let filename = fields.get("filename").cloned().unwrap_or_default();
    let path = match target(&ac, &user, fields.get("path"), &filename) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let Ok(mut data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    let Some(parts) = data.parts.remove(&path) else {
        return refuse("10004", &format!("参数无效: no chunks of {path}"));
    };
    let complete = (1..=parts.total_chunks).all(|n| parts.chunks.contains_key(&n));
    let joined: Vec<u8> = parts.chunks.into_values().flatten().collect();
    if !complete || parts.total_size.is_some_and(|t| t != joined.len() as u64) {
        return refuse("10010", "文件校验失败: chunks missing or sizes differ");
    }
    data.files.insert(path, joined);
    ok(Value::Null)
}

/// `GET /efile/openapi/v2/file/list?path=…&start=…&limit=…`.
pub(super) async fn list(
    State(ac): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let user = match user_of(&ac, &headers) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let Some(raw) = q.get("path").filter(|p| !p.is_empty()) else {
        return refuse("10003", "参数不全: path");
    };
    let dir = match allowed(raw, &user) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let num = |k: &str, d: usize| q.get(k).and_then(|v| v.parse().ok()).unwrap_or(d);
    let (start, limit) = (num("start", 0), num("limit", 100).clamp(1, 1000));
    let Ok(data) = ac.data.lock() else {
        return refuse("10001", "内部错误");
    };
    if !data.is_dir(&dir) {
        return refuse("1001", &format!("未知异常: 目录 {dir} 不存在"));
    }
    let prefix = format!("{}/", dir.trim_end_matches('/'));
    // name -> (is_directory, size)
    let mut entries: BTreeMap<String, (bool, usize)> = BTreeMap::new();
    let child = |p: &str| -> Option<(String, bool)> {
        let rest = p.strip_prefix(&prefix)?;
        match rest.split_once('/') {
            Some((name, _)) => Some((name.to_string(), true)),
            None if !rest.is_empty() => Some((rest.to_string(), false)),
            None => None,
        }
    };
    for d in &data.dirs {
        if let Some((name, _)) = child(&format!("{d}/")) {
            entries.insert(name, (true, 0));
        }
    }
    for (f, content) in data.all_files() {
        if let Some((name, is_dir)) = child(&f) {
            let size = if is_dir { 0 } else { content.len() };
            entries.entry(name).or_insert((is_dir, size));
        }
    }
    let total = entries.len();
    let page: Vec<Value> = entries
        .into_iter()
        .skip(start)
        .take(limit)
        .map(|(name, (is_dir, size))| {
            json!({
                "name": name, "path": format!("{prefix}{name}"), "isDirectory": is_dir,
                "type": if is_dir { "directory" } else { "file" }, "size": size,
            })
        })
        .collect();
    ok(json!({"fileList": page, "total": total}))
}
