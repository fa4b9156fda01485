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
