//! Typed arguments of the child roles (`serve`, `route`, `optimize`), built
//! once from a validated spec and rendered either as a pod's args and env
//! (the controller) or as a process's argv (`tractor up`).
//!
//! Both executors call the same builders, so what one passes the other
//! passes too: a spec's processing and batching reach every `serve` the
//! same way, whoever starts it. Each flag is written here with the
//! environment variable its clap definition reads, and a test of the CLI
//! checks both names against the real command line.

use crate::crd::ValidSpec;

/// One flag of a child's command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildArg {
    /// `--model`
    pub flag: &'static str,
    /// `TRACTOR_MODEL`: the variable the same clap argument reads, for
    /// the flags that have one.
    pub env: Option<&'static str>,
    pub value: String,
}

/// A child role's subcommand and its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildArgs {
    pub subcommand: &'static str,
    pub args: Vec<ChildArg>,
}

impl ChildArgs {
    fn new(subcommand: &'static str) -> Self {
        ChildArgs { subcommand, args: Vec::new() }
    }

    fn push(&mut self, flag: &'static str, env: &'static str, value: impl Into<String>) {
        self.args.push(ChildArg { flag, env: Some(env), value: value.into() });
    }

    fn push_flag(&mut self, flag: &'static str, value: impl Into<String>) {
        self.args.push(ChildArg { flag, env: None, value: value.into() });
    }

    /// The subcommand then `--flag value` pairs: a process's argv (after
    /// the program).
    pub fn argv(&self) -> Vec<String> {
        self.render(|_| true)
    }

    fn render(&self, keep: impl Fn(&ChildArg) -> bool) -> Vec<String> {
        let mut argv = vec![self.subcommand.to_string()];
        for arg in self.args.iter().filter(|a| keep(a)) {
            argv.push(arg.flag.to_string());
            argv.push(arg.value.clone());
        }
        argv
    }

    /// `(NAME, value)` pairs: a container's environment, its args being
    /// the subcommand and [`ChildArgs::flags_without_env`].
    pub fn env(&self) -> Vec<(String, String)> {
        self.args.iter().filter_map(|a| a.env.map(|e| (e.to_string(), a.value.clone()))).collect()
    }

    /// The subcommand and the flags no variable can carry: a container's
    /// args when its environment carries the rest.
    pub fn flags_without_env(&self) -> Vec<String> {
        self.render(|a| a.env.is_none())
    }
}

/// Where an executor runs a `serve` child: what differs between a pod and
/// a local process. Everything else comes from the spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServePlacement {
    /// Listen address; `None` keeps serve's default (all interfaces).
    pub host: Option<String>,
    pub port: u16,
    /// The gRPC port (`--grpc-port`); 0 turns it off.
    pub grpc_port: u16,
    /// Where the executor puts the spec's processing document
    /// ([`processing_document`]) when the spec has one: a mounted
    /// ConfigMap in a pod, a file in the state directory locally.
    pub processing_file: String,
}

/// The artifact a `serve` child loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedArtifact<'a> {
    pub version: &'a str,
    pub uri: &'a str,
    pub sha256: Option<&'a str>,
}

/// The processing document a `serve` child reads with `--processing`
/// (JSON, which serve's YAML-or-JSON reader takes), or `None` when the
/// spec has no processing.
pub fn processing_document(spec: &ValidSpec) -> Option<String> {
    spec.processing.as_ref().map(|p| serde_json::to_string_pretty(p).unwrap_or_default())
}

/// `tractor serve` for one version of a spec.
pub fn serve(spec: &ValidSpec, artifact: &ServedArtifact<'_>, at: &ServePlacement) -> ChildArgs {
    let mut args = ChildArgs::new("serve");
    args.push("--model", "TRACTOR_MODEL", artifact.uri);
    args.push("--name", "TRACTOR_MODEL_NAME", spec.model_name.clone());
    args.push("--model-version", "TRACTOR_MODEL_VERSION", artifact.version);
    if let Some(sha) = artifact.sha256 {
        args.push("--sha256", "TRACTOR_SHA256", sha);
    }
    if let Some(host) = &at.host {
        args.push("--host", "TRACTOR_HOST", host.clone());
    }
    args.push("--http-port", "TRACTOR_HTTP_PORT", at.port.to_string());
    args.push("--grpc-port", "TRACTOR_GRPC_PORT", at.grpc_port.to_string());
    args.push("--max-batch-size", "TRACTOR_MAX_BATCH_SIZE", spec.max_batch_size.to_string());
    args.push(
        "--max-batch-delay-us",
        "TRACTOR_MAX_BATCH_DELAY_US",
        spec.max_batch_delay.as_micros().to_string(),
    );
    if spec.processing.is_some() {
        args.push("--processing", "TRACTOR_PROCESSING", at.processing_file.clone());
    }
    if let Some(k) = spec.output_limits.top_k {
        args.push("--limit-top-k", "TRACTOR_LIMIT_TOP_K", k.to_string());
    }
    if let Some(digits) = spec.output_limits.digits {
        args.push("--limit-digits", "TRACTOR_LIMIT_DIGITS", digits.to_string());
    }
    args
}

/// Where the router reads its table from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoutesAt {
    /// A ConfigMap in the pod's namespace, watched through the API.
    ConfigMap(String),
    /// A file, watched for changes.
    File(String),
}

/// `tractor route` for a deployment.
pub fn route(listen: &str, admin_listen: &str, routes: &RoutesAt) -> ChildArgs {
    let mut args = ChildArgs::new("route");
    args.push("--listen", "TRACTOR_ROUTE_LISTEN", listen);
    args.push("--admin-listen", "TRACTOR_ROUTE_ADMIN_LISTEN", admin_listen);
    match routes {
        RoutesAt::ConfigMap(name) => {
            args.push("--routes-configmap", "TRACTOR_ROUTES_CONFIGMAP", name.clone())
        }
        RoutesAt::File(path) => args.push("--routes-file", "TRACTOR_ROUTES_FILE", path.clone()),
    }
    args
}

/// `route` with its gRPC port too (`route --grpc-port`).
pub fn with_grpc_port(mut route: ChildArgs, port: u16) -> ChildArgs {
    route.push("--grpc-port", "TRACTOR_ROUTE_GRPC_PORT", port.to_string());
    route
}

/// Files of one optimization run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OptimizeFiles {
    pub input: String,
    pub output: String,
    /// The recipe (`spec.optimize` as JSON), written by the executor.
    pub recipe: String,
    pub report: Option<String>,
    /// Where the [`crate::contract::job::JobResult`] goes.
    pub termination_message: String,
}

/// `tractor optimize` for the job of a version.
pub fn optimize(files: &OptimizeFiles) -> ChildArgs {
    let mut args = ChildArgs::new("optimize");
    args.push_flag("--input", files.input.clone());
    args.push_flag("--output", files.output.clone());
    args.push_flag("--recipe", files.recipe.clone());
    if let Some(report) = &files.report {
        args.push_flag("--report", report.clone());
    }
    args.push_flag("--termination-message", files.termination_message.clone());
    args
}

/// Files that control who may call a `serve` child; kept apart from
/// [`serve`] because only the executor knows where it put them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ServeAccess {
    /// Auth files (`--auth-file`): in a cluster, the one accepting only
    /// the router's per-deployment token.
    pub auth_files: Vec<String>,
    /// `--tls-cert` and `--tls-key`: HTTPS and gRPC over TLS, for the
    /// router to verify with its `--backend-ca`.
    pub tls: Option<(String, String)>,
}

/// Adds a `serve` child's access flags to its arguments.
pub fn serve_access(args: &mut ChildArgs, access: &ServeAccess) {
    if !access.auth_files.is_empty() {
        args.push("--auth-file", "TRACTOR_AUTH_FILE", access.auth_files.join(","));
    }
    tls_flags(args, access.tls.as_ref());
}

fn tls_flags(args: &mut ChildArgs, tls: Option<&(String, String)>) {
    if let Some((cert, key)) = tls {
        args.push("--tls-cert", "TRACTOR_TLS_CERT", cert.clone());
        args.push("--tls-key", "TRACTOR_TLS_KEY", key.clone());
    }
}

/// The JWT settings of a router.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtFiles {
    pub jwks: String,
    pub issuer: String,
    pub audience: String,
    /// Limits of each subject: `--jwt-rps`, `--jwt-burst`, `--jwt-quota`.
    pub rps: Option<u32>,
    pub burst: Option<u32>,
    pub quota: Option<u64>,
}

/// Files that control who may call a `route` child and how it calls its
/// versions; the executor mounts or writes them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteAccess {
    /// Callers' auth files and the controller's admin one (`--auth-file`).
    pub auth_files: Vec<String>,
    pub jwt: Option<JwtFiles>,
    /// `--tls-cert` and `--tls-key`.
    pub tls: Option<(String, String)>,
    /// The router's own token to its versions (`--backend-token-file`).
    pub backend_token_file: Option<String>,
    /// The CA its https:// versions are verified with (`--backend-ca`).
    pub backend_ca: Option<String>,
}

/// Adds a `route` child's access flags to its arguments.
pub fn route_access(args: &mut ChildArgs, access: &RouteAccess) {
    if !access.auth_files.is_empty() {
        args.push("--auth-file", "TRACTOR_AUTH_FILE", access.auth_files.join(","));
    }
    if let Some(jwt) = &access.jwt {
        args.push("--jwks", "TRACTOR_JWKS", jwt.jwks.clone());
        args.push("--jwt-issuer", "TRACTOR_JWT_ISSUER", jwt.issuer.clone());
        args.push("--jwt-audience", "TRACTOR_JWT_AUDIENCE", jwt.audience.clone());
        if let Some(rps) = jwt.rps {
            args.push("--jwt-rps", "TRACTOR_JWT_RPS", rps.to_string());
        }
        if let Some(burst) = jwt.burst {
            args.push("--jwt-burst", "TRACTOR_JWT_BURST", burst.to_string());
        }
        if let Some(quota) = jwt.quota {
            args.push("--jwt-quota", "TRACTOR_JWT_QUOTA", quota.to_string());
        }
    }
    tls_flags(args, access.tls.as_ref());
    if let Some(file) = &access.backend_token_file {
        args.push("--backend-token-file", "TRACTOR_BACKEND_TOKEN_FILE", file.clone());
    }
    if let Some(file) = &access.backend_ca {
        args.push("--backend-ca", "TRACTOR_BACKEND_CA", file.clone());
    }
}
