//! Connection limits shared by every shard: the whole server's count and the
//! count per client address. Lock-free: atomics in a fixed table; addresses
//! hash into slots, so two addresses may share a slot (then they share the
//! limit, which errs on the safe side) but memory stays bounded.
//!
//! [`Rate`] counts events per client address in fixed one-minute windows
//! the same way (one `AtomicU64` per slot: the minute and its count), for
//! connections per minute and SMTP commands per minute.
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::util::fnv1a64;

const SLOTS: usize = 4096;

fn slot_of(ip: IpAddr) -> usize {
    (match ip.to_canonical() {
        IpAddr::V4(a) => fnv1a64(&a.octets()),
        IpAddr::V6(a) => fnv1a64(&a.octets()[..8]),
    } % SLOTS as u64) as usize
}

/// Events per client address per minute, shared by every shard.
pub struct Rate {
    per_minute_max: AtomicU32,
    slots: Box<[AtomicU64]>,
}

impl Rate {
    /// `per_minute_max == 0`: no limit.
    pub fn new(per_minute_max: u32) -> Rate {
        Rate {
            per_minute_max: AtomicU32::new(per_minute_max),
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    pub fn set_max(&self, per_minute_max: u32) {
        self.per_minute_max.store(per_minute_max, Ordering::Relaxed);
    }

    /// Count `n` events for `ip` in minute `minute`; false when the count
    /// passes the limit. Refused events count too, so a client that keeps
    /// trying stays refused for the rest of the minute.
    pub fn charge(&self, ip: IpAddr, n: u32, minute: u32) -> bool {
        let max = self.per_minute_max.load(Ordering::Relaxed);
        if max == 0 {
            return true;
        }
        let slot = &self.slots[slot_of(ip)];
        let mut cur = slot.load(Ordering::Acquire);
        loop {
            let (m, count) = ((cur >> 32) as u32, cur as u32);
            let count = if m == minute { count } else { 0 };
            let next = count.saturating_add(n);
            match slot.compare_exchange_weak(
                cur,
                (u64::from(minute) << 32) | u64::from(next),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return next <= max,
                Err(v) => cur = v,
            }
        }
    }
}

/// The current minute for [`Rate::charge`].
pub fn minute_now() -> u32 {
    (crate::util::unix_now().max(0) / 60) as u32
}

pub struct Limiter {
    total: AtomicUsize,
    /// The limits, changed by a configuration reload (`set_limits`).
    total_max: AtomicUsize,
    per_address_max: AtomicU32,
    slots: Box<[AtomicU32]>,
    /// New connections per address per minute.
    pub connection_rate: Rate,
    /// SMTP commands per address per minute.
    pub command_rate: Rate,
}

/// A connection's place in the limits; released when dropped. `Send`, so it
/// travels with a connection moved to another shard.
pub struct Permit {
    limiter: Arc<Limiter>,
    /// The per-address slot counted, if any (see [`Limiter::admit`]).
    slot: Option<usize>,
}

/// What a new connection is exempt from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Exempt {
    /// The per-minute connection rate (`[limits] rate_exempt`, cluster members).
    pub rate: bool,
    /// The per-address cap on open connections: another node of the
    /// cluster, whose relayed sessions all come from its address.
    pub per_address: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    AddressFull,
    /// The address opened too many connections this minute.
    AddressRate,
}

impl Limiter {
    pub fn new(total_max: usize, per_address_max: usize) -> Arc<Limiter> {
        Limiter::with_rates(total_max, per_address_max, 0, 0)
    }

    pub fn with_rates(
        total_max: usize,
        per_address_max: usize,
        connections_per_minute: u32,
        commands_per_minute: u32,
    ) -> Arc<Limiter> {
        Arc::new(Limiter {
            total: AtomicUsize::new(0),
            total_max: AtomicUsize::new(total_max),
            per_address_max: AtomicU32::new(per_address_max.min(u32::MAX as usize) as u32),
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
            connection_rate: Rate::new(connections_per_minute),
            command_rate: Rate::new(commands_per_minute),
        })
    }

    /// Admit a new connection from `ip`, minus what it is `exempt` from
    /// (the server-wide cap applies to every connection).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, exempt: Exempt) -> Result<Permit, Refusal> {
        if !exempt.rate && !self.connection_rate.charge(ip, 1, minute_now()) {
            return Err(Refusal::AddressRate);
        }
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.total_max.load(Ordering::Relaxed) {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        let slot = if exempt.per_address {
            None
        } else {
            let slot = match ip {
                IpAddr::V4(a) => fnv1a64(&a.octets()),
                IpAddr::V6(a) => fnv1a64(&a.octets()),
            } as usize
                % SLOTS;
            if self.slots[slot].fetch_add(1, Ordering::AcqRel)
                >= self.per_address_max.load(Ordering::Relaxed)
            {
                self.slots[slot].fetch_sub(1, Ordering::AcqRel);
                self.total.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::AddressFull);
            }
            Some(slot)
        };
        Ok(Permit {
            limiter: self.clone(),
            slot,
        })
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// New limits for connections admitted from now on (a reload); open
    /// connections are never closed because of them.
    pub fn set_limits(
        &self,
        total_max: usize,
        per_address_max: usize,
        connections_per_minute: u32,
        commands_per_minute: u32,
    ) {
        self.total_max.store(total_max, Ordering::Relaxed);
        self.per_address_max.store(
            per_address_max.min(u32::MAX as usize) as u32,
            Ordering::Relaxed,
        );
        self.connection_rate.set_max(connections_per_minute);
        self.command_rate.set_max(commands_per_minute);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(slot) = self.slot {
            self.limiter.slots[slot].fetch_sub(1, Ordering::AcqRel);
        }
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: Exempt = Exempt {
        rate: false,
        per_address: false,
    };

    #[test]
    fn limits_total_and_per_address() {
        let l = Limiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(a, NONE).unwrap();
        let _p2 = l.admit(a, NONE).unwrap();
        assert_eq!(l.admit(a, NONE).err(), Some(Refusal::AddressFull));
        let _p3 = l.admit(b, NONE).unwrap();
        assert_eq!(l.admit(b, NONE).err(), Some(Refusal::ServerFull));
        drop(p1);
        let p4 = l.admit(a, NONE).unwrap();
        assert_eq!(l.total(), 3);
        drop(p4);
    }

    #[test]
    fn members_are_not_capped_per_address_but_count_in_the_total() {
        let l = Limiter::new(4, 1);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let member = Exempt {
            rate: true,
            per_address: true,
        };
        let _p1 = l.admit(a, NONE).unwrap();
        assert_eq!(l.admit(a, NONE).err(), Some(Refusal::AddressFull));
        let p2 = l.admit(a, member).unwrap();
        let _p3 = l.admit(a, member).unwrap();
        let _p4 = l.admit(a, member).unwrap();
        assert_eq!(l.admit(a, member).err(), Some(Refusal::ServerFull));
        drop(p2);
        assert_eq!(l.total(), 3);
        assert_eq!(l.admit(a, NONE).err(), Some(Refusal::AddressFull));
        assert!(l.admit(a, member).is_ok());
    }

    #[test]
    fn rates_count_per_address_and_minute() {
        let r = Rate::new(5);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        let v6_same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        assert!(r.charge(a, 3, 100));
        assert!(r.charge(a, 2, 100));
        assert!(!r.charge(a, 1, 100), "over five in minute 100");
        assert!(!r.charge(a, 1, 100), "and it stays refused");
        assert!(r.charge(a, 5, 101), "a new minute starts afresh");
        assert!(r.charge(v6, 5, 100));
        assert!(
            !r.charge(v6_same_64, 1, 100),
            "an IPv6 /64 shares its count"
        );
        assert!(Rate::new(0).charge(a, u32::MAX, 1), "0: no limit");
        let l = Limiter::with_rates(100, 100, 2, 0);
        let _p1 = l.admit(a, NONE).unwrap();
        let _p2 = l.admit(a, NONE).unwrap();
        assert_eq!(l.admit(a, NONE).err(), Some(Refusal::AddressRate));
        let rate_only = Exempt {
            rate: true,
            per_address: false,
        };
        assert!(
            l.admit(a, rate_only).is_ok(),
            "exempt clients are not rate-limited"
        );
    }
}
