#!/usr/bin/env python3
"""Offline test of the Helm chart in charts/pullsecret-injector.

Dependencies (CI installs them; this script installs nothing):

    python3 -m pip install -r tests/chart/requirements.txt
    # = pip install helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 PyYAML

helm-python-sdk (import name `helm_python`) bundles Helm v4's Go SDK as a
shared library, so this uses real Helm for lint, values-schema validation and
rendering (`Chart.render` = `helm template`), with no helm binary and no
cluster. kubernetes-validate ships the Kubernetes OpenAPI JSON schemas and is
used to validate every rendered object offline (strict: unknown fields fail).
cert-manager kinds (Issuer, Certificate) and Prometheus Operator kinds
(ServiceMonitor, PrometheusRule) are NOT in those schemas; they are skipped by
the schema validation (reported as skipped) and checked structurally here
instead.

What it does:
  * helm lint --strict of the chart with several value sets;
  * renders the chart for: default values, each certs.mode (helm,
    certManager with and without issuerRef, secret), with and without policy,
    sync disabled, and some overrides;
  * validates every rendered manifest against the Kubernetes schemas;
  * asserts the safety properties of the webhook configurations, the
    Deployment, RBAC and certificates;
  * checks that values.schema.json rejects bad values with a clear message,
    and that the templates' install-time checks (templates/validate.yaml)
    fail with one;
  * exercises certs.mode=helm's reuse and rotation paths offline, in a
    temporary copy of the chart whose `lookup` is replaced by a fixture;
  * compares the README's RBAC table, values reference and uninstall order
    with the chart;
  * with --binary: cross-checks registry-name rules, the flags the chart
    passes (`serve --help`), the metric names the alerts and the dashboard
    use (the binary's own /metrics), and what `helm test` expects (`mutate`).
  * writes the rendered ConfigMap's config.yaml (default values) to
    --emit-config PATH, and an all-features one (policy, selectors, every
    registry field) to <PATH stem>.all-features.yaml, so that
    `pullsecret-injector check --config PATH` can be run on them (done here
    when --binary PATH is given).

Every render gets BASE_VALUES (an image: the chart refuses to render without
one, as no image is published) under the scenario's values.

Usage:
    python3 tests/chart/check.py [--emit-config PATH] [--binary PATH]
                                   [--kube-version 1.33] [--chart DIR]
                                   [--readme PATH] [--verbose]

Prints one line per check and a closing line "chart_check: N passed, N failed";
exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import base64
import copy
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.request
from pathlib import Path
from typing import Any, Callable

try:
    import yaml
    import kubernetes_validate
    from kubernetes_validate import utils as kv_utils
    import helm_python
    from helm_python.chart import Chart, lint as helm_lint
except ImportError as exc:  # pragma: no cover - environment problem
    print(
        f"chart_check: missing dependency ({exc}).\n"
        "Install with: python3 -m pip install -r tests/chart/requirements.txt",
        file=sys.stderr,
    )
    sys.exit(2)

REPO = Path(__file__).resolve().parent.parent.parent
CHART_DIR = REPO / "charts" / "pullsecret-injector"
RELEASE = "psi"
NAMESPACE = "pullsecret-injector"
FULLNAME = "psi-pullsecret-injector"  # release name + chart name
MUTATE_NAME = "mutate.pullsecret-injector.io"
VALIDATE_NAME = "validate.pullsecret-injector.io"
MIN_KUBE = "1.30"  # Chart.yaml kubeVersion >=1.30 (matchConditions GA)
# Kinds that kubernetes-validate has no schema for (CRDs): checked by hand.
CRD_KINDS = {("cert-manager.io/v1", "Issuer"), ("cert-manager.io/v1", "ClusterIssuer"),
             ("cert-manager.io/v1", "Certificate"),
             ("monitoring.coreos.com/v1", "ServiceMonitor"),
             ("monitoring.coreos.com/v1", "PrometheusRule")}
README = REPO / "README.md"
# Every render gets these under the scenario's values: there is no published image, so the
# chart refuses to render without one.
TEST_IMAGE = "registry.example.com/pullsecret-injector"
BASE_VALUES: dict[str, Any] = {"image": {"repository": TEST_IMAGE, "tag": "test"}}
# Helm v4's UninstallOrder (pkg/release/v1/util/kind_sorter.go); kinds not listed go last,
# alphabetically.
HELM_UNINSTALL_ORDER = [
    "ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "APIService", "Ingress",
    "IngressClass", "Service", "CronJob", "Job", "StatefulSet", "HorizontalPodAutoscaler",
    "Deployment", "ReplicaSet", "ReplicationController", "Pod", "DaemonSet", "RoleBindingList",
    "RoleBinding", "RoleList", "Role", "ClusterRoleBindingList", "ClusterRoleBinding",
    "ClusterRoleList", "ClusterRole", "CustomResourceDefinition", "PersistentVolumeClaim",
    "PersistentVolume", "StorageClass", "ConfigMap", "SecretList", "Secret", "ServiceAccount",
    "PodDisruptionBudget", "PodSecurityPolicy", "LimitRange", "ResourceQuota", "NetworkPolicy",
    "Namespace", "PriorityClass",
]
UPDATE_CONDITION = "skip-updates-without-new-images"

DUMMY_CA_B64 = base64.b64encode(
    b"-----BEGIN CERTIFICATE-----\nMIIBdummy\n-----END CERTIFICATE-----\n"
).decode()


class CheckFailed(Exception):
    pass


def expect(cond: bool, msg: str) -> None:
    if not cond:
        raise CheckFailed(msg)


# --------------------------------------------------------------------------
# Rendering helpers


class Rendered:
    """All objects of one `helm template` run, by (kind, name)."""

    def __init__(self, files: dict[str, str]):
        self.files = files
        self.docs: list[dict[str, Any]] = []
        for path, text in sorted(files.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if doc:
                    doc.setdefault("__source__", path)
                    self.docs.append(doc)
        self.notes = next((t for p, t in files.items() if p.endswith("NOTES.txt")), "")

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [d for d in self.docs if d.get("kind") == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [d for d in self.all(kind) if name is None or d["metadata"]["name"] == name]
        expect(len(found) == 1, f"expected exactly one {kind} {name or ''}, found {len(found)}")
        return found[0]

    def maybe(self, kind: str) -> dict[str, Any] | None:
        found = self.all(kind)
        return found[0] if found else None

    def config(self) -> dict[str, Any]:
        cm = self.one("ConfigMap", FULLNAME)
        return yaml.safe_load(cm["data"]["config.yaml"])

    def config_text(self) -> str:
        return self.one("ConfigMap", FULLNAME)["data"]["config.yaml"]

    def deployment(self) -> dict[str, Any]:
        return self.one("Deployment", FULLNAME)

    def container(self) -> dict[str, Any]:
        return self.deployment()["spec"]["template"]["spec"]["containers"][0]

    def mutating(self) -> dict[str, Any]:
        return self.one("MutatingWebhookConfiguration", FULLNAME)["webhooks"][0]

    def validating(self) -> dict[str, Any]:
        return self.one("ValidatingWebhookConfiguration", FULLNAME)["webhooks"][0]

    def rules(self, kind: str, name: str) -> list[dict[str, Any]]:
        obj = self.maybe_named(kind, name)
        return obj.get("rules", []) if obj else []

    def maybe_named(self, kind: str, name: str) -> dict[str, Any] | None:
        for d in self.all(kind):
            if d["metadata"]["name"] == name:
                return d
        return None


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and v:
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def with_base(values: dict[str, Any] | None) -> dict[str, Any]:
    return deep_merge(BASE_VALUES, values or {})


class Harness:
    def __init__(self, kube_versions: list[str], verbose: bool):
        self.chart = Chart.load(str(CHART_DIR))
        self.kube_versions = kube_versions
        self.kube_version = ", ".join(kube_versions)
        self.verbose = verbose
        self.passed = 0
        self.failed = 0
        self.failures: list[str] = []
        self.skipped_kinds: set[str] = set()
        self.validated_objects = 0

    def render(self, values: dict[str, Any] | None = None, base: bool = True,
               chart: Any = None) -> Rendered:
        vals = with_base(values) if base else (values or {})
        return Rendered(
            (chart or self.chart).render(vals, name=RELEASE, namespace=NAMESPACE,
                                         is_install=True)
        )

    def render_error(self, values: dict[str, Any], base: bool = True) -> str:
        """The message of the HelmError rendering `values` raises (schema or template)."""
        try:
            self.render(values, base=base)
        except helm_python.HelmError as exc:
            return str(exc)
        raise CheckFailed(f"rendered without error: {values}")

    def check(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except CheckFailed as exc:
            self.failed += 1
            self.failures.append(f"{name}: {exc}")
            print(f"FAIL  {name}: {exc}")
        except Exception as exc:  # helm errors, KeyErrors, ...
            self.failed += 1
            self.failures.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"FAIL  {name}: {type(exc).__name__}: {exc}")
            if self.verbose:
                traceback.print_exc()
        else:
            self.passed += 1
            print(f"ok    {name}")

    # ----------------------------------------------------------------------

    def k8s_validate(self, r: Rendered) -> None:
        problems = []
        for doc in r.docs:
            body = {k: v for k, v in doc.items() if k != "__source__"}
            key = (body.get("apiVersion"), body.get("kind"))
            if key in CRD_KINDS:
                self.skipped_kinds.add(f"{key[0]} {key[1]}")
                continue
            self.validated_objects += 1
            for version in self.kube_versions:
                try:
                    kubernetes_validate.validate(body, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    path = "/".join(str(p) for p in exc.path)
                    problems.append(f"[k8s {version}] {doc['__source__']} {key[1]}/"
                                    f"{body['metadata'].get('name')}: {path}: {exc.message}")
                except kv_utils.SchemaNotFoundError as exc:
                    problems.append(f"[k8s {version}] {doc['__source__']}: {exc.message}")
        expect(not problems, "; ".join(problems))

    def lint(self, values: dict[str, Any] | None = None) -> None:
        report = helm_lint(str(CHART_DIR), with_base(values), strict=True, namespace=NAMESPACE)
        bad = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2]
        expect(not report.get("errors") and not bad,
               f"helm lint: errors={report.get('errors')} messages={bad}")


# --------------------------------------------------------------------------
# Property checks


def ns_not_in(webhook: dict[str, Any]) -> list[str]:
    for e in webhook["namespaceSelector"]["matchExpressions"]:
        if e["key"] == "kubernetes.io/metadata.name" and e["operator"] == "NotIn":
            return e["values"]
    raise CheckFailed("namespaceSelector has no kubernetes.io/metadata.name NotIn expression")


def norm_rules(rules: list[dict[str, Any]]) -> list[tuple]:
    return sorted(
        (tuple(sorted(r["operations"])), tuple(r["apiGroups"]), tuple(r["apiVersions"]),
         tuple(r["resources"]), r.get("scope"))
        for r in rules
    )


def decode_cert(pem_b64: str) -> dict[str, Any]:
    pem = base64.b64decode(pem_b64)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as f:
        f.write(pem)
        path = f.name
    try:
        return ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
    finally:
        os.unlink(path)


def check_mutating_defaults(r: Rendered) -> None:
    w = r.mutating()
    expect(w["name"] == MUTATE_NAME, f"webhook name {w['name']}")
    expect(len(w["name"].split(".")) >= 3, "webhook name needs >= 3 dot segments")
    expect(w["admissionReviewVersions"] == ["v1"], "admissionReviewVersions must be [v1]")
    expect(w["sideEffects"] == "NoneOnDryRun", f"sideEffects={w['sideEffects']}")
    expect(w["failurePolicy"] == "Ignore", f"default failurePolicy={w['failurePolicy']}")
    expect(w["reinvocationPolicy"] == "IfNeeded", "reinvocationPolicy must be IfNeeded")
    expect(w["timeoutSeconds"] == 5, f"timeoutSeconds={w['timeoutSeconds']}")
    svc = w["clientConfig"]["service"]
    expect(svc == {"name": FULLNAME, "namespace": NAMESPACE, "path": "/mutate", "port": 443},
           f"clientConfig.service={svc}")
    expect(norm_rules(w["rules"]) == norm_rules([
        {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods"], "scope": "Namespaced"},
        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
    ]), f"rules={w['rules']}")
    excluded = ns_not_in(w)
    expect(NAMESPACE in excluded, f"release namespace not excluded: {excluded}")
    expect("kube-system" in excluded, f"kube-system not excluded: {excluded}")
    exprs = w["namespaceSelector"]["matchExpressions"]
    expect({"key": "pullsecret-injector.io/inject", "operator": "NotIn", "values": ["disabled"]}
           in exprs, f"opt-out label expression missing: {exprs}")
    expect("objectSelector" not in w, "objectSelector should be absent by default")
    conds = {c["name"]: c["expression"] for c in w.get("matchConditions", [])}
    expect(any("kubernetes.io/config.mirror" in e for e in conds.values()),
           "default matchConditions must skip mirror pods")
    expect(any("system:node:" in e for e in conds.values()),
           "default matchConditions must skip system:node: users")


def check_deployment(r: Rendered) -> None:
    d = r.deployment()
    spec = d["spec"]
    pod = spec["template"]["spec"]
    c = r.container()
    expect(spec["replicas"] == 2, f"replicas={spec['replicas']}")
    psc = pod["securityContext"]
    expect(psc.get("runAsNonRoot") is True, "pod runAsNonRoot")
    expect(psc.get("runAsUser") == 65532, "pod runAsUser 65532")
    expect(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "pod seccomp RuntimeDefault")
    sc = c["securityContext"]
    expect(sc.get("runAsNonRoot") is True, "container runAsNonRoot")
    expect(sc.get("runAsUser") == 65532, "container runAsUser 65532")
    expect(sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    expect(sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation false")
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities drop ALL")
    expect(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "container seccomp")
    res = c.get("resources", {})
    expect(res.get("requests") and res.get("limits"), "resource requests and limits")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expect(ports == {"webhook": 8443, "metrics": 9090}, f"container ports {ports}")
    args = c["args"]
    expect(args[0] == "serve", f"args[0]={args[0]}")

    def arg(flag: str) -> str:
        expect(flag in args, f"missing {flag} in args {args}")
        return args[args.index(flag) + 1]

    expect(arg("--config") == "/etc/pullsecret-injector/config.yaml", "--config path")
    expect(arg("--tls-cert") == "/etc/pullsecret-injector/tls/tls.crt", "--tls-cert")
    expect(arg("--tls-key") == "/etc/pullsecret-injector/tls/tls.key", "--tls-key")
    expect("--no-sync" not in args and "--no-cluster-access" not in args,
           "--no-sync / --no-cluster-access must not be set by default")
    expect(c["image"] == f"{TEST_IMAGE}:test", f"image {c['image']}")
    anti = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    expect(anti[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname",
           "preferred anti-affinity by hostname")
    ann = spec["template"]["metadata"]["annotations"]
    expect(re.fullmatch(r"[0-9a-f]{64}", str(ann.get("checksum/config", ""))),
           "checksum/config annotation")
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    expect("/tmp" in mounts and "/etc/pullsecret-injector" in mounts, f"mounts {list(mounts)}")
    pdb = r.one("PodDisruptionBudget", FULLNAME)
    expect(pdb["spec"]["minAvailable"] == 1, "PDB minAvailable 1")
    expect(pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"],
           "PDB selector matches the Deployment")
    svc = r.one("Service", FULLNAME)
    sp = {p["name"]: (p["port"], p["targetPort"]) for p in svc["spec"]["ports"]}
    expect(sp == {"https": (443, "webhook"), "metrics": (9090, "metrics")}, f"service ports {sp}")
    expect(svc["spec"]["selector"] == spec["selector"]["matchLabels"], "service selector")
    expect(pod["serviceAccountName"] == FULLNAME, "serviceAccountName")
    r.one("ServiceAccount", FULLNAME)
    expect("priorityClassName" not in pod, "no priorityClassName by default")


def tls_secret_name_in_pod(r: Rendered) -> str:
    for v in r.deployment()["spec"]["template"]["spec"]["volumes"]:
        for src in v.get("projected", {}).get("sources", []):
            if "secret" in src:
                return src["secret"]["name"]
        if "secret" in v:
            return v["secret"]["secretName"]
    raise CheckFailed("no TLS secret volume in the Deployment")


def check_helm_certs(r: Rendered) -> None:
    sec = r.one("Secret", f"{FULLNAME}-tls")
    expect(sec["type"] == "kubernetes.io/tls", "TLS secret type")
    expect(tls_secret_name_in_pod(r) == f"{FULLNAME}-tls", "pod mounts the generated secret")
    w = r.mutating()
    expect(w["clientConfig"].get("caBundle") == sec["data"]["ca.crt"],
           "mutating caBundle must equal the generated CA (same render)")
    ca = decode_cert(sec["data"]["ca.crt"])
    crt = decode_cert(sec["data"]["tls.crt"])
    sans = {v for k, v in crt.get("subjectAltName", ()) if k == "DNS"}
    want = {f"{FULLNAME}.{NAMESPACE}.svc", f"{FULLNAME}.{NAMESPACE}.svc.cluster.local",
            FULLNAME, f"{FULLNAME}.{NAMESPACE}"}
    expect(want <= sans, f"serving cert SANs {sans} lack {want - sans}")
    expect(crt["issuer"] == ca["subject"], "serving cert is signed by the generated CA")
    expect("cert-manager.io/inject-ca-from" not in
           (r.one("MutatingWebhookConfiguration", FULLNAME)["metadata"].get("annotations") or {}),
           "no cert-manager annotation in helm mode")
    expect(not r.all("Certificate") and not r.all("Issuer"), "no cert-manager objects in helm mode")


def check_cert_manager(r: Rendered, own_issuer: bool) -> None:
    expect(not r.all("Secret"), "no Secret rendered in certManager mode")
    cert = r.one("Certificate", f"{FULLNAME}-serving")
    spec = cert["spec"]
    expect(spec["secretName"] == f"{FULLNAME}-tls", "Certificate secretName")
    expect(tls_secret_name_in_pod(r) == spec["secretName"], "pod mounts the Certificate's secret")
    want = {f"{FULLNAME}.{NAMESPACE}.svc", f"{FULLNAME}.{NAMESPACE}.svc.cluster.local"}
    expect(want <= set(spec["dnsNames"]), f"dnsNames {spec['dnsNames']}")
    ann = f"{NAMESPACE}/{FULLNAME}-serving"
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        obj = r.one(kind, FULLNAME)
        expect((obj["metadata"].get("annotations") or {}).get("cert-manager.io/inject-ca-from")
               == ann, f"{kind} inject-ca-from annotation")
        expect("caBundle" not in obj["webhooks"][0]["clientConfig"],
               f"{kind} must not hard-code caBundle in certManager mode")
    if own_issuer:
        expect(spec["issuerRef"] == {"name": "corp-ca", "kind": "ClusterIssuer",
                                     "group": "cert-manager.io"}, f"issuerRef {spec['issuerRef']}")
        expect(not r.all("Issuer"), "no Issuer rendered with a user issuerRef")
    else:
        issuers = {i["metadata"]["name"]: i["spec"] for i in r.all("Issuer")}
        expect(issuers.get(f"{FULLNAME}-selfsigned") == {"selfSigned": {}}, "self-signed issuer")
        expect(issuers.get(f"{FULLNAME}-ca", {}).get("ca", {}).get("secretName") == f"{FULLNAME}-ca",
               "CA issuer")
        ca = r.one("Certificate", f"{FULLNAME}-ca")
        expect(ca["spec"]["isCA"] is True, "CA certificate isCA")
        expect(spec["issuerRef"]["name"] == f"{FULLNAME}-ca", "serving cert issued by the CA issuer")


def check_secret_mode(r: Rendered) -> None:
    expect(not r.all("Secret") and not r.all("Certificate"), "nothing cert-related rendered")
    expect(tls_secret_name_in_pod(r) == "my-webhook-tls", "pod mounts the user secret")
    expect(r.mutating()["clientConfig"]["caBundle"] == DUMMY_CA_B64, "caBundle from values")
    expect(r.validating()["clientConfig"]["caBundle"] == DUMMY_CA_B64, "validating caBundle")


def check_validating(r: Rendered, failure_policy: str) -> None:
    w = r.validating()
    expect(w["name"] == VALIDATE_NAME, f"name {w['name']}")
    expect(w["sideEffects"] == "None", f"sideEffects={w['sideEffects']}")
    expect(w["failurePolicy"] == failure_policy,
           f"failurePolicy={w['failurePolicy']}, want {failure_policy}")
    expect(w["admissionReviewVersions"] == ["v1"], "admissionReviewVersions")
    expect(w["clientConfig"]["service"]["path"] == "/validate", "path /validate")
    expect(norm_rules(w["rules"]) == norm_rules([
        {"operations": ["CREATE", "UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods"], "scope": "Namespaced"},
        {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
         "resources": ["pods/ephemeralcontainers"], "scope": "Namespaced"},
    ]), f"rules={w['rules']}")
    excluded = ns_not_in(w)
    expect(NAMESPACE in excluded and "kube-system" in excluded, f"excluded {excluded}")


def cluster_rules(r: Rendered) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for rule in r.rules("ClusterRole", FULLNAME):
        for res in rule["resources"]:
            out.setdefault(res, set()).update(rule["verbs"])
    return out


# --------------------------------------------------------------------------
# Issue 14: a production install. Each check names the item it proves.

ISSUE14_VALUES: dict[str, Any] = {
    "global": {"imageRegistry": "mirror.example.com/cache"},
    "policy": {"mode": "enforce", "allow": ["*.tencentcloudcr.com", "ghcr.io/acme", "registry.k8s.io"]},
    "clientCA": {"secretName": "apiserver-client-ca"},
    "listenHost": "::", "metrics": {"listenHost": "::"},
    "hostNetwork": True, "containerPort": 10443,
    "startupProbe": {"enabled": True},
    "revisionHistoryLimit": 2,
    "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
    "extraVolumes": [{"name": "extra", "emptyDir": {}}],
    "extraVolumeMounts": [{"name": "extra", "mountPath": "/extra", "readOnly": True}],
    "shutdownDelaySeconds": 10, "drainTimeoutSeconds": 40,
    "networkPolicy": {"enabled": True, "webhookFrom": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]},
    "monitoring": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}},
                   "prometheusRule": {"enabled": True}, "grafanaDashboard": {"enabled": True}},
    "tests": {"enabled": True, "namespace": "team-a", "registry": "ghcr-acme"},
}

# The binary's registry-name rule (src/config.rs is_label_value), as test vectors.
REGISTRY_NAMES = ["tcr", "TCR", "Tcr", "a_b", "a.b", "-a", "a-", "0", "a" * 63, "a" * 64,
                  "tcr!", "t c", "ghcr-acme", "é"]


def arg_of(args: list[str], flag: str) -> str:
    """The value of the LAST `flag` (the binary takes the last of repeated flags)."""
    expect(flag in args, f"missing {flag} in args {args}")
    i = len(args) - 1 - args[::-1].index(flag)
    return args[i + 1]


def projected_sources(r: Rendered) -> list[dict[str, Any]]:
    for v in r.deployment()["spec"]["template"]["spec"]["volumes"]:
        if v["name"] == "config":
            return v["projected"]["sources"]
    raise CheckFailed("no projected config volume")


def match_conditions(w: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["expression"] for c in w.get("matchConditions", [])}


def check_update_condition(w: dict[str, Any], which: str) -> None:
    conds = match_conditions(w)
    expect(UPDATE_CONDITION in conds, f"{which}: no {UPDATE_CONDITION} matchCondition: {list(conds)}")
    e = " ".join(conds[UPDATE_CONDITION].split())
    expect(e.startswith("request.operation != 'UPDATE' ||"),
           f"{which}: CREATE (anything but UPDATE) must always match: {e}")
    for field in ("containers", "initContainers", "ephemeralContainers"):
        expect(f"object.spec.{field}" in e and f"oldObject.spec.{field}" in e,
               f"{which}: {field} images of object and oldObject are compared: {e}")
    for field in ("initContainers", "ephemeralContainers"):
        for obj in ("object", "oldObject"):
            expect(f"has({obj}.spec.{field})" in e, f"{which}: {obj}.spec.{field} guarded by has(): {e}")
    expect("subResource" not in e, f"{which}: must not read request.subResource (absent when empty)")
    expect(e.count("(") == e.count(")"), f"{which}: unbalanced parentheses: {e}")
    expect(len(w["matchConditions"]) <= 64, f"{which}: more than 64 matchConditions")


def readme_section(text: str, start: str, end: str) -> str:
    expect(start in text, f"README has no {start!r}")
    a = text.index(start)
    b = text.find(end, a + len(start))
    return text[a: b if b >= 0 else len(text)]


def md_table(text: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table in `text`, header and rule left out."""
    rows = []
    started = False
    for line in text.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip()[1:-1])]
            rows.append(cells)
        elif started:
            break
    return [r for r in rows[2:]]


def readme_rbac(readme: str) -> list[dict[str, Any]]:
    """The README's RBAC table: one dict per row with its feature requirements."""
    sec = readme_section(readme, "**RBAC.**", "\n## ")
    out = []
    for when, group, resource, where, verbs, _why in md_table(sec):
        req = set()
        if "`tests.enabled`" in when:
            req.add("tests")
        else:
            req.add("access")
            if "`sync.enabled`" in when:
                req.add("sync")
            if "`serviceAccounts`" in when:
                req.add("serviceAccounts")
            if "`repairStuckPods`" in when:
                req.add("repair")
            if "`audit.enabled`" in when:
                req.add("audit")
            if "`serviceAccountToken`" in when:
                req.add("token")
            if "`certs.mode: self`" in when:
                req.add("self")
            if "`policy`" in when:
                req.add("policy")
        out.append({"req": req, "group": group.strip("`").strip('"'), "resource": resource,
                    "where": where, "verbs": {v.strip() for v in verbs.split(",")}})
    expect(out, "README RBAC table is empty")
    return out


def rendered_rbac(r: Rendered) -> dict[tuple[str, str, str], set[str]]:
    """(group, resource, where) -> verbs over every Role/ClusterRole the render holds."""
    out: dict[tuple[str, str, str], set[str]] = {}
    for kind in ("ClusterRole", "Role"):
        for obj in r.all(kind):
            if kind == "ClusterRole":
                where = "cluster"
            elif obj["metadata"]["namespace"] == NAMESPACE and "helm.sh/hook" not in (
                    obj["metadata"].get("annotations") or {}):
                where = "release namespace"
            else:
                where = "`tests.namespace`"
            for rule in obj.get("rules", []):
                for g in rule["apiGroups"]:
                    for res in rule["resources"]:
                        out.setdefault((g, res, where), set()).update(rule["verbs"])
    return out


def expected_rbac(rows: list[dict[str, Any]], features: set[str]) -> dict[tuple[str, str, str], set[str]]:
    out: dict[tuple[str, str, str], set[str]] = {}
    for row in rows:
        if row["req"] <= features:
            out.setdefault((row["group"], row["resource"], row["where"]), set()).update(row["verbs"])
    return out


OPAQUE_VALUES = {"registries", "policy", "podSecurityContext", "securityContext", "resources",
                 "updateStrategy", "livenessProbe", "readinessProbe", "tests.resources",
                 "networkPolicy.metricsFrom", "monitoring.grafanaDashboard.labels"}


def value_leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        path = prefix + k
        if isinstance(v, dict) and v and path not in OPAQUE_VALUES:
            out.update(value_leaves(v, path + "."))
        else:
            out[path] = v
    return out


def metric_names_from_binary(binary: str) -> set[str]:
    """Sample names the binary exports (from its own /metrics: counters get _total,
    histograms _bucket/_sum/_count), read from a `serve` started on loopback with no
    cluster access and stopped at once (by the pid we started)."""
    def free_port() -> int:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    web, met = free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        proc = subprocess.Popen([binary, "serve", "--listen", f"127.0.0.1:{web}", "--metrics-listen",
                                 f"127.0.0.1:{met}", "--no-cluster-access", "--self-signed-dir", d],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            text = None
            deadline = time.time() + 20
            while time.time() < deadline and text is None:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{met}/metrics", timeout=2) as resp:
                        text = resp.read().decode()
                except OSError:
                    time.sleep(0.2)
            expect(text is not None, f"{binary} serve did not answer /metrics within 20 s")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    names = set()
    for line in text.splitlines():
        m = re.match(r"# TYPE (\S+) (\S+)", line)
        if m:
            name, typ = m.groups()
            if typ == "counter":
                names.add(name + "_total")
            elif typ == "histogram":
                names.update({name + "_bucket", name + "_sum", name + "_count"})
            else:
                names.add(name)
    expect(names, "no # TYPE lines in /metrics")
    return names


def metric_names_from_source() -> set[str]:
    """Sample names of every metric src/metrics.rs registers (prefix pullsecret_injector_;
    counters get _total, histograms _bucket/_sum/_count). Labelled families have no
    samples, and so no # TYPE line, until first used, so /metrics alone cannot list them."""
    src = (REPO / "src" / "metrics.rs").read_text()
    # `Gauge<f64, AtomicU64>` (a float gauge) included.
    types = dict(re.findall(r"pub (\w+): (?:Family<\w+, )?(Counter|Gauge|Histogram)(?:<[^>]*>)?>?,", src))
    names = set()
    for name, var in re.findall(r'register\(\s*"([a-z_]+)",\s*"(?:[^"\\]|\\.)*",\s*([a-z_]+)\.clone\(\)', src):
        full = "pullsecret_injector_" + name
        typ = types.get(var)
        expect(typ is not None, f"src/metrics.rs: no field type for {var}")
        if typ == "Counter":
            names.add(full + "_total")
        elif typ == "Histogram":
            names.update({full + "_bucket", full + "_sum", full + "_count"})
        else:
            names.add(full)
    expect(len(names) >= 10, f"src/metrics.rs: only {names}")
    return names


def used_metrics(text: str) -> set[str]:
    return set(re.findall(r"pullsecret_injector_[a-z_]+", text))


def issue14_checks(h: "Harness", args: argparse.Namespace, s: Callable[[str], Rendered],
                   r0: Rendered) -> None:
    readme = Path(args.readme).read_text()
    big = s("issue 14 features on")

    # --- item 1: probes on the plain-HTTP metrics port; client CA mounted -------------
    def probes() -> None:
        for r, label in ((r0, "default"), (big, "issue 14 features on")):
            c = r.container()
            want = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
            if label != "default":
                want["startupProbe"] = "/healthz"
            else:
                expect("startupProbe" not in c, "no startupProbe by default")
            for probe, path in want.items():
                hg = c[probe]["httpGet"]
                expect(hg == {"path": path, "port": "metrics", "scheme": "HTTP"},
                       f"[{label}] {probe} must GET {path} on the metrics port over HTTP "
                       f"(never asks for a client certificate): {hg}")
            ports = {p["name"]: p["containerPort"] for p in c["ports"]}
            expect(ports["metrics"] == r.deployment()["spec"]["template"]["spec"]["containers"][0]
                   ["ports"][1]["containerPort"], "metrics port declared")
        st = big.container()["startupProbe"]
        expect(st["failureThreshold"] == 30 and st["periodSeconds"] == 2, f"startupProbe timings {st}")
    h.check("item 1: liveness/readiness/startup probes on the metrics port over HTTP", probes)

    def client_ca() -> None:
        for values, kind, name in (({"clientCA": {"secretName": "api-ca"}}, "secret", "api-ca"),
                                   ({"clientCA": {"configMapName": "api-ca", "key": "bundle.pem"}},
                                    "configMap", "api-ca")):
            r = h.render(values)
            args_ = r.container()["args"]
            expect(arg_of(args_, "--client-ca") == "/etc/pullsecret-injector/client-ca/ca.crt",
                   f"--client-ca passed: {args_}")
            srcs = [x[kind] for x in projected_sources(r) if kind in x and x[kind]["name"] == name]
            expect(len(srcs) == 1 and srcs[0]["items"] == [
                {"key": values["clientCA"].get("key", "ca.crt"), "path": "client-ca/ca.crt"}],
                f"{kind} {name} projected to client-ca/ca.crt: {projected_sources(r)}")
            h.k8s_validate(r)
        expect("--client-ca" not in r0.container()["args"], "no --client-ca by default")
        msg = h.render_error({"clientCA": {"secretName": "a", "configMapName": "b"}})
        expect("not both" in msg, f"both sources refused: {msg}")
    h.check("item 1: clientCA (Secret or ConfigMap) mounted and passed as --client-ca", client_ca)

    # --- item 2: dual-stack by default, configurable addresses ------------------------
    def listen() -> None:
        a = r0.container()["args"]
        expect(arg_of(a, "--listen") == ":8443", f"--listen {arg_of(a, '--listen')} (want :8443)")
        expect(arg_of(a, "--metrics-listen") == ":9090", f"--metrics-listen {arg_of(a, '--metrics-listen')}")
        for host, want in (("::", "[::]:8443"), ("0.0.0.0", "0.0.0.0:8443"), ("fd00::5", "[fd00::5]:8443"),
                           ("localhost", "localhost:8443"), ("10.1.2.3", "10.1.2.3:8443")):
            r = h.render({"listenHost": host, "metrics": {"listenHost": host}})
            got = arg_of(r.container()["args"], "--listen")
            expect(got == want, f"listenHost {host!r}: --listen {got}, want {want}")
            got = arg_of(r.container()["args"], "--metrics-listen")
            expect(got == want.replace("8443", "9090"), f"metrics.listenHost {host!r}: {got}")
        r = h.render({"extraArgs": ["--listen", "127.0.0.1:8443"]})
        expect(arg_of(r.container()["args"], "--listen") == "127.0.0.1:8443",
               "extraArgs come after the chart's flags, so the last --listen wins")
    h.check("item 2: --listen :PORT / --metrics-listen :PORT (dual-stack) by default; "
            "listenHost values", listen)

    # --- item 4: UPDATEs without new images skip both webhooks; cert-manager exempt --
    def update_condition() -> None:
        r = s("certs.mode=secret + policy")
        check_update_condition(r.validating(), "validating")
        check_update_condition(r.mutating(), "mutating")
        check_update_condition(r0.mutating(), "mutating (default)")
        rules = {tuple(x["operations"]): x["resources"] for x in r.validating()["rules"]}
        expect(rules.get(("CREATE", "UPDATE")) == ["pods"]
               and rules.get(("UPDATE",)) == ["pods/ephemeralcontainers"],
               f"validating rules keep CREATE and pods/ephemeralcontainers: {rules}")
        custom = [{"name": "mine", "expression": "true"}]
        r = h.render({"policy": {"deny": ["x.io"]}, "validatingWebhook": {"matchConditions": custom},
                      "webhook": {"matchConditions": []}})
        for w, which in ((r.validating(), "validating"), (r.mutating(), "mutating")):
            expect(UPDATE_CONDITION in match_conditions(w), f"{which}: built-in kept with user lists")
        msg = h.render_error({"webhook": {"matchConditions": [{"name": UPDATE_CONDITION,
                                                               "expression": "true"}]}})
        expect("built-in" in msg, f"a user condition with the built-in name is refused: {msg}")
        msg = h.render_error({"webhook": {"matchConditions": [
            {"name": f"c{i}", "expression": "true"} for i in range(64)]}})
        expect("matchConditions" in msg, f"64 user conditions + the built-in one refused: {msg}")
    h.check("item 4: CEL matchCondition skips UPDATEs that change no image (both webhooks), "
            "keeps CREATE and pods/ephemeralcontainers", update_condition)

    def cert_manager_exempt() -> None:
        r = s("certs.mode=certManager (self-signed CA chain) + policy")
        for w, which in ((r.mutating(), "mutating"), (r.validating(), "validating")):
            expect("cert-manager" in ns_not_in(w), f"{which}: cert-manager namespace exempt: {ns_not_in(w)}")
        r = h.render({"certs": {"mode": "certManager", "certManager": {"namespace": "cm"}},
                      "policy": {"deny": ["x.io"]}})
        expect("cm" in ns_not_in(r.mutating()) and "cm" in ns_not_in(r.validating()),
               "certs.certManager.namespace is the exempted one")
        expect("cert-manager" not in ns_not_in(r0.mutating()), "only in certManager mode")
    h.check("item 4: certManager mode exempts cert-manager's namespace from both webhooks",
            cert_manager_exempt)

    # --- item 5: graceful shutdown --------------------------------------------------------
    def shutdown() -> None:
        a = r0.container()["args"]
        expect(arg_of(a, "--shutdown-delay") == "5" and arg_of(a, "--drain-timeout") == "20",
               f"--shutdown-delay 5 --drain-timeout 20: {a}")
        pod = r0.deployment()["spec"]["template"]["spec"]
        expect(pod.get("terminationGracePeriodSeconds") == 30, f"grace {pod.get('terminationGracePeriodSeconds')}")
        a = big.container()["args"]
        expect(arg_of(a, "--shutdown-delay") == "10" and arg_of(a, "--drain-timeout") == "40", f"{a}")
        expect(big.deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 55,
               "derived grace = delay + drain + 5")
        r = h.render({"terminationGracePeriodSeconds": 90})
        expect(r.deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 90, "explicit")
        msg = h.render_error({"terminationGracePeriodSeconds": 25})
        expect("terminationGracePeriodSeconds" in msg and "25" in msg, f"grace <= delay + drain refused: {msg}")
    h.check("item 5: --shutdown-delay/--drain-timeout from values; terminationGracePeriodSeconds "
            "derived or validated", shutdown)

    # --- item 6: install-time checks the schema cannot express ---------------------------
    for values, needles, label in (
        ({"metrics": {"port": 8443}}, ["metrics.port", "containerPort"], "metrics.port == containerPort"),
        ({"replicaCount": 0, "webhook": {"failurePolicy": "Fail"}}, ["replicaCount", "webhook.failurePolicy"],
         "replicaCount 0 + mutating Fail"),
        ({"replicaCount": 0, "policy": {"deny": ["x.io"]}}, ["replicaCount", "validating webhook"],
         "replicaCount 0 + enforce"),
        ({"policy": {"allow": []}}, ["policy.allow", "confirmDenyAll"], "policy.allow: []"),
        ({"policy": {"mode": "warn", "overrides": [{"namespaces": ["x"], "allow": []}]}},
         ["policy.overrides[0].allow", "confirmDenyAll"], "overrides[].allow: []"),
        ({"certs": {"mode": "secret", "secret": {"name": "t", "caBundle": base64.b64encode(b"hello").decode()}}},
         ["caBundle", "PEM"], "caBundle not a PEM certificate"),
        ({"registries": [{"name": "a", "match": ["a.io"], "secret": "a"},
                         {"name": "a", "match": ["b.io"], "secret": "b"}]}, ["registries[1].name", "unique"],
         "duplicate registry names"),
        ({"tests": {"enabled": True, "registry": "nope"}}, ["tests.registry"], "tests.registry unknown"),
    ):
        def refuse(values=values, needles=needles) -> None:
            msg = h.render_error(values)
            expect(all(n in msg for n in needles), f"message lacks {needles}: {msg}")
            if args.verbose:
                print("      " + " ".join(msg.split())[:220])
        h.check(f"item 6: install refuses {label}", refuse)

    def accepted_edge_cases() -> None:
        h.render({"replicaCount": 0})  # Ignore everywhere: scaling to zero is allowed
        h.render({"replicaCount": 0, "policy": {"mode": "audit", "deny": ["x.io"]}})
        r = h.render({"policy": {"allow": []}, "validatingWebhook": {"confirmDenyAll": True}})
        expect(r.config()["policy"]["allow"] == [], "confirmed deny-all renders")
    h.check("item 6: replicaCount 0 with Ignore, confirmed deny-all are accepted", accepted_edge_cases)

    if args.binary:
        def registry_names() -> None:
            problems = []
            with tempfile.TemporaryDirectory() as d:
                for name in REGISTRY_NAMES:
                    cfg = Path(d) / "c.yaml"
                    cfg.write_text(json.dumps({"registries": [{"name": name, "match": ["a.io"], "secret": "s"}]}))
                    out = subprocess.run([args.binary, "check", "--config", str(cfg)],
                                         capture_output=True, text=True, timeout=60)
                    binary_ok = out.returncode == 0
                    try:
                        h.chart.validate_schema({"registries": [{"name": name, "match": ["a.io"], "secret": "s"}]})
                        schema_ok = True
                    except helm_python.HelmError:
                        schema_ok = False
                    if binary_ok != schema_ok:
                        problems.append(f"{name!r}: binary {'accepts' if binary_ok else 'rejects'}, "
                                        f"schema {'accepts' if schema_ok else 'rejects'}")
            expect(not problems, "; ".join(problems))
        h.check("item 6: registries[].name: the schema accepts exactly what `check` accepts", registry_names)

    # --- item 7: certs.mode=helm reuse and rotation (lookup simulated) -------------------
    def helm_cert_paths() -> None:
        with tempfile.TemporaryDirectory() as d:
            chart_dir = Path(d) / "chart"
            shutil.copytree(CHART_DIR, chart_dir)
            fixture = chart_dir / "fixture-secret.json"
            helpers = chart_dir / "templates" / "_helpers.tpl"
            text = helpers.read_text()
            m = re.search(r'(\{\{- define "psi.existingTLSSecret" -\}\}\n)(.*?)(\n\{\{- end \}\})', text, re.S)
            if m:
                helpers.write_text(text[:m.start(2)] + '{{- .Files.Get "fixture-secret.json" | default "{}" }}'
                                   + text[m.end(2):])
            else:  # an older chart: lookup inline in webhook.yaml
                wh = chart_dir / "templates" / "webhook.yaml"
                t = wh.read_text()
                expect('lookup "v1" "Secret"' in t, "no lookup of the TLS Secret at all")
                wh.write_text(re.sub(r'lookup "v1" "Secret" \.Release\.Namespace \$secretName',
                                     '(.Files.Get "fixture-secret.json" | default "{}" | fromJson)', t))

            def render_with(secret: dict[str, Any] | None, values: dict[str, Any] | None = None) -> dict[str, Any]:
                fixture.write_text(json.dumps(secret) if secret else "")
                r = h.render(values, chart=Chart.load(str(chart_dir)))
                sec = r.one("Secret", f"{FULLNAME}-tls")
                expect(r.mutating()["clientConfig"]["caBundle"] == sec["data"]["ca.crt"], "caBundle = ca.crt")
                return sec

            def pems(b64: str) -> list[str]:
                return re.findall(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----",
                                  base64.b64decode(b64).decode(), re.S)

            def issuer_of(crt_b64: str) -> Any:
                return decode_cert(crt_b64)["issuer"]

            def subject_of(pem: str) -> Any:
                return decode_cert(base64.b64encode(pem.encode()).decode())["subject"]

            first = render_with(None)
            ann = first["metadata"].get("annotations") or {}
            expect("ca.key" in first["data"], "the CA key is kept, so the serving cert can be renewed")
            expect(int(ann.get("pullsecret-injector.io/serving-not-after", 0)) > time.time() + 3000 * 86400,
                   f"serving-not-after annotation: {ann}")
            # 1. upgrade: everything reused
            again = render_with(first)
            expect(again["data"] == first["data"], "upgrade reuses CA, cert and key unchanged")
            # 2. legacy secret (older chart: no ca.key, no annotations): reused as is
            legacy = {"data": {k: first["data"][k] for k in ("ca.crt", "tls.crt", "tls.key")}}
            kept = render_with(legacy)
            expect({k: kept["data"][k] for k in legacy["data"]} == legacy["data"], "legacy secret reused")
            # 3. serving cert near expiry: re-issued by the same CA, bundle unchanged
            soon = copy.deepcopy(first)
            soon["metadata"]["annotations"]["pullsecret-injector.io/serving-not-after"] = str(int(time.time()) + 86400)
            renewed = render_with(soon)
            expect(renewed["data"]["ca.crt"] == first["data"]["ca.crt"], "renewal keeps the caBundle")
            expect(renewed["data"]["tls.crt"] != first["data"]["tls.crt"], "serving cert renewed")
            expect(issuer_of(renewed["data"]["tls.crt"]) == subject_of(pems(first["data"]["ca.crt"])[0]),
                   "renewed cert signed by the same CA")
            # 4. rotationId (and CA near expiry): new CA first, old CA kept after it (overlap)
            for label, sec, values in (
                ("rotationId", first, {"certs": {"helm": {"rotationId": "2027-01"}}}),
                ("CA near expiry", {**soon, "metadata": {"annotations": {
                    **soon["metadata"]["annotations"],
                    "pullsecret-injector.io/ca-not-after": str(int(time.time()) + 86400)}}}, None),
                ("rotationId on a legacy secret", legacy, {"certs": {"helm": {"rotationId": "x"}}}),
            ):
                rot = render_with(sec, values)
                bundle, old = pems(rot["data"]["ca.crt"]), pems(sec["data"]["ca.crt"])
                expect(len(bundle) == 2 and bundle[1] == old[0] and bundle[0] != old[0],
                       f"{label}: bundle = new CA + previous CA ({len(bundle)} certs)")
                expect(issuer_of(rot["data"]["tls.crt"]) == subject_of(bundle[0]),
                       f"{label}: serving cert signed by the new CA")
            same = render_with(render_with(first, {"certs": {"helm": {"rotationId": "2027-01"}}}),
                               {"certs": {"helm": {"rotationId": "2027-01"}}})
            expect(len(pems(same["data"]["ca.crt"])) == 2, "the same rotationId does not rotate again")
    h.check("item 7: certs.mode=helm reuses the Secret, renews the serving cert, rotates the CA "
            "with overlap (lookup simulated)", helm_cert_paths)

    def helm_cert_docs() -> None:
        for text, where in ((r0.notes, "NOTES.txt"),
                            (readme_section(readme, "## Install on a cluster", "\n## "), "README install")):
            for needle in ("helm template", "Argo CD", "rotationId", "certManager"):
                expect(needle in text, f"{where} does not mention {needle!r}")
    h.check("item 7: NOTES and README document GitOps limits and the rotation path", helm_cert_docs)

    # --- item 8: the image ----------------------------------------------------------------
    def image_required() -> None:
        msg = h.render_error({}, base=False)
        for needle in ("image.repository", "Dockerfile", "docker build", "image.tag"):
            expect(needle in msg, f"default install must fail saying how to build and set the image "
                                  f"({needle!r} missing): {msg}")
        img = big.container()["image"]
        expect(img == f"mirror.example.com/cache/{TEST_IMAGE}:test", f"global.imageRegistry prefix: {img}")
    h.check("item 8: no default image: install fails with build instructions; global.imageRegistry",
            image_required)

    # --- item 9: README agrees with the chart ---------------------------------------------
    def readme_rbac_matches() -> None:
        rows = readme_rbac(readme)
        sa_reg = {"name": "sa", "match": ["sa.example.com"], "secret": "sa", "serviceAccounts": ["default"]}
        token_reg = {"name": "tok", "match": ["1.dkr.ecr.eu-west-1.amazonaws.com"], "secret": "tok",
                     "source": {"credentialProvider": {
                         "command": "/p", "image": "1.dkr.ecr.eu-west-1.amazonaws.com/x",
                         "serviceAccountToken": {"namespace": "ns", "name": "puller", "audience": "sts"}}}}
        cases = [
            ("default", {}, {"access", "sync"}),
            ("serviceAccountToken", {"registries": [token_reg]}, {"access", "sync", "token"}),
            ("serviceAccountToken, sync off", {"registries": [token_reg], "sync": {"enabled": False}},
             {"access"}),
            ("serviceAccounts", {"registries": [sa_reg]}, {"access", "sync", "serviceAccounts"}),
            ("repairStuckPods", {"repairStuckPods": True}, {"access", "sync", "repair"}),
            ("sync off", {"sync": {"enabled": False}, "repairStuckPods": True, "registries": [sa_reg]},
             {"access"}),
            ("no cluster access", {"clusterAccess": False, "sync": {"enabled": False}}, set()),
            ("helm test", {"tests": {"enabled": True}}, {"access", "sync", "tests"}),
            ("certs.mode=self", {"certs": {"mode": "self"}}, {"access", "sync", "self"}),
            ("certs.mode=self + policy, sync off", {"certs": {"mode": "self"}, "policy": POLICY,
                                                    "sync": {"enabled": False}},
             {"access", "self", "policy"}),
            ("policy", {"policy": POLICY}, {"access", "sync", "policy"}),
            ("audit", {"audit": {"enabled": True}, "policy": POLICY}, {"access", "sync", "audit", "policy"}),
            ("audit, installCRDs=false", {"audit": {"enabled": True, "installCRDs": False}},
             {"access", "sync", "audit"}),
            ("audit + repairStuckPods", {"audit": {"enabled": True}, "repairStuckPods": True},
             {"access", "sync", "audit", "repair"}),
        ]
        problems = []
        for label, values, features in cases:
            got, want = rendered_rbac(h.render(values)), expected_rbac(rows, features)
            if got != want:
                problems.append(f"[{label}] chart {sorted((k, sorted(v)) for k, v in got.items())} != "
                                f"README {sorted((k, sorted(v)) for k, v in want.items())}")
        expect(not problems, "; ".join(problems))
    h.check("item 9: README RBAC table = the chart's rules, per feature", readme_rbac_matches)

    def token_rbac_names() -> None:
        reg = lambda n, sa: {"name": n, "match": [f"{n}.dkr.ecr.eu-west-1.amazonaws.com"], "secret": n,
                             "source": {"credentialProvider": {
                                 "command": "/p", "image": f"{n}.dkr.ecr.eu-west-1.amazonaws.com/x",
                                 "serviceAccountToken": {"namespace": "ns", "name": sa, "audience": "a"}}}}
        r = h.render({"registries": [reg("1", "b"), reg("2", "a"), reg("3", "b")]})
        rules = [x for x in r.one("ClusterRole", FULLNAME)["rules"] if "serviceaccounts/token" in x["resources"]]
        expect(rules == [{"apiGroups": [""], "resources": ["serviceaccounts/token"], "resourceNames": ["a", "b"],
                          "verbs": ["create"]}], f"token rule {rules}")
    h.check("credential providers: serviceaccounts/token only for the configured names", token_rbac_names)

    def readme_values() -> None:
        sec = readme_section(readme, "Values reference", "\n## ")
        rows = {r[0].strip("`"): r[1] for r in md_table(sec) if r and r[0].startswith("`")}
        leaves = value_leaves(h.chart.values)
        problems = [f"{k} not documented" for k in leaves if k not in rows]
        problems += [f"{k} documented but not a value" for k in rows if k not in leaves]
        for k, cell in rows.items():
            if k not in leaves:
                continue
            m = re.fullmatch(r"`([^`]*)`", cell)
            if not m:
                if k != "registries":
                    problems.append(f"{k}: default cell {cell!r} is not one `value`")
                continue
            if yaml.safe_load(m.group(1)) != leaves[k]:
                problems.append(f"{k}: README default {m.group(1)!r} != values.yaml {leaves[k]!r}")
        expect(not problems, "; ".join(problems))
    h.check("item 9 / docs: README values reference lists every value with its default", readme_values)

    def credential_provider_mounts() -> None:
        r0 = h.render({})
        spec = r0.deployment()["spec"]["template"]["spec"]
        expect("initContainers" not in spec and all(v["name"] != "credential-providers" for v in spec["volumes"]),
               "no plugin mount by default")
        r = h.render({"credentialProviders": {"image": {"repository": "reg.example/plugins", "tag": "1"}}})
        h.k8s_validate(r)
        spec = r.deployment()["spec"]["template"]["spec"]
        (init,) = spec["initContainers"]
        expect(init["image"] == "reg.example/plugins:1", f"init image {init['image']}")
        expect(init["command"] == ["cp", "-R", "/plugins/.", "/credential-providers"], f"command {init['command']}")
        expect(init["securityContext"] == r.container()["securityContext"],
               "the init container runs with the server's security context")
        expect(init["volumeMounts"] == [{"name": "credential-providers", "mountPath": "/credential-providers"}],
               f"init mounts {init['volumeMounts']}")
        mount = next(m for m in r.container()["volumeMounts"] if m["name"] == "credential-providers")
        expect(mount == {"name": "credential-providers", "mountPath": "/credential-providers", "readOnly": True},
               f"server mount {mount}")
        vol = next(v for v in spec["volumes"] if v["name"] == "credential-providers")
        expect(set(vol) == {"name", "emptyDir"}, f"volume {vol}")
        r = h.render({"credentialProviders": {"hostPath": "/usr/libexec/kubernetes/kubelet-plugins/credential-provider",
                                              "mountPath": "/plugins", "command": ["x"]}})
        h.k8s_validate(r)
        spec = r.deployment()["spec"]["template"]["spec"]
        expect("initContainers" not in spec, "no init container for hostPath")
        vol = next(v for v in spec["volumes"] if v["name"] == "credential-providers")
        expect(vol["hostPath"] == {"path": "/usr/libexec/kubernetes/kubelet-plugins/credential-provider",
                                   "type": "Directory"}, f"volume {vol}")
        mount = next(m for m in r.container()["volumeMounts"] if m["name"] == "credential-providers")
        expect(mount["readOnly"] is True and mount["mountPath"] == "/plugins", f"server mount {mount}")
        e = h.render_error({"credentialProviders": {"hostPath": "/x", "image": {"repository": "r"}}})
        expect("not both" in e, e)
        e = h.render_error({"credentialProviders": {"mountPath": "relative"}})
        expect("mountPath" in e, e)
        expect(rendered_rbac(r) == rendered_rbac(r0), "plugins need no RBAC")
    h.check("credential providers: plugins mounted read-only from an init container's copy or a hostPath",
            credential_provider_mounts)

    def readme_uninstall() -> None:
        sec = readme_section(readme, "**Uninstall.**", "Left behind")
        listed = re.findall(r"`([A-Z][A-Za-z]+)`", sec[sec.index("Helm v4"):] if "Helm v4" in sec else "")
        kinds = set()
        for r in [h.render(v) for v in (ISSUE14_VALUES, {"certs": {"mode": "certManager"}},
                                         {"certs": {"mode": "secret", "secret": {"name": "x",
                                                                                  "caBundle": DUMMY_CA_B64}}})]:
            kinds |= {d["kind"] for d in r.docs
                      if "helm.sh/hook" not in (d["metadata"].get("annotations") or {})}
        order = {k: i for i, k in enumerate(HELM_UNINSTALL_ORDER)}
        want = sorted(kinds, key=lambda k: (k not in order, order.get(k, 0), k))
        listed = [k for k in listed if k in kinds or k in order]
        expect(listed == want,
               f"README's uninstall order {listed} != Helm v4's for the chart's kinds {want}")
    h.check("item 9: README uninstall order = Helm v4's UninstallOrder for the chart's kinds",
            readme_uninstall)

    # --- additions: monitoring, NetworkPolicy, hostNetwork, helm test, ... ----------------
    metrics = metric_names_from_source()
    if args.binary:
        def metrics_agree() -> None:
            exported = metric_names_from_binary(args.binary)
            expect(exported <= metrics, f"the binary exports {exported - metrics}, unknown to src/metrics.rs")
        h.check("metric names read from src/metrics.rs include all the binary's /metrics exports",
                metrics_agree)

    def service_monitor() -> None:
        expect(not r0.all("ServiceMonitor") and not r0.all("PrometheusRule"), "off by default")
        sm = big.one("ServiceMonitor", FULLNAME)
        expect(sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"])
        expect(set(sm) <= {"apiVersion", "kind", "metadata", "spec", "__source__"}, f"keys {set(sm)}")
        spec = sm["spec"]
        expect(set(spec) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}, f"spec keys {set(spec)}")
        svc = big.one("Service", FULLNAME)
        sel = spec["selector"]["matchLabels"]
        expect(all(svc["metadata"]["labels"].get(k) == v for k, v in sel.items()),
               f"selector {sel} matches the Service's labels {svc['metadata']['labels']}")
        expect(spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}, f"{spec['namespaceSelector']}")
        ep = spec["endpoints"]
        ports = {p["name"] for p in svc["spec"]["ports"]}
        expect(len(ep) == 1 and ep[0]["port"] in ports and ep[0]["port"] == "metrics"
               and ep[0]["scheme"] == "http" and ep[0]["path"] == "/metrics", f"endpoints {ep}")
        expect(set(ep[0]) <= {"port", "scheme", "path", "interval", "scrapeTimeout", "relabelings",
                              "metricRelabelings"}, f"endpoint keys {set(ep[0])}")
        for k in ("interval", "scrapeTimeout"):
            expect(re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep[0][k]), f"{k} {ep[0][k]}")
        expect(sm["metadata"]["labels"].get("release") == "prom", "serviceMonitor.labels")
    h.check("monitoring: ServiceMonitor (structure; selects the Service's metrics port)", service_monitor)

    def prometheus_rule() -> None:
        pr = big.one("PrometheusRule", FULLNAME)
        groups = pr["spec"]["groups"]
        expect(set(pr["spec"]) == {"groups"} and groups, "spec.groups")
        alerts = {}
        for g in groups:
            expect(set(g) <= {"name", "interval", "rules"} and g["name"], f"group keys {set(g)}")
            for rule in g["rules"]:
                expect(set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, f"rule keys {set(rule)}")
                expect(rule.get("alert") and isinstance(rule.get("expr"), str) and rule["expr"].strip(),
                       f"rule {rule}")
                expect(rule["labels"].get("severity") in ("warning", "critical"), f"severity {rule}")
                expect(rule["annotations"].get("summary"), f"summary {rule}")
                if "for" in rule:
                    expect(re.fullmatch(r"[0-9]+[smh]", rule["for"]), f"for {rule['for']}")
                e = rule["expr"]
                expect(e.count("(") == e.count(")") and e.count("{") == e.count("}"), f"unbalanced: {e}")
                alerts[rule["alert"]] = e
        def one(pred: Callable[[str], bool], what: str) -> None:
            expect(any(pred(e) for e in alerts.values()), f"no alert on {what}: {list(alerts)}")
        one(lambda e: 'outcome="invalid"' in e and "admission_requests_total" in e, "admission errors rate")
        one(lambda e: "histogram_quantile(0.99" in e and "admission_duration_seconds_bucket" in e,
            "p99 latency")
        one(lambda e: "sync_conflicts_total" in e and "increase(" in e, "sync conflicts increasing")
        one(lambda e: "sync_leader" in e and "< 1" in e, "no replica leading")
        one(lambda e: "sync_reconciles_total" in e and 'result="failure"' in e, "reconcile failures")
        one(lambda e: "tls_certificate_expiry_timestamp_seconds" in e and "time()" in e,
            "certificate near expiry")
        one(lambda e: "credential_provider_expiry_timestamp_seconds" in e
            and "credential_provider_next_refresh_timestamp_seconds" in e and "time()" in e,
            "credential-provider credentials expiring before the next successful refresh")
        lat = next(e for e in alerts.values() if "histogram_quantile(0.99" in e)
        expect(lat.split(">")[-1].strip() == "4", f"latency threshold 0.8 x 5 s = 4: {lat}")
        leader = next(n for n, e in alerts.items() if "sync_leader" in e)
        expect(next(r for g in groups for r in g["rules"] if r["alert"] == leader).get("for") == "5m",
               "leader alert after 5 minutes")
        sel = f'job="{FULLNAME}",namespace="{NAMESPACE}"'
        for n, e in alerts.items():
            if "pullsecret_injector_" in e or "up{" in e:
                expect(sel in e, f"{n} is scoped to the release's series ({sel}): {e}")
        unknown = used_metrics(" ".join(alerts.values())) - metrics
        expect(not unknown, f"alerts use metrics the binary does not export: {unknown}")
        r = h.render({"monitoring": {"prometheusRule": {"enabled": True}}, "sync": {"enabled": False}})
        names = [x["alert"] for g in r.one("PrometheusRule", FULLNAME)["spec"]["groups"] for x in g["rules"]]
        expect(not any("Sync" in n or "Reconcile" in n or "Credential" in n for n in names),
               f"no sync alerts without sync: {names}")
        r = h.render({"monitoring": {"prometheusRule": {"enabled": True, "latencySeconds": 0.25}},
                      "webhook": {"timeoutSeconds": 1}})
        e = next(x["expr"] for g in r.one("PrometheusRule", FULLNAME)["spec"]["groups"] for x in g["rules"]
                 if "histogram_quantile" in x["expr"])
        expect(e.split(">")[-1].strip() == "0.25", f"latencySeconds override: {e}")
    h.check("monitoring: PrometheusRule (structure; the alerts that matter; metric names exist)",
            prometheus_rule)

    def dashboard() -> None:
        cm = big.one("ConfigMap", f"{FULLNAME}-dashboard")
        expect(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "label grafana_dashboard: \"1\"")
        (key, text), = cm["data"].items()
        expect(key.endswith(".json"), key)
        dash = json.loads(text)
        expect(dash.get("title") and dash.get("uid") and dash.get("panels"), "title, uid, panels")
        exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
        expect(len(exprs) >= 10, f"{len(exprs)} queries")
        unknown = used_metrics(" ".join(exprs)) - metrics
        expect(not unknown, f"dashboard uses metrics the binary does not export: {unknown}")
        ids = [p["id"] for p in dash["panels"]]
        expect(len(ids) == len(set(ids)), "unique panel ids")
        expect(not r0.maybe_named("ConfigMap", f"{FULLNAME}-dashboard"), "off by default")
    h.check("monitoring: Grafana dashboard ConfigMap (label, JSON, metric names exist)", dashboard)

    def network_policy() -> None:
        expect(not r0.all("NetworkPolicy"), "off by default")
        r = h.render({"networkPolicy": {"enabled": True}})
        np = r.one("NetworkPolicy", FULLNAME)
        spec = np["spec"]
        expect(spec["podSelector"]["matchLabels"] == r.deployment()["spec"]["selector"]["matchLabels"],
               "selects the injector's pods")
        expect(spec["policyTypes"] == ["Ingress"], "ingress only")
        by_port = {x["ports"][0]["port"]: x for x in spec["ingress"]}
        expect("from" not in by_port[8443], "webhook port open to any source by default")
        expect(by_port[9090]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "prometheus"},
               f"metrics from Prometheus: {by_port[9090]}")
        np = big.one("NetworkPolicy", FULLNAME)
        by_port = {x["ports"][0]["port"]: x for x in np["spec"]["ingress"]}
        expect(by_port[10443]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}], f"webhookFrom: {by_port}")
        h.k8s_validate(r)
    h.check("NetworkPolicy: webhook port from anywhere (configurable), metrics from a selector",
            network_policy)

    def pod_options() -> None:
        d = big.deployment()
        pod = d["spec"]["template"]["spec"]
        c = big.container()
        expect(pod.get("hostNetwork") is True and pod.get("dnsPolicy") == "ClusterFirstWithHostNet",
               "hostNetwork + ClusterFirstWithHostNet")
        expect("hostNetwork" not in r0.deployment()["spec"]["template"]["spec"], "no hostNetwork by default")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        expect(ports == {"webhook": 10443, "metrics": 9090}, f"ports {ports}")
        expect(arg_of(c["args"], "--listen") == "[::]:10443", f"--listen {arg_of(c['args'], '--listen')}")
        svc = big.one("Service", FULLNAME)
        expect({p["name"]: p["targetPort"] for p in svc["spec"]["ports"]} == {"https": "webhook",
                                                                              "metrics": "metrics"}, "targetPorts")
        expect(d["spec"]["revisionHistoryLimit"] == 2 and d["spec"]["strategy"]["rollingUpdate"]
               == {"maxUnavailable": 1, "maxSurge": 0}, "revisionHistoryLimit, updateStrategy")
        expect(r0.deployment()["spec"]["strategy"] == {"type": "RollingUpdate", "rollingUpdate":
               {"maxUnavailable": 0, "maxSurge": 1}}, "default strategy unchanged")
        expect({"name": "extra", "emptyDir": {}} in pod["volumes"], "extraVolumes")
        expect({"name": "extra", "mountPath": "/extra", "readOnly": True} in c["volumeMounts"], "extraVolumeMounts")
    h.check("pod options: hostNetwork + ports, updateStrategy, revisionHistoryLimit, extraVolumes",
            pod_options)

    def helm_test() -> None:
        expect(not any("helm.sh/hook" in (d["metadata"].get("annotations") or {}) for d in r0.docs),
               "no test objects by default")
        hooks = [d for d in big.docs if (d["metadata"].get("annotations") or {}).get("helm.sh/hook") == "test"]
        kinds = sorted(d["kind"] for d in hooks)
        expect(kinds == ["Pod", "Role", "RoleBinding", "ServiceAccount"], f"test hook objects {kinds}")
        pod = next(d for d in hooks if d["kind"] == "Pod")
        sa = next(d for d in hooks if d["kind"] == "ServiceAccount")
        role = next(d for d in hooks if d["kind"] == "Role")
        rb = next(d for d in hooks if d["kind"] == "RoleBinding")
        for d in (sa, role, rb):
            expect(int(d["metadata"]["annotations"]["helm.sh/hook-weight"])
                   < int(pod["metadata"]["annotations"]["helm.sh/hook-weight"]), "RBAC before the Pod")
        expect(role["metadata"]["namespace"] == "team-a" and rb["metadata"]["namespace"] == "team-a",
               "Role/RoleBinding in tests.namespace")
        expect(role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}],
               f"only pods create: {role['rules']}")
        expect(rb["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"],
                                   "namespace": NAMESPACE}] and rb["roleRef"]["name"] == role["metadata"]["name"],
               "binding to the test ServiceAccount")
        spec = pod["spec"]
        expect(spec["serviceAccountName"] == sa["metadata"]["name"] and spec["restartPolicy"] == "Never",
               "test Pod identity")
        expect(pod["metadata"]["namespace"] == NAMESPACE, "test Pod in the release namespace (never intercepted)")
        sel = big.deployment()["spec"]["selector"]["matchLabels"]
        expect(not all(pod["metadata"]["labels"].get(k) == v for k, v in sel.items()),
               "the test Pod must not carry the Service/PDB selector labels")
        c = spec["containers"][0]
        expect(c["image"] == "mirror.example.com/cache/registry.k8s.io/kubectl:v1.37.2", f"test image {c['image']}")
        env = {e["name"]: e["value"] for e in c["env"]}
        script = " ".join(c["command"] + c["args"])
        expect("--dry-run=server" in script and "kubectl" in script, f"server-side dry run: {script}")
        expect(env["NAMESPACE"] == "team-a" and env["SECRET"] == "ghcr-acme-pull", f"env {env}")
        if args.binary:
            # The test's expectation holds for the rendered config: `mutate` injects SECRET.
            with tempfile.TemporaryDirectory() as d:
                cfg = Path(d) / "config.yaml"
                cfg.write_text(big.config_text())
                man = Path(d) / "pod.json"
                man.write_text(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "t"},
                                           "spec": {"containers": [{"name": "t", "image": env["IMAGE"]}]}}))
                out = subprocess.run([args.binary, "mutate", "--config", str(cfg), "-f", str(man),
                                      "-n", env["NAMESPACE"]], capture_output=True, text=True, timeout=60)
                expect(out.returncode == 0, f"mutate: {out.stderr}")
                pulled = [x["name"] for d_ in yaml.safe_load_all(out.stdout) if d_
                          for x in (d_.get("spec", {}).get("imagePullSecrets") or [])]
                expect(env["SECRET"] in pulled, f"{env['IMAGE']} in {env['NAMESPACE']} gets {pulled}")
    h.check("helm test: dry-run Pod create with least RBAC (hooks, weights, namespace)", helm_test)

    def self_managed() -> None:
        r = s("certs.mode=self + policy")
        a = r.container()["args"]
        name = f"{FULLNAME}-managed-tls"
        expect(arg_of(a, "--managed-certs") == name and arg_of(a, "--managed-certs-service") == FULLNAME
               and arg_of(a, "--mutating-webhook-configuration") == FULLNAME
               and arg_of(a, "--validating-webhook-configuration") == FULLNAME, f"args {a}")
        expect("--tls-cert" not in a and "--tls-key" not in a, "no certificate files in self mode")
        expect(arg_of(a, "--ca-validity") == "1825d" and arg_of(a, "--cert-validity") == "365d"
               and arg_of(a, "--ca-propagation") == "60s", f"lifetimes {a}")
        expect(not any("secret" in x for x in projected_sources(r)), "no TLS Secret mounted")
        expect(not r.all("Secret") and not r.all("Certificate"), "nothing certificate-related rendered")
        for w in (r.mutating(), r.validating()):
            expect("caBundle" not in w["clientConfig"], "caBundle left to the server")
        again = h.render({"certs": {"mode": "self"}, "policy": POLICY})
        expect([d for d in again.docs] == [d for d in r.docs], "two renders are identical (GitOps-stable)")
        role = r.one("Role", f"{FULLNAME}-certs")
        expect(role["rules"] == [
            {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]},
            {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [name],
             "verbs": ["get", "list", "watch", "update"]}], f"own Secret only: {role['rules']}")
        hooks = [x for x in r.rules("ClusterRole", FULLNAME) if x["apiGroups"] == ["admissionregistration.k8s.io"]]
        expect(hooks == [{"apiGroups": ["admissionregistration.k8s.io"],
                          "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"],
                          "resourceNames": [FULLNAME], "verbs": ["get", "list", "watch", "update"]}],
               f"own webhook configurations only: {hooks}")
        r1 = h.render({"certs": {"mode": "self"}})
        expect("--validating-webhook-configuration" not in r1.container()["args"], "no validating without policy")
        msg = h.render_error({"certs": {"mode": "self"}, "clusterAccess": False, "sync": {"enabled": False}})
        expect("certs.mode=self" in msg and "clusterAccess" in msg, f"self needs cluster access: {msg}")
    h.check("certs.mode=self: --managed-certs, nothing certificate-related rendered, stable renders, "
            "RBAC limited to its own objects", self_managed)

    if args.binary:
        def flags_exist() -> None:
            out = subprocess.run([args.binary, "serve", "--help"], capture_output=True, text=True, timeout=60)
            known = set(re.findall(r"--[a-z][a-z-]+", out.stdout))
            problems = []
            for label in ("default (certs.mode=helm, no policy)", "issue 14 features on", "sync.enabled=false",
                          "clusterAccess=false", "certs.mode=self + policy"):
                for a in s(label).container()["args"]:
                    if a.startswith("--") and a not in known:
                        problems.append(f"[{label}] {a}")
            expect(not problems, f"flags `serve --help` does not list: {problems}")
        h.check("every flag the chart passes is one `serve --help` lists", flags_exist)


POLICY = {
    "mode": "enforce",
    "allow": ["*.tencentcloudcr.com", "docker.io/library", "registry.k8s.io"],
    "deny": ["docker.io/evilcorp"],
    "requireAlwaysPull": "none",
    "exemptNamespaces": ["kube-system", "ops"],
    "overrides": [{"namespaces": ["sandbox-*"], "mode": "warn", "allow": ["*"]}],
}


# --------------------------------------------------------------------------
# Issue 18 item 6: mode=admissionPolicy. The manifest comes from the binary
# (`export-policies --values`) when --binary is given, else from a stand-in of the same
# shape (so the chart's own logic is still exercised without a build).

POLICY_KINDS = {"MutatingAdmissionPolicy", "MutatingAdmissionPolicyBinding",
                "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"}
PLAIN_REGISTRIES = [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull"}]
SYNCED_REGISTRIES = [{"name": "acme", "match": ["ghcr.io/acme"], "secret": "acme-pull",
                      "source": {"namespace": "creds", "name": "acme"}}]


def stand_in_manifest(values: dict[str, Any], defaults: dict[str, Any]) -> str:
    """What `export-policies` prints, reduced to what the chart reads: kinds, names, the
    ownership label, policyName, and the `entryNames`/`secrets` variables."""
    regs = values.get("registries", defaults["registries"]) or []
    lit = lambda xs: "[" + ", ".join(f"'{x}'" for x in xs) + "]"
    labels = {"app.kubernetes.io/managed-by": "pullsecret-injector"}
    names = ["pullsecret-injector-inject", "pullsecret-injector-inject-warnings"]
    if values.get("policy"):
        names += ["pullsecret-injector-policy", "pullsecret-injector-policy-warn"]
    docs = []
    for i, n in enumerate(names):
        kind = "MutatingAdmissionPolicy" if i == 0 else "ValidatingAdmissionPolicy"
        spec: dict[str, Any] = {"matchConstraints": {"resourceRules": [
            {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["pods"]}]}}
        if i == 0:
            spec.update({"variables": [
                {"name": "secrets", "expression": lit(r["secret"] for r in regs)},
                {"name": "entryNames", "expression": lit(r["name"] for r in regs)}],
                "mutations": [{"patchType": "JSONPatch", "jsonPatch": {"expression": "[]"}}],
                "reinvocationPolicy": "Never"})
        else:
            spec["validations"] = [{"expression": "true"}]
        docs.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                     "metadata": {"name": n, "labels": labels}, "spec": spec})
        bspec: dict[str, Any] = {"policyName": n}
        if i:
            bspec["validationActions"] = ["Warn"]
        docs.append({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind + "Binding",
                     "metadata": {"name": n, "labels": labels}, "spec": bspec})
    return "---\n".join(yaml.safe_dump(d) for d in docs)


def policy_mode_checks(h: "Harness", args: argparse.Namespace) -> None:
    defaults = h.chart.values
    readme = Path(args.readme).read_text()

    def export(values: dict[str, Any], fmt: str = "yaml") -> str:
        if not args.binary:
            return stand_in_manifest(values, defaults)
        with tempfile.TemporaryDirectory() as d:
            vf = Path(d) / "values.yaml"
            vf.write_text(yaml.safe_dump(values))
            out = subprocess.run([args.binary, "export-policies", "--values", str(vf), "-o", fmt],
                                 capture_output=True, text=True, timeout=60)
            expect(out.returncode == 0, f"export-policies --values: {out.stderr}")
            return out.stdout

    def policy_values(values: dict[str, Any], manifest: str | None = None) -> dict[str, Any]:
        return {**values, "mode": "admissionPolicy",
                "admissionPolicies": {"manifest": export(values) if manifest is None else manifest}}

    def render(values: dict[str, Any], manifest: str | None = None) -> Rendered:
        return h.render(policy_values(values, manifest))

    def kinds(r: Rendered) -> set[str]:
        return {d["kind"] for d in r.docs}

    def validate_latest(r: Rendered) -> None:
        # MutatingAdmissionPolicy v1 exists from Kubernetes 1.36: not in the 1.30 schemas.
        saved = h.kube_versions
        h.kube_versions = [v for v in saved if v != MIN_KUBE] or [kv_utils.latest_version()]
        try:
            h.k8s_validate(r)
        finally:
            h.kube_versions = saved

    no_work = {"registries": PLAIN_REGISTRIES, "policy": {"deny": ["docker.io/evilcorp"]}}

    def lint() -> None:
        h.lint(policy_values(no_work))
        h.lint(policy_values({"registries": SYNCED_REGISTRIES}))
    h.check("issue 18: helm lint --strict [mode=admissionPolicy, with and without the controller]", lint)

    def policies_only() -> None:
        r = render(no_work)
        expect(kinds(r) == POLICY_KINDS, f"only the policies and bindings, got {sorted(kinds(r))}")
        for absent in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Deployment",
                       "Service", "Secret", "ConfigMap", "ServiceAccount", "ClusterRole", "Role"):
            expect(not r.all(absent), f"{absent} rendered without controller work")
        validate_latest(r)
        names = sorted(d["metadata"]["name"] for d in r.all("ValidatingAdmissionPolicy"))
        expect(names == ["pullsecret-injector-inject-warnings", "pullsecret-injector-policy",
                         "pullsecret-injector-policy-warn"], f"the exported policies: {names}")
        for d in r.docs:
            labels = d["metadata"]["labels"]
            expect(labels.get("app.kubernetes.io/managed-by") == "pullsecret-injector"
                   and labels.get("app.kubernetes.io/instance") == RELEASE,
                   f"{d['kind']} {d['metadata']['name']}: keeps our label, gains the release's: {labels}")
        for b in r.all("MutatingAdmissionPolicyBinding") + r.all("ValidatingAdmissionPolicyBinding"):
            exprs = b["spec"]["matchResources"]["namespaceSelector"]["matchExpressions"]
            excluded = next(e["values"] for e in exprs if e["key"] == "kubernetes.io/metadata.name")
            expect(NAMESPACE in excluded and "kube-system" in excluded,
                   f"{b['metadata']['name']}: the webhooks' namespace exclusions: {excluded}")
            optout = {"key": "pullsecret-injector.io/inject", "operator": "NotIn", "values": ["disabled"]}
            mutating_side = b["spec"]["policyName"].endswith(("-inject", "-inject-warnings"))
            expect((optout in exprs) == mutating_side,
                   f"{b['metadata']['name']}: opt-out label on the injection side only: {exprs}")
        w = h.render({"registries": PLAIN_REGISTRIES, "webhook": {"excludeNamespaces": ["batch"]}})
        p = render({"registries": PLAIN_REGISTRIES, "webhook": {"excludeNamespaces": ["batch"]}})
        b = p.one("MutatingAdmissionPolicyBinding")["spec"]["matchResources"]["namespaceSelector"]
        expect(b == w.mutating()["namespaceSelector"],
               f"the mutating binding is scoped as the mutating webhook: {b} != {w.mutating()['namespaceSelector']}")
        expect("admissionPolicy" in p.notes and "export-policies --values" in p.notes
               and "MutatingAdmissionPolicy/pullsecret-injector-inject" in p.notes,
               f"NOTES names the policies and the re-export command: {p.notes}")
    h.check("issue 18: mode=admissionPolicy without controller work renders the exported policies "
            "(scoped as the webhooks), nothing else", policies_only)

    def with_controller() -> None:
        for extra in ({}, {"certs": {"mode": "self"}}, {"certs": {"mode": "certManager"}},
                      {"clientCA": {"secretName": "ca"}}):
            r = render({"registries": SYNCED_REGISTRIES, **extra})
            label = f"sync + source {extra}"
            for absent in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "Secret",
                           "Certificate", "Issuer", "Service"):
                expect(not r.all(absent), f"[{label}] {absent} rendered")
            c = r.container()
            a = c["args"]
            expect(c["name"] == "controller" and arg_of(a, "--listen") == "localhost:0",
                   f"[{label}] no webhook: the listener on an ephemeral loopback port: {c['name']} {a}")
            for flag in ("--tls-cert", "--managed-certs", "--client-ca", "--no-sync", "--no-cluster-access"):
                expect(flag not in a, f"[{label}] {flag} in {a}")
            expect([p["name"] for p in c["ports"]] == ["metrics"], f"[{label}] ports {c['ports']}")
            srcs = projected_sources(r)
            expect(len(srcs) == 1 and "configMap" in srcs[0], f"[{label}] only config.yaml mounted: {srcs}")
            rules = cluster_rules(r)
            expect(rules == {"namespaces": {"get", "list", "watch"},
                             "secrets": {"get", "list", "watch", "create", "update", "delete"},
                             "events": {"create", "patch"}}, f"[{label}] the sync controller's rules: {rules}")
            expect(r.maybe_named("Role", f"{FULLNAME}-leader-election") and not r.maybe_named("Role", f"{FULLNAME}-certs"),
                   f"[{label}] lease Role, no certs Role")
            r.one("ConfigMap", FULLNAME)
            r.one("ServiceAccount", FULLNAME)
            expect(kinds(r) >= POLICY_KINDS, f"[{label}] policies rendered too")
            validate_latest(r)
        r = render({"registries": SYNCED_REGISTRIES,
                    "monitoring": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
                    "networkPolicy": {"enabled": True}})
        svc = r.one("Service", FULLNAME)
        expect([p["name"] for p in svc["spec"]["ports"]] == ["metrics"], f"only the metrics port: {svc['spec']}")
        r.one("ServiceMonitor", FULLNAME)
        alerts = [x["alert"] for g in r.one("PrometheusRule", FULLNAME)["spec"]["groups"] for x in g["rules"]]
        for a in ("AdmissionErrors", "AdmissionLatencyHigh", "CertificateExpiring", "TLSReloadFailed",
                  "WebhookCallsFailing", "WebhookFailingOpen"):
            expect(f"PullsecretInjector{a}" not in alerts, f"no webhook alert {a}: {alerts}")
        expect("PullsecretInjectorNoSyncLeader" in alerts, f"sync alerts kept: {alerts}")
        ingress = r.one("NetworkPolicy", FULLNAME)["spec"]["ingress"]
        expect([x["ports"][0]["port"] for x in ingress] == [9090], f"no webhook port in the NetworkPolicy: {ingress}")
        sa = {"name": "sa", "match": ["sa.example.com"], "secret": "sa", "serviceAccounts": ["default"]}
        r = render({"registries": [sa]})
        expect(cluster_rules(r).get("serviceaccounts") == {"list", "watch", "patch"}, "serviceAccounts alone is work")
        r = render({"registries": PLAIN_REGISTRIES, "repairStuckPods": True})
        expect(cluster_rules(r).get("pods") == {"list", "delete"}, "repairStuckPods alone is work")
        for values in ({"registries": SYNCED_REGISTRIES, "sync": {"enabled": False}},
                       {"registries": SYNCED_REGISTRIES, "clusterAccess": False, "sync": {"enabled": False}},
                       {"registries": [{**PLAIN_REGISTRIES[0], "namespaces": {"selector": {"matchLabels": {"a": "b"}}}}],
                        "clusterAccess": False, "sync": {"enabled": False}},
                       {"registries": PLAIN_REGISTRIES, "replicaCount": 0, "webhook": {"failurePolicy": "Fail"}}):
            r = render(values)
            expect(kinds(r) == POLICY_KINDS, f"{values}: no controller work, only policies: {sorted(kinds(r))}")
    h.check("issue 18: mode=admissionPolicy runs the Deployment only for the controller's work, "
            "as no webhook (no TLS, no webhook port, Service only for a ServiceMonitor)", with_controller)

    if args.binary:
        def json_list() -> None:
            a = render(no_work)
            b = render(no_work, manifest=export(no_work, "json"))
            expect(a.docs == b.docs, "-o json (a List) renders the same objects as YAML")
        h.check("issue 18: admissionPolicies.manifest accepts export-policies -o json", json_list)

    def refusals() -> None:
        good = export(no_work)
        foreign = yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})
        unlabelled = yaml.safe_dump({"apiVersion": "admissionregistration.k8s.io/v1",
                                     "kind": "ValidatingAdmissionPolicy", "metadata": {"name": "mine"},
                                     "spec": {"validations": [{"expression": "true"}]}})
        docs = [d for d in yaml.safe_load_all(good) if d]
        no_policy_of_binding = "---\n".join(yaml.safe_dump(d) for d in docs
                                            if d["metadata"]["name"] != "pullsecret-injector-policy"
                                            or d["kind"].endswith("Binding"))
        other = export({"registries": PLAIN_REGISTRIES + [{"name": "b", "match": ["b.io"], "secret": "b-pull"}],
                        "policy": no_work["policy"]})
        for label, values, manifest, needles in (
            ("missing", no_work, "", ["admissionPolicies.manifest", "empty", "export-policies --values"]),
            ("not YAML", no_work, "kind: [", ["not YAML", "export-policies"]),
            ("a foreign kind", no_work, good + "---\n" + foreign, ["ConfigMap", "only the", "export-policies"]),
            ("a foreign policy", no_work, good + "---\n" + unlabelled,
             ["ValidatingAdmissionPolicy \"mine\"", "managed-by=pullsecret-injector"]),
            ("a binding without its policy", no_work, no_policy_of_binding,
             ["pullsecret-injector-policy", "does not hold"]),
            ("other registries", no_work, other, ["exported from other values", "['acme', 'b']", "['acme']"]),
            ("no policy objects while values set policy", no_work, export({"registries": PLAIN_REGISTRIES}),
             ["no registry-policy objects", "policy"]),
            ("policy objects while values set none", {"registries": PLAIN_REGISTRIES}, good,
             ["registry-policy objects", "set no `policy`"]),
            ("injectOnlyIfPresent", {**no_work, "injectOnlyIfPresent": True}, good, ["injectOnlyIfPresent", "mode=webhook"]),
        ):
            msg = h.render_error(policy_values(values, manifest))
            expect(all(n in msg for n in needles), f"[{label}] message lacks {needles}: {msg}")
            if args.verbose:
                print(f"      [{label}] " + " ".join(msg.split())[:220])
        msg = h.render_error({**no_work, "admissionPolicies": {"manifest": good}})
        expect("mode is webhook" in msg and "mode=admissionPolicy" in msg, f"manifest in webhook mode: {msg}")
        msg = h.render_error({"mode": "policies"})
        expect("mode" in msg, f"schema: bad mode: {msg}")
    h.check("issue 18: mode=admissionPolicy refuses a missing, foreign, incomplete or stale manifest "
            "(naming export-policies) and injectOnlyIfPresent; a manifest in webhook mode", refusals)

    def webhook_mode_unchanged() -> None:
        r = h.render({})
        expect(not (kinds(r) & POLICY_KINDS), f"mode=webhook (the default) renders no policies: {kinds(r)}")
        expect(defaults.get("mode") == "webhook" and defaults["admissionPolicies"]["manifest"] == "",
               "defaults: mode webhook, no manifest")
        sec = readme_section(readme, "## Install on a cluster", "\n## ")
        expect("mode: admissionPolicy" in sec and "export-policies --values" in sec,
               "README's install section explains mode: admissionPolicy")
    h.check("issue 18: mode=webhook is the default and renders no policies; README documents the mode",
            webhook_mode_unchanged)

    if args.binary:
        def flags() -> None:
            out = subprocess.run([args.binary, "serve", "--help"], capture_output=True, text=True, timeout=60)
            known = set(re.findall(r"--[a-z][a-z-]+", out.stdout))
            a = render({"registries": SYNCED_REGISTRIES}).container()["args"]
            expect(all(x in known for x in a if x.startswith("--")), f"flags `serve --help` lacks: {a}")
            expect(out.returncode == 0, out.stderr)
        h.check("issue 18: the controller's flags are ones `serve --help` lists", flags)


# --------------------------------------------------------------------------
# Issue 20: the background audit (audit.*): the controller's leader judges running Pods
# and writes wg-policy PolicyReports / ClusterPolicyReports (wgpolicyk8s.io/v1alpha2).

AUDIT_GROUP = "wgpolicyk8s.io"
AUDIT_CRDS = {"policyreports.wgpolicyk8s.io": ("PolicyReport", "Namespaced",
                                               "wgpolicyk8s.io_policyreports.yaml"),
              "clusterpolicyreports.wgpolicyk8s.io": ("ClusterPolicyReport", "Cluster",
                                                      "wgpolicyk8s.io_clusterpolicyreports.yaml")}
AUDIT_REPORT_VERBS = {"get", "list", "create", "update", "delete"}
# Fields the server's reports carry (src/audit/report.rs) that the shipped CRD schema does
# not declare, so the API server prunes them (fieldValidation=Strict: rejects them). The
# vendored upstream v1alpha2 schema (wg-policy-prototypes cd234547) predates `source`.
# If the CRDs are updated to a schema that declares a field, drop it from here.
# Fields the server writes that the shipped CRDs do not declare: none. Each undeclared
# field would be pruned with one Warning header per result, and a response of more than
# 100 headers fails the server's HTTP client (hyper's h1_max_headers), so a report of
# ~95 results could never be written (found by benches/audit.rs with `results[].source`).
AUDIT_FIELDS_NOT_IN_CRD: set[str] = set()


def audit_sample_report(kind: str) -> dict[str, Any]:
    """A report as the server writes it (src/audit/report.rs): every field it sets."""
    pod = {"apiVersion": "v1", "kind": "Pod", "namespace": "team-a", "name": "web-1",
           "uid": "0b6f4a4e-2d0c-4f57-9d38-6f1f0c1d2e3f"}
    result = {"policy": "pullsecret-injector", "rule": "deny", "result": "fail",
              "message": "image docker.io/evilcorp/x is denied by policy.deny",
              "category": "Registry policy", "severity": "high",
              "scored": True, "timestamp": {"seconds": 1767225600, "nanos": 0},
              "resources": [pod],
              "properties": {"site": "container", "container": "web", "image": "docker.io/evilcorp/x",
                             "mode": "enforce", "rules": "policy", "registry": "docker"}}
    warn = {**result, "rule": "requireAlwaysPull", "result": "warn", "severity": "medium"}
    error = {**result, "rule": "unreadablePod", "result": "error", "properties": {}}
    meta: dict[str, Any] = {"name": "pullsecret-injector",
                            "labels": {"app.kubernetes.io/managed-by": "pullsecret-injector"},
                            "annotations": {"pullsecret-injector.io/results-truncated": "1 of 2"}}
    if kind == "PolicyReport":
        meta["namespace"] = "team-a"
    return {"apiVersion": f"{AUDIT_GROUP}/v1alpha2", "kind": kind, "metadata": meta,
            "scope": {"apiVersion": "v1", "kind": "Namespace", "name": "team-a"},
            "summary": {"pass": 3, "fail": 1, "warn": 1, "error": 1, "skip": 0},
            "results": [result, warn, error]}


def fields_not_in_schema(obj: Any, schema: dict[str, Any], path: str = "") -> set[str]:
    """Paths of `obj` a CRD's structural schema does not declare (the API server prunes
    them). metadata is the API server's own (ObjectMeta), not the CRD's."""
    out: set[str] = set()
    if isinstance(obj, dict):
        props = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for k, v in obj.items():
            p = f"{path}{k}"
            if p == "metadata":
                continue
            if k in props:
                out |= fields_not_in_schema(v, props[k], p + ".")
            elif isinstance(extra, dict):
                out |= fields_not_in_schema(v, extra, p + ".")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.add(p)
    elif isinstance(obj, list):
        for v in obj:
            out |= fields_not_in_schema(v, schema.get("items") or {}, path.rstrip(".") + "[].")
    return out


def drop_paths(obj: Any, paths: set[str], path: str = "") -> Any:
    if isinstance(obj, dict):
        return {k: drop_paths(v, paths, f"{path}{k}.") for k, v in obj.items() if f"{path}{k}" not in paths}
    if isinstance(obj, list):
        return [drop_paths(v, paths, path.rstrip(".") + "[].") for v in obj]
    return obj


def audit_checks(h: "Harness", args: argparse.Namespace, r0: Rendered) -> None:
    on = {"audit": {"enabled": True}, "policy": POLICY}

    def crds(r: Rendered) -> dict[str, dict[str, Any]]:
        return {d["metadata"]["name"]: d for d in r.all("CustomResourceDefinition")}

    def report_rules(r: Rendered) -> list[dict[str, Any]]:
        return [x for x in r.rules("ClusterRole", FULLNAME) if AUDIT_GROUP in x["apiGroups"]]

    def pod_rules(r: Rendered) -> list[dict[str, Any]]:
        return [x for x in r.rules("ClusterRole", FULLNAME) if "pods" in x["resources"]]

    def off() -> None:
        for label, values in (("default", None), ("repairStuckPods", {"repairStuckPods": True}),
                              ("policy", {"policy": POLICY}), ("sync off", {"sync": {"enabled": False}}),
                              ("installCRDs without enabled", {"audit": {"installCRDs": True}})):
            r = r0 if values is None else h.render(values)
            expect(not r.all("CustomResourceDefinition"), f"[{label}] CRDs rendered with audit off")
            expect("audit" not in r.config(), f"[{label}] audit block in config.yaml: {r.config_text()}")
            expect(not report_rules(r), f"[{label}] {AUDIT_GROUP} rules with audit off: {report_rules(r)}")
            pods = cluster_rules(r).get("pods", set())
            expect("watch" not in pods, f"[{label}] pods watch with audit off: {pods}")
            want = {"list", "delete"} if values and values.get("repairStuckPods") else set()
            expect(pods == want, f"[{label}] pods verbs {pods}, want {want or 'none'}")
        expect(h.chart.values["audit"] == {"enabled": False, "installCRDs": True, "maxResultsPerReport": 100},
               f"defaults: {h.chart.values['audit']}")
    h.check("audit off (default): no CRD, no audit config block, no pods list/watch, "
            "no wgpolicyk8s.io rules", off)

    def lint() -> None:
        h.lint(on)
        h.lint({"audit": {"enabled": True, "installCRDs": False}})
    h.check("audit: helm lint --strict [audit on, with and without the CRDs]", lint)

    def crds_on() -> None:
        r = h.render(on)
        got = crds(r)
        expect(set(got) == set(AUDIT_CRDS), f"CRDs {sorted(got)}")
        vendored = CHART_DIR / "files" / "wgpolicyk8s.io"
        for name, (kind, scope, file) in AUDIT_CRDS.items():
            d = got[name]
            expect(d["apiVersion"] == "apiextensions.k8s.io/v1", f"{name}: apiVersion {d['apiVersion']}")
            spec = d["spec"]
            expect(spec["group"] == AUDIT_GROUP and spec["names"]["kind"] == kind and spec["scope"] == scope,
                   f"{name}: group/kind/scope {spec['group']} {spec['names']['kind']} {spec['scope']}")
            versions = {v["name"]: v for v in spec["versions"]}
            expect("v1alpha2" in versions and versions["v1alpha2"]["served"] is True
                   and versions["v1alpha2"]["storage"] is True, f"{name}: v1alpha2 served and stored: {list(versions)}")
            ann = d["metadata"].get("annotations") or {}
            expect(ann.get("helm.sh/resource-policy") == "keep",
                   f"{name}: helm.sh/resource-policy: keep (other tools' reports live in it): {ann}")
            expect(d["metadata"]["labels"].get("app.kubernetes.io/instance") == RELEASE,
                   f"{name}: release labels {d['metadata'].get('labels')}")
            upstream = next(x for x in yaml.safe_load_all((vendored / file).read_text()) if x)
            expect(spec == upstream["spec"], f"{name}: spec differs from the vendored upstream {file}")
            expect("status" not in d and "creationTimestamp" not in d["metadata"],
                   f"{name}: server-filled fields left out")
        h.k8s_validate(r)
        tpl = (CHART_DIR / "templates" / "policyreport-crds.yaml").read_text()
        expect("kubernetes-sigs/wg-policy-prototypes" in tpl and re.search(r"\b[0-9a-f]{40}\b", tpl),
               "the CRD template names the upstream repository and commit")
    h.check("audit on: both wgpolicyk8s.io v1alpha2 CRDs (upstream spec as is, served, "
            "helm.sh/resource-policy: keep), valid", crds_on)

    def crd_accepts_reports() -> None:
        r = h.render(on)
        problems = []
        for name, (kind, _scope, _file) in AUDIT_CRDS.items():
            version = next(v for v in crds(r)[name]["spec"]["versions"] if v["name"] == "v1alpha2")
            schema = version["schema"]["openAPIV3Schema"]
            report = audit_sample_report(kind)
            missing = fields_not_in_schema(report, schema)
            if missing != AUDIT_FIELDS_NOT_IN_CRD:
                problems.append(f"{kind}: fields the schema does not declare {sorted(missing)}, "
                                f"expected {sorted(AUDIT_FIELDS_NOT_IN_CRD)}")
            try:
                import jsonschema
                jsonschema.validate(drop_paths({k: v for k, v in report.items() if k != "metadata"},
                                               missing), schema)
            except jsonschema.ValidationError as exc:
                problems.append(f"{kind}: {'/'.join(str(p) for p in exc.path)}: {exc.message}")
        expect(not problems, "; ".join(problems))
        if args.verbose:
            print(f"      fields the CRDs prune from the server's reports: {sorted(AUDIT_FIELDS_NOT_IN_CRD)}")
    h.check("audit: the CRD schema accepts the reports the server writes (types, enums), except "
            f"{sorted(AUDIT_FIELDS_NOT_IN_CRD)}", crd_accepts_reports)

    def config_block() -> None:
        r = h.render(on)
        expect(r.config().get("audit") == {"enabled": True, "maxResultsPerReport": 100},
               f"audit block {r.config().get('audit')}")
        expect(re.search(r"^audit:\n  enabled: true\n  maxResultsPerReport: 100$", r.config_text(), re.M),
               f"integer, not float: {r.config_text()}")
        r2 = h.render({**on, "audit": {"enabled": True, "maxResultsPerReport": 1000}})
        expect(r2.config()["audit"]["maxResultsPerReport"] == 1000, "maxResultsPerReport copied")
        chk = lambda x: x.deployment()["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        expect(chk(r) != chk(r2) and chk(r) != chk(h.render({"policy": POLICY})),
               "checksum/config follows the audit block")
        expect("installCRDs" not in r.config()["audit"], "installCRDs is the chart's, not the server's")
    h.check("audit on: config.yaml `audit: {enabled: true, maxResultsPerReport: N}`", config_block)

    def rbac_on() -> None:
        for label, values, pods in (("audit", on, ["list", "watch"]),
                                    ("audit + repairStuckPods", {**on, "repairStuckPods": True},
                                     ["list", "delete", "watch"])):
            r = h.render(values)
            pr = pod_rules(r)
            expect(len(pr) == 1 and pr[0]["apiGroups"] == [""] and pr[0]["resources"] == ["pods"]
                   and sorted(pr[0]["verbs"]) == sorted(pods) and len(set(pr[0]["verbs"])) == len(pr[0]["verbs"]),
                   f"[{label}] one pods rule with verbs {pods}, no duplicate: {pr}")
            rr = report_rules(r)
            expect(len(rr) == 1 and rr[0]["apiGroups"] == [AUDIT_GROUP]
                   and sorted(rr[0]["resources"]) == ["clusterpolicyreports", "policyreports"]
                   and set(rr[0]["verbs"]) == AUDIT_REPORT_VERBS and "resourceNames" not in rr[0],
                   f"[{label}] report rule {rr}")
            rules = cluster_rules(r)
            expect(rules["secrets"] == {"get", "list", "watch", "create", "update", "delete"}
                   and rules["events"] == {"create", "patch"}, f"[{label}] sync rules kept: {rules}")
    h.check("audit on: RBAC pods list/watch (one rule with repairStuckPods), wgpolicyk8s.io "
            "policyreports/clusterpolicyreports get/list/create/update/delete", rbac_on)

    def no_crds() -> None:
        r = h.render({**on, "audit": {"enabled": True, "installCRDs": False}})
        expect(not r.all("CustomResourceDefinition"), "installCRDs=false renders no CRD")
        expect(r.config()["audit"] == {"enabled": True, "maxResultsPerReport": 100}, "config block kept")
        expect(cluster_rules(r).get("pods") == {"list", "watch"} and len(report_rules(r)) == 1,
               f"RBAC kept: {cluster_rules(r)}")
        h.k8s_validate(r)
    h.check("audit.installCRDs=false: no CRD, the RBAC and config block still", no_crds)

    def refusals() -> None:
        for values, needles in (
            ({"audit": {"enabled": True}, "sync": {"enabled": False}},
             ["audit.enabled", "sync.enabled=false", "sync.enabled=true"]),
            ({"audit": {"enabled": True}, "clusterAccess": False, "sync": {"enabled": False}},
             ["audit.enabled", "clusterAccess=false", "clusterAccess=true"]),
            ({"audit": {"enabled": True}, "clusterAccess": False},
             ["audit.enabled", "clusterAccess=false", "clusterAccess=true"]),
            ({"mode": "admissionPolicy", "registries": PLAIN_REGISTRIES,
              "admissionPolicies": {"manifest": stand_in_manifest({"registries": PLAIN_REGISTRIES},
                                                                  h.chart.values)},
              "audit": {"enabled": True}, "sync": {"enabled": False}},
             ["audit.enabled", "sync.enabled=false"]),
        ):
            msg = h.render_error(values)
            expect(all(n in msg for n in needles), f"{values}: message lacks {needles}: {msg}")
            if args.verbose:
                print("      " + " ".join(msg.split())[:220])
    h.check("audit.enabled with sync.enabled=false or clusterAccess=false: install refused, "
            "naming the fix", refusals)

    def policy_mode() -> None:
        values = {"registries": PLAIN_REGISTRIES, "policy": {"deny": ["docker.io/evilcorp"]}}
        manifest = stand_in_manifest(values, h.chart.values)
        if args.binary:
            with tempfile.TemporaryDirectory() as d:
                vf = Path(d) / "values.yaml"
                vf.write_text(yaml.safe_dump(values))
                out = subprocess.run([args.binary, "export-policies", "--values", str(vf)],
                                     capture_output=True, text=True, timeout=60)
                expect(out.returncode == 0, f"export-policies --values: {out.stderr}")
                manifest = out.stdout
        base = {**values, "mode": "admissionPolicy", "admissionPolicies": {"manifest": manifest}}
        without = h.render(base)
        expect(not without.all("Deployment"), "no controller work without audit: no Deployment")
        r = h.render({**base, "audit": {"enabled": True}})
        c = r.container()
        expect(c["name"] == "controller" and arg_of(c["args"], "--listen") == "localhost:0",
               f"the controller runs (no webhook): {c['name']} {c['args']}")
        expect(not r.all("MutatingWebhookConfiguration") and not r.all("ValidatingWebhookConfiguration"),
               "still no webhook configuration")
        expect(r.config()["audit"]["enabled"] is True, "audit block in config.yaml")
        expect(set(crds(r)) == set(AUDIT_CRDS), f"CRDs {sorted(crds(r))}")
        expect(cluster_rules(r).get("pods") == {"list", "watch"} and report_rules(r), "audit RBAC")
        r.one("ServiceAccount", FULLNAME)
        expect(r.maybe_named("Role", f"{FULLNAME}-leader-election"), "lease Role (the audit runs on the leader)")
    h.check("audit in mode=admissionPolicy: the Deployment (controller) runs for the audit alone", policy_mode)

    if args.binary:
        def binary_accepts() -> None:
            problems = []
            with tempfile.TemporaryDirectory() as d:
                cfg = Path(d) / "config.yaml"
                cfg.write_text(h.render(on).config_text())
                out = subprocess.run([args.binary, "check", "--config", str(cfg)],
                                     capture_output=True, text=True, timeout=60)
                if out.returncode != 0 or out.stdout.strip() != "ok":
                    problems.append(f"rendered audit config: rc={out.returncode} {out.stderr.strip()[:300]}")
                for n in (0, 1, 1000, 1001, -1):
                    cfg.write_text(yaml.safe_dump({"audit": {"enabled": True, "maxResultsPerReport": n}}))
                    out = subprocess.run([args.binary, "check", "--config", str(cfg)],
                                         capture_output=True, text=True, timeout=60)
                    try:
                        h.chart.validate_schema({"audit": {"enabled": True, "maxResultsPerReport": n}})
                        schema_ok = True
                    except helm_python.HelmError:
                        schema_ok = False
                    if (out.returncode == 0) != schema_ok:
                        problems.append(f"maxResultsPerReport {n}: binary rc={out.returncode}, "
                                        f"schema {'accepts' if schema_ok else 'rejects'}")
            expect(not problems, "; ".join(problems))
        h.check("audit: `check` accepts the rendered block; maxResultsPerReport: schema and binary "
                "agree (1..1000)", binary_accepts)


def run(args: argparse.Namespace) -> int:
    h = Harness(args.kube_version, args.verbose)
    print(f"chart: {CHART_DIR} (helm SDK {helm_python.helm_sdk_version()}, "
          f"helm-python-sdk {helm_python.__version__}); "
          f"Kubernetes schemas: {h.kube_version} (kubernetes-validate "
          f"{kubernetes_validate.version.__version__})")

    defaults = h.chart.values
    scenarios: dict[str, dict[str, Any]] = {
        "default (certs.mode=helm, no policy)": {},
        "certs.mode=certManager (self-signed CA chain) + policy": {
            "certs": {"mode": "certManager"}, "policy": POLICY},
        "certs.mode=certManager (user issuerRef) + policy": {
            "certs": {"mode": "certManager", "certManager": {
                "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}}},
            "policy": POLICY},
        "certs.mode=secret + policy": {
            "certs": {"mode": "secret", "secret": {"name": "my-webhook-tls", "caBundle": DUMMY_CA_B64}},
            "policy": POLICY},
        "policy mode=warn": {"policy": {"mode": "warn", "allow": ["*"]}},
        "sync.enabled=false": {"sync": {"enabled": False}},
        "everything on": {
            "policy": POLICY, "repairStuckPods": True, "injectOnlyIfPresent": True,
            "audit": {"enabled": True, "maxResultsPerReport": 250},
            "alwaysPullImages": "private", "priorityClassName": "system-cluster-critical",
            "webhook": {"objectSelector": {"matchExpressions": [
                {"key": "pullsecret-injector.io/inject", "operator": "NotIn", "values": ["disabled"]}]},
                "failurePolicy": "Fail", "timeoutSeconds": 3,
                "namespaceSelectorExpressions": [{"key": "tenant", "operator": "Exists"}]},
            "validatingWebhook": {"namespaceSelectorExpressions": [
                {"key": "policy", "operator": "NotIn", "values": ["off"]}]},
            "extraArgs": ["--client-ca", "/etc/client-ca/ca.crt"],
            "extraEnv": [{"name": "RUST_LOG", "value": "debug"}],
            "podAnnotations": {"prometheus.io/scrape": "true"},
            "podLabels": {"team": "platform"},
            "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
                                           "whenUnsatisfiable": "ScheduleAnyway",
                                           "labelSelector": {"matchLabels": {"app": "x"}}}],
            "imagePullSecrets": [{"name": "injector-pull"}],
            "image": {"digest": "sha256:" + "a" * 64},
            "serviceAccount": {"annotations": {"example.com/role": "x"}},
            "service": {"annotations": {"example.com/a": "b"}},
            "logFormat": "text",
            "registries": defaults["registries"] + [{
                "name": "harbor", "match": ["harbor.example.com"], "secret": "harbor-pull",
                "alwaysPull": True, "serviceAccounts": ["default"],
                "namespaces": {"include": ["team-*"], "exclude": ["team-legacy"],
                               "selector": {"matchLabels": {"registry-access": "harbor"},
                                            "matchExpressions": [{"key": "tier", "operator": "In",
                                                                  "values": ["prod"]}]}},
                "source": {"namespace": "registry-creds", "name": "harbor-pull"}}],
        },
    }

    scenarios["issue 14 features on"] = ISSUE14_VALUES
    scenarios["certs.mode=self + policy"] = {"certs": {"mode": "self"}, "policy": POLICY}
    scenarios["clusterAccess=false"] = {"clusterAccess": False, "sync": {"enabled": False}}

    rendered: dict[str, Rendered] = {}

    # --- lint + render + Kubernetes schema validation, per scenario -------
    for label, values in scenarios.items():
        h.check(f"helm lint --strict [{label}]", lambda v=values: h.lint(v))

        def do_render(label=label, values=values) -> None:
            h.chart.validate_schema(values)
            rendered[label] = h.render(values)
        h.check(f"render [{label}]", do_render)
        if label in rendered:
            h.check(f"kubernetes {h.kube_version} schema (strict) [{label}]",
                    lambda r=rendered[label]: h.k8s_validate(r))

    r0 = rendered.get("default (certs.mode=helm, no policy)")
    if r0 is None:
        print("default render failed; cannot continue")
        return summary(h)

    # --- properties of the default render ------------------------------------
    h.check("mutating webhook: safe defaults (selector, failurePolicy, sideEffects, rules, "
            "matchConditions)", lambda: check_mutating_defaults(r0))
    h.check("no ValidatingWebhookConfiguration without policy",
            lambda: expect(not r0.all("ValidatingWebhookConfiguration"), "validating webhook rendered"))
    h.check("deployment/pod security, PDB, service", lambda: check_deployment(r0))
    h.check("certs.mode=helm: secret, caBundle, SANs", lambda: check_helm_certs(r0))

    def config_defaults() -> None:
        cfg = r0.config()
        expect(cfg["registries"] == defaults["registries"], "registries copied verbatim")
        expect(cfg["alwaysPullImages"] == "none" and cfg["injectOnlyIfPresent"] is False
               and cfg["repairStuckPods"] is False, f"scalars {cfg}")
        expect(cfg["namespaces"] == defaults["namespaces"], "namespaces copied")
        expect("policy" not in cfg, "no policy key without policy")
        expect("audit" not in cfg, "no audit block without audit.enabled")
        names = [x["name"] for x in cfg["registries"]]
        expect(len(names) == len(set(names)) and names, f"registry names {names}")
        expect(any("tencentcloudcr.com" in m for x in cfg["registries"] for m in x["match"]) and
               any(m.startswith("ghcr.io/acme") for x in cfg["registries"] for m in x["match"]),
               "example registries (TCR, ghcr.io/acme) shipped in values.yaml")
    h.check("ConfigMap config.yaml = values (default)", config_defaults)

    def rbac_default() -> None:
        rules = cluster_rules(r0)
        expect(rules == {"namespaces": {"get", "list", "watch"},
                         "secrets": {"get", "list", "watch", "create", "update", "delete"},
                         "events": {"create", "patch"}},
               f"ClusterRole rules (exactly what the server sends): {rules}")
        groups = {g for rule in r0.rules("ClusterRole", FULLNAME) if "events" in rule["resources"]
                  for g in rule["apiGroups"]}
        expect(groups == {"events.k8s.io"}, f"Events go through events.k8s.io only: {groups}")
        role = r0.one("Role", f"{FULLNAME}-leader-election")
        expect(role["metadata"]["namespace"] == NAMESPACE, "lease Role in the release namespace")
        expect([(x["resources"], sorted(x["verbs"])) for x in role["rules"]]
               == [(["leases"], ["create", "get", "update"])], f"Role only for leases: {role['rules']}")
        crb = r0.one("ClusterRoleBinding", FULLNAME)
        expect(crb["subjects"][0]["name"] == FULLNAME and crb["subjects"][0]["namespace"] == NAMESPACE,
               "binding subject")
    h.check("RBAC least privilege (default: sync on)", rbac_default)

    # --- other scenarios --------------------------------------------------
    def s(label: str) -> Rendered:
        expect(label in rendered, f"scenario '{label}' did not render")
        return rendered[label]

    h.check("certManager (self-signed chain): Issuer/Certificate + inject-ca-from",
            lambda: check_cert_manager(s("certs.mode=certManager (self-signed CA chain) + policy"), False))
    h.check("certManager (user issuerRef)",
            lambda: check_cert_manager(s("certs.mode=certManager (user issuerRef) + policy"), True))
    h.check("certs.mode=secret: user secret + caBundle",
            lambda: check_secret_mode(s("certs.mode=secret + policy")))
    h.check("policy enforce: validating webhook failurePolicy Fail",
            lambda: check_validating(s("certs.mode=secret + policy"), "Fail"))

    def policy_exempt() -> None:
        excl = ns_not_in(s("certs.mode=secret + policy").validating())
        expect("ops" in excl, f"exact exemptNamespaces excluded from the validating webhook: {excl}")
        cfg = s("certs.mode=secret + policy").config()
        expect(cfg.get("policy") == POLICY, "policy copied verbatim into config.yaml")
    h.check("policy: config + exempt namespaces", policy_exempt)
    h.check("policy warn: validating webhook failurePolicy Ignore",
            lambda: check_validating(s("policy mode=warn"), "Ignore"))

    def policy_default_mode() -> None:
        # The server defaults policy.mode to enforce; so must the chart.
        check_validating(h.render({"policy": {"deny": ["docker.io/evilcorp"]}}), "Fail")
    h.check("policy without mode = enforce: failurePolicy Fail", policy_default_mode)

    def override_vfp() -> None:
        r = h.render({"policy": {"mode": "audit"}, "validatingWebhook": {"failurePolicy": "Fail"}})
        check_validating(r, "Fail")
    h.check("validatingWebhook.failurePolicy override", override_vfp)

    def no_sync() -> None:
        # item 3: --no-sync still reads namespaces and pull secrets, so it needs read RBAC.
        r = s("sync.enabled=false")
        args = r.container()["args"]
        expect("--no-sync" in args and "--no-cluster-access" not in args, f"args {args}")
        expect(not r.all("Role") and not r.all("RoleBinding"), "no lease Role without sync")
        rules = cluster_rules(r)
        expect(rules == {"namespaces": {"get", "list", "watch"}, "secrets": {"get", "list", "watch"}},
               f"read-only rules (namespaces, secrets: get/list/watch) expected, got {rules}")
        r.one("ClusterRoleBinding", FULLNAME)
    h.check("item 3: sync.enabled=false: --no-sync with read-only RBAC", no_sync)

    def no_sync_reads() -> None:
        r = h.render({"sync": {"enabled": False}, "injectOnlyIfPresent": True, "registries": [
            {"name": "a", "match": ["a.example.com"], "secret": "a",
             "namespaces": {"selector": {"matchLabels": {"x": "y"}}}}]})
        rules = cluster_rules(r)
        expect(rules == {"namespaces": {"get", "list", "watch"}, "secrets": {"get", "list", "watch"}},
               f"read-only rules expected, got {rules}")
    h.check("sync off + selector/injectOnlyIfPresent: read-only RBAC", no_sync_reads)

    def no_cluster_access() -> None:
        r = h.render({"clusterAccess": False, "sync": {"enabled": False}})
        args = r.container()["args"]
        expect("--no-cluster-access" in args and "--no-sync" not in args, f"args {args}")
        for kind in ("ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"):
            expect(not r.all(kind), f"no {kind} with clusterAccess=false")
        pod = r.deployment()["spec"]["template"]["spec"]
        expect(pod["automountServiceAccountToken"] is False, "no token mounted without cluster access")
        for values, needles in (
            ({"clusterAccess": False}, ["clusterAccess=false", "sync.enabled=false"]),
            ({"clusterAccess": False, "sync": {"enabled": False}, "injectOnlyIfPresent": True},
             ["injectOnlyIfPresent", "clusterAccess"]),
            ({"clusterAccess": False, "sync": {"enabled": False}, "registries": [
                {"name": "a", "match": ["a.example.com"], "secret": "a",
                 "namespaces": {"selector": {"matchLabels": {"x": "y"}}}}]},
             ["registries[0].namespaces.selector", "clusterAccess"]),
        ):
            msg = h.render_error(values)
            expect(all(n in msg for n in needles), f"{values}: message lacks {needles}: {msg}")
    h.check("item 3: clusterAccess=false: --no-cluster-access, no RBAC, no token; "
            "refuses what needs the API", no_cluster_access)

    def everything() -> None:
        r = s("everything on")
        rules = cluster_rules(r)
        expect(rules.get("serviceaccounts") == {"list", "watch", "patch"},
               f"serviceaccounts {rules.get('serviceaccounts')}")
        expect(rules.get("pods") == {"list", "delete", "watch"}, f"pods {rules.get('pods')}")
        w = r.mutating()
        expect(w["failurePolicy"] == "Fail" and w["timeoutSeconds"] == 3, "webhook overrides")
        expect(w["objectSelector"]["matchExpressions"][0]["key"] == "pullsecret-injector.io/inject",
               "objectSelector rendered")
        expect(r.deployment()["spec"]["template"]["spec"]["priorityClassName"]
               == "system-cluster-critical", "priorityClassName")
        expect({"key": "tenant", "operator": "Exists"} in w["namespaceSelector"]["matchExpressions"],
               "extra mutating namespaceSelector expression")
        expect({"key": "policy", "operator": "NotIn", "values": ["off"]}
               in r.validating()["namespaceSelector"]["matchExpressions"],
               "extra validating namespaceSelector expression")
        c = r.container()
        expect(c["args"][-2:] == ["--client-ca", "/etc/client-ca/ca.crt"], f"extraArgs {c['args']}")
        expect(c["image"] == f"{TEST_IMAGE}@sha256:" + "a" * 64, f"image {c['image']}")
        expect({"name": "RUST_LOG", "value": "debug"} in c["env"], "extraEnv")
        cfg = r.config()
        expect(cfg["registries"][-1]["namespaces"]["selector"]["matchLabels"]
               == {"registry-access": "harbor"}, "selector copied")
        expect(cfg["alwaysPullImages"] == "private" and cfg["repairStuckPods"] is True, "scalars")
        expect(cfg["audit"] == {"enabled": True, "maxResultsPerReport": 250}, f"audit block {cfg.get('audit')}")
    h.check("all features on: extra RBAC, overrides", everything)

    def match_conditions_override() -> None:
        r = h.render({"webhook": {"matchConditions": []}})
        names = [c["name"] for c in r.mutating()["matchConditions"]]
        expect(names == [UPDATE_CONDITION], f"matchConditions: [] removes the defaults only: {names}")
        custom = [{"name": "only-labelled", "expression": "has(object.metadata.labels)"}]
        r = h.render({"webhook": {"matchConditions": custom}})
        conds = r.mutating()["matchConditions"]
        expect([c["name"] for c in conds] == [UPDATE_CONDITION, "only-labelled"] and conds[1] == custom[0],
               f"custom matchConditions after the built-in one: {conds}")
    h.check("matchConditions overridable", match_conditions_override)

    def extra_exclusions() -> None:
        r = h.render({"webhook": {"excludeNamespaces": ["batch"]},
                      "namespaces": {"exclude": ["kube-public", "legacy-*"]}})
        excl = ns_not_in(r.mutating())
        expect({NAMESPACE, "kube-system", "kube-public", "batch"} <= set(excl), f"excluded {excl}")
        expect("legacy-*" not in excl, "glob patterns are not put into the label selector")
        r = h.render({}) if False else h.chart.render(with_base({}), name="other", namespace="injector-ns")
        excl = ns_not_in(Rendered(r).one("MutatingWebhookConfiguration", "other-pullsecret-injector")
                         ["webhooks"][0])
        expect("injector-ns" in excl, f"release namespace follows --namespace: {excl}")
    h.check("namespaceSelector exclusions (config excludes, extra, other namespace)", extra_exclusions)

    def checksum_changes() -> None:
        def chk(r: Rendered) -> str:
            return r.deployment()["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        regs = copy.deepcopy(defaults["registries"])
        regs[0]["match"] = regs[0]["match"] + ["extra.example.com"]
        a, b, c = chk(r0), chk(h.render({"registries": regs})), chk(h.render({}))
        expect(a != b, "checksum/config must change when registries change")
        expect(a == c, "checksum/config must be stable for identical values")
        d = chk(h.render({"policy": {"mode": "audit"}}))
        expect(a != d, "checksum/config must change when policy changes")
    h.check("checksum/config follows the config", checksum_changes)

    def single_replica() -> None:
        r = h.render({"replicaCount": 1})
        expect(not r.all("PodDisruptionBudget"), "no PDB with 1 replica (it would block drains)")
    h.check("replicaCount=1: no PDB", single_replica)

    def notes() -> None:
        expect("jsonpath='{.spec.imagePullSecrets}" in r0.notes, "NOTES explains how to verify")
    h.check("NOTES.txt verification instructions", notes)

    issue14_checks(h, args, s, r0)
    policy_mode_checks(h, args)
    audit_checks(h, args, r0)

    # --- values.schema.json rejects bad values ----------------------------
    bad_values = [
        ({"alwaysPullImages": "sometimes"}, "alwaysPullImages"),
        ({"certs": {"mode": "letsencrypt"}}, "mode"),
        ({"policy": {"mode": "block"}}, "mode"),
        ({"policy": {"requireAlwaysPull": "sometimes"}}, "requireAlwaysPull"),
        ({"policy": {"alow": ["*"]}}, "alow"),
        ({"namespaces": {"include": ["a"]}}, "include"),
        ({"registries": [{"name": "x", "match": ["a.io"]}]}, "secret"),
        ({"registries": [{"name": "x", "match": [], "secret": "s"}]}, "match"),
        ({"registries": [{"name": "x", "match": ["a.io"], "secret": "s", "alwayspull": True}]},
         "alwayspull"),
        ({"webhook": {"failurePolicy": "Sometimes"}}, "failurePolicy"),
        ({"webhook": {"timeoutSeconds": 60}}, "timeoutSeconds"),
        ({"certs": {"mode": "secret"}}, "name"),
        ({"injectOnlyIfPresent": "yes"}, "injectOnlyIfPresent"),
        # item 6: what crashes later is refused up front.
        ({"registries": [{"name": "TCR", "match": ["a.io"], "secret": "s"}]}, "name"),
        ({"registries": [{"name": "a" * 64, "match": ["a.io"], "secret": "s"}]}, "name"),
        ({"replicas": 3}, "replicas"),
        ({"webhooks": {"failurePolicy": "Fail"}}, "webhooks"),
        ({"certs": {"mode": "secret", "secret": {"name": "t", "caBundle": "-----BEGIN CERTIFICATE-----"}}},
         "caBundle"),
        ({"listenHost": "[::]"}, "listenHost"),
        ({"monitoring": {"serviceMonitor": {"enable": True}}}, "enable"),
        ({"tests": {"namespace": "Default"}}, "namespace"),
        ({"audit": {"maxResultsPerReport": 0}}, "maxResultsPerReport"),
        ({"audit": {"maxResultsPerReport": 1001}}, "maxResultsPerReport"),
        ({"audit": {"maxResultsPerReport": "100"}}, "maxResultsPerReport"),
        ({"audit": {"enable": True}}, "enable"),
        ({"audit": {"enabled": "yes"}}, "enabled"),
    ]
    for values, needle in bad_values:
        def reject(values=values, needle=needle) -> None:
            for how, fn in (("validate_schema", lambda: h.chart.validate_schema(values)),
                            ("render", lambda: h.render(values))):
                try:
                    fn()
                except helm_python.HelmError as exc:
                    msg = str(exc)
                    expect(needle in msg, f"{how}: error does not mention '{needle}': {msg}")
                    if args.verbose:
                        print(f"      {how}: {msg.splitlines()[0][:200]}")
                else:
                    raise CheckFailed(f"{how} accepted bad values {values}")
        h.check(f"schema rejects {values}", reject)

    def example_msg() -> None:
        try:
            h.chart.validate_schema({"alwaysPullImages": "sometimes"})
        except helm_python.HelmError as exc:
            print("      e.g.: " + " ".join(str(exc).split())[:300])
    example_msg()

    # --- emit config + optional binary check ------------------------------
    if args.emit_config:
        def emit() -> None:
            # PATH: the config rendered from the default values (what
            # `helm template` produces); a sibling file gets the config of the
            # "everything on" scenario (policy, selectors, all registry fields).
            out = Path(args.emit_config)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(r0.config_text())
            full = all_features_path(out)
            full.write_text(s("everything on").config_text())
            print(f"      wrote {out} (default values) and {full} (all features)")
        h.check(f"emit config.yaml to {args.emit_config}", emit)
        if args.binary:
            def bin_check() -> None:
                for p in (Path(args.emit_config), all_features_path(Path(args.emit_config))):
                    out = subprocess.run([args.binary, "check", "--config", str(p)],
                                         capture_output=True, text=True, timeout=60)
                    expect(out.returncode == 0 and out.stdout.strip() == "ok",
                           f"{args.binary} check --config {p}: rc={out.returncode} "
                           f"stdout={out.stdout.strip()!r} stderr={out.stderr.strip()[:500]!r}")
            h.check(f"{args.binary} check --config <emitted>", bin_check)

    if h.skipped_kinds:
        print("note: no Kubernetes schema for CRD kinds "
              + ", ".join(sorted(h.skipped_kinds))
              + " (kubernetes-validate ships core schemas only); checked structurally above")
    print(f"note: {h.validated_objects} rendered objects validated against Kubernetes "
          f"{h.kube_version} schemas (strict)")
    print("note: `lookup` returns nothing offline; certs.mode=helm's reuse and rotation were "
          "exercised in a temporary chart copy whose psi.existingTLSSecret reads a fixture")
    return summary(h)


def all_features_path(path: Path) -> Path:
    return path.with_name(path.stem + ".all-features" + (path.suffix or ".yaml"))


def summary(h: Harness) -> int:
    if h.failures:
        print("\nFailures:")
        for f in h.failures:
            print(f"  - {f}")
    print(f"chart_check: {h.passed} passed, {h.failed} failed")
    return 1 if h.failed else 0


def main() -> int:
    global CHART_DIR
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--emit-config", metavar="PATH",
                    help="write the ConfigMap config.yaml rendered from the default values "
                         "here, and the one of an all-features render to "
                         "<PATH stem>.all-features.yaml")
    ap.add_argument("--binary", metavar="PATH",
                    help="run 'PATH check --config' on the emitted configs (needs --emit-config)")
    ap.add_argument("--kube-version", action="append", default=None,
                    help="Kubernetes version(s) for schema validation, repeatable "
                         f"(default: {MIN_KUBE} = the chart's minimum (matchConditions GA) "
                         "and the newest shipped by kubernetes-validate)")
    ap.add_argument("--chart", default=str(CHART_DIR), help="chart directory (default: %(default)s)")
    ap.add_argument("--readme", default=str(README), help="README to compare (default: %(default)s)")
    ap.add_argument("--verbose", "-v", action="store_true")
    args = ap.parse_args()
    CHART_DIR = Path(args.chart).resolve()
    if args.kube_version is None:
        args.kube_version = [MIN_KUBE, kv_utils.latest_version()]
    if args.binary and not args.emit_config:
        ap.error("--binary needs --emit-config")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
