//! TLS on the servers' listeners (issue 12): HTTPS verified by a real
//! client with the CA, plain HTTP failing on the TLS port, mutual TLS,
//! certificate rotation while serving, a silent TLS client closed by the
//! header-read timeout, `tractor route --tls-cert` end to end, and the
//! router reaching an https:// backend with `--backend-ca`.
//! Certificates are made in the test with rcgen.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::routing::get;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

use tractor::contract::routes::{Backend, RouteTable};
use tractor::listen::{ConnectionLimits, serve_tls};
use tractor::route::{RouteConfig, RouterState, RoutesSource, app as route_app};
use tractor::tls::{TlsFiles, TlsServer};

/// A certificate authority that signs server and client certificates.
struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { pem: cert.pem(), issuer: Issuer::new(params, key) }
    }

    /// A leaf for `localhost` and 127.0.0.1: (certificate PEM, key PEM, DER).
    fn leaf(&self, common_name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String, Vec<u8>) {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }
}

/// Writes a file whole by renaming a sibling over it, as the kubelet
/// swaps a mounted Secret, so no reader sees half a file.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct Served {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    addr: SocketAddr,
}

/// Serves a one-route app over TLS through the servers' own accept loop.
async fn serve(ca: &Ca, client_ca: Option<&Ca>, limits: ConnectionLimits) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem, _) = ca.leaf("server-1", ExtendedKeyUsagePurpose::ServerAuth);
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    let client_ca = client_ca.map(|client_ca| {
        let path = dir.path().join("client-ca.crt");
        std::fs::write(&path, &client_ca.pem).unwrap();
        path
    });
    let files = TlsFiles { cert: cert.clone(), key: key.clone(), client_ca };
    let tls = TlsServer::new(files).unwrap();
    let app = axum::Router::new().route("/v2/health/live", get(|| async { "live" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve_tls(listener, app, limits, Some(tls), std::future::pending()));
    Served { _dir: dir, cert, key, addr }
}

fn client(ca: &Ca) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap()])
        .tls_info(true)
        .timeout(Duration::from_secs(10))
}

fn peer_certificate(response: &reqwest::Response) -> Vec<u8> {
    response
        .extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|info| info.peer_certificate())
        .expect("the answer carries the server's certificate")
        .to_vec()
}

#[tokio::test]
async fn https_is_served_and_verified_with_the_ca() {
    let ca = Ca::new("test CA");
    let served = serve(&ca, None, ConnectionLimits::default()).await;
    let http = client(&ca).build().unwrap();
    let url = format!("https://localhost:{}/v2/health/live", served.addr.port());
    let answer = http.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "live");

    // A client that trusts another CA refuses the server.
    let stranger = client(&Ca::new("another CA")).build().unwrap();
    let refused = stranger.get(&url).send().await.unwrap_err();
    assert!(refused.is_connect(), "{refused:?}");
}

#[tokio::test]
async fn plain_http_fails_on_the_tls_port() {
    let ca = Ca::new("test CA");
    let served = serve(&ca, None, ConnectionLimits::default()).await;
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    let url = format!("http://127.0.0.1:{}/v2/health/live", served.addr.port());
    let failed = http.get(&url).send().await;
    assert!(failed.is_err(), "plain HTTP was answered on the TLS port: {failed:?}");
}

#[tokio::test]
async fn mutual_tls_refuses_a_client_without_a_certificate_and_accepts_one_with() {
    let ca = Ca::new("server CA");
    let client_ca = Ca::new("client CA");
    let served = serve(&ca, Some(&client_ca), ConnectionLimits::default()).await;
    let url = format!("https://localhost:{}/v2/health/live", served.addr.port());

    let anonymous = client(&ca).build().unwrap();
    assert!(anonymous.get(&url).send().await.is_err(), "no client certificate was accepted");

    // Signed by a CA the server does not trust: refused too.
    let (cert, key, _) = Ca::new("rogue CA").leaf("rogue", ExtendedKeyUsagePurpose::ClientAuth);
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let rogue = client(&ca).identity(identity).build().unwrap();
    assert!(rogue.get(&url).send().await.is_err(), "an untrusted client certificate was accepted");

    let (cert, key, _) = client_ca.leaf("checkout-app", ExtendedKeyUsagePurpose::ClientAuth);
    let identity = reqwest::Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap();
    let known = client(&ca).identity(identity).build().unwrap();
    let answer = known.get(&url).send().await.unwrap();
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_and_a_broken_one_is_ignored() {
    let ca = Ca::new("test CA");
    let served = serve(&ca, None, ConnectionLimits::default()).await;
    let url = format!("https://localhost:{}/v2/health/live", served.addr.port());
    // A new client each time: one connection each, so each sees the
    // certificate current when it connected.
    let fetch = || async {
        let http = client(&ca).build().unwrap();
        let answer = http.get(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        peer_certificate(&answer)
    };
    let first = fetch().await;

    let (cert, key, rotated) = ca.leaf("server-2", ExtendedKeyUsagePurpose::ServerAuth);
    replace(&served.key, &key);
    replace(&served.cert, &cert);
    let started = Instant::now();
    loop {
        let seen = fetch().await;
        if seen == rotated {
            break;
        }
        assert_eq!(seen, first, "neither the old nor the new certificate");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the new certificate not served within 2 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A key that does not match the certificate: the last good pair stays.
    let (_, other_key, _) = ca.leaf("server-3", ExtendedKeyUsagePurpose::ServerAuth);
    replace(&served.key, &other_key);
    tokio::time::sleep(tractor::tls::RELOAD_CHECK * 2).await;
    assert_eq!(fetch().await, rotated, "a broken pair replaced the last good one");
}

#[tokio::test]
async fn a_client_that_never_handshakes_is_closed_by_the_header_read_timeout() {
    use tokio::io::AsyncReadExt;
    let ca = Ca::new("test CA");
    let limits =
        ConnectionLimits { header_read_timeout: Duration::from_millis(200), ..Default::default() };
    let served = serve(&ca, None, limits).await;
    let mut silent = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let mut buf = [0u8; 64];
    // The server closes the connection: the read ends (0 bytes or a reset)
    // instead of waiting for the outer bound.
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(read.is_ok(), "the silent connection was still open after 10 s");
}

#[test]
fn a_pair_that_does_not_load_is_refused_with_the_reason() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = ca.leaf("server", ExtendedKeyUsagePurpose::ServerAuth);
    let (_, other_key, _) = ca.leaf("other", ExtendedKeyUsagePurpose::ServerAuth);
    let cert_path = dir.path().join("tls.crt");
    let key_path = dir.path().join("tls.key");
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &other_key).unwrap();
    let files = |client_ca| TlsFiles { cert: cert_path.clone(), key: key_path.clone(), client_ca };
    let message = TlsServer::new(files(None)).unwrap_err().to_string();
    assert!(message.contains("tls.crt") && message.contains("tls.key"), "{message}");

    std::fs::write(&key_path, "not a key").unwrap();
    let message = TlsServer::new(files(None)).unwrap_err().to_string();
    assert!(message.contains("no private key"), "{message}");

    std::fs::write(&cert_path, "no pem here").unwrap();
    let message = TlsServer::new(files(None)).unwrap_err().to_string();
    assert!(message.contains("holds no PEM certificate"), "{message}");

    // A good pair with a client CA file that is not there.
    std::fs::write(&cert_path, &cert).unwrap();
    std::fs::write(&key_path, &key).unwrap();
    assert!(TlsServer::new(files(None)).is_ok());
    let message =
        TlsServer::new(files(Some(dir.path().join("absent.crt")))).unwrap_err().to_string();
    assert!(message.contains("reading") && message.contains("absent.crt"), "{message}");
}

/// `tractor route` kills its child on drop, so a failed test leaves no process.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn tractor_route_serves_https_with_its_tls_flags() {
    let ca = Ca::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, served_der) = ca.leaf("router", ExtendedKeyUsagePurpose::ServerAuth);
    let (cert_path, key_path) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert_path, cert).unwrap();
    std::fs::write(&key_path, key).unwrap();
    let backend = axum::Router::new().route("/v2/health/ready", get(|| async { "ready" }));
    let backend_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend_addr = backend_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(backend_listener, backend).await });

    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_tractor"))
        .args(["route", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--backend", &format!("1=http://{backend_addr}")])
        .arg("--tls-cert")
        .arg(&cert_path)
        .arg("--tls-key")
        .arg(&key_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut router = Process(child);
    let http = client(&ca).timeout(Duration::from_secs(2)).build().unwrap();
    let url = format!("https://localhost:{port}/v2/health/ready");
    let started = Instant::now();
    let answer = loop {
        match http.get(&url).send().await {
            Ok(answer) => break answer,
            Err(e) => {
                if let Ok(Some(status)) = router.0.try_wait() {
                    let mut stderr = String::new();
                    let _ = router.0.stderr.take().unwrap().read_to_string(&mut stderr);
                    panic!("tractor route exited with {status}: {stderr}");
                }
                assert!(started.elapsed() < Duration::from_secs(30), "router not up: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(answer.status(), 200);
    assert_eq!(peer_certificate(&answer), served_der);
}

fn route_config(backend_url: &str, backend_tls: Option<tractor::tls::BackendTls>) -> RouteConfig {
    RouteConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin_listen: "127.0.0.1:0".parse().unwrap(),
        routes: RoutesSource::Static(RouteTable {
            backends: vec![Backend {
                version: "1".into(),
                url: backend_url.into(),
                weight: 100,
                grpc: None,
            }],
            shadow: None,
        }),
        sticky_header: None,
        retry_on_stable: false,
        backend_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(10),
        max_body_bytes: 1 << 20,
        max_response_bytes: 1 << 20,
        max_inflight: 16,
        connections: ConnectionLimits::default(),
        backend_tls,
        auth: Default::default(),
    }
}

/// Serves the router's traffic side on loopback with `config`.
async fn start_router(config: &RouteConfig) -> String {
    let table = config.routes.load().await.unwrap();
    let state = RouterState::new(config, table);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = ConnectionLimits::default();
    tokio::spawn(tractor::listen::serve(
        listener,
        route_app(state),
        limits,
        std::future::pending(),
    ));
    format!("http://{addr}")
}

#[tokio::test]
async fn the_router_reaches_an_https_backend_verified_with_backend_ca() {
    let ca = Ca::new("backend CA");
    let backend = serve(&ca, None, ConnectionLimits::default()).await;
    let backend_url = format!("https://127.0.0.1:{}", backend.addr.port());
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("backend-ca.crt");
    std::fs::write(&ca_path, &ca.pem).unwrap();
    let backend_tls = tractor::tls::BackendTls::from_ca_file(&ca_path).unwrap();

    let router = start_router(&route_config(&backend_url, Some(backend_tls))).await;
    let http = reqwest::Client::new();
    let answer = http.get(format!("{router}/v2/health/live")).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "live");

    // A CA that did not sign the backend's certificate: the backend is not
    // trusted, and the caller gets the router's 502, never its answer.
    std::fs::write(&ca_path, &Ca::new("another CA").pem).unwrap();
    let wrong = tractor::tls::BackendTls::from_ca_file(&ca_path).unwrap();
    let router = start_router(&route_config(&backend_url, Some(wrong))).await;
    let answer = http.get(format!("{router}/v2/health/live")).send().await.unwrap();
    assert_eq!(answer.status(), 502);

    // Without --backend-ca the https:// table is refused when it loads.
    let message = tractor::route::run(route_config(&backend_url, None), async {})
        .await
        .unwrap_err()
        .to_string();
    assert!(message.contains("--backend-ca"), "{message}");
}
