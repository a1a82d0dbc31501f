//! Credential delivery against a real API server (envtest convention, see
//! `tests/common/envtest.rs`), through the public surface only: the chart installed and
//! the real binary (`serve`) running as its ServiceAccount (`tests/common/install.rs`),
//! its `/readyz` and metrics, and what the Kubernetes API shows (objects, the sync Lease,
//! the audit log). The shared world (source, registry entry, readers) is
//! `tests/common/sync.rs`. Run with
//! `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test e2e_sync -- --test-threads=1`;
//! without it every test prints `skipped: KUBEBUILDER_ASSETS not set` and passes (under
//! `CI=true` it fails instead).
//!
//! Fault scenarios (a leader killed, the API server frozen or restarted) are in
//! `tests/e2e_sync_faults.rs`. The dry-run case (a dry-run Pod creates no copy) is
//! `e2e_webhook::dry_run_creates_nothing`, and the plain admission-time create (a Pod in
//! a namespace created the same instant finds its copy) is
//! `e2e_webhook::pods_created_through_the_api_server_get_their_secret_and_it_exists`.

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;
#[path = "common/sync.rs"]
mod sync;

use std::collections::BTreeMap;

use envtest::{Envtest, eventually};
use install::metric;
use k8s_openapi::api::core::v1::{Pod, Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use sync::{
    IMAGE, SECRET, SOURCE, SOURCE_NS, WAIT, auths, create_ns, data_of, entry, get_secret,
    rotate_source, values, wait_copy, wait_gone,
};

/// A Pod of the matched image without pull secrets of its own.
fn pod(name: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"generateName": format!("{name}-")},
        "spec": {"containers": [{"name": "a", "image": IMAGE, "imagePullPolicy": "IfNotPresent"}]}
    }))
    .unwrap()
}

fn pull_secrets(p: &Pod) -> Vec<String> {
    p.spec
        .iter()
        .flat_map(|s| s.image_pull_secrets.iter().flatten())
        .map(|r| r.name.clone())
        .collect()
}

async fn create_pod(c: &Client, ns: &str, name: &str) -> Pod {
    Api::<Pod>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &pod(name))
        .await
        .unwrap_or_else(|e| panic!("create pod in {ns}: {e}"))
}

/// Create requests (any outcome) our ServiceAccount sent for the copy in `ns`.
fn create_attempts(env: &Envtest, ns: &str) -> usize {
    sync::our_writes(env)
        .iter()
        .filter(|r| r.verb == "create" && r.namespace == ns && r.name == SECRET)
        .count()
}

/// The webhook's view (its caches) shows the copy in `ns`: a Pod admitted there gets the
/// secret and the webhook sends no create for it (a copy missing from its view would
/// cost a create-if-absent first, which the audit log records before the Pod is
/// answered). Retried with new Pods until the view has caught up.
async fn wait_webhook_sees_copy(env: &Envtest, ns: &str) {
    let c = &env.client;
    eventually(
        WAIT,
        &format!("a Pod in {ns} admitted without a create for its copy"),
        || async {
            let before = create_attempts(env, ns);
            let p = create_pod(c, ns, "probe").await;
            assert_eq!(pull_secrets(&p), [SECRET], "the webhook injects in {ns}");
            (create_attempts(env, ns) == before).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn copies_follow_scope_rotation_and_never_touch_unowned() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    create_ns(&c, "team-a", true).await;
    create_ns(&c, "team-b", false).await;
    // team-c and team-d come into scope (by label) only once they hold unowned secrets
    // with the managed name: one a pull secret (seen by the cache), one Opaque (found only
    // by the failed create). Created in scope, the controller could copy first.
    create_ns(&c, "team-c", false).await;
    create_ns(&c, "team-d", false).await;
    let mut theirs = sync::pull_secret("team-c", SECRET, auths("theirs"));
    theirs.metadata.labels = Some(BTreeMap::from([("owner".into(), "team-c".into())]));
    let theirs = Api::<Secret>::namespaced(c.clone(), "team-c")
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let opaque = Secret {
        metadata: ObjectMeta {
            name: Some(SECRET.into()),
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

    let webhook = sync::install(&env, &values(json!([entry()])), "replica-0", false).await;
    for ns in ["team-c", "team-d"] {
        sync::set_in_scope(&c, ns, true).await;
    }
    eventually(WAIT, "replica-0 holds the sync Lease", || async {
        (sync::lease_holder(&c).await.as_deref() == Some("replica-0")).then_some(())
    })
    .await;

    let copy = wait_copy(&c, "team-a", &auths("v1")).await;
    let labels = copy.metadata.labels.clone().unwrap();
    assert_eq!(labels[sync::MANAGED_BY], "pullsecret-injector");
    let ann = copy.metadata.annotations.clone().unwrap();
    assert_eq!(
        ann["pullsecret-injector.io/source"],
        format!("{SOURCE_NS}/{SOURCE}")
    );
    assert_eq!(ann["pullsecret-injector.io/source-version"].len(), 64);
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert!(
        get_secret(&c, "team-b", SECRET).await.is_none(),
        "out of scope (selector)"
    );
    assert!(
        get_secret(&c, SOURCE_NS, SECRET).await.is_none(),
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
    sync::set_in_scope(&c, "team-a", false).await;
    wait_gone(&c, "team-a").await;

    // conflicts were reported, and the unowned secrets are byte-for-byte untouched
    eventually(WAIT, "conflicts counted for team-c and team-d", || async {
        let n = metric(
            &webhook.metrics().await,
            "pullsecret_injector_sync_conflicts_total",
            &[],
        )?;
        (n >= 2.0).then_some(())
    })
    .await;
    // Reported about the unowned Secret itself, so in the tenant's namespace.
    for ns in ["team-c", "team-d"] {
        let events: Api<Event> = Api::namespaced(c.clone(), ns);
        eventually(
            WAIT,
            &format!("a PullSecretConflict event in {ns}"),
            || async {
                let l = events.list(&ListParams::default()).await.unwrap();
                l.items
                    .iter()
                    .any(|e| {
                        e.reason.as_deref() == Some("PullSecretConflict")
                            && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(SECRET)
                    })
                    .then_some(())
            },
        )
        .await;
    }
    for (ns, before) in [("team-c", &theirs), ("team-d", &opaque)] {
        let now = get_secret(&c, ns, SECRET).await.unwrap();
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
        let written: Vec<_> = sync::our_writes(&env)
            .into_iter()
            .filter(|r| r.namespace == ns && r.ok())
            .collect();
        assert!(written.is_empty(), "{ns}: {written:#?}");
    }

    // The webhook sees what exists: the labels (selector scope) and the copy.
    wait_webhook_sees_copy(&env, "team-new").await;
    let p = create_pod(&c, "team-b", "app").await;
    assert!(pull_secrets(&p).is_empty(), "team-b is out of scope");
}

#[tokio::test]
async fn admission_time_create_honours_the_selector_and_leaves_unowned_alone() {
    // Another holder keeps the Lease: the reconciler never runs here, so whatever appears
    // was created by the admission-time path alone.
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let webhook = sync::install(&env, &values(json!([entry()])), "replica-1", true).await;
    // In scope, and no Pod ever: checked last, when a reconciler would long have copied.
    create_ns(&c, "team-fresh", true).await;

    // A namespace labelled into scope and a Pod in the same instant: the webhook's cache
    // may not know the namespace yet (the selector is then decided by a lookup), and the
    // copy exists when the Pod is admitted.
    create_ns(&c, "team-instant", true).await;
    let p = create_pod(&c, "team-instant", "app").await;
    assert_eq!(pull_secrets(&p), [SECRET]);
    let s = get_secret(&c, "team-instant", SECRET)
        .await
        .expect("secret exists when the pod is admitted");
    assert_eq!(data_of(&s), auths("v1"));
    let requests = sync::secret_requests(&env);
    let created: Vec<_> = requests
        .iter()
        .filter(|r| r.namespace == "team-instant" && r.verb == "create" && r.ok())
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    assert!(created[0].by_us(), "{created:#?}");
    let pod_done = env
        .audit_events()
        .iter()
        .filter(|e| e["stage"] == "ResponseComplete" && e["verb"] == "create")
        .filter(|e| e["objectRef"]["resource"] == "pods")
        .filter(|e| e["objectRef"]["namespace"] == "team-instant")
        .filter_map(|e| e["stageTimestamp"].as_str()?.parse().ok())
        .collect::<Vec<k8s_openapi::jiff::Timestamp>>();
    assert_eq!(pod_done.len(), 1);
    assert!(created[0].completed <= pod_done[0], "copy before the Pod");

    // out of scope (no label): admitted without the secret, nothing created
    create_ns(&c, "team-nolabel", false).await;
    let p = create_pod(&c, "team-nolabel", "app").await;
    assert!(pull_secrets(&p).is_empty());
    assert!(get_secret(&c, "team-nolabel", SECRET).await.is_none());

    // an unowned secret of that name: left alone, reported, admission still proceeds
    create_ns(&c, "team-owned", true).await;
    let theirs = Api::<Secret>::namespaced(c.clone(), "team-owned")
        .create(
            &PostParams::default(),
            &sync::pull_secret("team-owned", SECRET, auths("theirs")),
        )
        .await
        .unwrap();
    // the cache may not have seen it yet, so this may go through the failed-create path
    create_pod(&c, "team-owned", "app").await;
    let now = get_secret(&c, "team-owned", SECRET).await.unwrap();
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(now.data, theirs.data);

    // The namespace in scope without Pods got nothing: no reconcile ran on this follower.
    assert!(get_secret(&c, "team-fresh", SECRET).await.is_none());
    assert_eq!(
        sync::lease_holder(&c).await.as_deref(),
        Some("someone-else")
    );
    let text = webhook.metrics().await;
    assert_eq!(
        metric(&text, "pullsecret_injector_sync_reconciles_total", &[]).unwrap_or(0.0),
        0.0,
        "{text}"
    );
}

#[tokio::test]
async fn service_accounts_get_the_secret_appended() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let mut e = entry();
    e["namespaces"] = json!({"include": ["team-*"]});
    e["serviceAccounts"] = json!(["default", "builder"]);
    // Before the install: the namespace (in scope by name) and its ServiceAccounts.
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
    let _webhook = sync::install(&env, &values(json!([e])), "replica-0", false).await;

    let names = |sa: &ServiceAccount| -> Vec<String> {
        sa.image_pull_secrets
            .iter()
            .flatten()
            .map(|r| r.name.clone())
            .collect()
    };
    eventually(WAIT, "default SA has existing + tcr-pull", || async {
        let sa = sas.get("default").await.unwrap();
        (names(&sa) == ["existing", SECRET]).then_some(())
    })
    .await;
    eventually(WAIT, "builder SA has tcr-pull", || async {
        let sa = sas.get("builder").await.unwrap();
        (names(&sa) == [SECRET]).then_some(())
    })
    .await;
    wait_copy(&c, "team-sa", &auths("v1")).await;
}

#[tokio::test]
async fn config_reload_adds_and_removes_entries_and_invalid_sources_are_not_copied() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let empty = values(json!([]));
    let mut webhook = sync::install(&env, &empty, "replica-0", false).await;
    create_ns(&c, "team-r", true).await;
    eventually(WAIT, "replica-0 holds the sync Lease", || async {
        (sync::lease_holder(&c).await.as_deref() == Some("replica-0")).then_some(())
    })
    .await;
    assert!(get_secret(&c, "team-r", SECRET).await.is_none());

    webhook.reconfigure(&values(json!([entry()]))).await;
    wait_copy(&c, "team-r", &auths("v1")).await;

    webhook.reconfigure(&empty).await;
    wait_gone(&c, "team-r").await;

    // an invalid source (Opaque) is reported on the source and never copied
    Api::<Secret>::namespaced(c.clone(), SOURCE_NS)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("bad-src".into()),
                    namespace: Some(SOURCE_NS.into()),
                    ..Default::default()
                },
                string_data: Some(BTreeMap::from([(".dockerconfigjson".into(), "{}".into())])),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut bad = entry();
    bad["source"]["name"] = json!("bad-src");
    webhook.reconfigure(&values(json!([bad]))).await;
    let events: Api<Event> = Api::namespaced(c.clone(), SOURCE_NS);
    eventually(WAIT, "a SourceInvalid event in creds", || async {
        let l = events.list(&ListParams::default()).await.unwrap();
        l.items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SourceInvalid"))
            .then_some(())
    })
    .await;
    assert!(get_secret(&c, "team-r", SECRET).await.is_none());
    let _ = Api::<Secret>::namespaced(c.clone(), SOURCE_NS)
        .delete("bad-src", &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn two_replicas_one_writer_same_result() {
    let Some(env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let webhook = sync::install(&env, &values(json!([entry()])), "replica-0", false).await;
    let second = webhook.start_replica("replica-1");
    let replicas = [("replica-0", webhook.server()), ("replica-1", &second)];
    for i in 0..5 {
        create_ns(&c, &format!("team-{i}"), true).await;
    }
    for i in 0..5 {
        wait_copy(&c, &format!("team-{i}"), &auths("v1")).await;
    }
    // Exactly one replica says it leads, and it is the Lease holder.
    let leader = eventually(WAIT, "exactly one replica reports leader", || async {
        let mut leading = Vec::new();
        for (id, s) in replicas {
            if install::is_leader(s).await? {
                leading.push(id);
            }
        }
        (leading.len() == 1).then(|| leading[0])
    })
    .await;
    assert_eq!(sync::lease_holder(&c).await.as_deref(), Some(leader));
    // Only the leader wrote: each copy was created once, and the standby counts no copy.
    for i in 0..5 {
        let ns = format!("team-{i}");
        let creates: Vec<_> = sync::our_writes(&env)
            .into_iter()
            .filter(|r| r.namespace == ns && r.ok())
            .collect();
        assert_eq!(creates.len(), 1, "{ns}: {creates:#?}");
        assert_eq!(creates[0].verb, "create", "{ns}: {creates:#?}");
    }
    for (id, s) in replicas {
        let text = install::scrape(s).await.expect("metrics");
        let copies = metric(&text, "pullsecret_injector_sync_copies_total", &[]).unwrap_or(0.0);
        if id == leader {
            assert_eq!(copies, 5.0, "{id}:\n{text}");
        } else {
            assert_eq!(copies, 0.0, "{id}:\n{text}");
        }
    }
}

/// A control-plane restart breaks every connection and watch: the caches must resume
/// (kube-runtime's watcher with backoff, re-listing where the resourceVersion is gone), so
/// a namespace created and a rotation made after the restart still reach the copies, and
/// the webhook's view catches up.
#[tokio::test]
async fn watches_resume_after_an_api_server_restart() {
    let Some(mut env) = envtest::start().await else {
        return;
    };
    let c = env.client.clone();
    let webhook = sync::install(&env, &values(json!([entry()])), "replica-0", false).await;
    create_ns(&c, "team-before", true).await;
    wait_copy(&c, "team-before", &auths("v1")).await;

    env.restart_apiserver().await;

    create_ns(&c, "team-after", true).await;
    wait_copy(&c, "team-after", &auths("v1")).await;
    rotate_source(&c, auths("v2")).await;
    wait_copy(&c, "team-before", &auths("v2")).await;
    wait_copy(&c, "team-after", &auths("v2")).await;
    wait_webhook_sees_copy(&env, "team-after").await;
    sync::wait_ready(&webhook, webhook.server(), true, WAIT).await;
}
