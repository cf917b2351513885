//! `-v` request logging: `-v` one line per request (method, URL without query or user info,
//! status, duration), `-vv` adds headers, `-vvv` bodies. Secrets are masked at every level.

use reqwest::header::HeaderMap;

/// Header names whose values are never shown.
const SECRET_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "set-cookie",
    "proxy-authorization",
    "x-auth-token",
    "token",
];

/// Words that make a JSON key or form field secret.
const SECRET_WORDS: &[&str] = &[
    "password",
    "passwd",
    "token",
    "secret",
    "jwt",
    "cookie",
    "authorization",
    "credential",
];

/// `METHOD URL` with the query and user info removed (they may carry tokens).
pub(super) fn request_line(req: &reqwest::Request) -> String {
    let mut url = req.url().clone();
    url.set_query(None);
    let _ = url.set_password(None);
    let _ = url.set_username("");
    format!("HTTP {} {url}", req.method())
}

fn is_secret_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_HEADERS.contains(&lower.as_str()) || SECRET_WORDS.iter().any(|w| lower.contains(w))
}

/// Headers, one per line, secret values replaced by `***`.
pub fn masked_headers(headers: &HeaderMap) -> String {
    headers
        .iter()
        .map(|(k, v)| {
            let value = if is_secret_name(k.as_str()) {
                "***".to_string()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            format!("  {k}: {value}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A body for the log: JSON with secret fields masked, form data likewise, other bodies only
/// by size (they cannot be masked reliably).
pub fn masked_body(body: &[u8]) -> String {
    if body.is_empty() {
        return "(empty)".into();
    }
    if let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(body) {
        mask_json(&mut v);
        let text = v.to_string();
        return truncate(&text);
    }
    let text = String::from_utf8_lossy(body);
    if !text.contains(char::is_whitespace) && text.contains('=') {
        let fields: Vec<String> = text
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _)) if is_secret_name(k) => format!("{k}=***"),
                _ => kv.to_string(),
            })
            .collect();
        return truncate(&fields.join("&"));
    }
    format!("({} bytes, not JSON: not shown)", body.len())
}

fn mask_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if is_secret_name(k) && !val.is_object() && !val.is_array() {
                    *val = serde_json::Value::String("***".into());
                } else {
                    mask_json(val);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(mask_json),
        _ => {}
    }
}

fn truncate(text: &str) -> String {
    const MAX: usize = 4000;
    if text.chars().count() <= MAX {
        return text.to_string();
    }
    let cut: String = text.chars().take(MAX).collect();
    format!("{cut}… ({} bytes in all)", text.len())
}

pub(super) fn request_details(req: &reqwest::Request) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!("request headers:\n{}", masked_headers(req.headers()));
    }
    if tracing::enabled!(tracing::Level::TRACE) {
        let body = req
            .body()
            .and_then(reqwest::Body::as_bytes)
            .map(masked_body)
            .unwrap_or_else(|| "(streamed)".into());
        tracing::trace!("request body: {body}");
    }
}

pub(super) fn response_details(headers: &HeaderMap, body: &[u8]) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        tracing::debug!("response headers:\n{}", masked_headers(headers));
    }
    if tracing::enabled!(tracing::Level::TRACE) {
        tracing::trace!("response body: {}", masked_body(body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked_in_headers_and_bodies() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer abc.def".parse().unwrap());
        h.insert("content-type", "application/json".parse().unwrap());
        let text = masked_headers(&h);
        assert!(!text.contains("abc.def"), "{text}");
        assert!(text.contains("application/json"), "{text}");
        let body = br#"{"variables":{"password":"hunter2","user":"alice"},"token":"t0k"}"#;
        let text = masked_body(body);
        assert!(!text.contains("hunter2") && !text.contains("t0k"), "{text}");
        assert!(text.contains("alice"), "{text}");
        let form = masked_body(b"grant_type=password&username=bob&password=pw1&client_secret=cs");
        assert!(!form.contains("pw1") && !form.contains("=cs"), "{form}");
        assert!(form.contains("username=bob"), "{form}");
    }
}
