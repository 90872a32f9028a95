//! Sign-in throttling: after repeated failures for one account or from one client address, further
//! attempts are refused with 429 and `Retry-After` until the window passes. Kept in memory per node:
//! a restart forgets it, which only ever lets an attacker start a new window.

use std::collections::HashMap;
use std::sync::Mutex;

use trail_model::time::{MICROS_PER_SECOND, Micros};

/// Failures allowed per account within the window.
pub const ACCOUNT_LIMIT: usize = 5;
/// Failures allowed per client address within the window (many users may share an address).
pub const ADDRESS_LIMIT: usize = 20;
/// How far back failures count.
pub const WINDOW: Micros = 15 * 60 * MICROS_PER_SECOND;

#[derive(Debug, Default)]
pub struct Throttle {
    failures: Mutex<HashMap<String, Vec<Micros>>>,
    /// When each key's current block was first reported.
    reported: Mutex<HashMap<String, Micros>>,
}

impl Throttle {
    /// Seconds to wait when `key` has used up `limit` failures in the window, else `None`.
    pub fn blocked(&self, key: &str, limit: usize, now: Micros) -> Option<u64> {
        let mut map = self.failures.lock().ok()?;
        let list = map.get_mut(key)?;
        list.retain(|t| now - t < WINDOW);
        if list.len() < limit {
            return None;
        }
        let oldest = list.iter().min().copied().unwrap_or(now);
        Some(((oldest + WINDOW - now) / MICROS_PER_SECOND).max(1) as u64)
    }

    pub fn fail(&self, key: &str, now: Micros) {
        if let Ok(mut map) = self.failures.lock() {
            // Bound memory under a flood of distinct keys: forget the oldest windows first.
            if map.len() > 100_000 {
                map.retain(|_, v| v.iter().any(|t| now - t < WINDOW));
            }
            map.entry(key.to_string()).or_default().push(now);
        }
    }

    /// True for the first refusal of a block (within a window), false for the rest.
    pub fn first_refusal(&self, key: &str, now: Micros) -> bool {
        let Ok(mut map) = self.reported.lock() else { return false };
        if map.len() > 100_000 {
            map.retain(|_, t| now - *t < WINDOW);
        }
        match map.get(key) {
            Some(t) if now - t < WINDOW => false,
            _ => {
                map.insert(key.to_string(), now);
                true
            }
        }
    }

    pub fn clear(&self, key: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let t = Throttle::default();
        for i in 0..ACCOUNT_LIMIT as i64 {
            assert_eq!(t.blocked("acct:a", ACCOUNT_LIMIT, i), None);
            t.fail("acct:a", i);
        }
        let wait = t.blocked("acct:a", ACCOUNT_LIMIT, 10).unwrap();
        assert!(wait > 800 && wait <= 900, "{wait}");
        assert_eq!(t.blocked("acct:b", ACCOUNT_LIMIT, 10), None, "other accounts are unaffected");
        assert_eq!(t.blocked("acct:a", ACCOUNT_LIMIT, WINDOW + 10), None, "the window slides");
        t.fail("acct:c", 0);
        t.clear("acct:c");
        assert_eq!(t.blocked("acct:c", 1, 1), None);
        assert!(t.first_refusal("acct:a", 10));
        assert!(!t.first_refusal("acct:a", 11), "later refusals of the same block are not reported");
        assert!(t.first_refusal("acct:a", WINDOW + 11), "a new block is");
    }
}
