//! The real `reconcile` against a mocked API server (kube-rs's
//! `tower_test::mock::pair` behind `kube::Client`): each scenario names the
//! exact requests the reconciler must send, in order, and checks the status
//! it writes. A missing or extra call fails the test within a second.

#[path = "common/fake_router.rs"]
mod fake_router;

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::DynamicObject;
use kube::client::Body;
use kube::runtime::events::Reporter;
use serde_json::{Value, json};

use tractor::controller::{self, Context, ControllerMetrics, OperatorConfig};
use tractor::crd::ModelDeployment;

use fake_router::FakeRouter;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

const NOW: i64 = 1_800_000_000;

fn context(client: Client, router: Arc<FakeRouter>, now: i64) -> Arc<Context> {
    Arc::new(Context {
        client,
        config: OperatorConfig {
            image: "tractor:test".into(),
            artifact_store: "s3://artifacts/tractor".into(),
            store_credentials: Some("store-creds".into()),
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
        router,
        reporter: Reporter { controller: "tractor".into(), instance: None },
        now: Box::new(move || Timestamp::from_second(now).unwrap()),
    })
}

fn model_deployment(spec: Value, status: Value, annotations: Value) -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "tractor.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": { "name": "digits", "namespace": "default", "uid": "uid-1", "generation": 1, "annotations": annotations },
        "spec": spec,
        "status": status,
    }))
    .unwrap()
}

fn spec(version: &str, extra: Value) -> Value {
    let mut spec = json!({
        "model": { "name": "digits", "version": version, "source": { "uri": format!("s3://models/digits-{version}.onnx") } },
        "rollout": {
            "steps": [{ "weight": 10, "pause": "1m" }, { "weight": 50, "pause": "1m" }],
            "analysis": { "interval": "30s", "minRequests": 10, "maxErrorRate": 0.05, "failureLimit": 2 }
        }
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// One expected call after another, each answered; fails on anything else.
struct Verifier {
    handle: Handle,
    /// The status the ModelDeployment had, to apply the status patch to.
    old_status: Value,
    /// Bodies of the calls seen, for assertions after the scenario.
    seen: Vec<(Method, String, Value)>,
}

impl Verifier {
    async fn expect(
        self,
        method: Method,
        path_prefix: &str,
        answer: impl FnOnce(&Value) -> Value,
    ) -> Self {
        self.expect_status(method, path_prefix, http::StatusCode::OK, answer).await
    }

    async fn expect_status(
        mut self,
        method: Method,
        path_prefix: &str,
        code: http::StatusCode,
        answer: impl FnOnce(&Value) -> Value,
    ) -> Self {
        let (request, send) =
            tokio::time::timeout(Duration::from_secs(1), self.handle.next_request())
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {method} {path_prefix}"))
                .unwrap_or_else(|| {
                    let seen: Vec<String> =
                        self.seen.iter().map(|(m, u, _)| format!("{m} {u}")).collect();
                    panic!("reconcile ended before {method} {path_prefix}; calls so far: {seen:#?}")
                });
        let uri = request.uri().to_string();
        assert_eq!(request.method(), method, "{uri}");
        assert!(uri.starts_with(path_prefix), "expected {method} {path_prefix}, got {uri}");
        let bytes = http_body_util::BodyExt::collect(request.into_body()).await.unwrap().to_bytes();
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        let reply = answer(&body);
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                .unwrap(),
        );
        self.seen.push((method, uri, body));
        self
    }

    async fn list(self, path: &str, items: Value) -> Self {
        self.expect(
            Method::GET,
            path,
            |_| json!({ "apiVersion": "v1", "kind": "List", "metadata": {}, "items": items }),
        )
        .await
    }

    async fn apply(self, path: &str) -> Self {
        self.expect(Method::PATCH, path, |body| body.clone()).await
    }

    /// A version's Deployment and Service, applied in that order.
    async fn serving(self, version: &str) -> Self {
        self.apply(&format!("{DEPLOYMENTS}/digits-v{version}?"))
            .await
            .apply(&format!("{SERVICES}/digits-v{version}?"))
            .await
    }

    async fn delete(self, path: &str) -> Self {
        self.expect(Method::DELETE, path, |_| {
            json!({ "kind": "Status", "apiVersion": "v1", "status": "Success", "metadata": {} })
        })
        .await
    }

    /// The router's token Secret, created (not applied) before any
    /// version, and the serving pods' NetworkPolicy.
    async fn access(self) -> Self {
        self.expect(Method::POST, SECRETS, |body| body.clone())
            .await
            .apply(&format!("{NETWORKPOLICIES}/digits-serve?"))
            .await
    }

    /// The router's account, role, binding, routes, Deployment, its
    /// PodDisruptionBudget (two routers by default), Service, admin Service
    /// and NetworkPolicy, applied in that order whenever some
    /// version takes traffic.
    async fn router(self) -> Self {
        self.router_with(false).await
    }

    /// The same, with the controller's admin auth file when the router
    /// checks callers.
    async fn router_with(self, checks_callers: bool) -> Self {
        let v = self
            .apply(&format!("{SERVICEACCOUNTS}/digits-router?"))
            .await
            .apply(&format!("{ROLES}/digits-router?"))
            .await
            .apply(&format!("{ROLEBINDINGS}/digits-router?"))
            .await;
        let v = if checks_callers {
            v.apply(&format!("{CONFIGMAPS}/digits-router-auth?")).await
        } else {
            v
        };
        v.apply(&format!("{CONFIGMAPS}/digits-routes?"))
            .await
            .apply(&format!("{DEPLOYMENTS}/digits?"))
            .await
            .apply(&format!("{BUDGETS}/digits?"))
            .await
            .apply(&format!("{SERVICES}/digits?"))
            .await
            .apply(&format!("{SERVICES}/digits-admin?"))
            .await
            .apply(&format!("{NETWORKPOLICIES}/digits-router?"))
            .await
    }

    /// Everything a reconcile applies when `versions` run: the access
    /// objects, each version, the router; then the status.
    async fn applies(self, versions: &[&str], checks_callers: bool) -> Self {
        let mut v = self.access().await;
        for version in versions {
            v = v.serving(version).await;
        }
        v.router_with(checks_callers).await.patch_status().await
    }

    /// The status subresource answers with the whole object.
    async fn patch_status(self) -> Self {
        self.expect(Method::PATCH, &format!("{MD}/status?"), |body| {
            json!({ "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
                    "metadata": { "name": "digits", "namespace": "default" },
                    "spec": spec("1", json!({})), "status": body["status"] })
        })
        .await
    }

    async fn event(self) -> Self {
        self.expect(Method::POST, "/apis/events.k8s.io/v1/namespaces/default/events", |body| {
            body.clone()
        })
        .await
    }

    /// The raw merge patch sent to the status subresource.
    fn raw_status_patch(&self) -> Value {
        self.seen
            .iter()
            .rev()
            .find(|(m, uri, _)| {
                *m == Method::PATCH && uri.contains("/modeldeployments/digits/status")
            })
            .map(|(_, _, body)| body["status"].clone())
            .expect("a status patch")
    }

    /// The status after the patch, as the API server would store it.
    fn status_patch(&self) -> Value {
        let mut status = self.old_status.clone();
        json_patch::merge(&mut status, &self.raw_status_patch());
        status
    }

    fn applied(&self, path: &str) -> Value {
        self.seen
            .iter()
            .find(|(_, uri, _)| uri.starts_with(path))
            .map(|(_, _, b)| b.clone())
            .unwrap()
    }

    /// The backends of the route table the router was given.
    fn backends(&self) -> Value {
        let routes = self.applied(&format!("{CONFIGMAPS}/digits-routes?"));
        let table: Value =
            serde_json::from_str(routes["data"]["routes.json"].as_str().expect("routes.json"))
                .expect("a JSON route table");
        table["backends"].clone()
    }

    fn done(mut self) -> Self {
        if let Some(Some((request, _))) =
            futures::FutureExt::now_or_never(self.handle.next_request())
        {
            panic!("unexpected extra call: {} {}", request.method(), request.uri());
        }
        self
    }
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const SERVICES: &str = "/api/v1/namespaces/default/services";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const SERVICEACCOUNTS: &str = "/api/v1/namespaces/default/serviceaccounts";
const ROLES: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/roles";
const ROLEBINDINGS: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces/default/rolebindings";
const MODELVERSIONS: &str = "/apis/tractor.dev/v1alpha1/namespaces/default/modelversions";
const MD: &str = "/apis/tractor.dev/v1alpha1/namespaces/default/modeldeployments/digits";
const SECRETS: &str = "/api/v1/namespaces/default/secrets";
const NETWORKPOLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies";
const BUDGETS: &str = "/apis/policy/v1/namespaces/default/poddisruptionbudgets";

fn ready_deployment(version: &str, ready: i32) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "name": format!("digits-v{version}"), "namespace": "default",
            "labels": { "tractor.dev/deployment": "digits", "tractor.dev/version": version, "app.kubernetes.io/component": "serve" } },
        "status": { "readyReplicas": ready }
    })
}

/// Runs one reconcile of `md` as the watch delivers it (untyped, through
/// `reconcile_object`), answering the calls `script` expects.
async fn run(
    md: ModelDeployment,
    router: Arc<FakeRouter>,
    now: i64,
    script: impl AsyncFnOnce(Verifier) -> Verifier,
) -> Verifier {
    run_object(serde_json::to_value(&md).unwrap(), router, now, script).await
}

/// The same for an object as the API server stores it, which the types may
/// not be able to read.
async fn run_object(
    object: Value,
    router: Arc<FakeRouter>,
    now: i64,
    script: impl AsyncFnOnce(Verifier) -> Verifier,
) -> Verifier {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(service, "default");
    let ctx = context(client, router, now);
    let old_status = match &object["status"] {
        Value::Null => json!({}),
        status => status.clone(),
    };
    let verifier = Verifier { handle, old_status, seen: Vec::new() };
    let object: DynamicObject = serde_json::from_value(object).unwrap();
    let reconciling = tokio::spawn(controller::reconcile_object(Arc::new(object), ctx));
    let scripted =
        futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(script(verifier))).await;
    let verifier = match scripted {
        Ok(v) => v,
        Err(panic) => {
            let result = tokio::time::timeout(Duration::from_secs(1), reconciling).await;
            panic!("{:?}\nreconcile returned: {result:?}", panic.downcast_ref::<String>());
        }
    };
    let action = tokio::time::timeout(Duration::from_secs(1), reconciling)
        .await
        .expect("reconcile hangs")
        .unwrap();
    action.expect("reconcile succeeds");
    verifier.done()
}

#[tokio::test]
async fn first_deployment_creates_the_version_the_router_and_a_status() {
    let v = first_reconcile(spec("1", json!({})), false).await;
    let deployment = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    assert!(
        v.seen[4].1.starts_with(&format!("{DEPLOYMENTS}/digits-v1?"))
            && v.seen[4].1.contains("fieldManager=tractor")
            && v.seen[4].1.contains("force=true"),
        "server-side apply"
    );
    assert_eq!(deployment["metadata"]["ownerReferences"][0]["kind"], "ModelDeployment");
    assert_eq!(deployment["metadata"]["labels"]["app.kubernetes.io/managed-by"], "tractor");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"], json!(["serve"]));
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .contains(&json!({ "name": "TRACTOR_MODEL", "value": "s3://models/digits-1.onnx" }))
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/v2/health/ready");
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "store-creds");
    assert_eq!(
        v.backends(),
        json!([{
            "version": "1",
            "url": "http://digits-v1.default.svc:8000",
            "grpc": "http://digits-v1.default.svc:8001",
            "weight": 100
        }])
    );
    let role = v.applied(&format!("{ROLES}/digits-router?"));
    assert_eq!(
        role["rules"][0]["resourceNames"],
        json!(["digits-routes"]),
        "the router reads its routes and nothing else"
    );
    let router = v.applied(&format!("{DEPLOYMENTS}/digits?"));
    assert_eq!(router["spec"]["template"]["spec"]["serviceAccountName"], "digits-router");
    let status = v.status_patch();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["stable"]["version"], "1");
    assert_eq!(status["stable"]["weight"], 100);
    assert!(status["stable"]["pendingSince"].is_string(), "{status:#}");
    assert!(status["canary"].is_null(), "{status:#}");
}

#[tokio::test]
async fn ready_pods_make_it_stable() {
    let first = model_deployment(spec("1", json!({})), Value::Null, json!({}));
    let status = serde_json::to_value(
        tractor::plan::plan(
            &tractor::crd::validate(&first.spec).unwrap(),
            &Default::default(),
            Timestamp::from_second(NOW).unwrap(),
        )
        .status,
    )
    .unwrap();
    let md = model_deployment(spec("1", json!({})), status, json!({}));
    let v = run(md, Arc::default(), NOW + 10, async |v| {
        v.list(DEPLOYMENTS, json!([ready_deployment("1", 1)]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .applies(&["1"], false)
            .await
            .event()
            .await
    })
    .await;
    let status = v.status_patch();
    assert_eq!(status["phase"], "Succeeded");
    assert_eq!(status["stable"]["version"], "1");
    assert_eq!(condition(&status, "Ready")["status"], "True");
}

fn stable_status(version: &str) -> Value {
    json!({
        "phase": "Succeeded",
        "stable": { "version": version, "uri": format!("s3://models/digits-{version}.onnx"), "weight": 100 },
        "history": [{ "version": version, "outcome": "Promoted", "time": "2027-01-15T08:00:00Z",
                      "uri": format!("s3://models/digits-{version}.onnx"), "reason": "first deployment" }]
    })
}

#[tokio::test]
async fn a_version_change_starts_a_canary_next_to_the_stable() {
    let md = model_deployment(spec("2", json!({})), stable_status("1"), json!({}));
    let v = run(md, Arc::default(), NOW, async |v| {
        v.list(DEPLOYMENTS, json!([ready_deployment("1", 1)]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .applies(&["1", "2"], false)
            .await
            .event()
            .await
    })
    .await;
    let status = v.status_patch();
    assert_eq!(status["phase"], "Progressing");
    assert_eq!(status["stable"]["version"], "1");
    assert_eq!(status["canary"]["version"], "2");
    assert_eq!(
        v.backends(),
        json!([{
            "version": "1",
            "url": "http://digits-v1.default.svc:8000",
            "grpc": "http://digits-v1.default.svc:8001",
            "weight": 100
        }]),
        "no weight before the canary is ready"
    );
}

#[tokio::test]
async fn an_optimization_result_is_registered_with_its_lineage() {
    let extra = json!({ "optimize": { "passes": [{ "type": "fold" }] } });
    let mut s = spec("1", extra);
    s["model"]["source"]["sha256"] = json!("a".repeat(64));
    let md = model_deployment(s, json!({ "phase": "Optimizing" }), json!({}));
    let message =
        json!({ "uri": "s3://artifacts/tractor/default/digits/v1.onnx", "sha256": "b".repeat(64),
                          "sizeBytes": 1234, "metrics": { "accuracy": 0.975 } })
        .to_string();
    let v = run(md, Arc::default(), NOW, async |v| {
        v.list(DEPLOYMENTS, json!([]))
            .await
            .expect(Method::GET, "/apis/batch/v1/namespaces/default/jobs/digits-optimize-v1", |_| {
                json!({ "apiVersion": "batch/v1", "kind": "Job", "metadata": { "name": "digits-optimize-v1" },
                        "status": { "succeeded": 1 } })
            })
            .await
            .list("/api/v1/namespaces/default/pods?&labelSelector=job-name%3Ddigits-optimize-v1", json!([{
                "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "p" },
                "status": { "containerStatuses": [{ "name": "optimize", "image": "i", "imageID": "", "ready": false,
                    "restartCount": 0, "state": { "terminated": { "exitCode": 0, "message": message } } }] } }]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .access()
            .await
            .serving("1")
            .await
            .expect(Method::POST, MODELVERSIONS, |body| body.clone())
            .await
            .router()
            .await
            .delete("/apis/batch/v1/namespaces/default/jobs/digits-optimize-v1")
            .await
            .delete(&format!("{CONFIGMAPS}/digits-optimize-v1"))
            .await
            .patch_status()
            .await
            .event()
            .await
            .event()
            .await
    })
    .await;
    let mv = v
        .seen
        .iter()
        .find(|(m, uri, _)| *m == Method::POST && uri.starts_with(MODELVERSIONS))
        .map(|(_, _, b)| b.clone())
        .unwrap();
    assert_eq!(mv["spec"]["version"], "1");
    assert_eq!(mv["spec"]["parent"], "a".repeat(64));
    assert_eq!(mv["spec"]["artifact"]["sha256"], "b".repeat(64));
    assert_eq!(mv["spec"]["metrics"]["accuracy"], 0.975);
    assert_eq!(mv["metadata"]["name"], "digits-v1");
    let deployment = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({ "name": "TRACTOR_SHA256", "value": "b".repeat(64) }))
    );
}

#[tokio::test]
async fn a_failing_canary_is_rolled_back_and_its_pods_removed() {
    let mut status = stable_status("1");
    status["phase"] = json!("Progressing");
    status["canary"] = json!({
        "version": "2", "uri": "s3://models/digits-2.onnx", "weight": 10, "step": 0,
        "started": "2027-01-15T08:00:00Z", "stepStarted": "2027-01-15T08:00:00Z", "failures": 1
    });
    let md = model_deployment(spec("2", json!({})), status, json!({}));
    let router = Arc::new(FakeRouter::default());
    router.serve(200, 40);
    // One minute after the step started: two intervals are due.
    let step_started: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
    let now = step_started.as_second() + 60;
    let v = run(md, router.clone(), now, async |v| {
        v.list(DEPLOYMENTS, json!([ready_deployment("1", 1), ready_deployment("2", 1)]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .access()
            .await
            .serving("1")
            .await
            .router()
            .await
            .delete(&format!("{SERVICES}/digits-v2"))
            .await
            .delete(&format!("{DEPLOYMENTS}/digits-v2"))
            .await
            .patch_status()
            .await
            .event()
            .await
            .event()
            .await
    })
    .await;
    let status = v.status_patch();
    assert_eq!(status["phase"], "RolledBack");
    assert!(status.get("canary").is_none(), "the canary is gone from the stored status");
    assert_eq!(
        v.raw_status_patch()["canary"],
        Value::Null,
        "a merge patch removes a field only by sending null"
    );
    assert!(v.raw_status_patch().as_object().unwrap().contains_key("canary"));
    let last = status["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["outcome"], "RolledBack");
    assert!(last["reason"].as_str().unwrap().contains("error rate 20.00% > 5.00%"), "{last}");
    assert_eq!(
        v.backends(),
        json!([{
            "version": "1",
            "url": "http://digits-v1.default.svc:8000",
            "grpc": "http://digits-v1.default.svc:8001",
            "weight": 100
        }])
    );
    assert_eq!(router.resets(), 1, "the analysis consumed the window");
}

#[tokio::test]
async fn an_invalid_spec_becomes_a_degraded_condition() {
    let mut s = spec("1", json!({}));
    s["rollout"]["steps"] = json!([{ "weight": 50 }, { "weight": 20 }]);
    let status = refused_reconcile(s).await.status_patch();
    let degraded = condition(&status, "Degraded");
    assert_eq!(degraded["status"], "True");
    assert_eq!(degraded["reason"], "InvalidSpec");
    assert!(
        degraded["message"].as_str().unwrap().contains("spec.rollout.steps[1].weight"),
        "{degraded}"
    );
}

#[tokio::test]
async fn pods_that_keep_stopping_put_their_reason_in_the_status() {
    let md = model_deployment(
        spec("1", json!({})),
        json!({ "phase": "Progressing",
        "canary": { "version": "1", "uri": "s3://models/digits-1.onnx", "weight": 100, "step": 0,
                    "started": "2027-01-15T08:00:00Z" } }),
        json!({}),
    );
    let mut deployment = ready_deployment("1", 0);
    deployment["spec"] = json!({ "replicas": 1, "selector": {}, "template": {} });
    let reason = "processing spec inputs[0].image.width: 28 cannot produce model input \"image\", whose axis 3 is 8";
    let started: Timestamp = "2027-01-15T08:00:00Z".parse().unwrap();
    let v = run(md, Arc::default(), started.as_second() + 30, async |v| {
        v.list(DEPLOYMENTS, json!([deployment]))
            .await
            .list("/api/v1/namespaces/default/pods?&labelSelector=tractor.dev%2Fdeployment%3Ddigits%2Capp.kubernetes.io%2Fcomponent%3Dserve%2Ctractor.dev%2Fversion%3D1", json!([{
                "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "digits-v1-abc" },
                "status": { "containerStatuses": [{ "name": "serve", "image": "i", "imageID": "", "ready": false, "restartCount": 3,
                    "state": { "waiting": { "reason": "CrashLoopBackOff" } },
                    "lastState": { "terminated": { "exitCode": 1, "message": reason } } }] } }]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .applies(&["1"], false)
            .await
    })
    .await;
    let status = v.status_patch();
    assert!(status["message"].as_str().unwrap().contains("inputs[0].image.width: 28"), "{status}");
}

/// Issue 11: the schema let `passes: [{type: quantize}]` through, the types
/// cannot read it, and the controller used to stop on it. Now the object
/// gets a Degraded condition and an Event naming the field, written through
/// the untyped API, and nothing else is touched.
#[tokio::test]
async fn an_object_the_types_cannot_read_is_degraded_and_named() {
    let mut object =
        serde_json::to_value(model_deployment(spec("2", json!({})), stable_status("1"), json!({})))
            .unwrap();
    object["spec"]["optimize"] = json!({ "passes": [{ "type": "fold" }, { "type": "quantize" }] });
    let v = run_object(object.clone(), Arc::default(), NOW, async |v| {
        v.patch_status().await.event().await
    })
    .await;
    let status = v.status_patch();
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("InvalidSpec"))
    );
    let message = degraded["message"].as_str().unwrap();
    assert!(message.contains("spec.optimize.passes[1]") && message.contains("`mode`"), "{message}");
    assert_eq!(status["stable"]["version"], "1", "what the status said stays: {status}");
    let event = &v.seen.last().unwrap().2;
    assert_eq!(
        (event["type"].as_str(), event["reason"].as_str()),
        (Some("Warning"), Some("InvalidSpec"))
    );
    assert!(
        event["note"].as_str().unwrap().contains("spec.optimize.passes[1]: missing field `mode`"),
        "{event}"
    );
    assert_eq!(event["regarding"]["name"], "digits");

    // Looked at again (a requeue, or the watch event of that very status
    // write): nothing new to say, so nothing is written.
    object["status"] = status;
    run_object(object, Arc::default(), NOW + 60, async |v| v).await;
}

/// A status the types cannot read (written by hand, or by an older
/// controller) does not stop the controller either: the Degraded condition
/// replaces what cannot be read.
#[tokio::test]
async fn a_status_the_types_cannot_read_is_replaced_by_a_degraded_one() {
    let mut object =
        serde_json::to_value(model_deployment(spec("1", json!({})), Value::Null, json!({})))
            .unwrap();
    object["status"] = json!({ "phase": "Sideways", "stable": { "version": "1", "weight": 100 } });
    let v = run_object(object, Arc::default(), NOW, async |v| v.patch_status().await.event().await)
        .await;
    let status = v.status_patch();
    assert_eq!(status["phase"], "Pending", "{status}");
    assert!(status.get("stable").is_none(), "{status}");
    assert!(status["message"].as_str().unwrap().contains("status.phase"), "{status}");
}

/// The first reconcile of `spec`: everything a first deployment applies.
async fn first_reconcile(spec: Value, checks_callers: bool) -> Verifier {
    let md = model_deployment(spec, Value::Null, json!({}));
    run(md, Arc::default(), NOW, async move |v| {
        v.list(DEPLOYMENTS, json!([]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .applies(&["1"], checks_callers)
            .await
            .event()
            .await
    })
    .await
}

/// The reconcile of a spec the controller refuses: a status and an
/// Event, nothing applied.
async fn refused_reconcile(spec: Value) -> Verifier {
    let md = model_deployment(spec, Value::Null, json!({}));
    run(md, Arc::default(), NOW, async |v| v.patch_status().await.event().await).await
}

/// The condition of `kind` in a status.
fn condition<'a>(status: &'a Value, kind: &str) -> &'a Value {
    let conditions = status["conditions"].as_array().expect("conditions");
    conditions.iter().find(|c| c["type"] == kind).unwrap_or_else(|| panic!("no {kind}: {status}"))
}

fn pod_of(deployment: &Value) -> &Value {
    &deployment["spec"]["template"]["spec"]
}

/// `--flag value` of a container's args, or its `TRACTOR_*` variable.
fn flag(container: &Value, flag: &str, env: &str) -> Option<String> {
    let args: Vec<&str> =
        container["args"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if let Some(at) = args.iter().position(|a| *a == flag) {
        return args.get(at + 1).map(|v| v.to_string());
    }
    container["env"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["name"] == env)
        .and_then(|e| e["value"].as_str().map(str::to_string))
}

/// The volume a container mounts at `dir`, as the pod declares it.
fn volume_at<'a>(deployment: &'a Value, dir: &str) -> &'a Value {
    let pod = pod_of(deployment);
    let mount = pod["containers"][0]["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["mountPath"] == dir)
        .unwrap_or_else(|| panic!("nothing mounted at {dir}: {pod}"));
    assert_eq!(mount["readOnly"], true, "{mount}");
    pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
}

fn sha256_hex(text: &str) -> String {
    tractor::store::sha256_hex(text.as_bytes())
}

/// Issue 12: `spec.serving.auth` reaches the router as mounted files and
/// flags; the serving pods get an auth file accepting only the router's
/// per-deployment token, which they never hold themselves.
#[tokio::test]
async fn auth_secrets_are_mounted_into_the_router_and_passed_as_flags() {
    let auth = json!({ "auth": {
        "tokenSecretRef": { "name": "digits-callers" },
        "jwks": { "configMapRef": { "name": "issuer-keys", "key": "keys.json" },
                  "issuer": "https://issuer.example", "audience": "tractor",
                  "rps": 20, "quota": 1000 },
        "tls": { "secretRef": { "name": "digits-tls" } } } });
    let v = first_reconcile(spec("1", json!({ "serving": auth })), true).await;

    let secret = v.applied(SECRETS);
    assert_eq!(secret["metadata"]["name"], "digits-backend-token");
    assert_eq!(secret["metadata"]["ownerReferences"][0]["kind"], "ModelDeployment");
    let token = secret["stringData"]["token"].as_str().expect("a token").to_string();
    assert!(token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()), "{token}");
    let serve_file = secret["stringData"]["auth.yaml"].as_str().unwrap();
    let specs = tractor::auth::parse_auth_file_text(serve_file).unwrap();
    assert_eq!(specs.len(), 1, "{serve_file}");
    assert!(serve_file.contains(&sha256_hex(&token)), "{serve_file}");
    assert!(!serve_file.contains(&token), "the serving pods hold the digest only");
    assert!(serve_file.contains("scopes: [infer, metadata, metrics, raw]"), "{serve_file}");

    let router = v.applied(&format!("{DEPLOYMENTS}/digits?"));
    let container = &pod_of(&router)["containers"][0];
    assert_eq!(
        flag(container, "--auth-file", "TRACTOR_AUTH_FILE").as_deref(),
        Some("/etc/tractor/auth/callers/auth.yaml,/etc/tractor/auth/admin/admin.yaml")
    );
    assert_eq!(
        flag(container, "--jwks", "TRACTOR_JWKS").as_deref(),
        Some("/etc/tractor/auth/jwks/keys.json")
    );
    assert_eq!(
        flag(container, "--jwt-issuer", "TRACTOR_JWT_ISSUER").as_deref(),
        Some("https://issuer.example")
    );
    assert_eq!(
        flag(container, "--jwt-audience", "TRACTOR_JWT_AUDIENCE").as_deref(),
        Some("tractor")
    );
    assert_eq!(flag(container, "--jwt-rps", "TRACTOR_JWT_RPS").as_deref(), Some("20"));
    assert_eq!(flag(container, "--jwt-burst", "TRACTOR_JWT_BURST"), None);
    assert_eq!(flag(container, "--jwt-quota", "TRACTOR_JWT_QUOTA").as_deref(), Some("1000"));
    assert_eq!(
        flag(container, "--tls-cert", "TRACTOR_TLS_CERT").as_deref(),
        Some("/etc/tractor/tls/tls.crt")
    );
    assert_eq!(
        flag(container, "--tls-key", "TRACTOR_TLS_KEY").as_deref(),
        Some("/etc/tractor/tls/tls.key")
    );
    assert_eq!(
        flag(container, "--backend-token-file", "TRACTOR_BACKEND_TOKEN_FILE").as_deref(),
        Some("/etc/tractor/auth/backend/token")
    );
    let callers = volume_at(&router, "/etc/tractor/auth/callers");
    assert_eq!(callers["secret"]["secretName"], "digits-callers");
    assert_eq!(callers["secret"]["items"], json!([{ "key": "auth.yaml", "path": "auth.yaml" }]));
    let jwks = volume_at(&router, "/etc/tractor/auth/jwks");
    assert_eq!(jwks["configMap"]["name"], "issuer-keys");
    let tls = volume_at(&router, "/etc/tractor/tls");
    assert_eq!(tls["secret"]["secretName"], "digits-tls");
    let backend = volume_at(&router, "/etc/tractor/auth/backend");
    assert_eq!(backend["secret"]["secretName"], "digits-backend-token");
    assert_eq!(backend["secret"]["items"], json!([{ "key": "token", "path": "token" }]));
    let admin = volume_at(&router, "/etc/tractor/auth/admin");
    assert_eq!(admin["configMap"]["name"], "digits-router-auth");

    // The controller's token: its digest in the router's admin auth file.
    let admin_file = v.applied(&format!("{CONFIGMAPS}/digits-router-auth?"));
    let admin_file = admin_file["data"]["admin.yaml"].as_str().unwrap();
    tractor::auth::parse_auth_file_text(admin_file).unwrap();
    assert!(admin_file.contains(&sha256_hex("controller-token")), "{admin_file}");
    assert!(admin_file.contains("scopes: [admin, metrics]"), "{admin_file}");

    let serve = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    let container = &pod_of(&serve)["containers"][0];
    assert_eq!(
        flag(container, "--auth-file", "TRACTOR_AUTH_FILE").as_deref(),
        Some("/etc/tractor/auth/serve/auth.yaml")
    );
    let serve_auth = volume_at(&serve, "/etc/tractor/auth/serve");
    assert_eq!(serve_auth["secret"]["secretName"], "digits-backend-token");
    assert_eq!(
        serve_auth["secret"]["items"],
        json!([{ "key": "auth.yaml", "path": "auth.yaml" }]),
        "the serving pods do not get the token itself"
    );
    let text = serve.to_string();
    for other in ["digits-callers", "issuer-keys", "digits-tls"] {
        assert!(!text.contains(other), "the serving pods never see {other}");
    }
}

/// `spec.serving.auth.backendTls`: the versions serve HTTPS and gRPC over
/// TLS with the Secret's certificate and key, their probes say HTTPS, the
/// routing table names them https://, and the router verifies them with
/// the Secret's `ca.crt` only (the versions never get the CA, the router
/// never gets the key).
#[tokio::test]
async fn backend_tls_makes_the_versions_serve_https_verified_by_the_router() {
    let auth =
        json!({ "auth": { "backendTls": { "secretRef": { "name": "digits-backend-tls" } } } });
    let v = first_reconcile(spec("1", json!({ "serving": auth })), false).await;

    let serve = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    let container = &pod_of(&serve)["containers"][0];
    assert_eq!(
        flag(container, "--tls-cert", "TRACTOR_TLS_CERT").as_deref(),
        Some("/etc/tractor/backend-tls/tls.crt")
    );
    assert_eq!(
        flag(container, "--tls-key", "TRACTOR_TLS_KEY").as_deref(),
        Some("/etc/tractor/backend-tls/tls.key")
    );
    let served = volume_at(&serve, "/etc/tractor/backend-tls");
    assert_eq!(served["secret"]["secretName"], "digits-backend-tls");
    assert_eq!(
        served["secret"]["items"],
        json!([{ "key": "tls.crt", "path": "tls.crt" }, { "key": "tls.key", "path": "tls.key" }])
    );
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(container[probe]["httpGet"]["scheme"], "HTTPS", "{probe}: {container}");
    }

    let routes = v.applied(&format!("{CONFIGMAPS}/digits-routes?"));
    let table: Value =
        serde_json::from_str(routes["data"]["routes.json"].as_str().unwrap()).unwrap();
    assert_eq!(table["backends"][0]["url"], "https://digits-v1.default.svc:8000", "{table}");
    assert_eq!(table["backends"][0]["grpc"], "https://digits-v1.default.svc:8001", "{table}");

    let router = v.applied(&format!("{DEPLOYMENTS}/digits?"));
    let container = &pod_of(&router)["containers"][0];
    assert_eq!(
        flag(container, "--backend-ca", "TRACTOR_BACKEND_CA").as_deref(),
        Some("/etc/tractor/backend-tls/ca.crt")
    );
    assert_eq!(
        flag(container, "--tls-cert", "TRACTOR_TLS_CERT"),
        None,
        "the traffic port stays plain"
    );
    let ca = volume_at(&router, "/etc/tractor/backend-tls");
    assert_eq!(ca["secret"]["items"], json!([{ "key": "ca.crt", "path": "ca.crt" }]));
    assert_eq!(flag(container, "--auth-file", "TRACTOR_AUTH_FILE"), None, "callers stay unchecked");
}

/// Without backendTls the versions are plain HTTP inside their NetworkPolicy.
#[tokio::test]
async fn without_backend_tls_the_versions_serve_plain_http() {
    let v = first_reconcile(spec("1", json!({})), false).await;
    let serve = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    let container = &pod_of(&serve)["containers"][0];
    assert_eq!(flag(container, "--tls-cert", "TRACTOR_TLS_CERT"), None);
    assert!(container["readinessProbe"]["httpGet"].get("scheme").is_none(), "{container}");
    let router = v.applied(&format!("{DEPLOYMENTS}/digits?"));
    assert_eq!(flag(&pod_of(&router)["containers"][0], "--backend-ca", "TRACTOR_BACKEND_CA"), None);
}

/// Without `spec.serving.auth` the router checks no callers (so it gets no
/// admin auth file, which would close its traffic port too), but the
/// serving pods still take the router's token only.
#[tokio::test]
async fn without_auth_the_router_is_open_and_the_versions_are_not() {
    let v = first_reconcile(spec("1", json!({})), false).await;
    let router = v.applied(&format!("{DEPLOYMENTS}/digits?"));
    let container = &pod_of(&router)["containers"][0];
    assert_eq!(flag(container, "--auth-file", "TRACTOR_AUTH_FILE"), None);
    assert!(flag(container, "--backend-token-file", "TRACTOR_BACKEND_TOKEN_FILE").is_some());
    let serve = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    assert!(flag(&pod_of(&serve)["containers"][0], "--auth-file", "TRACTOR_AUTH_FILE").is_some());
}

/// The token Secret is created once: a later reconcile's create is refused
/// as existing and the controller goes on with the Secret as it is, never
/// reading, replacing or patching it.
#[tokio::test]
async fn the_router_token_is_created_once_and_kept() {
    let md = model_deployment(spec("1", json!({})), stable_status("1"), json!({}));
    let v = run(md, Arc::default(), NOW, async |v| {
        v.list(DEPLOYMENTS, json!([ready_deployment("1", 1)]))
            .await
            .list(MODELVERSIONS, json!([]))
            .await
            .expect_status(Method::POST, SECRETS, http::StatusCode::CONFLICT, |_| {
                json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "reason": "AlreadyExists", "code": 409,
                        "message": "secrets \"digits-backend-token\" already exists" })
            })
            .await
            .apply(&format!("{NETWORKPOLICIES}/digits-serve?"))
            .await
            .serving("1")
            .await
            .router()
            .await
            .patch_status()
            .await
    })
    .await;
    let secret_calls: Vec<_> =
        v.seen.iter().filter(|(_, uri, _)| uri.contains("/secrets")).collect();
    assert_eq!(secret_calls.len(), 1, "one create, nothing else: {secret_calls:?}");
    let serve = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    assert_eq!(
        volume_at(&serve, "/etc/tractor/auth/serve")["secret"]["secretName"],
        "digits-backend-token"
    );
}

/// Serving pods take traffic from their router and the operator only; the
/// router's admin port is in no traffic Service and takes the operator only.
#[tokio::test]
async fn network_policies_let_only_the_router_and_the_operator_in() {
    let v = first_reconcile(spec("1", json!({})), false).await;
    let controller = json!({
        "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": "tractor-system" } },
        "podSelector": { "matchLabels": { "app.kubernetes.io/name": "tractor",
                                           "app.kubernetes.io/component": "controller" } } });
    let serve = v.applied(&format!("{NETWORKPOLICIES}/digits-serve?"));
    assert_eq!(serve["metadata"]["ownerReferences"][0]["kind"], "ModelDeployment");
    assert_eq!(
        serve["spec"]["podSelector"]["matchLabels"],
        json!({ "app.kubernetes.io/managed-by": "tractor", "tractor.dev/deployment": "digits",
                "app.kubernetes.io/component": "serve" })
    );
    assert_eq!(serve["spec"]["policyTypes"], json!(["Ingress"]));
    assert_eq!(
        serve["spec"]["ingress"],
        json!([{ "from": [
            { "podSelector": { "matchLabels": { "app.kubernetes.io/managed-by": "tractor",
                "tractor.dev/deployment": "digits", "app.kubernetes.io/component": "route" } } },
            controller] }])
    );
    let router = v.applied(&format!("{NETWORKPOLICIES}/digits-router?"));
    assert_eq!(
        router["spec"]["ingress"],
        json!([
            { "ports": [{ "port": 8080, "protocol": "TCP" }, { "port": 8081, "protocol": "TCP" }] },
            { "from": [controller], "ports": [{ "port": 9090, "protocol": "TCP" }] }
        ])
    );
    let traffic = v.applied(&format!("{SERVICES}/digits?"));
    let ports: Vec<i64> = traffic["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["port"].as_i64().unwrap())
        .collect();
    assert_eq!(
        ports,
        vec![8080, 8081],
        "REST and gRPC; the admin port is not in the traffic Service"
    );
    let admin = v.applied(&format!("{SERVICES}/digits-admin?"));
    assert_eq!(admin["spec"]["ports"][0]["port"], 9090);
    assert_eq!(admin["spec"]["selector"]["app.kubernetes.io/component"], "route");
}

/// Serving pods mount no ServiceAccount token unless the spec asks, and
/// run as the account the spec names.
#[tokio::test]
async fn serving_pods_mount_no_service_account_token_by_default() {
    let v = first_reconcile(spec("1", json!({})), false).await;
    let pod = pod_of(&v.applied(&format!("{DEPLOYMENTS}/digits-v1?"))).clone();
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert!(pod.get("serviceAccountName").is_none(), "{pod}");

    let serving = json!({ "serving": { "serviceAccountName": "digits-reader",
                                       "automountServiceAccountToken": true } });
    let v = first_reconcile(spec("1", serving), false).await;
    let pod = pod_of(&v.applied(&format!("{DEPLOYMENTS}/digits-v1?"))).clone();
    assert_eq!(pod["automountServiceAccountToken"], true);
    assert_eq!(pod["serviceAccountName"], "digits-reader");
}

/// `spec.serving.image` runs only under an allowed prefix: another image is
/// a Degraded condition naming the field, and nothing is applied.
#[tokio::test]
async fn an_image_outside_the_allow_list_is_a_degraded_condition() {
    let serving = json!({ "serving": { "image": "registry.example.com/team-evil/tractor:1" } });
    let status = refused_reconcile(spec("1", serving)).await.status_patch();
    let degraded = condition(&status, "Degraded");
    assert_eq!(
        (degraded["status"].as_str(), degraded["reason"].as_str()),
        (Some("True"), Some("InvalidSpec"))
    );
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("spec.serving.image") && message.contains("registry.example.com/team/"),
        "{message}"
    );

    let allowed = json!({ "serving": { "image": "registry.example.com/team/tractor:2" } });
    let v = first_reconcile(spec("1", allowed), false).await;
    let serve = v.applied(&format!("{DEPLOYMENTS}/digits-v1?"));
    assert_eq!(pod_of(&serve)["containers"][0]["image"], "registry.example.com/team/tractor:2");
}

/// Issue 12: `spec.serving.auth.jwks.url` reaches the router as `--jwks`
/// (no volume) under an allowed prefix; outside it, a Degraded condition
/// naming the field, and nothing is applied.
#[tokio::test]
async fn a_jwks_url_reaches_the_router_only_under_an_allowed_prefix() {
    let jwks = |url: &str| {
        json!({ "serving": { "auth": { "jwks": {
            "url": url, "issuer": "https://idp.example.com", "audience": "tractor" } } } })
    };
    let v = first_reconcile(spec("1", jwks("https://idp.example.com/realms/ml/certs")), true).await;
    let router = v.applied(&format!("{DEPLOYMENTS}/digits?"));
    let pod = pod_of(&router);
    assert_eq!(
        flag(&pod["containers"][0], "--jwks", "TRACTOR_JWKS").as_deref(),
        Some("https://idp.example.com/realms/ml/certs")
    );
    let volumes = pod["volumes"].as_array().cloned().unwrap_or_default();
    assert!(volumes.iter().all(|v| v["name"] != "jwks"), "nothing to mount: {pod}");

    let evil = jwks("https://idp.example.com.evil.net/certs");
    let status = refused_reconcile(spec("1", evil)).await.status_patch();
    let degraded = condition(&status, "Degraded");
    let message = degraded["message"].as_str().unwrap();
    assert!(
        message.contains("spec.serving.auth.jwks.url")
            && message.contains("allowed prefixes are https://idp.example.com/"),
        "{message}"
    );
}
