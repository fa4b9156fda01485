//! Per-token rate limits (governor's GCRA) and daily quotas.
//!
//! The state lives as long as the token's name and limits stay the same
//! in the auth file, so rewriting the file (to rotate another token) does
//! not hand every caller a fresh burst and a fresh day.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use super::file::Rate;

const SECONDS_PER_DAY: u64 = 86_400;

/// Why a request over its limits waits, and how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exceeded {
    /// Over `rps`/`burst`; the wait is until a request would conform again.
    Rate { retry_after: Duration },
    /// The day's `quota` is used up; the wait is until the next UTC day.
    Quota { retry_after: Duration },
}

/// The limits of one token, and what it has used of them.
#[derive(Debug)]
pub struct TokenLimits {
    pub rate: Option<Rate>,
    pub quota: Option<u64>,
    limiter: Option<DefaultDirectRateLimiter>,
    used: Mutex<DayCount>,
}

#[derive(Debug, Default)]
struct DayCount {
    day: u64,
    requests: u64,
}

impl TokenLimits {
    pub fn new(rate: Option<Rate>, quota: Option<u64>) -> TokenLimits {
        let limiter = rate.and_then(|r| {
            let per_second = NonZeroU32::new(r.per_second)?;
            let burst = NonZeroU32::new(r.burst)?;
            Some(RateLimiter::direct(Quota::per_second(per_second).allow_burst(burst)))
        });
        TokenLimits { rate, quota, limiter, used: Mutex::new(DayCount::default()) }
    }

    /// Whether this state can carry over to a token with these limits.
    pub fn same_limits(&self, rate: Option<Rate>, quota: Option<u64>) -> bool {
        self.rate == rate && self.quota == quota
    }

    /// Takes one request from the rate and the day's quota, or says why not.
    /// A request refused by the rate does not count against the quota.
    pub fn take(&self, now: SystemTime) -> Result<(), Exceeded> {
        if let Some(limiter) = &self.limiter
            && let Err(not_until) = limiter.check()
        {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            return Err(Exceeded::Rate { retry_after: wait });
        }
        let Some(quota) = self.quota else { return Ok(()) };
        let since_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let today = since_epoch / SECONDS_PER_DAY;
        // A poisoned lock only means another request panicked mid-count;
        // the count itself is still a number.
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if used.day != today {
            *used = DayCount { day: today, requests: 0 };
        }
        if used.requests >= quota {
            let next_day = (today + 1) * SECONDS_PER_DAY;
            return Err(Exceeded::Quota {
                retry_after: Duration::from_secs(next_day.saturating_sub(since_epoch)),
            });
        }
        used.requests += 1;
        Ok(())
    }
}

/// `Retry-After` in whole seconds, at least 1: a 0 would invite a busy loop.
pub fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_passes_then_the_rate_refuses() {
        let limits = TokenLimits::new(Some(Rate { per_second: 1, burst: 3 }), None);
        let now = SystemTime::now();
        for _ in 0..3 {
            limits.take(now).unwrap();
        }
        match limits.take(now) {
            Err(Exceeded::Rate { retry_after }) => {
                assert!(retry_after <= Duration::from_secs(1), "{retry_after:?}")
            }
            other => panic!("expected a rate refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_quota_lasts_one_utc_day() {
        let limits = TokenLimits::new(None, Some(2));
        let noon = UNIX_EPOCH + Duration::from_secs(20_000 * SECONDS_PER_DAY + 43_200);
        limits.take(noon).unwrap();
        limits.take(noon).unwrap();
        assert_eq!(
            limits.take(noon),
            Err(Exceeded::Quota { retry_after: Duration::from_secs(43_200) })
        );
        let tomorrow = noon + Duration::from_secs(SECONDS_PER_DAY);
        limits.take(tomorrow).unwrap();
    }

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
    }
}
