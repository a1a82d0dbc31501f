//! Self-managed serving certificates (`serve --managed-certs SECRET`), as Gatekeeper's
//! cert-controller and Kyverno do: the server makes its own CA and serving certificate,
//! keeps them in a Secret it owns in the release namespace, writes the CA bundle into the
//! `caBundle` of its own webhook configurations, and rotates both before they expire
//! with an overlap (old and new CA trusted together), so no handshake fails. Nothing
//! about the certificates is rendered by Helm, so `helm template` output is stable.
//!
//! Every replica runs the same loop; each write carries the resourceVersion it read, so
//! concurrent replicas agree on one Secret (the loser re-reads and serves the winner's
//! certificate). What the Secret should hold next is decided purely in `decide`.
//!
//! The Secret (`type: kubernetes.io/tls`, label `app.kubernetes.io/managed-by:
//! pullsecret-injector`) holds `tls.crt`/`tls.key` (served), `ca.crt` (the trust bundle,
//! what `caBundle` must be), `ca-signing.crt`/`.key` and, during a CA rotation,
//! `ca-next.crt`/`.key`. A Secret of that name without our label is never touched: start
//! fails with that reason.

mod decide;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures_util::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::ObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use std::future::Future;
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::metrics::Metrics;
use crate::server::tls::ReloadingResolver;
use decide::{Ca, Policy, Stored};

use crate::ownership::{MANAGED_BY_LABEL, MANAGED_BY_VALUE, is_ours, post_params as pp};
const PUBLISHED_ANNOTATION: &str = "pullsecret-injector.io/ca-bundle-published";
/// Start gives up after this long without a certificate (RBAC, an unreachable API server).
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// One API request may take this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Options {
    pub secret: String,
    pub namespace: String,
    /// DNS names and IP addresses of the serving certificate.
    pub names: Vec<String>,
    pub mutating: Vec<String>,
    pub validating: Vec<String>,
    pub ca_validity: time::Duration,
    pub cert_validity: time::Duration,
    pub propagation: time::Duration,
}

/// The running loop: resolves if it ends, which is always a fault.
pub struct Running {
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    pub async fn failed(&mut self) -> anyhow::Error {
        match (&mut self.task).await {
            Ok(()) => anyhow::anyhow!("the managed-certificate loop ended"),
            Err(e) => anyhow::anyhow!("the managed-certificate loop failed: {e}"),
        }
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

struct Manager {
    client: Client,
    opts: Options,
    policy: Policy,
    metrics: Arc<Metrics>,
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
        .filter(|s| !s.trim().is_empty())
}

/// Every PEM certificate in `text`.
fn split_pem(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        cur.push_str(line.trim_end());
        cur.push('\n');
        if line.starts_with("-----END CERTIFICATE-----") {
            out.push(std::mem::take(&mut cur).trim().to_string() + "\n");
        } else if !cur.starts_with("-----BEGIN") {
            cur.clear();
        }
    }
    out
}

fn parse(secret: &Secret) -> Option<Stored> {
    let data = secret.data.as_ref()?;
    let ca = |k: &str| -> Option<Ca> {
        Some(Ca {
            cert_pem: text(data, &format!("{k}.crt"))?,
            key_pem: text(data, &format!("{k}.key"))?,
        })
    };
    let published = secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PUBLISHED_ANNOTATION))
        .and_then(|v| {
            let (hash, at) = v.split_once('@')?;
            let at =
                OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).ok()?;
            Some((hash.to_string(), at))
        });
    Some(Stored {
        signing: ca("ca-signing")?,
        next: ca("ca-next"),
        bundle: split_pem(&text(data, "ca.crt")?),
        cert_pem: text(data, "tls.crt")?,
        key_pem: text(data, "tls.key")?,
        published,
    })
}

fn render(stored: &Stored, name: &str, namespace: &str) -> Secret {
    let mut data = BTreeMap::new();
    let mut put = |k: &str, v: &str| {
        data.insert(k.to_string(), ByteString(v.as_bytes().to_vec()));
    };
    put("tls.crt", &stored.cert_pem);
    put("tls.key", &stored.key_pem);
    put("ca.crt", &decide::bundle_text(&stored.bundle));
    put("ca-signing.crt", &stored.signing.cert_pem);
    put("ca-signing.key", &stored.signing.key_pem);
    if let Some(n) = &stored.next {
        put("ca-next.crt", &n.cert_pem);
        put("ca-next.key", &n.key_pem);
    }
    let annotations = stored.published.as_ref().map(|(h, at)| {
        let at = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        BTreeMap::from([(PUBLISHED_ANNOTATION.to_string(), format!("{h}@{at}"))])
    });
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            labels: Some(crate::ownership::labels()),
            annotations,
            ..Default::default()
        },
        type_: Some("kubernetes.io/tls".into()),
        data: Some(data),
        ..Default::default()
    }
}

async fn bounded<T>(what: &str, f: impl Future<Output = Result<T, kube::Error>>) -> Result<T> {
    match tokio::time::timeout(REQUEST_TIMEOUT, f).await {
        Ok(r) => r.with_context(|| what.to_string()),
        Err(_) => bail!("{what}: no answer within {REQUEST_TIMEOUT:?}"),
    }
}

/// The CA bundles in a list of webhooks' `caBundle`s, as one hash if they all agree.
fn agreed_hash<'a>(bundles: impl Iterator<Item = Option<&'a ByteString>>) -> Option<String> {
    let mut hash = None;
    for b in bundles {
        let text = String::from_utf8(b?.0.clone()).ok()?;
        let h = decide::bundle_hash(&split_pem(&text));
        match &hash {
            None => hash = Some(h),
            Some(prev) if *prev == h => {}
            Some(_) => return None,
        }
    }
    hash
}

/// The two webhook configuration kinds, as far as the CA bundle goes.
trait WebhookConfiguration:
    kube::Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>
    + Clone
    + serde::de::DeserializeOwned
    + serde::Serialize
    + std::fmt::Debug
{
    /// Each webhook's `clientConfig.caBundle`.
    fn ca_bundles(&self) -> Vec<Option<&ByteString>>;
    fn set_ca_bundles(&mut self, bundle: &ByteString);
}

/// The two kinds' webhooks differ in type but share `clientConfig`.
macro_rules! webhook_configuration {
    ($kind:ty) => {
        impl WebhookConfiguration for $kind {
            fn ca_bundles(&self) -> Vec<Option<&ByteString>> {
                let hooks = self.webhooks.iter().flatten();
                hooks.map(|w| w.client_config.ca_bundle.as_ref()).collect()
            }

            fn set_ca_bundles(&mut self, bundle: &ByteString) {
                for w in self.webhooks.iter_mut().flatten() {
                    w.client_config.ca_bundle = Some(bundle.clone());
                }
            }
        }
    };
}

webhook_configuration!(MutatingWebhookConfiguration);
webhook_configuration!(ValidatingWebhookConfiguration);

impl Manager {
    fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.opts.namespace)
    }

    /// Hash of the bundle every configured webhook configuration carries, if they agree
    /// and all exist.
    async fn live_bundle(&self) -> Result<Option<String>> {
        let mut hashes = Vec::new();
        let all_exist = self
            .hashes::<MutatingWebhookConfiguration>(&self.opts.mutating, &mut hashes)
            .await?
            && self
                .hashes::<ValidatingWebhookConfiguration>(&self.opts.validating, &mut hashes)
                .await?;
        if !all_exist {
            return Ok(None);
        }
        let first = hashes.first().cloned().flatten();
        Ok(hashes
            .iter()
            .all(|h| *h == first)
            .then_some(first)
            .flatten())
    }

    /// Appends the bundle hash each configuration `names` of kind `K` agrees on; false
    /// when one does not exist.
    async fn hashes<K: WebhookConfiguration>(
        &self,
        names: &[String],
        out: &mut Vec<Option<String>>,
    ) -> Result<bool> {
        let api: Api<K> = Api::all(self.client.clone());
        for name in names {
            let Some(c) = bounded("reading webhook configuration", api.get_opt(name)).await? else {
                return Ok(false);
            };
            out.push(agreed_hash(c.ca_bundles().into_iter()));
        }
        Ok(true)
    }

    /// Writes `bundle` into every webhook of every configured configuration that does not
    /// carry it yet (replace with the resourceVersion read: a concurrent change retries).
    async fn publish(&self, bundle: &[String]) -> Result<()> {
        let want = ByteString(decide::bundle_text(bundle).into_bytes());
        self.publish_to::<MutatingWebhookConfiguration>(&self.opts.mutating, &want)
            .await?;
        self.publish_to::<ValidatingWebhookConfiguration>(&self.opts.validating, &want)
            .await
    }

    async fn publish_to<K: WebhookConfiguration>(
        &self,
        names: &[String],
        want: &ByteString,
    ) -> Result<()> {
        let api: Api<K> = Api::all(self.client.clone());
        for name in names {
            let Some(mut c) = bounded("reading webhook configuration", api.get_opt(name)).await?
            else {
                continue;
            };
            if c.ca_bundles().into_iter().all(|b| b == Some(want)) {
                continue;
            }
            c.set_ca_bundles(want);
            bounded("updating caBundle", api.replace(name, &pp(), &c)).await?;
            tracing::info!(webhook_configuration = %name, "caBundle updated");
        }
        Ok(())
    }

    /// One round: read, decide, write the Secret if needed, publish the bundle. Returns
    /// what is stored afterwards.
    async fn step(&self) -> Result<Stored> {
        let api = self.secrets();
        let name = &self.opts.secret;
        let existing = bounded("reading the certificate secret", api.get_opt(name)).await?;
        if let Some(s) = &existing
            && !is_ours(&s.metadata)
        {
            return Err(ForeignSecret(format!("{}/{name}", self.opts.namespace)).into());
        }
        // Ours but unreadable (edited by hand): start over rather than serve garbage.
        let stored = existing.as_ref().and_then(parse);
        let live = self.live_bundle().await?;
        let now = OffsetDateTime::now_utc();
        let stored = match decide::next(stored.as_ref(), live.as_deref(), now, &self.policy)? {
            None => stored.expect("`next` returns Some when nothing is stored"),
            Some(next) => {
                let mut obj = render(&next, name, &self.opts.namespace);
                match &existing {
                    None => {
                        bounded("creating the certificate secret", api.create(&pp(), &obj)).await?;
                        tracing::info!(secret = %name, "created the self-managed certificate");
                    }
                    Some(e) => {
                        obj.metadata.resource_version = e.metadata.resource_version.clone();
                        bounded(
                            "updating the certificate secret",
                            api.replace(name, &pp(), &obj),
                        )
                        .await?;
                        tracing::info!(secret = %name, "updated the self-managed certificate");
                    }
                }
                next
            }
        };
        self.publish(&stored.bundle).await?;
        Ok(stored)
    }

    fn install(&self, resolver: &ReloadingResolver, stored: &Stored, served: &mut String) {
        if *served == stored.cert_pem {
            return;
        }
        match resolver.set_pem(&stored.cert_pem, &stored.key_pem) {
            Ok(()) => {
                *served = stored.cert_pem.clone();
                if let Ok((_, to)) = decide::validity(&stored.cert_pem) {
                    self.metrics.tls_certificate_expiry.set(to.unix_timestamp());
                }
                tracing::info!("serving the new self-managed certificate");
            }
            Err(e) => {
                tracing::error!(error = %e, "self-managed certificate unusable; keeping the old one")
            }
        }
    }

    /// How often to look even without a change: often enough for the propagation wait and
    /// for a third of the certificate's life.
    fn tick(&self) -> Duration {
        let by_propagation: time::Duration = self.policy.propagation / 2;
        let by_life: time::Duration = self.policy.cert_validity / 10;
        let t = by_propagation.min(by_life);
        Duration::from_secs_f64(t.as_seconds_f64().clamp(1.0, 60.0))
    }
}

/// Obtains the certificate (creating the Secret if needed) and starts the loop. Returns
/// the resolver to serve with.
pub async fn start(
    client: Client,
    opts: Options,
    metrics: Arc<Metrics>,
) -> Result<(Arc<ReloadingResolver>, Running)> {
    let m = Manager {
        client,
        policy: Policy {
            names: opts.names.clone(),
            ca_validity: opts.ca_validity,
            cert_validity: opts.cert_validity,
            propagation: opts.propagation,
        },
        opts,
        metrics,
    };
    let started = tokio::time::Instant::now();
    let stored = loop {
        match m.step().await {
            Ok(s) => break s,
            Err(e) if started.elapsed() < START_TIMEOUT && !is_foreign(&e) => {
                tracing::warn!(error = %format!("{e:#}"), "self-managed certificate not ready; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(e) => return Err(e.context("self-managed certificate")),
        }
    };
    let resolver = Arc::new(ReloadingResolver::from_pem(
        &stored.cert_pem,
        &stored.key_pem,
    )?);
    let mut served = String::new();
    m.install(&resolver, &stored, &mut served);
    let task = tokio::spawn(run(m, resolver.clone(), served));
    Ok((resolver, Running { task }))
}

/// A Secret of our name that we did not make: never retried, never written.
#[derive(Debug, thiserror::Error)]
#[error(
    "secret {0} exists without label {MANAGED_BY_LABEL}={MANAGED_BY_VALUE}; not taking it \
     over (delete it, or pick another name)"
)]
struct ForeignSecret(String);

fn is_foreign(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ForeignSecret>().is_some()
}

/// Watches the object `name` and pings `changed` on every event.
fn spawn_notifying<K>(
    watches: &mut tokio::task::JoinSet<()>,
    api: Api<K>,
    name: String,
    changed: &Arc<Notify>,
) where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    let n = changed.clone();
    watches.spawn(async move {
        let mut s = watcher::watch_object(api, &name).default_backoff().boxed();
        while s.next().await.is_some() {
            n.notify_one();
        }
    });
}

/// Re-runs a step on every change of the Secret or a webhook configuration, and on a
/// timer; errors are logged and retried (the served certificate stays).
async fn run(m: Manager, resolver: Arc<ReloadingResolver>, mut served: String) {
    let changed = Arc::new(Notify::new());
    let mut watches = tokio::task::JoinSet::new();
    spawn_notifying(&mut watches, m.secrets(), m.opts.secret.clone(), &changed);
    for name in &m.opts.mutating {
        let api: Api<MutatingWebhookConfiguration> = Api::all(m.client.clone());
        spawn_notifying(&mut watches, api, name.clone(), &changed);
    }
    for name in &m.opts.validating {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(m.client.clone());
        spawn_notifying(&mut watches, api, name.clone(), &changed);
    }
    let tick = m.tick();
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(tick) => {}
            done = watches.join_next() => {
                tracing::error!(?done, "a managed-certificate watch ended");
                return;
            }
        }
        match m.step().await {
            Ok(stored) => m.install(&resolver, &stored, &mut served),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "self-managed certificate round failed; retrying")
            }
        }
    }
}

#[cfg(test)]
mod tests;
