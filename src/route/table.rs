//! Where the routing table comes from, and how changes reach the router.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::runtime::watcher;
use notify_debouncer_mini::notify::RecursiveMode;
use notify_debouncer_mini::{DebounceEventResult, new_debouncer};

use super::RouterState;
use crate::contract::routes::{Backend, RouteTable};

/// Quiet time after a change of the routes file before it is read: the
/// local runner writes a temporary file and renames it into place, a burst
/// of events that is one change.
const FILE_DEBOUNCE: Duration = Duration::from_millis(50);
/// How often the routes file is read when the file system cannot be watched
/// (inotify's per-user watch limit reached, or a file system without
/// change events such as some network mounts): slow, as it only backs up a
/// missing watcher.
const FILE_FALLBACK_POLL: Duration = Duration::from_secs(2);
/// The key of the routes ConfigMap that holds the table.
pub const ROUTES_KEY: &str = "routes.json";

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("invalid backend {0:?}: expected NAME=URL or NAME=URL@WEIGHT")]
    Backend(String),
    #[error("version {version:?}: backend URL {url:?} {reason}")]
    Url { version: String, url: String, reason: String },
    /// Without a CA to verify it, an https:// backend could only be
    /// reached unverified, or fail every request: refused up front.
    #[error(
        "version {version:?}: backend URL {url:?} is https://, which needs --backend-ca FILE \
         (the CA that signed the backends' certificates); or use http://"
    )]
    Https { version: String, url: String },
    #[error("reading the routes file {path}: {reason}")]
    File { path: String, reason: String },
    #[error("invalid routing table: {0}")]
    Invalid(String),
    #[error("reading the routes ConfigMap {name}: {reason}")]
    ConfigMap { name: String, reason: String },
}

#[derive(Debug, Clone)]
pub enum RoutesSource {
    /// From the command line; never changes.
    Static(RouteTable),
    /// A JSON file, re-read when it changes (`tractor up` writes it).
    File(PathBuf),
    /// A ConfigMap in the pod's namespace, watched through the API.
    ConfigMap { namespace: String, name: String },
}

/// Parses `NAME=URL[@WEIGHT]`; the weight defaults to 0 (reachable by header only)
/// unless it is the only backend.
pub fn parse_backend(text: &str) -> Result<Backend, TableError> {
    let bad = || TableError::Backend(text.to_string());
    let (version, rest) = text.split_once('=').ok_or_else(bad)?;
    let (url, weight) = match rest.rsplit_once('@') {
        Some((url, w)) if w.chars().all(|c| c.is_ascii_digit()) && !w.is_empty() => {
            (url, w.parse::<u32>().map_err(|_| bad())?)
        }
        _ => (rest, 0),
    };
    if version.is_empty() {
        return Err(bad());
    }
    check_url(version, url)?;
    Ok(Backend { version: version.to_string(), url: url.to_string(), weight, grpc: None })
}

/// A backend URL the router can send requests to: `http://HOST[:PORT][/PREFIX]`,
/// checked when the table loads rather than failing every request later.
fn check_url(version: &str, url: &str) -> Result<(), TableError> {
    let refuse = |reason: &str| TableError::Url {
        version: version.to_string(),
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: axum::http::Uri = url.parse().map_err(|e| refuse(&format!("does not parse: {e}")))?;
    match uri.scheme_str() {
        // https:// is allowed or not by the router's configuration: see
        // [`check_tls`].
        Some("http" | "https") => {}
        _ => return Err(refuse("must start with http:// or https://")),
    }
    let Some(authority) = uri.authority() else { return Err(refuse("has no host")) };
    if authority.host().is_empty() {
        return Err(refuse("has no host"));
    }
    // A port that does not parse would silently become port 80.
    if authority.as_str().rsplit_once(':').is_some_and(|(_, port)| !port.ends_with(']'))
        && authority.port_u16().is_none()
    {
        return Err(refuse("has a port that is not a number from 0 to 65535"));
    }
    if uri.query().is_some() {
        return Err(refuse("has a query; a backend is an address and a path prefix"));
    }
    if authority.as_str().contains('@') {
        return Err(refuse("carries credentials; the router forwards the caller's headers only"));
    }
    Ok(())
}

/// Refuses https:// backends unless the router has a CA to verify them
/// (`--backend-ca`).
///
/// # Errors
/// [`TableError::Https`] naming the first https:// backend.
pub fn check_tls(table: &RouteTable, https_allowed: bool) -> Result<(), TableError> {
    if https_allowed {
        return Ok(());
    }
    match table.backends.iter().find(|b| b.url.starts_with("https://")) {
        Some(b) => Err(TableError::Https { version: b.version.clone(), url: b.url.clone() }),
        None => Ok(()),
    }
}

/// Checks a table: unique versions, weights 0..=100, a shadow that exists.
pub fn check(table: &RouteTable) -> Result<(), TableError> {
    for (i, b) in table.backends.iter().enumerate() {
        check_url(&b.version, &b.url)?;
        if table.backends[..i].iter().any(|o| o.version == b.version) {
            return Err(TableError::Invalid(format!("version {:?} listed twice", b.version)));
        }
        if b.weight > 100 {
            return Err(TableError::Invalid(format!(
                "version {:?} has weight {} over 100",
                b.version, b.weight
            )));
        }
    }
    if let Some(shadow) = &table.shadow
        && !table.backends.iter().any(|b| &b.version == shadow)
    {
        return Err(TableError::Invalid(format!("shadow version {shadow:?} is not a backend")));
    }
    Ok(())
}

fn parse_table(text: &str) -> Result<RouteTable, TableError> {
    let table: RouteTable =
        serde_json::from_str(text).map_err(|e| TableError::Invalid(e.to_string()))?;
    check(&table)?;
    Ok(table)
}

impl RoutesSource {
    /// The table now. A ConfigMap that does not exist yet is an empty table
    /// (every request 503) rather than an error: the controller creates it.
    pub async fn load(&self) -> Result<RouteTable, TableError> {
        match self {
            RoutesSource::Static(table) => {
                check(table)?;
                Ok(table.clone())
            }
            RoutesSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| TableError::File {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
                parse_table(&text)
            }
            RoutesSource::ConfigMap { namespace, name } => {
                let client = kube::Client::try_default().await.map_err(|e| {
                    TableError::ConfigMap { name: name.clone(), reason: e.to_string() }
                })?;
                let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, namespace);
                match api.get_opt(name).await {
                    Ok(Some(cm)) => table_of(&cm, name),
                    Ok(None) => Ok(RouteTable::default()),
                    Err(e) => {
                        Err(TableError::ConfigMap { name: name.clone(), reason: e.to_string() })
                    }
                }
            }
        }
    }

    /// Applies every later change to `state`. A bad table is logged and the
    /// router keeps the last good one.
    pub async fn watch(self, state: RouterState) {
        match self {
            RoutesSource::Static(_) => {}
            RoutesSource::File(path) => watch_file(path, state).await,
            RoutesSource::ConfigMap { namespace, name } => {
                let client = match kube::Client::try_default().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot watch the routes ConfigMap");
                        return;
                    }
                };
                let api: kube::Api<ConfigMap> = kube::Api::namespaced(client, &namespace);
                let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
                let mut events = std::pin::pin!(watcher::watcher(api, config));
                while let Some(event) = events.next().await {
                    match event {
                        Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => {
                            match table_of(&cm, &name) {
                                Ok(table) => {
                                    if let Err(e) = state.replace_table(table) {
                                        tracing::warn!(error = %e, "keeping the previous routing table")
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "keeping the previous routing table")
                                }
                            }
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "watching the routes ConfigMap"),
                    }
                }
            }
        }
    }
}

/// Applies every change of a routes file. The directory is watched, not the
/// file: a file replaced by rename is a new inode, which a watch on the old
/// one would never report.
async fn watch_file(path: PathBuf, state: RouterState) {
    let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
    let watched = path.file_name().map(std::ffi::OsStr::to_os_string);
    let debouncer = new_debouncer(FILE_DEBOUNCE, move |events: DebounceEventResult| {
        let ours = match events {
            Ok(events) => events.iter().any(|e| e.path.file_name() == watched.as_deref()),
            // A lost event is a change we may have missed: read the file again.
            Err(_) => true,
        };
        if ours {
            let _ = changed.send(());
        }
    })
    .and_then(|mut debouncer| {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        debouncer.watcher().watch(dir, RecursiveMode::NonRecursive)?;
        Ok(debouncer)
    });
    let debouncer = match debouncer {
        Ok(debouncer) => Some(debouncer),
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), poll = ?FILE_FALLBACK_POLL,
                "cannot watch the routes file; polling it instead");
            None
        }
    };
    // The content is compared, not the modification time: two writes
    // within one timestamp tick must both be seen. The table is read once
    // more now that the watch is set, in case it changed since the start.
    let mut last = None;
    loop {
        let now = tokio::fs::read(&path).await.ok();
        if now != last {
            let parsed = match &now {
                Some(bytes) => parse_table(&String::from_utf8_lossy(bytes)),
                None => RoutesSource::File(path.clone()).load().await,
            };
            last = now;
            match parsed {
                Ok(table) if table == *state.table() => {}
                Ok(table) => {
                    tracing::info!(routes = ?table, "routing table changed");
                    if let Err(e) = state.replace_table(table) {
                        tracing::warn!(error = %e, "keeping the previous routing table");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "keeping the previous routing table"),
            }
        }
        if debouncer.is_some() {
            if changes.recv().await.is_none() {
                return;
            }
        } else {
            tokio::time::sleep(FILE_FALLBACK_POLL).await;
        }
    }
}

fn table_of(cm: &ConfigMap, name: &str) -> Result<RouteTable, TableError> {
    let text = cm.data.as_ref().and_then(|d| d.get(ROUTES_KEY)).ok_or_else(|| {
        TableError::ConfigMap { name: name.to_string(), reason: format!("no {ROUTES_KEY} key") }
    })?;
    parse_table(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_parse_with_and_without_weights() {
        assert_eq!(
            parse_backend("2=http://127.0.0.1:9000@10").unwrap(),
            Backend {
                version: "2".into(),
                url: "http://127.0.0.1:9000".into(),
                weight: 10,
                grpc: None,
            }
        );
        assert_eq!(parse_backend("1=http://h:1").unwrap().weight, 0);
        assert!(parse_backend("nourl").is_err());
        assert!(parse_backend("1=ftp://h").is_err());
        assert!(parse_backend("1=http://h:80x").is_err(), "a bad port is not port 80");
        assert!(parse_backend("1=http://h:99999").is_err());
        assert!(parse_backend("1=http://[::1]:8000").is_ok());
        assert!(parse_backend("1=http://h/prefix").is_ok());
    }

    #[test]
    fn https_backends_are_refused_without_a_backend_ca_with_the_reason() {
        let https = parse_backend("1=https://h:8443").unwrap();
        let table = RouteTable { backends: vec![https], shadow: None };
        assert!(check(&table).is_ok(), "https:// is a well-formed backend URL");
        let message = check_tls(&table, false).unwrap_err().to_string();
        assert!(message.contains("https://") && message.contains("--backend-ca"), "{message}");
        assert!(check_tls(&table, true).is_ok(), "with --backend-ca it is reachable");
        let from_file = parse_table(&serde_json::to_string(&table).unwrap()).unwrap();
        assert!(matches!(check_tls(&from_file, false), Err(TableError::Https { .. })));
    }

    #[test]
    fn tables_are_checked() {
        let b = |v: &str, w| Backend {
            version: v.into(),
            url: "http://x".into(),
            weight: w,
            grpc: None,
        };
        assert!(
            check(&RouteTable { backends: vec![b("1", 90), b("2", 10)], shadow: Some("2".into()) })
                .is_ok()
        );
        assert!(
            check(&RouteTable { backends: vec![b("1", 90), b("1", 10)], shadow: None }).is_err()
        );
        assert!(check(&RouteTable { backends: vec![b("1", 190)], shadow: None }).is_err());
        assert!(
            check(&RouteTable { backends: vec![b("1", 100)], shadow: Some("3".into()) }).is_err()
        );
        assert!(parse_table("{not json").is_err());
    }

    #[tokio::test]
    async fn a_routes_file_replaced_by_rename_is_seen_quickly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes.json");
        let table = |weight| RouteTable {
            backends: vec![Backend {
                version: "1".into(),
                url: "http://x".into(),
                weight,
                grpc: None,
            }],
            shadow: None,
        };
        std::fs::write(&path, serde_json::to_vec(&table(100)).unwrap()).unwrap();
        let config = super::super::RouteConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            admin_listen: ([127, 0, 0, 1], 0).into(),
            routes: RoutesSource::File(path.clone()),
            sticky_header: None,
            retry_on_stable: false,
            backend_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            max_body_bytes: 1024,
            max_response_bytes: 1024,
            max_inflight: 1,
            connections: crate::listen::ConnectionLimits::default(),
            auth: Default::default(),
            backend_tls: None,
        };
        let state = RouterState::new(&config, table(100));
        let watching = tokio::spawn(config.routes.clone().watch(state.clone()));
        // As `tractor up` writes it: a whole new file renamed over the old one,
        // a few times, each seen.
        for weight in [40, 7, 93] {
            // Let the watch settle on the current file before replacing it.
            tokio::time::sleep(Duration::from_millis(100)).await;
            let tmp = dir.path().join("routes.json.tmp");
            std::fs::write(&tmp, serde_json::to_vec(&table(weight)).unwrap()).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
            let started = std::time::Instant::now();
            while *state.table() != table(weight) {
                assert!(
                    started.elapsed() < Duration::from_secs(1),
                    "weight {weight} not seen within a second (the fallback poll is 2 s)"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        watching.abort();
    }
}
