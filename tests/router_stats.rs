//! The controller reads the statistics of every ready router pod, not one
//! at random through a Service (issue 14: two routers by default).
//!
//! An in-process stand-in for the API server answers the pod list; two
//! stand-in routers answer `/admin/stats` on 127.0.0.1 and 127.0.0.2 (all
//! of 127/8 is loopback on Linux) with the controller's admin token
//! checked; a third pod is not ready, and nothing listens at its address.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tractor::controller::access::AdminToken;
use tractor::controller::{HttpRouterStats, RouterStats};
use tractor::crd::ModelDeployment;

async fn listen(ip: &str, port: u16, app: Router) -> u16 {
    let listener = tokio::net::TcpListener::bind((ip, port)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

fn pod(name: &str, ip: &str, ready: bool) -> Value {
    json!({
        "metadata": { "name": name, "namespace": "models" },
        "status": {
            "podIP": ip,
            "conditions": [{ "type": "Ready", "status": if ready { "True" } else { "False" } }]
        }
    })
}

/// The API server's pod list, recording the label selector it was asked for.
async fn api_server(pods: Vec<Value>, selectors: Arc<Mutex<Vec<String>>>) -> u16 {
    let app = Router::new().route(
        "/api/v1/namespaces/models/pods",
        get(move |Query(query): Query<Vec<(String, String)>>| {
            let pods = pods.clone();
            let selectors = selectors.clone();
            async move {
                let selector =
                    query.iter().find(|(k, _)| k == "labelSelector").map(|(_, v)| v.clone());
                selectors.lock().unwrap().push(selector.unwrap_or_default());
                axum::Json(json!({
                    "apiVersion": "v1", "kind": "PodList",
                    "metadata": { "resourceVersion": "1" }, "items": pods
                }))
            }
        }),
    );
    listen("127.0.0.1", 0, app).await
}

#[derive(Clone)]
struct FakeRouter {
    report: Value,
    resets: Arc<Mutex<u32>>,
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer controller-token")
}

async fn stats(State(r): State<FakeRouter>, headers: HeaderMap) -> (StatusCode, axum::Json<Value>) {
    if !authorized(&headers) {
        return (StatusCode::UNAUTHORIZED, axum::Json(json!({})));
    }
    (StatusCode::OK, axum::Json(r.report))
}

async fn reset(State(r): State<FakeRouter>, headers: HeaderMap) -> StatusCode {
    if !authorized(&headers) {
        return StatusCode::UNAUTHORIZED;
    }
    *r.resets.lock().unwrap() += 1;
    StatusCode::NO_CONTENT
}

async fn router(ip: &str, port: u16, report: Value) -> (u16, Arc<Mutex<u32>>) {
    let resets = Arc::new(Mutex::new(0));
    let app = Router::new()
        .route("/admin/stats", get(stats))
        .route("/admin/stats/reset", post(reset))
        .with_state(FakeRouter { report, resets: resets.clone() });
    (listen(ip, port, app).await, resets)
}

fn model_deployment() -> ModelDeployment {
    serde_json::from_value(json!({
        "apiVersion": "tractor.dev/v1alpha1", "kind": "ModelDeployment",
        "metadata": { "name": "digits", "namespace": "models" },
        "spec": { "model": { "name": "digits", "version": "2",
                             "source": { "uri": "s3://models/digits.onnx" } } }
    }))
    .unwrap()
}

#[tokio::test]
async fn every_ready_router_pod_is_read_merged_and_reset() {
    let (port, first_resets) = router(
        "127.0.0.1",
        0,
        json!({ "versions": {
            "2": { "requests": 60, "errors": 3, "latency_p99_ms": 40.0, "agreement": 1.0, "compared": 60 }
        } }),
    )
    .await;
    let (_, second_resets) = router(
        "127.0.0.2",
        port,
        json!({ "versions": {
            "2": { "requests": 40, "errors": 1, "latency_p99_ms": 55.0, "agreement": 0.5, "compared": 40 }
        } }),
    )
    .await;
    let selectors = Arc::new(Mutex::new(Vec::new()));
    let pods = vec![
        pod("digits-a", "127.0.0.1", true),
        pod("digits-b", "127.0.0.2", true),
        // Not ready: takes no traffic, and nothing answers there.
        pod("digits-c", "127.0.0.3", false),
    ];
    let api = api_server(pods, selectors.clone()).await;
    let config = kube::Config::new(format!("http://127.0.0.1:{api}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let token = AdminToken::from_token("controller-token".into());
    let stats = HttpRouterStats::new(client, &token).with_admin_port(port);
    let md = model_deployment();

    let figures = stats.read(&md, "2").await.unwrap().expect("figures for version 2");
    assert_eq!((figures.requests, figures.errors), (100, 4), "both pods' counts: {figures:?}");
    assert_eq!(figures.latency_p99_ms, Some(55.0), "the larger p99 bounds the merged one");
    assert!((figures.agreement.unwrap() - 0.8).abs() < 1e-12, "80 of 100 rows: {figures:?}");
    assert_eq!(stats.read(&md, "3").await.unwrap(), None, "no figures for a version not seen");

    stats.reset(&md).await.unwrap();
    assert_eq!((*first_resets.lock().unwrap(), *second_resets.lock().unwrap()), (1, 1));

    let selector = selectors.lock().unwrap()[0].clone();
    for label in [
        "app.kubernetes.io/component=route",
        "tractor.dev/deployment=digits",
        "app.kubernetes.io/managed-by=tractor",
    ] {
        assert!(selector.contains(label), "{selector}");
    }
}

#[tokio::test]
async fn a_router_pod_that_does_not_answer_is_no_data_not_part_of_the_traffic() {
    let (port, _) =
        router("127.0.0.1", 0, json!({ "versions": { "2": { "requests": 60, "errors": 0 } } }))
            .await;
    let selectors = Arc::new(Mutex::new(Vec::new()));
    // Ready, but nothing listens on 127.0.0.4 at that port.
    let pods = vec![pod("digits-a", "127.0.0.1", true), pod("digits-b", "127.0.0.4", true)];
    let api = api_server(pods, selectors).await;
    let config = kube::Config::new(format!("http://127.0.0.1:{api}").parse().unwrap());
    let client = kube::Client::try_from(config).unwrap();
    let token = AdminToken::from_token("controller-token".into());
    let stats = HttpRouterStats::new(client, &token).with_admin_port(port);
    let error = stats.read(&model_deployment(), "2").await.unwrap_err().to_string();
    assert!(error.contains("127.0.0.4"), "names the pod it could not read: {error}");
}
