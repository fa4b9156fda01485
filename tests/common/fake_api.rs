//! An in-memory Kubernetes API behind `kube::Client`, for driving the
//! controller's real `reconcile` through whole scenarios: it keeps the
//! objects the reconciler applies and answers its lists, gets, creates,
//! deletes and patches as the API server would, for what the reconciler
//! uses. `tests/controller_mock.rs` asserts the exact calls of one
//! reconcile; this one lets many reconciles run, and the test plays the
//! kubelet ([`FakeApi::pods_become_ready`]).
//!
//! Not emulated: field ownership (an apply replaces the object, keeping its
//! status), resourceVersion and conflicts, watches, label selectors other
//! than `key=value[,key=value]`, garbage collection.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

pub const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
pub const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/default/events";

#[derive(Clone, Default)]
pub struct FakeApi {
    /// Objects by path (`/apis/apps/v1/namespaces/default/deployments/x`).
    objects: Arc<Mutex<BTreeMap<String, Value>>>,
}

/// What a request names: a collection, one object, or an object's subresource.
enum Target<'a> {
    Collection(&'a str),
    Object(&'a str),
    Subresource(&'a str, &'a str),
}

fn target(path: &str) -> Option<Target<'_>> {
    // `/api/v1/namespaces/ns/kind[/name[/sub]]` and
    // `/apis/group/version/namespaces/ns/kind[/name[/sub]]`.
    let kind_at = if path.starts_with("/api/") { 6 } else { 7 };
    let parts = path.split('/').count();
    let end_of = |n: usize| path.match_indices('/').nth(n).map_or(path.len(), |(i, _)| i);
    match parts.checked_sub(kind_at)? {
        0 => Some(Target::Collection(path)),
        1 => Some(Target::Object(path)),
        2 => Some(Target::Subresource(&path[..end_of(kind_at)], &path[end_of(kind_at) + 1..])),
        _ => None,
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> (StatusCode, Value) {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code.is_success() { "Success" } else { "Failure" },
        "reason": reason, "message": message, "code": code.as_u16() });
    (code, body)
}

/// The `key=value` terms of a `labelSelector` query parameter.
fn selector(query: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "labelSelector")
        .flat_map(|(_, v)| {
            v.split(',')
                .filter_map(|term| term.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

fn matches(object: &Value, terms: &[(String, String)]) -> bool {
    terms.iter().all(|(k, v)| object["metadata"]["labels"][k] == v.as_str())
}

impl FakeApi {
    /// A client whose every request this API answers.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |request: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.answer(request).await) }
        });
        kube::Client::new(service, "default")
    }

    pub fn put(&self, path: &str, object: Value) {
        self.objects.lock().unwrap().insert(path.to_string(), object);
    }

    pub fn get(&self, path: &str) -> Option<Value> {
        self.objects.lock().unwrap().get(path).cloned()
    }

    /// The objects of a collection whose labels match every `key=value`.
    pub fn list(&self, collection: &str, labels: &[(&str, &str)]) -> Vec<Value> {
        let terms: Vec<(String, String)> =
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        self.items(collection, &terms)
    }

    fn items(&self, collection: &str, terms: &[(String, String)]) -> Vec<Value> {
        let prefix = format!("{collection}/");
        self.objects
            .lock()
            .unwrap()
            .iter()
            .filter(|(path, object)| {
                path.strip_prefix(&prefix).is_some_and(|name| !name.contains('/'))
                    && matches(object, terms)
            })
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// The kubelet's part: every serving Deployment has as many ready pods
    /// as it asks for (none when scaled to zero).
    pub fn pods_become_ready(&self) {
        let mut objects = self.objects.lock().unwrap();
        let prefix = format!("{DEPLOYMENTS}/");
        for (_, deployment) in objects.iter_mut().filter(|(path, _)| path.starts_with(&prefix)) {
            let wanted = deployment["spec"]["replicas"].as_i64().unwrap_or(0);
            deployment["status"] = json!({ "replicas": wanted, "readyReplicas": wanted });
        }
    }

    async fn answer(&self, request: Request<Body>) -> Response<Body> {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let content_type = request
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = http_body_util::BodyExt::collect(request.into_body())
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let (code, reply) = self.handle(&method, &path, &query, &content_type, body);
        Response::builder()
            .status(code)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap_or_default()))
            .expect("a valid response")
    }

    fn handle(
        &self,
        method: &Method,
        path: &str,
        query: &str,
        content_type: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let not_found = || status(StatusCode::NOT_FOUND, "NotFound", format!("{path} not found"));
        match (method.as_str(), target(path)) {
            ("GET", Some(Target::Collection(c))) => {
                let items = self.items(c, &selector(query));
                (
                    StatusCode::OK,
                    json!({ "apiVersion": "v1", "kind": "List",
                    "metadata": { "resourceVersion": "1" }, "items": items }),
                )
            }
            ("GET", Some(Target::Object(p))) => {
                self.get(p).map_or_else(not_found, |o| (StatusCode::OK, o))
            }
            ("POST", Some(Target::Collection(c))) if c == EVENTS => (StatusCode::CREATED, body),
            ("POST", Some(Target::Collection(c))) => {
                let name = body["metadata"]["name"].as_str().unwrap_or_default();
                let at = format!("{c}/{name}");
                if self.get(&at).is_some() {
                    return status(StatusCode::CONFLICT, "AlreadyExists", format!("{at} exists"));
                }
                self.put(&at, body.clone());
                (StatusCode::CREATED, body)
            }
            ("PATCH", Some(Target::Object(p))) if content_type.contains("apply-patch") => {
                // Server-side apply by the one field manager there is: the
                // object becomes what was applied; what the kubelet wrote stays.
                let mut object = body;
                if let Some(old) = self.get(p)
                    && !old["status"].is_null()
                {
                    object["status"] = old["status"].clone();
                }
                self.put(p, object.clone());
                (StatusCode::OK, object)
            }
            ("PATCH", Some(Target::Object(p) | Target::Subresource(p, "status"))) => {
                let Some(mut object) = self.get(p) else { return not_found() };
                json_patch::merge(&mut object, &body);
                self.put(p, object.clone());
                (StatusCode::OK, object)
            }
            ("DELETE", Some(Target::Object(p))) => match self.objects.lock().unwrap().remove(p) {
                Some(_) => status(StatusCode::OK, "", format!("{p} deleted")),
                None => not_found(),
            },
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                format!("the fake API does not answer {method} {path}"),
            ),
        }
    }
}
