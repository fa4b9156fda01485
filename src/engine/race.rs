//! Two ways of running a model timed against each other at load: the
//! engine keeps the second plan, or the row-by-row split, only where it
//! measured clearly faster on this machine.

use std::time::{Duration, Instant};

/// How long a comparison runs.
pub(super) struct Race {
    /// Runs of each before timing (allocations, caches).
    pub warm_ups: usize,
    /// Pairs always timed.
    pub min_pairs: usize,
    /// Pairs timed at most, while `budget` lasts.
    pub max_pairs: usize,
    pub budget: Duration,
    /// The candidate's median must be under this share of the other's.
    pub min_gain: f64,
}

impl Race {
    /// Whether `candidate` beats `other` by [`Race::min_gain`] on medians.
    /// The two are timed alternately so that both see the same machine;
    /// any failed run means no.
    pub(super) fn candidate_wins<E>(
        &self,
        mut candidate: impl FnMut() -> Result<Duration, E>,
        mut other: impl FnMut() -> Result<Duration, E>,
    ) -> bool {
        for _ in 0..self.warm_ups {
            if candidate().is_err() || other().is_err() {
                return false;
            }
        }
        let (mut a, mut b) = (Vec::new(), Vec::new());
        let started = Instant::now();
        while a.len() < self.min_pairs
            || (a.len() < self.max_pairs && started.elapsed() < self.budget)
        {
            match (candidate(), other()) {
                (Ok(x), Ok(y)) => {
                    a.push(x);
                    b.push(y);
                }
                _ => return false,
            }
        }
        a.sort();
        b.sort();
        a[a.len() / 2].as_secs_f64() < b[b.len() / 2].as_secs_f64() * self.min_gain
    }
}
