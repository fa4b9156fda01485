//! What the registry stores about a version (its manifest) and about an
//! alias, and what is derived from them: the `ModelVersion` object for
//! `kubectl apply`, and the side-by-side comparison of two versions.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::crd::{
    ArtifactRef, ModelVersion, ModelVersionSpec, Recipe, SourceFormat, VersionMetrics,
};
use crate::engine::TensorSpec;

/// The manifests' schema: a reader refuses another.
pub const MANIFEST_API: &str = "tractor.dev/registry/v1";

/// One version, written once (`PutMode::Create`) and never changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionManifest {
    pub api_version: String,
    pub name: String,
    pub version: String,
    /// sha256 of the model itself (the plaintext when stored encrypted).
    pub digest: String,
    pub format: SourceFormat,
    /// Bytes of the model itself.
    pub size_bytes: u64,
    /// The object in `blobs/sha256/`, what `pull` returns and `serve --sha256` checks.
    pub stored: Stored,
    /// The model's inputs and outputs, as the engine read them at push.
    pub inputs: Vec<TensorSignature>,
    pub outputs: Vec<TensorSignature>,
    /// Elements of all initializers (ONNX only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<u64>,
    /// Nodes of the graph (ONNX only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operators: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Parent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipe: Option<Recipe>,
    /// Figures given at push (`--metrics`): accuracy, mse, latencyMs, ….
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// RFC 3339, UTC.
    pub created: String,
    pub pushed_by: String,
}

/// The stored object of a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Stored {
    /// sha256 of the stored bytes: the key under `blobs/sha256/`.
    pub sha256: String,
    pub size_bytes: u64,
    /// Present when the stored bytes are an age file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Encryption {
    /// Always `age` (age-encryption.org/v1).
    pub scheme: String,
    /// The public keys it was encrypted to: who can decrypt it.
    pub recipients: Vec<String>,
}

/// Where a version came from: the digest always, the registry version
/// when the parent was pushed here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Parent {
    pub digest: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Name, V2 datatype and shape (`-1` for variable dimensions) of one tensor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSignature {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

impl From<&TensorSpec> for TensorSignature {
    fn from(spec: &TensorSpec) -> TensorSignature {
        TensorSignature {
            name: spec.name.clone(),
            datatype: spec.datatype.v2_name().to_string(),
            shape: spec.v2_shape(),
        }
    }
}

impl std::fmt::Display for TensorSignature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(i64::to_string).collect();
        write!(f, "{} {} [{}]", self.name, self.datatype, dims.join(","))
    }
}

/// An alias: a name that moves from version to version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    pub alias: String,
    pub name: String,
    pub version: String,
    /// The version's digest when tagged, checked again when resolved.
    pub digest: String,
    pub updated: String,
    pub updated_by: String,
}

impl VersionManifest {
    /// `NAME@VERSION`.
    pub fn reference(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The metrics a `ModelVersion` has fields for; other figures stay in
    /// the registry's manifest only.
    pub fn version_metrics(&self) -> VersionMetrics {
        let get = |keys: &[&str]| keys.iter().find_map(|k| self.metrics.get(*k).copied());
        let metrics = VersionMetrics {
            accuracy: get(&["accuracy"]),
            mse: get(&["mse"]),
            cross_entropy: get(&["crossEntropy", "cross_entropy"]),
            latency_ms: get(&["latencyMs", "latency_ms"]),
            parameters: self.parameters,
            sparsity: get(&["sparsity"]),
            summary: None,
        };
        let summary = [("accuracy", metrics.accuracy), ("mse", metrics.mse)]
            .into_iter()
            .chain([("crossEntropy", metrics.cross_entropy)])
            .find_map(|(name, value)| value.map(|v| format!("{name}={v:.4}")));
        VersionMetrics { summary, ..metrics }
    }

    /// The `ModelVersion` object for this version, its artifact at
    /// `artifact_uri` (the stored object, which `serve` fetches and checks
    /// against `spec.artifact.sha256`). With `deployment`, it carries the
    /// labels the controller lists a `ModelDeployment`'s registry by.
    pub fn model_version(
        &self,
        artifact_uri: &str,
        namespace: Option<&str>,
        deployment: Option<&str>,
    ) -> ModelVersion {
        let spec = ModelVersionSpec {
            model: self.name.clone(),
            version: self.version.clone(),
            artifact: ArtifactRef {
                uri: artifact_uri.to_string(),
                sha256: self.stored.sha256.clone(),
                format: self.format,
                size_bytes: Some(self.stored.size_bytes),
            },
            parent: self.parent.as_ref().map(|p| format!("sha256:{}", p.digest)),
            recipe: self.recipe.clone(),
            metrics: self.version_metrics(),
        };
        // A DNS subdomain: the name (a DNS label) and the version (letters,
        // digits, '-' and '.') joined by "-v" stay under 253 characters.
        let mut mv = ModelVersion::new(&format!("{}-v{}", self.name, self.version), spec);
        mv.metadata.namespace = namespace.map(str::to_string);
        // The label names are the controller's (controller/objects).
        let mut labels = BTreeMap::from([
            ("tractor.dev/model".to_string(), self.name.clone()),
            ("tractor.dev/version".to_string(), self.version.clone()),
        ]);
        if let Some(deployment) = deployment {
            labels.insert("tractor.dev/deployment".into(), deployment.to_string());
            labels.insert("app.kubernetes.io/component".into(), "registry".into());
        }
        mv.metadata.labels = Some(labels);
        mv.metadata.annotations = Some(BTreeMap::from([
            ("tractor.dev/model-sha256".to_string(), self.digest.clone()),
            ("tractor.dev/pushed-by".to_string(), self.pushed_by.clone()),
            ("tractor.dev/created".to_string(), self.created.clone()),
        ]));
        mv
    }
}

/// One line of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffRow {
    pub field: String,
    pub a: String,
    pub b: String,
    /// `b - a` for figures, when both have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
}

impl DiffRow {
    pub fn same(&self) -> bool {
        self.a == self.b
    }
}

fn or_dash<T: ToString>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn signature(tensors: &[TensorSignature]) -> String {
    let all: Vec<String> = tensors.iter().map(ToString::to_string).collect();
    all.join("; ")
}

/// Two versions side by side: identity, size and structure, signatures,
/// lineage, then every metric either has.
pub fn diff(a: &VersionManifest, b: &VersionManifest) -> Vec<DiffRow> {
    let text =
        |field: &str, a: String, b: String| DiffRow { field: field.into(), a, b, change: None };
    let figure = |field: &str, a: Option<f64>, b: Option<f64>| DiffRow {
        field: field.into(),
        a: or_dash(a),
        b: or_dash(b),
        change: a.zip(b).map(|(a, b)| b - a),
    };
    let lineage = |m: &VersionManifest| match &m.parent {
        Some(Parent { name: Some(n), version: Some(v), digest }) => {
            format!("{n}@{v} (sha256:{})", &digest[..12.min(digest.len())])
        }
        Some(p) => format!("sha256:{}", p.digest),
        None => "-".into(),
    };
    let encrypted = |m: &VersionManifest| match &m.stored.encryption {
        Some(e) => format!("age, {} recipients", e.recipients.len()),
        None => "no".into(),
    };
    let as_f64 = |n: Option<u64>| n.map(|n| n as f64);
    let mut rows = vec![
        text("version", a.reference(), b.reference()),
        text("digest", format!("sha256:{}", a.digest), format!("sha256:{}", b.digest)),
        text("format", super::format_name(a.format).into(), super::format_name(b.format).into()),
        figure("size bytes", Some(a.size_bytes as f64), Some(b.size_bytes as f64)),
        figure("parameters", as_f64(a.parameters), as_f64(b.parameters)),
        figure("operators", as_f64(a.operators), as_f64(b.operators)),
        text("inputs", signature(&a.inputs), signature(&b.inputs)),
        text("outputs", signature(&a.outputs), signature(&b.outputs)),
        text("parent", lineage(a), lineage(b)),
        text("encrypted", encrypted(a), encrypted(b)),
        text("created", a.created.clone(), b.created.clone()),
        text("pushed by", a.pushed_by.clone(), b.pushed_by.clone()),
    ];
    let mut names: Vec<&String> = a.metrics.keys().chain(b.metrics.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        rows.push(figure(name, a.metrics.get(name).copied(), b.metrics.get(name).copied()));
    }
    rows
}
