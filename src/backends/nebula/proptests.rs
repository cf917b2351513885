//! Property tests: arbitrary bytes and arbitrary JSON fed to the envelope decoding and the job
//! mapping never panic and always give a typed error of the right class.

use super::api::{JobPage, decode};
use super::mapping::job_of;
use crate::backends::garbage::{bytes, check, is_json, json, response, status};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes(s in status(), body in bytes()) {
        let json_body = is_json(&body);
        let r = decode::<JobPage>(&response(s, body), "list");
        if s < 300 { check(&r, json_body)?; }
    }

    #[test]
    fn arbitrary_json(s in status(), v in json()) {
        let r = decode::<JobPage>(&response(s, v.to_string().into_bytes()), "list");
        if s < 300 { check(&r, true)?; }
        if !v.is_object() { prop_assert!(r.is_err()); }
        if let Ok(page) = r {
            for j in page.items.iter().flatten() {
                let _ = job_of(j);
            }
        }
    }
}
