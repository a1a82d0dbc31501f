//! Credential delivery against a real API server (envtest convention, see
//! `tests/common/envtest.rs`). Run with
//! `KUBEBUILDER_ASSETS=/path/to/bin cargo test --test e2e_sync -- --test-threads=1`;
//! without it every test prints `skipped: KUBEBUILDER_ASSETS not set` and passes (under
//! `CI=true` it fails instead).

#[path = "common/envtest.rs"]
mod envtest;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use envtest::{Envtest, eventually};
use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use pullsecret_injector::cluster::Cluster;
use pullsecret_injector::config::Config;
use pullsecret_injector::metrics::Metrics;
use pullsecret_injector::sync::{self, KubeCluster};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);
const RELEASE_NS: &str = "psi-system";

const CONFIG: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    source: {namespace: creds, name: tcr-src}
    namespaces:
      include: ["team-*"]
      selector: {matchLabels: {registry-access: tcr}}
"#;

fn auths(user: &str) -> Vec<u8> {
    use base64::Engine;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:pw"));
    format!(r#"{{"auths":{{"*.tencentcloudcr.com":{{"auth":"{auth}"}}}}}}"#).into_bytes()
}

fn pull_secret(ns: &str, name: &str, data: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            ..Default::default()
        },
        type_: Some("kubernetes.io/dockerconfigjson".into()),
        data: Some(BTreeMap::from([(
            ".dockerconfigjson".into(),
            ByteString(data),
        )])),
        ..Default::default()
    }
}

async fn create_ns(c: &Client, name: &str, in_scope: bool) {
    let labels =
        in_scope.then(|| BTreeMap::from([("registry-access".to_string(), "tcr".to_string())]));
    envtest::create_namespace(c, name, labels).await;
}

async fn get_secret(c: &Client, ns: &str, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(c.clone(), ns)
        .get_opt(name)
        .await
        .unwrap()
}

fn data_of(s: &Secret) -> Vec<u8> {
    s.data.as_ref().unwrap()[".dockerconfigjson"].0.clone()
}

struct Harness {
    env: Envtest,
    cluster: Arc<KubeCluster>,
    config: Arc<ArcSwap<Config>>,
    tick: tokio::sync::watch::Sender<u64>,
    metrics: Arc<Metrics>,
}

impl Harness {
    fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    fn reload(&self, text: &str) {
        self.config
            .store(Arc::new(Config::parse(text, "e2e.yaml").unwrap()));
        self.tick.send_modify(|v| *v += 1);
    }
}

/// An API server with the namespaces `creds` (holding the source) and the release
/// namespace, and the sync started with `config`. `before` runs before `start` (to plant
/// a foreign Lease, for instance).
async fn setup(config: &str, identity: &str, plant_foreign_lease: bool) -> Option<Harness> {
    let env = envtest::start().await?;
    let c = env.client.clone();
    create_ns(&c, "creds", false).await;
    create_ns(&c, RELEASE_NS, false).await;
    Api::<Secret>::namespaced(c.clone(), "creds")
        .create(
            &PostParams::default(),
            &pull_secret("creds", "tcr-src", auths("v1")),
        )
        .await
        .unwrap();
    if plant_foreign_lease {
        envtest::hold_sync_lease_elsewhere(&c, RELEASE_NS).await;
    }
    let config = Arc::new(ArcSwap::from_pointee(
        Config::parse(config, "e2e.yaml").unwrap(),
    ));
    let (tick, rx) = tokio::sync::watch::channel(0u64);
    let metrics = Arc::new(Metrics::new());
    let cluster = sync::start_cluster(
        c.clone(),
        config.clone(),
        rx,
        metrics.clone(),
        identity.into(),
        RELEASE_NS.into(),
    )
    .await
    .unwrap();
    eventually(WAIT, "caches synced", || {
        let r = cluster.ready();
        async move { r.then_some(()) }
    })
    .await;
    Some(Harness {
        env,
        cluster,
        config,
        tick,
        metrics,
    })
}

/// Replaces the source's data (a credential rotation).
async fn rotate_source(c: &Client, data: Vec<u8>) {
    let mut s = get_secret(c, "creds", "tcr-src").await.unwrap();
    s.data = pull_secret("creds", "tcr-src", data).data;
    Api::<Secret>::namespaced(c.clone(), "creds")
        .replace("tcr-src", &PostParams::default(), &s)
        .await
        .unwrap();
}

async fn wait_copy(c: &Client, ns: &str, want: &[u8]) -> Secret {
    eventually(
        WAIT,
        &format!("copy in {ns} with expected data"),
        || async {
            get_secret(c, ns, "tcr-pull")
                .await
                .filter(|s| data_of(s) == want)
        },
    )
    .await
}

async fn wait_gone(c: &Client, ns: &str) {
    eventually(WAIT, &format!("no copy in {ns}"), || async {
        get_secret(c, ns, "tcr-pull").await.is_none().then_some(())
    })
    .await
}

#[tokio::test]
async fn copies_follow_scope_rotation_and_never_touch_unowned() {
    let Some(h) = setup(CONFIG, "replica-0", false).await else {
        return;
    };
    let c = h.env.client.clone();
    create_ns(&c, "team-a", true).await;
    create_ns(&c, "team-b", false).await;
    // team-c and team-d come into scope (by label) only once they hold unowned secrets
    // with the managed name: one a pull secret (seen by the cache), one Opaque (found only
    // by the failed create). Created in scope, the controller could copy first.
    create_ns(&c, "team-c", false).await;
    create_ns(&c, "team-d", false).await;
    let mut theirs = pull_secret("team-c", "tcr-pull", auths("theirs"));
    theirs.metadata.labels = Some(BTreeMap::from([("owner".into(), "team-c".into())]));
    let theirs = Api::<Secret>::namespaced(c.clone(), "team-c")
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let opaque = Secret {
        metadata: ObjectMeta {
            name: Some("tcr-pull".into()),
            namespace: Some("team-d".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    let opaque = Api::<Secret>::namespaced(c.clone(), "team-d")
        .create(&PostParams::default(), &opaque)
        .await
        .unwrap();

    for ns in ["team-c", "team-d"] {
        envtest::label_namespace(&c, ns, "registry-access", Some("tcr")).await;
    }

    eventually(WAIT, "this replica leads", || {
        let l = h.cluster.is_leader();
        async move { l.then_some(()) }
    })
    .await;
    let copy = wait_copy(&c, "team-a", &auths("v1")).await;
    let labels = copy.metadata.labels.clone().unwrap();
    assert_eq!(
        labels["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );
    let ann = copy.metadata.annotations.clone().unwrap();
    assert_eq!(ann["pullsecret-injector.io/source"], "creds/tcr-src");
    assert_eq!(ann["pullsecret-injector.io/source-version"].len(), 64);
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert!(
        get_secret(&c, "team-b", "tcr-pull").await.is_none(),
        "out of scope (selector)"
    );
    assert!(
        get_secret(&c, "creds", "tcr-pull").await.is_none(),
        "out of scope (include)"
    );

    // a namespace created later gets its copy within seconds
    create_ns(&c, "team-new", true).await;
    wait_copy(&c, "team-new", &auths("v1")).await;

    // rotation updates every copy
    rotate_source(&c, auths("v2")).await;
    wait_copy(&c, "team-a", &auths("v2")).await;
    wait_copy(&c, "team-new", &auths("v2")).await;

    // relabelled out of scope: the copy goes
    envtest::label_namespace(&c, "team-a", "registry-access", None).await;
    wait_gone(&c, "team-a").await;

    // conflicts were reported, and the unowned secrets are byte-for-byte untouched
    eventually(WAIT, "conflicts counted for team-c and team-d", || {
        let n = h.metrics.sync_conflicts.get();
        async move { (n >= 2).then_some(()) }
    })
    .await;
    let events: Api<Event> = Api::namespaced(c.clone(), "default");
    eventually(WAIT, "a PullSecretConflict event", || async {
        let l = events.list(&ListParams::default()).await.unwrap();
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("PullSecretConflict"))
            .then_some(())
    })
    .await;
    for (ns, before) in [("team-c", &theirs), ("team-d", &opaque)] {
        let now = get_secret(&c, ns, "tcr-pull").await.unwrap();
        assert_eq!(
            now.metadata.resource_version, before.metadata.resource_version,
            "{ns}"
        );
        assert_eq!(now.data, before.data, "{ns}");
        assert_eq!(now.metadata.labels, before.metadata.labels, "{ns}");
        assert_eq!(
            now.metadata.annotations, before.metadata.annotations,
            "{ns}"
        );
    }
    // the webhook sees what exists
    let facts = h.cluster.facts("team-new");
    assert!(facts.secrets.unwrap().contains("tcr-pull"));
    assert_eq!(facts.labels.unwrap()["registry-access"], "tcr");
}

#[tokio::test]
async fn admission_time_create_beats_the_pod_and_dry_run_creates_nothing() {
    // Another holder keeps the Lease: the reconciler never runs here, so whatever appears
    // was created by the admission-time path alone.
    let Some(h) = setup(CONFIG, "replica-1", true).await else {
        return;
    };
    let c = h.env.client.clone();
    let cfg = h.config();
    let pod = |ns: &str| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "app", "namespace": ns},
            "spec": {"containers": [{"name": "a", "image": "demo.tencentcloudcr.com/x/app:1"}],
                     "imagePullSecrets": [{"name": "tcr-pull"}]}
        }))
        .unwrap()
    };

    create_ns(&c, "team-fresh", true).await;
    // dry run: the webhook skips ensure_secrets, and the API server persists nothing
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    Api::<Pod>::namespaced(c.clone(), "team-fresh")
        .create(&dry, &pod("team-fresh"))
        .await
        .unwrap();
    assert!(get_secret(&c, "team-fresh", "tcr-pull").await.is_none());
    assert!(
        Api::<Pod>::namespaced(c.clone(), "team-fresh")
            .get_opt("app")
            .await
            .unwrap()
            .is_none()
    );

    // real create, in the same instant as the namespace: ensure first, as the webhook does
    create_ns(&c, "team-instant", true).await;
    h.cluster
        .ensure_secrets(&cfg, "team-instant", &["tcr-pull".to_string()])
        .await
        .unwrap();
    Api::<Pod>::namespaced(c.clone(), "team-instant")
        .create(&PostParams::default(), &pod("team-instant"))
        .await
        .unwrap();
    let s = get_secret(&c, "team-instant", "tcr-pull")
        .await
        .expect("secret exists when the pod is admitted");
    assert_eq!(data_of(&s), auths("v1"));
    assert!(!h.cluster.is_leader());

    // out of scope: nothing is created
    create_ns(&c, "team-nolabel", false).await;
    h.cluster
        .ensure_secrets(&cfg, "team-nolabel", &["tcr-pull".to_string()])
        .await
        .unwrap();
    assert!(get_secret(&c, "team-nolabel", "tcr-pull").await.is_none());

    // an unowned secret of that name: left alone, reported, admission still proceeds
    create_ns(&c, "team-owned", true).await;
    let theirs = Api::<Secret>::namespaced(c.clone(), "team-owned")
        .create(
            &PostParams::default(),
            &pull_secret("team-owned", "tcr-pull", auths("theirs")),
        )
        .await
        .unwrap();
    // the cache may not have seen it yet, so this may go through the failed-create path
    h.cluster
        .ensure_secrets(&cfg, "team-owned", &["tcr-pull".to_string()])
        .await
        .unwrap();
    let now = get_secret(&c, "team-owned", "tcr-pull").await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(now.data, theirs.data);

    // and no reconcile ever ran on this follower
    assert!(get_secret(&c, "team-fresh", "tcr-pull").await.is_none());
}

#[tokio::test]
async fn service_accounts_get_the_secret_appended() {
    let config = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    source: {namespace: creds, name: tcr-src}
    namespaces: {include: ["team-*"]}
    serviceAccounts: [default, builder]
"#;
    let Some(h) = setup(config, "replica-0", false).await else {
        return;
    };
    let c = h.env.client.clone();
    create_ns(&c, "team-sa", false).await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "team-sa");
    // `default` exists already (kube-controller-manager made it); a tenant gave it a
    // pull secret of their own. `builder` is new.
    sas.patch(
        "default",
        &PatchParams::default(),
        &Patch::Merge(json!({"imagePullSecrets": [{"name": "existing"}]})),
    )
    .await
    .unwrap();
    let builder: ServiceAccount = serde_json::from_value(json!({
        "metadata": {"name": "builder", "namespace": "team-sa"}
    }))
    .unwrap();
    sas.create(&PostParams::default(), &builder).await.unwrap();
    let names = |sa: &ServiceAccount| -> Vec<String> {
        sa.image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect()
    };
    eventually(WAIT, "default SA has existing + tcr-pull", || async {
        let sa = sas.get("default").await.unwrap();
        (names(&sa) == ["existing", "tcr-pull"]).then_some(())
    })
    .await;
    eventually(WAIT, "builder SA has tcr-pull", || async {
        let sa = sas.get("builder").await.unwrap();
        (names(&sa) == ["tcr-pull"]).then_some(())
    })
    .await;
    wait_copy(&c, "team-sa", &auths("v1")).await;
}

#[tokio::test]
async fn config_reload_adds_and_removes_entries_and_invalid_sources_are_not_copied() {
    let empty = "registries: []\n";
    let Some(h) = setup(empty, "replica-0", false).await else {
        return;
    };
    let c = h.env.client.clone();
    create_ns(&c, "team-r", true).await;
    eventually(WAIT, "this replica leads", || {
        let l = h.cluster.is_leader();
        async move { l.then_some(()) }
    })
    .await;
    assert!(get_secret(&c, "team-r", "tcr-pull").await.is_none());

    h.reload(CONFIG);
    wait_copy(&c, "team-r", &auths("v1")).await;

    h.reload(empty);
    wait_gone(&c, "team-r").await;

    // an invalid source (Opaque) is reported on the source and never copied
    Api::<Secret>::namespaced(c.clone(), "creds")
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("bad-src".into()),
                    namespace: Some("creds".into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([(".dockerconfigjson".into(), "{}".into())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.reload(&CONFIG.replace("tcr-src", "bad-src"));
    let events: Api<Event> = Api::namespaced(c.clone(), "creds");
    eventually(WAIT, "a SourceInvalid event in creds", || async {
        let l = events.list(&ListParams::default()).await.unwrap();
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SourceInvalid"))
            .then_some(())
    })
    .await;
    assert!(get_secret(&c, "team-r", "tcr-pull").await.is_none());
    let _ = Api::<Secret>::namespaced(c.clone(), "creds")
        .delete("bad-src", &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn two_replicas_one_writer_same_result() {
    let Some(h) = setup(CONFIG, "replica-0", false).await else {
        return;
    };
    let c = h.env.client.clone();
    let (tick2, rx2) = tokio::sync::watch::channel(0u64);
    let second = sync::start_cluster(
        c.clone(),
        h.config.clone(),
        rx2,
        Arc::new(Metrics::new()),
        "replica-1".into(),
        RELEASE_NS.into(),
    )
    .await
    .unwrap();
    for i in 0..5 {
        create_ns(&c, &format!("team-{i}"), true).await;
    }
    for i in 0..5 {
        wait_copy(&c, &format!("team-{i}"), &auths("v1")).await;
    }
    assert!(
        h.cluster.is_leader() != second.is_leader(),
        "exactly one replica holds the lease"
    );
    let lease = Api::<Lease>::namespaced(c.clone(), RELEASE_NS)
        .get(sync::lease::LEASE_NAME)
        .await
        .unwrap();
    let holder = lease.spec.unwrap().holder_identity.unwrap();
    assert!(holder == "replica-0" || holder == "replica-1");
    drop(tick2);
}

/// A control-plane restart breaks every connection and watch: the caches must resume
/// (kube-runtime's watcher with backoff, re-listing where the resourceVersion is gone), so
/// a namespace created and a rotation made after the restart still reach the copies, and
/// the webhook's view catches up.
#[tokio::test]
async fn watches_resume_after_an_api_server_restart() {
    let Some(mut h) = setup(CONFIG, "replica-0", false).await else {
        return;
    };
    let c = h.env.client.clone();
    create_ns(&c, "team-before", true).await;
    wait_copy(&c, "team-before", &auths("v1")).await;

    h.env.restart_apiserver().await;

    create_ns(&c, "team-after", true).await;
    wait_copy(&c, "team-after", &auths("v1")).await;
    rotate_source(&c, auths("v2")).await;
    wait_copy(&c, "team-before", &auths("v2")).await;
    wait_copy(&c, "team-after", &auths("v2")).await;
    eventually(WAIT, "the webhook's cache sees team-after's copy", || {
        let facts = h.cluster.facts("team-after");
        async move {
            facts
                .secrets
                .is_some_and(|s| s.contains("tcr-pull"))
                .then_some(())
        }
    })
    .await;
    assert!(h.cluster.ready(), "ready again after the restart");
}
