//! Property tests: arbitrary bytes and arbitrary JSON fed to slurmrestd answer parsing never
//! panic and always give a typed error of the right class.

use super::api::{ApiVersion, classify};
use super::mapping::to_job;
use super::v0_0_38::V0_0_38;
use crate::backends::garbage::{bytes, check, is_json, json, response, status};
use proptest::prelude::*;

fn parse(s: u16, body: Vec<u8>) -> crate::error::Result<usize> {
    let body = classify(&response(s, body)).map_err(|f| f.error)?;
    let jobs = V0_0_38.jobs(&body)?;
    for j in &jobs {
        let _ = to_job(j, "v0.0.38");
    }
    Ok(jobs.len())
}

proptest! {
    #[test]
    fn arbitrary_bytes(s in status(), body in bytes()) {
        let json_body = is_json(&body);
        let r = parse(s, body);
        if s < 300 { check(&r, json_body)?; }
    }

    #[test]
    fn arbitrary_json(s in status(), v in json()) {
        let r = parse(s, v.to_string().into_bytes());
        if s < 300 { check(&r, true)?; }
        // Without a list of jobs there is no answer to read, and never "no such job".
        if v.get("jobs").is_none_or(|j| !j.is_array()) {
            prop_assert!(r.is_err());
        }
    }
}
