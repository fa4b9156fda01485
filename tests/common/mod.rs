//! Helpers shared by the integration tests.

#![allow(dead_code)]

pub mod fake_api;
pub mod fake_children;
pub mod fake_router;
pub mod python;
pub mod server;
pub mod skip;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tractor::engine::{EngineOptions, Model, Threads};
use tractor::listen::ConnectionLimits;
use tractor::route::{RouteConfig, RoutesSource};
use tractor::serve::{AppState, ServeConfig};

/// A router's settings for in-process tests: both ports on loopback, no
/// access control, limits wide enough not to be what a test meets.
pub fn route_config(routes: RoutesSource) -> RouteConfig {
    RouteConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes,
        sticky_header: None,
        retry_on_stable: false,
        backend_timeout: Duration::from_millis(500),
        request_timeout: Duration::from_secs(10),
        max_body_bytes: 1 << 20,
        max_response_bytes: 1 << 30,
        max_inflight: 1024,
        connections: ConnectionLimits::default(),
        auth: Default::default(),
        backend_tls: None,
    }
}

pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

pub fn fixture(name: &str) -> PathBuf {
    repo_path("tests/fixtures").join(name)
}

pub fn real_model(name: &str) -> PathBuf {
    repo_path("tests/models").join(name)
}

/// A model under `tests/models/` as a command-line argument or a spec's uri.
pub fn real_model_uri(name: &str) -> String {
    real_model(name).display().to_string()
}

pub fn load(path: &Path) -> Model {
    Model::load_path(path, &EngineOptions { threads: Threads::Count(1) })
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub fn config(path: &Path, name: &str) -> ServeConfig {
    ServeConfig {
        model_location: path.display().to_string(),
        name: name.to_string(),
        version: "7".to_string(),
        sha256: None,
        listen: "127.0.0.1:0".parse().unwrap(),
        max_batch_size: 16,
        max_batch_delay: Duration::from_millis(2),
        max_inflight: 64,
        max_body_bytes: 1 << 20,
        request_timeout: Duration::from_secs(10),
        threads: Threads::Count(1),
        workers: 1,
        processing: None,
        auth: Default::default(),
        sources: Default::default(),
        decryption_identity: None,
        max_request_elements: None,
        max_tensor_bytes: None,
        plans: Default::default(),
        output_limits: Default::default(),
        termination_log: None,
    }
}

/// A ready server state for `path`, served as `name` version "7".
pub fn ready_state(path: &Path, name: &str, tweak: impl FnOnce(&mut ServeConfig)) -> AppState {
    let mut cfg = config(path, name);
    tweak(&mut cfg);
    let state = AppState::new(&cfg);
    state.install(load(path)).unwrap();
    state
}

/// What the in-process app answered: status, headers, body.
pub struct Answer {
    pub status: axum::http::StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `{"error": ...}` message of a refused request.
    pub fn error(&self) -> String {
        self.json()["error"].as_str().expect("an error message").to_string()
    }
}

/// Sends one request through the serving app in-process (no socket).
pub async fn send(state: &AppState, request: axum::http::Request<axum::body::Body>) -> Answer {
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let response = tractor::serve::app(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes().to_vec();
    Answer { status, headers, body }
}
