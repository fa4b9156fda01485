//! The conformance scenarios (`tests/conformance/mod.rs`) through the
//! controller's real `reconcile`, against an in-memory API
//! (`tests/common/fake_api.rs`) with the kubelet played between reconciles
//! and the router's figures from `tests/common/fake_router.rs`. A version's
//! `serve` arguments are read back from its Deployment's container (args and
//! environment), its processing document from the ConfigMap it mounts.

mod common;
#[macro_use]
mod conformance;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};
use tractor::contract::args::{self, ServePlacement, ServedArtifact};
use tractor::contract::routes::RouteTable;
use tractor::controller::{self, Context, ControllerMetrics, OperatorConfig};
use tractor::crd::{ModelDeployment, ModelDeploymentSpec, ModelDeploymentStatus};
use tractor::plan::CanaryFigures;

use common::fake_api::{CONFIGMAPS, DEPLOYMENTS, FakeApi};
use common::fake_router::FakeRouter;
use conformance::{Executor, Scenario, Seen, Serve};

const MD: &str = "/apis/tractor.dev/v1alpha1/namespaces/default/modeldeployments/digits";

struct Cluster {
    api: FakeApi,
    router: Arc<FakeRouter>,
    clock: Arc<AtomicI64>,
    ctx: Arc<Context>,
}

impl Cluster {
    fn new() -> Cluster {
        let api = FakeApi::default();
        let router = Arc::new(FakeRouter::default());
        let clock = Arc::new(AtomicI64::new(conformance::T0));
        let now = clock.clone();
        let ctx = Arc::new(Context {
            client: api.client(),
            config: OperatorConfig {
                image: "tractor:test".into(),
                artifact_store: "s3://artifacts/tractor".into(),
                store_credentials: None,
                log_format: "json".into(),
                tracing: Default::default(),
                allowed_images: vec!["registry.example.com/team/".into()],
                allowed_jwks_urls: vec!["https://idp.example.com/".into()],
                operator_namespace: "tractor-system".into(),
                admin_token: tractor::controller::access::AdminToken::from_token(
                    "controller-token".into(),
                ),
            },
            metrics: ControllerMetrics::default(),
            router: router.clone(),
            reporter: Reporter { controller: "tractor".into(), instance: None },
            now: Box::new(move || {
                Timestamp::from_second(now.load(Ordering::SeqCst)).expect("a time in range")
            }),
        });
        Cluster { api, router, clock, ctx }
    }

    /// The ModelDeployment as a person's `kubectl apply` leaves it: the spec
    /// replaced, the generation counted up when it changed, the status kept.
    fn apply_spec(&self, spec: &ModelDeploymentSpec) -> ModelDeployment {
        let spec = serde_json::to_value(spec).expect("a spec as JSON");
        let mut md = self.api.get(MD).unwrap_or_else(|| {
            json!({ "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
                "metadata": { "name": "digits", "namespace": "default", "uid": "uid-1", "generation": 0 } })
        });
        if md["spec"] != spec {
            let generation = md["metadata"]["generation"].as_i64().unwrap_or(0) + 1;
            md["metadata"]["generation"] = json!(generation);
            md["spec"] = spec;
        }
        self.api.put(MD, md.clone());
        serde_json::from_value(md).expect("a ModelDeployment")
    }

    /// A version's `serve` as its Deployment's container runs it.
    fn serve_of(&self, deployment: &Deployment) -> Serve {
        let pod =
            deployment.spec.as_ref().and_then(|s| s.template.spec.clone()).unwrap_or_default();
        let container = &pod.containers[0];
        let args = container.args.clone().unwrap_or_default();
        assert_eq!(args.first().map(String::as_str), Some("serve"), "{args:?}");
        let flag_of = env_flags();
        let from_env = container.env.iter().flatten().filter_map(|e| {
            flag_of
                .get(e.name.as_str())
                .map(|flag| (flag.to_string(), e.value.clone().unwrap_or_default()))
        });
        let from_args: Vec<(String, String)> = args[1..]
            .chunks(2)
            .map(|p| (p[0].clone(), p.get(1).cloned().unwrap_or_default()))
            .collect();
        let read = |path: &str| -> Option<Value> {
            // The file is a key of the ConfigMap mounted at its directory.
            let (dir, key) = path.rsplit_once('/')?;
            let mount = container.volume_mounts.iter().flatten().find(|m| m.mount_path == dir)?;
            let volume = pod.volumes.iter().flatten().find(|v| v.name == mount.name)?;
            let name = &volume.config_map.as_ref()?.name;
            let cm = self.api.get(&format!("{CONFIGMAPS}/{name}"))?;
            serde_json::from_str(cm["data"][key].as_str()?).ok()
        };
        Serve::from_flags(from_env.chain(from_args), read)
    }
}

/// The flag each `TRACTOR_*` variable of a `serve` container stands for,
/// from the contract's own table (every optional flag present).
fn env_flags() -> BTreeMap<&'static str, &'static str> {
    let spec = conformance::spec("1", conformance::PROCESSING);
    let valid = tractor::crd::validate(&spec).expect("a valid spec");
    let artifact = ServedArtifact { version: "1", uri: "m.onnx", sha256: Some("a") };
    let at = ServePlacement {
        host: Some("h".into()),
        port: 1,
        grpc_port: 2,
        processing_file: "p".into(),
    };
    args::serve(&valid, &artifact, &at).args.iter().filter_map(|a| Some((a.env?, a.flag))).collect()
}

impl Executor for Cluster {
    async fn tick(
        &mut self,
        spec: &ModelDeploymentSpec,
        figures: Option<CanaryFigures>,
        now: Timestamp,
    ) -> Seen {
        self.clock.store(now.as_second(), Ordering::SeqCst);
        *self.router.figures.lock().unwrap() = figures;
        let md = self.apply_spec(spec);
        if let Err(e) = controller::reconcile(Arc::new(md), self.ctx.clone()).await {
            panic!("reconcile failed: {e}");
        }
        self.api.pods_become_ready();

        let md = self.api.get(MD).expect("the ModelDeployment");
        let status: ModelDeploymentStatus =
            serde_json::from_value(md["status"].clone()).unwrap_or_default();
        let table: RouteTable = self
            .api
            .get(&format!("{CONFIGMAPS}/digits-routes"))
            .and_then(|cm| serde_json::from_str(cm["data"]["routes.json"].as_str()?).ok())
            .unwrap_or_default();
        let serving = self
            .api
            .list(DEPLOYMENTS, &[("app.kubernetes.io/component", "serve")])
            .into_iter()
            .map(|d| serde_json::from_value::<Deployment>(d).expect("a Deployment"))
            .filter(|d| d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0) > 0)
            .map(|d| {
                let version =
                    d.metadata.labels.as_ref().and_then(|l| l.get("tractor.dev/version")).cloned();
                (version.expect("a version label"), self.serve_of(&d))
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

    async fn stop(self) {}
}

async fn run(scenario: Scenario) {
    conformance::run(scenario, Cluster::new()).await;
}

scenario_tests!(run);
