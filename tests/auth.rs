//! Access control end to end, with a real HTTP client on loopback: tokens
//! (missing, wrong, right, scope), rotation by rewriting the auth file, rate
//! limits and quotas, JWTs (good, expired, wrong audience, wrong key,
//! rotated JWKS), the router's admin API and pins, its own backend token,
//! the model-source allow-list, and one `curl` shell test of the binary.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode, get_current_timestamp};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use tractor::auth::{AuthConfig, JwksSource, JwtConfig};
use tractor::contract::routes::{Backend, RouteTable};
use tractor::route::{RouteConfig, RoutesSource};
use tractor::serve::output_limits::OutputLimits;

/// A rotation must show within this (the issue's acceptance bound).
const ROTATION_BOUND: Duration = Duration::from_secs(2);
const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn infer_body() -> Vec<u8> {
    std::fs::read(common::repo_path("examples/requests/digits-mlp.json")).unwrap()
}

/// A `tractor serve` in this process on a loopback port, stopped when dropped.
struct Served {
    url: String,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn wait_ready(url: &str) {
    let http = reqwest::Client::new();
    let started = Instant::now();
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return;
        }
        assert!(started.elapsed() < READY_TIMEOUT, "{url} not ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn serve(auth: AuthConfig) -> Served {
    serve_limited(auth, OutputLimits::default()).await
}

async fn serve_limited(auth: AuthConfig, output_limits: OutputLimits) -> Served {
    let port = free_port();
    let mut config = common::config(&common::real_model("digits-mlp-v2.onnx"), "digits");
    config.listen = SocketAddr::from(([127, 0, 0, 1], port));
    config.auth = auth;
    config.output_limits = output_limits;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        if let Err(e) = tractor::serve::run(config, async {
            let _ = stopped.await;
        })
        .await
        {
            panic!("serve stopped: {e}");
        }
    });
    let url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{url}/v2/health/ready")).await;
    Served { url, stop: Some(stop) }
}

fn auth_files(files: &[&Path]) -> AuthConfig {
    AuthConfig { auth_files: files.iter().map(|p| p.to_path_buf()).collect(), ..Default::default() }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// Status, `WWW-Authenticate`, `Retry-After` and JSON body of one request.
struct Reply {
    status: u16,
    challenge: Option<String>,
    retry_after: Option<u64>,
    body: Value,
}

async fn call(method: &str, url: &str, token: Option<&str>, body: Option<Vec<u8>>) -> Reply {
    let http = reqwest::Client::new();
    let mut request = match method {
        "POST" => http.post(url).body(body.unwrap_or_default()),
        _ => http.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let header = |name: &str| {
        response.headers().get(name).map(|v| v.to_str().unwrap_or_default().to_string())
    };
    let challenge = header("www-authenticate");
    let retry_after = header("retry-after").and_then(|v| v.parse().ok());
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply { status, challenge, retry_after, body }
}

async fn infer(url: &str, token: Option<&str>) -> Reply {
    call("POST", &format!("{url}/v2/models/digits/infer"), token, Some(infer_body())).await
}

async fn metrics(url: &str, token: &str) -> String {
    reqwest::Client::new()
        .get(format!("{url}/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn missing_wrong_and_right_tokens_and_scopes() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "auth.yaml",
        "tokens:\n  - name: scopes-app\n    value: app-secret\n    scopes: [infer, metadata]\n  \
         - name: scopes-reader\n    value: reader-secret\n    scopes: [metadata]\n  \
         - name: scopes-prom\n    value: prom-secret\n    scopes: [metrics]\n",
    );
    let served = serve(auth_files(&[&file])).await;
    let url = &served.url;

    let missing = infer(url, None).await;
    assert_eq!(missing.status, 401);
    assert!(missing.challenge.as_deref().unwrap_or_default().starts_with("Bearer"));
    assert!(missing.body["error"].as_str().unwrap().contains("Bearer"), "{}", missing.body);

    let wrong = infer(url, Some("app-secreT")).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.challenge.unwrap().contains("invalid_token"));

    let right = infer(url, Some("app-secret")).await;
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(right.body["model_version"], "7");

    let lacking = infer(url, Some("reader-secret")).await;
    assert_eq!(lacking.status, 403);
    assert!(lacking.body["error"].as_str().unwrap().contains("infer"), "{}", lacking.body);
    assert!(lacking.challenge.unwrap().contains("insufficient_scope"));
    let metadata =
        call("GET", &format!("{url}/v2/models/digits"), Some("reader-secret"), None).await;
    assert_eq!(metadata.status, 200);
    assert_eq!(call("GET", &format!("{url}/v2/models/digits"), None, None).await.status, 401);

    // Health stays open; /metrics needs `metrics`.
    assert_eq!(call("GET", &format!("{url}/v2/health/live"), None, None).await.status, 200);
    assert_eq!(call("GET", &format!("{url}/v2/health/ready"), None, None).await.status, 200);
    assert_eq!(call("GET", &format!("{url}/metrics"), None, None).await.status, 401);
    assert_eq!(call("GET", &format!("{url}/metrics"), Some("app-secret"), None).await.status, 403);
    let text = metrics(url, "prom-secret").await;
    assert!(text.contains("tractor_requests_total"), "the server's own metrics are there");
    assert!(
        text.contains(r#"tractor_auth_refused_total{reason="scope",token="scopes-reader"}"#),
        "{text}"
    );
    assert!(!text.contains("secret"), "a token never reaches the metrics");
}

/// POSTs `body` (JSON) with `token` and, when `limited`, the router's
/// header; the JSON answer.
async fn infer_json(url: &str, token: &str, body: Value, limited: bool) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/v2/models/digits/infer"))
        .bearer_auth(token)
        .json(&body);
    if limited {
        request = request.header("x-tractor-limited-output", "true");
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn output_limits_answer_rounded_top_classes_unless_the_caller_has_raw() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "auth.yaml",
        "tokens:\n  - name: limits-app\n    value: app-secret\n    scopes: [infer]\n  \
         - name: limits-raw\n    value: raw-secret\n    scopes: [infer, raw]\n",
    );
    let limits = OutputLimits { top_k: Some(3), digits: Some(2) };
    let served = serve_limited(auth_files(&[&file]), limits).await;
    let url = &served.url;
    let request: Value = serde_json::from_slice(&infer_body()).unwrap();
    let asking = |outputs: Value| {
        let mut r = request.clone();
        r["outputs"] = outputs;
        r
    };

    let (status, whole) = infer_json(url, "raw-secret", request.clone(), false).await;
    assert_eq!(status, 200, "{whole}");
    assert_eq!(whole["outputs"][0]["datatype"], "FP32");
    let logits: Vec<f64> = serde_json::from_value(whole["outputs"][0]["data"].clone()).unwrap();
    assert_eq!(logits.len(), 10);
    let mut order: Vec<usize> = (0..10).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));

    let (status, limited) = infer_json(url, "app-secret", request.clone(), false).await;
    assert_eq!(status, 200, "{limited}");
    let out = &limited["outputs"][0];
    assert_eq!((&out["datatype"], &out["shape"]), (&json!("BYTES"), &json!([1, 3])), "{out}");
    let expected: Vec<String> = order[..3]
        .iter()
        .map(|&i| format!("{:.2}:{i}", (logits[i] * 100.0).round() / 100.0))
        .collect();
    assert_eq!(out["data"], json!(expected));

    // The router's header limits even a raw token; asking for classes
    // never gets more than the limit, and a raw caller may ask for fewer.
    let (_, relayed) = infer_json(url, "raw-secret", request.clone(), true).await;
    assert_eq!(relayed["outputs"][0], *out);
    let five = asking(json!([{"name": "logits", "parameters": {"classification": 5}}]));
    let (_, clamped) = infer_json(url, "app-secret", five, false).await;
    assert_eq!(clamped["outputs"][0]["shape"], json!([1, 3]), "{clamped}");
    let two = asking(json!([{"name": "logits", "parameters": {"classification": 2}}]));
    let (_, classes) = infer_json(url, "raw-secret", two, false).await;
    let best = format!("{}:{}", logits[order[0]] as f32, order[0]);
    assert_eq!(classes["outputs"][0]["data"][0], json!(best), "raw classes keep every digit");
    let zero = asking(json!([{"name": "logits", "parameters": {"classification": 0}}]));
    let (status, refused) = infer_json(url, "raw-secret", zero, false).await;
    assert_eq!(status, 400);
    assert!(refused["error"].as_str().unwrap().contains("classification"), "{refused}");
}

#[tokio::test]
async fn metrics_open_serves_metrics_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "a.yaml", "tokens: []\n");
    let served = serve(AuthConfig { metrics_open: true, ..auth_files(&[&file]) }).await;
    assert_eq!(call("GET", &format!("{}/metrics", served.url), None, None).await.status, 200);
    assert_eq!(infer(&served.url, None).await.status, 401);
}

/// Polls until `check` holds, within the rotation bound.
async fn within_rotation_bound<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !check().await {
        assert!(started.elapsed() < ROTATION_BOUND, "{what} not seen within {ROTATION_BOUND:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn rewriting_the_auth_file_rotates_tokens_and_a_broken_one_keeps_the_last_good() {
    let dir = tempfile::tempdir().unwrap();
    let token = |value: &str| {
        format!("tokens:\n  - name: rotating\n    value: {value}\n    scopes: [infer]\n")
    };
    let file = write(dir.path(), "auth.yaml", &token("old-token"));
    let served = serve(auth_files(&[&file])).await;
    let url = served.url.clone();
    assert_eq!(infer(&url, Some("old-token")).await.status, 200);

    std::fs::write(&file, token("new-token")).unwrap();
    within_rotation_bound("the new token", || async {
        infer(&url, Some("new-token")).await.status == 200
    })
    .await;
    assert_eq!(infer(&url, Some("old-token")).await.status, 401);

    // A broken file is refused (counted), and the last good one stays.
    let before = reload_failures();
    std::fs::write(&file, "tokens:\n  - name: rotating\n    scope: [infer]\n").unwrap();
    within_rotation_bound("the refused reload", || async { reload_failures() > before }).await;
    assert_eq!(infer(&url, Some("new-token")).await.status, 200);
}

/// Refused reloads of auth files so far, in this process.
fn reload_failures() -> u64 {
    let text = tractor::auth::metrics_text();
    text.lines()
        .find_map(|l| l.strip_prefix(r#"tractor_auth_reload_failures_total{file="auth_file"} "#))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn rate_limits_and_daily_quotas_answer_429_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "auth.yaml",
        "tokens:\n  - name: limited-rate\n    value: rate-token\n    scopes: [infer]\n    rps: 1\n    burst: 2\n  \
         - name: limited-quota\n    value: quota-token\n    scopes: [infer]\n    quota: 3\n",
    );
    let served = serve(auth_files(&[&file])).await;
    let url = &served.url;
    // A burst of 2 at 1 request per second: the third at once is refused.
    assert_eq!(infer(url, Some("rate-token")).await.status, 200);
    assert_eq!(infer(url, Some("rate-token")).await.status, 200);
    let over = infer(url, Some("rate-token")).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.retry_after.is_some_and(|s| (1..=2).contains(&s)), "{:?}", over.retry_after);
    assert!(over.body["error"].as_str().unwrap().contains("rate"));

    for _ in 0..3 {
        assert_eq!(infer(url, Some("quota-token")).await.status, 200);
    }
    let spent = infer(url, Some("quota-token")).await;
    assert_eq!(spent.status, 429);
    assert!(spent.body["error"].as_str().unwrap().contains("quota"), "{}", spent.body);
    let wait = spent.retry_after.expect("Retry-After");
    assert!((1..=86_400).contains(&wait), "until the next UTC day: {wait}");
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(common::fixture("auth").join(name)).unwrap()
}

fn jwks_of(keys: &[(&EncodingKey, &str)]) -> String {
    let keys = keys
        .iter()
        .map(|(k, kid)| {
            let mut jwk = Jwk::from_encoding_key(k, Algorithm::RS256).unwrap();
            jwk.common.key_id = Some(kid.to_string());
            jwk
        })
        .collect();
    serde_json::to_string(&JwkSet { keys }).unwrap()
}

fn jwt(key: &EncodingKey, kid: &str, exp: u64, audience: &str, scope: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.into());
    let claims = json!({"sub": "system:serviceaccount:apps:checkout", "iss": "https://issuer.test",
        "aud": audience, "exp": exp, "scope": scope});
    encode(&header, &claims, key).unwrap()
}

#[tokio::test]
async fn jwts_good_expired_wrong_audience_wrong_key_and_rotated_jwks() {
    let dir = tempfile::tempdir().unwrap();
    let a = EncodingKey::from_rsa_pem(&key("rsa-a.pem")).unwrap();
    let b = EncodingKey::from_rsa_pem(&key("rsa-b.pem")).unwrap();
    let jwks = write(dir.path(), "jwks.json", &jwks_of(&[(&a, "a")]));
    let served = serve(AuthConfig {
        jwt: Some(JwtConfig {
            jwks: JwksSource::File(jwks.clone()),
            issuer: "https://issuer.test".into(),
            audience: "tractor".into(),
        }),
        ..Default::default()
    })
    .await;
    let url = served.url.clone();
    let now = get_current_timestamp();

    let good_token = jwt(&a, "a", now + 600, "tractor", "infer metadata");
    let good = infer(&url, Some(&good_token)).await;
    assert_eq!(good.status, 200, "{}", good.body);
    assert_eq!(infer(&url, Some(&good_token)).await.status, 200, "again, from the cache");
    let expired = infer(&url, Some(&jwt(&a, "a", now - 3600, "tractor", "infer"))).await;
    assert_eq!(expired.status, 401);
    assert!(expired.body["error"].as_str().unwrap().contains("expired"), "{}", expired.body);
    let audience = infer(&url, Some(&jwt(&a, "a", now + 600, "someone-else", "infer"))).await;
    assert_eq!(audience.status, 401);
    assert!(audience.body["error"].as_str().unwrap().contains("audience"));
    let wrong_key = infer(&url, Some(&jwt(&b, "a", now + 600, "tractor", "infer"))).await;
    assert_eq!(wrong_key.status, 401);
    assert!(wrong_key.body["error"].as_str().unwrap().contains("signature"));
    let no_scope = infer(&url, Some(&jwt(&a, "a", now + 600, "tractor", "metadata"))).await;
    assert_eq!(no_scope.status, 403);

    // The issuer rotates its key: b is published, a withdrawn.
    std::fs::write(&jwks, jwks_of(&[(&b, "b")])).unwrap();
    let by_b = jwt(&b, "b", now + 600, "tractor", "infer");
    within_rotation_bound("the rotated JWKS", || async {
        infer(&url, Some(&by_b)).await.status == 200
    })
    .await;
    let by_a = jwt(&a, "a", now + 600, "tractor", "infer");
    assert_eq!(infer(&url, Some(&by_a)).await.status, 401);
    // A token verified (and remembered) before the rotation is refused too.
    assert_eq!(infer(&url, Some(&good_token)).await.status, 401);
}

/// An identity provider on loopback: serves whatever JWKS is set, and
/// counts how often it was asked.
struct Provider {
    url: String,
    jwks: std::sync::Arc<std::sync::Mutex<String>>,
    fetches: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

async fn provider(jwks: String) -> Provider {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    let (document, fetches) = (Arc::new(Mutex::new(jwks)), Arc::new(AtomicUsize::new(0)));
    let (served, counted) = (document.clone(), fetches.clone());
    let app = axum::Router::new().route(
        "/keys",
        axum::routing::get(move || async move {
            counted.fetch_add(1, Ordering::SeqCst);
            served.lock().unwrap().clone()
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Provider { url: format!("http://{addr}/keys"), jwks: document, fetches }
}

#[tokio::test]
async fn a_jwks_url_is_fetched_refreshed_asked_again_for_new_keys_but_not_flooded() {
    use std::sync::atomic::Ordering;
    let a = EncodingKey::from_rsa_pem(&key("rsa-a.pem")).unwrap();
    let b = EncodingKey::from_rsa_pem(&key("rsa-b.pem")).unwrap();
    let idp = provider(jwks_of(&[(&a, "a")])).await;
    let config = AuthConfig {
        jwt: Some(JwtConfig {
            jwks: idp.url.parse().unwrap(),
            issuer: "https://issuer.test".into(),
            audience: "tractor".into(),
        }),
        jwks_refresh: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let served = serve(config.clone()).await;
    let url = served.url.clone();
    let now = get_current_timestamp();
    assert_eq!(infer(&url, Some(&jwt(&a, "a", now + 600, "tractor", "infer"))).await.status, 200);

    // The provider rotates to key b: a token signed with it is accepted
    // once the keys are fetched again, and a's tokens no longer are.
    *idp.jwks.lock().unwrap() = jwks_of(&[(&b, "b")]);
    let with_b = jwt(&b, "b", now + 600, "tractor", "infer");
    within_rotation_bound("the provider's new key", || async {
        infer(&url, Some(&with_b)).await.status == 200
    })
    .await;
    assert_eq!(infer(&url, Some(&jwt(&a, "a", now + 600, "tractor", "infer"))).await.status, 401);

    // Tokens naming keys nobody has ask for the keys again, but the
    // provider hears at most one fetch per period however many come.
    let before = idp.fetches.load(Ordering::SeqCst);
    let started = Instant::now();
    let mut sent = 0;
    while started.elapsed() < Duration::from_secs(2) {
        let invented = jwt(&a, &format!("invented-{sent}"), now + 600, "tractor", "infer");
        assert_eq!(infer(&url, Some(&invented)).await.status, 401);
        sent += 1;
    }
    let fetched = idp.fetches.load(Ordering::SeqCst) - before;
    assert!(sent > 20 && fetched <= 4, "{sent} invented key ids caused {fetched} fetches in 2 s");

    // A provider that cannot be reached at start stops the server.
    let gone = AuthConfig {
        jwt: Some(JwtConfig {
            jwks: format!("http://127.0.0.1:{}/keys", free_port()).parse().unwrap(),
            ..config.jwt.clone().unwrap()
        }),
        ..config.clone()
    };
    let refused = tractor::auth::Auth::start(&gone).await.err().expect("no keys, no start");
    assert!(refused.to_string().contains("cannot fetch"), "{refused}");
    // Plain http:// to anything but loopback is refused as a flag value.
    let plain = "http://idp.example.com/keys".parse::<JwksSource>().unwrap_err().to_string();
    assert!(plain.contains("must be https://"), "{plain}");
}

/// Issue 12: JWT callers are limited like tokens, each subject on its own.
#[tokio::test]
async fn jwt_subjects_are_limited_each_on_its_own() {
    use tractor::auth::JwtLimits;
    let dir = tempfile::tempdir().unwrap();
    let a = EncodingKey::from_rsa_pem(&key("rsa-a.pem")).unwrap();
    let jwks = write(dir.path(), "jwks.json", &jwks_of(&[(&a, "a")]));
    let served = serve(AuthConfig {
        jwt: Some(JwtConfig {
            jwks: JwksSource::File(jwks),
            issuer: "https://issuer.test".into(),
            audience: "tractor".into(),
        }),
        // Two a day: the third is over whatever the clock does (a rate of
        // one a second could let it through on a slow machine).
        jwt_limits: JwtLimits { rate: None, quota: Some(2) },
        ..Default::default()
    })
    .await;
    let now = get_current_timestamp();
    let of = |subject: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some("a".into());
        let claims = json!({"sub": subject, "iss": "https://issuer.test", "aud": "tractor",
            "exp": now + 600, "scope": "infer"});
        encode(&header, &claims, &a).unwrap()
    };
    let (first, second) = (of("team-a"), of("team-b"));
    assert_eq!(infer(&served.url, Some(&first)).await.status, 200);
    assert_eq!(infer(&served.url, Some(&first)).await.status, 200);
    let over = infer(&served.url, Some(&first)).await;
    assert_eq!(over.status, 429, "{}", over.body);
    assert!(over.body["error"].as_str().unwrap().contains("jwt:team-a"), "{}", over.body);
    let other = infer(&served.url, Some(&second)).await;
    assert_eq!(other.status, 200, "another subject has its own rate: {}", other.body);
}

/// A fake version: answers with its version and the Authorization it got.
async fn backend(version: &'static str) -> String {
    use axum::http::HeaderMap;
    let handler = move |headers: HeaderMap| async move {
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default();
        let limited = headers.contains_key("x-tractor-limited-output");
        axum::Json(json!({"model_name": "digits", "model_version": version,
            "authorization": authorization, "limited": limited, "outputs": []}))
    };
    let app = axum::Router::new().route("/v2/models/digits/infer", axum::routing::post(handler));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A `tractor route` in this process: (traffic URL, admin URL, stop).
async fn route(auth: AuthConfig) -> (String, String, oneshot::Sender<()>) {
    let (one, two) = (backend("1").await, backend("2").await);
    let (port, admin) = (free_port(), free_port());
    let config = RouteConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], port)),
        admin_listen: SocketAddr::from(([127, 0, 0, 1], admin)),
        routes: RoutesSource::Static(RouteTable {
            backends: vec![
                Backend { version: "1".into(), url: one, weight: 100, grpc: None },
                Backend { version: "2".into(), url: two, weight: 0, grpc: None },
            ],
            shadow: None,
        }),
        sticky_header: None,
        retry_on_stable: false,
        backend_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        max_body_bytes: 1 << 20,
        max_response_bytes: 1 << 30,
        max_inflight: 64,
        connections: tractor::listen::ConnectionLimits::default(),
        backend_tls: None,
        auth,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(tractor::route::run(config, async {
        let _ = stopped.await;
    }));
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_ready(&format!("{admin_url}/healthz")).await;
    (format!("http://127.0.0.1:{port}"), admin_url, stop)
}

#[tokio::test]
async fn the_router_admin_needs_admin_pins_need_pin_and_backends_get_the_router_token() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "auth.yaml",
        "tokens:\n  - name: router-caller\n    value: caller-token\n    scopes: [infer]\n  \
         - name: router-pinner\n    value: pinner-token\n    scopes: [infer, pin]\n  \
         - name: router-ops\n    value: ops-token\n    scopes: [admin, metrics]\n  \
         - name: router-raw\n    value: raw-token\n    scopes: [infer, raw]\n",
    );
    let backend_token = write(dir.path(), "backend.token", "router-own-token\n");
    let (traffic, admin, _stop) =
        route(AuthConfig { backend_token_file: Some(backend_token), ..auth_files(&[&file]) }).await;

    for path in ["/admin/stats", "/admin/routes"] {
        let url = format!("{admin}{path}");
        assert_eq!(call("GET", &url, None, None).await.status, 401, "{path}");
        assert_eq!(call("GET", &url, Some("caller-token"), None).await.status, 403, "{path}");
        assert_eq!(call("GET", &url, Some("ops-token"), None).await.status, 200, "{path}");
    }
    let reset = format!("{admin}/admin/stats/reset");
    assert_eq!(call("POST", &reset, Some("caller-token"), None).await.status, 403);
    assert_eq!(call("POST", &reset, Some("ops-token"), None).await.status, 204);

    let pinned = |token: &'static str| {
        let url = format!("{traffic}/v2/models/digits/infer");
        async move {
            let response = reqwest::Client::new()
                .post(url)
                .bearer_auth(token)
                .header("x-tractor-version", "2")
                .body(infer_body())
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let ignored = pinned("caller-token").await;
    assert_eq!(ignored["model_version"], "1", "a pin without the pin scope is ignored");
    assert_eq!(ignored["authorization"], "Bearer router-own-token");
    assert_eq!(ignored["limited"], true, "a caller without raw gets limited answers");
    let raw = infer(&traffic, Some("raw-token")).await;
    assert_eq!(raw.body["limited"], false, "{}", raw.body);
    // A caller cannot lift the header it is sent with.
    assert_eq!(infer(&traffic, Some("caller-token")).await.body["limited"], true);
    assert_eq!(pinned("pinner-token").await["model_version"], "2");
    let text = metrics(&admin, "ops-token").await;
    assert!(text.contains(r#"tractor_auth_pin_ignored_total{token="router-caller"} 1"#), "{text}");
    assert_eq!(infer(&traffic, None).await.status, 401);
}

#[tokio::test]
async fn the_allow_list_and_the_size_bound_refuse_a_model_before_loading_it() {
    let model = common::real_model("digits-mlp-v2.onnx");
    let mut config = common::config(&model, "digits");
    config.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    config.sources.allowed =
        vec!["file:///srv/models/".parse().unwrap(), "s3://team".parse().unwrap()];
    let refused = tractor::serve::run(config.clone(), std::future::pending()).await.unwrap_err();
    let message = refused.to_string();
    assert!(message.contains("not an allowed model source"), "{message}");
    assert!(message.contains("file:///srv/models/"), "{message}");

    config.sources.allowed = vec!["file".parse().unwrap()];
    config.sources.max_bytes = Some(1000);
    config.listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let too_large = tractor::serve::run(config, std::future::pending()).await.unwrap_err();
    assert!(too_large.to_string().contains("--max-model-bytes 1000"), "{too_large}");
}

/// The binary with `curl`, as docs/security.md shows it.
#[test]
fn curl_sees_401_403_and_200_from_the_binary() {
    let curl = std::process::Command::new("curl").arg("--version").output();
    if curl.is_err() {
        common::skip::skip_outside_ci("curl is not installed (.ci/run installs it)");
        return;
    }
    let status = std::process::Command::new("bash")
        .arg(common::repo_path("tests/auth.sh"))
        .env("TRACTOR", env!("CARGO_BIN_EXE_tractor"))
        .current_dir(common::repo_path(""))
        .status()
        .unwrap();
    assert!(status.success(), "tests/auth.sh failed: {status}");
}

/// `tractor up --auth-file`: callers need a token at the router, and the
/// canary still gets promoted, which needs `up` to read the router's stats
/// with its own admin token.
#[test]
fn up_with_an_auth_file_asks_callers_and_still_promotes() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    let auth = write(
        dir.path(),
        "auth.yaml",
        "tokens:\n  - name: up-caller\n    value: up-caller-token\n    scopes: [infer]\n",
    );
    let document = |version: &str, model: &str| {
        format!(
            "apiVersion: tractor.dev/v1alpha1\nkind: ModelDeployment\nmetadata: {{name: digits}}\nspec:\n  model: {{name: digits, version: '{version}', source: {{uri: '{}'}}}}\n  rollout:\n    steps: [{{weight: 50, pause: 2s}}]\n    analysis: {{interval: 1s, minRequests: 5, maxErrorRate: 0.05, failureLimit: 2}}\n",
            common::real_model_uri(model)
        )
    };
    let spec = write(
        dir.path(),
        "digits.yaml",
        &format!(
            "{}---\n{}",
            document("1", "digits-mlp-v1.onnx"),
            document("2", "digits-mlp-v2.onnx")
        ),
    );
    /// Ctrl-C on drop, so `up` stops its children (also when an assertion
    /// fails), then a kill if it does not stop.
    struct UpProcess(std::process::Child);
    impl Drop for UpProcess {
        fn drop(&mut self) {
            let _ = Command::new("kill")
                .args(["-INT", &self.0.id().to_string()])
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.0.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let port = free_port();
    let mut up = UpProcess(
        Command::new(env!("CARGO_BIN_EXE_tractor"))
            .args(["up", "-f", spec.to_str().unwrap(), "--json", "--port", &port.to_string()])
            .args(["--state-dir", dir.path().join("state").to_str().unwrap()])
            .args(["--auth-file", auth.to_str().unwrap()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, events) = std::sync::mpsc::channel::<Value>();
    let stdout = up.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let http =
        reqwest::blocking::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
    let url = format!("http://127.0.0.1:{port}/v2/models/digits/infer");
    let send = |token: Option<&str>| {
        let mut request = http.post(&url).body(infer_body());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().map(|r| r.status().as_u16()).unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut seen = Vec::new();
    let mut refused_without_token = false;
    loop {
        while let Ok(event) = events.try_recv() {
            seen.push(format!("{} {}", event["reason"], event["message"]));
            if event["reason"] == "Promoted" {
                assert!(refused_without_token, "a request without a token was refused");
                return;
            }
        }
        assert!(Instant::now() < deadline, "no promotion within 120 s; events: {seen:#?}");
        if send(None) == 401 {
            refused_without_token = true;
        }
        for _ in 0..10 {
            send(Some("up-caller-token"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
