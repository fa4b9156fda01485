//! Optimized plans and where they come from: one [`Runner`] per plan, and,
//! for graphs tract cannot type with every dimension symbolic, a bounded
//! cache of plans per concrete non-batch dimensions ([`PlanCache`]).
//!
//! Exported transformers are the case: tiny-bert's `[batch, seq]` inputs
//! fail typing (`Flatten ... square of symbols`, from the `seq x seq`
//! attention scores), while any one sequence length types and optimizes
//! with the batch still symbolic. So the sequence length is fixed per
//! request shape, the batch is not: one plan serves every batch size of
//! that length.
//!
//! # Invariants
//! - At most `max_plans` plans are kept (least recently used out first),
//!   and no plan is built for a dimension over `max_sequence`: a caller
//!   cannot make the server build or keep plans without bound.
//! - Every plan runs through its own [`guard::Guard`].

use std::num::NonZeroUsize;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use tract_onnx::prelude::{TValue, TVec, TypedSimplePlan, TypedSimpleState};
use tract_onnx::tract_hir::internal::{EvalContext, OpState, TypedNode};

use super::guard::{self, NodeFailure};
use super::{EngineError, default_max_tensor_bytes};

/// Plans kept at once by default: 32 sequence lengths of a small encoder
/// take a few MiB each (every plan packs its own weights).
pub const DEFAULT_MAX_PLANS: usize = 32;
/// Longest variable dimension (sequence length) served by default: BERT's
/// own position table stops at 512.
pub const DEFAULT_MAX_SEQUENCE: usize = 512;

/// Bounds on the plans built per input shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Plans kept (`--max-plans`); at least one is.
    pub max_plans: usize,
    /// Largest value of any variable non-batch dimension (`--max-sequence`).
    pub max_sequence: usize,
}

impl Default for PlanLimits {
    fn default() -> PlanLimits {
        PlanLimits { max_plans: DEFAULT_MAX_PLANS, max_sequence: DEFAULT_MAX_SEQUENCE }
    }
}

/// What the cache did for one request, for metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PlanEvent {
    /// A kept plan served the request.
    Hit,
    /// A plan was built, in this long.
    Built(Duration),
    /// A plan was dropped to make room.
    Evicted,
}

/// Told of every [`PlanEvent`].
pub type PlanObserver = Arc<dyn Fn(PlanEvent) + Send + Sync>;

/// Counts since the cache was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlanStats {
    pub builds: u64,
    pub hits: u64,
    pub evictions: u64,
    /// Plans kept now.
    pub kept: usize,
}

/// Builds the plan for one key.
pub type Build<P> = Arc<dyn Fn(&[usize]) -> Result<P, EngineError> + Send + Sync>;

/// Plans by the values of the model's variable non-batch dimensions, in
/// the order of `symbols`, least recently used out first.
pub struct PlanCache<P> {
    symbols: Vec<String>,
    limits: PlanLimits,
    build: Build<P>,
    plans: Mutex<LruCache<Vec<usize>, P>>,
    builds: AtomicU64,
    hits: AtomicU64,
    evictions: AtomicU64,
    observer: Option<PlanObserver>,
}

impl<P: Clone> std::fmt::Debug for PlanCache<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanCache")
            .field("symbols", &self.symbols)
            .field("limits", &self.limits)
            .field("stats", &self.stats())
            .finish()
    }
}

fn capacity(limits: PlanLimits) -> NonZeroUsize {
    NonZeroUsize::new(limits.max_plans).unwrap_or(NonZeroUsize::MIN)
}

impl<P: Clone> PlanCache<P> {
    /// An empty cache for the dimensions named `symbols`, building plans
    /// with `build`.
    pub fn new(
        symbols: Vec<String>,
        limits: PlanLimits,
        build: impl Fn(&[usize]) -> Result<P, EngineError> + Send + Sync + 'static,
    ) -> PlanCache<P> {
        PlanCache {
            symbols,
            limits,
            build: Arc::new(build),
            plans: Mutex::new(LruCache::new(capacity(limits))),
            builds: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            observer: None,
        }
    }

    /// The same cache under other limits, another builder and observer:
    /// kept plans are carried over through `rewrap` (most recent last
    /// survives a smaller `max_plans`), counts go on.
    pub fn rebuilt(
        &self,
        limits: PlanLimits,
        build: Option<Build<P>>,
        rewrap: impl Fn(&P) -> P,
        observer: Option<PlanObserver>,
    ) -> PlanCache<P> {
        let mut plans = LruCache::new(capacity(limits));
        let kept = self.lock();
        // Oldest first, so the most recently used end up most recent again.
        for (key, plan) in kept.iter().rev() {
            plans.put(key.clone(), rewrap(plan));
        }
        drop(kept);
        PlanCache {
            symbols: self.symbols.clone(),
            limits,
            build: build.unwrap_or_else(|| self.build.clone()),
            plans: Mutex::new(plans),
            builds: AtomicU64::new(self.builds.load(Ordering::Relaxed)),
            hits: AtomicU64::new(self.hits.load(Ordering::Relaxed)),
            evictions: AtomicU64::new(self.evictions.load(Ordering::Relaxed)),
            observer,
        }
    }

    pub fn limits(&self) -> PlanLimits {
        self.limits
    }

    /// Names of the dimensions a key holds, in order.
    pub fn symbols(&self) -> &[String] {
        &self.symbols
    }

    pub fn stats(&self) -> PlanStats {
        PlanStats {
            builds: self.builds.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            kept: self.lock().len(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<Vec<usize>, P>> {
        // A poisoned lock only means a thread panicked holding it; the
        // cache is whole (every update is one call).
        self.plans.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn observe(&self, event: PlanEvent) {
        if let Some(observer) = &self.observer {
            observer(event);
        }
    }

    /// Checks a key against the limits.
    ///
    /// # Errors
    /// [`EngineError::Shape`] for a dimension of 0 or over `max_sequence`.
    pub fn check(&self, key: &[usize]) -> Result<(), EngineError> {
        for (value, name) in key.iter().zip(&self.symbols) {
            if *value == 0 {
                return Err(EngineError::Shape(format!(
                    "dimension {name:?} is 0; send at least 1"
                )));
            }
            if *value > self.limits.max_sequence {
                return Err(EngineError::Shape(format!(
                    "dimension {name:?} is {value}, over this server's limit of {} \
                     (--max-sequence)",
                    self.limits.max_sequence
                )));
            }
        }
        Ok(())
    }

    /// The plan for `key`, built (outside the lock, so other lengths keep
    /// running meanwhile) when none is kept. Two workers missing the same
    /// key at once may both build it; the later one is kept.
    ///
    /// # Errors
    /// A key over the limits, or the build failing for these dimensions
    /// ([`EngineError::Shape`]: the request's shape is what tract refused).
    pub fn get(&self, key: &[usize]) -> Result<P, EngineError> {
        self.check(key)?;
        if let Some(plan) = self.lock().get(key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            self.observe(PlanEvent::Hit);
            return Ok(plan.clone());
        }
        let started = Instant::now();
        let plan = (self.build)(key).map_err(|e| match e {
            EngineError::Shape(reason) => EngineError::Shape(reason),
            other => EngineError::Shape(format!(
                "cannot prepare a plan for {}: {other}",
                self.describe(key)
            )),
        })?;
        let took = started.elapsed();
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.observe(PlanEvent::Built(took));
        tracing::info!(dims = %self.describe(key), seconds = took.as_secs_f64(), "engine plan built");
        let evicted = self.lock().push(key.to_vec(), plan.clone());
        if evicted.is_some_and(|(old, _)| old != key) {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            self.observe(PlanEvent::Evicted);
        }
        Ok(plan)
    }

    /// Keeps a plan built elsewhere (the one a model is loaded with),
    /// counted as a build.
    pub fn insert(&self, key: &[usize], plan: P) {
        self.builds.fetch_add(1, Ordering::Relaxed);
        self.lock().push(key.to_vec(), plan);
    }

    /// `seq=16` style, for messages.
    pub fn describe(&self, key: &[usize]) -> String {
        self.symbols
            .iter()
            .zip(key)
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One optimized plan and the run states kept between its runs: tract's
/// `plan.run` builds a fresh state per call, about 0.4-0.8 µs of a 6 µs
/// small-MLP run. A state resets its turn (values, resolved batch size) at
/// the end of every run, so one may serve any batch size next; a state
/// whose run failed or panicked is dropped.
///
/// Every node runs through the plan's [`guard::Guard`]: sizes checked
/// before data-dependent allocations, indices before gathers, panics caught.
#[derive(Debug, Clone)]
pub(super) struct Runner {
    plan: Arc<TypedSimplePlan>,
    pub(super) guard: Arc<guard::Guard>,
    states: Arc<Mutex<Vec<TypedSimpleState>>>,
}

impl Runner {
    pub(super) fn new(plan: Arc<TypedSimplePlan>) -> Runner {
        let guard = Arc::new(guard::Guard::new(plan.model(), default_max_tensor_bytes()));
        Runner { plan, guard, states: Arc::default() }
    }

    pub(super) fn with_max_tensor_bytes(&self, bytes: usize) -> Runner {
        Runner {
            plan: self.plan.clone(),
            guard: Arc::new(guard::Guard::new(self.plan.model(), bytes)),
            states: self.states.clone(),
        }
    }

    pub(super) fn run(&self, values: TVec<TValue>) -> Result<TVec<TValue>, EngineError> {
        // A poisoned pool only means a run panicked while holding it; the
        // states in it are whole.
        let pooled = self.states.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut state = match pooled {
            Some(state) => state,
            None => self.plan.spawn().map_err(|e| EngineError::Run(format!("{e:#}")))?,
        };
        let guard = &self.guard;
        let ran = catch_unwind(AssertUnwindSafe(|| {
            state.run_plan_with_eval(
                values,
                |ctx: &EvalContext<'_>,
                 op_state: Option<&mut (dyn OpState + 'static)>,
                 node: &TypedNode,
                 inputs: TVec<TValue>| guard.eval(ctx, op_state, node, inputs),
            )
        }));
        match ran {
            Ok(Ok(outputs)) => {
                self.states.lock().unwrap_or_else(|p| p.into_inner()).push(state);
                Ok(outputs)
            }
            Ok(Err(e)) => Err(match e.downcast_ref::<NodeFailure>() {
                Some(failure) => EngineError::Refused(Box::new(failure.clone())),
                None => EngineError::Run(format!("{e:#}")),
            }),
            Err(panic) => Err(EngineError::Panicked(guard::panic_message(panic.as_ref()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    fn counting(limits: PlanLimits) -> (PlanCache<usize>, Arc<AtomicUsize>) {
        let built = Arc::new(AtomicUsize::new(0));
        let count = built.clone();
        let cache = PlanCache::new(vec!["seq".into()], limits, move |key: &[usize]| {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(key[0] * 10)
        });
        (cache, built)
    }

    #[test]
    fn a_kept_plan_is_a_hit_and_a_new_length_a_build() {
        let (cache, built) = counting(PlanLimits::default());
        assert_eq!(cache.get(&[16]).unwrap(), 160);
        assert_eq!(cache.get(&[16]).unwrap(), 160);
        assert_eq!(cache.get(&[32]).unwrap(), 320);
        assert_eq!(built.load(Ordering::SeqCst), 2);
        assert_eq!(cache.stats(), PlanStats { builds: 2, hits: 1, evictions: 0, kept: 2 });
    }

    #[test]
    fn the_least_recently_used_plan_goes_at_max_plans() {
        let (cache, built) = counting(PlanLimits { max_plans: 2, max_sequence: 512 });
        cache.get(&[1]).unwrap();
        cache.get(&[2]).unwrap();
        cache.get(&[1]).unwrap(); // 2 is now the least recently used
        cache.get(&[3]).unwrap(); // evicts 2
        assert_eq!(cache.stats(), PlanStats { builds: 3, hits: 1, evictions: 1, kept: 2 });
        cache.get(&[1]).unwrap();
        assert_eq!(built.load(Ordering::SeqCst), 3, "1 was kept");
        cache.get(&[2]).unwrap();
        assert_eq!(built.load(Ordering::SeqCst), 4, "2 was evicted and is built again");
        assert_eq!(cache.stats().evictions, 2);
        assert_eq!(cache.stats().kept, 2);
    }

    #[test]
    fn an_over_long_or_empty_dimension_is_refused_without_a_build() {
        let (cache, built) = counting(PlanLimits { max_plans: 4, max_sequence: 64 });
        let long = cache.get(&[65]).unwrap_err();
        assert!(matches!(long, EngineError::Shape(_)) && long.is_input_error(), "{long}");
        assert!(long.to_string().contains("\"seq\" is 65, over this server's limit of 64"));
        assert!(cache.get(&[0]).unwrap_err().to_string().contains("\"seq\" is 0"));
        assert_eq!(cache.get(&[64]).unwrap(), 640);
        assert_eq!(built.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_failed_build_is_the_requests_shape_error_and_is_not_kept() {
        let cache = PlanCache::new(vec!["seq".into()], PlanLimits::default(), |key: &[usize]| {
            if key[0] == 7 { Err(EngineError::Prepare("no".into())) } else { Ok(key[0]) }
        });
        let e = cache.get(&[7]).unwrap_err();
        assert!(e.is_input_error(), "{e}");
        assert!(e.to_string().contains("seq=7"), "{e}");
        assert_eq!(cache.stats(), PlanStats { builds: 0, hits: 0, evictions: 0, kept: 0 });
    }

    #[test]
    fn events_reach_the_observer_and_a_rebuilt_cache_keeps_its_plans() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let seen = events.clone();
        let (cache, built) = counting(PlanLimits { max_plans: 1, max_sequence: 8 });
        cache.get(&[3]).unwrap();
        let observer: PlanObserver = Arc::new(move |e| seen.lock().unwrap().push(e));
        let cache = cache.rebuilt(
            PlanLimits { max_plans: 1, max_sequence: 8 },
            None,
            |p| p + 1,
            Some(observer),
        );
        assert_eq!(cache.get(&[3]).unwrap(), 31, "carried over through rewrap");
        cache.get(&[4]).unwrap();
        assert_eq!(built.load(Ordering::SeqCst), 2);
        let events = events.lock().unwrap();
        assert_eq!(events[0], PlanEvent::Hit);
        assert!(matches!(events[1], PlanEvent::Built(_)));
        assert_eq!(events[2], PlanEvent::Evicted);
    }
}
