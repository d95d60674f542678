//! Bounded TTL caches behind mail-auth's `ResolverCache` trait: parsed SPF,
//! DKIM key and DMARC records (and MX/A/AAAA/PTR answers of SPF terms) live
//! here until their TTL ends (capped), so a warm domain costs no parse and
//! no query. Used on the DNS thread only; the lock is never contended.
use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use mail_auth::ResolverCache;

/// One cache of at most `max` entries; when full, expired entries go first,
/// then the eighth that expires soonest (one O(n) pass per max/8 inserts).
pub struct TtlCache<K, V> {
    map: Mutex<HashMap<K, (Instant, V)>>,
    max: usize,
    ttl_max: Duration,
}

impl<K: Hash + Eq, V: Clone> TtlCache<K, V> {
    pub fn new(max: usize, ttl_max: Duration) -> Self {
        TtlCache {
            map: Mutex::new(HashMap::new()),
            max,
            ttl_max,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        // A poisoned lock only means a panic elsewhere mid-insert; the map
        // itself is still a valid map.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<K: Hash + Eq, V: Clone> ResolverCache<K, V> for TtlCache<K, V> {
    fn get<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let mut map = self.lock();
        match map.get(name) {
            Some((until, v)) if *until > Instant::now() => Some(v.clone()),
            Some(_) => {
                map.remove(name);
                None
            }
            None => None,
        }
    }

    fn remove<Q>(&self, name: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.lock().remove(name).map(|(_, v)| v)
    }

    fn insert(&self, key: K, value: V, valid_until: Instant) {
        let now = Instant::now();
        let until = valid_until.min(now + self.ttl_max);
        if self.max == 0 || until <= now {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            map.retain(|_, (u, _)| *u > now);
            if map.len() >= self.max {
                let mut expiries: Vec<Instant> = map.values().map(|(u, _)| *u).collect();
                let cut = (self.max / 8).max(1).min(expiries.len() - 1);
                let (_, nth, _) = expiries.select_nth_unstable(cut);
                let nth = *nth;
                map.retain(|_, (u, _)| *u > nth);
            }
        }
        map.insert(key, (until, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ttl_respecting() {
        let c: TtlCache<Box<str>, u32> = TtlCache::new(16, Duration::from_secs(60));
        let now = Instant::now();
        for i in 0..100u32 {
            c.insert(
                format!("k{i}").into(),
                i,
                now + Duration::from_secs(10 + u64::from(i)),
            );
            assert!(c.len() <= 16);
        }
        // The newest (latest expiring) survive.
        assert_eq!(c.get("k99"), Some(99));
        assert_eq!(c.get("k0"), None);
        // Already expired: not kept.
        c.insert("old".into(), 1, now);
        assert_eq!(c.get("old"), None);
        // TTL capped.
        let c: TtlCache<Box<str>, u32> = TtlCache::new(4, Duration::from_millis(1));
        c.insert("x".into(), 1, Instant::now() + Duration::from_secs(3600));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(c.get("x"), None);
        assert!(c.is_empty());
        let off: TtlCache<Box<str>, u32> = TtlCache::new(0, Duration::from_secs(1));
        off.insert("x".into(), 1, Instant::now() + Duration::from_secs(1));
        assert_eq!(off.get("x"), None);
    }
}
