//! What became of a non-idempotent request (a submission): never sent, answered, or lost on
//! the way back. A submission that failed after it may have reached the platform must not be
//! reported as "failed" (its key freed, the next run sending it again): it is *unknown* until
//! the platform is asked. The submit path runs a backend's `submit` inside [`track`]; every
//! [`super::HttpClient::send`] of a non-idempotent request records its last attempt here, so
//! the classification is made once, for every backend, where the transport facts are known.

use reqwest::StatusCode;
use std::cell::Cell;

/// The fate of the last non-idempotent request sent inside [`track`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No non-idempotent request was attempted (the failure happened before sending).
    Untouched,
    /// The request provably did not reach the platform's handler: the connection was refused,
    /// or the platform answered 503 / 429 (it did not process the request).
    NotSent,
    /// A complete answer with this status arrived.
    Answered(StatusCode),
    /// The request was sent and no complete answer came back (timeout, connection reset,
    /// truncated body): the platform may or may not have acted on it.
    Lost,
}

tokio::task_local! {
    static LAST: Cell<Delivery>;
}

/// Runs `fut` recording the fate of its non-idempotent requests; returns its output and the
/// fate of the last one.
pub async fn track<F: std::future::Future>(fut: F) -> (F::Output, Delivery) {
    LAST.scope(Cell::new(Delivery::Untouched), async move {
        let out = fut.await;
        (out, LAST.with(Cell::get))
    })
    .await
}

/// Records the fate of one attempt (a no-op outside [`track`]).
pub(crate) fn record(d: Delivery) {
    let _ = LAST.try_with(|c| c.set(d));
}

/// Records a complete answer: 503 and 429 mean the platform did not process the request.
pub(crate) fn record_answer(status: StatusCode) {
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        record(Delivery::NotSent);
    } else {
        record(Delivery::Answered(status));
    }
}

impl Delivery {
    /// Whether a submission that ended in an error of `kind` may nevertheless have created a
    /// job. Unusable answers to a request the platform accepted (2xx), lost answers and
    /// server errors other than 503 leave the outcome open; refusals and requests that never
    /// left are certain failures.
    pub fn outcome_unknown(self, kind: crate::error::ErrorKind) -> bool {
        use crate::error::ErrorKind;
        match self {
            Delivery::Untouched | Delivery::NotSent => false,
            Delivery::Lost => true,
            Delivery::Answered(status) if status.is_success() => kind == ErrorKind::Protocol,
            // "See other" is how some servers answer a POST they acted on.
            Delivery::Answered(StatusCode::SEE_OTHER) => true,
            // A server error the platform explained as a refusal (slurmrestd answers 500
            // for an invalid partition) is certain; a bare one may hide a created job.
            Delivery::Answered(status) => {
                status.is_server_error()
                    && !matches!(
                        kind,
                        ErrorKind::Usage
                            | ErrorKind::Auth
                            | ErrorKind::NotFound
                            | ErrorKind::NotSupported
                    )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test]
    async fn the_last_attempt_decides_and_nothing_leaks_outside_track() {
        record(Delivery::Lost); // outside any scope: ignored
        let ((), d) = track(async {
            record(Delivery::Lost);
            record_answer(StatusCode::SERVICE_UNAVAILABLE);
        })
        .await;
        assert_eq!(d, Delivery::NotSent);
        let ((), d) = track(async { record_answer(StatusCode::OK) }).await;
        assert!(d.outcome_unknown(ErrorKind::Protocol));
        assert!(!d.outcome_unknown(ErrorKind::Usage));
        assert!(Delivery::Answered(StatusCode::BAD_GATEWAY).outcome_unknown(ErrorKind::Platform));
        assert!(!Delivery::Answered(StatusCode::BAD_REQUEST).outcome_unknown(ErrorKind::Usage));
        assert!(
            !Delivery::Answered(StatusCode::INTERNAL_SERVER_ERROR)
                .outcome_unknown(ErrorKind::Usage)
        );
        assert!(!Delivery::Untouched.outcome_unknown(ErrorKind::Protocol));
        // A redirect: 303 may follow a created job, the others mean "not here".
        assert!(Delivery::Answered(StatusCode::SEE_OTHER).outcome_unknown(ErrorKind::Protocol));
        assert!(
            !Delivery::Answered(StatusCode::PERMANENT_REDIRECT)
                .outcome_unknown(ErrorKind::Protocol)
        );
    }
}
