//! The webhook and the chart against a real API server (envtest convention, see
//! `tests/common/envtest.rs`). Run with
//! `KUBEBUILDER_ASSETS=$(tests/envtest/install.sh) cargo test --test e2e_webhook`;
//! without it every test prints `skipped: KUBEBUILDER_ASSETS not set` and passes (under
//! `CI=true` it fails instead).

#[path = "common/envtest.rs"]
mod envtest;
#[path = "common/install.rs"]
mod install;
mod support;

use std::collections::BTreeMap;

use base64::Engine;
use envtest::Envtest;
use install::{Install, RELEASE_NS};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ObjectMeta, PostParams};
use kube::discovery::Discovery;
use kube::{Api, Client};
use serde_json::json;

async fn envtest_or_skip(name: &str) -> Option<Envtest> {
    let env = envtest::start().await;
    if env.is_none() {
        println!("{name}: skipped: KUBEBUILDER_ASSETS not set");
    }
    env
}

async fn create_namespace(c: &Client, name: &str) {
    envtest::create_namespace(c, name, None).await;
}

fn pod(name: &str, image: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "app", "image": image, "imagePullPolicy": "IfNotPresent"}]}
    }))
    .unwrap()
}

/// The chart installed with `VALUES` (its RBAC, config and webhook configurations; see
/// `tests/common/install.rs`), with the credentials source in place and a live Lease held
/// by another replica: the controller stays passive, so anything created below was
/// created by the webhook at admission time.
async fn webhook_for(env: &Envtest) -> Install {
    install_with(env, &install::ghcr_values(), true).await
}

/// As [`webhook_for`], with other values, and the Lease left free when `passive` is false
/// (the process then leads and runs the controller too).
async fn install_with(env: &Envtest, values: &serde_json::Value, passive: bool) -> Install {
    let c = &env.client;
    create_namespace(c, RELEASE_NS).await;
    create_namespace(c, "registry-creds").await;
    if passive {
        envtest::hold_sync_lease_elsewhere(c, RELEASE_NS).await;
    }
    envtest::create_pull_secret(
        c,
        "registry-creds",
        "ghcr-acme-source",
        "ghcr.io",
        "robot:s3cr3t",
    )
    .await;
    Install::new(env, values, &["--identity", "replica-a"]).await
}

#[tokio::test]
async fn pods_created_through_the_api_server_get_their_secret_and_it_exists() {
    let Some(env) =
        envtest_or_skip("pods_created_through_the_api_server_get_their_secret_and_it_exists").await
    else {
        return;
    };
    let _server = webhook_for(&env).await;
    let c = &env.client;

    // a brand-new namespace and a pod in the same instant: no ImagePullBackOff race
    create_namespace(c, "team-new").await;
    let created = Api::<Pod>::namespaced(c.clone(), "team-new")
        .create(&PostParams::default(), &pod("web", "ghcr.io/acme/app:1"))
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    let names: Vec<String> = spec
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["ghcr-acme"]);
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("Always")
    );
    assert_eq!(
        created.metadata.annotations.unwrap()["pullsecret-injector.io/injected"],
        "ghcr-acme"
    );
    let copy = Api::<Secret>::namespaced(c.clone(), "team-new")
        .get("ghcr-acme")
        .await
        .expect("secret exists when the pod does");
    assert_eq!(
        copy.type_.as_deref(),
        Some("kubernetes.io/dockerconfigjson")
    );
    assert_eq!(
        copy.metadata.labels.unwrap()["app.kubernetes.io/managed-by"],
        "pullsecret-injector"
    );

    // out of scope: untouched
    create_namespace(c, "other").await;
    let p = Api::<Pod>::namespaced(c.clone(), "other")
        .create(&PostParams::default(), &pod("web", "ghcr.io/acme/app:1"))
        .await
        .unwrap();
    assert!(p.spec.unwrap().image_pull_secrets.is_none());

    // existing secrets are kept
    let mut p = pod("keep", "ghcr.io/acme/app:1");
    p.spec.as_mut().unwrap().image_pull_secrets =
        Some(vec![k8s_openapi::api::core::v1::LocalObjectReference {
            name: "mine".into(),
        }]);
    let p = Api::<Pod>::namespaced(c.clone(), "team-new")
        .create(&PostParams::default(), &p)
        .await
        .unwrap();
    let names: Vec<String> = p
        .spec
        .unwrap()
        .image_pull_secrets
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["mine", "ghcr-acme"]);
}

#[tokio::test]
async fn dry_run_creates_nothing() {
    let Some(env) = envtest_or_skip("dry_run_creates_nothing").await else {
        return;
    };
    let _server = webhook_for(&env).await;
    let c = &env.client;
    create_namespace(c, "team-dry").await;
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let p = Api::<Pod>::namespaced(c.clone(), "team-dry")
        .create(&pp, &pod("web", "ghcr.io/acme/app:1"))
        .await
        .unwrap();
    assert_eq!(
        p.spec.unwrap().image_pull_secrets.unwrap()[0].name,
        "ghcr-acme",
        "the dry run shows the mutation"
    );
    assert!(
        Api::<Secret>::namespaced(c.clone(), "team-dry")
            .get_opt("ghcr-acme")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        Api::<Pod>::namespaced(c.clone(), "team-dry")
            .get_opt("web")
            .await
            .unwrap()
            .is_none()
    );
}

/// Every object `helm template` renders for the chart (default values plus a policy) is
/// accepted by a real API server.
#[tokio::test]
async fn chart_objects_are_accepted_by_the_api_server() {
    let Some(env) = envtest_or_skip("chart_objects_are_accepted_by_the_api_server").await else {
        return;
    };
    let policy = json!({"policy": {
        "mode": "enforce",
        "allow": ["*.tencentcloudcr.com", "docker.io/library", "registry.k8s.io"],
        "deny": ["docker.io/evilcorp"],
        "exemptNamespaces": ["ops"],
        "overrides": [{"namespaces": ["sandbox-*"], "mode": "warn", "allow": ["*"]}]
    }});
    let docs = support::render_chart(&policy);
    create_namespace(&env.client, RELEASE_NS).await;
    let discovery = Discovery::new(env.client.clone()).run().await.unwrap();
    for doc in &docs {
        install::create_object(&env.client, &discovery, RELEASE_NS, doc).await;
    }
}

/// The chart's RBAC covers everything the process does when it leads: it takes the Lease,
/// copies the source into namespaces in scope, patches ServiceAccounts, follows a
/// rotation, and reports a conflict as an Event (whose failure would otherwise only be
/// logged). Nothing it asks for is forbidden.
#[tokio::test]
async fn the_charts_rbac_covers_everything_the_leader_does() {
    let Some(env) = envtest_or_skip("the_charts_rbac_covers_everything_the_leader_does").await
    else {
        return;
    };
    let c = &env.client;
    // Before the controller starts: an unowned secret with the managed name, to be left
    // alone and reported as an Event.
    create_namespace(c, "team-y").await;
    let theirs = Secret {
        metadata: ObjectMeta {
            name: Some("ghcr-acme".into()),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("k".into(), "v".into())])),
        ..Default::default()
    };
    let theirs = Api::<Secret>::namespaced(c.clone(), "team-y")
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let mut v = install::ghcr_values();
    v["registries"][0]["serviceAccounts"] = json!(["default"]);
    let install = install_with(&env, &v, false).await;
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ServiceAccount;
    use k8s_openapi::api::events::v1::Event;
    use std::time::Duration;
    let wait = Duration::from_secs(30);

    envtest::eventually(wait, "the process holds the sync Lease", || async {
        let l = Api::<Lease>::namespaced(c.clone(), RELEASE_NS)
            .get_opt(envtest::SYNC_LEASE)
            .await
            .ok()??;
        (l.spec?.holder_identity?.as_str() == "replica-a").then_some(())
    })
    .await;

    create_namespace(c, "team-x").await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), "team-x");
    let data = |s: &Secret| s.data.as_ref().unwrap()[".dockerconfigjson"].0.clone();
    let first = envtest::eventually(wait, "the copy in team-x", || async {
        secrets.get_opt("ghcr-acme").await.ok()?
    })
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "team-x");
    envtest::eventually(
        wait,
        "team-x's default ServiceAccount lists the secret",
        || async {
            let sa = sas.get("default").await.ok()?;
            sa.image_pull_secrets?
                .iter()
                .any(|r| r.name == "ghcr-acme")
                .then_some(())
        },
    )
    .await;

    // rotation
    let rotated = json!({"auths": {"ghcr.io": {"auth": base64::engine::general_purpose::STANDARD.encode("robot:rotated")}}});
    let sources: Api<Secret> = Api::namespaced(c.clone(), "registry-creds");
    let mut src = sources.get("ghcr-acme-source").await.unwrap();
    src.data = Some(BTreeMap::from([(
        ".dockerconfigjson".to_string(),
        ByteString(rotated.to_string().into_bytes()),
    )]));
    sources
        .replace("ghcr-acme-source", &PostParams::default(), &src)
        .await
        .unwrap();
    envtest::eventually(wait, "the copy follows the rotation", || async {
        let s = secrets.get("ghcr-acme").await.ok()?;
        (data(&s) != data(&first) && data(&s) == rotated.to_string().into_bytes()).then_some(())
    })
    .await;

    // About the unowned Secret itself, so it is in the tenant's namespace.
    let events: Api<Event> = Api::namespaced(c.clone(), "team-y");
    envtest::eventually(wait, "a PullSecretConflict Event", || async {
        let l = events.list(&Default::default()).await.ok()?;
        l.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("PullSecretConflict")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("ghcr-acme")
            })
            .then_some(())
    })
    .await;
    let now = Api::<Secret>::namespaced(c.clone(), "team-y")
        .get("ghcr-acme")
        .await
        .unwrap();
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );

    let log = install.server().log();
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the chart's RBAC refused something:\n{log}"
    );
}
