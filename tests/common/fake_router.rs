//! Router statistics served from memory, for the controller tests: the test
//! sets the canary's figures, the controller reads them, and resets (one per
//! analysis window) are counted.

use std::sync::Mutex;

use futures::future::BoxFuture;
use tractor::controller::{RouterStats, RouterStatsError};
use tractor::crd::ModelDeployment;
use tractor::plan::CanaryFigures;

#[derive(Default)]
pub struct FakeRouter {
    pub figures: Mutex<Option<CanaryFigures>>,
    pub resets: Mutex<u32>,
}

impl FakeRouter {
    /// The canary served `requests`, `errors` of them failed, at a healthy p99.
    pub fn serve(&self, requests: u64, errors: u64) {
        *self.figures.lock().unwrap() =
            Some(CanaryFigures { requests, errors, latency_p99_ms: Some(12.0), agreement: None });
    }

    pub fn resets(&self) -> u32 {
        *self.resets.lock().unwrap()
    }
}

impl RouterStats for FakeRouter {
    fn read<'a>(
        &'a self,
        _: &'a ModelDeployment,
        _: &'a str,
    ) -> BoxFuture<'a, Result<Option<CanaryFigures>, RouterStatsError>> {
        Box::pin(async move { Ok(*self.figures.lock().unwrap()) })
    }
    fn reset<'a>(&'a self, _: &'a ModelDeployment) -> BoxFuture<'a, Result<(), RouterStatsError>> {
        Box::pin(async move {
            *self.resets.lock().unwrap() += 1;
            Ok(())
        })
    }
}
