//! Property tests: arbitrary bytes and arbitrary JSON fed to the order and error parsing never
//! panic and always give a typed error of the right class.

use super::api::classify;
use super::mapping::{Operation, job_from_operation};
use crate::backends::garbage::{bytes, check, is_json, json, response, status};
use crate::error::exit;
use proptest::prelude::*;

proptest! {
    #[test]
    fn arbitrary_bytes(s in status(), body in bytes()) {
        let json_body = is_json(&body);
        let resp = response(s, body);
        let _ = classify(resp.status, &resp.body);
        let r = Operation::parse(&resp);
        check(&r, json_body)?;
    }

    #[test]
    fn arbitrary_json(s in status(), v in json()) {
        let resp = response(s, v.to_string().into_bytes());
        let e = classify(resp.status, &resp.body);
        prop_assert_ne!(e.kind, crate::error::ErrorKind::NotSupported);
        let r = Operation::parse(&resp);
        if !v.is_object() { prop_assert_eq!(r.as_ref().map_err(|e| e.exit_code()).err(), Some(exit::UNAVAILABLE)); }
        check(&r, false)?;
        if let Ok(op) = r {
            let _ = job_from_operation("x", &op);
        }
    }

    #[test]
    fn an_empty_order_is_unusable(_x in 0..1u8) {
        let r = Operation::parse(&response(200, b"{}".to_vec()));
        prop_assert_eq!(r.map_err(|e| e.exit_code()).err(), Some(exit::UNAVAILABLE));
    }
}
