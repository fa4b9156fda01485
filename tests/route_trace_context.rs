//! W3C trace context through the router, in the default build (no
//! `otel`): a caller's valid `traceparent` and `tracestate` reach the
//! version and its shadow unchanged, and a refused one (garbage, too long,
//! all-zero ids, two of them) reaches neither, so the version starts a
//! trace of its own. `tests/otel.rs` checks the spans under the feature.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::json;

use tractor::contract::routes::{Backend, RouteTable};
use tractor::listen::ConnectionLimits;
use tractor::route::{RouteConfig, RouterState, RoutesSource, app};

type Seen = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// A version that notes the trace headers of every request it gets.
async fn backend(seen: Seen) -> String {
    let handler = move |headers: HeaderMap| {
        let seen = seen.clone();
        async move {
            let text = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
            seen.lock().unwrap().push((text("traceparent"), text("tracestate")));
            axum::Json(json!({ "model_name": "m", "outputs": [{ "name": "y", "datatype": "FP32",
                "shape": [1, 1], "data": [1.0] }] }))
        }
    };
    let router = axum::Router::new().route("/v2/models/m/infer", post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn config() -> RouteConfig {
    RouteConfig {
        backend_timeout: Duration::from_secs(5),
        ..common::route_config(RoutesSource::Static(RouteTable::default()))
    }
}

const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_trace_context_is_passed_on_and_refused_context_is_dropped() {
    let (primary, shadow): (Seen, Seen) = Default::default();
    let table = RouteTable {
        backends: vec![
            Backend {
                version: "1".into(),
                url: backend(primary.clone()).await,
                weight: 100,
                grpc: None,
            },
            Backend {
                version: "2".into(),
                url: backend(shadow.clone()).await,
                weight: 0,
                grpc: None,
            },
        ],
        shadow: Some("2".into()),
    };
    let state = RouterState::new(&config(), table);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let router = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(tractor::listen::serve(
        listener,
        app(state),
        ConnectionLimits::default(),
        std::future::pending::<()>(),
    ));
    let http = reqwest::Client::new();
    let oversized = format!("{VALID}-{}", "a".repeat(4000));
    let zero_trace = format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32));
    let cases: [(&[&str], Option<&str>); 6] = [
        (&[VALID], Some(VALID)),
        (&[], None),
        (&["garbage"], None),
        (&[&oversized], None),
        (&[&zero_trace], None),
        (&[VALID, VALID], None),
    ];
    for (sent, expected) in cases {
        let mut request = http.post(format!("{router}/v2/models/m/infer")).body("{}");
        for value in sent {
            request = request.header("traceparent", *value);
        }
        let answer = request.header("tracestate", "vendor=abc").send().await.unwrap();
        assert_eq!(answer.status(), 200, "{sent:?}: a bad traceparent fails nothing");
        let primary_saw = primary.lock().unwrap().pop().expect("the version got the request");
        let state = expected.map(|_| "vendor=abc".to_string());
        assert_eq!(primary_saw, (expected.map(str::to_string), state.clone()), "{sent:?}");
        // The shadow's copy goes out in the background.
        let mut shadow_saw = None;
        for _ in 0..100 {
            shadow_saw = shadow.lock().unwrap().pop();
            if shadow_saw.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(shadow_saw, Some((expected.map(str::to_string), state)), "{sent:?}: shadow");
    }
}
