//! A UBJSON (Draft 12) encoder for the simulated message streams.
//!
//! It writes what `py-ubjson` (the library the official SDK decodes with) writes for the same
//! JSON value: integers in the smallest marker (`U`, `i`, `I`, `l`, `L`, `H` beyond 64 bits),
//! floats as `D` (zero as `d`), one-character ASCII strings as `C`, byte strings as the typed array
//! `[$U#n`. Two optional styles exercise the decoder's other forms: `count` writes `#n`
//! counted containers (py-ubjson's `container_count=True`), `typed` writes homogeneous numeric
//! arrays as typed containers (`[$D#n…`, `[$U#n…`).

use serde_json::{Map, Value};

/// Which optional container forms to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Style {
    /// Counted containers (`#n`, no end marker).
    pub count: bool,
    /// Typed containers (`$T#n`) for arrays whose elements share one numeric marker.
    pub typed: bool,
}

/// Encodes `v` the way py-ubjson's `dumpb(v)` does.
pub fn encode(v: &Value) -> Vec<u8> {
    encode_with(v, Style::default())
}

/// Encodes `v` in the given style.
pub fn encode_with(v: &Value, style: Style) -> Vec<u8> {
    let mut out = Vec::new();
    value(&mut out, v, style);
    out
}

/// A byte string: the typed, counted array of `U` (`[$U#<n><bytes>`).
pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b"[$U#");
    int(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The WebSocket frame of one stream message: `{id, timestamp, data: <bytes>}`.
pub fn envelope(id: &str, timestamp_ms: i64, data: &[u8]) -> Vec<u8> {
    let mut out = vec![b'{'];
    key(&mut out, "id");
    string(&mut out, id);
    key(&mut out, "timestamp");
    int(&mut out, timestamp_ms);
    key(&mut out, "data");
    bytes(&mut out, data);
    out.push(b'}');
    out
}

fn key(out: &mut Vec<u8>, k: &str) {
    int(out, k.len() as i64);
    out.extend_from_slice(k.as_bytes());
}

fn string(out: &mut Vec<u8>, s: &str) {
    if s.len() == 1 && s.is_ascii() {
        out.push(b'C');
        out.extend_from_slice(s.as_bytes());
        return;
    }
    out.push(b'S');
    int(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// The marker py-ubjson picks for an integer.
fn int_marker(i: i64) -> u8 {
    match i {
        0..=255 => b'U',
        -128..=-1 => b'i',
        -32768..=32767 => b'I',
        -2147483648..=2147483647 => b'l',
        _ => b'L',
    }
}

fn int_payload(out: &mut Vec<u8>, marker: u8, i: i64) {
    match marker {
        b'U' => out.push(i as u8),
        b'i' => out.push(i as i8 as u8),
        b'I' => out.extend_from_slice(&(i as i16).to_be_bytes()),
        b'l' => out.extend_from_slice(&(i as i32).to_be_bytes()),
        _ => out.extend_from_slice(&i.to_be_bytes()),
    }
}

fn int(out: &mut Vec<u8>, i: i64) {
    let m = int_marker(i);
    out.push(m);
    int_payload(out, m, i);
}

fn number(out: &mut Vec<u8>, n: &serde_json::Number) {
    if let Some(i) = n.as_i64() {
        int(out, i);
    } else if let Some(u) = n.as_u64() {
        // Beyond i64: a high-precision number (decimal text).
        let text = u.to_string();
        out.push(b'H');
        int(out, text.len() as i64);
        out.extend_from_slice(text.as_bytes());
    } else {
        match n.as_f64() {
            // py-ubjson writes zero (and negative zero) as a float32.
            Some(f) if f == 0.0 => {
                out.push(b'd');
                out.extend_from_slice(&(f as f32).to_be_bytes());
            }
            Some(f) if f.is_finite() => {
                out.push(b'D');
                out.extend_from_slice(&f.to_be_bytes());
            }
            _ => out.push(b'Z'),
        }
    }
}

/// The one marker every element of a numeric array can share, for typed containers.
fn shared_marker(items: &[Value]) -> Option<u8> {
    if items.is_empty() {
        return None;
    }
    if items
        .iter()
        .all(|v| v.as_i64().is_some_and(|i| (0..=255).contains(&i)))
    {
        return Some(b'U');
    }
    if items
        .iter()
        .all(|v| v.is_f64() && v.as_f64().is_some_and(f64::is_finite))
    {
        return Some(b'D');
    }
    None
}

fn array(out: &mut Vec<u8>, items: &[Value], style: Style) {
    out.push(b'[');
    if style.typed {
        if let Some(m) = shared_marker(items) {
            out.push(b'$');
            out.push(m);
            out.push(b'#');
            int(out, items.len() as i64);
            for v in items {
                match m {
                    b'U' => out.push(v.as_i64().unwrap_or(0) as u8),
                    _ => out.extend_from_slice(&v.as_f64().unwrap_or(0.0).to_be_bytes()),
                }
            }
            return;
        }
    }
    if style.count {
        out.push(b'#');
        int(out, items.len() as i64);
    }
    for v in items {
        value(out, v, style);
    }
    if !style.count {
        out.push(b']');
    }
}

fn object(out: &mut Vec<u8>, map: &Map<String, Value>, style: Style) {
    out.push(b'{');
    if style.count {
        out.push(b'#');
        int(out, map.len() as i64);
    }
    for (k, v) in map {
        key(out, k);
        value(out, v, style);
    }
    if !style.count {
        out.push(b'}');
    }
}

fn value(out: &mut Vec<u8>, v: &Value, style: Style) {
    match v {
        Value::Null => out.push(b'Z'),
        Value::Bool(true) => out.push(b'T'),
        Value::Bool(false) => out.push(b'F'),
        Value::Number(n) => number(out, n),
        Value::String(s) => string(out, s),
        Value::Array(items) => array(out, items, style),
        Value::Object(map) => object(out, map, style),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_take_the_smallest_marker_like_py_ubjson() {
        assert_eq!(encode(&json!(1)), b"U\x01");
        assert_eq!(encode(&json!(-1)), b"i\xff");
        assert_eq!(encode(&json!(300)), b"I\x01,");
        assert_eq!(encode(&json!(70000)), b"l\x00\x01\x11p");
        assert_eq!(
            encode(&json!(9_223_372_036_854_775_808u64)),
            b"HU\x139223372036854775808"
        );
        assert_eq!(encode(&json!("a")), b"Ca");
        assert_eq!(encode(&json!([1, 2])), b"[U\x01U\x02]");
        let counted = encode_with(
            &json!({"a": 1}),
            Style {
                count: true,
                typed: false,
            },
        );
        assert_eq!(counted, b"{#U\x01U\x01aU\x01");
    }
}
