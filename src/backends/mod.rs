//! One folder per platform. Each remote backend folder has the same files:
//! `mod.rs` (the [`crate::backend::JobBackend`] impl and `build`), `api.rs` (wire types and raw
//! requests), `auth.rs` (login and token handling) and `mapping.rs` (native states and
//! records to [`crate::model::Job`]).

pub mod ac;
pub mod cloudpss;
pub mod local;
pub mod nebula;
pub mod octoplant;
pub mod slurm;

/// Strategies shared by the backends' property tests: arbitrary bytes and arbitrary JSON, as a
/// broken proxy or a garbled connection would deliver them.
#[cfg(test)]
pub(crate) mod garbage {
    use crate::http::HttpResponse;
    use proptest::prelude::*;
    use serde_json::Value;

    /// Any JSON value, a few levels deep, with the keys platforms use so shapes get close to
    /// real answers.
    pub fn json() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just("code".to_string()),
            Just("data".to_string()),
            Just("msg".to_string()),
            Just("errors".to_string()),
            Just("meta".to_string()),
            Just("jobs".to_string()),
            Just("job_id".to_string()),
            Just("name".to_string()),
            Just("metadata".to_string()),
            Just("done".to_string()),
            Just("error".to_string()),
            Just("list".to_string()),
            Just("total".to_string()),
            Just("status".to_string()),
            Just("id".to_string()),
            "[a-zA-Z_]{1,12}",
        ];
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            ".{0,20}".prop_map(Value::String),
            Just(Value::String("0".into())),
        ];
        leaf.prop_recursive(4, 48, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key.clone(), inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// What a parse of an unusable 2xx answer may produce: success, or a typed error. Arbitrary
    /// JSON may spell a genuine platform error (invalid parameters, refused token, unknown job),
    /// but never "not supported".
    pub fn check(
        r: &crate::error::Result<impl Sized>,
        body_is_json: bool,
    ) -> std::result::Result<(), TestCaseError> {
        if let Err(e) = r {
            prop_assert_ne!(e.kind, crate::error::ErrorKind::NotSupported, "{}", e);
            if body_is_json {
                prop_assert!(
                    [
                        crate::error::exit::USAGE,
                        crate::error::exit::AUTH,
                        crate::error::exit::NOT_FOUND,
                        crate::error::exit::UNAVAILABLE
                    ]
                    .contains(&e.exit_code()),
                    "{}",
                    e
                );
            } else {
                prop_assert_eq!(e.exit_code(), crate::error::exit::UNAVAILABLE, "{}", e);
            }
        }
        Ok(())
    }

    /// Arbitrary bytes.
    pub fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(any::<u8>(), 0..400)
    }

    /// An HTTP status among those platforms answer with.
    pub fn status() -> impl Strategy<Value = u16> {
        prop_oneof![
            Just(200u16),
            Just(201),
            Just(400),
            Just(401),
            Just(403),
            Just(404),
            Just(429),
            Just(500),
            Just(502),
            Just(503)
        ]
    }

    /// An answer with `status` and `body`.
    pub fn response(status: u16, body: Vec<u8>) -> HttpResponse {
        HttpResponse {
            status: reqwest::StatusCode::from_u16(status).unwrap_or(reqwest::StatusCode::OK),
            headers: reqwest::header::HeaderMap::new(),
            body: bytes::Bytes::from(body),
        }
    }

    /// Whether `bytes` parse as JSON at all.
    pub fn is_json(bytes: &[u8]) -> bool {
        serde_json::from_slice::<Value>(bytes).is_ok()
    }
}
