//! The admission-time create: before a Pod is admitted, make sure the managed copies of
//! the secrets it needs exist, so the kubelet never looks for a secret the reconciler has
//! not made yet. Every replica may do this (create-if-absent never overwrites); which
//! entry delivers which secret is [`desired::deliverer`]'s answer, as for the reconciler.

use super::cache::{self, Cache};
use super::desired::{self, NamespaceInfo};
use super::error::{DeliveryError, EnsureError};
use super::source;
use super::writes::{Gate, Writer};
use crate::config::{Config, Source};

pub(crate) async fn ensure(
    cache: &Cache,
    writer: &Writer,
    cfg: &Config,
    ns: &str,
    secrets: &[&str],
) -> Result<(), EnsureError> {
    // Names some entry could deliver that the cache does not already show present.
    let missing: Vec<&str> = secrets
        .iter()
        .copied()
        .filter(|s| {
            cfg.registries
                .iter()
                .any(|r| r.secret == *s && r.source.is_some())
        })
        .filter(|s| cache.secret(&(ns.to_string(), s.to_string())).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    // A namespace created a moment ago may not be cached yet; its labels decide scope.
    let info: NamespaceInfo = match cache.namespace(ns) {
        Some(i) => i,
        None => match writer
            .namespace(ns)
            .await
            .map_err(|e| EnsureError(vec![e.into()]))?
        {
            Some(n) => cache::namespace_info(&n)
                .map(|(_, i)| i)
                .unwrap_or_default(),
            None => return Ok(()),
        },
    };
    let mut errors = Vec::new();
    for name in missing {
        let Some((_, reg)) = desired::deliverer(cfg, &info, name) else {
            continue;
        };
        let source = reg.source.as_ref().expect("a deliverer has a source");
        let src = match source {
            Source::Secret(r) => r,
            Source::CredentialProvider(p) => {
                // Only the sync leader runs plugins; a standby has nothing to copy and
                // leaves the copy to the leader's reconciler (seconds away).
                match cache.provider(p) {
                    Some(v) => {
                        if let Err(e) = writer
                            .create_copy(Gate::Admission, ns, &reg.secret, source, &v, &reg.name)
                            .await
                        {
                            errors.push(e.into());
                        }
                    }
                    None => tracing::debug!(namespace = ns, secret = %name, registry = %reg.name,
                        "no credentials from the credential provider on this replica; the sync leader creates the copy"),
                }
                continue;
            }
        };
        let secret = match cache.source(src) {
            Some(Some(s)) => s,
            Some(None) => {
                errors.push(DeliveryError::SourceMissing(src.clone()));
                continue;
            }
            None => match writer.source(src).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    errors.push(DeliveryError::SourceMissing(src.clone()));
                    continue;
                }
                Err(e) => {
                    errors.push(e.into());
                    continue;
                }
            },
        };
        let v = match source::validate(&secret) {
            Ok(v) => v,
            Err(reason) => {
                errors.push(DeliveryError::SourceInvalid {
                    secret: src.clone(),
                    reason,
                });
                continue;
            }
        };
        if let Err(e) = writer
            .create_copy(Gate::Admission, ns, &reg.secret, source, &v, &reg.name)
            .await
        {
            errors.push(e.into());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(EnsureError(errors))
    }
}

#[cfg(test)]
mod tests {
    //! Against a scripted API server (tower-test): the exact requests made, and that an
    //! unowned secret only ever gets a GET.
    use std::sync::Arc;

    use hyper::{Request, Response};
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::api::ObjectMeta;
    use kube::client::Body;
    use kube::runtime::watcher;
    use serde_json::json;
    use tower_test::mock;

    use super::*;
    use crate::config::SecretRef;
    use crate::metrics::{ActionLabels, Metrics};
    use crate::sync::desired::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, SOURCE_ANNOTATION};
    use crate::sync::report::{Queued, Reporter};

    type Handle = mock::Handle<Request<Body>, Response<Body>>;

    const CFG: &str = r#"
registries:
  - name: tcr
    match: ["*.tencentcloudcr.com"]
    secret: tcr-pull
    source: {namespace: creds, name: tcr-src}
    namespaces: {include: ["team-*"]}
"#;

    struct Parts {
        cache: Arc<Cache>,
        writer: Writer,
        reporter: Arc<Reporter>,
        events: tokio::sync::mpsc::Receiver<Queued>,
        metrics: Arc<Metrics>,
        cfg: Config,
    }

    fn parts() -> (Parts, Handle) {
        let (svc, handle) = mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(svc, "default");
        let metrics = Arc::new(Metrics::new());
        let cache = Arc::new(Cache::default());
        fill(&cache);
        let (reporter, events) = Reporter::new(metrics.clone(), Default::default());
        let reporter = Arc::new(reporter);
        let writer = Writer::new(client, metrics.clone(), reporter.clone());
        let cfg = Config::parse(CFG, "t").unwrap();
        (
            Parts {
                cache,
                writer,
                reporter,
                events,
                metrics,
                cfg,
            },
            handle,
        )
    }

    fn fill(c: &Cache) {
        c.apply_namespace(watcher::Event::Init);
        for n in ["team-a", "other"] {
            c.apply_namespace(watcher::Event::InitApply(Namespace {
                metadata: ObjectMeta {
                    name: Some(n.into()),
                    ..Default::default()
                },
                ..Default::default()
            }));
        }
        c.apply_namespace(watcher::Event::InitDone);
        for slot in 0..2 {
            c.apply_secret(slot, watcher::Event::Init);
            c.apply_secret(slot, watcher::Event::InitDone);
        }
        let src: Secret = serde_json::from_value(json!({
            "metadata": {"name": "tcr-src", "namespace": "creds"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "eyJhdXRocyI6eyIqLnRlbmNlbnRjbG91ZGNyLmNvbSI6eyJhdXRoIjoiZFRwdyJ9fX0="}
        }))
        .unwrap();
        c.set_source(
            &SecretRef {
                namespace: "creds".into(),
                name: "tcr-src".into(),
            },
            Some(src),
        );
    }

    async fn next(
        h: &mut Handle,
    ) -> (
        String,
        String,
        serde_json::Value,
        mock::SendResponse<Response<Body>>,
    ) {
        let (req, send) = h.next_request().await.expect("a request");
        let method = req.method().to_string();
        let uri = req.uri().path().to_string();
        let body = req.into_body().collect_bytes().await.unwrap();
        let v = if body.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&body).unwrap()
        };
        (method, uri, v, send)
    }

    fn respond(send: mock::SendResponse<Response<Body>>, code: u16, v: serde_json::Value) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(&v).unwrap()))
                .unwrap(),
        );
    }

    fn status(code: u16, reason: &str) -> serde_json::Value {
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason})
    }

    #[tokio::test]
    async fn creates_the_labelled_copy_then_reports_it() {
        let (mut p, mut h) = parts();
        let server = tokio::spawn(async move {
            let (m, uri, body, send) = next(&mut h).await;
            assert_eq!(
                (m.as_str(), uri.as_str()),
                ("POST", "/api/v1/namespaces/team-a/secrets")
            );
            assert_eq!(
                body["metadata"]["labels"][MANAGED_BY_LABEL],
                MANAGED_BY_VALUE
            );
            assert_eq!(
                body["metadata"]["annotations"][SOURCE_ANNOTATION],
                "creds/tcr-src"
            );
            assert_eq!(body["type"], "kubernetes.io/dockerconfigjson");
            respond(send, 201, body);
            h
        });
        ensure(
            &p.cache,
            &p.writer,
            &p.cfg,
            "team-a",
            &["tcr-pull", "unrelated"],
        )
        .await
        .unwrap();
        let _h = server.await.unwrap();
        let created = p
            .metrics
            .sync_copies
            .get_or_create(&ActionLabels { action: "created" })
            .get();
        assert_eq!(created, 1);
        let (regarding, ev) = p.events.try_recv().expect("an event queued");
        assert_eq!(ev.reason, "PullSecretCopied");
        assert_eq!(
            (regarding.namespace.as_deref(), regarding.name.as_deref()),
            (Some("team-a"), Some("tcr-pull"))
        );
    }

    #[tokio::test]
    async fn an_unowned_secret_is_only_read_and_reported() {
        let (mut p, mut h) = parts();
        let server = tokio::spawn(async move {
            let (m, _, _, send) = next(&mut h).await;
            assert_eq!(m, "POST");
            respond(send, 409, status(409, "AlreadyExists"));
            let (m, uri, _, send) = next(&mut h).await;
            assert_eq!(
                (m.as_str(), uri.as_str()),
                ("GET", "/api/v1/namespaces/team-a/secrets/tcr-pull")
            );
            respond(
                send,
                200,
                json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "tcr-pull", "namespace": "team-a"}, "type": "Opaque"}),
            );
            h
        });
        ensure(&p.cache, &p.writer, &p.cfg, "team-a", &["tcr-pull"])
            .await
            .unwrap();
        let _h = server.await.unwrap();
        assert_eq!(p.metrics.sync_conflicts.get(), 1);
        let (_, ev) = p.events.try_recv().expect("an event queued");
        assert_eq!(ev.reason, "PullSecretConflict");
        // the reconciler will not POST again into it for a while
        assert!(
            p.reporter
                .recently_foreign(&("team-a".into(), "tcr-pull".into()))
        );
    }

    #[tokio::test]
    async fn a_missing_source_is_a_typed_error() {
        let (p, mut h) = parts();
        p.cache.set_source(
            &SecretRef {
                namespace: "creds".into(),
                name: "tcr-src".into(),
            },
            None,
        );
        let e = ensure(&p.cache, &p.writer, &p.cfg, "team-a", &["tcr-pull"])
            .await
            .unwrap_err();
        assert!(matches!(e.0.as_slice(), [DeliveryError::SourceMissing(_)]));
        assert_eq!(e.to_string(), "source creds/tcr-src does not exist");
        drop(p);
        assert!(h.next_request().await.is_none());
    }

    #[tokio::test]
    async fn out_of_scope_or_present_means_no_request() {
        let (p, mut h) = parts();
        // "other" is outside include: [team-*]; no request at all
        ensure(&p.cache, &p.writer, &p.cfg, "other", &["tcr-pull"])
            .await
            .unwrap();
        // already cached as present in team-a
        p.cache.apply_secret(
            0,
            watcher::Event::Apply(
                serde_json::from_value(
                    json!({"metadata": {"name": "tcr-pull", "namespace": "team-a"},
                    "type": "kubernetes.io/dockerconfigjson"}),
                )
                .unwrap(),
            ),
        );
        ensure(&p.cache, &p.writer, &p.cfg, "team-a", &["tcr-pull"])
            .await
            .unwrap();
        drop(p);
        assert!(h.next_request().await.is_none());
    }
}
