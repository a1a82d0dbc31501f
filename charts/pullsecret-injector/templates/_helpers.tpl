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
{{- if .Values.audit.enabled }}
{{- $_ := set $cfg "audit" (dict "enabled" true "maxResultsPerReport" (int .Values.audit.maxResultsPerReport)) }}
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

{{/*
mode=admissionPolicy ("true"): the API server runs the policies of
admissionPolicies.manifest; no webhook configuration, no certificate.
*/}}
{{- define "psi.policyMode" -}}
{{- if eq .Values.mode "admissionPolicy" }}true{{ end }}
{{- end }}

{{/*
"true" when the sync controller has something to do: it runs (cluster access,
sync.enabled) and some registry has a `source` to copy or `serviceAccounts`
to patch, or repairStuckPods or audit.enabled is on. In mode=admissionPolicy
that is the only reason to run our process at all.
*/}}
{{- define "psi.controllerHasWork" -}}
{{- $work := or .Values.repairStuckPods .Values.audit.enabled }}
{{- range .Values.registries }}{{ if or .source .serviceAccounts }}{{ $work = true }}{{ end }}{{ end }}
{{- if and .Values.clusterAccess .Values.sync.enabled $work }}true{{ end }}
{{- end }}

{{/*
"true" when the Deployment (and the ServiceAccount, RBAC and ConfigMap it
needs) is rendered: always with webhooks, only for the controller's work with
admission policies.
*/}}
{{- define "psi.runsDeployment" -}}
{{- if or (not (include "psi.policyMode" .)) (include "psi.controllerHasWork" .) }}true{{ end }}
{{- end }}

{{/* "true" when the server manages its own certificates (certs.mode=self, webhooks only). */}}
{{- define "psi.managedCerts" -}}
{{- if and (eq .Values.certs.mode "self") (not (include "psi.policyMode" .)) }}true{{ end }}
{{- end }}

{{/*
Namespace names the mutating side never sees (JSON list): the release
namespace, kube-system, cert-manager's in certManager mode, the exact names of
namespaces.exclude and webhook.excludeNamespaces. The MutatingWebhookConfiguration
and, in mode=admissionPolicy, the mutating policy's bindings use it.
*/}}
{{- define "psi.alwaysExcluded" -}}
{{- $always := list .Release.Namespace "kube-system" }}
{{- if and (eq .Values.certs.mode "certManager") (not (include "psi.policyMode" .)) }}
{{- /* cert-manager must always be able to start and inject our CA. */}}
{{- $always = append $always .Values.certs.certManager.namespace }}
{{- end }}
{{- toJson $always }}
{{- end }}

{{- define "psi.mutatingExcluded" -}}
{{- $cfgExcl := include "psi.exactNames" ((.Values.namespaces | default dict).exclude | default list) | fromJsonArray }}
{{- concat (include "psi.alwaysExcluded" . | fromJsonArray) $cfgExcl (.Values.webhook.excludeNamespaces | default list) | uniq | toJson }}
{{- end }}

{{/* The same for the validating side: exact policy.exemptNamespaces and validatingWebhook.excludeNamespaces. */}}
{{- define "psi.validatingExcluded" -}}
{{- $exempt := include "psi.exactNames" ((.Values.policy | default dict).exemptNamespaces | default list) | fromJsonArray }}
{{- concat (include "psi.alwaysExcluded" . | fromJsonArray) $exempt (.Values.validatingWebhook.excludeNamespaces | default list) | uniq | toJson }}
{{- end }}

{{/*
mode=admissionPolicy: the objects of admissionPolicies.manifest, checked and
ready to render (JSON list). Helm cannot compile the config into CEL, so the
manifest must come from `pullsecret-injector export-policies`; this refuses
anything else, and a manifest exported from other registries or without the
policy these values set. Each binding gets the namespace scope (and, on the
mutating side, the opt-out label and webhook.objectSelector) that the webhook
configurations have in mode=webhook, so switching modes does not change which
Pods are touched. The objects keep their own labels (managed-by
pullsecret-injector) and gain the release's.
*/}}
{{- define "psi.admissionPolicyObjects" -}}
{{- $how := "Helm cannot compile the config into CEL: export the policies from the same values files with our binary and pass them in, e.g.\n  helm upgrade --install ... -f my-values.yaml --set mode=admissionPolicy --set-file admissionPolicies.manifest=<(pullsecret-injector export-policies --values my-values.yaml)\n(export-policies prints YAML documents, or a JSON List with -o json; either is accepted)." }}
{{- $text := (.Values.admissionPolicies | default dict).manifest | default "" }}
{{- if not (trim $text) }}
{{- fail (printf "mode=admissionPolicy needs admissionPolicies.manifest, which is empty. %s" $how) }}
{{- end }}
{{- $docs := list }}
{{- range $i, $part := regexSplit "(?m)^---[ \\t]*$" $text -1 }}
{{- if trim $part }}
{{- $doc := fromYaml $part }}
{{- if hasKey $doc "Error" }}
{{- fail (printf "admissionPolicies.manifest: document %d is not YAML (%s). %s" $i $doc.Error $how) }}
{{- end }}
{{- if eq ($doc.kind | default "") "List" }}
{{- $docs = concat $docs ($doc.items | default list) }}
{{- else if $doc }}
{{- $docs = append $docs $doc }}
{{- end }}
{{- end }}
{{- end }}
{{- $kinds := list "MutatingAdmissionPolicy" "MutatingAdmissionPolicyBinding" "ValidatingAdmissionPolicy" "ValidatingAdmissionPolicyBinding" }}
{{- $policies := dict }}
{{- $bindings := list }}
{{- $mutating := list }}
{{- range $docs }}
{{- $meta := .metadata | default dict }}
{{- $name := $meta.name | default "" }}
{{- $what := printf "%s %q (apiVersion %s)" (.kind | default "<no kind>") $name (.apiVersion | default "<none>") }}
{{- if or (ne (.apiVersion | default "") "admissionregistration.k8s.io/v1") (not (has (.kind | default "") $kinds)) }}
{{- fail (printf "admissionPolicies.manifest holds %s: only the MutatingAdmissionPolicy, ValidatingAdmissionPolicy and binding objects (admissionregistration.k8s.io/v1) that `pullsecret-injector export-policies` prints are accepted. %s" $what $how) }}
{{- end }}
{{- if ne (get ($meta.labels | default dict) "app.kubernetes.io/managed-by") "pullsecret-injector" }}
{{- fail (printf "admissionPolicies.manifest holds %s without the label app.kubernetes.io/managed-by=pullsecret-injector: it was not printed by `pullsecret-injector export-policies`. %s" $what $how) }}
{{- end }}
{{- if hasSuffix "Binding" .kind }}
{{- $bindings = append $bindings . }}
{{- else }}
{{- $key := printf "%s/%s" .kind $name }}
{{- if hasKey $policies $key }}
{{- fail (printf "admissionPolicies.manifest holds %s twice. %s" $what $how) }}
{{- end }}
{{- $_ := set $policies $key . }}
{{- if eq .kind "MutatingAdmissionPolicy" }}{{ $mutating = append $mutating . }}{{ end }}
{{- end }}
{{- end }}
{{- if ne (len $mutating) 1 }}
{{- fail (printf "admissionPolicies.manifest holds %d MutatingAdmissionPolicy objects, not the one `export-policies` prints. %s" (len $mutating) $how) }}
{{- end }}
{{- /* Every binding names a policy of the manifest, every policy has a binding. */}}
{{- $bound := dict }}
{{- range $bindings }}
{{- $key := printf "%s/%s" (trimSuffix "Binding" .kind) ((.spec | default dict).policyName | default "") }}
{{- if not (hasKey $policies $key) }}
{{- fail (printf "admissionPolicies.manifest: %s %q binds %s, which the manifest does not hold (an incomplete copy?). %s" .kind .metadata.name $key $how) }}
{{- end }}
{{- $_ := set $bound $key true }}
{{- end }}
{{- range $key, $_ := $policies }}
{{- if not (hasKey $bound $key) }}
{{- fail (printf "admissionPolicies.manifest: %s has no binding, so it would do nothing (an incomplete copy?). %s" $key $how) }}
{{- end }}
{{- end }}
{{- /* Exported from these values? The registry list and the presence of a policy must agree. */}}
{{- $map := first $mutating }}
{{- $vars := dict }}
{{- range (($map.spec | default dict).variables | default list) }}{{ $_ := set $vars .name .expression }}{{ end }}
{{- $names := list }}
{{- $secrets := list }}
{{- range .Values.registries | default list }}
{{- $names = append $names (printf "'%s'" .name) }}
{{- $secrets = append $secrets (printf "'%s'" .secret) }}
{{- end }}
{{- $wantNames := printf "[%s]" (join ", " $names) }}
{{- $wantSecrets := printf "[%s]" (join ", " $secrets) }}
{{- if or (ne (get $vars "entryNames") $wantNames) (ne (get $vars "secrets") $wantSecrets) }}
{{- fail (printf "admissionPolicies.manifest was exported from other values: its registries are %s (secrets %s), these values' are %s (secrets %s). Re-export it from the values files you install with. %s" (get $vars "entryNames" | default "unknown") (get $vars "secrets" | default "unknown") $wantNames $wantSecrets $how) }}
{{- end }}
{{- $rulePolicies := sub (len (keys $policies)) 2 }}
{{- if and .Values.policy (eq (int $rulePolicies) 0) }}
{{- fail (printf "admissionPolicies.manifest has no registry-policy objects, but these values set `policy`: it was exported from values without it. Re-export it. %s" $how) }}
{{- end }}
{{- if and (not .Values.policy) (gt (int $rulePolicies) 0) }}
{{- fail (printf "admissionPolicies.manifest has registry-policy objects, but these values set no `policy`: it was exported from other values. Re-export it. %s" $how) }}
{{- end }}
{{- /* The webhooks' scope, on the bindings. */}}
{{- $mutatingSide := dict (printf "MutatingAdmissionPolicy/%s" $map.metadata.name) true (printf "ValidatingAdmissionPolicy/%s-warnings" $map.metadata.name) true }}
{{- $mutExpr := list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (include "psi.mutatingExcluded" . | fromJsonArray)) (dict "key" "pullsecret-injector.io/inject" "operator" "NotIn" "values" (list "disabled")) }}
{{- $mutExpr = concat $mutExpr (.Values.webhook.namespaceSelectorExpressions | default list) }}
{{- $valExpr := list (dict "key" "kubernetes.io/metadata.name" "operator" "NotIn" "values" (include "psi.validatingExcluded" . | fromJsonArray)) }}
{{- $valExpr = concat $valExpr (.Values.validatingWebhook.namespaceSelectorExpressions | default list) }}
{{- $release := include "psi.labels" . | fromYaml }}
{{- $_ := unset $release "app.kubernetes.io/managed-by" }}
{{- $out := list }}
{{- range $docs }}
{{- $obj := deepCopy . }}
{{- $_ := set $obj.metadata "labels" (merge (dict) $obj.metadata.labels $release) }}
{{- if hasSuffix "Binding" $obj.kind }}
{{- if $obj.spec.matchResources }}
{{- fail (printf "admissionPolicies.manifest: %s %q already has matchResources, which this chart version does not expect: upgrade the chart with the binary. %s" $obj.kind $obj.metadata.name $how) }}
{{- end }}
{{- $key := printf "%s/%s" (trimSuffix "Binding" $obj.kind) $obj.spec.policyName }}
{{- $scope := dict }}
{{- if hasKey $mutatingSide $key }}
{{- $scope = dict "namespaceSelector" (dict "matchExpressions" $mutExpr) }}
{{- with $.Values.webhook.objectSelector }}{{ $_ := set $scope "objectSelector" . }}{{ end }}
{{- else }}
{{- $scope = dict "namespaceSelector" (dict "matchExpressions" $valExpr) }}
{{- end }}
{{- $_ := set $obj.spec "matchResources" $scope }}
{{- end }}
{{- $out = append $out $obj }}
{{- end }}
{{- toJson $out }}
{{- end }}
