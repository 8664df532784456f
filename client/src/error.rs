//! [`Error`]: what can go wrong with a call, split by what the caller may conclude.
//!
//! A *definite* failure means the request had no effect (or, for reads, that there is nothing to
//! read). An *unknown outcome* means the call ran out of time: a write may or may not have been
//! applied, exactly as in Jepsen's `info` operations. A missing key is not an error at all
//! ([`crate::Client::get`] returns `None`), and neither is a failed compare-and-swap.

use std::time::Duration;

/// The error of a [`crate::Client`] call.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client was given no endpoints.
    #[error("no endpoints given")]
    NoEndpoints,
    /// An endpoint could not be parsed into a URI (or asks for something unsupported).
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        endpoint: String,
        /// Why it was refused.
        reason: String,
    },
    /// The request is malformed (empty or oversize key, oversize value, a reused seq). Definite:
    /// nothing was applied. The message names the limit.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The client session had expired when the write's first attempt arrived (gRPC ABORTED).
    /// Definite: nothing was applied; the client has already switched to a fresh session.
    #[error("session expired: {0}")]
    SessionExpired(String),
    /// A write did not get an answer in time, or a retry of it was refused after an earlier
    /// attempt may already have been applied (e.g. the session expired in between): it may or
    /// may not have been applied.
    #[error(
        "outcome unknown: no answer after {attempts} attempt(s) in {elapsed:?}; the write may or may not have been applied (last error: {last_error})"
    )]
    OutcomeUnknown {
        /// How many attempts were made.
        attempts: u32,
        /// How long the call took.
        elapsed: Duration,
        /// The last thing that went wrong.
        last_error: String,
    },
    /// A read (or status call) did not get an answer in time. Nothing was changed.
    #[error(
        "timed out: no answer after {attempts} attempt(s) in {elapsed:?} (last error: {last_error})"
    )]
    Timeout {
        /// How many attempts were made.
        attempts: u32,
        /// How long the call took.
        elapsed: Duration,
        /// The last thing that went wrong.
        last_error: String,
    },
    /// Every attempt failed in the TLS handshake (a wrong CA, an expired certificate, a name the
    /// certificate does not cover, a missing client certificate). Definite: nothing was sent.
    /// The message says what to fix.
    #[error("TLS: {0}")]
    Tls(String),
    /// Any other error status from a server, which retrying would not cure (e.g. UNIMPLEMENTED,
    /// a FAILED_PRECONDITION without a leader to redirect to). Definite.
    #[error("server error ({code:?}): {message}")]
    Rpc {
        /// The gRPC status code.
        code: tonic::Code,
        /// The status message.
        message: String,
    },
}

/// A key or value over a limit, found before sending: the same words the servers would use.
impl From<raftkv_proto::LimitError> for Error {
    fn from(e: raftkv_proto::LimitError) -> Self {
        Error::InvalidArgument(e.to_string())
    }
}

impl Error {
    /// Whether the call timed out, so that its outcome is unknown (a write may have applied).
    /// `kvctl` exits with 3 for these.
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, Error::OutcomeUnknown { .. } | Error::Timeout { .. })
    }

    /// Whether the call definitely had no effect.
    pub fn is_definite(&self) -> bool {
        !self.is_outcome_unknown()
    }
}
