//! The retry backoff schedule: exponential from a base, capped.

/// The delay before processing attempt `attempt + 1`, after attempt `attempt` (1-based)
/// failed: `min(cap, base * 2^(attempt-1))` milliseconds. Never overflows.
pub fn backoff_ms(attempt: u32, base_ms: u64, cap_ms: u64) -> u64 {
    let shift = attempt.saturating_sub(1).min(63);
    base_ms
        .checked_shl(shift)
        .filter(|v| v >> shift == base_ms)
        .map_or(cap_ms, |v| v.min(cap_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_the_base_until_the_cap() {
        let got: Vec<u64> = (1..=11).map(|a| backoff_ms(a, 1_000, 300_000)).collect();
        assert_eq!(
            got,
            [
                1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 128_000, 256_000, 300_000,
                300_000
            ]
        );
    }

    #[test]
    fn attempt_zero_is_treated_as_the_first() {
        assert_eq!(backoff_ms(0, 1_000, 300_000), 1_000);
    }

    proptest! {
        #[test]
        fn never_exceeds_the_cap_and_never_shrinks(attempt in 0u32..1000, base in 1u64..10_000_000, extra in 0u64..1_000_000_000) {
            let cap = base + extra;
            let now = backoff_ms(attempt, base, cap);
            prop_assert!(now <= cap);
            prop_assert!(now >= base.min(cap));
            prop_assert!(backoff_ms(attempt + 1, base, cap) >= now);
        }
    }
}
