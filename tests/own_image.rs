//! The operator's pods run the image of the controller's own pod (issue
//! 14: one source of truth for the image), read through the API at start.

#[path = "common/fake_api.rs"]
#[allow(dead_code)]
mod fake_api;

use fake_api::FakeApi;
use serde_json::{Value, json};
use tractor::controller::{OwnImageError, own_image};

const PODS: &str = "/api/v1/namespaces/tractor-system/pods";

fn pod(containers: Value) -> Value {
    json!({ "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "tractor-abc", "namespace": "tractor-system" },
            "spec": { "containers": containers } })
}

async fn image_of(containers: Value) -> Result<String, OwnImageError> {
    let api = FakeApi::default();
    api.put(&format!("{PODS}/tractor-abc"), pod(containers));
    own_image(&api.client(), "tractor-system", "tractor-abc").await
}

#[tokio::test]
async fn the_controller_container_names_the_image_even_beside_a_sidecar() {
    let image = image_of(json!([
        { "name": "istio-proxy", "image": "docker.io/istio/proxyv2:1.22" },
        { "name": "controller", "image": "registry.example.com/mirror/tractor:9.9.9" }
    ]))
    .await
    .unwrap();
    assert_eq!(image, "registry.example.com/mirror/tractor:9.9.9");
}

#[tokio::test]
async fn a_pod_of_one_container_names_it_whatever_it_is_called() {
    let image = image_of(json!([{ "name": "manager", "image": "ghcr.io/x/tractor@sha256:abc" }]))
        .await
        .unwrap();
    assert_eq!(image, "ghcr.io/x/tractor@sha256:abc");
}

#[tokio::test]
async fn what_cannot_name_one_image_says_what_to_set() {
    let two = image_of(json!([{ "name": "a", "image": "a:1" }, { "name": "b", "image": "b:1" }]))
        .await
        .unwrap_err()
        .to_string();
    assert!(two.contains("2 containers and none named \"controller\""), "{two}");
    assert!(two.contains("--image or TRACTOR_IMAGE"), "{two}");

    let none = image_of(json!([{ "name": "controller" }])).await.unwrap_err().to_string();
    assert!(none.contains("names no image"), "{none}");

    let api = FakeApi::default();
    let missing = own_image(&api.client(), "tractor-system", "gone").await.unwrap_err();
    let text = missing.to_string();
    assert!(text.contains("tractor-system/gone"), "{text}");
    assert!(text.contains("get on pods in its namespace"), "{text}");
}
