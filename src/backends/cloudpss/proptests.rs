//! Property tests: arbitrary bytes and arbitrary JSON fed to the GraphQL answer parsing never
//! panic and always give a typed error of the right class.

use super::api::{interpret, jobs_query};
use crate::backends::garbage::{bytes, check, is_json, json, response, status};
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes(s in status(), body in bytes()) {
        let json_body = is_json(&body);
        let r = interpret::<jobs_query::ResponseData>(&response(s, body), "u");
        if s < 300 { check(&r, json_body)?; }
    }

    #[test]
    fn arbitrary_json(s in status(), v in json()) {
        let r = interpret::<jobs_query::ResponseData>(&response(s, v.to_string().into_bytes()), "u");
        if s < 300 { check(&r, true)?; }
        if !v.is_object() { prop_assert!(r.is_err()); }
    }
}
