//! The shared HTTP layer: which failures are retried, how Retry-After is honoured, that a
//! submission is never re-sent once it may have arrived, and that the budget ends retries.

use axum::Router;
use axum::http::StatusCode;
use axum::routing::any;
use jobctl::config::{BackendKind, Profile};
use jobctl::http::{HttpClient, Idempotency, default_transient};
use jobctl_sim::axum;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// A server whose first `fail` answers are `status`, then 200 "ok"; counts requests.
async fn flaky(
    fail: u32,
    status: StatusCode,
    retry_after: Option<&'static str>,
) -> (String, Arc<AtomicU32>) {
    let hits = Arc::new(AtomicU32::new(0));
    let h = hits.clone();
    let app = Router::new().route(
        "/x",
        any(move || {
            let h = h.clone();
            async move {
                let n = h.fetch_add(1, Ordering::SeqCst);
                if n < fail {
                    let mut resp = axum::response::Response::new(axum::body::Body::from("nope"));
                    *resp.status_mut() = status;
                    if let Some(ra) = retry_after {
                        resp.headers_mut()
                            .insert("retry-after", ra.parse().unwrap());
                    }
                    resp
                } else {
                    axum::response::Response::new(axum::body::Body::from("ok"))
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/x"), hits)
}

fn client() -> HttpClient {
    HttpClient::new(&Profile::new("t", BackendKind::Cloudpss), "test")
        .unwrap()
        .with_retry_budget(Duration::from_secs(10))
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let (url, hits) = flaky(2, StatusCode::SERVICE_UNAVAILABLE, None).await;
    let r = client()
        .send(Idempotency::Idempotent, default_transient, |c| c.get(&url))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), "ok");
    assert_eq!(hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_submission_is_not_resent_after_a_server_error() {
    let (url, hits) = flaky(1, StatusCode::INTERNAL_SERVER_ERROR, None).await;
    let r = client()
        .send(Idempotency::NotIdempotent, default_transient, |c| {
            c.post(&url)
        })
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn rate_limits_are_retried_even_for_submissions_and_honour_retry_after() {
    let (url, hits) = flaky(1, StatusCode::TOO_MANY_REQUESTS, Some("1")).await;
    let started = std::time::Instant::now();
    let r = client()
        .send(Idempotency::NotIdempotent, default_transient, |c| {
            c.post(&url)
        })
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    // Retry-After: 1 was obeyed rather than the sub-second backoff.
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn client_errors_are_returned_at_once() {
    let (url, hits) = flaky(5, StatusCode::NOT_FOUND, None).await;
    let r = client()
        .send(Idempotency::Idempotent, default_transient, |c| c.get(&url))
        .await
        .unwrap();
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn an_unreachable_server_ends_with_an_unavailable_error_within_the_budget() {
    // Bind then drop a listener to get a loopback port that refuses connections.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}/x");
    let e = client()
        .with_retry_budget(Duration::from_millis(800))
        .send(Idempotency::Idempotent, default_transient, |c| c.get(&url))
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 7);
    assert!(e.message.contains("cannot connect"), "{e}");
    assert!(e.message.contains("attempts"), "{e}");
}
