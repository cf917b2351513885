//! Every platform error code a platform documents, against the exit-code table: refusals are 2
//! (invalid) or 4 (permission/quota), not found is 6, unsupported is 8, and 7 only for what may
//! succeed later — so a CI script can retry on 7 and nothing else.

use bytes::Bytes;
use jobctl::backends::{ac, cloudpss, octoplant, slurm};
use jobctl::http::HttpResponse;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;

fn response(status: u16, body: &str) -> HttpResponse {
    HttpResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers: HeaderMap::new(),
        body: Bytes::from(body.to_string()),
    }
}

#[test]
fn ac_codes() {
    let cases = [
        ("10001", "internal error", 7),
        ("10003", "missing parameters", 2),
        ("10004", "invalid parameters", 2),
        ("10007", "user frozen", 4),
        ("10008", "no permission", 4),
        ("10009", "no API permission", 4),
        ("10010", "file verification failed", 2),
        ("10011", "file too large", 2),
        ("10012", "connection interrupted", 7),
        ("10013", "timed out", 7),
        ("815005", "scheduler did not answer", 7),
        (
            "815007",
            "sbatch: error: invalid partition specified: nope",
            2,
        ),
        (
            "815007",
            "QOSMaxSubmitJobPerUserLimit: job violates the user's quota",
            4,
        ),
    ];
    for (code, msg, exit) in cases {
        let e = ac::api::code_error(code, msg, StatusCode::OK);
        assert_eq!(e.exit_code(), exit, "AC {code} {msg}: {e}");
        assert_eq!(e.code.as_deref(), Some(code));
    }
}

#[test]
fn cloudpss_codes() {
    let cases = [
        (Some("UNAUTHENTICATED"), "token expired", 4),
        (Some("FORBIDDEN"), "not your job", 4),
        (Some("NOT_FOUND"), "no such job", 6),
        (Some("BAD_USER_INPUT"), "queue 99 does not exist", 2),
        (Some("BAD_REQUEST"), "bad request", 2),
        (Some("QUOTA_EXCEEDED"), "too many jobs", 4),
        (None, "job quota exceeded for user alice", 4),
        (Some("INTERNAL_SERVER_ERROR"), "boom", 7),
        (None, "something odd", 7),
    ];
    for (code, msg, exit) in cases {
        let mut err = serde_json::json!({"message": msg});
        if let Some(c) = code {
            err["extensions"] = serde_json::json!({"code": c});
        }
        let errors: Vec<cloudpss::api::GqlError> =
            serde_json::from_value(serde_json::json!([err])).unwrap();
        let e = cloudpss::api::classify(&errors);
        assert_eq!(e.exit_code(), exit, "CloudPSS {code:?} {msg}: {e}");
    }
}

#[test]
fn octoplant_grpc_codes() {
    let expected = [
        (1, 7),  // CANCELLED
        (2, 7),  // UNKNOWN
        (3, 2),  // INVALID_ARGUMENT
        (4, 7),  // DEADLINE_EXCEEDED
        (5, 6),  // NOT_FOUND
        (6, 2),  // ALREADY_EXISTS
        (7, 4),  // PERMISSION_DENIED
        (8, 4),  // RESOURCE_EXHAUSTED (quota)
        (9, 2),  // FAILED_PRECONDITION
        (10, 7), // ABORTED
        (11, 2), // OUT_OF_RANGE
        (12, 8), // UNIMPLEMENTED
        (13, 7), // INTERNAL
        (14, 7), // UNAVAILABLE
        (15, 7), // DATA_LOSS
        (16, 4), // UNAUTHENTICATED
    ];
    for (code, exit) in expected {
        let body = format!(r#"{{"code":{code},"message":"m","details":[]}}"#);
        let e = octoplant::api::classify(StatusCode::BAD_REQUEST, body.as_bytes());
        assert_eq!(e.exit_code(), exit, "gRPC code {code}: {e}");
    }
}

#[test]
fn slurm_error_numbers() {
    let cases = [
        (2000, "Invalid partition name specified", 2),
        (
            2001,
            "No partition specified or system default partition",
            2,
        ),
        (2002, "Access/permission denied", 4),
        (2017, "Invalid job id specified", 6),
        (2045, "Invalid account or account/partition combination", 2),
        (2050, "Job violates accounting/QOS policy", 4),
        (2051, "Requested time limit is invalid", 2),
        (1001, "Unable to contact slurm controller", 7),
        (9001, "Failure during parsing", 2),
    ];
    for (code, msg, exit) in cases {
        let body = format!(r#"{{"meta":{{}},"errors":[{{"error_code":{code},"error":"{msg}"}}]}}"#);
        let e = slurm::api::classify(&response(500, &body))
            .unwrap_err()
            .error;
        assert_eq!(e.exit_code(), exit, "Slurm {code} {msg}: {e}");
    }
    let e = slurm::api::classify(&response(503, "busy"))
        .unwrap_err()
        .error;
    assert_eq!(e.exit_code(), 7);
}
