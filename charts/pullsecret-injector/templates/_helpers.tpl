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

{{/* Prefix an image repository with global.imageRegistry. Input: dict root repo. */}}
{{- define "psi.withRegistry" -}}
{{- $reg := (.root.Values.global | default dict).imageRegistry | default "" }}
{{- if $reg }}
{{- printf "%s/%s" (trimSuffix "/" $reg) .repo }}
{{- else }}
{{- .repo }}
{{- end }}
{{- end }}

{{/* The injector's image. There is no published image: fail with how to build one. */}}
{{- define "psi.image" -}}
{{- if not .Values.image.repository }}
{{- fail "image.repository is not set, and no pullsecret-injector image is published. Build one from the repository's Dockerfile and push it to a registry your nodes can pull from:\n  docker build -t REGISTRY/pullsecret-injector:TAG . && docker push REGISTRY/pullsecret-injector:TAG\nthen install with --set image.repository=REGISTRY/pullsecret-injector --set image.tag=TAG (or image.digest=sha256:...)." }}
{{- end }}
{{- $repo := include "psi.withRegistry" (dict "root" . "repo" .Values.image.repository) }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" $repo .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" $repo (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The helm-test image (kubectl and sh). */}}
{{- define "psi.testImage" -}}
{{- $repo := include "psi.withRegistry" (dict "root" . "repo" .Values.tests.image.repository) }}
{{- printf "%s:%s" $repo .Values.tests.image.tag }}
{{- end }}

{{/*
A --listen / --metrics-listen address: ":PORT" (every IPv4 and IPv6 address)
when host is empty, "[IPv6]:PORT", or "HOST:PORT". Input: dict host port.
*/}}
{{- define "psi.listenAddr" -}}
{{- if not .host }}
{{- printf ":%d" (int .port) }}
{{- else if contains ":" .host }}
{{- printf "[%s]:%d" .host (int .port) }}
{{- else }}
{{- printf "%s:%d" .host (int .port) }}
{{- end }}
{{- end }}

{{/* terminationGracePeriodSeconds: given (and checked), or delay + drain + 5. */}}
{{- define "psi.terminationGrace" -}}
{{- $need := add (int .Values.shutdownDelaySeconds) (int .Values.drainTimeoutSeconds) }}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add $need 5 }}
{{- else if le (int .Values.terminationGracePeriodSeconds) (int $need) }}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed shutdownDelaySeconds + drainTimeoutSeconds (%d + %d = %d), or the kubelet kills the server while it drains: raise it (e.g. to %d) or leave it null to derive it" (int .Values.terminationGracePeriodSeconds) (int .Values.shutdownDelaySeconds) (int .Values.drainTimeoutSeconds) (int $need) (add $need 5)) }}
{{- else }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/* Name of the Secret holding the serving certificate (tls.crt, tls.key). */}}
{{- define "psi.tlsSecretName" -}}
{{- if eq .Values.certs.mode "secret" }}
{{- required "certs.secret.name is required when certs.mode=secret" .Values.certs.secret.name }}
{{- else if eq .Values.certs.mode "self" }}
{{- /* Not <fullname>-tls: a Secret left by certs.mode=helm would not be ours. */}}
{{- printf "%s-managed-tls" (include "psi.fullname" .) }}
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
{{/*
The ServiceAccounts whose tokens credential providers get
(registries[].source.credentialProvider.serviceAccountToken.name), sorted and
unique, as a JSON list; [] when none.
*/}}
{{- define "psi.tokenServiceAccounts" -}}
{{- $names := list }}
{{- range .Values.registries }}
{{- with (((.source | default dict).credentialProvider | default dict).serviceAccountToken) }}
{{- $names = append $names .name }}
{{- end }}
{{- end }}
{{- $names | uniq | sortAlpha | toJson }}
{{- end }}

{{- define "psi.needsServiceAccountPatch" -}}
{{- $need := false }}
{{- range .Values.registries }}
{{- if .serviceAccounts }}{{ $need = true }}{{ end }}
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

{{/*
Built-in CEL matchCondition of both webhooks (always rendered, whatever
webhook.matchConditions / validatingWebhook.matchConditions say): an UPDATE
whose containers, initContainers and ephemeralContainers all keep their images
(same list, same order) is not sent. The server only ever judges images that
are new compared with oldObject (and on pods/ephemeralcontainers only the new
ephemeral containers), so for such an UPDATE it would answer "allowed, no
patch" anyway; skipping it means a webhook outage cannot block label or
finalizer patches, status-free metadata edits, or Pods stuck Terminating.
CREATE always matches, and a pods/ephemeralcontainers UPDATE that adds a
container changes the ephemeralContainers list, so it always matches too.
The optional lists are read through has(). `image` is required in every
container: an UPDATE lacking one (only possible before validation, on the
mutating webhook's ephemeralcontainers path) is an evaluation error, handled
by the failurePolicy, and is refused by validation anyway.

Upstream rules (https://kubernetes.io/docs/reference/access-authn-authz/extensible-admission-controllers/#matching-requests-matchconditions):
at most 64 matchConditions per webhook, each expression must compile and
evaluate to bool (API server >= 1.30, where matchConditions are GA; the
chart's kubeVersion), and an evaluation error applies the failurePolicy.
*/}}
{{- define "psi.builtinMatchConditions" -}}
- name: skip-updates-without-new-images
  expression: >-
    request.operation != 'UPDATE' ||
    object.spec.containers.map(c, c.image) !=
    oldObject.spec.containers.map(c, c.image) ||
    (has(object.spec.initContainers) ? object.spec.initContainers.map(c, c.image) : []) !=
    (has(oldObject.spec.initContainers) ? oldObject.spec.initContainers.map(c, c.image) : []) ||
    (has(object.spec.ephemeralContainers) ? object.spec.ephemeralContainers.map(c, c.image) : []) !=
    (has(oldObject.spec.ephemeralContainers) ? oldObject.spec.ephemeralContainers.map(c, c.image) : [])
{{- end }}

{{/*
All matchConditions of one webhook: the built-in ones, then the defaults
(value null) or the user's list. Input: the value (null or list).
*/}}
{{- define "psi.matchConditions" -}}
{{- include "psi.builtinMatchConditions" . }}
{{- if kindIs "invalid" .user }}
{{ include "psi.defaultMatchConditions" . }}
{{- else if .user }}
{{ toYaml .user }}
{{- end }}
{{- end }}

{{/*
The TLS Secret of certs.mode=helm as it exists in the cluster (JSON; "{}"
when absent, and always under `helm template` / --dry-run, where lookup
returns nothing). tests/chart/check.py replaces this one definition in a
temporary copy of the chart to exercise the reuse and rotation paths offline.
*/}}
{{- define "psi.existingTLSSecret" -}}
{{- lookup "v1" "Secret" .Release.Namespace (include "psi.tlsSecretName" .) | default dict | toJson }}
{{- end }}
