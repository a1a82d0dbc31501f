//! Deterministic benchmark corpus shared by `micro` and `loadgen`: registry configs of
//! 10/100/1,000 entries and AdmissionReviews of Pods with 1/5/30 image sites (4.4/9.3/22.2 KB).
//!
//! Everything is generated from a fixed seed so two runs (and two machines) benchmark the
//! same bytes.
#![allow(dead_code)] // each bench uses a different part of this module

use std::fmt::Write as _;

use pullsecret_injector::config::Config;
use serde_json::{Value, json};

/// Registry-entry counts the benches sweep.
pub const ENTRY_COUNTS: [usize; 3] = [10, 100, 1000];
/// Image sites per Pod (init containers + sidecars + containers).
pub const POD_SITES: [usize; 3] = [1, 5, 30];
/// Namespace the reviews come from (in scope, not excluded).
pub const NAMESPACE: &str = "team-payments";

/// SplitMix64: tiny, deterministic, good enough to spread choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: usize) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn hex(&mut self, len: usize) -> String {
        let mut s = String::with_capacity(len);
        while s.len() < len {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        s.truncate(len);
        s
    }
}

/// How generated entry `i` (i ≥ 4) is matched; the first four mirror examples/config.yaml.
fn entry_kind(i: usize) -> usize {
    i % 5
}

/// YAML config with `n` registry entries: exact hosts, hosts with ports, `*.` wildcards and
/// host/path prefixes, some with `alwaysPull` or namespace scopes.
pub fn config_yaml(n: usize) -> String {
    let mut y = String::from("registries:\n");
    let fixed = [
        "  - name: tcr\n    match: [demo-tcr.tencentcloudcr.com, \"*.tencentcloudcr.com\"]\n    secret: tcr-pull\n    alwaysPull: true\n    namespaces: {include: [\"team-*\"], exclude: [team-legacy]}\n",
        "  - name: ghcr-acme\n    match: [ghcr.io/acme]\n    secret: ghcr-acme\n",
        "  - name: icr\n    match: [icr.io, \"*.icr.io\"]\n    secret: all-icr-io\n",
        "  - name: local\n    match: [\"localhost:5000\"]\n    secret: local-registry\n",
    ];
    for (i, f) in fixed.iter().enumerate().take(n) {
        let _ = i;
        y.push_str(f);
    }
    for i in fixed.len()..n {
        let _ = writeln!(y, "  - name: reg-{i}");
        let m = match entry_kind(i) {
            0 => format!("[registry-{i}.corp.example.com, \"mirror-{i}.corp.example.com:5000\"]"),
            1 => format!("[\"*.tenant-{i}.cr.example.net\"]"),
            2 => format!("[ghcr.io/org-{i}]"),
            3 => format!("[quay.io/team-{i}/apps, \"*.eu.tenant-{i}.example.org\"]"),
            _ => format!("[\"registry-{i}.internal:5000\"]"),
        };
        let _ = writeln!(y, "    match: {m}");
        let _ = writeln!(y, "    secret: pull-{i}");
        if i % 7 == 0 {
            y.push_str("    alwaysPull: true\n");
        }
        if i % 10 == 9 {
            y.push_str(
                "    namespaces: {include: [\"team-*\", \"prod-*\"], exclude: [team-legacy]}\n",
            );
        }
    }
    y.push_str("namespaces:\n  exclude: [kube-system, kube-public, kube-node-lease]\n");
    y.push_str("alwaysPullImages: none\n");
    y
}

pub fn config(n: usize) -> Config {
    Config::parse(&config_yaml(n), &format!("bench-{n}.yaml"))
        .unwrap_or_else(|e| panic!("generated config with {n} entries is invalid: {e}"))
}

fn digest(rng: &mut Rng) -> String {
    format!("sha256:{}", rng.hex(64))
}

fn tag_or_digest(rng: &mut Rng) -> String {
    match rng.below(10) {
        0..=5 => format!(":{}.{}.{}", 1 + rng.below(3), rng.below(30), rng.below(10)),
        6 | 7 => format!("@{}", digest(rng)),
        8 => format!(":v{}.{}@{}", 1 + rng.below(3), rng.below(20), digest(rng)),
        _ => String::new(),
    }
}

/// An image for a private registry entry `e` (built to match that entry's pattern).
fn private_image(rng: &mut Rng, e: usize) -> String {
    let suffix = tag_or_digest(rng);
    let svc = rng.pick(&["api", "worker", "frontend", "gateway", "billing", "auth"]);
    match e {
        0 => format!(
            "{}.tencentcloudcr.com/prod/{svc}{suffix}",
            rng.pick(&["demo-tcr", "ccr-sh", "acme-gz"])
        ),
        1 => format!("ghcr.io/acme/{svc}{suffix}"),
        2 => format!("{}icr.io/ns/{svc}{suffix}", rng.pick(&["", "us.", "de."])),
        3 => format!("localhost:5000/dev/{svc}{suffix}"),
        _ => match entry_kind(e) {
            0 => format!("registry-{e}.corp.example.com/platform/{svc}{suffix}"),
            1 => format!(
                "team{}.tenant-{e}.cr.example.net/apps/{svc}{suffix}",
                rng.below(9)
            ),
            2 => format!("ghcr.io/org-{e}/{svc}{suffix}"),
            3 => format!("quay.io/team-{e}/apps/{svc}{suffix}"),
            _ => format!("registry-{e}.internal:5000/{svc}{suffix}"),
        },
    }
}

/// One image reference, spread over Docker Hub short names, public registries, private
/// registries the configs know (mostly entries < 10, so they match in every config), and
/// private registries no config knows.
pub fn image(rng: &mut Rng) -> String {
    match rng.below(100) {
        0..=29 => {
            let name = rng.pick(&[
                "nginx",
                "redis",
                "busybox",
                "python",
                "envoyproxy/envoy",
                "bitnami/postgresql",
                "library/alpine",
                "grafana/grafana",
                "openpolicyagent/opa",
                "istio/proxyv2",
            ]);
            format!("{name}{}", tag_or_digest(rng))
        }
        30..=39 => {
            let name = rng.pick(&[
                "registry.k8s.io/pause",
                "quay.io/prometheus/node-exporter",
                "gcr.io/distroless/static-debian12",
                "docker.io/fluent/fluent-bit",
                "public.ecr.aws/aws-observability/aws-otel-collector",
            ]);
            format!("{name}{}", tag_or_digest(rng))
        }
        40..=84 => {
            let e = rng.below(10);
            private_image(rng, e)
        }
        85..=94 => {
            let e = rng.below(1000);
            private_image(rng, e)
        }
        _ => format!(
            "registry.unknown-{}.example.org/team/app{}",
            rng.below(50),
            tag_or_digest(rng)
        ),
    }
}

pub fn images(seed: u64, n: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..n).map(|_| image(&mut rng)).collect()
}

fn env_vars(rng: &mut Rng, n: usize) -> Vec<Value> {
    (0..n)
        .map(|k| match rng.below(4) {
            0 => json!({"name": format!("POD_FIELD_{k}"), "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}}),
            1 => json!({"name": format!("DB_PASSWORD_{k}"), "valueFrom": {"secretKeyRef": {"name": "db-credentials", "key": "password"}}}),
            _ => json!({"name": format!("FEATURE_FLAG_{k}"), "value": format!("enabled-{}", rng.hex(12))}),
        })
        .collect()
}

fn container(rng: &mut Rng, name: &str, env: usize, sidecar: bool) -> Value {
    let mut c = json!({
        "name": name,
        "image": image(rng),
        "imagePullPolicy": rng.pick(&["IfNotPresent", "IfNotPresent", "Always"]),
        "command": ["/bin/app"],
        "args": ["--port=8080", format!("--log-level={}", rng.pick(&["info", "debug"]))],
        "ports": [{"name": "http", "containerPort": 8080 + rng.below(100), "protocol": "TCP"}],
        "env": env_vars(rng, env),
        "resources": {
            "requests": {"cpu": format!("{}m", 50 + rng.below(450)), "memory": format!("{}Mi", 64 + rng.below(448))},
            "limits": {"memory": format!("{}Mi", 512 + rng.below(512))}
        },
        "volumeMounts": [
            {"name": "kube-api-access", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true},
            {"name": "config", "mountPath": "/etc/app"}
        ],
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File"
    });
    if env > 2 {
        c["readinessProbe"] = json!({"httpGet": {"path": "/readyz", "port": 8080, "scheme": "HTTP"}, "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3});
        c["securityContext"] = json!({"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}});
    }
    if sidecar {
        c["restartPolicy"] = json!("Always");
    }
    c
}

/// An AdmissionReview (v1, CREATE) for a Deployment-created Pod with `sites` images:
/// `sites >= 5` gets init containers and native sidecars. Sizes (mean of 16 seeds):
/// 4.4 KB (1), 9.3 KB (5), 22.2 KB (30).
pub fn review_body(seed: u64, sites: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed.wrapping_mul(1_000_003).wrapping_add(sites as u64));
    let (inits, sidecars) = if sites >= 5 {
        ((sites / 15).max(1), (sites / 15).max(1))
    } else {
        (0, 0)
    };
    let mains = sites - inits - sidecars;
    let env = match sites {
        1 => 14,
        2..=9 => 7,
        _ => 1,
    };
    let mut init_containers: Vec<Value> = (0..inits)
        .map(|k| container(&mut rng, &format!("init-{k}"), env.min(3), false))
        .collect();
    init_containers
        .extend((0..sidecars).map(|k| container(&mut rng, &format!("sidecar-{k}"), env, true)));
    let containers: Vec<Value> = (0..mains)
        .map(|k| container(&mut rng, &format!("app-{k}"), env, false))
        .collect();
    let hash = rng.hex(10);
    let app = format!("svc-{}", rng.below(500));
    let mut spec = json!({
        "volumes": [
            {"name": "kube-api-access", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}},
            {"name": "config", "configMap": {"name": format!("{app}-config"), "defaultMode": 420}},
            {"name": "scratch", "emptyDir": {"sizeLimit": "1Gi"}}
        ],
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": app,
        "serviceAccount": app,
        "securityContext": {"runAsUser": 10001, "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
        "schedulerName": "default-scheduler",
        "tolerations": [
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ],
        "priority": 0,
        "enableServiceLinks": true,
        "preemptionPolicy": "PreemptLowerPriority"
    });
    if !init_containers.is_empty() {
        spec["initContainers"] = Value::Array(init_containers);
    }
    if rng.chance(30) {
        spec["imagePullSecrets"] = json!([{"name": "pull-4"}]);
    }
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": format!("{}-{}-{}-{}-{}", rng.hex(8), rng.hex(4), rng.hex(4), rng.hex(4), rng.hex(12)),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": {
                "username": "system:serviceaccount:kube-system:replicaset-controller",
                "uid": rng.hex(32),
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"]
            },
            "object": {
                "kind": "Pod",
                "apiVersion": "v1",
                "metadata": {
                    "generateName": format!("{app}-{hash}-"),
                    "namespace": NAMESPACE,
                    "uid": rng.hex(32),
                    "creationTimestamp": "2025-06-01T12:00:00Z",
                    "labels": {"app.kubernetes.io/name": app, "app.kubernetes.io/part-of": "payments", "pod-template-hash": hash, "team": "payments", "version": format!("v{}", rng.below(40))},
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "9090", "kubectl.kubernetes.io/restartedAt": "2025-05-30T08:00:00Z"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{app}-{hash}"), "uid": rng.hex(32), "controller": true, "blockOwnerDeletion": true}]
                },
                "spec": spec,
                "status": {}
            },
            "oldObject": null,
            "dryRun": false,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"}
        }
    });
    serde_json::to_vec(&review).expect("corpus serialises")
}
