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
cert-manager kinds (Issuer, Certificate) are NOT in those schemas; they are
skipped by the schema validation (reported as skipped) and checked
structurally here instead.

What it does:
  * helm lint --strict of the chart with several value sets;
  * renders the chart for: default values, each certs.mode (helm,
    certManager with and without issuerRef, secret), with and without policy,
    sync disabled, and some overrides;
  * validates every rendered manifest against the Kubernetes schemas;
  * asserts the safety properties of the webhook configurations, the
    Deployment, RBAC and certificates;
  * checks that values.schema.json rejects bad values with a clear message;
  * writes the rendered ConfigMap's config.yaml (default values) to
    --emit-config PATH, and an all-features one (policy, selectors, every
    registry field) to <PATH stem>.all-features.yaml, so that
    `pullsecret-injector check --config PATH` can be run on them (done here
    when --binary PATH is given).

Usage:
    python3 tests/chart/check.py [--emit-config PATH] [--binary PATH]
                                   [--kube-version 1.33] [--verbose]

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
import ssl
import subprocess
import sys
import tempfile
import traceback
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
             ("cert-manager.io/v1", "Certificate")}

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

    def render(self, values: dict[str, Any] | None = None) -> Rendered:
        return Rendered(
            self.chart.render(values or {}, name=RELEASE, namespace=NAMESPACE,
                              is_install=True)
        )

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
        report = helm_lint(str(CHART_DIR), values or {}, strict=True, namespace=NAMESPACE)
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
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        hg = c[probe]["httpGet"]
        expect(hg["path"] == path and hg["scheme"] == "HTTPS" and hg["port"] == "webhook",
               f"{probe}={hg}")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expect(ports == {"webhook": 8443, "metrics": 9090}, f"container ports {ports}")
    args = c["args"]
    expect(args[0] == "serve", f"args[0]={args[0]}")

    def arg(flag: str) -> str:
        expect(flag in args, f"missing {flag} in args {args}")
        return args[args.index(flag) + 1]

    expect(arg("--config") == "/etc/pullsecret-injector/config.yaml", "--config path")
    expect(arg("--listen") == "0.0.0.0:8443", "--listen")
    expect(arg("--metrics-listen") == "0.0.0.0:9090", "--metrics-listen")
    expect(arg("--tls-cert") == "/etc/pullsecret-injector/tls/tls.crt", "--tls-cert")
    expect(arg("--tls-key") == "/etc/pullsecret-injector/tls/tls.key", "--tls-key")
    expect("--no-sync" not in args, "--no-sync must not be set by default")
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


POLICY = {
    "mode": "enforce",
    "allow": ["*.tencentcloudcr.com", "docker.io/library", "registry.k8s.io"],
    "deny": ["docker.io/evilcorp"],
    "requireAlwaysPull": "none",
    "exemptNamespaces": ["kube-system", "ops"],
    "overrides": [{"namespaces": ["sandbox-*"], "mode": "warn", "allow": ["*"]}],
}


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
    h.check("deployment/pod security, probes, PDB, service", lambda: check_deployment(r0))
    h.check("certs.mode=helm: secret, caBundle, SANs", lambda: check_helm_certs(r0))

    def config_defaults() -> None:
        cfg = r0.config()
        expect(cfg["registries"] == defaults["registries"], "registries copied verbatim")
        expect(cfg["alwaysPullImages"] == "none" and cfg["injectOnlyIfPresent"] is False
               and cfg["repairStuckPods"] is False, f"scalars {cfg}")
        expect(cfg["namespaces"] == defaults["namespaces"], "namespaces copied")
        expect("policy" not in cfg, "no policy key without policy")
        names = [x["name"] for x in cfg["registries"]]
        expect(len(names) == len(set(names)) and names, f"registry names {names}")
        expect(any("tencentcloudcr.com" in m for x in cfg["registries"] for m in x["match"]) and
               any(m.startswith("ghcr.io/acme") for x in cfg["registries"] for m in x["match"]),
               "example registries (TCR, ghcr.io/acme) shipped in values.yaml")
    h.check("ConfigMap config.yaml = values (default)", config_defaults)

    def rbac_default() -> None:
        rules = cluster_rules(r0)
        expect(rules.get("namespaces") == {"get", "list", "watch"}, f"namespaces {rules.get('namespaces')}")
        expect(rules.get("secrets") == {"get", "list", "watch", "create", "update", "patch", "delete"},
               f"secrets {rules.get('secrets')}")
        expect("create" in rules.get("events", set()), "events create")
        expect("serviceaccounts" not in rules, "no serviceaccounts rule unless a registry needs it")
        expect("pods" not in rules, "no pods rule unless repairStuckPods")
        expect(set(rules) <= {"namespaces", "secrets", "events"}, f"unexpected resources {set(rules)}")
        role = r0.one("Role", f"{FULLNAME}-leader-election")
        expect(role["metadata"]["namespace"] == NAMESPACE, "lease Role in the release namespace")
        expect([x["resources"] for x in role["rules"]] == [["leases"]], "Role only for leases")
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
        r = s("sync.enabled=false")
        expect("--no-sync" in r.container()["args"], "--no-sync passed")
        expect(not r.all("Role") and not r.all("RoleBinding"), "no lease Role without sync")
        expect(not r.all("ClusterRole"), f"no ClusterRole without sync: {cluster_rules(r)}")
    h.check("sync.enabled=false: --no-sync, no RBAC", no_sync)

    def no_sync_reads() -> None:
        r = h.render({"sync": {"enabled": False}, "injectOnlyIfPresent": True, "registries": [
            {"name": "a", "match": ["a.example.com"], "secret": "a",
             "namespaces": {"selector": {"matchLabels": {"x": "y"}}}}]})
        rules = cluster_rules(r)
        expect(rules == {"namespaces": {"get", "list", "watch"}, "secrets": {"get", "list", "watch"}},
               f"read-only rules expected, got {rules}")
    h.check("sync off + selector/injectOnlyIfPresent: read-only RBAC", no_sync_reads)

    def everything() -> None:
        r = s("everything on")
        rules = cluster_rules(r)
        expect(rules.get("serviceaccounts") == {"get", "list", "watch", "patch"},
               f"serviceaccounts {rules.get('serviceaccounts')}")
        expect(rules.get("pods") == {"get", "list", "watch", "delete"}, f"pods {rules.get('pods')}")
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
        expect(c["image"] == "pullsecret-injector@sha256:" + "a" * 64, f"image {c['image']}")
        expect({"name": "RUST_LOG", "value": "debug"} in c["env"], "extraEnv")
        cfg = r.config()
        expect(cfg["registries"][-1]["namespaces"]["selector"]["matchLabels"]
               == {"registry-access": "harbor"}, "selector copied")
        expect(cfg["alwaysPullImages"] == "private" and cfg["repairStuckPods"] is True, "scalars")
    h.check("all features on: extra RBAC, overrides", everything)

    def match_conditions_override() -> None:
        r = h.render({"webhook": {"matchConditions": []}})
        expect("matchConditions" not in r.mutating(), "matchConditions: [] removes them")
        custom = [{"name": "only-labelled", "expression": "has(object.metadata.labels)"}]
        r = h.render({"webhook": {"matchConditions": custom}})
        expect(r.mutating()["matchConditions"] == custom, "custom matchConditions")
    h.check("matchConditions overridable", match_conditions_override)

    def extra_exclusions() -> None:
        r = h.render({"webhook": {"excludeNamespaces": ["batch"]},
                      "namespaces": {"exclude": ["kube-public", "legacy-*"]}})
        excl = ns_not_in(r.mutating())
        expect({NAMESPACE, "kube-system", "kube-public", "batch"} <= set(excl), f"excluded {excl}")
        expect("legacy-*" not in excl, "glob patterns are not put into the label selector")
        r = h.render({}) if False else h.chart.render({}, name="other", namespace="injector-ns")
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
    print("note: `lookup` returns nothing offline, so CA reuse across upgrades (certs.mode=helm) "
          "is not exercised here")
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
