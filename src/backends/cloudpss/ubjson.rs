//! A UBJSON (Draft 12) decoder into [`serde_json::Value`], for CloudPSS message streams.
//!
//! No maintained crate decodes every form the platform sends (typed and counted containers
//! `$`/`#`, high-precision numbers `H`), so this is a small, strict decoder:
//! - every marker: `Z T F N i U I l L d D H C S [ ] { }`, `$type` and `#count` on arrays and
//!   objects (`N` no-ops are skipped where a value may start);
//! - typed arrays of `U` (byte strings) decode to arrays of numbers; [`bytes`] reads them as
//!   raw bytes where a byte string is expected;
//! - `H` becomes a JSON number when it fits `i64`/`u64` or is a decimal fraction, else it
//!   stays a string of its digits (exact);
//! - non-finite floats (NaN, ±∞) have no JSON form and become `null`;
//! - bad input is an error, never a panic: truncated data, unknown markers, negative or
//!   oversized counts, invalid UTF-8, nesting deeper than [`MAX_DEPTH`].

use serde_json::{Map, Number, Value};
use std::fmt;

/// Deepest nesting accepted (keeps hostile input from exhausting the stack).
pub const MAX_DEPTH: usize = 256;

/// Most elements accepted in a typed container whose elements carry no payload (`$Z`, `$T`).
pub const MAX_EMPTY_ELEMENTS: usize = 1 << 20;

/// Why some bytes are not UBJSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// What was wrong.
    pub message: String,
    /// Byte offset where it was found.
    pub offset: usize,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid UBJSON at byte {}: {}",
            self.offset, self.message
        )
    }
}

impl std::error::Error for DecodeError {}

type R<T> = std::result::Result<T, DecodeError>;

/// Decodes one complete UBJSON value; trailing bytes are an error.
pub fn decode(input: &[u8]) -> R<Value> {
    let mut d = Decoder { buf: input, pos: 0 };
    let marker = d.value_marker()?;
    let v = d.value(marker, 0)?;
    if d.pos != input.len() {
        return Err(d.err(format!("{} trailing bytes", input.len() - d.pos)));
    }
    Ok(v)
}

/// Reads a decoded byte string (an array of numbers 0–255) back into bytes.
pub fn bytes(v: &Value) -> Option<Vec<u8>> {
    v.as_array()?
        .iter()
        .map(|b| b.as_u64().filter(|b| *b <= 255).map(|b| b as u8))
        .collect()
}

struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Decoder<'_> {
    fn err(&self, message: impl Into<String>) -> DecodeError {
        DecodeError {
            message: message.into(),
            offset: self.pos,
        }
    }

    fn take(&mut self, n: usize) -> R<&[u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.err(format!(
                "unexpected end of data (needed {n} more bytes, {} left)",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn byte(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }

    fn peek(&self) -> R<u8> {
        self.buf
            .get(self.pos)
            .copied()
            .ok_or_else(|| self.err("unexpected end of data"))
    }

    /// The next marker that starts a value, skipping no-ops.
    fn value_marker(&mut self) -> R<u8> {
        loop {
            let m = self.byte()?;
            if m != b'N' {
                return Ok(m);
            }
        }
    }

    fn fixed<const N: usize>(&mut self) -> R<[u8; N]> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    /// An integer payload for an integer marker.
    fn int(&mut self, marker: u8) -> R<i64> {
        Ok(match marker {
            b'i' => i8::from_be_bytes(self.fixed()?) as i64,
            b'U' => self.byte()? as i64,
            b'I' => i16::from_be_bytes(self.fixed()?) as i64,
            b'l' => i32::from_be_bytes(self.fixed()?) as i64,
            b'L' => i64::from_be_bytes(self.fixed()?),
            other => {
                self.pos -= 1;
                return Err(self.err(format!("expected an integer marker, found {}", show(other))));
            }
        })
    }

    /// A length or count: an integer value that must not be negative nor exceed what the
    /// remaining data could possibly hold (`min_size` bytes per element).
    fn length(&mut self, min_size: usize) -> R<usize> {
        let m = self.value_marker()?;
        let n = self.int(m)?;
        if n < 0 {
            return Err(self.err(format!("negative length {n}")));
        }
        let n = n as usize;
        if min_size == 0 && n > MAX_EMPTY_ELEMENTS {
            return Err(self.err(format!(
                "count {n} of payload-free elements exceeds {MAX_EMPTY_ELEMENTS}"
            )));
        }
        let left = self.buf.len() - self.pos;
        if min_size > 0 && n > left / min_size {
            return Err(self.err(format!("length {n} exceeds the {left} bytes that remain")));
        }
        Ok(n)
    }

    fn text(&mut self, len: usize) -> R<String> {
        let start = self.pos;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|e| DecodeError {
            message: format!("invalid UTF-8 in string: {e}"),
            offset: start,
        })
    }

    fn high_precision(&mut self) -> R<Value> {
        let len = self.length(1)?;
        let text = self.text(len)?;
        let t = text.trim();
        let valid = !t.is_empty()
            && t.chars()
                .all(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E'));
        if !valid {
            return Err(self.err(format!("invalid high-precision number '{text}'")));
        }
        if let Ok(i) = t.parse::<i64>() {
            return Ok(Value::from(i));
        }
        if let Ok(u) = t.parse::<u64>() {
            return Ok(Value::from(u));
        }
        if t.contains(['.', 'e', 'E']) {
            if let Some(n) = t.parse::<f64>().ok().and_then(Number::from_f64) {
                return Ok(Value::Number(n));
            }
        }
        // An integer beyond 64 bits: keep every digit.
        Ok(Value::String(t.to_string()))
    }

    fn value(&mut self, marker: u8, depth: usize) -> R<Value> {
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::from(self.int(marker)?),
            b'd' => float(f32::from_be_bytes(self.fixed()?) as f64),
            b'D' => float(f64::from_be_bytes(self.fixed()?)),
            b'H' => self.high_precision()?,
            b'C' => {
                let c = self.byte()?;
                if !c.is_ascii() {
                    self.pos -= 1;
                    return Err(self.err("char value outside ASCII"));
                }
                Value::String((c as char).to_string())
            }
            b'S' => {
                let len = self.length(1)?;
                Value::String(self.text(len)?)
            }
            b'[' => self.array(depth + 1)?,
            b'{' => self.object(depth + 1)?,
            other => {
                self.pos -= 1;
                return Err(self.err(format!("unknown marker {}", show(other))));
            }
        })
    }

    /// `$type` and `#count` after a container's opening marker.
    fn container_header(&mut self, depth: usize) -> R<(Option<u8>, Option<usize>)> {
        if depth > MAX_DEPTH {
            return Err(self.err(format!("nesting deeper than {MAX_DEPTH}")));
        }
        let mut typed = None;
        if self.peek()? == b'$' {
            self.pos += 1;
            let t = self.byte()?;
            if matches!(t, b'[' | b'{' | b']' | b'}' | b'N' | b'$' | b'#') {
                self.pos -= 1;
                return Err(self.err(format!("invalid container type {}", show(t))));
            }
            typed = Some(t);
            if self.peek()? != b'#' {
                return Err(self.err("a typed container ($) must have a count (#)"));
            }
        }
        let mut count = None;
        if self.peek()? == b'#' {
            self.pos += 1;
            let size = match typed {
                Some(b'Z' | b'T' | b'F') => 0,
                _ => 1,
            };
            count = Some(self.length(size)?);
        }
        Ok((typed, count))
    }

    fn element(&mut self, typed: Option<u8>, depth: usize) -> R<Value> {
        match typed {
            Some(t) => self.value(t, depth),
            None => {
                let m = self.value_marker()?;
                self.value(m, depth)
            }
        }
    }

    fn array(&mut self, depth: usize) -> R<Value> {
        let (typed, count) = self.container_header(depth)?;
        let mut items = Vec::new();
        match count {
            Some(n) => {
                // Zero-size elements (`$Z`) could claim any count: cap what we allocate.
                items.reserve(n.min(1 << 16));
                for _ in 0..n {
                    items.push(self.element(typed, depth)?);
                }
            }
            None => loop {
                let m = self.value_marker()?;
                if m == b']' {
                    break;
                }
                items.push(self.value(m, depth)?);
            },
        }
        Ok(Value::Array(items))
    }

    fn key(&mut self) -> R<String> {
        let len = self.length(1)?;
        self.text(len)
    }

    fn object(&mut self, depth: usize) -> R<Value> {
        let (typed, count) = self.container_header(depth)?;
        let mut map = Map::new();
        match count {
            Some(n) => {
                for _ in 0..n {
                    let k = self.key()?;
                    let v = self.element(typed, depth)?;
                    map.insert(k, v);
                }
            }
            None => loop {
                // Keys carry no marker; a no-op or the end marker may come first.
                while self.peek()? == b'N' {
                    self.pos += 1;
                }
                if self.peek()? == b'}' {
                    self.pos += 1;
                    break;
                }
                let k = self.key()?;
                let m = self.value_marker()?;
                let v = self.value(m, depth)?;
                map.insert(k, v);
            },
        }
        Ok(Value::Object(map))
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn show(b: u8) -> String {
    if b.is_ascii_graphic() {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_and_plain_containers() {
        assert_eq!(decode(b"Z").unwrap(), Value::Null);
        assert_eq!(decode(b"NT").unwrap(), json!(true));
        assert_eq!(decode(b"i\xff").unwrap(), json!(-1));
        assert_eq!(decode(b"I\x01,").unwrap(), json!(300));
        assert_eq!(decode(b"d?\xc0\x00\x00").unwrap(), json!(1.5));
        assert_eq!(decode(b"Ca").unwrap(), json!("a"));
        assert_eq!(decode(b"SU\x02\xc3\xa9").unwrap(), json!("é"));
        assert_eq!(decode(b"[U\x01NU\x02]").unwrap(), json!([1, 2]));
        assert_eq!(decode(b"{U\x01aU\x01}").unwrap(), json!({"a": 1}));
    }

    #[test]
    fn typed_and_counted_containers() {
        assert_eq!(decode(b"[$U#U\x02ab").unwrap(), json!([97, 98]));
        assert_eq!(bytes(&decode(b"[$U#U\x02ab").unwrap()).unwrap(), b"ab");
        assert_eq!(
            decode(b"[$d#U\x02?\xc0\x00\x00@\x00\x00\x00").unwrap(),
            json!([1.5, 2.0])
        );
        assert_eq!(decode(b"[$Z#U\x03").unwrap(), json!([null, null, null]));
        assert_eq!(decode(b"[#U\x02U\x01Ca").unwrap(), json!([1, "a"]));
        assert_eq!(
            decode(b"{$U#U\x02U\x01a\x01U\x01b\x02").unwrap(),
            json!({"a": 1, "b": 2})
        );
        assert_eq!(decode(b"{$T#U\x01U\x01k").unwrap(), json!({"k": true}));
    }

    #[test]
    fn high_precision_numbers_keep_their_value() {
        assert_eq!(
            decode(b"HU\x139223372036854775808").unwrap(),
            json!(9_223_372_036_854_775_808u64)
        );
        assert_eq!(
            decode(b"HU\x161180591620717411303424").unwrap(),
            json!("1180591620717411303424")
        );
        assert_eq!(decode(b"HU\x031.5").unwrap(), json!(1.5));
        assert!(decode(b"HU\x03abc").is_err());
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"S",
            b"SU\x05ab",
            b"[U\x01",
            b"{U\x01a",
            b"X",
            b"[$U#i\xff",
            b"[#l\x7f\xff\xff\xff",
            b"[$U]",
            b"SU\x02\xff\xfe",
            b"U\x01U\x02",
            b"C\xff",
        ] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
        let deep = vec![b'['; MAX_DEPTH + 10];
        assert!(decode(&deep).is_err());
    }
}
