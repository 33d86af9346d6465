//! Login throttling. Per account name: after `MAX_FAILURES` failed logins within
//! `FAILURE_WINDOW`, the name is locked (failures live in the store, so every process sees
//! them). Per client address: at most `ATTEMPTS_PER_MINUTE` login attempts a minute, counted
//! in memory, so a flood cannot keep the CPU busy with argon2. Both rules take `now`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};

/// Failed logins of one name that lock it. Five leaves room for typos and stops guessing.
pub const MAX_FAILURES: usize = 5;
/// How far back failures count; a locked name opens again when its oldest counted failure
/// is this old.
pub const FAILURE_WINDOW: TimeDelta = TimeDelta::minutes(15);
/// Login attempts one address may make per minute: far above what a person types, far below
/// what keeps a core busy (an argon2 check takes tens of milliseconds).
pub const ATTEMPTS_PER_MINUTE: u32 = 20;
const ADDRESS_WINDOW: Duration = Duration::from_secs(60);
/// Addresses tracked at once. Beyond this (a flood from many addresses), attempts from new
/// addresses are refused until old windows end, which keeps memory and CPU bounded.
const MAX_TRACKED_ADDRESSES: usize = 10_000;
/// Names are stored for counting; longer ones are cut (no account has such a name).
const MAX_NAME_KEY: usize = 200;

/// The name failures are counted under: the name as typed, cut to a bounded length.
pub fn name_key(name: &str) -> &str {
    if name.len() <= MAX_NAME_KEY {
        return name;
    }
    let mut cut = MAX_NAME_KEY;
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    &name[..cut]
}

/// Until when a name is locked, given its failures inside the window (newest first).
pub fn locked_until(
    recent_failures: &[DateTime<Utc>],
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    // Once the oldest of the last `MAX_FAILURES` failures leaves the window, fewer remain.
    let oldest_counted = recent_failures.get(MAX_FAILURES - 1)?;
    let until = *oldest_counted + FAILURE_WINDOW;
    (until > now).then_some(until)
}

/// What the address limit says about one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed,
    /// Too many attempts; `first` is set on the first refusal of the window (to log it once).
    Refused {
        retry_after: Duration,
        first: bool,
    },
}

/// Attempts per address in fixed one-minute windows.
#[derive(Debug, Default)]
pub struct AddressLimiter {
    windows: Mutex<HashMap<IpAddr, Window>>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    attempts: u32,
}

/// The key an address is counted under: IPv6 clients by their /64, which one host usually
/// owns whole; requests without a peer address (in-process calls) share one key.
fn address_key(address: Option<IpAddr>) -> IpAddr {
    match address {
        None => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        Some(v4) => v4,
    }
}

impl AddressLimiter {
    /// Counts an attempt from `address` at `now` and says whether it may go on.
    pub fn admit(&self, address: Option<IpAddr>, now: Instant) -> Admission {
        let key = address_key(address);
        // A poisoned lock only means another request panicked mid-update; the counts are
        // still usable.
        let mut windows = self.windows.lock().unwrap_or_else(|p| p.into_inner());
        let expired = |w: &Window| now.saturating_duration_since(w.started) >= ADDRESS_WINDOW;
        if !windows.contains_key(&key) && windows.len() >= MAX_TRACKED_ADDRESSES {
            windows.retain(|_, w| !expired(w));
            if windows.len() >= MAX_TRACKED_ADDRESSES {
                let retry_after = windows
                    .values()
                    .map(|w| {
                        ADDRESS_WINDOW.saturating_sub(now.saturating_duration_since(w.started))
                    })
                    .min()
                    .unwrap_or(ADDRESS_WINDOW);
                return Admission::Refused {
                    retry_after,
                    first: false,
                };
            }
        }
        let window = windows.entry(key).or_insert(Window {
            started: now,
            attempts: 0,
        });
        if expired(window) {
            *window = Window {
                started: now,
                attempts: 0,
            };
        }
        if window.attempts >= ATTEMPTS_PER_MINUTE {
            let first = window.attempts == ATTEMPTS_PER_MINUTE;
            window.attempts = window.attempts.saturating_add(1);
            return Admission::Refused {
                retry_after: ADDRESS_WINDOW
                    .saturating_sub(now.saturating_duration_since(window.started)),
                first,
            };
        }
        window.attempts += 1;
        Admission::Allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes_ago: i64, now: DateTime<Utc>) -> DateTime<Utc> {
        now - TimeDelta::minutes(minutes_ago)
    }

    #[test]
    fn a_name_locks_at_the_fifth_failure_in_the_window_and_opens_as_it_slides() {
        let now = Utc::now();
        assert_eq!(locked_until(&[], now), None);
        let four: Vec<_> = [1, 2, 3, 4].iter().map(|m| at(*m, now)).collect();
        assert_eq!(locked_until(&four, now), None, "four failures leave a try");
        let five: Vec<_> = [1, 2, 3, 4, 10].iter().map(|m| at(*m, now)).collect();
        assert_eq!(
            locked_until(&five, now),
            Some(at(10, now) + FAILURE_WINDOW),
            "locked until the oldest counted failure leaves the window"
        );
        assert_eq!(
            locked_until(&five, at(10, now) + FAILURE_WINDOW),
            None,
            "open again once it has"
        );
        // More failures than the limit: the fifth newest decides, not the oldest.
        let six: Vec<_> = [1, 2, 3, 4, 5, 14].iter().map(|m| at(*m, now)).collect();
        assert_eq!(locked_until(&six, now), Some(at(5, now) + FAILURE_WINDOW));
    }

    #[test]
    fn long_names_are_cut_on_a_character_boundary() {
        assert_eq!(name_key("ann"), "ann");
        let long = "é".repeat(150);
        let key = name_key(&long);
        assert!(key.len() <= MAX_NAME_KEY && long.starts_with(key));
        assert_eq!(key.len(), MAX_NAME_KEY);
    }

    #[test]
    fn an_address_gets_a_limited_number_of_attempts_per_minute() {
        let limiter = AddressLimiter::default();
        let start = Instant::now();
        let one: IpAddr = "192.0.2.1".parse().expect("address");
        let other: IpAddr = "192.0.2.2".parse().expect("address");
        for _ in 0..ATTEMPTS_PER_MINUTE {
            assert_eq!(limiter.admit(Some(one), start), Admission::Allowed);
        }
        let later = start + Duration::from_secs(45);
        assert_eq!(
            limiter.admit(Some(one), later),
            Admission::Refused {
                retry_after: Duration::from_secs(15),
                first: true
            }
        );
        assert!(matches!(
            limiter.admit(Some(one), later),
            Admission::Refused { first: false, .. }
        ));
        assert_eq!(
            limiter.admit(Some(other), later),
            Admission::Allowed,
            "another address is unaffected"
        );
        assert_eq!(
            limiter.admit(Some(one), start + ADDRESS_WINDOW),
            Admission::Allowed,
            "a new minute, a new count"
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert_eq!(address_key(Some(a)), address_key(Some(b)));
        assert_ne!(address_key(Some(a)), address_key(Some(c)));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("address");
        let v4: IpAddr = "192.0.2.1".parse().expect("address");
        assert_eq!(address_key(Some(mapped)), v4);
    }

    #[test]
    fn the_tracked_addresses_are_bounded() {
        let limiter = AddressLimiter::default();
        let start = Instant::now();
        for i in 0..MAX_TRACKED_ADDRESSES {
            let address = IpAddr::V4(std::net::Ipv4Addr::from(i as u32 + 1));
            assert_eq!(limiter.admit(Some(address), start), Admission::Allowed);
        }
        let newcomer: IpAddr = "198.51.100.7".parse().expect("address");
        assert!(matches!(
            limiter.admit(Some(newcomer), start),
            Admission::Refused { .. }
        ));
        assert_eq!(
            limiter.admit(Some(newcomer), start + ADDRESS_WINDOW),
            Admission::Allowed,
            "ended windows make room"
        );
        let tracked = limiter
            .windows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        assert_eq!(tracked, 1, "expired windows were dropped");
    }
}
