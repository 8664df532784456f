//! Logging a TLS failure once per peer and reason, not once per connection attempt: a peer with
//! an expired certificate retries every few hundred milliseconds, and a log that repeats the same
//! line thousands of times hides the one line an operator needs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long the same (peer, reason) stays quiet after it was logged.
const QUIET: Duration = Duration::from_secs(600);

/// Entries kept before the oldest are forgotten (bounds memory against many distinct peers).
const MAX_KEYS: usize = 1024;

/// Remembers which (peer, reason) pairs were logged recently.
#[derive(Debug, Default)]
pub struct LogOnce {
    seen: Mutex<HashMap<(String, String), Instant>>,
}

impl LogOnce {
    /// Whether to log `reason` for `peer` now: the first time, and again after a quiet period.
    pub fn should_log(&self, peer: &str, reason: &str) -> bool {
        let now = Instant::now();
        let mut seen = crate::sync::lock(&self.seen);
        if seen.len() >= MAX_KEYS {
            seen.retain(|_, at| now.duration_since(*at) < QUIET);
            if seen.len() >= MAX_KEYS {
                seen.clear();
            }
        }
        let key = (peer.to_owned(), reason.to_owned());
        match seen.get(&key) {
            Some(at) if now.duration_since(*at) < QUIET => false,
            _ => {
                seen.insert(key, now);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_peer_and_reason() {
        let log = LogOnce::default();
        assert!(log.should_log("node 2", "expired"));
        assert!(!log.should_log("node 2", "expired"));
        assert!(log.should_log("node 3", "expired"));
        assert!(log.should_log("node 2", "unknown CA"));
    }
}
