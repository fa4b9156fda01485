//! The chart and `deploy/`, rendered by the real tools: with `helm` and
//! `kubectl` at hand (`.ci/manifests.sh` puts them in
//! `~/.cache/tractor/k8s-tools/bin`, or `TRACTOR_HELM`/`TRACTOR_KUBECTL`),
//! the chart lints, both the chart and `deploy/` render, and the namespaced
//! install renders no ClusterRole. Without them each test prints why it
//! skipped (under `CI=true` it fails instead); `.ci/manifests.sh` covers
//! the same ground. The CRDs the chart and `deploy/` ship are checked
//! without tools.

use std::path::{Path, PathBuf};

use serde_json::Value;

#[path = "common/packaging.rs"]
mod packaging;
#[path = "common/skip.rs"]
mod skip;
use packaging::{allows, operator_rules, read, root};

/// The YAML files of a directory, concatenated in name order.
fn concatenated(dir: &Path) -> String {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no CRDs in {}", dir.display());
    files.iter().map(|p| read(p)).collect()
}

#[test]
fn chart_and_deploy_ship_the_generated_crds() {
    let generated = read(&root().join("crds/tractor.dev.yaml"));
    for dir in ["charts/tractor/crds", "deploy/crds"] {
        assert!(
            concatenated(&root().join(dir)) == generated,
            "{dir} differs from crds/tractor.dev.yaml; run `cp crds/tractor.dev.yaml {dir}/`"
        );
    }
    let kustomization = read(&root().join("deploy/kustomization.yaml"));
    assert!(
        kustomization.contains("crds/tractor.dev.yaml"),
        "deploy/kustomization.yaml installs the CRDs"
    );
}

/// `TRACTOR_HELM`/`TRACTOR_KUBECTL`, or what `.ci/manifests.sh` cached.
/// The tool from `env` or the cache `.ci/manifests.sh` fills. Missing, the
/// caller skips with the reason, except under `CI=true`: `.ci/run` installs
/// both tools before the tests, so a missing one there is a broken CI.
fn tool(env: &str, name: &str) -> Option<PathBuf> {
    if let Ok(path) = std::env::var(env) {
        return Some(PathBuf::from(path));
    }
    let found = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cache/tractor/k8s-tools/bin").join(name))
        .filter(|cached| cached.is_file());
    if found.is_none() {
        skip::skip_outside_ci(&format!(
            "{name} is not in ~/.cache/tractor/k8s-tools/bin and {env} is unset (bash .ci/manifests.sh installs it)"
        ));
    }
    found
}

fn run(tool: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(tool)
        .args(args)
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", tool.display()));
    assert!(
        out.status.success(),
        "{} {args:?} failed:\n{}{}",
        tool.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn chart_and_kustomization_render_when_the_tools_are_here() {
    match tool("TRACTOR_HELM", "helm") {
        None => {}
        Some(helm) => {
            run(&helm, &["lint", "--strict", "charts/tractor"]);
            let out = run(
                &helm,
                &[
                    "template",
                    "tractor",
                    "charts/tractor",
                    "--namespace",
                    "tractor-system",
                    "--include-crds",
                ],
            );
            for kind in [
                "CustomResourceDefinition",
                "Deployment",
                "ServiceAccount",
                "ClusterRole",
                "ClusterRoleBinding",
                "Role",
                "RoleBinding",
                "Service",
            ] {
                assert!(
                    out.contains(&format!("kind: {kind}\n")),
                    "helm template renders no {kind}"
                );
            }
            assert!(!out.contains("kind: ServiceMonitor"), "the ServiceMonitor is off by default");
            let on = run(
                &helm,
                &[
                    "template",
                    "tractor",
                    "charts/tractor",
                    "--set",
                    "serviceMonitor.enabled=true,replicaCount=2",
                ],
            );
            assert!(on.contains("kind: ServiceMonitor"), "serviceMonitor.enabled renders one");
            assert!(
                on.contains("name: TRACTOR_LEADER_ELECTION\n              value: \"true\""),
                "two replicas elect a leader"
            );
        }
    }
    match tool("TRACTOR_KUBECTL", "kubectl") {
        None => {}
        Some(kubectl) => {
            let out = run(&kubectl, &["kustomize", "deploy/"]);
            assert!(
                out.contains("kind: CustomResourceDefinition") && out.contains("kind: Deployment"),
                "{out}"
            );
            assert!(out.contains("namespace: tractor-system"), "{out}");
        }
    }
}

/// The documents of a multi-document YAML text.
fn documents(text: &str) -> Vec<Value> {
    text.split("\n---")
        .filter_map(|doc| serde_saphyr::from_str::<Value>(doc).ok())
        .filter(|doc| doc.is_object())
        .collect()
}

/// `rbac.namespaced`: a Role and RoleBinding in each watched namespace
/// with the ClusterRole's rules, no cluster-wide object but the CRDs, and
/// the controller told to watch those namespaces only. The allow-list of
/// images reaches the controller as `TRACTOR_ALLOWED_IMAGES`.
#[test]
fn the_namespaced_install_has_no_cluster_role_when_helm_is_here() {
    let Some(helm) = tool("TRACTOR_HELM", "helm") else {
        return;
    };
    let values = "rbac.namespaced=true,watchNamespaces={models,team-b},allowedImages={registry.example.com/ml/}";
    let out = run(
        &helm,
        &[
            "template",
            "tractor",
            "charts/tractor",
            "--namespace",
            "tractor-system",
            "--set",
            values,
        ],
    );
    let docs = documents(&out);
    assert!(!docs.is_empty(), "{out}");
    for doc in &docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        assert!(!kind.starts_with("Cluster"), "a namespaced install renders a {kind}");
    }
    let cluster_rules = serde_json::to_value(operator_rules()).unwrap();
    for namespace in ["models", "team-b"] {
        let role = docs
            .iter()
            .find(|d| d["kind"] == "Role" && d["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| panic!("no Role in {namespace}"));
        assert_eq!(role["rules"], cluster_rules, "{namespace}: the ClusterRole's rules");
        let rules: Vec<k8s_openapi::api::rbac::v1::PolicyRule> =
            serde_json::from_value(role["rules"].clone()).unwrap();
        assert!(allows(&rules, "", "secrets", "create"), "{namespace}: the router's token");
        for verb in ["get", "list", "watch"] {
            assert!(!allows(&rules, "", "secrets", verb), "{namespace}: {verb} on Secrets");
        }
        let binding = docs
            .iter()
            .find(|d| d["kind"] == "RoleBinding" && d["metadata"]["namespace"] == namespace)
            .unwrap_or_else(|| panic!("no RoleBinding in {namespace}"));
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["namespace"], "tractor-system");
    }
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("the operator");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let value = |name: &str| {
        env.as_array().into_iter().flatten().find(|e| e["name"] == name).map(|e| e["value"].clone())
    };
    assert_eq!(value("TRACTOR_WATCH_NAMESPACES"), Some(Value::from("models,team-b")));
    assert_eq!(value("TRACTOR_ALLOWED_IMAGES"), Some(Value::from("registry.example.com/ml/")));

    // Namespaced without namespaces is refused with the reason.
    let refused = std::process::Command::new(&helm)
        .args(["template", "tractor", "charts/tractor", "--set", "rbac.namespaced=true"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("needs watchNamespaces"));

    // The default install watches everything and allows no other image.
    let out = run(&helm, &["template", "tractor", "charts/tractor"]);
    assert!(!out.contains("TRACTOR_WATCH_NAMESPACES") && !out.contains("TRACTOR_ALLOWED_IMAGES"));
}
