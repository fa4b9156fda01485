//! The gRPC API (`serve --grpc-port`, `route --grpc-port`): Triton's gRPC
//! client against real servers and a router, held against ONNX Runtime
//! (`tests/interop/triton_grpc_check.py`); and, from Rust with tonic, the
//! health service, tokens and scopes, version pins and the router's
//! per-version figures.
//!
//! The Python checks need `tritonclient[grpc]`, `kserve`, `onnxruntime` and `numpy`
//! (see `tests/interop.rs` for where Python comes from); without them it is
//! skipped, except under `CI=true`, where it fails.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::python;
use common::server::{RouteProcess, ServeProcess, free_ports, http_get};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tractor::contract::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
use tractor::contract::grpc::{ModelInferRequest, ServerLiveRequest};

/// (name, ONNX file, npz whose `x` holds inputs). The two-output
/// scikit-learn model among them; tiny-bert, with its three INT64 inputs,
/// has its gRPC check in `tests/bert.rs`.
const CASES: &[(&str, &str, &str)] = &[
    ("digits-mlp-v2", "digits-mlp-v2.onnx", "digits-test.npz"),
    ("digits-sklearn-mlp", "digits-sklearn-mlp.onnx", "digits-test.npz"),
    ("digits-cnn", "digits-cnn.onnx", "digits-test-images.npz"),
];
const VERSION: &str = "3";
const MAX_BODY: &str = "1048576";

fn models() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("models")
}

/// `tractor route`, killed when dropped, with its admin statistics.
type Router = RouteProcess;

impl RouteProcess {
    fn stats(&self, token: Option<&str>) -> serde_json::Value {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", self.admin)).unwrap();
        let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
        write!(stream, "GET /admin/stats HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }
}

fn serve(port: u16, grpc: u16, name: &str, onnx: &str, extra: &[&str]) -> ServeProcess {
    let model = models().join(onnx);
    let grpc = grpc.to_string();
    let args = [
        "--model",
        model.to_str().unwrap(),
        "--name",
        name,
        "--model-version",
        VERSION,
        "--grpc-port",
        &grpc,
        "--max-body-bytes",
        MAX_BODY,
    ];
    ServeProcess::start_on(port, &[&args[..], extra].concat())
}

/// Its 32 overlapping requests of 1-5 rows are what found the batcher's
/// carried-request stall (a request that did not fit one worker's batch
/// waited for the queue lock held by another worker idle in `recv`), now
/// `serve::batcher`'s `a_carried_request_is_answered_while_another_worker_waits_on_the_queue`.
#[test]
fn triton_grpc_client_and_onnxruntime_agree_direct_and_through_the_router() {
    let Some(python) = python::python_with("tritonclient.grpc, onnxruntime, numpy") else {
        return;
    };
    let ports = free_ports(CASES.len() * 2 + 2);
    let mut servers: Vec<ServeProcess> = CASES
        .iter()
        .enumerate()
        .map(|(i, (name, onnx, _))| serve(ports[2 * i], ports[2 * i + 1], name, onnx, &[]))
        .collect();
    for server in &mut servers {
        server.wait_ready();
    }
    let (route_http, route_grpc) = (ports[CASES.len() * 2], ports[CASES.len() * 2 + 1]);
    let router = Router::start(&[
        format!("--listen=127.0.0.1:{route_http}"),
        format!("--grpc-port={route_grpc}"),
        format!("--backend={VERSION}=http://127.0.0.1:{}@100", ports[0]),
        format!("--grpc-backend={VERSION}=http://127.0.0.1:{}", ports[1]),
        format!("--max-body-bytes={MAX_BODY}"),
    ]);

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/triton_grpc_check.py");
    let mut check = Command::new(&python);
    check.arg(&script).args(["--version", VERSION, "--max-body-bytes", MAX_BODY]);
    let case = |name: &str, port: u16, onnx: &str, npz: &str| {
        format!(
            "{name}@127.0.0.1:{port}={}={}",
            models().join(onnx).display(),
            models().join(npz).display()
        )
    };
    for (i, (name, onnx, npz)) in CASES.iter().enumerate() {
        check.arg("--case").arg(case(name, ports[2 * i + 1], onnx, npz));
    }
    let (name, onnx, npz) = CASES[0];
    check.arg("--case").arg(case(name, route_grpc, onnx, npz));
    let output = check.stdin(Stdio::null()).output().expect("run the Python check");
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        let logs: String = servers.iter().map(|s| format!("--- serve:\n{}\n", s.log())).collect();
        panic!(
            "the gRPC check failed:\n{stdout}\n--- stderr:\n{}\n{logs}--- route:\n{}",
            String::from_utf8_lossy(&output.stderr),
            router.log()
        );
    }
    println!("{stdout}");
    // KServe's own gRPC client, on the same servers and the router.
    if let Some(python) = python::python_with("kserve, onnxruntime, numpy") {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/kserve_grpc_check.py");
        let mut check = Command::new(&python);
        check.arg(&script);
        for (i, (name, onnx, npz)) in CASES.iter().enumerate() {
            check.arg("--case").arg(case(name, ports[2 * i + 1], onnx, npz));
        }
        check.arg("--case").arg(case(name, route_grpc, onnx, npz));
        let output = check.stdin(Stdio::null()).output().expect("run the KServe check");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "the KServe gRPC check failed:\n{stdout}");
        println!("{stdout}");
    }
    let stats = router.stats(None);
    let through = stats["versions"][VERSION]["requests"].as_u64().unwrap_or(0);
    assert!(through >= 40, "the router measured {through} gRPC requests: {stats}");
    let metrics = http_get(ports[0], "/metrics").unwrap();
    assert!(
        metrics.contains(r#"outcome="success",protocol="grpc""#),
        "gRPC requests are counted under protocol=\"grpc\": {metrics}"
    );
    for server in &mut servers {
        server.assert_running();
    }
}

async fn client(port: u16) -> GrpcInferenceServiceClient<Channel> {
    let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await
        .expect("connect over HTTP/2");
    GrpcInferenceServiceClient::new(channel)
}

fn infer_request(token: Option<&str>, pin: Option<&str>) -> tonic::Request<ModelInferRequest> {
    use tractor::contract::grpc::model_infer_request::InferInputTensor;
    let rows: Vec<u8> = (0..64).flat_map(|i| (i as f32 / 64.0).to_le_bytes()).collect();
    let mut request = tonic::Request::new(ModelInferRequest {
        model_name: "digits".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 64],
            ..Default::default()
        }],
        raw_input_contents: vec![rows],
        ..Default::default()
    });
    if let Some(token) = token {
        let value: MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    if let Some(pin) = pin {
        request.metadata_mut().insert("x-tractor-version", pin.parse().unwrap());
    }
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_tokens_scopes_and_pins_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens.yaml");
    std::fs::write(
        &tokens,
        "tokens:\n  - name: grpc-app\n    value: grpc-app-secret\n    scopes: [infer, metadata]\n  \
         - name: grpc-reader\n    value: grpc-reader-secret\n    scopes: [metadata]\n  \
         - name: grpc-pinner\n    value: grpc-pinner-secret\n    scopes: [infer, pin]\n  \
         - name: grpc-ops\n    value: grpc-ops-secret\n    scopes: [admin]\n  \
         - name: grpc-raw\n    value: grpc-raw-secret\n    scopes: [infer, raw]\n",
    )
    .unwrap();
    let auth = tokens.to_str().unwrap().to_string();
    let ports = free_ports(4);
    let limits = ["--auth-file", &auth, "--limit-top-k", "3", "--limit-digits", "2"];
    let mut server = serve(ports[0], ports[1], "digits", "digits-mlp-v2.onnx", &limits);
    tokio::task::block_in_place(|| server.wait_ready());

    // Health: open, and SERVING once the model is loaded.
    let channel = Channel::from_shared(format!("http://127.0.0.1:{}", ports[1]))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "inference.GRPCInferenceService"] {
        // The health service follows readiness within its poll period.
        let started = Instant::now();
        loop {
            let answer = health
                .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
                .await
                .unwrap_or_else(|e| panic!("health of {service:?}: {e}"));
            if answer.into_inner().status == 1 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(5), "{service:?} never SERVING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    let mut direct = client(ports[1]).await;
    assert!(direct.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    let code = |r: Result<tonic::Response<_>, tonic::Status>| r.err().map(|s| s.code());
    assert_eq!(
        code(direct.model_infer(infer_request(None, None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(direct.model_infer(infer_request(Some("not-a-token"), None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    assert_eq!(
        code(direct.model_infer(infer_request(Some("grpc-reader-secret"), None)).await),
        Some(tonic::Code::PermissionDenied)
    );
    let whole = direct.model_infer(infer_request(Some("grpc-raw-secret"), None)).await.unwrap();
    let whole = whole.into_inner();
    assert_eq!(whole.raw_output_contents[0].len(), 40, "10 FP32 logits for a raw caller");
    let limited = direct.model_infer(infer_request(Some("grpc-app-secret"), None)).await.unwrap();
    let limited = limited.into_inner();
    assert_eq!(limited.outputs[0].datatype, "BYTES");
    assert_eq!(limited.outputs[0].shape, [1, 3], "the 3 best classes without raw");
    let first = &limited.raw_output_contents[0];
    let len = u32::from_le_bytes(first[..4].try_into().unwrap()) as usize;
    let best = std::str::from_utf8(&first[4..4 + len]).unwrap();
    let logits: Vec<f32> = whole.raw_output_contents[0]
        .chunks(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let argmax = (0..10).max_by(|&a, &b| logits[a].total_cmp(&logits[b])).unwrap();
    assert_eq!(best, format!("{:.2}:{argmax}", logits[argmax]), "score rounded to 2 decimals");

    // Through the router: two versions (the same server), all weight on "1".
    let router = Router::start(&[
        format!("--listen=127.0.0.1:{}", ports[2]),
        format!("--grpc-port={}", ports[3]),
        format!("--backend=1=http://127.0.0.1:{}@100", ports[0]),
        format!("--backend=2=http://127.0.0.1:{}@0", ports[0]),
        format!("--grpc-backend=1=http://127.0.0.1:{}", ports[1]),
        format!("--grpc-backend=2=http://127.0.0.1:{}", ports[1]),
        format!("--auth-file={auth}"),
    ]);
    let mut routed = client(ports[3]).await;
    assert_eq!(
        code(routed.model_infer(infer_request(None, None)).await),
        Some(tonic::Code::Unauthenticated)
    );
    routed.model_infer(infer_request(Some("grpc-pinner-secret"), Some("2"))).await.unwrap();
    // A pin from a caller without the pin scope is ignored: weights decide.
    routed.model_infer(infer_request(Some("grpc-app-secret"), Some("2"))).await.unwrap();
    routed.model_infer(infer_request(Some("grpc-app-secret"), None)).await.unwrap();
    let unknown = routed.model_infer(infer_request(Some("grpc-pinner-secret"), Some("9"))).await;
    assert_eq!(code(unknown), Some(tonic::Code::InvalidArgument));
    let stats = tokio::task::block_in_place(|| router.stats(Some("grpc-ops-secret")));
    assert_eq!(stats["versions"]["2"]["requests"], 1, "{stats}");
    assert_eq!(stats["versions"]["1"]["requests"], 2, "{stats}");
    server.assert_running();
}

/// Shadowing over gRPC: the router relays each answer as it streams, and
/// mirrors the request to the shadow version's gRPC port; once both have
/// ended, their outputs are compared as REST's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_requests_are_mirrored_to_the_shadow_and_compared() {
    let ports = free_ports(6);
    let mut stable = serve(ports[0], ports[1], "digits", "digits-mlp-v2.onnx", &[]);
    let mut shadow = serve(ports[2], ports[3], "digits", "digits-mlp-v2.onnx", &[]);
    tokio::task::block_in_place(|| {
        stable.wait_ready();
        shadow.wait_ready();
    });
    let router = Router::start(&[
        format!("--listen=127.0.0.1:{}", ports[4]),
        format!("--grpc-port={}", ports[5]),
        format!("--backend=1=http://127.0.0.1:{}@100", ports[0]),
        format!("--backend=2=http://127.0.0.1:{}@0", ports[2]),
        format!("--grpc-backend=1=http://127.0.0.1:{}", ports[1]),
        format!("--grpc-backend=2=http://127.0.0.1:{}", ports[3]),
        "--shadow=2".into(),
    ]);
    let mut routed = client(ports[5]).await;
    const REQUESTS: u64 = 8;
    for _ in 0..REQUESTS {
        let answer = routed.model_infer(infer_request(None, None)).await.unwrap().into_inner();
        assert_eq!(answer.raw_output_contents[0].len(), 40, "the caller's answer is whole");
    }
    // The copies run in the background: wait for their figures.
    let started = Instant::now();
    let stats = loop {
        let stats = tokio::task::block_in_place(|| router.stats(None));
        let mirrored = &stats["versions"]["2"];
        if mirrored["requests"] == REQUESTS && mirrored["agreement"].is_number() {
            break stats;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{stats}\n{}", router.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(stats["versions"]["1"]["requests"], REQUESTS, "{stats}");
    assert_eq!(stats["versions"]["2"]["errors"], 0, "{stats}");
    assert_eq!(stats["versions"]["2"]["agreement"], 1.0, "the same model agrees: {stats}");
    stable.assert_running();
    shadow.assert_running();
}

/// `--tls-cert` serves the gRPC port over TLS too (ALPN `h2`): Triton's
/// gRPC client with `ssl=True` and the CA reaches it and infers.
#[test]
fn the_grpc_port_speaks_tls_with_the_rest_ports_certificate() {
    let Some(python) = python::python_with("tritonclient.grpc, numpy") else { return };
    let certs = Certificates::new();
    let (cert_path, key_path, ca_path) = (&certs.cert, &certs.key, &certs.ca);
    let ports = free_ports(2);
    let tls = ["--tls-cert", cert_path.to_str().unwrap(), "--tls-key", key_path.to_str().unwrap()];
    let mut server = serve(ports[0], ports[1], "digits", "digits-mlp-v2.onnx", &tls);
    let script = format!(
        r#"
import time, numpy as np, tritonclient.grpc as g
c = g.InferenceServerClient("localhost:{port}", ssl=True, root_certificates="{ca}")
deadline = time.time() + 60
while True:
    try:
        if c.is_model_ready("digits"): break
    except Exception:
        if time.time() > deadline: raise
    time.sleep(0.1)
x = np.zeros((2, 64), dtype=np.float32)
i = g.InferInput("input", [2, 64], "FP32"); i.set_data_from_numpy(x)
print(c.infer("digits", [i]).as_numpy("logits").shape)
"#,
        port = ports[1],
        ca = ca_path.display()
    );
    let output = Command::new(&python).args(["-c", &script]).output().expect("run Python");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("(2, 10)"),
        "gRPC over TLS: {stdout}\n{}\n--- serve:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    server.assert_running();
}

/// A CA and a leaf for `localhost` it signed, written as a
/// `kubernetes.io/tls` Secret holds them: `tls.crt`, `tls.key`, `ca.crt`.
struct Certificates {
    _dir: tempfile::TempDir,
    cert: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

impl Certificates {
    fn new() -> Certificates {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.distinguished_name.push(DnType::CommonName, "grpc test CA");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate().unwrap();
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);
        let leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (cert_path, key_path, ca_path) =
            (dir.path().join("tls.crt"), dir.path().join("tls.key"), dir.path().join("ca.crt"));
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        std::fs::write(&ca_path, ca_pem).unwrap();
        Certificates { _dir: dir, cert: cert_path, key: key_path, ca: ca_path }
    }
}

/// What `spec.serving.auth.backendTls` sets up in the cluster, with real
/// processes: a version serving TLS on both ports, and a router reaching it
/// over https:// for REST and gRPC, verified with `--backend-ca` only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_reaches_a_tls_version_over_rest_and_grpc_with_backend_ca() {
    let certs = Certificates::new();
    let ports = free_ports(4);
    let tls =
        ["--tls-cert", certs.cert.to_str().unwrap(), "--tls-key", certs.key.to_str().unwrap()];
    let mut version = serve(ports[0], ports[1], "digits", "digits-mlp-v2.onnx", &tls);
    let router = Router::start(&[
        format!("--listen=127.0.0.1:{}", ports[2]),
        format!("--grpc-port={}", ports[3]),
        format!("--backend=1=https://localhost:{}@100", ports[0]),
        format!("--grpc-backend=1=https://localhost:{}", ports[1]),
        format!("--backend-ca={}", certs.ca.display()),
    ]);
    // The version loads its model behind TLS, where `wait_ready` (plain
    // HTTP) cannot look: ask through the router until it answers.
    let started = Instant::now();
    let mut routed = client(ports[3]).await;
    let answer = loop {
        match routed.model_infer(infer_request(None, None)).await {
            Ok(answer) => break answer.into_inner(),
            Err(status) => {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{status:?}\n--- router:\n{}\n--- version:\n{}",
                    router.log(),
                    version.log()
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(answer.raw_output_contents[0].len(), 40, "10 FP32 logits");
    let rest = tokio::task::block_in_place(|| http_get(ports[2], "/v2/models/digits"));
    let rest = rest.unwrap_or_else(|| panic!("REST through the router: {}", router.log()));
    assert!(rest.contains("\"name\":\"digits\""), "{rest}");
    let stats = tokio::task::block_in_place(|| router.stats(None));
    assert_eq!(stats["versions"]["1"]["errors"], 0, "{stats}");
    version.assert_running();
}
