//! Sign-in throttling: after repeated failures for one account or from one client address, further
//! attempts are refused with 429 and `Retry-After` until the window passes. Kept in memory per node:
//! a restart forgets it, which only ever lets an attacker start a new window.
//!
//! Two promises hold under attack:
//! - **Memory is fixed.** Counters live in a fixed table of slots chosen by a keyed hash of the
//!   account or address, not in a map that grows with attacker-chosen emails. The table is allocated
//!   zeroed, so untouched slots cost no resident memory. Two keys that share a slot are told apart
//!   by a tag; a slot still blocking one key is never taken over by another (the newcomer is then
//!   counted nowhere, which can only under-throttle it, and the process's random hash key means
//!   nobody can aim at a slot).
//! - **Concurrency cannot overrun the limit.** An attempt is [reserved](Throttle::reserve) — counted
//!   as a failure — before its password is checked; a correct password gives the reservation back.
//!   Forty concurrent attempts at one account therefore get five checks, not forty.

use std::hash::{BuildHasher, Hash};
use std::sync::Mutex;

use trail_model::time::{MICROS_PER_SECOND, Micros};

/// Failures allowed per account within the window.
pub const ACCOUNT_LIMIT: usize = 5;
/// Failures allowed per client address within the window (many users may share an address).
pub const ADDRESS_LIMIT: usize = 20;
/// How far back failures count.
pub const WINDOW: Micros = 15 * 60 * MICROS_PER_SECOND;
/// Slots per table: 2^16 × 24 bytes, about 1.5 MiB at most, whatever is sent.
const SLOTS: usize = 1 << 16;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// High bits of the key's hash; 0 marks an empty slot.
    tag: u32,
    /// Failures (and reserved attempts) in the current window.
    count: u32,
    /// When the current window began.
    since: Micros,
    /// Whether a refusal of the current block was already reported.
    reported: bool,
}

impl Slot {
    fn live(&self, now: Micros) -> bool {
        self.tag != 0 && now - self.since < WINDOW
    }
}

/// One table of counters: per account, or per address.
#[derive(Debug)]
struct Table {
    limit: u32,
    slots: Mutex<Vec<Slot>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Table {
    fn new(limit: usize) -> Self {
        Self {
            limit: u32::try_from(limit).unwrap_or(u32::MAX),
            slots: Mutex::new(vec![Slot::default(); SLOTS]),
            hasher: Default::default(),
        }
    }

    fn locate(&self, key: &str) -> (usize, u32) {
        let mut h = self.hasher.build_hasher();
        key.hash(&mut h);
        let h = std::hash::Hasher::finish(&h);
        ((h as usize) % SLOTS, ((h >> 32) as u32).max(1))
    }

    /// Runs `f` on the key's slot, made current for `now`; `None` when another key holds the slot.
    fn with<T>(&self, key: &str, now: Micros, f: impl FnOnce(&mut Slot, u32) -> T) -> Option<T> {
        let (i, tag) = self.locate(key);
        let mut slots = self.slots.lock().ok()?;
        let slot = &mut slots[i];
        if !slot.live(now) {
            *slot = Slot { tag, count: 0, since: now, reported: false };
        } else if slot.tag != tag {
            if slot.count >= self.limit {
                return None;
            }
            *slot = Slot { tag, count: 0, since: now, reported: false };
        }
        Some(f(slot, self.limit))
    }

    fn retry_after(slot: &Slot, now: Micros) -> u64 {
        ((slot.since + WINDOW - now) / MICROS_PER_SECOND).max(1) as u64
    }
}

/// Why an attempt may not go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Blocked {
    /// Seconds until the window passes.
    pub retry_after: u64,
    /// True for the first refusal of this block (reported in the account's orgs once, so refused
    /// attempts cannot grow an org's log without limit).
    pub first: bool,
}

#[derive(Debug)]
pub struct Throttle {
    accounts: Table,
    addresses: Table,
}

impl Default for Throttle {
    fn default() -> Self {
        Self { accounts: Table::new(ACCOUNT_LIMIT), addresses: Table::new(ADDRESS_LIMIT) }
    }
}

/// An attempt counted against its account and address until [`Throttle::succeeded`] gives it back.
#[derive(Debug, Clone)]
#[must_use = "a reservation is a counted failure unless given back on success"]
pub struct Reservation {
    account: String,
    address: Option<String>,
    now: Micros,
}

impl Throttle {
    /// Counts an attempt for `account` (an email, lowercased) from `address` before it is checked,
    /// or says how long to wait when either has used up its failures.
    pub fn reserve(
        &self,
        account: &str,
        address: Option<std::net::IpAddr>,
        now: Micros,
    ) -> Result<Reservation, Blocked> {
        let address = address.map(address_key);
        // Checked and counted under one lock each: concurrent attempts cannot all pass the check
        // before any of them is counted.
        let take = |t: &Table, key: &str| {
            t.with(key, now, |s, limit| {
                if s.count >= limit {
                    let first = !s.reported;
                    s.reported = true;
                    Err(Blocked { retry_after: Table::retry_after(s, now), first })
                } else {
                    s.count += 1;
                    Ok(())
                }
            })
            .unwrap_or(Ok(()))
        };
        take(&self.accounts, account)?;
        if let Some(a) = &address
            && let Err(blocked) = take(&self.addresses, a)
        {
            // The account's count is given back: the attempt is not made.
            self.accounts.with(account, now, |s, _| s.count = s.count.saturating_sub(1));
            return Err(blocked);
        }
        Ok(Reservation { account: account.to_string(), address, now })
    }

    /// The attempt was right: the account's failures are forgotten and the address's reserved
    /// attempt given back.
    pub fn succeeded(&self, r: Reservation) {
        self.accounts.with(&r.account, r.now, |s, _| {
            s.count = 0;
            s.reported = false;
        });
        self.release_address(&r);
    }

    /// The attempt never ran (no password check could be had): nothing is counted.
    pub fn cancelled(&self, r: Reservation) {
        self.accounts.with(&r.account, r.now, |s, _| s.count = s.count.saturating_sub(1));
        self.release_address(&r);
    }

    fn release_address(&self, r: &Reservation) {
        if let Some(a) = &r.address {
            self.addresses.with(a, r.now, |s, _| s.count = s.count.saturating_sub(1));
        }
    }
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (one subscriber's whole range,
/// so rotating through it gains nothing).
fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Option<std::net::IpAddr> = Some(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));

    #[test]
    fn blocks_after_the_limit_until_the_window_passes() {
        let t = Throttle::default();
        for i in 0..ACCOUNT_LIMIT as i64 {
            drop(t.reserve("a", None, i).unwrap());
        }
        let blocked = t.reserve("a", None, 10).unwrap_err();
        assert!(blocked.retry_after > 800 && blocked.retry_after <= 900, "{blocked:?}");
        assert!(blocked.first);
        assert!(!t.reserve("a", None, 11).unwrap_err().first, "later refusals are not reported again");
        assert!(t.reserve("b", None, 10).is_ok(), "other accounts are unaffected");
        assert!(t.reserve("a", None, WINDOW + 10).is_ok(), "the window passes");
    }

    #[test]
    fn reservations_count_before_the_check_and_success_gives_them_back() {
        let t = Throttle::default();
        let held: Vec<_> = (0..ACCOUNT_LIMIT).map(|_| t.reserve("a", IP, 1).unwrap()).collect();
        assert!(t.reserve("a", IP, 1).is_err(), "five attempts in flight use up the account's limit");
        t.succeeded(held[0].clone());
        for _ in 0..ACCOUNT_LIMIT {
            drop(t.reserve("a", IP, 2).unwrap());
        }
        assert!(t.reserve("a", IP, 2).is_err());
        let c = t.reserve("c", IP, 3).unwrap();
        t.cancelled(c);
        for _ in 0..ACCOUNT_LIMIT {
            drop(t.reserve("c", None, 3).unwrap());
        }
        assert!(t.reserve("c", None, 3).is_err(), "a cancelled attempt is not counted");
    }

    #[test]
    fn the_address_limit_holds_across_accounts() {
        let t = Throttle::default();
        for i in 0..ADDRESS_LIMIT {
            drop(t.reserve(&format!("user{i}"), IP, 1).unwrap());
        }
        assert!(t.reserve("someone-else", IP, 1).is_err());
        assert!(t.reserve("someone-else", None, 1).is_ok());
    }

    #[test]
    fn ipv6_addresses_count_by_their_64() {
        let a: std::net::IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key("2001:db8:1:3::1".parse().unwrap()));
    }
}
