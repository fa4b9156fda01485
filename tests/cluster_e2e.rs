//! End-to-end against a real cluster (kind, k3d), only when
//! `TRACTOR_E2E_KUBECONFIG` points at one; otherwise it says why it skips.
//!
//! ```text
//! kind create cluster --name tractor
//! kind get kubeconfig --name tractor > /tmp/kind.yaml
//! docker build -t tractor:base . && docker build -t tractor:e2e -f tests/e2e/Dockerfile tests/models
//! kind load docker-image tractor:e2e --name tractor
//! TRACTOR_E2E_KUBECONFIG=/tmp/kind.yaml TRACTOR_E2E_IMAGE=tractor:e2e cargo test --test cluster_e2e -- --nocapture
//! ```
//!
//! It creates a namespace, installs the CRDs, runs the controller in this
//! process, deploys a model baked into the image, waits for Ready, changes
//! the version and waits for the promotion, then deletes the namespace.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::events::Reporter;
use kube::{Client, CustomResourceExt};
use serde_json::json;

use tractor::controller::{self, ControllerMetrics, HttpRouterStats, OperatorConfig};
use tractor::crd::{ModelDeployment, ModelVersion, Phase};

async fn wait_for(
    what: &str,
    api: &Api<ModelDeployment>,
    name: &str,
    ok: impl Fn(&ModelDeployment) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Ok(md) = api.get(name).await
            && ok(&md)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not happen within 5 minutes");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

#[tokio::test]
async fn deploys_and_promotes_on_a_real_cluster() {
    let Ok(path) = std::env::var("TRACTOR_E2E_KUBECONFIG") else {
        eprintln!(
            "skipping: TRACTOR_E2E_KUBECONFIG is not set (see this file's header to run it against kind)"
        );
        return;
    };
    let image = std::env::var("TRACTOR_E2E_IMAGE").unwrap_or_else(|_| "tractor:e2e".into());
    let kubeconfig = Kubeconfig::read_from(&path).expect("read the kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = Client::try_from(config).unwrap();

    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in [ModelDeployment::crd(), ModelVersion::crd()] {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(&name, &PatchParams::apply("tractor-e2e").force(), &Patch::Apply(&crd))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let namespace = format!("tractor-e2e-{}", Timestamp::now().as_second());
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": namespace } })).unwrap(),
        )
        .await
        .unwrap();

    let ctx = Arc::new(controller::Context {
        client: client.clone(),
        config: OperatorConfig {
            image: image.clone(),
            artifact_store: "file:///tmp/tractor-artifacts".into(),
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
        router: Arc::new(HttpRouterStats::new(
            client.clone(),
            &tractor::controller::access::AdminToken::from_token("controller-token".into()),
        )),
        reporter: Reporter { controller: "tractor-e2e".into(), instance: None },
        now: Box::new(Timestamp::now),
    });
    let running = tokio::spawn(controller::run(ctx));

    let mds: Api<ModelDeployment> = Api::namespaced(client.clone(), &namespace);
    let spec = |version: &str| {
        json!({
            "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
            "metadata": { "name": "digits" },
            "spec": {
                "model": { "name": "digits", "version": version,
                           "source": { "uri": format!("file:///models/digits-mlp-v{version}.onnx") } },
                // The test process cannot reach the router's Service from
                // outside the cluster: no figures, which counts as a pass here.
                "rollout": { "steps": [{ "weight": 50, "pause": "5s" }],
                             "analysis": { "interval": "5s", "onNoData": "pass" } }
            }
        })
    };
    let first: ModelDeployment = serde_json::from_value(spec("1")).unwrap();
    mds.create(&PostParams::default(), &first).await.unwrap();
    wait_for("the first deployment", &mds, "digits", |md| {
        md.status.as_ref().is_some_and(|s| s.phase == Phase::Succeeded)
    })
    .await;
    mds.patch(
        "digits",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": { "model": spec("2")["spec"]["model"] } })),
    )
    .await
    .unwrap();
    wait_for("the promotion of version 2", &mds, "digits", |md| {
        md.status.as_ref().and_then(|s| s.stable.as_ref()).is_some_and(|s| s.version == "2")
    })
    .await;
    running.abort();
    namespaces.delete(&namespace, &DeleteParams::default()).await.unwrap();
}
