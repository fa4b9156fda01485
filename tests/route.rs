//! The router with real HTTP backends on loopback: the split, the version
//! header, shadow agreement, dead and slow backends, weight changes under
//! load, the admin API and the watched routes file.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::post;
use serde_json::{Value, json};

use tractor::contract::routes::{Backend, RouteTable};
use tractor::route::{RouteConfig, RouterState, RoutesSource, admin_app, app};

/// A fake model version: answers V2 infer requests with its name and fixed logits.
async fn backend(version: &'static str, logits: [f32; 2], delay: Duration) -> String {
    let handler = move || async move {
        tokio::time::sleep(delay).await;
        axum::Json(json!({ "model_name": "m", "model_version": version,
            "outputs": [{ "name": "logits", "datatype": "FP32", "shape": [1, 2], "data": logits }] }))
    };
    let v1 = move || async move { axum::Json(json!({ "predictions": [{ "label": version }] })) };
    let router = axum::Router::new()
        .route("/v2/models/m/infer", post(handler))
        .route("/v1/models/m:predict", post(v1));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn config(routes: RoutesSource) -> RouteConfig {
    RouteConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes,
        sticky_header: None,
        retry_on_stable: false,
        backend_timeout: Duration::from_millis(500),
        max_body_bytes: 1 << 20,
        max_inflight: 1024,
        auth: Default::default(),
    }
}

fn table(backends: &[(&str, &str, u32)], shadow: Option<&str>) -> RouteTable {
    RouteTable {
        backends: backends
            .iter()
            .map(|(v, url, w)| Backend { version: v.to_string(), url: url.to_string(), weight: *w })
            .collect(),
        shadow: shadow.map(str::to_string),
    }
}

/// Serves the router (traffic and admin) on loopback ports.
async fn start(state: RouterState) -> (String, String) {
    let traffic = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (t, a) = (traffic.local_addr().unwrap(), admin.local_addr().unwrap());
    let (s1, s2) = (state.clone(), state);
    tokio::spawn(async move { axum::serve(traffic, app(s1)).await });
    tokio::spawn(async move { axum::serve(admin, admin_app(s2)).await });
    (format!("http://{t}"), format!("http://{a}"))
}

async fn infer(
    http: &reqwest::Client,
    router: &str,
    version: Option<&str>,
) -> (u16, Option<String>, Value) {
    let mut request = http.post(format!("{router}/v2/models/m/infer")).body(r#"{"inputs":[]}"#);
    if let Some(v) = version {
        request = request.header("x-tractor-version", v);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answered =
        response.headers().get("x-tractor-version").map(|v| v.to_str().unwrap().to_string());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, answered, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_split_over_5000_requests_matches_the_weights() {
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let canary = backend("2", [1.0, 0.0], Duration::ZERO).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let state = RouterState::new(&cfg, table(&[("1", &stable, 90), ("2", &canary, 10)], None));
    let (router, admin) = start(state).await;
    let http = reqwest::Client::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (http, router) = (http.clone(), router.clone());
        tasks.push(tokio::spawn(async move {
            let mut canary = 0;
            for _ in 0..625 {
                let (status, answered, body) = infer(&http, &router, None).await;
                assert_eq!(status, 200);
                assert_eq!(
                    answered.as_deref(),
                    body["model_version"].as_str(),
                    "the header names who answered"
                );
                canary += usize::from(answered.as_deref() == Some("2"));
            }
            canary
        }));
    }
    let mut canary = 0;
    for t in tasks {
        canary += t.await.unwrap();
    }
    let share = canary as f64 / 5000.0;
    assert!((share - 0.10).abs() <= 0.02, "canary share {share:.3}, weight 0.10");
    let stats: Value =
        http.get(format!("{admin}/admin/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        stats["versions"]["1"]["requests"].as_u64().unwrap()
            + stats["versions"]["2"]["requests"].as_u64().unwrap(),
        5000
    );
    assert_eq!(stats["versions"]["2"]["errors"], 0);
    assert!(stats["versions"]["2"]["latency_p99_ms"].as_f64().unwrap() > 0.0);
    let reset = http.post(format!("{admin}/admin/stats/reset")).send().await.unwrap();
    assert_eq!(reset.status().as_u16(), 204);
    let stats: Value =
        http.get(format!("{admin}/admin/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["versions"], json!({}));
    let metrics = http.get(format!("{admin}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            "tractor_route_requests_total{kind=\"primary\",outcome=\"success\",version=\"2\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_version_header_reaches_a_version_without_weight() {
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let canary = backend("2", [1.0, 0.0], Duration::ZERO).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let (router, _) =
        start(RouterState::new(&cfg, table(&[("1", &stable, 100), ("2", &canary, 0)], None))).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        assert_eq!(infer(&http, &router, None).await.1.as_deref(), Some("1"));
    }
    assert_eq!(infer(&http, &router, Some("2")).await.1.as_deref(), Some("2"));
    let v1: Value = http
        .post(format!("{router}/v1/models/m:predict"))
        .header("x-tractor-version", "2")
        .body(r#"{"instances":[[0]]}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["predictions"][0]["label"], "2", "the V1 protocol goes through the router too");
    let (status, _, body) = infer(&http, &router, Some("7")).await;
    assert_eq!(status, 400);
    assert!(body["error"].as_str().unwrap().contains("unknown version \"7\""));
}

async fn agreement_of(canary_logits: [f32; 2]) -> f64 {
    let stable = backend("1", [3.0, 1.0], Duration::ZERO).await;
    let canary = backend("2", canary_logits, Duration::ZERO).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let state = RouterState::new(&cfg, table(&[("1", &stable, 100), ("2", &canary, 0)], Some("2")));
    let (router, admin) = start(state).await;
    let http = reqwest::Client::new();
    for _ in 0..20 {
        let (status, answered, body) = infer(&http, &router, None).await;
        assert_eq!(
            (status, answered.as_deref()),
            (200, Some("1")),
            "the caller only sees the stable answer"
        );
        assert_eq!(body["outputs"][0]["data"], json!([3.0, 1.0]));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let stats: Value =
            http.get(format!("{admin}/admin/stats")).send().await.unwrap().json().await.unwrap();
        if stats["versions"]["2"]["requests"].as_u64() == Some(20)
            && !stats["versions"]["2"]["agreement"].is_null()
        {
            return stats["versions"]["2"]["agreement"].as_f64().unwrap();
        }
        assert!(Instant::now() < deadline, "shadow copies not measured: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn shadow_traffic_measures_agreement_without_the_caller_seeing_it() {
    assert_eq!(agreement_of([2.0, 0.5]).await, 1.0, "same top class");
    assert_eq!(agreement_of([0.0, 4.0]).await, 0.0, "other top class");
}

#[tokio::test]
async fn dead_and_slow_backends_are_errors_not_hangs() {
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let dead = format!(
        "http://{}",
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
    );
    let slow = backend("3", [1.0, 0.0], Duration::from_secs(5)).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let state = RouterState::new(
        &cfg,
        table(&[("1", &stable, 100), ("2", &dead, 0), ("3", &slow, 0)], None),
    );
    let (router, admin) = start(state).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (status, _, body) = infer(&http, &router, Some("2")).await;
    assert_eq!(status, 502);
    assert!(body["error"].as_str().unwrap().contains("version 2 did not answer"));
    let (status, _, _) = infer(&http, &router, Some("3")).await;
    assert_eq!(status, 502, "slower than the backend timeout");
    assert!(started.elapsed() < Duration::from_secs(3));
    let stats: Value =
        http.get(format!("{admin}/admin/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["versions"]["2"]["errors"], 1);
    assert_eq!(stats["versions"]["3"]["errors"], 1);

    let mut retrying = config(RoutesSource::Static(RouteTable::default()));
    retrying.retry_on_stable = true;
    let (router, _) =
        start(RouterState::new(&retrying, table(&[("1", &stable, 0), ("2", &dead, 100)], None)))
            .await;
    let (status, answered, _) = infer(&http, &router, None).await;
    assert_eq!(
        (status, answered.as_deref()),
        (200, Some("1")),
        "retried once on the stable version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_change_under_load_without_failed_requests() {
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let canary = backend("2", [1.0, 0.0], Duration::ZERO).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let state = RouterState::new(&cfg, table(&[("1", &stable, 100), ("2", &canary, 0)], None));
    let (router, _) = start(state.clone()).await;
    let http = reqwest::Client::new();
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (http, router) = (http.clone(), router.clone());
            tokio::spawn(async move {
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..300 {
                    let (status, answered, _) = infer(&http, &router, None).await;
                    assert_eq!(status, 200);
                    seen.insert(answered.unwrap());
                }
                seen
            })
        })
        .collect();
    for step in 0..40u32 {
        let w = (step * 10) % 110;
        state.set_table(table(&[("1", &stable, 100 - w), ("2", &canary, w)], None));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut seen = std::collections::BTreeSet::new();
    for t in load {
        seen.extend(t.await.unwrap());
    }
    assert_eq!(seen.len(), 2, "both versions served during the changes");
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routes_file_is_watched() {
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let canary = backend("2", [1.0, 0.0], Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    std::fs::write(
        &path,
        serde_json::to_string(&table(&[("1", &stable, 100), ("2", &canary, 0)], None)).unwrap(),
    )
    .unwrap();
    let mut cfg = config(RoutesSource::File(path.clone()));
    cfg.listen = free_addr();
    cfg.admin_listen = free_addr();
    let router = format!("http://{}", cfg.listen);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(tractor::route::run(cfg, async move {
        let _ = stopped.await;
    }));
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(format!("{router}/")).send().await.is_err() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(infer(&http, &router, None).await.1.as_deref(), Some("1"));
    std::fs::write(
        &path,
        serde_json::to_string(&table(&[("1", &stable, 0), ("2", &canary, 100)], None)).unwrap(),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if infer(&http, &router, None).await.1.as_deref() == Some("2") {
            break;
        }
        assert!(Instant::now() < deadline, "the routes file change was not picked up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A broken file keeps the last good table.
    std::fs::write(&path, "{broken").unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(infer(&http, &router, None).await.1.as_deref(), Some("2"));
    let _ = stop.send(());
    running.await.unwrap().unwrap();
}
