//! Property tests: arbitrary bytes and arbitrary JSON fed to the GraphQL answer parsing never
//! panic and always give a typed error of the right class.

use super::api::{interpret, jobs_query};
use crate::backends::garbage::{bytes, is_json, json, response, status};
use crate::error::exit;
use proptest::prelude::*;

/// What a parse of an unusable 2xx answer may produce: success, or a typed error. Arbitrary
/// JSON may spell a genuine platform error (invalid parameters, refused token, unknown job),
/// but never "not supported".
fn check(
    r: &crate::error::Result<impl Sized>,
    body_is_json: bool,
) -> std::result::Result<(), TestCaseError> {
    if let Err(e) = r {
        prop_assert_ne!(e.kind, crate::error::ErrorKind::NotSupported, "{}", e);
        if body_is_json {
            prop_assert!(
                [exit::USAGE, exit::AUTH, exit::NOT_FOUND, exit::UNAVAILABLE]
                    .contains(&e.exit_code()),
                "{}",
                e
            );
        } else {
            prop_assert_eq!(e.exit_code(), exit::UNAVAILABLE, "{}", e);
        }
    }
    Ok(())
}

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
