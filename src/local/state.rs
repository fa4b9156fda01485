//! The state directory of a local `up`: the spec file read, the files
//! written whole, and the requests and status a second terminal reads.

use std::path::{Path, PathBuf};

use kube::Resource;

use super::LocalError;
use crate::crd::recipe::Pass;
use crate::crd::strict;
use crate::crd::{ModelDeployment, ModelDeploymentStatus, ModelVersionSpec, ValidSpec};

/// Reads the file's `ModelDeployment`s, as strictly as `kubectl apply
/// --validate=strict` would: unknown fields are errors naming their path,
/// and every name that becomes a file name is checked as Kubernetes checks
/// it, before anything touches the file system.
///
/// # Errors
/// Unreadable text, a document that is not a `ModelDeployment`, unknown
/// fields, names that are not Kubernetes names, documents naming different
/// deployments.
pub fn read_documents(path: &Path) -> Result<Vec<ModelDeployment>, LocalError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LocalError::ReadSpec { path: shown.clone(), reason: e.to_string() })?;
    let invalid = |reason: String| LocalError::InvalidSpec { path: shown.clone(), reason };
    // Twice through the YAML crate's own document stream (a `---` inside a
    // block scalar or a comment is not a separator, and empty documents are
    // skipped): untyped, for the keys the schema does not declare; then
    // typed, so that scalars take the type each field asks for (an
    // unquoted `version: 2` is the string "2", as the examples write it).
    let raw: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).map_err(|e| invalid(e.to_string()))?;
    let raw: Vec<serde_json::Value> = raw.into_iter().filter(|d| !d.is_null()).collect();
    let numbered = |i: usize, what: String| {
        if raw.len() > 1 { invalid(format!("document {}: {what}", i + 1)) } else { invalid(what) }
    };
    for (i, document) in raw.iter().enumerate() {
        let api_version = document.get("apiVersion").and_then(serde_json::Value::as_str);
        let kind = document.get("kind").and_then(serde_json::Value::as_str);
        let expected = (ModelDeployment::api_version(&()), ModelDeployment::kind(&()));
        if (api_version, kind) != (Some(expected.0.as_ref()), Some(expected.1.as_ref())) {
            return Err(numbered(
                i,
                format!(
                    "apiVersion {api_version:?} and kind {kind:?}: expected {} and {}",
                    expected.0, expected.1
                ),
            ));
        }
        let unknown = strict::unknown_fields(document);
        if !unknown.is_empty() {
            let said: Vec<String> = unknown.iter().map(ToString::to_string).collect();
            return Err(numbered(i, said.join("; ")));
        }
    }
    let docs: Vec<ModelDeployment> =
        serde_saphyr::from_multiple(&text).map_err(|e| invalid(e.to_string()))?;
    let Some(first) = docs.first() else {
        return Err(invalid("no ModelDeployment in the file".into()));
    };
    let name = first.metadata.name.clone().unwrap_or_default();
    for (i, doc) in docs.iter().enumerate() {
        let this = doc.metadata.name.as_deref().unwrap_or_default();
        crate::crd::check_object_name("metadata.name", this)
            .and_then(|()| crate::crd::check_version(&doc.spec.model.version))
            .map_err(|e| numbered(i, e.to_string()))?;
        if this != name {
            return Err(numbered(
                i,
                format!(
                    "metadata.name: {this:?} is not {name:?}; the documents of a file are \
                     successive versions of one ModelDeployment"
                ),
            ));
        }
    }
    Ok(docs)
}

/// Relative paths (the source, and the recipe's validation, calibration and
/// merge files) are relative to the file, as a person reads them.
pub(super) fn resolve_source(spec: &mut ValidSpec, base: &Path) {
    let resolve = |location: &mut String| {
        if !location.contains("://") && Path::new(location.as_str()).is_relative() {
            let joined = base.join(&*location);
            *location = std::fs::canonicalize(&joined).unwrap_or(joined).display().to_string();
        }
    };
    resolve(&mut spec.source_uri);
    if let Some(recipe) = spec.optimize.as_mut() {
        if let Some(validation) = recipe.validation.as_mut() {
            resolve(&mut validation.data);
        }
        for pass in &mut recipe.passes {
            match pass {
                Pass::Quantize(q) => q.calibration.iter_mut().for_each(resolve),
                Pass::Merge(m) => m.models.iter_mut().for_each(resolve),
                _ => {}
            }
        }
    }
}

/// A person's request to a running `up` (`tractor rollout promote|abort
/// --state-dir`), the local counterpart of the controller's annotations: a
/// file in the deployment's state directory, removed once acted on.
pub(super) const REQUEST_FILE: &str = "request";
/// Registered versions (`ModelVersionSpec`s as JSON) in the state directory.
pub(super) const REGISTRY_FILE: &str = "registry.json";

pub(super) const PROMOTE: &str = "promote";
pub(super) const ABORT: &str = "abort";

/// What `tractor rollout promote|abort --state-dir DIR NAME` asks of a local
/// `tractor up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Promote,
    Abort,
}

/// The directory where `up` keeps a deployment's state, if it has run there.
pub(super) fn deployment_dir(state_dir: &Path, name: &str) -> Result<PathBuf, LocalError> {
    // A name is a path component here: `../x` must not reach outside.
    crate::crd::check_object_name("name", name).map_err(|e| LocalError::InvalidSpec {
        path: state_dir.display().to_string(),
        reason: e.to_string(),
    })?;
    let dir = state_dir.join(name);
    if dir.join("status.json").exists() {
        Ok(dir)
    } else {
        Err(LocalError::State {
            path: dir.display().to_string(),
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("no `tractor up` has run {name} with this state directory"),
            ),
        })
    }
}

/// Leaves a promote or abort request for the `up` running `name`; it acts
/// on it within a tick, as the controller does on its annotations.
///
/// # Errors
/// No state for `name` under `state_dir`, or a directory that cannot be written.
pub fn request(state_dir: &Path, name: &str, request: Request) -> Result<(), LocalError> {
    let path = deployment_dir(state_dir, name)?.join(REQUEST_FILE);
    let word = match request {
        Request::Promote => PROMOTE,
        Request::Abort => ABORT,
    };
    write_whole(&path, word.as_bytes())
}

/// Writes a file whole, then renames it into place: a reader (the router,
/// `tractor rollout status`, `up` itself) never sees half of it.
pub(super) fn write_whole(path: &Path, bytes: &[u8]) -> Result<(), LocalError> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| LocalError::State { path: path.display().to_string(), source })
}

/// The last status a local `up` wrote for `name`.
///
/// # Errors
/// No state for `name` under `state_dir`, or a status file that cannot be read.
pub fn status(state_dir: &Path, name: &str) -> Result<ModelDeploymentStatus, LocalError> {
    let path = deployment_dir(state_dir, name)?.join("status.json");
    let bytes = std::fs::read(&path)
        .map_err(|source| LocalError::State { path: path.display().to_string(), source })?;
    serde_json::from_slice(&bytes).map_err(|e| LocalError::ReadSpec {
        path: path.display().to_string(),
        reason: e.to_string(),
    })
}

/// The versions a local `up` registered for `name` (optimized artifacts with
/// digest, lineage and metrics), oldest first; none before any optimization.
///
/// # Errors
/// No state for `name` under `state_dir`, or a registry that cannot be read.
pub fn registry(state_dir: &Path, name: &str) -> Result<Vec<ModelVersionSpec>, LocalError> {
    let path = deployment_dir(state_dir, name)?.join(REGISTRY_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| LocalError::ReadSpec {
            path: path.display().to_string(),
            reason: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LocalError::State { path: path.display().to_string(), source }),
    }
}
