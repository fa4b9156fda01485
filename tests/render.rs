//! `tractor render` (issue 14): what the controller would write for a
//! ModelDeployment in a given state, run as a user runs it. The same
//! renders are validated with `kubernetes-validate --strict` in
//! `.ci/manifests.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

const TRACTOR: &str = env!("CARGO_BIN_EXE_tractor");

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The objects `tractor render ARGS` prints, parsed.
fn render(file: &Path, args: &[&str]) -> Vec<Value> {
    let out = Command::new(TRACTOR).arg("render").arg("-f").arg(file).args(args).output().unwrap();
    assert!(out.status.success(), "render failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The error `tractor render ARGS` exits with.
fn render_error(file: &Path, args: &[&str]) -> String {
    let out = Command::new(TRACTOR).arg("render").arg("-f").arg(file).args(args).output().unwrap();
    assert!(!out.status.success(), "render should fail: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {:?}", kinds(objects)))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    objects
        .iter()
        .map(|o| {
            format!("{} {}", o["kind"].as_str().unwrap(), o["metadata"]["name"].as_str().unwrap())
        })
        .collect()
}

/// The router's table, as the routes ConfigMap holds it.
fn routes(objects: &[Value], deployment: &str) -> Value {
    let cm = named(objects, "ConfigMap", &format!("{deployment}-routes"));
    let table = cm["data"].as_object().unwrap().values().next().unwrap().as_str().unwrap();
    serde_json::from_str(table).unwrap()
}

fn weights(table: &Value) -> Vec<(String, u64)> {
    table["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (b["version"].as_str().unwrap().to_string(), b["weight"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_first_deploy_renders_the_version_and_its_router() {
    let objects = render(&root().join("deploy/examples/canary.yaml"), &["-n", "models"]);
    let deployment = named(&objects, "Deployment", "digits-canary-v1");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["metadata"]["namespace"], "models");
    // A large model may load for minutes: liveness waits for the startup probe.
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let startup = &container["startupProbe"];
    assert_eq!(startup["httpGet"]["path"], "/v2/health/live", "{container:#}");
    assert_eq!(
        startup["periodSeconds"].as_i64().unwrap() * startup["failureThreshold"].as_i64().unwrap(),
        600
    );
    named(&objects, "Deployment", "digits-canary");
    named(&objects, "Secret", "digits-canary-backend-token");
    assert_eq!(weights(&routes(&objects, "digits-canary")), [("1".to_string(), 100)]);
    assert!(
        !objects.iter().any(|o| o["kind"] == "Deployment"
            && o["metadata"]["name"].as_str().unwrap().ends_with("-v2")),
        "{:?}",
        kinds(&objects)
    );
}

#[test]
fn a_canary_at_20_percent_renders_both_versions_and_the_split() {
    let file = root().join("tests/fixtures/render/rollout.yaml");
    let objects = render(&file, &["--canary", "2", "--weight", "20"]);
    named(&objects, "Deployment", "digits-v1");
    named(&objects, "Deployment", "digits-v2");
    named(&objects, "Service", "digits-v2");
    let table = routes(&objects, "digits");
    assert_eq!(weights(&table), [("1".to_string(), 80), ("2".to_string(), 20)]);
    assert_eq!(table["shadow"], "2", "minAgreement compares every step");
}

#[test]
fn a_shadow_step_renders_the_canary_at_weight_0_and_shadowed() {
    let file = root().join("tests/fixtures/render/rollout.yaml");
    for args in [&["--canary", "2"][..], &["--canary", "2", "--weight", "0"]] {
        let objects = render(&file, args);
        named(&objects, "Deployment", "digits-v2");
        let table = routes(&objects, "digits");
        assert_eq!(weights(&table), [("1".to_string(), 100), ("2".to_string(), 0)], "{args:?}");
        assert_eq!(table["shadow"], "2");
    }
}

#[test]
fn an_optimized_spec_renders_the_job_then_the_optimized_version() {
    let objects = render(&root().join("deploy/examples/optimized.yaml"), &[]);
    let job = objects.iter().find(|o| o["kind"] == "Job").expect("the optimize Job");
    let deployment = objects
        .iter()
        .find(|o| {
            o["kind"] == "Deployment"
                && o["metadata"]["labels"]["app.kubernetes.io/component"] == "serve"
        })
        .expect("the version's Deployment");
    let text = deployment.to_string();
    assert!(
        text.contains("file:///var/lib/tractor/artifacts/default/"),
        "the optimized artifact: {text}"
    );
    assert!(job["metadata"]["name"].is_string());
}

#[test]
fn autoscaling_renders_an_hpa_and_leaves_replicas_to_it() {
    let objects = render(&root().join("tests/fixtures/render/autoscaled.yaml"), &[]);
    let deployment = named(&objects, "Deployment", "digits-v1");
    assert!(deployment["spec"].get("replicas").is_none(), "{deployment:#}");
    let hpa = named(&objects, "HorizontalPodAutoscaler", "digits-v1");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "digits-v1");
    assert_eq!(
        (hpa["spec"]["minReplicas"].clone(), hpa["spec"]["maxReplicas"].clone()),
        (2.into(), 10.into())
    );
    let metrics = &hpa["spec"]["metrics"];
    assert_eq!(metrics[0]["resource"]["target"]["averageUtilization"], 70, "{metrics:#}");
    assert_eq!(metrics[1]["pods"]["metric"]["name"], "tractor_inflight_requests");
    assert_eq!(metrics[1]["pods"]["target"]["averageValue"], "16");
    let order = kinds(&objects);
    let at = |object: &str| order.iter().position(|k| k == object).unwrap();
    assert!(
        at("Deployment digits-v1") < at("HorizontalPodAutoscaler digits-v1"),
        "the HPA after its target: {order:?}"
    );

    // Without autoscaling, replicas are the controller's.
    let plain = render(&root().join("tests/fixtures/render/rollout.yaml"), &[]);
    assert_eq!(named(&plain, "Deployment", "digits-v2")["spec"]["replicas"], 2);
    assert!(!kinds(&plain).iter().any(|k| k.starts_with("HorizontalPodAutoscaler")));
}

#[test]
fn two_routers_and_versions_of_several_pods_get_disruption_budgets() {
    let objects = render(&root().join("deploy/examples/canary.yaml"), &[]);
    let router = named(&objects, "Deployment", "digits-canary");
    assert_eq!(router["spec"]["replicas"], 2, "two routers by default");
    let resources = &router["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "100m", "{resources:#}");
    assert_eq!(resources["limits"]["memory"], "512Mi", "{resources:#}");
    assert!(resources["limits"].get("cpu").is_none(), "no CPU limit on the request path");
    for (name, component) in [("digits-canary", "route"), ("digits-canary-v1", "serve")] {
        let budget = named(&objects, "PodDisruptionBudget", name);
        assert_eq!(budget["apiVersion"], "policy/v1");
        assert_eq!(budget["spec"]["maxUnavailable"], 1, "{budget:#}");
        let selector = &budget["spec"]["selector"]["matchLabels"];
        assert_eq!(selector["app.kubernetes.io/component"], component, "{budget:#}");
        let deployment = named(&objects, "Deployment", name);
        let pods = &deployment["spec"]["template"]["metadata"]["labels"];
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(&pods[key], value, "{name}: the budget selects its pods");
        }
    }
    let version = named(&objects, "Deployment", "digits-canary-v1");
    assert_eq!(version["metadata"]["annotations"]["tractor.dev/disruption-budget"], "true");

    let single = render(&root().join("tests/fixtures/render/one-router.yaml"), &[]);
    let router = named(&single, "Deployment", "digits");
    assert_eq!(router["spec"]["replicas"], 1);
    let resources = &router["spec"]["template"]["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["cpu"], "250m", "as given: {resources:#}");
    assert_eq!(resources["limits"]["memory"], "1Gi", "as given: {resources:#}");
    assert!(
        !kinds(&single).iter().any(|k| k.starts_with("PodDisruptionBudget")),
        "single pods get no budget: {:?}",
        kinds(&single)
    );
    assert!(named(&single, "Deployment", "digits-v1")["metadata"].get("annotations").is_none());

    // An autoscaled version may have more pods than one: it gets a budget.
    let scaled = render(&root().join("tests/fixtures/render/autoscaled.yaml"), &[]);
    named(&scaled, "PodDisruptionBudget", "digits-v1");
}

#[test]
fn states_that_cannot_be_rendered_say_why() {
    let file = root().join("tests/fixtures/render/rollout.yaml");
    let error = render_error(&file, &["--canary", "2", "--weight", "30"]);
    assert!(
        error.contains("no rollout step at 30%: the steps are at 0% (shadow), 20%, 50%"),
        "{error}"
    );
    let error = render_error(&file, &["--canary", "1"]);
    assert!(error.contains("the first document"), "{error}");
    let error = render_error(&file, &["--canary", "7"]);
    assert!(error.contains("no document"), "{error}");
    let error = render_error(&file, &["--weight", "20"]);
    assert!(error.contains("--canary"), "{error}");
}

/// A container's environment as name → value.
fn env_of(deployment: &Value) -> std::collections::BTreeMap<String, String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["name"].as_str().unwrap().to_string(), e["value"].as_str().unwrap_or("").into())
        })
        .collect()
}

#[test]
fn the_operators_tracing_settings_reach_the_serving_and_router_pods() {
    let file = root().join("deploy/examples/canary.yaml");
    let run = |env: &[(&str, &str)]| {
        let mut command = Command::new(TRACTOR);
        command.arg("render").arg("-f").arg(&file);
        for name in tractor::controller::objects::TRACING_PASSED_ON {
            command.env_remove(name);
        }
        command.env_remove("OTEL_SERVICE_NAME").envs(env.iter().copied());
        let out = command.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap();
        docs.into_iter().filter(|d| !d.is_null()).collect::<Vec<_>>()
    };
    let objects = run(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.observability:4318"),
        ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
        ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ("OTEL_SERVICE_NAME", "tractor-operator"),
    ]);
    for (name, service) in
        [("digits-canary-v1", "tractor-serve"), ("digits-canary", "tractor-router")]
    {
        let env = env_of(named(&objects, "Deployment", name));
        assert_eq!(env["OTEL_EXPORTER_OTLP_ENDPOINT"], "http://collector.observability:4318");
        assert_eq!(env["OTEL_TRACES_SAMPLER"], "parentbased_traceidratio");
        assert_eq!(env["OTEL_TRACES_SAMPLER_ARG"], "0.1");
        assert_eq!(env["OTEL_SERVICE_NAME"], service, "{name}: its role, not the operator's");
        assert_eq!(env["RUST_LOG"], "info,tractor::requests=debug", "{name}");
    }
    // Without an endpoint the pods' environment is what it was: no spans,
    // and the request spans' filter stays off.
    let objects = run(&[("OTEL_TRACES_SAMPLER", "always_on")]);
    for name in ["digits-canary-v1", "digits-canary"] {
        let env = env_of(named(&objects, "Deployment", name));
        assert!(env.keys().all(|k| !k.starts_with("OTEL_") && k != "RUST_LOG"), "{name}: {env:?}");
    }
}
