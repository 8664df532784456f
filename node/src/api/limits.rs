//! Session checks of the client API (DESIGN.md §5). The key, value and message limits are shared
//! with the client and live in `raftkv-proto` ([`raftkv_proto::check_key`] and its siblings); the
//! session limit stays here because it belongs to the node's session table
//! ([`crate::kv::MAX_CLIENT_ID_LEN`]). Every rejection names the limit so a client can tell what
//! to change.

use tonic::Status;

use crate::kv::MAX_CLIENT_ID_LEN;

/// Checks a session: an empty client id means no de-duplication; otherwise seq starts at 1.
pub fn validate_session(client_id: &str, seq: u64) -> Result<(), Status> {
    if client_id.len() > MAX_CLIENT_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "client_id is {} bytes; the limit is {MAX_CLIENT_ID_LEN} bytes",
            client_id.len()
        )));
    }
    if !client_id.is_empty() && seq == 0 {
        return Err(Status::invalid_argument(
            "seq must be at least 1 when client_id is set",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_are_checked() {
        assert!(validate_session("", 0).is_ok());
        assert!(validate_session("c", 1).is_ok());
        assert!(validate_session("c", 0).is_err());
        let e = validate_session(&"x".repeat(MAX_CLIENT_ID_LEN + 1), 1).expect_err("too long");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }
}
