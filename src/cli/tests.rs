//! The command line as declared, and the contract with the executors: the
//! argv and environment that the controller and `tractor up` give their
//! children (`tractor::contract::args`) must mean the same thing to the
//! real parser, or a child would start with defaults nobody asked for.

use std::ffi::OsStr;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{CommandFactory, Parser};

use tractor::contract::args::{
    self, ChildArgs, OptimizeFiles, RoutesAt, ServePlacement, ServedArtifact,
};
use tractor::crd::{ModelDeploymentSpec, ValidSpec, validate};
use tractor::engine::Threads;

use super::{Cli, Command};

#[test]
fn verify_cli() {
    Cli::command().debug_assert();
}

#[test]
fn serve_flags_parse_as_documented() {
    let cli = Cli::try_parse_from([
        "tractor",
        "serve",
        "--model",
        "m.onnx",
        "--max-batch-size",
        "1",
        "--engine-threads",
        "2",
    ])
    .unwrap();
    let Command::Serve(args) = cli.command else { panic!("not serve") };
    assert_eq!(args.max_batch_size, 1);
    assert_eq!(args.engine_threads, Threads::Count(2));
    assert!(
        Cli::try_parse_from(["tractor", "serve", "--model", "m", "--engine-threads", "0"]).is_err()
    );
}

const SHA_SOURCE: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_OPTIMIZED: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

/// A small spec as a user writes it, through the same validation the
/// executors use; `serving` is the part that reaches `serve`.
fn spec(serving: &str) -> ValidSpec {
    let yaml = format!(
        "model: {{name: digits, version: '2', source: {{uri: 's3://models/digits-2.onnx', sha256: '{SHA_SOURCE}'}}}}\n{serving}"
    );
    let spec: ModelDeploymentSpec = serde_saphyr::from_str(&yaml).unwrap();
    validate(&spec).unwrap()
}

const SERVING: &str = "serving:
  batching: {maxBatchSize: 8, maxBatchDelay: 2ms}
  processing: {outputs: [{name: y, softmax: true}]}
  outputLimits: {topK: 3, digits: 2}
";

fn artifact() -> ServedArtifact<'static> {
    ServedArtifact {
        version: "2",
        uri: "s3://models/digits-2-optimized.onnx",
        sha256: Some(SHA_OPTIMIZED),
    }
}

fn placement(host: Option<&str>) -> ServePlacement {
    ServePlacement {
        host: host.map(str::to_string),
        port: 8123,
        grpc_port: 8124,
        processing_file: "/etc/tractor/processing/processing.json".into(),
    }
}

fn optimize_files() -> OptimizeFiles {
    OptimizeFiles {
        input: "s3://models/digits-2.onnx".into(),
        output: "s3://artifacts/digits/2/model.onnx".into(),
        recipe: "/work/recipe.json".into(),
        report: Some("s3://artifacts/digits/2/report.json".into()),
        termination_message: "/dev/termination-log".into(),
    }
}

/// What the real parser makes of a child's argv.
fn parse(child: &ChildArgs) -> Command {
    let argv = std::iter::once("tractor".to_string()).chain(child.argv());
    match Cli::try_parse_from(argv) {
        Ok(cli) => cli.command,
        Err(e) => panic!("{:?} does not parse: {e}", child.argv()),
    }
}

#[test]
fn serve_child_argv_parses_to_the_spec_values() {
    let spec = spec(SERVING);
    // The spec must carry batching and processing, or the test would only
    // see serve's defaults.
    assert_eq!(spec.max_batch_size, 8);
    assert!(spec.processing.is_some());
    let child = args::serve(&spec, &artifact(), &placement(Some("127.0.0.1")));
    let Command::Serve(serve) = parse(&child) else { panic!("{:?} is not serve", child.argv()) };
    assert_eq!(serve.model, "s3://models/digits-2-optimized.onnx");
    assert_eq!(serve.name.as_deref(), Some("digits"));
    assert_eq!(serve.model_version, "2");
    assert_eq!(serve.sha256.as_deref(), Some(SHA_OPTIMIZED));
    assert_eq!(serve.host, "127.0.0.1".parse::<IpAddr>().unwrap());
    assert_eq!(serve.http_port, 8123);
    assert_eq!(serve.max_batch_size, 8);
    assert_eq!(u128::from(serve.max_batch_delay_us), spec.max_batch_delay.as_micros());
    assert_eq!(serve.max_batch_delay_us, 2_000);
    assert_eq!(serve.processing, Some(PathBuf::from("/etc/tractor/processing/processing.json")));
    assert_eq!((serve.limit_top_k, serve.limit_digits), (Some(3), Some(2)));
}

#[test]
fn serve_child_without_host_or_processing_keeps_serve_defaults() {
    let spec = spec("");
    let artifact = ServedArtifact { sha256: None, ..artifact() };
    let child = args::serve(&spec, &artifact, &placement(None));
    let Command::Serve(serve) = parse(&child) else { panic!("{:?} is not serve", child.argv()) };
    assert_eq!(serve.host, "0.0.0.0".parse::<IpAddr>().unwrap());
    assert_eq!(serve.sha256, None);
    assert_eq!(serve.processing, None);
    assert_eq!((serve.limit_top_k, serve.limit_digits), (None, None));
    assert_eq!(serve.max_batch_size, spec.max_batch_size as usize);
    assert_eq!(u128::from(serve.max_batch_delay_us), spec.max_batch_delay.as_micros());
}

#[test]
fn route_child_argv_parses_to_the_same_values() {
    let file = args::route(
        "127.0.0.1:8080",
        "127.0.0.1:9090",
        &RoutesAt::File("/state/routes.json".into()),
    );
    let Command::Route(route) = parse(&file) else { panic!("{:?} is not route", file.argv()) };
    assert_eq!(route.listen, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(route.admin_listen, "127.0.0.1:9090".parse::<SocketAddr>().unwrap());
    assert_eq!(route.routes_file, Some(PathBuf::from("/state/routes.json")));
    assert_eq!(route.routes_configmap, None);

    let configmap =
        args::route("0.0.0.0:8080", "0.0.0.0:9090", &RoutesAt::ConfigMap("digits-routes".into()));
    let Command::Route(route) = parse(&configmap) else {
        panic!("{:?} is not route", configmap.argv())
    };
    assert_eq!(route.listen, "0.0.0.0:8080".parse::<SocketAddr>().unwrap());
    assert_eq!(route.routes_configmap.as_deref(), Some("digits-routes"));
    assert_eq!(route.routes_file, None);
}

#[test]
fn optimize_child_argv_parses_to_the_same_values() {
    let files = optimize_files();
    let child = args::optimize(&files);
    let Command::Optimize(optimize) = parse(&child) else {
        panic!("{:?} is not optimize", child.argv())
    };
    assert_eq!(optimize.options.input, files.input);
    assert_eq!(optimize.options.output, files.output);
    assert_eq!(optimize.options.recipe, Some(PathBuf::from(&files.recipe)));
    assert_eq!(optimize.options.report, files.report);
    assert_eq!(optimize.termination_message, Some(PathBuf::from(&files.termination_message)));
    // The recipe file carries the passes: no pass flag may be implied.
    assert!(!optimize.options.fold && optimize.options.quantize.is_none());
}

/// Every child the executors build, with every optional flag present.
fn every_child() -> Vec<ChildArgs> {
    let spec = spec(SERVING);
    vec![
        args::serve(&spec, &artifact(), &placement(Some("127.0.0.1"))),
        args::route(
            "127.0.0.1:8080",
            "127.0.0.1:9090",
            &RoutesAt::File("/state/routes.json".into()),
        ),
        args::with_grpc_port(
            args::route(
                "0.0.0.0:8080",
                "0.0.0.0:9090",
                &RoutesAt::ConfigMap("digits-routes".into()),
            ),
            8081,
        ),
        args::optimize(&optimize_files()),
        with_access(args::serve(&spec, &artifact(), &placement(None)), None),
        with_access(
            args::route("0.0.0.0:8080", "0.0.0.0:9090", &RoutesAt::ConfigMap("d-routes".into())),
            Some(()),
        ),
    ]
}

/// A child with every access flag its role takes (the cluster's mounts).
fn with_access(mut child: ChildArgs, router: Option<()>) -> ChildArgs {
    match router {
        None => args::serve_access(
            &mut child,
            &args::ServeAccess {
                auth_files: vec!["/etc/tractor/auth/serve/auth.yaml".into()],
                tls: Some(("/t/tls.crt".into(), "/t/tls.key".into())),
            },
        ),
        Some(()) => args::route_access(
            &mut child,
            &args::RouteAccess {
                auth_files: vec!["/a/callers.yaml".into(), "/a/admin.yaml".into()],
                jwt: Some(args::JwtFiles {
                    jwks: "/j/jwks.json".into(),
                    issuer: "https://issuer".into(),
                    audience: "tractor".into(),
                    rps: Some(20),
                    burst: Some(40),
                    quota: Some(100_000),
                }),
                tls: Some(("/t/tls.crt".into(), "/t/tls.key".into())),
                backend_token_file: Some("/b/token".into()),
                backend_ca: Some("/b/ca.crt".into()),
            },
        ),
    }
    child
}

#[test]
fn access_flags_of_the_children_parse_to_the_same_files() {
    let route = with_access(
        args::route("0.0.0.0:8080", "0.0.0.0:9090", &RoutesAt::ConfigMap("d-routes".into())),
        Some(()),
    );
    let Command::Route(parsed) = parse(&route) else { panic!("{:?} is not route", route.argv()) };
    assert_eq!(
        parsed.auth.auth_files,
        vec![PathBuf::from("/a/callers.yaml"), PathBuf::from("/a/admin.yaml")]
    );
    assert_eq!(parsed.auth.jwks, Some(tractor::auth::JwksSource::File("/j/jwks.json".into())));
    assert_eq!(parsed.auth.jwt_audience.as_deref(), Some("tractor"));
    let limits = parsed.auth.config().jwt_limits;
    assert_eq!(limits.rate, Some(tractor::auth::Rate { per_second: 20, burst: 40 }));
    assert_eq!(limits.quota, Some(100_000));
    assert_eq!(parsed.backend_token_file, Some(PathBuf::from("/b/token")));
    assert!(parsed.tls.files().is_some(), "--tls-cert and --tls-key");
    let serve = with_access(args::serve(&spec(""), &artifact(), &placement(None)), None);
    let Command::Serve(parsed) = parse(&serve) else { panic!("{:?} is not serve", serve.argv()) };
    assert_eq!(parsed.auth.auth_files, vec![PathBuf::from("/etc/tractor/auth/serve/auth.yaml")]);
}

#[test]
fn child_env_names_are_the_variables_clap_reads() {
    let cli = Cli::command();
    let mut checked = 0;
    for child in every_child() {
        let subcommand = cli
            .find_subcommand(child.subcommand)
            .unwrap_or_else(|| panic!("no subcommand {}", child.subcommand));
        for arg in &child.args {
            let long = arg
                .flag
                .strip_prefix("--")
                .unwrap_or_else(|| panic!("{} is not a long flag", arg.flag));
            let declared =
                subcommand.get_arguments().find(|a| a.get_long() == Some(long)).unwrap_or_else(
                    || panic!("{} {} is not a flag of the CLI", child.subcommand, arg.flag),
                );
            if let Some(env) = arg.env {
                assert_eq!(
                    declared.get_env(),
                    Some(OsStr::new(env)),
                    "{} {}: the controller sets {env}",
                    child.subcommand,
                    arg.flag
                );
                checked += 1;
            }
        }
    }
    // serve's twelve flags (output limits included), route's three (twice)
    // and its gRPC port all name a variable; so do the children with access
    // flags: serve's eleven without --host, its auth file and its TLS pair,
    // route's three and its eleven access flags (--backend-ca included).
    assert_eq!(checked, (12 + 3 * 2 + 1) + (11 + 1 + 2) + (3 + 11));
}

#[test]
fn jwt_limits_parse_into_the_auth_config() {
    let jwt = ["--jwks", "j.json", "--jwt-issuer", "i", "--jwt-audience", "a"];
    let argv = |extra: &[&str]| {
        let mut argv = vec!["tractor", "serve", "--model", "m.onnx"];
        argv.extend(jwt);
        argv.extend(extra);
        Cli::try_parse_from(argv)
    };
    let Command::Serve(serve) = argv(&["--jwt-rps", "5", "--jwt-quota", "100"]).unwrap().command
    else {
        panic!("not serve")
    };
    let limits = serve.auth.config().jwt_limits;
    assert_eq!(limits.rate, Some(tractor::auth::Rate { per_second: 5, burst: 5 }));
    assert_eq!(limits.quota, Some(100));
    assert!(argv(&["--jwt-rps", "0"]).is_err(), "a rate of 0 would refuse everyone");
    assert!(argv(&["--jwt-burst", "3"]).is_err(), "a burst needs a rate");
}

/// Issue 14: `tractor rollout status` without a cluster said the kubeconfig
/// reason four times, as every cause repeated its source's text.
#[test]
fn an_error_says_each_cause_once() {
    #[derive(Debug, thiserror::Error)]
    #[error("failed to infer config: kubeconfig: ({0})")]
    struct Nested(#[source] std::io::Error);
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no file /root/.kube/config");
    let error = anyhow::Error::new(Nested(io)).context("connecting to the Kubernetes API");
    assert_eq!(
        super::error_text(&error),
        "connecting to the Kubernetes API: failed to infer config: kubeconfig: (no file /root/.kube/config)"
    );
    let plain = anyhow::anyhow!("the model is gone").context("loading digits");
    assert_eq!(super::error_text(&plain), "loading digits: the model is gone");
}

/// Issue 14: every flag of every subcommand says what it does in `--help`.
#[test]
fn every_flag_has_help_text() {
    fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in command.get_arguments() {
            let builtin = matches!(arg.get_id().as_str(), "help" | "version");
            if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                missing.push(format!("{path} {}", arg.get_id()));
            }
        }
        for sub in command.get_subcommands() {
            walk(sub, &format!("{path} {}", sub.get_name()), missing);
        }
    }
    let mut missing = Vec::new();
    walk(&Cli::command(), "tractor", &mut missing);
    assert!(missing.is_empty(), "flags without help: {missing:#?}");
}

#[test]
fn registry_and_decryption_flags_parse() {
    let cli = Cli::try_parse_from([
        "tractor",
        "registry",
        "push",
        "m.onnx",
        "--name",
        "digits",
        "--version",
        "2",
        "--encrypt-to",
        "age1x",
        "--encrypt-to",
        "team.txt",
        "--store",
        "s3://b/r",
    ])
    .unwrap();
    assert!(matches!(cli.command, Command::Registry(_)));
    for bad in [
        &["tractor", "registry", "show", "digits"][..],
        &["tractor", "registry", "show", "../x@1"],
        &[
            "tractor",
            "registry",
            "push",
            "m.onnx",
            "--name",
            "d",
            "--version",
            "1",
            "--parent",
            "sha256:12",
        ],
    ] {
        assert!(Cli::try_parse_from(bad).is_err(), "{bad:?}");
    }
    let cli = Cli::try_parse_from([
        "tractor",
        "serve",
        "--model",
        "m.onnx.age",
        "--decryption-identity",
        "key.txt",
    ])
    .unwrap();
    let Command::Serve(args) = cli.command else { panic!("not serve") };
    assert_eq!(args.decryption_identity, Some(PathBuf::from("key.txt")));
}
