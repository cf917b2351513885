//! Keeping secrets out of error messages: what jobctl quotes of a platform's answer is capped
//! and masked, and nothing at all is quoted of an authentication exchange.
//!
//! Three layers, because no single one is enough:
//! - every secret jobctl holds (passwords, tokens, client secrets: every
//!   [`crate::config::Secret`]) is registered here and masked wherever it appears, together with
//!   its base64 and URL encodings;
//! - values of secret-looking keys (`"access_token": "…"`, `password=…`) and JWT-shaped strings
//!   are masked even when jobctl never saw them whole (a truncated login answer);
//! - inside [`auth_exchange`] (a login, a token renewal) no body is quoted at all, only its size.

use base64::Engine;
use regex::Regex;
use std::collections::BTreeSet;
use std::sync::{LazyLock, RwLock};

/// At most this many characters of an answer are quoted in an error message.
pub const SNIPPET_CHARS: usize = 200;

/// What replaces a masked value.
pub const MASK: &str = "***";

/// Secrets shorter than this are not masked by value (masking "a" everywhere would garble every
/// message); they are still covered by the key-based rules.
const MIN_REGISTERED_LEN: usize = 4;

static SECRETS: LazyLock<RwLock<BTreeSet<String>>> = LazyLock::new(|| RwLock::new(BTreeSet::new()));

/// `"key": "value` (also unterminated, as in a truncated body) and `key=value` for keys that
/// name secrets; the value is group 2.
static KEYED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)("?(?:access_token|refresh_token|id_token|token|password|passwd|client_secret|secret|secret_key|secretkey|jwt|authorization|x-slurm-user-token|cookie|set-cookie)"?\s*[:=]\s*"?(?:Bearer\s+|Basic\s+)?)([^"&,;}\s]*)"#,
    )
    .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
});

/// JWTs (`eyJ…` header, then payload), whole or cut off.
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_\-]{4,}(?:\.[A-Za-z0-9_\-]*){0,2}")
        .unwrap_or_else(|_| unreachable!("the pattern is a constant"))
});

tokio::task_local! {
    static IN_AUTH: ();
}

/// Remembers a secret so it is masked wherever jobctl would quote it.
pub fn register(secret: &str) {
    if secret.len() < MIN_REGISTERED_LEN {
        return;
    }
    let mut forms = vec![secret.to_string()];
    let b64 = base64::engine::general_purpose::STANDARD.encode(secret);
    forms.push(b64.trim_end_matches('=').to_string());
    forms.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret));
    let url: String = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    forms.push(url);
    if let Ok(mut set) = SECRETS.write() {
        set.extend(forms);
    }
}

/// Runs `fut` as an authentication exchange: errors raised inside quote no answer body.
pub async fn auth_exchange<F: std::future::Future>(fut: F) -> F::Output {
    IN_AUTH.scope((), fut).await
}

/// Whether the current task is inside [`auth_exchange`].
pub fn in_auth_exchange() -> bool {
    IN_AUTH.try_with(|_| ()).is_ok()
}

/// Masks every registered secret, keyed secret value and JWT in `text`.
pub fn mask(text: &str) -> String {
    let mut out = text.to_string();
    if let Ok(set) = SECRETS.read() {
        // Longest first, so a secret is not half-masked by a shorter one it contains.
        let mut known: Vec<&String> = set.iter().filter(|s| out.contains(s.as_str())).collect();
        known.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in known {
            out = out.replace(s.as_str(), MASK);
        }
    }
    let out = KEYED.replace_all(&out, |c: &regex::Captures<'_>| {
        let value = c.get(2).map_or("", |m| m.as_str());
        if value.is_empty() || value == MASK {
            c[0].to_string()
        } else {
            format!("{}{MASK}", &c[1])
        }
    });
    JWT.replace_all(&out, MASK).into_owned()
}

/// The start of an answer body for an error message: at most [`SNIPPET_CHARS`] characters,
/// one line, masked; inside an authentication exchange only its size.
pub fn snippet(body: &[u8]) -> String {
    if in_auth_exchange() {
        return format!(
            "({} bytes; answers to authentication requests are never shown)",
            body.len()
        );
    }
    let text = String::from_utf8_lossy(body);
    // Mask before cutting, so a secret straddling the cut is still recognised.
    let head: String = text.chars().take(SNIPPET_CHARS * 4).collect();
    let masked = mask(&head);
    let mut t: String = masked.chars().take(SNIPPET_CHARS).collect();
    if masked.chars().count() > SNIPPET_CHARS || text.chars().count() > SNIPPET_CHARS * 4 {
        t.push('…');
    }
    t.replace(['\n', '\r'], " ")
}

/// Why a body did not parse, without the values serde quotes (`invalid type: string "…"`):
/// inside an authentication exchange only the category and position, elsewhere masked.
pub fn serde_reason(e: &serde_json::Error) -> String {
    if in_auth_exchange() {
        let what = match e.classify() {
            serde_json::error::Category::Io => "unreadable",
            serde_json::error::Category::Syntax => "not valid JSON",
            serde_json::error::Category::Data => "JSON of an unexpected shape",
            serde_json::error::Category::Eof => "cut off (JSON ends early)",
        };
        return format!("{what} at line {} column {}", e.line(), e.column());
    }
    mask(&e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_secrets_and_their_encodings_are_masked() {
        register("pa55:w0rd/ü");
        let b64 = base64::engine::general_purpose::STANDARD.encode("pa55:w0rd/ü");
        let text = format!("a pa55:w0rd/ü b {b64} c pa55%3Aw0rd%2F%C3%BC d");
        let m = mask(&text);
        assert!(
            !m.contains("w0rd") && !m.contains(b64.trim_end_matches('=')),
            "{m}"
        );
        assert!(m.starts_with("a *** b"), "{m}");
    }

    #[test]
    fn keyed_values_and_jwts_are_masked_even_when_cut_off() {
        let m = mask(r#"{"access_token":"abc123def","token_type":"bearer","x":1}"#);
        assert_eq!(m, r#"{"access_token":"***","token_type":"bearer","x":1}"#);
        let m = mask(r#"{"data":{"token":"opaque-value-cut-of"#);
        assert!(!m.contains("opaque"), "{m}");
        let m = mask("grant_type=password&password=hunter2&user=bob");
        assert!(!m.contains("hunter2") && m.contains("user=bob"), "{m}");
        let m = mask("header eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig and eyJhbGciOiJIUzI1");
        assert_eq!(m, "header *** and ***");
        assert_eq!(mask("job 42 not found"), "job 42 not found");
    }

    #[test]
    fn snippets_are_capped_single_lines() {
        let body = "x\n".repeat(1000);
        let s = snippet(body.as_bytes());
        assert!(
            s.chars().count() <= SNIPPET_CHARS + 1 && !s.contains('\n'),
            "{s}"
        );
        assert!(s.ends_with('…'));
        assert_eq!(snippet(b"short"), "short");
    }

    #[tokio::test]
    async fn nothing_of_an_authentication_answer_is_quoted() {
        let body = br#"{"access_token":"abcdefgh12345678"#;
        let s = auth_exchange(async { snippet(body) }).await;
        assert!(!s.contains("abcdefgh") && s.contains("bytes"), "{s}");
        let e = serde_json::from_slice::<serde_json::Value>(body).unwrap_err();
        let r = auth_exchange(async { serde_reason(&e) }).await;
        assert!(r.contains("cut off") && !r.contains("abcdefgh"), "{r}");
        let e =
            serde_json::from_str::<u32>(r#""eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0""#).unwrap_err();
        assert!(!serde_reason(&e).contains("eyJzdWIi"));
    }
}
