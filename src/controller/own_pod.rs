//! The controller's own pod, read once at start-up: its image is the image
//! of every pod the operator creates. One source of truth, so whatever set
//! it (Helm's `image.*`, a kustomize `images:` override, an admission
//! policy that mirrors registries) reaches the serving pods, routers and
//! Jobs too, with no second copy in an environment variable to miss.

use k8s_openapi::api::core::v1::Pod;
use kube::{Api, Client};

/// The container the chart and `deploy/` run the operator in.
pub const CONTROLLER_CONTAINER: &str = "controller";

/// Why the controller's own image could not be read. Failing is an error,
/// not a fallback: pods created from another image than the operator's
/// would be a silent version skew.
#[derive(Debug, thiserror::Error)]
pub enum OwnImageError {
    #[error(
        "reading this controller's pod {namespace}/{pod} for its image: {source} (the operator \
         needs get on pods in its namespace; or set --image / TRACTOR_IMAGE)"
    )]
    Read {
        namespace: String,
        pod: String,
        #[source]
        source: kube::Error,
    },
    #[error(
        "pod {namespace}/{pod} has {count} containers and none named \"{CONTROLLER_CONTAINER}\": \
         set --image or TRACTOR_IMAGE"
    )]
    Ambiguous { namespace: String, pod: String, count: usize },
    #[error("container {container} of pod {namespace}/{pod} names no image")]
    NoImage { namespace: String, pod: String, container: String },
}

/// The image of the controller's container in pod `namespace/pod`: the
/// one named [`CONTROLLER_CONTAINER`], or the pod's only container.
pub async fn own_image(
    client: &Client,
    namespace: &str,
    pod: &str,
) -> Result<String, OwnImageError> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let (namespace, pod) = (namespace.to_string(), pod.to_string());
    let found = match pods.get(&pod).await {
        Ok(found) => found,
        Err(source) => return Err(OwnImageError::Read { namespace, pod, source }),
    };
    let containers = found.spec.map(|s| s.containers).unwrap_or_default();
    let container = match containers.iter().find(|c| c.name == CONTROLLER_CONTAINER) {
        Some(c) => c,
        None if containers.len() == 1 => &containers[0],
        None => return Err(OwnImageError::Ambiguous { namespace, pod, count: containers.len() }),
    };
    match container.image.as_deref() {
        Some(image) if !image.trim().is_empty() => Ok(image.to_string()),
        _ => Err(OwnImageError::NoImage { namespace, pod, container: container.name.clone() }),
    }
}
