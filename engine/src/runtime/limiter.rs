//! Connection limits shared by every shard: the whole server's count and the
//! count per client address. Lock-free: atomics in a fixed table; addresses
//! hash into slots, so two addresses may share a slot (then they share the
//! limit, which errs on the safe side) but memory stays bounded.
use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::util::fnv1a64;

const SLOTS: usize = 4096;

pub struct Limiter {
    total: AtomicUsize,
    total_max: usize,
    per_address_max: u32,
    slots: Box<[AtomicU32]>,
}

/// A connection's place in the limits; released when dropped. `Send`, so it
/// travels with a connection moved to another shard.
pub struct Permit {
    limiter: Arc<Limiter>,
    slot: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    ServerFull,
    AddressFull,
}

impl Limiter {
    pub fn new(total_max: usize, per_address_max: usize) -> Arc<Limiter> {
        Arc::new(Limiter {
            total: AtomicUsize::new(0),
            total_max,
            per_address_max: per_address_max.min(u32::MAX as usize) as u32,
            slots: (0..SLOTS).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, Refusal> {
        let slot = match ip {
            IpAddr::V4(a) => fnv1a64(&a.octets()),
            IpAddr::V6(a) => fnv1a64(&a.octets()),
        } as usize
            % SLOTS;
        if self.total.fetch_add(1, Ordering::AcqRel) >= self.total_max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::ServerFull);
        }
        if self.slots[slot].fetch_add(1, Ordering::AcqRel) >= self.per_address_max {
            self.slots[slot].fetch_sub(1, Ordering::AcqRel);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refusal::AddressFull);
        }
        Ok(Permit { limiter: self.clone(), slot })
    }

    pub fn total(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.slots[self.slot].fetch_sub(1, Ordering::AcqRel);
        self.limiter.total.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_total_and_per_address() {
        let l = Limiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let p1 = l.admit(a).unwrap();
        let _p2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(Refusal::AddressFull));
        let _p3 = l.admit(b).unwrap();
        assert_eq!(l.admit(b).err(), Some(Refusal::ServerFull));
        drop(p1);
        let _p4 = l.admit(a).unwrap();
        assert_eq!(l.total(), 3);
    }
}
