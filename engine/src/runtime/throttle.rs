//! Login throttling shared by every shard and protocol.
//!
//! Failed logins (SMTP AUTH, IMAP LOGIN/AUTHENTICATE, POP3 USER/PASS/AUTH)
//! are counted per client address (an IPv6 address by its /64) and per
//! account. Each key has one owner shard (`Key::owner`), whose [`Table`]
//! holds its count; other shards reach it over the mesh
//! (`ShardMsg::Throttle`), so the state has no lock and no copy.
//!
//! What the counts decide ([`Policy`]):
//! * every failure is answered after a delay that doubles with the count
//!   (`delay_base`, up to `delay_max`), as Dovecot's auth penalty does;
//! * an address with `ban_after` failures within `window` is banned for
//!   `ban`: its logins are refused before any password check;
//! * an account with `account_lock_after` failures within `window` refuses
//!   logins from every address that has failed at least once, and never
//!   from an address that has not, so a guessing attack does not lock the
//!   owner out;
//! * a successful login forgets the address's failures.
//!
//! Counts expire `window` after the first failure counted; a table keeps
//! at most `TABLE_MAX` keys (the oldest go first when it is full), so an
//! attacker with many addresses costs bounded memory.
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::time::Duration;

/// Keys one shard's table holds at most.
pub const TABLE_MAX: usize = 100_000;

/// What is counted: a client address or an account.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// IPv4 address, or the first 64 bits of an IPv6 address (a /64 is
    /// what one IPv6 client usually has; counting single addresses would
    /// let it rotate through 2^64 of them).
    Addr(IpAddr),
    /// Canonical account address (lowercase).
    Account(String),
}

impl Key {
    pub fn addr(ip: IpAddr) -> Key {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                Key::Addr(IpAddr::V6(std::net::Ipv6Addr::new(
                    s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                )))
            }
            v4 => Key::Addr(v4),
        }
    }

    pub fn account(name: &str) -> Key {
        Key::Account(name.to_ascii_lowercase())
    }

    /// The shard that owns an address key (accounts belong to the shard
    /// owning the account, chosen by the caller).
    pub fn addr_owner(&self, cores: usize) -> usize {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.hash(&mut h);
        (h.finish() % cores.max(1) as u64) as usize
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Key::Addr(IpAddr::V6(a)) => write!(f, "{a}/64"),
            Key::Addr(a) => write!(f, "{a}"),
            Key::Account(a) => write!(f, "{a}"),
        }
    }
}

/// The throttle's settings (`[auth_throttle]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub delay_base: Duration,
    pub delay_max: Duration,
    pub ban_after: u32,
    pub ban: Duration,
    pub window: Duration,
    pub account_lock_after: u32,
}

impl Policy {
    /// The delay before answering failure number `n` (1-based).
    pub fn delay(&self, n: u32) -> Duration {
        if n == 0 {
            return Duration::ZERO;
        }
        let factor = 1u32 << (n - 1).min(16);
        self.delay_base.saturating_mul(factor).min(self.delay_max)
    }
}

/// One key's state, as its owner reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    /// Failures within the window.
    pub failures: u32,
    /// Unix time the ban ends, if banned now.
    pub banned_until: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    /// When the window of the counted failures started (unix seconds).
    since: u64,
    /// Last failure (unix seconds), for eviction.
    last: u64,
    banned_until: u64,
}

/// What a shard asks a key's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Report the status.
    Peek,
    /// Count a failure, then report.
    Fail,
    /// Forget the key (a successful login, or `ringmail ban remove`).
    Clear,
}

/// One shard's counts for the keys it owns.
#[derive(Debug, Default)]
pub struct Table {
    entries: HashMap<Key, Entry>,
}

impl Table {
    /// Apply `op` to `key` at unix time `now`.
    pub fn apply(&mut self, key: &Key, op: Op, now: u64, policy: &Policy) -> Status {
        match op {
            Op::Clear => {
                self.entries.remove(key);
                Status::default()
            }
            Op::Peek => self.status(key, now, policy),
            Op::Fail => self.fail(key, now, policy),
        }
    }

    fn status(&mut self, key: &Key, now: u64, policy: &Policy) -> Status {
        let Some(e) = self.entries.get(key) else {
            return Status::default();
        };
        let banned = (e.banned_until > now).then_some(e.banned_until);
        if banned.is_none() && now.saturating_sub(e.since) >= policy.window.as_secs() {
            self.entries.remove(key);
            return Status::default();
        }
        Status {
            failures: e.failures,
            banned_until: banned,
        }
    }

    fn fail(&mut self, key: &Key, now: u64, policy: &Policy) -> Status {
        let current = self.status(key, now, policy);
        if current.failures == 0
            && !self.entries.contains_key(key)
            && self.entries.len() >= TABLE_MAX
        {
            self.evict();
        }
        let e = self.entries.entry(key.clone()).or_insert(Entry {
            failures: 0,
            since: now,
            last: now,
            banned_until: 0,
        });
        e.failures = e.failures.saturating_add(1);
        e.last = now;
        if matches!(key, Key::Addr(_)) && e.failures >= policy.ban_after && e.banned_until <= now {
            e.banned_until = now + policy.ban.as_secs();
        }
        Status {
            failures: e.failures,
            banned_until: (e.banned_until > now).then_some(e.banned_until),
        }
    }

    /// Drop the tenth of the keys that failed longest ago (none banned
    /// unless everything is).
    fn evict(&mut self) {
        let mut lasts: Vec<(bool, u64)> = self
            .entries
            .values()
            .map(|e| (e.banned_until > 0, e.last))
            .collect();
        lasts.sort_unstable();
        let cut = lasts[lasts.len() / 10];
        self.entries
            .retain(|_, e| (e.banned_until > 0, e.last) > cut);
    }

    /// Addresses banned now, with the unix time each ban ends.
    pub fn bans(&self, now: u64) -> Vec<(Key, u64)> {
        let mut v: Vec<(Key, u64)> = self
            .entries
            .iter()
            .filter(|(_, e)| e.banned_until > now)
            .map(|(k, e)| (k.clone(), e.banned_until))
            .collect();
        v.sort();
        v
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            delay_base: Duration::from_millis(500),
            delay_max: Duration::from_secs(15),
            ban_after: 3,
            ban: Duration::from_secs(600),
            window: Duration::from_secs(3600),
            account_lock_after: 5,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap() {
        let p = policy();
        assert_eq!(p.delay(0), Duration::ZERO);
        assert_eq!(p.delay(1), Duration::from_millis(500));
        assert_eq!(p.delay(2), Duration::from_secs(1));
        assert_eq!(p.delay(4), Duration::from_secs(4));
        assert_eq!(p.delay(6), Duration::from_secs(15));
        assert_eq!(p.delay(u32::MAX), Duration::from_secs(15));
    }

    #[test]
    fn an_address_is_banned_after_its_failures_and_the_ban_ends() {
        let p = policy();
        let mut t = Table::default();
        let a = Key::addr("192.0.2.1".parse().unwrap());
        assert_eq!(
            t.apply(&a, Op::Fail, 100, &p),
            Status {
                failures: 1,
                banned_until: None
            }
        );
        t.apply(&a, Op::Fail, 101, &p);
        assert_eq!(t.apply(&a, Op::Fail, 102, &p).banned_until, Some(702));
        assert_eq!(t.apply(&a, Op::Peek, 500, &p).banned_until, Some(702));
        assert_eq!(t.bans(500), vec![(a.clone(), 702)]);
        // The ban is over; the failures stay counted within the window.
        assert_eq!(
            t.apply(&a, Op::Peek, 702, &p),
            Status {
                failures: 3,
                banned_until: None
            }
        );
        // The window is over: forgotten.
        assert_eq!(t.apply(&a, Op::Peek, 100 + 3600, &p), Status::default());
        assert!(t.is_empty());
    }

    #[test]
    fn accounts_are_counted_but_never_banned_and_clear_forgets() {
        let p = policy();
        let mut t = Table::default();
        let acct = Key::account("Alice@Example.test");
        assert_eq!(acct, Key::Account("alice@example.test".into()));
        for i in 0..10 {
            t.apply(&acct, Op::Fail, 100 + i, &p);
        }
        assert_eq!(
            t.apply(&acct, Op::Peek, 200, &p),
            Status {
                failures: 10,
                banned_until: None
            }
        );
        t.apply(&acct, Op::Clear, 200, &p);
        assert_eq!(t.apply(&acct, Op::Peek, 200, &p), Status::default());
    }

    #[test]
    fn ipv6_counts_by_its_64_and_ipv4_mapped_as_ipv4() {
        let a = Key::addr("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = Key::addr("2001:db8:1:2:bbbb::2".parse().unwrap());
        let c = Key::addr("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            Key::addr("::ffff:192.0.2.9".parse().unwrap()),
            Key::addr("192.0.2.9".parse().unwrap())
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let p = policy();
        let mut t = Table::default();
        for i in 0..(TABLE_MAX as u32 + 5000) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.apply(
                &Key::addr(IpAddr::V4(ip)),
                Op::Fail,
                1000 + u64::from(i / 1000),
                &p,
            );
        }
        assert!(t.len() <= TABLE_MAX, "{} keys", t.len());
    }
}
