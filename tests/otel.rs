//! The `otel` feature end to end (issue 14): real `tractor serve` and
//! `tractor route` processes export their request spans to a fake OTLP/HTTP
//! collector on loopback, and the spans must make one trace per request:
//! the router's span the parent of the server's, the caller's
//! `traceparent` the parent of the router's, a fresh trace for a hostile
//! one, gRPC and 404s spanned too, the shadow copy a child of its own. The
//! batch processor's timer is set past the test's length, so every span
//! seen was sent by the flush at SIGTERM.
//!
//! `cargo test --features otel --test otel`

#![cfg(feature = "otel")]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::server::{RouteProcess, ServeProcess, free_ports};

const MODEL: &str = "digits";
const VERSION: &str = "3";
/// The OTLP span kinds (`opentelemetry/proto/trace/v1/trace.proto`).
const KIND_SERVER: i32 = 2;
const KIND_CLIENT: i32 = 3;

/// The few OTLP messages the test reads (`ExportTraceServiceRequest` and
/// what it holds), decoded with prost: fields not named here are skipped.
mod otlp {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ExportTraceServiceRequest {
        #[prost(message, repeated, tag = "1")]
        pub resource_spans: Vec<ResourceSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ResourceSpans {
        #[prost(message, optional, tag = "1")]
        pub resource: Option<Resource>,
        #[prost(message, repeated, tag = "2")]
        pub scope_spans: Vec<ScopeSpans>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Resource {
        #[prost(message, repeated, tag = "1")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ScopeSpans {
        #[prost(message, repeated, tag = "2")]
        pub spans: Vec<Span>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Span {
        #[prost(bytes = "vec", tag = "1")]
        pub trace_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "2")]
        pub span_id: Vec<u8>,
        #[prost(bytes = "vec", tag = "4")]
        pub parent_span_id: Vec<u8>,
        #[prost(string, tag = "5")]
        pub name: String,
        #[prost(int32, tag = "6")]
        pub kind: i32,
        #[prost(message, repeated, tag = "9")]
        pub attributes: Vec<KeyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct KeyValue {
        #[prost(string, tag = "1")]
        pub key: String,
        #[prost(message, optional, tag = "2")]
        pub value: Option<AnyValue>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AnyValue {
        #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
        pub value: Option<Value>,
    }
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Value {
        #[prost(string, tag = "1")]
        String(String),
        #[prost(bool, tag = "2")]
        Bool(bool),
        #[prost(int64, tag = "3")]
        Int(i64),
        #[prost(double, tag = "4")]
        Double(f64),
    }

    pub fn text(value: &Option<AnyValue>) -> String {
        match value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Bool(b)) => b.to_string(),
            Some(Value::Int(i)) => i.to_string(),
            Some(Value::Double(d)) => d.to_string(),
            None => String::new(),
        }
    }
}

/// One exported span, flattened for assertions (ids in hex).
#[derive(Debug, Clone)]
struct Exported {
    service: String,
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
    kind: i32,
    attributes: BTreeMap<String, String>,
}

impl Exported {
    fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }
}

/// A fake OTLP/HTTP collector: `POST /v1/traces` with protobuf bodies.
struct Collector {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<Exported>>>,
}

impl Collector {
    fn start() -> Collector {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let kept = spans.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            runtime.unwrap().block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let app = axum::Router::new().route(
                    "/v1/traces",
                    axum::routing::post(move |body: axum::body::Bytes| {
                        let kept = kept.clone();
                        async move {
                            let decoded =
                                <otlp::ExportTraceServiceRequest as prost::Message>::decode(body);
                            let Ok(request) = decoded else {
                                return axum::http::StatusCode::BAD_REQUEST;
                            };
                            kept.lock().unwrap().extend(flatten(request));
                            axum::http::StatusCode::OK
                        }
                    }),
                );
                axum::serve(listener, app).await.unwrap();
            });
        });
        Collector { addr, spans }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<Exported> {
        self.spans.lock().unwrap().clone()
    }
}

fn flatten(request: otlp::ExportTraceServiceRequest) -> Vec<Exported> {
    let mut out = Vec::new();
    for resource in request.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|a| a.key == "service.name")
            .map(|a| otlp::text(&a.value))
            .unwrap_or_default();
        for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
            out.push(Exported {
                service: service.clone(),
                trace_id: hex::encode(&span.trace_id),
                span_id: hex::encode(&span.span_id),
                parent: hex::encode(&span.parent_span_id),
                name: span.name,
                kind: span.kind,
                attributes: span
                    .attributes
                    .iter()
                    .map(|a| (a.key.clone(), otlp::text(&a.value)))
                    .collect(),
            });
        }
    }
    out
}

fn sigterm(pid: u32) {
    let status = Command::new("kill").args(["-TERM", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

/// A collector, one `serve` and a router in front of it, exporting.
struct Stack {
    collector: Collector,
    serve: ServeProcess,
    router: RouteProcess,
    serve_port: u16,
    route_port: u16,
    route_grpc: u16,
}

impl Stack {
    /// With `shadow`, the same server is version 2 too, at weight 0 and
    /// shadowed: it serves (and spans) the copy of each request as well.
    fn start(shadow: bool) -> Stack {
        let collector = Collector::start();
        let endpoint = collector.endpoint();
        let env = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            // Past the test's length: only the flush at exit sends.
            ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
        ];
        let ports = free_ports(4);
        let model = common::real_model("digits-mlp-v2.onnx");
        let grpc = ports[1].to_string();
        let args = [
            "--model",
            model.to_str().unwrap(),
            "--name",
            MODEL,
            "--model-version",
            VERSION,
            "--grpc-port",
            &grpc,
        ];
        // serve gets the filter the operator gives its pods; the router,
        // started without RUST_LOG, must turn its spans on by itself.
        let serve_env = [env[0], env[1], ("RUST_LOG", "info,tractor::requests=debug")];
        let mut serve = ServeProcess::start_with_env(ports[0], &args, &serve_env);
        serve.wait_ready();
        let mut flags = vec![
            format!("--listen=127.0.0.1:{}", ports[2]),
            format!("--grpc-port={}", ports[3]),
            format!("--backend=1=http://127.0.0.1:{}@100", ports[0]),
            format!("--grpc-backend=1=http://127.0.0.1:{}", ports[1]),
        ];
        if shadow {
            flags.push(format!("--backend=2=http://127.0.0.1:{}@0", ports[0]));
            flags.push("--shadow=2".into());
        }
        let router = RouteProcess::start_with_env(&flags, &env);
        // The gRPC port opens after the admin port the start waited for.
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", ports[3])).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "router: {}", router.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        Stack {
            collector,
            serve,
            router,
            serve_port: ports[0],
            route_port: ports[2],
            route_grpc: ports[3],
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.route_port)
    }

    /// SIGTERM to both; their spans, once both have exited.
    fn stop(self) -> Vec<Exported> {
        assert!(
            self.collector.spans().is_empty(),
            "spans arrived before the flush: the schedule delay did not hold"
        );
        let Stack { collector, serve, mut router, .. } = self;
        sigterm(router.child.id());
        let deadline = Instant::now() + Duration::from_secs(20);
        while router.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "router still running: {}", router.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        serve.sigterm();
        let (status, log) = serve.wait_exit(Duration::from_secs(20));
        assert!(status.success(), "serve exited with {status}: {log}");
        let spans = collector.spans();
        println!("{} spans:\n{spans:#?}\n--- router log:\n{}", spans.len(), router.log());
        spans
    }
}

fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn get(stack: &Stack, path: &str, traceparent: Option<&str>) -> u16 {
    let mut request = client().get(stack.url(path));
    if let Some(value) = traceparent {
        request = request.header("traceparent", value).header("tracestate", "caller=1");
    }
    request.send().unwrap().status().as_u16()
}

/// The only span of `service` whose `url.path` is `path`.
fn span_of<'a>(spans: &'a [Exported], service: &str, path: &str) -> &'a Exported {
    let found: Vec<&Exported> =
        spans.iter().filter(|s| s.service == service && s.attr("url.path") == path).collect();
    assert_eq!(found.len(), 1, "one {service} span for {path} in {spans:#?}");
    found[0]
}

/// The router's span of `path` and the server's under it.
fn pair<'a>(spans: &'a [Exported], path: &str) -> (&'a Exported, &'a Exported) {
    let router = span_of(spans, "tractor-router", path);
    let serve = span_of(spans, "tractor-serve", path);
    assert_eq!(serve.trace_id, router.trace_id, "{path}: one trace across router and serve");
    assert_eq!(serve.parent, router.span_id, "{path}: the router's span is the parent");
    (router, serve)
}

const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[test]
fn rest_requests_make_one_trace_and_hostile_traceparents_start_fresh_ones() {
    let stack = Stack::start(false);
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    let oversized = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01-{}", "a".repeat(4000));
    let hostile: [(&str, String); 4] = [
        ("/v2/models/digits/config", "garbage".to_string()),
        ("/v2/models/digits/versions/3", oversized),
        // Not the readiness path: `wait_ready` polls it, spans and all.
        ("/v2", format!("00-{}-{CALLER_SPAN}-01", "0".repeat(32))),
        ("/v2/models/digits/versions/3/ready", format!("00-{CALLER_TRACE}-{}-01", "0".repeat(16))),
    ];
    assert_eq!(get(&stack, "/v2/models/digits", None), 200);
    assert_eq!(get(&stack, "/v2/models/digits/ready", Some(&caller)), 200);
    for (path, header) in &hostile {
        assert_eq!(get(&stack, path, Some(header)), 200, "{path}: a bad header fails nothing");
    }
    assert_eq!(get(&stack, "/v2/models/elsewhere", None), 404);
    let direct = client().get(format!("http://127.0.0.1:{}/no/such/endpoint", stack.serve_port));
    assert_eq!(direct.send().unwrap().status(), 404);
    let spans = stack.stop();

    let (router, serve) = pair(&spans, "/v2/models/digits");
    assert!(router.parent.is_empty(), "no caller trace: the router's span is a root");
    assert_eq!(router.name, "GET /v2/models/{name}");
    assert_eq!(router.kind, KIND_SERVER);
    assert_eq!(router.attr("http.request.method"), "GET");
    assert_eq!(router.attr("http.route"), "/v2/models/{name}");
    assert_eq!(router.attr("http.response.status_code"), "200");
    assert_eq!(router.attr("tractor.model"), MODEL);
    assert_eq!(router.attr("tractor.version"), "1", "the version the router chose");
    assert_eq!(serve.attr("tractor.version"), VERSION, "the version serve serves");
    assert_eq!(serve.kind, KIND_SERVER);

    let (router, _) = pair(&spans, "/v2/models/digits/ready");
    assert_eq!(router.trace_id, CALLER_TRACE, "the caller's trace goes on");
    assert_eq!(router.parent, CALLER_SPAN, "the caller's span is the router's parent");

    let mut fresh = std::collections::BTreeSet::new();
    for (path, _) in &hostile {
        let (router, _) = pair(&spans, path);
        assert!(router.parent.is_empty(), "{path}: a refused traceparent is no parent");
        assert_ne!(router.trace_id, CALLER_TRACE, "{path}: a fresh trace");
        assert_ne!(router.trace_id, "0".repeat(32), "{path}");
        fresh.insert(router.trace_id.clone());
    }
    assert_eq!(fresh.len(), hostile.len(), "each hostile request its own trace");

    let (router, serve) = pair(&spans, "/v2/models/elsewhere");
    assert_eq!(router.attr("http.response.status_code"), "404");
    assert_eq!(serve.attr("http.response.status_code"), "404");
    let missing = span_of(&spans, "tractor-serve", "/no/such/endpoint");
    assert_eq!(missing.name, "GET", "an unknown path names no route");
    assert_eq!(missing.attr("http.response.status_code"), "404");
    assert_eq!(missing.attr("http.route"), "");
}

#[test]
fn grpc_requests_get_spans_through_the_router() {
    use tractor::contract::grpc::ModelReadyRequest;
    use tractor::contract::grpc::grpc_inference_service_client::GrpcInferenceServiceClient;
    let stack = Stack::start(false);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let caller = format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01");
    runtime.block_on(async {
        let address = format!("http://127.0.0.1:{}", stack.route_grpc);
        let channel = tonic::transport::Channel::from_shared(address).unwrap();
        let mut client = GrpcInferenceServiceClient::new(channel.connect().await.unwrap());
        let mut ready =
            tonic::Request::new(ModelReadyRequest { name: MODEL.into(), version: String::new() });
        ready.metadata_mut().insert("traceparent", caller.parse().unwrap());
        assert!(client.model_ready(ready).await.unwrap().into_inner().ready);
        let unknown = ModelReadyRequest { name: "elsewhere".into(), version: String::new() };
        let refused = client.model_ready(unknown).await;
        assert_eq!(refused.map(|_| ()).unwrap_err().code(), tonic::Code::NotFound);
    });
    // Closes the client's HTTP/2 connection, which its tasks on this
    // runtime would otherwise hold open through the router's drain.
    drop(runtime);
    let spans = stack.stop();
    let path = "/inference.GRPCInferenceService/ModelReady";
    let routed: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.service == "tractor-router" && s.attr("url.path") == path)
        .collect();
    assert_eq!(routed.len(), 2, "{spans:#?}");
    for router in &routed {
        assert_eq!(router.name, "inference.GRPCInferenceService/ModelReady");
        assert_eq!(router.attr("rpc.system"), "grpc");
        let serve: Vec<&Exported> = spans
            .iter()
            .filter(|s| s.service == "tractor-serve" && s.parent == router.span_id)
            .collect();
        assert_eq!(serve.len(), 1, "serve's span under the router's: {spans:#?}");
        assert_eq!(serve[0].trace_id, router.trace_id);
        assert_eq!(serve[0].attr("rpc.system"), "grpc");
    }
    let with_caller =
        routed.iter().find(|s| s.trace_id == CALLER_TRACE).expect("the caller's trace");
    assert_eq!(with_caller.parent, CALLER_SPAN);
    let refused = routed.iter().find(|s| s.trace_id != CALLER_TRACE).unwrap();
    assert_eq!(
        refused.attr("rpc.grpc.status_code"),
        "5",
        "NOT_FOUND, from the trailers-only answer"
    );
}

#[test]
fn the_shadow_copy_is_a_child_span_of_the_request() {
    let stack = Stack::start(true);
    let body = serde_json::json!({ "inputs": [{ "name": "input", "shape": [1, 64],
        "datatype": "FP32", "data": vec![0.5f32; 64] }] });
    let answer = client().post(stack.url("/v2/models/digits/infer")).json(&body).send().unwrap();
    assert_eq!(answer.status(), 200);
    // The copy goes out in the background, after the caller's answer.
    std::thread::sleep(Duration::from_secs(1));
    let spans = stack.stop();
    let path = "/v2/models/digits/infer";
    let router = span_of(&spans, "tractor-router", path);
    let shadow = spans.iter().find(|s| s.name == "shadow").expect("a shadow span");
    assert_eq!(shadow.parent, router.span_id, "the shadow's span is the request's child");
    assert_eq!(shadow.trace_id, router.trace_id);
    assert_eq!(shadow.kind, KIND_CLIENT);
    assert_eq!(shadow.attr("tractor.version"), "2");
    let served: Vec<&Exported> = spans
        .iter()
        .filter(|s| s.service == "tractor-serve" && s.attr("url.path") == path)
        .collect();
    assert_eq!(served.len(), 2, "the request and its copy: {spans:#?}");
    let mut parents: Vec<&str> = served.iter().map(|s| s.parent.as_str()).collect();
    parents.sort_unstable();
    let mut expected = vec![router.span_id.as_str(), shadow.span_id.as_str()];
    expected.sort_unstable();
    assert_eq!(parents, expected, "one under the router's span, one under the shadow's");
}
