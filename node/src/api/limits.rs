//! Input limits of the client API (DESIGN.md §5) and their checks. Every rejection names the
//! limit so a client can tell what to change.

use tonic::Status;

use crate::kv::MAX_CLIENT_ID_LEN;

/// Keys are 1..=4096 bytes.
pub const MAX_KEY_BYTES: usize = 4096;
/// Values are 0..=1 MiB.
pub const MAX_VALUE_BYTES: usize = 1 << 20;
/// The gRPC message limit on both ports: well above the largest request (key + value + session)
/// and the largest Scan page (4 MiB), so oversize input reaches our checks and gets a clear error
/// instead of a transport-level one.
pub const MAX_GRPC_MESSAGE_BYTES: usize = 16 << 20;

/// Checks a key's length.
pub fn validate_key(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{field} must not be empty (keys are 1..={MAX_KEY_BYTES} bytes)"
        )));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; the limit is {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

/// Checks a value's length.
pub fn validate_value(value: &[u8]) -> Result<(), Status> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(Status::invalid_argument(format!(
            "value is {} bytes; the limit is {MAX_VALUE_BYTES} bytes",
            value.len()
        )));
    }
    Ok(())
}

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

/// Checks a scan bound: empty is allowed (open), otherwise like a key.
pub fn validate_bound(field: &str, key: &[u8]) -> Result<(), Status> {
    if key.len() > MAX_KEY_BYTES {
        return Err(Status::invalid_argument(format!(
            "{field} is {} bytes; the limit is {MAX_KEY_BYTES} bytes",
            key.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_inclusive_and_named() {
        assert!(validate_key("key", b"k").is_ok());
        assert!(validate_key("key", &[0; MAX_KEY_BYTES]).is_ok());
        let e = validate_key("key", &[0; MAX_KEY_BYTES + 1]).expect_err("too long");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("4096"));
        assert!(validate_key("key", b"").is_err());
        assert!(validate_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        let e = validate_value(&vec![0; MAX_VALUE_BYTES + 1]).expect_err("too large");
        assert!(e.message().contains("1048576"));
        assert!(validate_session("", 0).is_ok());
        assert!(validate_session("c", 0).is_err());
        assert!(validate_session(&"x".repeat(MAX_CLIENT_ID_LEN + 1), 1).is_err());
    }
}
