//! Failed-attempt counting and lockout, per user **and client address**.
//!
//! A user is locked out only from the address (IPv4, or IPv6 /64) the
//! failures came from: a stranger guessing `admin`'s password from elsewhere
//! locks out only themselves, never the real admin. An admin's reset clears
//! the user's locks from every address.
//!
//! Kept in memory only and bounded: at most [`MAX_USERS`] entries. When full,
//! expired locks and stale counters go first, then the counters that failed
//! longest ago; locked entries are evicted only when nothing else is left.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::clock::SharedClock;

/// How many (user, address) failure states are kept at most.
pub const MAX_USERS: usize = 100_000;

/// Failure counters without a new failure for this long are forgotten (or
/// `lockout_seconds`, when that is longer).
pub(crate) const MIN_COUNTER_TTL_MS: u64 = 15 * 60 * 1000;

pub use crate::store::{FailureOutcome, Locked};

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// `Some(u64::MAX)`: until cleared.
    locked_until: Option<u64>,
    last_failure: u64,
}

impl Entry {
    fn lock(&self, now: u64) -> Option<Locked> {
        match self.locked_until {
            Some(u64::MAX) => Some(Locked { until: None }),
            Some(t) if t > now => Some(Locked { until: Some(t) }),
            _ => None,
        }
    }
}

/// Whose failures an entry counts: the user name (lower case) and the
/// client's address as throttling keys it (IPv6 by /64).
type Key = (String, IpAddr);

pub struct Lockout {
    users: Mutex<HashMap<Key, Entry>>,
    len: AtomicUsize,
    clock: SharedClock,
    cap: usize,
}

pub(crate) fn key(user: &str, ip: IpAddr) -> Key {
    (user.to_lowercase(), crate::net::throttle_key(ip))
}

impl Lockout {
    pub fn new(clock: SharedClock) -> Lockout {
        Lockout::with_capacity(clock, MAX_USERS)
    }

    pub fn with_capacity(clock: SharedClock, cap: usize) -> Lockout {
        Lockout {
            users: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            clock,
            cap: cap.max(1),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many (user, address) pairs have failure state (bounded by the capacity).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Is `user` locked out from `ip` now? Costs nothing while nobody has failed.
    pub fn locked(&self, user: &str, ip: IpAddr) -> Option<Locked> {
        if self.is_empty() {
            return None;
        }
        let now = self.clock.now_ms();
        let map = self.map();
        map.get(&key(user, ip)).and_then(|e| e.lock(now))
    }

    /// Counts a failed attempt of `user` from `ip`.
    pub fn failure(
        &self,
        user: &str,
        ip: IpAddr,
        max_attempts: u32,
        lockout_seconds: u64,
    ) -> FailureOutcome {
        if max_attempts == 0 {
            return FailureOutcome::Ignored;
        }
        let now = self.clock.now_ms();
        let key = key(user, ip);
        let mut map = self.map();
        if !map.contains_key(&key) && map.len() >= self.cap {
            self.make_room(&mut map, now, lockout_seconds);
        }
        let entry = map.entry(key).or_insert(Entry {
            failures: 0,
            locked_until: None,
            last_failure: now,
        });
        if let Some(locked) = entry.lock(now) {
            entry.last_failure = now;
            self.len.store(map.len(), Ordering::Relaxed);
            return FailureOutcome::StillLocked(locked);
        }
        if entry.locked_until.is_some() {
            // A lock that has run out starts the count afresh.
            entry.locked_until = None;
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last_failure = now;
        let outcome = if entry.failures >= max_attempts {
            let until = if lockout_seconds == 0 {
                u64::MAX
            } else {
                now.saturating_add(lockout_seconds.saturating_mul(1000))
            };
            entry.locked_until = Some(until);
            FailureOutcome::LockedNow(Locked {
                until: (until != u64::MAX).then_some(until),
            })
        } else {
            FailureOutcome::Counted(entry.failures)
        };
        self.len.store(map.len(), Ordering::Relaxed);
        outcome
    }

    /// A confirmed login of `user` from `ip` resets that counter (not a lock).
    pub fn success(&self, user: &str, ip: IpAddr) {
        if self.is_empty() {
            return;
        }
        let now = self.clock.now_ms();
        let mut map = self.map();
        let key = key(user, ip);
        if map.get(&key).is_some_and(|e| e.lock(now).is_none()) {
            map.remove(&key);
            self.len.store(map.len(), Ordering::Relaxed);
        }
    }

    /// Clears a user's counters and locks from every address (the admin
    /// endpoint). True when there was one.
    pub fn clear(&self, user: &str) -> bool {
        let user = user.to_lowercase();
        let mut map = self.map();
        let before = map.len();
        map.retain(|(name, _), _| *name != user);
        let removed = map.len() < before;
        self.len.store(map.len(), Ordering::Relaxed);
        removed
    }

    /// Drops expired locks and stale counters.
    pub fn sweep(&self, lockout_seconds: u64) {
        let now = self.clock.now_ms();
        let mut map = self.map();
        Self::drop_stale(&mut map, now, lockout_seconds);
        self.len.store(map.len(), Ordering::Relaxed);
    }

    fn drop_stale(map: &mut HashMap<Key, Entry>, now: u64, lockout_seconds: u64) {
        let ttl = MIN_COUNTER_TTL_MS.max(lockout_seconds.saturating_mul(1000));
        map.retain(|_, e| match e.locked_until {
            Some(u64::MAX) => true,
            Some(t) => t > now,
            None => now.saturating_sub(e.last_failure) < ttl,
        });
    }

    fn make_room(&self, map: &mut HashMap<Key, Entry>, now: u64, lockout_seconds: u64) {
        Self::drop_stale(map, now, lockout_seconds);
        if map.len() < self.cap {
            return;
        }
        // Still full: forget a tenth, counters before locks, oldest first.
        let mut by_age: Vec<(bool, u64, Key)> = map
            .iter()
            .map(|(k, e)| (e.lock(now).is_some(), e.last_failure, k.clone()))
            .collect();
        by_age.sort_unstable();
        let evict = (self.cap / 10).max(1);
        for (_, _, key) in by_age.into_iter().take(evict) {
            map.remove(&key);
        }
        tracing::warn!(
            capacity = self.cap,
            evicted = evict,
            "failed-login table full: oldest entries forgotten"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::sync::Arc;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 7));

    #[test]
    fn locks_after_max_and_expires() {
        let clock = ManualClock::new(1_000_000);
        let l = Lockout::new(clock.clone());
        assert_eq!(l.failure("Alice", HOME, 3, 60), FailureOutcome::Counted(1));
        assert_eq!(l.failure("alice", HOME, 3, 60), FailureOutcome::Counted(2));
        assert!(matches!(
            l.failure("ALICE", HOME, 3, 60),
            FailureOutcome::LockedNow(_)
        ));
        let lock = l.locked("alice", HOME).unwrap();
        assert_eq!(lock.retry_after_secs(clock.now_ms()), Some(60));
        clock.advance_ms(59_999);
        assert!(l.locked("alice", HOME).is_some());
        clock.advance_ms(1);
        assert!(l.locked("alice", HOME).is_none());
        assert_eq!(
            l.failure("alice", HOME, 3, 60),
            FailureOutcome::Counted(1),
            "count starts afresh"
        );
    }

    #[test]
    fn success_resets_the_counter_but_not_a_lock() {
        let clock = ManualClock::new(0);
        let l = Lockout::new(clock.clone());
        l.failure("bob", HOME, 3, 0);
        l.failure("bob", HOME, 3, 0);
        l.success("bob", HOME);
        assert_eq!(l.failure("bob", HOME, 3, 0), FailureOutcome::Counted(1));
        l.failure("bob", HOME, 3, 0);
        l.failure("bob", HOME, 3, 0);
        l.success("bob", HOME);
        assert_eq!(
            l.locked("bob", HOME),
            Some(Locked { until: None }),
            "0 = until an admin clears it"
        );
        assert!(l.clear("BOB"));
        assert!(l.locked("bob", HOME).is_none());
    }

    #[test]
    fn a_lock_holds_for_its_address_only_and_a_reset_clears_every_address() {
        let clock = ManualClock::new(0);
        let l = Lockout::new(clock.clone());
        for _ in 0..3 {
            l.failure("admin", ELSEWHERE, 3, 900);
        }
        assert!(l.locked("admin", ELSEWHERE).is_some());
        assert!(
            l.locked("admin", HOME).is_none(),
            "not from the real admin's address"
        );
        assert_eq!(l.failure("admin", HOME, 3, 900), FailureOutcome::Counted(1));
        // IPv6 neighbours in one /64 share a counter.
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        for _ in 0..3 {
            l.failure("bob", a, 3, 900);
        }
        assert!(l.locked("bob", b).is_some());
        assert!(l.clear("ADMIN"));
        assert!(l.locked("admin", ELSEWHERE).is_none());
        assert!(
            l.locked("bob", a).is_some(),
            "only the named user is cleared"
        );
    }

    #[test]
    fn zero_attempts_means_off() {
        let l = Lockout::new(ManualClock::new(0));
        for _ in 0..10 {
            assert_eq!(l.failure("x", HOME, 0, 60), FailureOutcome::Ignored);
        }
        assert!(l.locked("x", HOME).is_none());
    }

    #[test]
    fn a_flood_of_distinct_users_stays_bounded() {
        let clock = ManualClock::new(0);
        let l = Lockout::with_capacity(clock.clone(), 1000);
        l.failure("victim", HOME, 1, 0);
        for i in 0..1_000_000u32 {
            l.failure(&format!("u{i}"), HOME, 3, 900);
            if i % 1000 == 0 {
                clock.advance_ms(1);
            }
        }
        assert!(l.len() <= 1000, "len {}", l.len());
        assert!(
            l.locked("victim", HOME).is_some(),
            "locks outlive counters when evicting"
        );
    }

    #[test]
    fn stale_counters_are_swept() {
        let clock = ManualClock::new(0);
        let l = Lockout::new(Arc::clone(&clock) as SharedClock);
        l.failure("a", HOME, 3, 60);
        clock.advance_ms(MIN_COUNTER_TTL_MS);
        l.sweep(60);
        assert!(l.is_empty());
    }
}
