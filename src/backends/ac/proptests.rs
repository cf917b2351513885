//! Property tests: arbitrary bytes and arbitrary JSON fed to the envelope decoding and the job
//! mapping never panic and always give a typed error of the right class.

use super::api::{decode, page_items};
use super::mapping::{Source, parse_offset, to_job};
use crate::backends::garbage::{bytes, check, is_json, json, response, status};
use crate::error::exit;
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes(s in status(), body in bytes()) {
        let json_body = is_json(&body);
        let r = decode(&response(s, body));
        if s < 300 { check(&r, json_body)?; }
    }

    #[test]
    fn arbitrary_json(s in status(), v in json()) {
        let r = decode(&response(s, v.to_string().into_bytes()));
        if s < 300 { check(&r, true)?; }
        if s < 300 && !v.is_object() { prop_assert_eq!(r.as_ref().map_err(|e| e.exit_code()).err(), Some(exit::UNAVAILABLE)); }
        if let Ok(data) = r {
            let offset = parse_offset("+08:00").map_err(|e| TestCaseError::fail(e.to_string()))?;
            for item in page_items(&data).0 {
                let _ = to_job(&item, None, Source::Realtime, offset);
                let _ = to_job(&item, None, Source::History, offset);
            }
        }
    }
}
