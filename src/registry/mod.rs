//! `tractor registry`: model versions in an object store (a local folder,
//! `s3://`, anything [`crate::store`] opens), each stored once by its
//! sha256 and described by an immutable manifest; aliases that move.
//!
//! # Layout
//! ```text
//! <root>/blobs/sha256/<hex>                    the stored bytes (an age file when encrypted)
//! <root>/models/<name>/versions/<version>.json a VersionManifest, written once
//! <root>/models/<name>/aliases/<alias>.json    an Alias, rewritten when it moves
//! ```
//!
//! # Invariants
//! - A version's manifest is created with `PutMode::Create`: of two pushes
//!   of one version, one creates it and the other finds it (a no-op for
//!   the same digest, refused for another).
//! - A blob's key is the sha256 of its bytes; `pull` checks it.
//! - No name is both a version and an alias of one model.
//! - Every object read is bounded before its bytes are.

mod manifest;
mod names;

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions};

pub use manifest::{
    Alias, DiffRow, Encryption, MANIFEST_API, Parent, Stored, TensorSignature, VersionManifest,
    diff,
};
pub use names::{MAX_NAME, MAX_VERSION, Reference, check_name, check_version};

use crate::crd::{Recipe, SourceFormat};
use crate::engine::{EngineOptions, Model, ModelFormat, Threads};
use crate::store::{self, StoreError, encryption};

/// Largest manifest or alias read: a manifest is a few KiB; a model with
/// thousands of inputs would still fit.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Most figures one version may carry in its metrics.
pub const MAX_METRICS: usize = 64;

/// Errors of the registry, named after the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid {what} {value}: {rule}")]
    InvalidName { what: &'static str, value: String, rule: &'static str },
    #[error("invalid reference {0}: expected NAME@VERSION or NAME@ALIAS")]
    InvalidReference(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: object_store::Error,
    },
    #[error("{reference} is not in the registry {location} (no such version or alias)")]
    NotFound { reference: String, location: String },
    #[error(
        "{reference} is already in the registry with sha256:{existing}; versions never change, \
         push this model (sha256:{pushed}) under a new version"
    )]
    VersionExists { reference: String, existing: String, pushed: String },
    #[error("{reference} is an alias; a version cannot take its name")]
    VersionIsAlias { reference: String },
    #[error("{reference} is a version; an alias cannot take its name")]
    AliasIsVersion { reference: String },
    #[error("{path} is larger than {max} bytes: not a registry manifest")]
    ManifestTooLarge { path: String, max: u64 },
    #[error("{path} is not a registry manifest: {reason}")]
    BadManifest { path: String, reason: String },
    #[error("{reference}: stored sha256 mismatch, expected {expected}, got {actual}")]
    DigestMismatch { reference: String, expected: String, actual: String },
    #[error("the engine cannot load the model, so it cannot be registered: {0}")]
    ReadModel(#[source] crate::engine::EngineError),
    #[error("invalid metrics: {0}")]
    InvalidMetrics(String),
    #[error(transparent)]
    Encryption(#[from] encryption::EncryptionError),
    #[error("a background task stopped: {0}")]
    Task(String),
}

impl RegistryError {
    /// A short stable name per variant, for labels and tests (never the text).
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::InvalidName { .. } | RegistryError::InvalidReference(_) => "invalid",
            RegistryError::Store(_) => "store",
            RegistryError::Read { .. } => "read",
            RegistryError::Write { .. } => "write",
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::VersionExists { .. } => "version_exists",
            RegistryError::VersionIsAlias { .. } | RegistryError::AliasIsVersion { .. } => {
                "name_taken"
            }
            RegistryError::ManifestTooLarge { .. } | RegistryError::BadManifest { .. } => {
                "bad_manifest"
            }
            RegistryError::DigestMismatch { .. } => "digest_mismatch",
            RegistryError::ReadModel(_) => "read_model",
            RegistryError::InvalidMetrics(_) => "invalid_metrics",
            RegistryError::Encryption(_) => "encryption",
            RegistryError::Task(_) => "task",
        }
    }
}

/// Where a pushed version came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParentRef {
    /// A version in this registry: its digest is recorded.
    Version(Reference),
    /// A model outside the registry, by its sha256.
    Digest(String),
}

impl std::str::FromStr for ParentRef {
    type Err = RegistryError;

    fn from_str(text: &str) -> Result<ParentRef, RegistryError> {
        if let Some(hex) = text.strip_prefix("sha256:") {
            return store::normalize_digest(hex).map(ParentRef::Digest).map_err(Into::into);
        }
        text.parse().map(ParentRef::Version)
    }
}

/// One push: the model's bytes and what to record about them.
#[derive(Debug, Clone)]
pub struct Push {
    pub name: String,
    pub version: String,
    pub model: Bytes,
    /// The file's name, to tell ONNX from NNEF.
    pub file_name: String,
    pub parent: Option<ParentRef>,
    pub metrics: BTreeMap<String, f64>,
    pub recipe: Option<Recipe>,
    /// Empty: stored as is; else stored as an age file to these.
    pub recipients: Vec<age::x25519::Recipient>,
    pub pushed_by: String,
}

/// What a push did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pushed {
    Created(VersionManifest),
    /// The version was there with this digest already: nothing written.
    Unchanged(VersionManifest),
}

impl Pushed {
    pub fn manifest(&self) -> &VersionManifest {
        match self {
            Pushed::Created(m) | Pushed::Unchanged(m) => m,
        }
    }
}

/// `onnx` or `nnef`, as the CRD writes it.
pub fn format_name(format: SourceFormat) -> &'static str {
    match format {
        SourceFormat::Onnx => "onnx",
        SourceFormat::Nnef => "nnef",
    }
}

/// Reads `--metrics`: a JSON object of names to finite numbers.
///
/// # Errors
/// Not an object, a value that is not a finite number, a bad name, or
/// more than [`MAX_METRICS`] entries.
pub fn parse_metrics(json: &str) -> Result<BTreeMap<String, f64>, RegistryError> {
    let bad = |reason: String| RegistryError::InvalidMetrics(reason);
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Some(object) = value.as_object() else {
        return Err(bad("expected a JSON object such as {\"accuracy\": 0.97}".into()));
    };
    if object.len() > MAX_METRICS {
        return Err(bad(format!("more than {MAX_METRICS} figures")));
    }
    let mut metrics = BTreeMap::new();
    for (name, value) in object {
        let name_ok = !name.is_empty()
            && name.len() <= 63
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !name_ok {
            let cut: String = name.chars().take(40).collect();
            return Err(bad(format!(
                "{cut:?} is not a metric name (1 to 63 of A-Z a-z 0-9 _ - .)"
            )));
        }
        match value.as_f64() {
            Some(v) if v.is_finite() => metrics.insert(name.clone(), v),
            _ => return Err(bad(format!("{name} is not a number"))),
        };
    }
    Ok(metrics)
}

/// A registry in an object store.
#[derive(Debug, Clone)]
pub struct Registry {
    store: Arc<dyn ObjectStore>,
    root: StorePath,
    /// The store's URL, for the URIs of blobs.
    location: String,
}

impl Registry {
    /// Opens the registry at a location: a path (created if missing),
    /// `file://` or `s3://bucket/prefix` (credentials from the `AWS_*`
    /// variables).
    ///
    /// # Errors
    /// An unsupported location, or a local folder that cannot be created.
    pub fn open(location: &str) -> Result<Registry, RegistryError> {
        let url = store::location_url(location)?;
        if url.scheme() == "file"
            && let Ok(path) = url.to_file_path()
        {
            // object_store's local store needs the folder to exist to list it.
            std::fs::create_dir_all(&path).map_err(|e| RegistryError::Write {
                path: path.display().to_string(),
                source: object_store::Error::Generic { store: "file", source: Box::new(e) },
            })?;
        }
        let (store, root) = store::open_location(url.as_str())?;
        let location = url.as_str().trim_end_matches('/').to_string();
        Ok(Registry { store: Arc::from(store), root, location })
    }

    /// The registry's location as a URL.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// The URI of the stored object with this sha256, as `serve --model` takes it.
    pub fn blob_uri(&self, sha256: &str) -> String {
        format!("{}/blobs/sha256/{sha256}", self.location)
    }

    fn blob_path(&self, sha256: &str) -> StorePath {
        self.root.clone().join("blobs").join("sha256").join(sha256)
    }

    fn model_dir(&self, name: &str) -> StorePath {
        self.root.clone().join("models").join(name)
    }

    fn version_path(&self, name: &str, version: &str) -> StorePath {
        self.model_dir(name).join("versions").join(format!("{version}.json"))
    }

    fn alias_path(&self, name: &str, alias: &str) -> StorePath {
        self.model_dir(name).join("aliases").join(format!("{alias}.json"))
    }

    /// Stores a model version. The same digest again is a no-op; another
    /// digest under an existing version is refused.
    ///
    /// # Errors
    /// Invalid names, a model the engine cannot load, an unknown parent,
    /// [`RegistryError::VersionExists`], or a store failure.
    pub async fn push(&self, push: Push) -> Result<Pushed, RegistryError> {
        check_name(&push.name)?;
        check_version("version", &push.version)?;
        let reference = format!("{}@{}", push.name, push.version);
        let digest = store::sha256_hex(&push.model);
        let same_or_refused = |existing: VersionManifest| {
            if existing.digest == digest {
                Ok(Pushed::Unchanged(existing))
            } else {
                Err(RegistryError::VersionExists {
                    reference: reference.clone(),
                    existing: existing.digest,
                    pushed: digest.clone(),
                })
            }
        };
        if let Some(existing) = self.manifest(&push.name, &push.version).await? {
            return same_or_refused(existing);
        }
        if self.alias(&push.name, &push.version).await?.is_some() {
            return Err(RegistryError::VersionIsAlias { reference: reference.clone() });
        }
        let parent = match &push.parent {
            None => None,
            Some(ParentRef::Digest(digest)) => {
                Some(Parent { digest: digest.clone(), name: None, version: None })
            }
            Some(ParentRef::Version(r)) => {
                let m = self.resolve(r).await?;
                Some(Parent { digest: m.digest, name: Some(m.name), version: Some(m.version) })
            }
        };
        let inspected = inspect(push.model.clone(), push.file_name.clone()).await?;
        let (stored_bytes, encryption) = if push.recipients.is_empty() {
            (push.model.clone(), None)
        } else {
            let recipients = push.recipients.clone();
            let plaintext = push.model.clone();
            let sealed = blocking(move || encryption::encrypt(&plaintext, &recipients)).await??;
            let recipients = push.recipients.iter().map(ToString::to_string).collect();
            (Bytes::from(sealed), Some(Encryption { scheme: "age".into(), recipients }))
        };
        let stored = Stored {
            sha256: store::sha256_hex(&stored_bytes),
            size_bytes: stored_bytes.len() as u64,
            encryption,
        };
        let manifest = VersionManifest {
            api_version: MANIFEST_API.into(),
            name: push.name.clone(),
            version: push.version.clone(),
            digest: digest.clone(),
            format: inspected.format,
            size_bytes: push.model.len() as u64,
            stored,
            inputs: inspected.inputs,
            outputs: inspected.outputs,
            parameters: inspected.parameters,
            operators: inspected.operators,
            parent,
            recipe: push.recipe,
            metrics: push.metrics,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            pushed_by: push.pushed_by,
        };
        // The blob first: a manifest never names a missing object. A
        // manifest that then loses the race leaves a blob no one names,
        // which is harmless (content-addressed) and small next to a model.
        self.put_new(&self.blob_path(&manifest.stored.sha256), stored_bytes).await?;
        let json =
            serde_json::to_vec_pretty(&manifest).map_err(|e| RegistryError::Task(e.to_string()))?;
        let path = self.version_path(&push.name, &push.version);
        if self.put_new(&path, Bytes::from(json)).await? {
            tracing::info!(%reference, sha256 = %digest, "version pushed");
            return Ok(Pushed::Created(manifest));
        }
        // Another push created it between our check and our write.
        match self.manifest(&push.name, &push.version).await? {
            Some(existing) => same_or_refused(existing),
            None => Err(RegistryError::NotFound {
                reference: reference.clone(),
                location: self.location.clone(),
            }),
        }
    }

    /// Writes an object unless it exists; `Ok(false)` when it did. Where
    /// the backend has no conditional put (object_store's
    /// `NotImplemented`), checks then writes, which two racing writers
    /// can both pass: said in a warning.
    async fn put_new(&self, path: &StorePath, bytes: Bytes) -> Result<bool, RegistryError> {
        let write_err = |source| RegistryError::Write { path: path.to_string(), source };
        let create = PutOptions { mode: PutMode::Create, ..Default::default() };
        match self.store.put_opts(path, bytes.clone().into(), create).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(object_store::Error::NotImplemented { .. }) => {
                tracing::warn!(%path, "this store has no conditional put: checking, then writing");
                match self.store.head(path).await {
                    Ok(_) => Ok(false),
                    Err(object_store::Error::NotFound { .. }) => {
                        self.store
                            .put_opts(path, bytes.into(), PutOptions::default())
                            .await
                            .map_err(write_err)?;
                        Ok(true)
                    }
                    Err(e) => Err(write_err(e)),
                }
            }
            Err(e) => Err(write_err(e)),
        }
    }

    /// An object's bytes, `None` when missing, refused over `max` bytes
    /// before its body is read.
    async fn read(&self, path: &StorePath, max: u64) -> Result<Option<Bytes>, RegistryError> {
        let read_err = |source| RegistryError::Read { path: path.to_string(), source };
        let got = match self.store.get_opts(path, Default::default()).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(read_err(e)),
        };
        let too_large = || RegistryError::ManifestTooLarge { path: path.to_string(), max };
        if got.meta.size > max {
            return Err(too_large());
        }
        let mut buffer = Vec::with_capacity(usize::try_from(got.meta.size).unwrap_or(0));
        let mut chunks = got.into_stream();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(read_err)?;
            if (buffer.len() + chunk.len()) as u64 > max {
                return Err(too_large());
            }
            buffer.extend_from_slice(&chunk);
        }
        Ok(Some(buffer.into()))
    }

    async fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &StorePath,
    ) -> Result<Option<T>, RegistryError> {
        let Some(bytes) = self.read(path, MAX_MANIFEST_BYTES).await? else { return Ok(None) };
        serde_json::from_slice(&bytes).map(Some).map_err(|e| RegistryError::BadManifest {
            path: path.to_string(),
            reason: e.to_string(),
        })
    }

    /// The manifest of `name@version`, checked to be what its path says.
    ///
    /// # Errors
    /// A store failure or a manifest that is not one.
    pub async fn manifest(
        &self,
        name: &str,
        version: &str,
    ) -> Result<Option<VersionManifest>, RegistryError> {
        let path = self.version_path(name, version);
        let Some(m) = self.read_json::<VersionManifest>(&path).await? else { return Ok(None) };
        let bad = |reason: String| RegistryError::BadManifest { path: path.to_string(), reason };
        if m.api_version != MANIFEST_API {
            return Err(bad(format!("apiVersion {:?}, expected {MANIFEST_API}", m.api_version)));
        }
        if m.name != name || m.version != version {
            return Err(bad(format!("it describes {}@{}", m.name, m.version)));
        }
        for digest in [&m.digest, &m.stored.sha256] {
            if store::normalize_digest(digest).ok().as_ref() != Some(digest) {
                return Err(bad("a digest is not 64 lowercase hexadecimal characters".into()));
            }
        }
        Ok(Some(m))
    }

    async fn alias(&self, name: &str, alias: &str) -> Result<Option<Alias>, RegistryError> {
        let path = self.alias_path(name, alias);
        let Some(a) = self.read_json::<Alias>(&path).await? else { return Ok(None) };
        if a.name != name || a.alias != alias || check_version("version", &a.version).is_err() {
            let reason = format!("it describes {}@{}", a.name, a.alias);
            return Err(RegistryError::BadManifest { path: path.to_string(), reason });
        }
        Ok(Some(a))
    }

    /// The version a reference names: a version, else an alias.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], an alias whose version changed digest
    /// ([`RegistryError::DigestMismatch`]), or a store failure.
    pub async fn resolve(&self, reference: &Reference) -> Result<VersionManifest, RegistryError> {
        if let Some(m) = self.manifest(&reference.name, &reference.tag).await? {
            return Ok(m);
        }
        let not_found = || RegistryError::NotFound {
            reference: reference.to_string(),
            location: self.location.clone(),
        };
        let alias = self.alias(&reference.name, &reference.tag).await?.ok_or_else(not_found)?;
        let m = self.manifest(&reference.name, &alias.version).await?.ok_or_else(not_found)?;
        if m.digest != alias.digest {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                expected: alias.digest,
                actual: m.digest,
            });
        }
        Ok(m)
    }

    /// File names directly under a folder of the store (`None` as its
    /// common prefixes, `Some` as objects with that suffix).
    async fn children(
        &self,
        dir: &StorePath,
        suffix: Option<&str>,
    ) -> Result<Vec<String>, RegistryError> {
        let listed = match self.store.list_with_delimiter(Some(dir)).await {
            Ok(listed) => listed,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(source) => return Err(RegistryError::Read { path: dir.to_string(), source }),
        };
        let last = |p: &StorePath| p.filename().map(str::to_string);
        let mut names: Vec<String> = match suffix {
            None => listed.common_prefixes.iter().filter_map(last).collect(),
            Some(suffix) => listed
                .objects
                .iter()
                .filter_map(|o| last(&o.location))
                .filter_map(|n| n.strip_suffix(suffix).map(str::to_string))
                .collect(),
        };
        names.sort();
        Ok(names)
    }

    /// Every model name in the registry.
    ///
    /// # Errors
    /// A store failure.
    pub async fn names(&self) -> Result<Vec<String>, RegistryError> {
        let names = self.children(&self.root.clone().join("models"), None).await?;
        Ok(names.into_iter().filter(|n| check_name(n).is_ok()).collect())
    }

    /// The versions of one model (or of all), oldest first. A manifest
    /// that cannot be read is skipped with a warning, so one damaged
    /// object does not hide the rest.
    ///
    /// # Errors
    /// An invalid name or a store failure.
    pub async fn list(&self, name: Option<&str>) -> Result<Vec<VersionManifest>, RegistryError> {
        let names = match name {
            Some(name) => {
                check_name(name)?;
                vec![name.to_string()]
            }
            None => self.names().await?,
        };
        let mut all = Vec::new();
        for name in names {
            let dir = self.model_dir(&name).join("versions");
            for version in self.children(&dir, Some(".json")).await? {
                if check_version("version", &version).is_err() {
                    continue;
                }
                match self.manifest(&name, &version).await {
                    Ok(Some(m)) => all.push(m),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "skipping an unreadable manifest"),
                }
            }
        }
        all.sort_by(|a, b| {
            (&a.name, &a.created, &a.version).cmp(&(&b.name, &b.created, &b.version))
        });
        Ok(all)
    }

    /// The aliases of one model.
    ///
    /// # Errors
    /// An invalid name or a store failure.
    pub async fn aliases(&self, name: &str) -> Result<Vec<Alias>, RegistryError> {
        check_name(name)?;
        let dir = self.model_dir(name).join("aliases");
        let mut aliases = Vec::new();
        for alias in self.children(&dir, Some(".json")).await? {
            if check_version("alias", &alias).is_ok()
                && let Some(a) = self.alias(name, &alias).await?
            {
                aliases.push(a);
            }
        }
        Ok(aliases)
    }

    /// A version's stored bytes (an age file when it was pushed
    /// encrypted), checked against its manifest's digests.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::DigestMismatch`], or a store failure.
    pub async fn pull(
        &self,
        reference: &Reference,
    ) -> Result<(VersionManifest, Bytes), RegistryError> {
        let m = self.resolve(reference).await?;
        let path = self.blob_path(&m.stored.sha256);
        let not_found = || RegistryError::NotFound {
            reference: reference.to_string(),
            location: self.blob_uri(&m.stored.sha256),
        };
        // Exactly the manifest's size: a longer object is refused unread.
        let bytes = self.read(&path, m.stored.size_bytes).await.map_err(|e| match e {
            RegistryError::ManifestTooLarge { .. } => RegistryError::DigestMismatch {
                reference: reference.to_string(),
                expected: m.stored.sha256.clone(),
                actual: "an object larger than the manifest says".into(),
            },
            other => other,
        })?;
        let bytes = bytes.ok_or_else(not_found)?;
        let actual = store::sha256_hex(&bytes);
        if actual != m.stored.sha256 {
            return Err(RegistryError::DigestMismatch {
                reference: reference.to_string(),
                expected: m.stored.sha256.clone(),
                actual,
            });
        }
        Ok((m, bytes))
    }

    /// Points `alias` at the version `reference` names (itself possibly an
    /// alias); returns the alias and the version it pointed to before.
    ///
    /// # Errors
    /// An invalid alias, an alias that is a version's name, an unknown
    /// reference, or a store failure.
    pub async fn tag(
        &self,
        reference: &Reference,
        alias: &str,
        updated_by: &str,
    ) -> Result<(Alias, Option<String>), RegistryError> {
        check_version("alias", alias)?;
        let target = self.resolve(reference).await?;
        if self.manifest(&reference.name, alias).await?.is_some() {
            return Err(RegistryError::AliasIsVersion {
                reference: format!("{}@{alias}", reference.name),
            });
        }
        let previous = self.alias(&reference.name, alias).await?.map(|a| a.version);
        let record = Alias {
            alias: alias.to_string(),
            name: target.name.clone(),
            version: target.version.clone(),
            digest: target.digest.clone(),
            updated: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            updated_by: updated_by.to_string(),
        };
        let path = self.alias_path(&reference.name, alias);
        let json =
            serde_json::to_vec_pretty(&record).map_err(|e| RegistryError::Task(e.to_string()))?;
        self.store
            .put_opts(&path, Bytes::from(json).into(), PutOptions::default())
            .await
            .map_err(|source| RegistryError::Write { path: path.to_string(), source })?;
        Ok((record, previous))
    }
}

/// What the engine and the ONNX graph say about a model.
struct Inspected {
    format: SourceFormat,
    inputs: Vec<TensorSignature>,
    outputs: Vec<TensorSignature>,
    parameters: Option<u64>,
    operators: Option<u64>,
}

/// Loads the model with the engine (on a blocking thread: it plans and
/// measures) for its format and signature, and counts an ONNX graph's
/// parameters and nodes.
async fn inspect(model: Bytes, file_name: String) -> Result<Inspected, RegistryError> {
    blocking(move || {
        let format = ModelFormat::detect(&file_name, &model);
        let options = EngineOptions { threads: Threads::Count(1) };
        let loaded = Model::load(&model, format, &options).map_err(RegistryError::ReadModel)?;
        let (parameters, operators) = match format {
            ModelFormat::Onnx => match crate::optimize::graph::decode(&model) {
                Ok(proto) => {
                    let nodes = proto.graph.as_ref().map_or(0, |g| g.node.len() as u64);
                    (Some(crate::optimize::graph::param_stats(&proto).parameters), Some(nodes))
                }
                Err(_) => (None, None),
            },
            ModelFormat::Nnef => (None, None),
        };
        Ok(Inspected {
            format: match format {
                ModelFormat::Onnx => SourceFormat::Onnx,
                ModelFormat::Nnef => SourceFormat::Nnef,
            },
            inputs: loaded.inputs().iter().map(TensorSignature::from).collect(),
            outputs: loaded.outputs().iter().map(TensorSignature::from).collect(),
            parameters,
            operators,
        })
    })
    .await?
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, RegistryError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| RegistryError::Task(e.to_string()))
}

#[cfg(test)]
mod tests;
