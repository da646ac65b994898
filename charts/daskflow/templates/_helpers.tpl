{{/* Names ----------------------------------------------------------------------------- */}}

{{- define "daskflow.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "daskflow.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "daskflow.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Common labels; include with a dict: (dict "ctx" $ "component" "operator") */}}
{{- define "daskflow.labels" -}}
helm.sh/chart: {{ include "daskflow.chart" .ctx }}
{{ include "daskflow.selectorLabels" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
app.kubernetes.io/part-of: daskflow
{{- end -}}

{{- define "daskflow.selectorLabels" -}}
app.kubernetes.io/name: {{ include "daskflow.name" .ctx }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "daskflow.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "daskflow.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "daskflow.daskKubernetes.fullname" -}}
{{- printf "%s-dask-kubernetes" (include "daskflow.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "daskflow.daskKubernetes.serviceAccountName" -}}
{{- $sa := .Values.daskKubernetes.serviceAccount -}}
{{- if $sa.create -}}
{{- default (include "daskflow.daskKubernetes.fullname" .) $sa.name -}}
{{- else -}}
{{- required "daskKubernetes.serviceAccount.name is required when daskKubernetes.serviceAccount.create is false" $sa.name -}}
{{- end -}}
{{- end -}}

{{/* Images ---------------------------------------------------------------------------- */}}

{{/* An image reference from (dict "image" .Values.image "default" $defaultTag) */}}
{{- define "daskflow.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{- define "daskflow.image" -}}
{{- include "daskflow.imageRef" (dict "image" .Values.image "default" .Chart.AppVersion) -}}
{{- end -}}

{{- define "daskflow.daskKubernetes.image" -}}
{{- $img := .Values.daskKubernetes.image -}}
{{- if $img.repository -}}
{{- include "daskflow.imageRef" (dict "image" $img "default" .Chart.AppVersion) -}}
{{- else -}}
{{- include "daskflow.image" . -}}
{{- end -}}
{{- end -}}

{{- define "daskflow.daskKubernetes.pullPolicy" -}}
{{- if .Values.daskKubernetes.image.repository -}}
{{- .Values.daskKubernetes.image.pullPolicy -}}
{{- else -}}
{{- .Values.image.pullPolicy -}}
{{- end -}}
{{- end -}}

{{/* Namespaces ------------------------------------------------------------------------ */}}

{{/* The namespaces the operator watches (namespaced installs), as a JSON list. */}}
{{- define "daskflow.watchNamespaces" -}}
{{- if .Values.rbac.clusterWide -}}
{{- if .Values.watchNamespaces -}}
{{- fail "watchNamespaces must be empty when rbac.clusterWide is true (the operator watches every namespace; list runner namespaces in runner.namespaces)" -}}
{{- end -}}
{{- list | toJson -}}
{{- else -}}
{{- default (list .Release.Namespace) .Values.watchNamespaces | uniq | toJson -}}
{{- end -}}
{{- end -}}

{{/* The namespaces that get the runner account, as a JSON list. */}}
{{- define "daskflow.runnerNamespaces" -}}
{{- $ns := concat (include "daskflow.watchNamespaces" . | fromJsonArray) .Values.runner.namespaces -}}
{{- if not $ns -}}
{{- $ns = list .Release.Namespace -}}
{{- end -}}
{{- $ns | uniq | toJson -}}
{{- end -}}

{{/* Pod bits shared by both Deployments ------------------------------------------------ */}}

{{- define "daskflow.tmpVolume" -}}
- name: tmp
  emptyDir:
    {{- with .Values.tmpSizeLimit }}
    sizeLimit: {{ . }}
    {{- end }}
{{- end -}}
