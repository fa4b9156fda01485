//! A fast in-memory Kubernetes API server on a loopback port, for the
//! controller benchmark and its test: a real `kube::Client` talks HTTP to it,
//! so the controller's real code (`reconcile`, and `controller::run` with its
//! watches) runs unchanged, while the API answers in microseconds and the
//! figures measure the controller, not the emulator.
//!
//! Emulated, as `tests/kmock/adapter.py` does for kmock (what kube-rs needs):
//! `uid`, `resourceVersion` (one counter), `generation` (bumped when
//! something outside `metadata` and `status` changes); no-op writes are
//! no-ops (no new resourceVersion, no watch event); the status subresource;
//! server-side apply creating what is missing (the object becomes what was
//! applied, its status kept: one field manager); JSON merge patch; create
//! with 409 on a name taken; delete; label selectors `k=v[,k=v]` on lists
//! and watches, answered from an index; watches resuming from a
//! resourceVersion through an event log (410 Gone past its start), ended at
//! `timeoutSeconds`.
//!
//! The cluster's own controllers are played inside the write, so no other
//! process takes part: a Deployment's pods are ready as soon as it asks
//! for them (`replicas`, or 1 when an HPA owns the field), and an
//! optimization Job succeeds at once, its pod terminating with a result.
//!
//! Not emulated: field ownership, admission and schemas, pagination
//! (`limit` ignored: one page), bookmarks, RBAC, garbage collection.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::channel::mpsc;
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Changes kept for watches that resume; an older resourceVersion is Gone.
const LOG_CAPACITY: usize = 200_000;

/// Kinds with a status subresource: main writes never change `.status`.
const WITH_STATUS: &[&str] =
    &["modeldeployments", "deployments", "jobs", "pods", "services", "horizontalpodautoscalers"];

pub const DEPLOYMENTS: &str = "apps/v1/deployments";
pub const JOBS: &str = "batch/v1/jobs";
pub const PODS: &str = "v1/pods";

/// A handler for the paths under `/bench/`, which a benchmark's driver
/// adds (a fleet to create, a check to run).
pub type Control = Arc<dyn Fn(&FakeApi, &Method, &str, &str) -> (StatusCode, Value) + Send + Sync>;

/// One stored object: its JSON, the same serialized once, its labels.
struct Object {
    value: Value,
    bytes: Bytes,
    labels: BTreeMap<String, String>,
}

/// One change, as the event log and the watches carry it.
struct Change {
    rv: u64,
    resource: String,
    namespace: String,
    object: Arc<Object>,
    /// The watch event's line, made once for every watcher.
    frame: Bytes,
}

struct Watcher {
    resource: String,
    namespace: Option<String>,
    terms: Vec<(String, String)>,
    tx: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct Collection {
    /// By (namespace, name).
    objects: BTreeMap<(String, String), Arc<Object>>,
    /// (label, value) -> objects carrying it.
    index: HashMap<(String, String), BTreeSet<(String, String)>>,
}

#[derive(Default)]
struct State {
    collections: HashMap<String, Collection>,
    rv: u64,
    log: VecDeque<Change>,
    watchers: Vec<Watcher>,
    /// Requests by verb and resource (`PATCH apply deployments`).
    requests: BTreeMap<String, u64>,
}

#[derive(Clone, Default)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    control: Option<Control>,
}

/// What a path names.
struct Route {
    /// `group/version/plural`, `v1/plural` for the core group.
    resource: String,
    plural: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn route(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group_version, rest) = match *segments.first()? {
        "api" => (segments.get(1)?.to_string(), segments.get(2..)?),
        "apis" => (format!("{}/{}", segments.get(1)?, segments.get(2)?), segments.get(3..)?),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (plural, None, None),
        [plural, name] => (plural, Some(name.to_string()), None),
        [plural, name, sub] => (plural, Some(name.to_string()), Some(sub.to_string())),
        _ => return None,
    };
    let resource = format!("{group_version}/{plural}");
    Some(Route { resource, plural: plural.to_string(), namespace, name, sub })
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code.is_success() { "Success" } else { "Failure" },
        "reason": reason, "message": message, "code": code.as_u16() });
    (code, body)
}

/// The `k=v` (or `k==v`) terms of a label selector; other forms are refused.
fn selector(expr: &str) -> Result<Vec<(String, String)>, String> {
    expr.split(',')
        .filter(|t| !t.trim().is_empty())
        .map(|term| {
            let (k, v) =
                term.split_once("==").or_else(|| term.split_once('=')).ok_or_else(|| {
                    format!("the fake API answers `key=value` selectors only, not {term:?}")
                })?;
            if k.ends_with('!') {
                return Err(format!("the fake API does not answer {term:?}"));
            }
            Ok((k.trim().to_string(), v.trim().to_string()))
        })
        .collect()
}

fn matches(labels: &BTreeMap<String, String>, terms: &[(String, String)]) -> bool {
    terms.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Everything but `metadata` and `status`: what `generation` counts.
fn spec_part(object: &Value) -> Vec<(&String, &Value)> {
    object
        .as_object()
        .map(|o| o.iter().filter(|(k, _)| *k != "metadata" && *k != "status").collect())
        .unwrap_or_default()
}

fn labels_of(value: &Value) -> BTreeMap<String, String> {
    value["metadata"]["labels"]
        .as_object()
        .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn reply(code: StatusCode, body: Body) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a valid response")
}

impl State {
    fn collection(&mut self, resource: &str) -> &mut Collection {
        self.collections.entry(resource.to_string()).or_default()
    }

    fn get(&self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Object>> {
        let key = (namespace.to_string(), name.to_string());
        self.collections.get(resource)?.objects.get(&key).cloned()
    }

    fn select(
        &self,
        resource: &str,
        namespace: Option<&str>,
        terms: &[(String, String)],
    ) -> Vec<Arc<Object>> {
        let Some(collection) = self.collections.get(resource) else { return vec![] };
        let in_namespace = |ns: &str| namespace.is_none_or(|n| n == ns);
        match terms.first() {
            Some(first) => collection
                .index
                .get(first)
                .into_iter()
                .flatten()
                .filter(|key| in_namespace(&key.0))
                .filter_map(|key| collection.objects.get(key))
                .filter(|o| matches(&o.labels, terms))
                .cloned()
                .collect(),
            None => collection
                .objects
                .iter()
                .filter(|(key, _)| in_namespace(&key.0))
                .map(|(_, o)| o.clone())
                .collect(),
        }
    }

    /// Stores `value` at (namespace, name) over `old`; a write that changes
    /// nothing is a no-op. Returns the object as stored.
    fn store(
        &mut self,
        resource: &str,
        namespace: &str,
        name: &str,
        mut value: Value,
        old: Option<&Arc<Object>>,
    ) -> Arc<Object> {
        if !value.is_object() {
            value = json!({});
        }
        let generation = match old {
            Some(old) => {
                let before = old.value["metadata"]["generation"].as_i64().unwrap_or(1);
                before + i64::from(spec_part(&old.value) != spec_part(&value))
            }
            None => 1,
        };
        let meta = &mut value["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(name);
        meta["namespace"] = json!(namespace);
        meta["generation"] = json!(generation);
        match old {
            Some(old) => {
                let before = &old.value["metadata"];
                for key in ["uid", "creationTimestamp", "resourceVersion"] {
                    meta[key] = before[key].clone();
                }
                if value == old.value {
                    return old.clone();
                }
            }
            None => {
                meta["uid"] = json!(format!("uid-{}", self.rv + 1));
                meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
            }
        }
        self.rv += 1;
        value["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let object = Arc::new(Object {
            bytes: Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
            labels: labels_of(&value),
            value,
        });
        let key = (namespace.to_string(), name.to_string());
        let collection = self.collection(resource);
        if let Some(old) = old {
            for label in &old.labels {
                if let Some(set) = collection.index.get_mut(&(label.0.clone(), label.1.clone())) {
                    set.remove(&key);
                }
            }
        }
        for label in &object.labels {
            collection
                .index
                .entry((label.0.clone(), label.1.clone()))
                .or_default()
                .insert(key.clone());
        }
        collection.objects.insert(key, object.clone());
        let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
        self.publish(resource, namespace, kind, object.clone());
        object
    }

    fn remove(&mut self, resource: &str, namespace: &str, name: &str) -> Option<Arc<Object>> {
        let key = (namespace.to_string(), name.to_string());
        let collection = self.collection(resource);
        let object = collection.objects.remove(&key)?;
        for label in &object.labels {
            if let Some(set) = collection.index.get_mut(&(label.0.clone(), label.1.clone())) {
                set.remove(&key);
            }
        }
        // The deletion has a resourceVersion of its own, which a watch
        // resumes from.
        self.rv += 1;
        let mut value = object.value.clone();
        value["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let bytes = Bytes::from(serde_json::to_vec(&value).unwrap_or_default());
        let gone = Arc::new(Object { value, bytes, labels: object.labels.clone() });
        self.publish(resource, namespace, "DELETED", gone.clone());
        Some(gone)
    }

    fn publish(&mut self, resource: &str, namespace: &str, kind: &str, object: Arc<Object>) {
        let mut frame = Vec::with_capacity(object.bytes.len() + 32);
        frame.extend_from_slice(format!("{{\"type\":\"{kind}\",\"object\":").as_bytes());
        frame.extend_from_slice(&object.bytes);
        frame.extend_from_slice(b"}\n");
        let change = Change {
            rv: self.rv,
            resource: resource.to_string(),
            namespace: namespace.to_string(),
            object,
            frame: Bytes::from(frame),
        };
        self.watchers.retain(|w| {
            if !w.watches(&change) {
                return !w.tx.is_closed();
            }
            w.tx.unbounded_send(change.frame.clone()).is_ok()
        });
        if self.log.len() >= LOG_CAPACITY {
            self.log.pop_front();
        }
        self.log.push_back(change);
    }

    /// The kubelet and kube-controller-manager, played at once after a write.
    fn after_write(&mut self, resource: &str, namespace: &str, name: &str, created: bool) {
        let Some(object) = self.get(resource, namespace, name) else { return };
        if resource == DEPLOYMENTS {
            // Replicas left out: an HPA owns them, and the API server set 1.
            let ready = object.value["spec"]["replicas"].as_i64().unwrap_or(1);
            let status = json!({ "observedGeneration": object.value["metadata"]["generation"],
                "replicas": ready, "readyReplicas": ready, "availableReplicas": ready,
                "updatedReplicas": ready });
            if object.value["status"] != status {
                let mut value = object.value.clone();
                value["status"] = status;
                self.store(resource, namespace, name, value, Some(&object));
            }
        } else if resource == JOBS && created {
            self.job_succeeds(namespace, name, &object);
        }
    }

    /// An optimization Job's pod terminates with a written artifact as its
    /// result (what `tractor optimize --termination-message` writes), and
    /// the Job reports success.
    fn job_succeeds(&mut self, namespace: &str, job: &str, object: &Arc<Object>) {
        let result = tractor::contract::job::JobResult::written(
            format!("s3://artifacts/bench/{namespace}/{job}.onnx"),
            Some(tractor::store::sha256_hex(job.as_bytes())),
            Some(1234),
            tractor::crd::VersionMetrics { accuracy: Some(0.97), ..Default::default() },
        );
        let pod = format!("{job}-bench");
        let value = json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": pod, "labels": { "job-name": job } },
            "spec": { "restartPolicy": "Never", "containers": [{ "name": "optimize", "image": "tractor" }] },
            "status": { "phase": "Succeeded", "containerStatuses": [{
                "name": "optimize", "image": "tractor", "imageID": "", "ready": false, "restartCount": 0,
                "state": { "terminated": { "exitCode": 0, "reason": "Completed",
                    "message": result.to_message() } } }] } });
        let old = self.get(PODS, namespace, &pod);
        self.store(PODS, namespace, &pod, value, old.as_ref());
        let mut done = object.value.clone();
        done["status"] =
            json!({ "succeeded": 1, "conditions": [{ "type": "Complete", "status": "True" }] });
        self.store(JOBS, namespace, job, done, Some(object));
    }
}

impl Watcher {
    fn watches(&self, change: &Change) -> bool {
        change.resource == self.resource
            && self.namespace.as_ref().is_none_or(|ns| *ns == change.namespace)
            && matches(&change.object.labels, &self.terms)
    }
}

impl FakeApi {
    /// An empty API; `control` answers the paths under `/bench/`.
    pub fn new(control: Option<Control>) -> FakeApi {
        FakeApi { state: Arc::default(), control }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Serves HTTP/1 on `listener` until the task is dropped.
    pub async fn serve(self, listener: tokio::net::TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let api = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let api = api.clone();
                    async move { Ok::<_, Infallible>(api.answer(request).await) }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    }

    /// Creates (or replaces) an object as a person's `kubectl create` would.
    pub fn put(&self, resource: &str, namespace: &str, value: Value) {
        let mut state = self.lock();
        let name = value["metadata"]["name"].as_str().unwrap_or_default().to_string();
        let old = state.get(resource, namespace, &name);
        state.store(resource, namespace, &name, value, old.as_ref());
    }

    /// `f` of an object as stored, without copying it.
    pub fn read<T>(
        &self,
        resource: &str,
        namespace: &str,
        name: &str,
        f: impl FnOnce(Option<&Value>) -> T,
    ) -> T {
        let state = self.lock();
        f(state.get(resource, namespace, name).as_ref().map(|o| &o.value))
    }

    /// A merge patch of the main resource, as `kubectl patch --type merge`.
    pub fn patch(&self, resource: &str, namespace: &str, name: &str, patch: &Value) -> bool {
        let mut state = self.lock();
        let Some(old) = state.get(resource, namespace, name) else { return false };
        let mut value = old.value.clone();
        json_patch::merge(&mut value, patch);
        value["status"] = old.value["status"].clone();
        state.store(resource, namespace, name, value, Some(&old));
        true
    }

    /// Requests answered so far, by verb and resource.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.lock().requests.clone()
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = request.into_body().collect().await.map(|c| c.to_bytes()).unwrap_or_default();
        if let Some(rest) = path.strip_prefix("/bench/") {
            let (code, value) = match &self.control {
                Some(control) => control(self, &method, rest, &query),
                None => status(StatusCode::NOT_FOUND, "NotFound", "no control".into()),
            };
            return reply(code, full(serde_json::to_vec(&value).unwrap_or_default()));
        }
        let Some(route) = route(&path) else {
            let (code, value) = status(StatusCode::NOT_FOUND, "NotFound", format!("{path}?"));
            return reply(code, full(serde_json::to_vec(&value).unwrap_or_default()));
        };
        let params: HashMap<String, String> =
            url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        let terms = match selector(params.get("labelSelector").map_or("", String::as_str)) {
            Ok(terms) => terms,
            Err(message) => {
                let (code, value) = status(StatusCode::BAD_REQUEST, "BadRequest", message);
                return reply(code, full(serde_json::to_vec(&value).unwrap_or_default()));
            }
        };
        let watch = matches!(params.get("watch").map(String::as_str), Some("true" | "1"));
        if method == Method::GET && route.name.is_none() {
            return if watch {
                self.watch(&route, terms, &params)
            } else {
                self.list(&route, &terms)
            };
        }
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        match self.write(&method, &route, &content_type, body) {
            Ok(object) => reply(StatusCode::OK, full(object.bytes.clone())),
            Err((code, value)) => reply(code, full(serde_json::to_vec(&value).unwrap_or_default())),
        }
    }

    fn count_request(state: &mut State, what: &str, route: &Route) {
        *state.requests.entry(format!("{what} {}", route.plural)).or_default() += 1;
    }

    fn list(&self, route: &Route, terms: &[(String, String)]) -> Response<Body> {
        let mut state = self.lock();
        Self::count_request(&mut state, "LIST", route);
        let objects = state.select(&route.resource, route.namespace.as_deref(), terms);
        let rv = state.rv;
        drop(state);
        let mut body =
            Vec::with_capacity(objects.iter().map(|o| o.bytes.len() + 1).sum::<usize>() + 96);
        body.extend_from_slice(
            format!("{{\"apiVersion\":\"v1\",\"kind\":\"List\",\"metadata\":{{\"resourceVersion\":\"{rv}\"}},\"items\":[")
                .as_bytes(),
        );
        for (i, object) in objects.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(&object.bytes);
        }
        body.extend_from_slice(b"]}");
        reply(StatusCode::OK, full(body))
    }

    fn watch(
        &self,
        route: &Route,
        terms: Vec<(String, String)>,
        params: &HashMap<String, String>,
    ) -> Response<Body> {
        let since: Option<u64> = params.get("resourceVersion").and_then(|rv| rv.parse().ok());
        let timeout = params.get("timeoutSeconds").and_then(|s| s.parse().ok()).unwrap_or(290);
        let (tx, rx) = mpsc::unbounded();
        let watcher = Watcher {
            resource: route.resource.clone(),
            namespace: route.namespace.clone(),
            terms,
            tx,
        };
        {
            let mut state = self.lock();
            Self::count_request(&mut state, "WATCH", route);
            if let Some(since) = since.filter(|&rv| rv > 0 && rv < state.rv) {
                let oldest = state.log.front().map_or(state.rv + 1, |c| c.rv);
                if since + 1 < oldest {
                    let gone = json!({ "type": "ERROR", "object": { "kind": "Status",
                        "apiVersion": "v1", "status": "Failure", "reason": "Expired",
                        "message": "too old resource version", "code": 410 } });
                    let line = format!("{gone}\n");
                    return reply(StatusCode::OK, full(line));
                }
                for change in state.log.iter().filter(|c| c.rv > since && watcher.watches(c)) {
                    let _ = watcher.tx.unbounded_send(change.frame.clone());
                }
            }
            state.watchers.push(watcher);
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        let frames = rx.take_until(deadline).map(|b| Ok::<_, Infallible>(Frame::data(b)));
        reply(StatusCode::OK, StreamBody::new(frames).boxed_unsync())
    }

    fn write(
        &self,
        method: &Method,
        route: &Route,
        content_type: &str,
        body: Value,
    ) -> Result<Arc<Object>, (StatusCode, Value)> {
        let namespace = route.namespace.clone().unwrap_or_default();
        let has_status = WITH_STATUS.contains(&route.plural.as_str());
        let mut state = self.lock();
        let not_found = |what: &str| {
            status(StatusCode::NOT_FOUND, "NotFound", format!("{} {what} not found", route.plural))
        };
        let name = match (&route.name, method) {
            (Some(name), _) => name.clone(),
            (None, &Method::POST) => body["metadata"]["name"].as_str().unwrap_or_default().into(),
            (None, _) => return Err(status(StatusCode::METHOD_NOT_ALLOWED, "", "".into())),
        };
        let old = state.get(&route.resource, &namespace, &name);
        let sub = route.sub.as_deref();
        let (what, mut new) = match (method.as_str(), sub) {
            ("GET", None) => {
                Self::count_request(&mut state, "GET", route);
                return old.ok_or_else(|| not_found(&name));
            }
            ("DELETE", None) => {
                Self::count_request(&mut state, "DELETE", route);
                return state
                    .remove(&route.resource, &namespace, &name)
                    .ok_or_else(|| not_found(&name));
            }
            ("POST", None) => {
                if old.is_some() {
                    Self::count_request(&mut state, "POST", route);
                    let message = format!("{} {name} already exists", route.plural);
                    return Err(status(StatusCode::CONFLICT, "AlreadyExists", message));
                }
                ("POST", body)
            }
            ("PATCH", None) if content_type.contains("apply-patch") => ("PATCH apply", body),
            ("PATCH", None | Some("status")) if content_type.contains("merge-patch") => {
                let Some(old) = &old else { return Err(not_found(&name)) };
                let mut value = old.value.clone();
                json_patch::merge(&mut value, &body);
                (if sub.is_some() { "PATCH status" } else { "PATCH merge" }, value)
            }
            _ => {
                let message = format!("the fake API does not answer {method} {content_type}");
                return Err(status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", message));
            }
        };
        Self::count_request(&mut state, what, route);
        if has_status {
            let kept = match (sub, &old) {
                (Some(_), Some(old)) => {
                    // A status write changes only the status.
                    let status = new["status"].take();
                    new = old.value.clone();
                    status
                }
                (_, Some(old)) => old.value["status"].clone(),
                (_, None) => Value::Null,
            };
            if let Some(o) = new.as_object_mut() {
                if kept.is_null() {
                    o.remove("status");
                } else {
                    o.insert("status".into(), kept);
                }
            }
        }
        let created = old.is_none();
        state.store(&route.resource, &namespace, &name, new, old.as_ref());
        state.after_write(&route.resource, &namespace, &name, created);
        state.get(&route.resource, &namespace, &name).ok_or_else(|| not_found(&name))
    }
}
