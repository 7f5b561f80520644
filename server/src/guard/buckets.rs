//! Token buckets by key: each key may spend `per_minute` units a minute, in bursts of
//! up to a minute's worth (the bucket's size), refilled continuously. The limit is given
//! on every call, so keys of one map can have limits of their own (a tenant's quota
//! from `triggers.tenants`). The time is a parameter, so tests move it instead of
//! sleeping. The map is bounded: past `max` keys, buckets that have refilled (which hold
//! nothing worth remembering) go first, then, if every key is busy, half of them.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a successful take leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Left {
    /// The bucket's size: units per minute.
    pub limit: u64,
    /// Whole units left now.
    pub remaining: u64,
    /// Seconds until the bucket is full again.
    pub reset_s: u64,
}

/// Why a take was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Not enough units now: this long until there are.
    Wait(Duration),
    /// More units than the bucket holds: no wait would do.
    TooMany,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Units in the bucket at `at`.
    tokens: f64,
    at: Instant,
}

/// Token buckets by key.
#[derive(Debug)]
pub struct Buckets<K> {
    map: Mutex<HashMap<K, Bucket>>,
    max: usize,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// Buckets for at most `max` keys at a time.
    pub fn new(max: usize) -> Buckets<K> {
        Buckets {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// Takes `n` units from `key`'s bucket of `per_minute` (0: no limit) at `now`.
    pub fn take(&self, key: &K, n: u64, per_minute: u64, now: Instant) -> Result<Left, Refused> {
        if per_minute == 0 {
            return Ok(Left {
                limit: 0,
                remaining: u64::MAX,
                reset_s: 0,
            });
        }
        if n > per_minute {
            return Err(Refused::TooMany);
        }
        let size = per_minute as f64;
        let rate = size / 60.0; // units a second
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if !map.contains_key(key) && map.len() >= self.max {
            Self::make_room(&mut map, self.max, now, rate, size);
        }
        let bucket = map.entry(key.clone()).or_insert(Bucket {
            tokens: size,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        let tokens = (bucket.tokens + elapsed * rate).min(size);
        bucket.at = now.max(bucket.at);
        if tokens < n as f64 {
            bucket.tokens = tokens;
            let wait = (n as f64 - tokens) / rate;
            return Err(Refused::Wait(Duration::from_secs_f64(wait)));
        }
        bucket.tokens = tokens - n as f64;
        Ok(Left {
            limit: per_minute,
            remaining: bucket.tokens.floor() as u64,
            reset_s: ((size - bucket.tokens) / rate).ceil() as u64,
        })
    }

    /// Puts back `n` units taken from `key`'s bucket of `per_minute` (never past full):
    /// what was spent on something that turned out not to count.
    pub fn give_back(&self, key: &K, n: u64, per_minute: u64) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(bucket) = map.get_mut(key) {
            bucket.tokens = (bucket.tokens + n as f64).min(per_minute as f64);
        }
    }

    /// Whether `key` could take `n` units now, without taking them.
    pub fn would_allow(&self, key: &K, n: u64, per_minute: u64, now: Instant) -> bool {
        if per_minute == 0 {
            return true;
        }
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let Some(bucket) = map.get(key) else {
            return n <= per_minute;
        };
        let rate = per_minute as f64 / 60.0;
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        (bucket.tokens + elapsed * rate).min(per_minute as f64) >= n as f64
    }

    /// Keys remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Forgets buckets that have refilled by `now` (under the limit `rate`/`size` of the
    /// key being added: a bucket full by that measure has nothing to remember); if none
    /// has, half of all. Keys are an attacker's choice (addresses), so the map never
    /// grows past `max`; what is forgotten is a bucket starting full again.
    fn make_room(map: &mut HashMap<K, Bucket>, max: usize, now: Instant, rate: f64, size: f64) {
        map.retain(|_, b| {
            b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < size
        });
        if map.len() >= max {
            let mut drop = map.len() / 2 + 1;
            map.retain(|_, _| {
                let keep = drop == 0;
                drop = drop.saturating_sub(1);
                keep
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_holds_a_minute_and_refills_continuously() {
        let b = Buckets::new(10);
        let t0 = Instant::now();
        let left = b.take(&"k", 50, 60, t0).unwrap();
        assert_eq!((left.limit, left.remaining), (60, 10));
        assert_eq!(b.take(&"k", 10, 60, t0).unwrap().remaining, 0);
        // Empty: one unit a second comes back.
        assert_eq!(
            b.take(&"k", 1, 60, t0),
            Err(Refused::Wait(Duration::from_secs(1)))
        );
        assert!(b.take(&"k", 1, 60, t0 + Duration::from_secs(1)).is_ok());
        assert_eq!(
            b.take(&"k", 5, 60, t0 + Duration::from_secs(2)),
            Err(Refused::Wait(Duration::from_secs(4)))
        );
        // Never more than a minute's worth, however long it waited.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(b.take(&"k", 60, 60, later).unwrap().remaining, 0);
        assert_eq!(b.take(&"k", 61, 60, later), Err(Refused::TooMany));
    }

    #[test]
    fn what_is_given_back_can_be_spent_again() {
        let b = Buckets::new(10);
        let t0 = Instant::now();
        assert!(b.take(&"k", 3, 3, t0).is_ok());
        b.give_back(&"k", 2, 3);
        assert!(b.take(&"k", 2, 3, t0).is_ok());
        assert!(b.take(&"k", 1, 3, t0).is_err());
        b.give_back(&"k", 100, 3);
        assert_eq!(b.take(&"k", 3, 3, t0).unwrap().remaining, 0);
    }

    #[test]
    fn keys_are_apart_and_zero_is_no_limit() {
        let b = Buckets::new(10);
        let t0 = Instant::now();
        assert!(b.take(&"a", 10, 10, t0).is_ok());
        assert!(b.take(&"a", 1, 10, t0).is_err());
        assert!(b.take(&"b", 10, 10, t0).is_ok());
        assert!(b.take(&"c", 1_000_000, 0, t0).is_ok());
        assert!(!b.would_allow(&"a", 1, 10, t0));
        assert!(b.would_allow(&"z", 10, 10, t0));
    }

    #[test]
    fn the_map_never_grows_past_its_bound() {
        let b = Buckets::new(100);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            // Every key busy: what makes room is dropping half.
            let _ = b.take(&i, 1, 60, t0);
            assert!(b.len() <= 100);
        }
        // Refilled buckets are the first to go: a busy one survives.
        let b = Buckets::new(3);
        assert!(b.take(&"busy", 60, 60, t0).is_ok());
        assert!(b.take(&"idle1", 1, 60, t0).is_ok());
        assert!(b.take(&"idle2", 1, 60, t0).is_ok());
        let later = t0 + Duration::from_secs(5);
        assert!(b.take(&"new", 1, 60, later).is_ok());
        assert!(b.take(&"busy", 10, 60, later).is_err());
    }
}
