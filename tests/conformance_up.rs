//! The conformance scenarios (`tests/conformance/mod.rs`) through `tractor
//! up`'s runner: ticked with the scenario's clock, its children played
//! in-process (`tests/common/fake_children.rs`) but reached over loopback
//! HTTP as real ones are, its routes and processing files read from its
//! state directory.

mod common;
#[macro_use]
mod conformance;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use tractor::contract::routes::RouteTable;
use tractor::crd::ModelDeploymentSpec;
use tractor::local::{Stepper, UpConfig};
use tractor::plan::CanaryFigures;

use common::fake_children::FakeChildren;
use conformance::{Executor, Scenario, Seen, Serve};

struct Up {
    stepper: Stepper,
    children: Arc<FakeChildren>,
    _dir: tempfile::TempDir,
}

impl Up {
    async fn start() -> Up {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = UpConfig {
            file: dir.path().join("digits.yaml"),
            port: common::server::free_port(),
            state_dir: dir.path().join("state"),
            json: true,
            // Never run: the fake children play every role.
            tractor: dir.path().join("no-tractor-here"),
            auth_files: Vec::new(),
            grpc_port: 0,
        };
        let children = Arc::new(FakeChildren::default());
        let stepper = Stepper::start(config, "digits", children.clone())
            .await
            .unwrap_or_else(|e| panic!("starting up's runner: {e}"));
        Up { stepper, children, _dir: dir }
    }
}

impl Executor for Up {
    async fn tick(
        &mut self,
        spec: &ModelDeploymentSpec,
        figures: Option<CanaryFigures>,
        now: Timestamp,
    ) -> Seen {
        self.children.set_figures(figures);
        if let Err(e) = self.stepper.tick(spec, now).await {
            panic!("a tick of up failed: {e}");
        }
        let status = self.stepper.status().clone();
        let routes = std::fs::read(self.stepper.dir().join("routes.json")).expect("routes.json");
        let table: RouteTable = serde_json::from_slice(&routes).expect("a route table");
        let serving =
            self.stepper
                .serving()
                .into_iter()
                .map(|version| {
                    let argv = self.children.serve_argv(&version).unwrap_or_else(|| {
                        panic!("up keeps {version} but never started its serve")
                    });
                    assert_eq!(argv[0], "serve");
                    let pairs = argv[1..].chunks(2).map(|p| (p[0].clone(), p[1].clone()));
                    let serve = Serve::from_flags(pairs, |path| {
                        std::fs::read(path).ok().and_then(|b| serde_json::from_slice(&b).ok())
                    });
                    (version, serve)
                })
                .collect();
        Seen {
            phase: status.phase,
            stable: status.stable.map(|s| s.version),
            canary: status.canary.map(|c| (c.version, c.weight)),
            weights: table.backends.into_iter().map(|b| (b.version, b.weight)).collect(),
            serving,
        }
    }

    async fn stop(self) {
        self.stepper.stop().await;
    }
}

async fn run(scenario: Scenario) {
    conformance::run(scenario, Up::start().await).await;
}

scenario_tests!(run);
