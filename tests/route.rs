//! The router with real HTTP backends on loopback: the split, the version
//! header, shadow agreement, dead and slow backends, weight changes under
//! load, the admin API and the watched routes file; and the hostile cases
//! of issue 11: `OPTIONS *` and absolute-form targets, big answers
//! streamed and bounded, the request timeout, slow bodies, the connection
//! cap, https backends.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::routing::post;
use serde_json::{Value, json};

use tractor::contract::routes::{Backend, RouteTable};
use tractor::listen::ConnectionLimits;
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
    common::route_config(routes)
}

fn table(backends: &[(&str, &str, u32)], shadow: Option<&str>) -> RouteTable {
    RouteTable {
        backends: backends
            .iter()
            .map(|(v, url, w)| Backend {
                version: v.to_string(),
                url: url.to_string(),
                weight: *w,
                grpc: None,
            })
            .collect(),
        shadow: shadow.map(str::to_string),
    }
}

/// Serves the router (traffic and admin) on loopback ports, through the
/// same connection handling as `tractor route`.
async fn start(state: RouterState) -> (String, String) {
    start_with(state, ConnectionLimits::default()).await
}

async fn start_with(state: RouterState, limits: ConnectionLimits) -> (String, String) {
    let traffic = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (t, a) = (traffic.local_addr().unwrap(), admin.local_addr().unwrap());
    let forever = std::future::pending::<()>;
    tokio::spawn(tractor::listen::serve(traffic, app(state.clone()), limits, forever()));
    tokio::spawn(tractor::listen::serve(admin, admin_app(state), limits, forever()));
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

/// A backend that records the head of each request as it arrived on the
/// wire, and answers 200 with an empty body.
async fn recording_backend() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (heads, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let heads = heads.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = heads.send(String::from_utf8_lossy(&head).into_owned());
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (format!("http://{addr}"), seen)
}

/// Sends `request` as written (with `Connection: close`) and reads the
/// whole answer.
async fn raw(router: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream =
        tokio::net::TcpStream::connect(router.trim_start_matches("http://")).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("the router answers and closes")
        .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn options_star_and_absolute_form_reach_the_configured_backend_port() {
    let (url, mut seen) = recording_backend().await;
    let authority = url.trim_start_matches("http://").to_string();
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let (router, _) = start(RouterState::new(&cfg, table(&[("1", &url, 100)], None))).await;

    let answer =
        raw(&router, "OPTIONS * HTTP/1.1\r\nHost: router\r\nConnection: close\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "OPTIONS * went elsewhere: {answer}");
    let head = seen.recv().await.unwrap();
    assert!(head.starts_with("OPTIONS * HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("host: {authority}\r\n")), "{head}");

    let answer = raw(
        &router,
        "GET http://elsewhere.invalid:81/v2/health/ready?x=1 HTTP/1.1\r\n\
         Host: elsewhere.invalid:81\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "absolute form went elsewhere: {answer}");
    let head = seen.recv().await.unwrap();
    assert!(head.starts_with("GET /v2/health/ready?x=1 HTTP/1.1\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("host: {authority}\r\n")), "{head}");
}

/// A backend answering `chunks` chunks of `chunk` bytes; after the first,
/// it waits for `release`. With `declared`, the length is in the head.
async fn streaming_backend(
    chunk: usize,
    chunks: usize,
    declared: bool,
    release: std::sync::Arc<tokio::sync::Notify>,
) -> String {
    let handler = move || {
        let release = release.clone();
        async move {
            let stream = futures::stream::unfold(0usize, move |sent| {
                let release = release.clone();
                async move {
                    if sent == chunks {
                        return None;
                    }
                    if sent == 1 {
                        release.notified().await;
                    }
                    Some((Ok::<_, std::io::Error>(vec![b'x'; chunk]), sent + 1))
                }
            });
            let mut response = axum::response::Response::new(axum::body::Body::from_stream(stream));
            if declared {
                response.headers_mut().insert(
                    "content-length",
                    axum::http::HeaderValue::from(chunk as u64 * chunks as u64),
                );
            }
            response
        }
    };
    let router = axum::Router::new().route("/big", axum::routing::get(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_answer_is_streamed_not_collected() {
    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    let url = streaming_backend(1 << 20, 8, false, release.clone()).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let (router, _) = start(RouterState::new(&cfg, table(&[("1", &url, 100)], None))).await;
    let http = reqwest::Client::new();
    // The backend holds all but its first MiB: a router that collects the
    // whole answer before relaying it never sends the head.
    let mut response =
        tokio::time::timeout(Duration::from_secs(10), http.get(format!("{router}/big")).send())
            .await
            .expect("the head arrives while the backend still holds most of its answer")
            .unwrap();
    assert_eq!(response.status(), 200);
    let first = tokio::time::timeout(Duration::from_secs(10), response.chunk())
        .await
        .expect("the first bytes arrive before the rest exists")
        .unwrap()
        .unwrap();
    assert!(!first.is_empty());
    release.notify_one();
    let mut total = first.len();
    while let Some(chunk) = response.chunk().await.unwrap() {
        total += chunk.len();
    }
    assert_eq!(total, 8 << 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_over_the_response_limit_are_refused_or_cut() {
    let mut cfg = config(RoutesSource::Static(RouteTable::default()));
    cfg.max_response_bytes = 1 << 20;
    let http = reqwest::Client::new();

    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    release.notify_one();
    let declared = streaming_backend(1 << 20, 2, true, release).await;
    let (router, admin) =
        start(RouterState::new(&cfg, table(&[("1", &declared, 100)], None))).await;
    let response = http.get(format!("{router}/big")).send().await.unwrap();
    assert_eq!(response.status(), 502, "a declared length over the limit is refused up front");
    let body: Value = response.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("--max-response-bytes"), "{body}");
    let stats: Value =
        http.get(format!("{admin}/admin/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["versions"]["1"]["requests"], 1);

    let release = std::sync::Arc::new(tokio::sync::Notify::new());
    release.notify_one();
    let undeclared = streaming_backend(256 << 10, 8, false, release).await;
    let (router, _) = start(RouterState::new(&cfg, table(&[("1", &undeclared, 100)], None))).await;
    let response = http.get(format!("{router}/big")).send().await.unwrap();
    let read = response.bytes().await;
    assert!(
        read.as_ref().map_or(true, |b| b.len() <= 1 << 20),
        "an answer streaming past the limit is cut, got {:?} bytes",
        read.map(|b| b.len())
    );
}

#[tokio::test]
async fn a_request_past_the_request_timeout_is_a_504() {
    let slow = backend("1", [1.0, 0.0], Duration::from_secs(3)).await;
    let mut cfg = config(RoutesSource::Static(RouteTable::default()));
    cfg.backend_timeout = Duration::from_secs(10);
    cfg.request_timeout = Duration::from_millis(300);
    let (router, admin) = start(RouterState::new(&cfg, table(&[("1", &slow, 100)], None))).await;
    let http = reqwest::Client::new();
    let started = Instant::now();
    let (status, _, body) = infer(&http, &router, None).await;
    assert_eq!(status, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("--request-timeout-ms"), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "answered by the timeout, not the backend"
    );
    let stats: Value =
        http.get(format!("{admin}/admin/stats")).send().await.unwrap().json().await.unwrap();
    assert_eq!(stats["versions"]["1"]["errors"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_hold_no_in_flight_slot_and_are_cut_with_408() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let mut cfg = config(RoutesSource::Static(RouteTable::default()));
    cfg.max_inflight = 2;
    let limits =
        ConnectionLimits { body_read_timeout: Duration::from_millis(800), ..Default::default() };
    let (router, _) =
        start_with(RouterState::new(&cfg, table(&[("1", &stable, 100)], None)), limits).await;
    let addr = router.trim_start_matches("http://").to_string();
    // Six callers send a head and one byte of a 100-byte body, then nothing:
    // three times --max-inflight.
    let mut slow = Vec::new();
    for _ in 0..6 {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(
                b"POST /v2/models/m/infer HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n{",
            )
            .await
            .unwrap();
        slow.push(stream);
    }
    let cut = tokio::spawn(async move {
        let mut answers = Vec::new();
        for mut stream in slow {
            let mut answer = Vec::new();
            let read =
                tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
            read.await.expect("a slow body is cut, not waited for").unwrap();
            answers.push(String::from_utf8_lossy(&answer).into_owned());
        }
        answers
    });
    let http = reqwest::Client::new();
    let mut served = 0;
    while !cut.is_finished() {
        let (status, _, body) = infer(&http, &router, None).await;
        assert_eq!(status, 200, "a valid caller was refused while slow bodies were open: {body}");
        served += 1;
    }
    assert!(served > 0);
    for answer in cut.await.unwrap() {
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains("--body-read-timeout-ms"), "{answer}");
    }
}

#[tokio::test]
async fn connections_over_the_cap_are_answered_503_and_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stable = backend("1", [1.0, 0.0], Duration::ZERO).await;
    let cfg = config(RoutesSource::Static(RouteTable::default()));
    let limits = ConnectionLimits { max_connections: 2, ..Default::default() };
    let (router, _) =
        start_with(RouterState::new(&cfg, table(&[("1", &stable, 100)], None)), limits).await;
    let addr = router.trim_start_matches("http://").to_string();
    let first = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let _second = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut third = tokio::net::TcpStream::connect(&addr).await.unwrap();
    third.write_all(b"GET / HTTP/1.1\r\nHost: r\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), third.read_to_end(&mut answer))
        .await
        .expect("the refusal is prompt")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many open connections"), "{answer}");
    assert!(answer.to_ascii_lowercase().contains("retry-after: 1"), "{answer}");
    // A slot frees when a connection closes.
    drop(first);
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match http.post(format!("{router}/v2/models/m/infer")).body("{}").send().await {
            Ok(r) if r.status() == 200 => break,
            _ => assert!(Instant::now() < deadline, "no slot freed after a connection closed"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn https_backends_are_refused_when_the_routes_load() {
    let mut cfg =
        config(RoutesSource::Static(table(&[("1", "https://127.0.0.1:8443", 100)], None)));
    cfg.listen = free_addr();
    cfg.admin_listen = free_addr();
    let message = tractor::route::run(cfg, async {}).await.unwrap_err().to_string();
    assert!(message.contains("https://") && message.contains("--backend-ca"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("routes.json");
    std::fs::write(&path, serde_json::to_string(&table(&[("1", "https://h", 100)], None)).unwrap())
        .unwrap();
    let mut cfg = config(RoutesSource::File(path));
    cfg.listen = free_addr();
    cfg.admin_listen = free_addr();
    let message = tractor::route::run(cfg, async {}).await.unwrap_err().to_string();
    assert!(message.contains("--backend-ca"), "{message}");

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_tractor"))
        .args(["route", "--backend", "1=https://127.0.0.1:8443"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("--backend-ca"), "{stderr}");
}
