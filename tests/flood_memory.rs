//! A flood of 1,000,000 distinct usernames and 1,000,000 distinct client
//! addresses, all failing, leaves the failure bookkeeping bounded: entry
//! counts stay at their caps and resident memory grows by a bounded amount.
//! (Its own test binary, so no other test shares the process's memory.)
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv6Addr};

use tokengate::auth::lockout::{Lockout, MAX_USERS};
use tokengate::auth::throttle::{IpThrottle, MAX_IPS};
use tokengate::clock::ManualClock;

fn rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_million_distinct_failing_users_and_addresses_stay_bounded() {
    let clock = ManualClock::new(1_796_000_000_000);
    let lockout = Lockout::new(clock.clone());
    let throttle = IpThrottle::new(30, clock.clone());
    let before = rss_kb();
    for i in 0..1_000_000u32 {
        lockout.failure(
            &format!("attacker-{i:07}"),
            IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            3,
            900,
        );
        // Distinct /64s, so IPv6 keying does not fold them together.
        let ip = IpAddr::V6(Ipv6Addr::new(
            0x2001,
            0xdb8,
            (i >> 16) as u16,
            i as u16,
            0,
            0,
            0,
            1,
        ));
        let _ = throttle.failure(ip);
        if i % 10_000 == 0 {
            clock.advance_ms(100);
        }
    }
    let growth_mb = rss_kb().saturating_sub(before) / 1024;
    println!(
        "after 1,000,000 distinct users and addresses: {} users and {} addresses tracked, RSS grew {growth_mb} MB",
        lockout.len(),
        throttle.tracked()
    );
    assert!(lockout.len() <= MAX_USERS);
    assert!(throttle.tracked() <= 2 * MAX_IPS);
    assert!(growth_mb < 96, "RSS grew {growth_mb} MB");
}
