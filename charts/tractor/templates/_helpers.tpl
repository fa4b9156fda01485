{{/* The base name of every object: the release name, or "<release>-tractor". */}}
{{- define "tractor.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 52 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 52 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* The operator's Deployment, ServiceAccount and RBAC objects. */}}
{{- define "tractor.controllerName" -}}
{{- printf "%s-controller" (include "tractor.fullname" .) -}}
{{- end -}}

{{/* Labels that select the operator's pods; never change after install. */}}
{{- define "tractor.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: controller
{{- end -}}

{{- define "tractor.labels" -}}
{{ include "tractor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "tractor.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{/* Leader election is on with more than one replica, whatever the value says. */}}
{{- define "tractor.leaderElection" -}}
{{- if or .Values.leaderElection (gt (int .Values.replicaCount) 1) -}}true{{- else -}}false{{- end -}}
{{- end -}}

{{/*
What the controller does in a namespace that holds ModelDeployments: exactly
the API calls of src/controller (tests/manifests.rs checks both ways).
charts/tractor/README.md justifies each rule.
*/}}
{{- define "tractor.rules" -}}
- apiGroups: ["tractor.dev"]
  resources: ["modeldeployments"]
  verbs: ["list", "watch", "patch"]
- apiGroups: ["tractor.dev"]
  resources: ["modeldeployments/status"]
  verbs: ["patch"]
- apiGroups: ["tractor.dev"]
  resources: ["modelversions"]
  verbs: ["list", "create"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "patch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "patch"]
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["create"]
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["create", "patch"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["create", "patch", "delete"]
{{- end -}}

{{/* The namespaces a namespaced install grants and watches; refuses an empty list. */}}
{{- define "tractor.watchNamespaces" -}}
{{- if and .Values.rbac.namespaced (not .Values.watchNamespaces) -}}
{{- fail "rbac.namespaced needs watchNamespaces: the namespaces the operator may act in" -}}
{{- end -}}
{{- join "," .Values.watchNamespaces -}}
{{- end -}}
