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
            assert!(!out.contains("OTEL_"), "no traces by default");
            let on = run(
                &helm,
                &[
                    "template",
                    "tractor",
                    "charts/tractor",
                    "--set",
                    "serviceMonitor.enabled=true,replicaCount=2,\
                     tracing.otlpEndpoint=http://collector:4318,tracing.samplerArg=0.25",
                ],
            );
            // The operator reads them once and passes them on to its pods
            // (tests/render.rs checks that side).
            for (name, value) in [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
            ] {
                assert!(
                    on.contains(&format!("name: {name}\n              value: \"{value}\"")),
                    "tracing.* sets {name} on the operator: {on}"
                );
            }
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

/// Every variable the chart sets on the operator's container is one that
/// `tractor controller` reads (its flags' `[env: ...]`, or the few read
/// directly), so a value renamed on one side cannot silently do nothing.
#[test]
fn the_chart_sets_only_variables_the_controller_reads_when_helm_is_here() {
    let Some(helm) = tool("TRACTOR_HELM", "helm") else { return };
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_tractor"))
        .args(["controller", "--help"])
        .output()
        .unwrap();
    // Whitespace joined, in case the help wraps inside a bracket.
    let help =
        String::from_utf8_lossy(&help.stdout).split_whitespace().collect::<Vec<_>>().join(" ");
    let values = "allowedImages[0]=r.example.com/,allowedJwksUrls[0]=https://idp.example.com/,\
                  storeCredentials.secretName=creds,tracing.otlpEndpoint=http://c:4318,\
                  tracing.sampler=traceidratio,tracing.samplerArg=0.1";
    let docs = documents(&run(&helm, &["template", "tractor", "charts/tractor", "--set", values]));
    let deployment = docs.iter().find(|d| d["kind"] == "Deployment").expect("the operator");
    let env = &deployment["spec"]["template"]["spec"]["containers"][0]["env"];
    let names: Vec<&str> =
        env.as_array().into_iter().flatten().filter_map(|e| e["name"].as_str()).collect();
    assert!(names.contains(&"TRACTOR_MAX_CONCURRENT_RECONCILES"), "{names:?}");
    // Read by the process itself, not by a flag: the log settings and the
    // OpenTelemetry SDK's own variables.
    let read_directly = ["RUST_LOG", "TRACTOR_LOG_FORMAT"];
    let names: Vec<&str> = names.into_iter().filter(|n| !n.starts_with("OTEL_")).collect();
    for name in names.iter().filter(|n| !read_directly.contains(n)) {
        assert!(
            help.contains(&format!("[env: {name}=")),
            "the chart sets {name}; no flag reads it"
        );
    }
    let value = |name: &str| {
        env.as_array().into_iter().flatten().find(|e| e["name"] == name).map(|e| e["value"].clone())
    };
    assert_eq!(value("TRACTOR_MAX_CONCURRENT_RECONCILES"), Some(Value::from("16")));
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

// --- dashboards and scraping (issue 14) ---------------------------------------

/// The dashboard the chart ships, as a file.
const DASHBOARD: &str = "charts/tractor/dashboards/tractor.json";

/// Labels a series gets from its scrape, not from the code: Prometheus
/// (`job`, `instance`), the Prometheus Operator (`namespace`, `pod`,
/// `container`, `endpoint`, `service`), and the chart's PodMonitors
/// (`deployment`, checked against them below).
const TARGET_LABELS: &[&str] =
    &["job", "instance", "namespace", "pod", "container", "endpoint", "service", "deployment"];

/// The label the PodMonitors copy `tractor.dev/deployment` into.
const DEPLOYMENT_TARGET_LABEL: &str = "deployment";

/// Every metric `src/` registers: a `"tractor_…"` literal followed by its
/// help text (`Opts::new(name, help)`, `HistogramOpts::new(name, help)` and
/// the helpers wrapping them), with the text of the file that registers it
/// (its label names are literals there) and whether it is a histogram.
struct Registered {
    files: std::collections::BTreeMap<String, String>,
    histograms: std::collections::BTreeSet<String>,
}

fn registered_metrics() -> Registered {
    let name = regex::Regex::new(r#""(tractor_[a-z0-9_]+)",\s*""#).unwrap();
    let histogram =
        regex::Regex::new(r#"(?:HistogramOpts::new|hist)\(\s*"(tractor_[a-z0-9_]+)""#).unwrap();
    let mut found = Registered { files: Default::default(), histograms: Default::default() };
    let mut dirs = vec![root().join("src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = read(&path);
                for c in name.captures_iter(&text) {
                    found.files.insert(c[1].to_string(), text.clone());
                }
                found.histograms.extend(histogram.captures_iter(&text).map(|c| c[1].to_string()));
            }
        }
    }
    found
}

impl Registered {
    /// The registered metric a series name belongs to (a histogram's
    /// `_bucket`, `_sum` and `_count` belong to it), if any.
    fn metric_of<'a>(&self, series: &'a str) -> Option<&'a str> {
        if self.files.contains_key(series) {
            return Some(series);
        }
        ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|suffix| series.strip_suffix(suffix))
            .find(|base| self.histograms.contains(*base))
    }

    /// Whether a series of `metric` can carry `label`: one the scrape adds,
    /// `le` on a histogram's buckets, or a literal in the registering file.
    fn has_label(&self, series: &str, label: &str) -> bool {
        let Some(metric) = self.metric_of(series) else { return false };
        TARGET_LABELS.contains(&label)
            || (label == "le" && series.ends_with("_bucket"))
            || self.files[metric].contains(&format!("\"{label}\""))
    }
}

/// The PromQL of a dashboard: each target's `expr` and each query
/// variable's `definition`, with where it is.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("every target has a PromQL expr");
            out.push((format!("panel {:?}", panel["title"]), expr.to_string()));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if var["type"] == "query" {
            let query = var["definition"].as_str().expect("a query variable's definition");
            assert_eq!(var["query"]["query"].as_str(), Some(query), "variable {}", var["name"]);
            out.push((format!("variable {}", var["name"]), query.to_string()));
        }
    }
    out
}

/// Every metric and label the dashboard's PromQL names is one the code
/// registers (or the scrape adds), every quantile is taken over a
/// histogram's buckets grouped by `le`, every `$variable` is defined, and
/// every panel queries the `${datasource}` variable. A renamed metric or a
/// dropped label fails here. Needs no tool.
#[test]
fn the_dashboard_queries_only_what_the_code_exports() {
    let dashboard: Value = serde_json::from_str(&read(&root().join(DASHBOARD)))
        .unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let registered = registered_metrics();
    assert!(
        registered.files.contains_key("tractor_requests_total"),
        "the scan finds serve's metrics"
    );
    let series = regex::Regex::new(r"tractor_[a-z0-9_]+").unwrap();
    let selector = regex::Regex::new(r"(tractor_[a-z0-9_]+)\{([^}]*)\}").unwrap();
    let matcher = regex::Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)").unwrap();
    let grouping = regex::Regex::new(r"\b(?:by|on|without|ignoring)\s*\(([^)]*)\)").unwrap();
    let variable = regex::Regex::new(r"\$\{?([a-zA-Z_][a-zA-Z0-9_]*)").unwrap();
    let defined: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let mut wrong = Vec::new();
    let mut used = std::collections::BTreeSet::new();
    for (place, expr) in queries(&dashboard) {
        let names: Vec<&str> = series.find_iter(&expr).map(|m| m.as_str()).collect();
        assert!(!names.is_empty(), "{place}: no tractor_ metric in {expr}");
        for name in &names {
            match registered.metric_of(name) {
                Some(metric) => {
                    used.insert(metric.to_string());
                }
                None => wrong.push(format!("{place}: {name} is registered nowhere in src/")),
            }
        }
        for c in selector.captures_iter(&expr) {
            for m in matcher.captures_iter(&c[2]) {
                if !registered.has_label(&c[1], &m[1]) {
                    wrong.push(format!("{place}: {} has no label {}", &c[1], &m[1]));
                }
            }
        }
        for c in grouping.captures_iter(&expr) {
            for label in c[1].split(',').map(str::trim).filter(|l| !l.is_empty()) {
                for name in &names {
                    if !registered.has_label(name, label) {
                        wrong.push(format!("{place}: groups {name} by {label}, which it lacks"));
                    }
                }
            }
        }
        if expr.contains("histogram_quantile") {
            let by_le =
                grouping.captures_iter(&expr).any(|c| c[1].split(',').any(|l| l.trim() == "le"));
            if !by_le || names.iter().any(|n| !n.ends_with("_bucket")) {
                wrong.push(format!("{place}: a quantile over anything but buckets by le: {expr}"));
            }
        }
        for c in variable.captures_iter(&expr) {
            if !c[1].starts_with("__") && !defined.contains(&&c[1]) {
                wrong.push(format!("{place}: ${} is no dashboard variable", &c[1]));
            }
        }
    }
    assert!(wrong.is_empty(), "{DASHBOARD}:\n{}", wrong.join("\n"));
    for expected in ["tractor_requests_total", "tractor_route_requests_total", "tractor_batch_size"]
    {
        assert!(used.contains(expected), "the dashboard shows {expected}");
    }

    let datasource = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("a datasource variable");
    assert_eq!(
        (&datasource["type"], &datasource["query"]),
        (&"datasource".into(), &"prometheus".into())
    );
    let mut ids = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = &panel["title"];
        assert!(ids.insert(panel["id"].as_u64().expect("a numeric id")), "{title}: a duplicate id");
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{title}: too wide"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{title}");
        }
    }
}

/// A pod template `tractor render` prints: its Deployment's name, its
/// labels, and its containers' named ports (name, number).
struct RenderedPod {
    name: String,
    labels: serde_json::Map<String, Value>,
    ports: Vec<(String, i64)>,
}

/// The pods `tractor render` says the controller runs for a canary at 20%:
/// two serving versions and the router.
fn rendered_pods() -> Vec<RenderedPod> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tractor"))
        .args(["render", "-n", "models", "-f", "tests/fixtures/render/rollout.yaml"])
        .args(["--canary", "2", "--weight", "20"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(out.status.success(), "tractor render: {}", String::from_utf8_lossy(&out.stderr));
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    let pods: Vec<_> = docs
        .iter()
        .filter(|d| d["kind"] == "Deployment")
        .map(|d| {
            let template = &d["spec"]["template"];
            let ports = template["spec"]["containers"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                .filter_map(|p| {
                    Some((p["name"].as_str()?.to_string(), p["containerPort"].as_i64()?))
                })
                .collect();
            let labels = template["metadata"]["labels"].as_object().unwrap().clone();
            RenderedPod { name: d["metadata"]["name"].as_str().unwrap().to_string(), labels, ports }
        })
        .collect();
    assert_eq!(pods.len(), 3, "two versions and a router: {docs:?}");
    pods
}

/// `podMonitor.enabled` and `grafanaDashboard.enabled`: off by default;
/// on, a dashboard ConfigMap with the sidecar's label holding the file as
/// it is, and PodMonitors that select exactly the serving pods and the
/// router pods the controller writes (compared with `tractor render`), on
/// ports those pods name: serve's on its HTTP port, the router's on its
/// admin port, where each serves `/metrics`.
#[test]
fn dashboards_and_pod_monitors_render_when_helm_is_here() {
    use tractor::controller::objects::{DEPLOYMENT_LABEL, ROUTE_ADMIN_PORT, SERVE_PORT};
    let Some(helm) = tool("TRACTOR_HELM", "helm") else {
        return;
    };
    let template = |set: &str| {
        let args = ["template", "tractor", "charts/tractor", "--namespace", "tractor-system"];
        let mut args = args.to_vec();
        if !set.is_empty() {
            args.extend(["--set", set]);
        }
        documents(&run(&helm, &args))
    };
    for doc in template("") {
        assert!(doc["kind"] != "PodMonitor" && doc["kind"] != "ConfigMap", "on by default: {doc}");
    }
    let refused = std::process::Command::new(&helm)
        .args(["template", "tractor", "charts/tractor", "--set", "podMonitor.enabled=true"])
        .current_dir(root())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "serving pods' /metrics needs a token");
    assert!(
        String::from_utf8_lossy(&refused.stderr)
            .contains("podMonitor.serve needs authorization.secretName")
    );

    let on = "podMonitor.enabled=true,podMonitor.serve.authorization.secretName=tractor-prometheus,\
              podMonitor.labels.release=prometheus,grafanaDashboard.enabled=true";
    run(&helm, &["lint", "--strict", "charts/tractor", "--set", on]);
    let docs = template(on);

    // The dashboard: the sidecar's default label, the release namespace,
    // the file byte for byte.
    let maps: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "ConfigMap").collect();
    assert_eq!(maps.len(), 1, "one dashboard ConfigMap");
    assert_eq!(maps[0]["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(maps[0]["metadata"]["namespace"], "tractor-system");
    let shipped = maps[0]["data"]["tractor.json"].as_str().expect("data.tractor.json");
    let shipped: Value = serde_json::from_str(shipped).expect("the shipped dashboard is JSON");
    assert!(!shipped["panels"].as_array().unwrap().is_empty(), "panels");
    assert_eq!(shipped, serde_json::from_str::<Value>(&read(&root().join(DASHBOARD))).unwrap());
    let custom = template(
        "grafanaDashboard.enabled=true,grafanaDashboard.namespace=monitoring,\
         grafanaDashboard.label=dashboards,grafanaDashboard.labelValue=tractor",
    );
    let map = custom.iter().find(|d| d["kind"] == "ConfigMap").unwrap();
    assert_eq!(map["metadata"]["namespace"], "monitoring");
    assert_eq!(map["metadata"]["labels"]["dashboards"], "tractor");

    // The PodMonitors against the pods the controller writes.
    let pods = rendered_pods();
    let monitors: Vec<&Value> = docs.iter().filter(|d| d["kind"] == "PodMonitor").collect();
    assert_eq!(monitors.len(), 2, "one for serving pods, one for routers");
    let meta_label = format!(
        "__meta_kubernetes_pod_label_{}",
        DEPLOYMENT_LABEL.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    for (monitor, component, port, number) in [
        ("tractor-serve", "serve", "http", SERVE_PORT),
        ("tractor-router", "route", "admin", ROUTE_ADMIN_PORT),
    ] {
        let m = monitors.iter().find(|m| m["metadata"]["name"] == monitor).expect(monitor);
        assert_eq!(m["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(m["metadata"]["namespace"], "tractor-system");
        assert_eq!(m["metadata"]["labels"]["release"], "prometheus", "podMonitor.labels");
        assert_eq!(m["spec"]["namespaceSelector"], serde_json::json!({"any": true}));
        let wanted = m["spec"]["selector"]["matchLabels"].as_object().expect("matchLabels");
        let selected: Vec<_> = pods
            .iter()
            .filter(|p| wanted.iter().all(|(k, v)| p.labels.get(k) == Some(v)))
            .collect();
        let of_component: Vec<_> =
            pods.iter().filter(|p| p.labels["app.kubernetes.io/component"] == component).collect();
        assert!(!selected.is_empty(), "{monitor} selects no pod the controller writes");
        assert_eq!(
            selected.iter().map(|p| &p.name).collect::<Vec<_>>(),
            of_component.iter().map(|p| &p.name).collect::<Vec<_>>(),
            "{monitor} selects exactly the {component} pods"
        );
        let endpoints = m["spec"]["podMetricsEndpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1);
        let endpoint = &endpoints[0];
        assert_eq!((&endpoint["port"], &endpoint["path"]), (&port.into(), &"/metrics".into()));
        for RenderedPod { name, labels, ports } in &selected {
            assert!(
                ports.contains(&(port.to_string(), i64::from(number))),
                "{name}: no port {port} = {number}"
            );
            assert!(labels.contains_key(DEPLOYMENT_LABEL), "{name}: no {DEPLOYMENT_LABEL}");
        }
        let relabel = &endpoint["relabelings"][0];
        assert_eq!(relabel["sourceLabels"], serde_json::json!([meta_label]), "{monitor}");
        assert_eq!(relabel["targetLabel"], DEPLOYMENT_TARGET_LABEL, "the dashboard's label");
    }
    let serve = monitors.iter().find(|m| m["metadata"]["name"] == "tractor-serve").unwrap();
    let auth = &serve["spec"]["podMetricsEndpoints"][0]["authorization"];
    assert_eq!(auth["type"], "Bearer");
    assert_eq!(
        auth["credentials"],
        serde_json::json!({"name": "tractor-prometheus", "key": "token"})
    );
    let router = monitors.iter().find(|m| m["metadata"]["name"] == "tractor-router").unwrap();
    assert!(router["spec"]["podMetricsEndpoints"][0]["authorization"].is_null(), "open by default");
}
