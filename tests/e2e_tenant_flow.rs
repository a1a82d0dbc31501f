//! The tenant's story, end to end against a real control plane (etcd, kube-apiserver and
//! kube-controller-manager; see `tests/common/envtest.rs`) with the chart installed as
//! rendered (`tests/common/install.rs`):
//!
//! *A tenant gets a brand-new namespace and applies the workloads from the Tencent TCR
//! getting-started guide exactly as written, without any `imagePullSecrets`. Every Pod the
//! controllers create pulls from the private registry with the right secret, and that
//! secret already exists in the namespace when the Pod does, so no Pod can hit
//! `ImagePullBackOff` waiting for credentials.*
//!
//! And the part tenants meet next: ServiceAccounts. Secrets a ServiceAccount lists (put
//! there by the in-tree ServiceAccount admission plugin, which runs before us) stay first
//! and in order; ours is appended once, never twice; and with `serviceAccounts:` the
//! controller appends our secret to the ServiceAccount without touching the tenant's own
//! entries, after which Pods need no patching at all.
//!
//! Run with `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test
//! e2e_tenant_flow`; without it every test prints a skip notice and passes (under
//! `CI=true` it fails instead).

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use envtest::{Envtest, eventually};
use install::{FULLNAME, Install, RELEASE_NS};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

/// The registry of the Tencent TCR getting-started guide.
const REGISTRY: &str = "demo-tcr.tencentcloudcr.com";
/// Its sample image, as the guide's manifests name it.
const IMAGE: &str = "demo-tcr.tencentcloudcr.com/docker/getting-started:latest";
/// The same image pinned to a tag, as a tenant would run it in production.
const IMAGE_PINNED: &str = "demo-tcr.tencentcloudcr.com/docker/getting-started:v1";
/// The managed pull secret's name in tenant namespaces.
const SECRET: &str = "tcr-pull";
/// Where the platform team keeps the source credentials.
const CREDS_NS: &str = "registry-creds";
const SOURCE: &str = "tcr-pull-source";
const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const INJECTED: &str = "pullsecret-injector.io/injected";
/// The identity the chart's ServiceAccount authenticates as.
fn our_user() -> String {
    format!("system:serviceaccount:{RELEASE_NS}:{FULLNAME}")
}
fn controller_user(name: &str) -> String {
    format!("system:serviceaccount:kube-system:{name}")
}

const WAIT: Duration = Duration::from_secs(30);

/// Chart values: one TCR entry delivering `SECRET` from the source, forcing
/// `imagePullPolicy: Always`, for every tenant namespace; `extra` is merged into the
/// registry entry (e.g. `serviceAccounts`).
fn values(extra: Value) -> Value {
    let mut entry = json!({
        "name": "tcr",
        "match": [REGISTRY],
        "secret": SECRET,
        "alwaysPull": true,
        "source": {"namespace": CREDS_NS, "name": SOURCE}
    });
    for (k, v) in extra.as_object().expect("object") {
        entry[k] = v.clone();
    }
    json!({
        "registries": [entry],
        "namespaces": {"exclude": ["kube-system", "kube-public", "kube-node-lease", CREDS_NS]},
        // A failing webhook must fail the test, not silently admit an unpatched Pod.
        "webhook": {"failurePolicy": "Fail"}
    })
}

/// The credentials namespace with the source Secret (a TCR robot account).
async fn create_source(c: &Client) {
    envtest::create_namespace(c, CREDS_NS, None).await;
    envtest::create_pull_secret(c, CREDS_NS, SOURCE, REGISTRY, "tcr$robot:s3cr3t").await;
}

/// The chart installed with `values`; with `foreign_lease` another replica holds the sync
/// Lease, so the reconciler stays passive and only the admission-time path writes.
async fn install(env: &Envtest, values: &Value, foreign_lease: bool) -> Install {
    let c = &env.client;
    envtest::create_namespace(c, RELEASE_NS, None).await;
    if foreign_lease {
        envtest::hold_sync_lease_elsewhere(c, RELEASE_NS).await;
    }
    create_source(c).await;
    Install::new(env, values, &["--identity", "replica-a"]).await
}

fn kubectl_apply(env: &Envtest, ns: &str, yaml: &str) {
    let (ok, out, err) = env.kubectl(&["apply", "-n", ns, "-f", "-"], Some(yaml));
    assert!(ok, "kubectl apply failed:\n{out}\n{err}");
}

fn pull_secrets(p: &Pod) -> Vec<String> {
    p.spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .collect()
}

fn sa_pull_secrets(sa: &ServiceAccount) -> Vec<String> {
    sa.image_pull_secrets
        .iter()
        .flatten()
        .map(|r| r.name.clone())
        .collect()
}

fn pull_policies(p: &Pod) -> Vec<Option<String>> {
    p.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten().chain(&s.containers))
        .map(|c| c.image_pull_policy.clone())
        .collect()
}

fn owner_kind(p: &Pod) -> Option<String> {
    p.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| o.kind.clone())
}

/// One completed request from the API server's audit log.
#[derive(Debug, Clone)]
struct Audited {
    /// `objectRef.name`: empty for a create whose object carried only `generateName`.
    name: String,
    user: String,
    code: i64,
    at: Timestamp,
    annotations: BTreeMap<String, String>,
}

/// Every completed request of `verb` on `resource` in `ns`.
fn audited(env: &Envtest, verb: &str, resource: &str, ns: &str) -> Vec<Audited> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    env.audit_events()
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete")
        .filter(|e| e["verb"] == verb)
        .filter(|e| e["objectRef"]["resource"] == resource)
        .filter(|e| e["objectRef"]["subresource"].is_null())
        .filter(|e| e["objectRef"]["namespace"] == ns)
        .map(|e| Audited {
            name: s(&e["objectRef"]["name"]),
            user: s(&e["user"]["username"]),
            code: e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            at: s(&e["stageTimestamp"])
                .parse()
                .unwrap_or_else(|err| panic!("stageTimestamp of {e}: {err}")),
            annotations: e["annotations"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), s(v))).collect())
                .unwrap_or_default(),
        })
        .collect()
}

/// Successful creates of `resource` in `ns`, in the order they completed.
fn created(env: &Envtest, resource: &str, ns: &str) -> Vec<Audited> {
    let mut v: Vec<Audited> = audited(env, "create", resource, ns)
        .into_iter()
        .filter(|a| a.code == 201)
        .collect();
    v.sort_by_key(|a| a.at);
    v
}

/// The managed copy in `ns`: ours by label and annotation, and of the source's type.
async fn assert_managed_copy(c: &Client, ns: &str) -> Secret {
    let copy = Api::<Secret>::namespaced(c.clone(), ns)
        .get_opt(SECRET)
        .await
        .expect("get secret")
        .unwrap_or_else(|| panic!("no {SECRET} in {ns}"));
    let labels = copy.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(MANAGED_BY).map(String::as_str),
        Some("pullsecret-injector"),
        "{ns}/{SECRET} is the managed copy: {:?}",
        copy.metadata
    );
    let annotations = copy.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("pullsecret-injector.io/source")
            .map(String::as_str),
        Some(format!("{CREDS_NS}/{SOURCE}").as_str())
    );
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    copy
}

/// The one successful create of the managed copy in `ns`: done by our ServiceAccount,
/// completed no later than `before` (the first Pod create there).
fn assert_secret_created_first(env: &Envtest, ns: &str, pod_creates: &[Audited]) {
    let secret_creates: Vec<Audited> = created(env, "secrets", ns)
        .into_iter()
        .filter(|a| a.name == SECRET)
        .collect();
    assert_eq!(
        secret_creates.len(),
        1,
        "exactly one successful create of {ns}/{SECRET}: {secret_creates:#?}"
    );
    let s = &secret_creates[0];
    assert_eq!(s.user, our_user(), "the copy is written by the chart's SA");
    for p in pod_creates {
        assert!(
            s.at <= p.at,
            "{ns}/{SECRET} created at {} but pod {:?} (by {}) already at {}",
            s.at,
            p.name,
            p.user,
            p.at
        );
    }
}

const TENANT_WORKLOADS: &str = r#"
# The getting-started guide's Deployment, as written (no imagePullSecrets).
apiVersion: apps/v1
kind: Deployment
metadata:
  name: getting-started
  labels: {app: getting-started}
spec:
  replicas: 2
  selector:
    matchLabels: {app: getting-started}
  template:
    metadata:
      labels: {app: getting-started}
    spec:
      containers:
        - name: getting-started
          image: IMAGE
          ports: [{containerPort: 3000}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: todo-db
spec:
  serviceName: todo-db
  replicas: 1
  selector:
    matchLabels: {app: todo-db}
  template:
    metadata:
      labels: {app: todo-db}
    spec:
      containers:
        - name: db
          image: IMAGE_PINNED
          imagePullPolicy: IfNotPresent
---
apiVersion: batch/v1
kind: Job
metadata:
  name: migrate
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      initContainers:
        - name: wait
          image: IMAGE_PINNED
          imagePullPolicy: IfNotPresent
      containers:
        - name: migrate
          image: IMAGE_PINNED
          imagePullPolicy: IfNotPresent
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: report
spec:
  schedule: "* * * * *"
  concurrencyPolicy: Forbid
  jobTemplate:
    spec:
      backoffLimit: 0
      template:
        spec:
          restartPolicy: Never
          containers:
            - name: report
              image: IMAGE_PINNED
              imagePullPolicy: IfNotPresent
"#;

#[tokio::test]
async fn unmodified_tenant_workloads_get_the_secret_and_it_exists_before_each_pod() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let _webhook = install(&env, &values(json!({})), true).await;

    let ns = "tenant-shop";
    envtest::create_namespace(&c, ns, None).await;
    assert!(
        Api::<Secret>::namespaced(c.clone(), ns)
            .get_opt(SECRET)
            .await
            .unwrap()
            .is_none(),
        "the passive reconciler copied nothing: only admission can deliver the secret"
    );
    let yaml = TENANT_WORKLOADS
        .replace("IMAGE_PINNED", IMAGE_PINNED)
        .replace("IMAGE", IMAGE);
    kubectl_apply(&env, ns, &yaml);

    // Deployment: 2 (ReplicaSet), StatefulSet: 1, Job: 1, CronJob: 1 once its first
    // minute boundary has passed.
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let all = eventually(
        Duration::from_secs(80),
        "2 ReplicaSet pods, 1 StatefulSet pod, 2 Job pods (one from the CronJob)",
        || async {
            let l = pods.list(&ListParams::default()).await.ok()?.items;
            let count = |k: &str| {
                l.iter()
                    .filter(|p| owner_kind(p).as_deref() == Some(k))
                    .count()
            };
            (count("ReplicaSet") == 2 && count("StatefulSet") == 1 && count("Job") == 2)
                .then_some(l)
        },
    )
    .await;
    assert_eq!(all.len(), 5, "no other pods: {all:#?}");

    // What each Pod became.
    for p in &all {
        let name = p.metadata.name.clone().unwrap();
        assert_eq!(pull_secrets(p), [SECRET], "{name}");
        assert!(
            pull_policies(p)
                .iter()
                .all(|x| x.as_deref() == Some("Always")),
            "{name}: every container pulls Always: {:?}",
            pull_policies(p)
        );
        assert_eq!(
            p.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(INJECTED))
                .map(String::as_str),
            Some(SECRET),
            "{name}"
        );
    }
    assert_managed_copy(&c, ns).await;

    // Who created them, and how, per the audit log.
    let pod_creates = created(&env, "pods", ns);
    for (kind, controller, generated) in [
        ("ReplicaSet", "replicaset-controller", true),
        ("StatefulSet", "statefulset-controller", false),
        ("Job", "job-controller", true),
    ] {
        let ours: Vec<&Pod> = all
            .iter()
            .filter(|p| owner_kind(p).as_deref() == Some(kind))
            .collect();
        let by: Vec<&Audited> = pod_creates
            .iter()
            .filter(|a| a.user == controller_user(controller))
            .collect();
        assert_eq!(
            by.len(),
            ours.len(),
            "{kind} pods were created by {controller} and only by it: {pod_creates:#?}"
        );
        for p in &ours {
            let name = p.metadata.name.clone().unwrap();
            let gen_name = p.metadata.generate_name.clone().unwrap_or_default();
            if generated {
                assert!(
                    !gen_name.is_empty() && name.starts_with(&gen_name),
                    "{name}: named by the API server from generateName {gen_name:?}"
                );
            } else {
                assert!(
                    by.iter().any(|a| a.name == name),
                    "{name}: the StatefulSet controller names its pods in the request"
                );
            }
        }
        if generated {
            assert!(
                by.iter().all(|a| a.name.is_empty()),
                "{controller} sends only generateName: {by:#?}"
            );
        }
        for a in &by {
            assert_eq!(
                a.annotations
                    .get("mutate.pullsecret-injector.io/injected-secrets")
                    .map(String::as_str),
                Some(SECRET),
                "the audit event records our injection: {a:#?}"
            );
        }
    }
    assert_secret_created_first(&env, ns, &pod_creates);

    // And the reconciler never ran: the Lease is still held elsewhere.
    let lease = Api::<Lease>::namespaced(c.clone(), RELEASE_NS)
        .get(envtest::SYNC_LEASE)
        .await
        .unwrap();
    assert_eq!(
        lease.spec.unwrap().holder_identity.as_deref(),
        Some("someone-else")
    );
}

/// A ServiceAccount `name` in `ns` listing `secrets`.
async fn create_service_account(c: &Client, ns: &str, name: &str, secrets: &[&str]) {
    let sa: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": name},
        "imagePullSecrets": secrets.iter().map(|s| json!({"name": s})).collect::<Vec<_>>()
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create service account");
}

/// A bare Pod running the pinned image as `service_account`, with `secrets` of its own.
fn tenant_pod(name: &str, service_account: &str, secrets: &[&str]) -> Pod {
    let mut spec = json!({
        "serviceAccountName": service_account,
        "containers": [{"name": "app", "image": IMAGE_PINNED, "imagePullPolicy": "IfNotPresent"}]
    });
    if !secrets.is_empty() {
        spec["imagePullSecrets"] = secrets.iter().map(|s| json!({"name": s})).collect();
    }
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap()
}

async fn create_pod(c: &Client, ns: &str, pod: &Pod) -> Pod {
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), pod)
        .await
        .unwrap_or_else(|e| panic!("create pod {:?} in {ns}: {e}", pod.metadata.name))
}

/// A Deployment of the pinned image as `service_account`, applied with kubectl, and its
/// first Pod once the ReplicaSet controller made it.
async fn deploy(env: &Envtest, ns: &str, name: &str, service_account: &str) -> Pod {
    let yaml = format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: {service_account}
      containers:
        - name: app
          image: {IMAGE_PINNED}
          imagePullPolicy: IfNotPresent
"#
    );
    kubectl_apply(env, ns, &yaml);
    let pods: Api<Pod> = Api::namespaced(env.client.clone(), ns);
    eventually(
        WAIT,
        &format!("a pod of Deployment {ns}/{name}"),
        || async {
            let lp = ListParams::default().labels(&format!("app={name}"));
            pods.list(&lp).await.ok()?.items.into_iter().next()
        },
    )
    .await
}

fn assert_pulls_always(p: &Pod) {
    assert!(
        pull_policies(p)
            .iter()
            .all(|x| x.as_deref() == Some("Always")),
        "{:?}: {:?}",
        p.metadata.name,
        pull_policies(p)
    );
}

#[tokio::test]
async fn service_account_secrets_come_first_and_ours_is_appended_once() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let _webhook = install(&env, &values(json!({})), true).await;

    // A tenant whose ServiceAccount carries a secret of their own (a mirror registry,
    // say): the ServiceAccount admission plugin copies it into the Pod first, we append.
    let ns = "tenant-builds";
    envtest::create_namespace(&c, ns, None).await;
    create_service_account(&c, ns, "builder", &["own-secret"]).await;
    let p = deploy(&env, ns, "builder", "builder").await;
    assert_eq!(pull_secrets(&p), ["own-secret", SECRET]);
    assert_pulls_always(&p);
    let p = create_pod(&c, ns, &tenant_pod("bare", "builder", &[])).await;
    assert_eq!(pull_secrets(&p), ["own-secret", SECRET]);
    // A Pod naming its own secrets gets none from its ServiceAccount (the plugin only
    // fills an empty list); ours is still appended, after the tenant's.
    let p = create_pod(
        &c,
        ns,
        &tenant_pod("own", "builder", &["mine", "also-mine"]),
    )
    .await;
    assert_eq!(pull_secrets(&p), ["mine", "also-mine", SECRET]);
    // ...and a Pod that names ours already is left as it is.
    let p = create_pod(&c, ns, &tenant_pod("named", "builder", &[SECRET, "mine"])).await;
    assert_eq!(pull_secrets(&p), [SECRET, "mine"]);
    assert_pulls_always(&p);
    assert_managed_copy(&c, ns).await;
    assert_secret_created_first(&env, ns, &created(&env, "pods", ns));

    // A brand-new namespace whose ServiceAccount already lists the very secret we
    // deliver (the tenant followed the registry's docs): nothing is added twice and the
    // order stays, and still the copy exists by the time the Pod does.
    let ns = "tenant-preset";
    envtest::create_namespace(&c, ns, None).await;
    create_service_account(&c, ns, "preset", &[SECRET, "own-secret"]).await;
    let p = create_pod(&c, ns, &tenant_pod("preset", "preset", &[])).await;
    assert_eq!(pull_secrets(&p), [SECRET, "own-secret"]);
    assert_pulls_always(&p);
    assert_managed_copy(&c, ns).await;
    assert_secret_created_first(&env, ns, &created(&env, "pods", ns));

    // The ServiceAccounts themselves are not ours to change without `serviceAccounts`.
    for (ns, name, want) in [
        ("tenant-builds", "builder", vec!["own-secret"]),
        ("tenant-preset", "preset", vec![SECRET, "own-secret"]),
    ] {
        let sa = Api::<ServiceAccount>::namespaced(c.clone(), ns)
            .get(name)
            .await
            .unwrap();
        assert_eq!(sa_pull_secrets(&sa), want, "{ns}/{name}");
    }
    for ns in ["tenant-builds", "tenant-preset"] {
        assert!(
            audited(&env, "patch", "serviceaccounts", ns).is_empty()
                && audited(&env, "update", "serviceaccounts", ns).is_empty(),
            "no ServiceAccount in {ns} was written"
        );
    }
}

#[tokio::test]
async fn service_accounts_option_appends_our_secret_and_keeps_the_tenants() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    // Scope by label, so the tenant's ServiceAccount is set up before we may touch it.
    let values = values(json!({
        "serviceAccounts": ["default"],
        "namespaces": {"selector": {"matchLabels": {"registry-access": "tcr"}}}
    }));
    let _webhook = install(&env, &values, false).await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), RELEASE_NS);
    eventually(WAIT, "the process holds the sync Lease", || async {
        let l = leases.get_opt(envtest::SYNC_LEASE).await.ok()??;
        (l.spec?.holder_identity.as_deref() == Some("replica-a")).then_some(())
    })
    .await;

    let ns = "tenant-sa";
    envtest::create_namespace(&c, ns, None).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), ns);
    sas.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"imagePullSecrets": [{"name": "own-secret"}, {"name": "mirror"}]})),
    )
    .await
    .unwrap();
    envtest::label_namespace(&c, ns, "registry-access", Some("tcr")).await;

    let want = ["own-secret", "mirror", SECRET];
    eventually(WAIT, "default SA gets tcr-pull appended", || async {
        let sa = sas.get("default").await.ok()?;
        (sa_pull_secrets(&sa) == want).then_some(())
    })
    .await;
    assert_managed_copy(&c, ns).await;
    // Appended once: further reconciles (the SA's own watch event, the copy's) find it
    // there and leave it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(sa_pull_secrets(&sas.get("default").await.unwrap()), want);
    let writes: Vec<Audited> = audited(&env, "patch", "serviceaccounts", ns)
        .into_iter()
        .chain(audited(&env, "update", "serviceaccounts", ns))
        .filter(|a| a.user == our_user() && a.code == 200)
        .collect();
    assert_eq!(writes.len(), 1, "one append: {writes:#?}");
    // The copy existed before the ServiceAccount referenced it.
    let copy = created(&env, "secrets", ns)
        .into_iter()
        .find(|a| a.name == SECRET)
        .expect("the copy's create is audited");
    assert!(copy.at <= writes[0].at);

    // Pods now get every secret from the ServiceAccount; we add nothing and duplicate
    // nothing, and still force the pull policy.
    let p = deploy(&env, ns, "getting-started", "default").await;
    assert_eq!(pull_secrets(&p), want);
    assert_pulls_always(&p);
    let p = create_pod(&c, ns, &tenant_pod("bare", "default", &[])).await;
    assert_eq!(pull_secrets(&p), want);
    assert_pulls_always(&p);
    for a in created(&env, "pods", ns) {
        assert!(
            !a.annotations
                .contains_key("mutate.pullsecret-injector.io/injected-secrets"),
            "nothing to inject: {a:#?}"
        );
        assert!(
            a.annotations
                .contains_key("mutate.pullsecret-injector.io/forced-always-pull"),
            "{a:#?}"
        );
    }
}
