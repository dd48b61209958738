//! Per-client-IP throttling of failed attempts, with governor.
//!
//! Each failure takes one cell of a per-IP GCRA quota of
//! `failures_per_ip_per_minute`. When a failure finds the quota empty, the IP
//! is throttled — every request from it gets 429 — until a cell refills.
//! Successful requests never create state, and the state is bounded: at most
//! [`MAX_IPS`] tracked addresses; beyond that, failures from new addresses are
//! throttled outright instead of tracked.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use dashmap::DashMap;
use governor::clock::Clock as _;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::clock::{GovernorClock, SharedClock};
use crate::net::throttle_key;

pub const MAX_IPS: usize = 100_000;

type Limiter = RateLimiter<IpAddr, DashMapStateStore<IpAddr>, GovernorClock, NoOpMiddleware<Nanos>>;

pub struct IpThrottle {
    per_minute: u32,
    limiter: Option<Limiter>,
    gclock: GovernorClock,
    /// Throttled keys → until (epoch ms).
    blocked: DashMap<IpAddr, u64>,
    blocked_len: AtomicUsize,
    /// When the full limiter was last pruned (epoch ms); pruning is O(n), so
    /// at most once a second.
    last_prune: AtomicU64,
    clock: SharedClock,
    cap: usize,
}

impl IpThrottle {
    /// `per_minute = 0` turns throttling off.
    pub fn new(per_minute: u32, clock: SharedClock) -> IpThrottle {
        IpThrottle::with_capacity(per_minute, clock, MAX_IPS)
    }

    pub fn with_capacity(per_minute: u32, clock: SharedClock, cap: usize) -> IpThrottle {
        let gclock = GovernorClock(clock.clone());
        let limiter = NonZeroU32::new(per_minute)
            .map(|n| RateLimiter::dashmap_with_clock(Quota::per_minute(n), gclock.clone()));
        IpThrottle {
            per_minute,
            limiter,
            gclock,
            blocked: DashMap::new(),
            blocked_len: AtomicUsize::new(0),
            last_prune: AtomicU64::new(0),
            clock,
            cap: cap.max(1),
        }
    }

    /// The quota: failed attempts per minute (0 = off).
    pub fn per_minute(&self) -> u32 {
        self.per_minute
    }

    /// `Err(retry_after_secs)` while `ip` is throttled. Costs one atomic load
    /// while nobody is throttled.
    pub fn check(&self, ip: IpAddr) -> Result<(), u64> {
        if self.blocked_len.load(Ordering::Relaxed) == 0 {
            return Ok(());
        }
        let key = throttle_key(ip);
        let now = self.clock.now_ms();
        match self.blocked.get(&key).map(|u| *u) {
            Some(until) if until > now => Err(until.saturating_sub(now).div_ceil(1000).max(1)),
            Some(_) => {
                self.blocked.remove_if(&key, |_, until| *until <= now);
                self.blocked_len
                    .store(self.blocked.len(), Ordering::Relaxed);
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Counts a failed attempt. `Err(retry_after_secs)` when this one went
    /// over the quota: the IP is throttled from now on.
    pub fn failure(&self, ip: IpAddr) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        let key = throttle_key(ip);
        if limiter.len() >= self.cap {
            let now = self.clock.now_ms();
            let last = self.last_prune.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= 1000
                && self
                    .last_prune
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                limiter.retain_recent();
            }
            if limiter.len() >= self.cap {
                // A flood from more addresses than we track: refuse, don't remember.
                return Err(60);
            }
        }
        match limiter.check_key(&key) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.gclock.now());
                let wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
                let now = self.clock.now_ms();
                if self.blocked.len() < self.cap {
                    self.blocked.insert(key, now.saturating_add(wait_ms));
                    self.blocked_len
                        .store(self.blocked.len(), Ordering::Relaxed);
                }
                Err(wait_ms.div_ceil(1000).max(1))
            }
        }
    }

    /// Drops state that no longer matters.
    pub fn sweep(&self) {
        let now = self.clock.now_ms();
        self.blocked.retain(|_, until| *until > now);
        self.blocked_len
            .store(self.blocked.len(), Ordering::Relaxed);
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Tracked addresses (for tests and metrics).
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len()) + self.blocked.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn throttles_after_quota_and_recovers() {
        let clock = ManualClock::new(1_000_000);
        let t = IpThrottle::new(3, clock.clone());
        let a = ip("192.0.2.1");
        for _ in 0..3 {
            assert_eq!(t.failure(a), Ok(()));
        }
        assert_eq!(t.check(a), Ok(()));
        let retry = t.failure(a).unwrap_err();
        assert_eq!(retry, 20, "one cell refills every 60/3 s");
        assert_eq!(t.check(a), Err(20));
        assert_eq!(
            t.check(ip("192.0.2.2")),
            Ok(()),
            "other clients are not affected"
        );
        clock.advance_ms(20_000);
        assert_eq!(t.check(a), Ok(()));
        assert_eq!(t.failure(a), Ok(()), "one more attempt after a refill");
    }

    #[test]
    fn ipv6_neighbours_share_a_quota() {
        let t = IpThrottle::new(1, ManualClock::new(0));
        assert_eq!(t.failure(ip("2001:db8::1")), Ok(()));
        assert!(t.failure(ip("2001:db8::2")).is_err());
        assert!(t.check(ip("2001:db8::ffff")).is_err());
        assert!(t.check(ip("2001:db8:0:1::1")).is_ok());
    }

    #[test]
    fn zero_means_off() {
        let t = IpThrottle::new(0, ManualClock::new(0));
        for _ in 0..100 {
            assert_eq!(t.failure(ip("192.0.2.1")), Ok(()));
        }
    }

    #[test]
    fn a_flood_of_distinct_ips_stays_bounded() {
        let clock = ManualClock::new(0);
        let t = IpThrottle::with_capacity(30, clock.clone(), 10_000);
        for i in 0..1_000_000u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = t.failure(addr);
        }
        assert!(t.tracked() <= 20_000, "tracked {}", t.tracked());
    }
}
