{{/* Chart name. */}}
{{- define "psi.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name (also the Service name). */}}
{{- define "psi.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "psi.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "psi.selectorLabels" -}}
app.kubernetes.io/name: {{ include "psi.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "psi.labels" -}}
helm.sh/chart: {{ include "psi.chart" . }}
{{ include "psi.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "psi.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "psi.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "psi.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the serving certificate (tls.crt, tls.key). */}}
{{- define "psi.tlsSecretName" -}}
{{- if eq .Values.certs.mode "secret" }}
{{- required "certs.secret.name is required when certs.mode=secret" .Values.certs.secret.name }}
{{- else }}
{{- printf "%s-tls" (include "psi.fullname" .) }}
{{- end }}
{{- end }}

{{/* Name of the cert-manager Certificate for the serving cert. */}}
{{- define "psi.certificateName" -}}
{{- printf "%s-serving" (include "psi.fullname" .) }}
{{- end }}

{{/* DNS names the serving certificate must carry. */}}
{{- define "psi.dnsNames" -}}
{{- $svc := include "psi.fullname" . }}
{{- $ns := .Release.Namespace }}
{{- list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) (printf "%s.%s.svc.cluster.local" $svc $ns) | toJson }}
{{- end }}

{{/* The server's config file (config.yaml), rendered from values. */}}
{{- define "psi.config" -}}
{{- $cfg := dict "registries" (.Values.registries | default list) "namespaces" (.Values.namespaces | default dict) "alwaysPullImages" .Values.alwaysPullImages "injectOnlyIfPresent" .Values.injectOnlyIfPresent "repairStuckPods" .Values.repairStuckPods }}
{{- if .Values.policy }}
{{- $_ := set $cfg "policy" .Values.policy }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* True ("true") when some registry lists serviceAccounts. */}}
{{- define "psi.needsServiceAccountPatch" -}}
{{- $need := false }}
{{- range .Values.registries }}
{{- if .serviceAccounts }}{{ $need = true }}{{ end }}
{{- end }}
{{- if $need }}true{{ end }}
{{- end }}

{{/* True ("true") when some registry uses a namespace label selector. */}}
{{- define "psi.needsNamespaceRead" -}}
{{- $need := .Values.sync.enabled }}
{{- range .Values.registries }}
{{- if and .namespaces .namespaces.selector }}{{ $need = true }}{{ end }}
{{- end }}
{{- if $need }}true{{ end }}
{{- end }}

{{/*
Exact namespace names (no glob characters) from a list; used to extend the
webhook namespaceSelector. Input: list. Output: JSON list.
*/}}
{{- define "psi.exactNames" -}}
{{- $out := list }}
{{- range . }}
{{- if and (not (contains "*" .)) (not (contains "?" .)) (not (contains "[" .)) }}
{{- $out = append $out . }}
{{- end }}
{{- end }}
{{- toJson $out }}
{{- end }}

{{/* Default CEL matchConditions shared by both webhooks. */}}
{{- define "psi.defaultMatchConditions" -}}
- name: exclude-mirror-pods
  expression: "!has(object.metadata.annotations) || !('kubernetes.io/config.mirror' in object.metadata.annotations)"
- name: exclude-node-users
  expression: "!request.userInfo.username.startsWith('system:node:')"
{{- end }}
