//! `pullsecret-injector audit`: the background audit run once against a cluster from a
//! laptop or a CI job. It reads Namespaces and Pods (paged, as the controller does),
//! judges them with the same [`judge::audit`], prints the result and writes nothing.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Api;
use kube::api::ListParams;
use serde::Serialize;

use super::judge::{self, AuditPod, Finding, NamespaceAudit, Unreadable, Verdict};
use crate::admission::NamespaceFacts;
use crate::offline::ConfigSource;
use crate::offline::output::{OutputFormat, render};

/// Objects per LIST page, as the controller's watch lists them.
pub(crate) const PAGE_SIZE: u32 = 500;

#[derive(clap::Args, Debug, Clone)]
pub struct AuditArgs {
    #[command(flatten)]
    pub config: ConfigSource,
    /// The cluster's kubeconfig (default: in-cluster, then $KUBECONFIG or ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Judge only this namespace's Pods (default: every namespace).
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = OutputFormat::Text)]
    pub output: OutputFormat,
}

#[derive(Serialize)]
struct Summary {
    pods: usize,
    pass: usize,
    fail: usize,
    warn: usize,
    error: usize,
}

#[derive(Serialize)]
struct AuditReport<'a> {
    /// False when a Pod breaks an `enforce` or `audit` rule.
    ok: bool,
    summary: Summary,
    findings: Vec<&'a Finding>,
    unreadable: Vec<UnreadableAt<'a>>,
}

#[derive(Serialize)]
struct UnreadableAt<'a> {
    namespace: &'a str,
    #[serde(flatten)]
    pod: &'a Unreadable,
}

/// Every page of a LIST (`lp` with its page size).
pub(crate) async fn list_all<K>(api: &Api<K>, mut lp: ListParams) -> kube::Result<Vec<K>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    loop {
        let page = api.list(&lp).await?;
        out.extend(page.items);
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => return Ok(out),
        }
    }
}

pub async fn audit(args: &AuditArgs) -> Result<i32> {
    let cfg = args.config.load()?;
    if cfg.policy.is_none() {
        bail!(
            "{}: no `policy` section; nothing to audit",
            args.config.describe()
        );
    }
    let client = crate::cli::connect_cluster(args.kubeconfig.as_deref())
        .await?
        .context("no cluster to audit: pass --kubeconfig (or run in a cluster)")?;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let labels: HashMap<String, BTreeMap<String, String>> =
        list_all(&namespaces, ListParams::default().limit(PAGE_SIZE))
            .await
            .context("listing namespaces (for their labels)")?
            .into_iter()
            .filter_map(|n| Some((n.metadata.name?, n.metadata.labels.unwrap_or_default())))
            .collect();
    let pods: Api<Pod> = match &args.namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let pods: Vec<AuditPod> = list_all(&pods, ListParams::default().limit(PAGE_SIZE))
        .await
        .context("listing pods")?
        .iter()
        .filter_map(AuditPod::from_pod)
        .collect();
    let audits = judge::audit(&cfg, &pods, |ns| NamespaceFacts {
        labels: labels.get(ns).cloned(),
        secrets: None,
    });
    let report = summarise(&audits);
    match args.output {
        OutputFormat::Text => print!("{}", text(&report)),
        f => print!("{}", render(f, &report)?),
    }
    Ok(if report.ok { 0 } else { 1 })
}

fn summarise(audits: &BTreeMap<String, NamespaceAudit>) -> AuditReport<'_> {
    let mut s = Summary {
        pods: 0,
        pass: 0,
        fail: 0,
        warn: 0,
        error: 0,
    };
    let mut findings = Vec::new();
    let mut unreadable = Vec::new();
    for (ns, a) in audits {
        s.pods += a.pods;
        s.pass += a.passed;
        s.fail += a.count(Verdict::Fail);
        s.warn += a.count(Verdict::Warn);
        s.error += a.unreadable.len();
        findings.extend(a.findings.iter());
        unreadable.extend(
            a.unreadable
                .iter()
                .map(|pod| UnreadableAt { namespace: ns, pod }),
        );
    }
    AuditReport {
        ok: s.fail == 0,
        summary: s,
        findings,
        unreadable,
    }
}

/// A table as `kubectl get` prints one, then the totals.
fn text(r: &AuditReport) -> String {
    let mut rows = vec![[
        "NAMESPACE".to_string(),
        "POD".into(),
        "CONTAINER".into(),
        "IMAGE".into(),
        "RULE".into(),
        "RESULT".into(),
        "MESSAGE".into(),
    ]];
    for f in &r.findings {
        rows.push([
            f.namespace.clone(),
            f.pod.clone(),
            f.container.clone(),
            f.image.clone(),
            f.rule.as_str().into(),
            f.result.as_str().into(),
            f.message.clone(),
        ]);
    }
    for u in &r.unreadable {
        rows.push([
            u.namespace.into(),
            u.pod.pod.clone(),
            String::new(),
            String::new(),
            "unreadablePod".into(),
            "error".into(),
            u.pod.message.clone(),
        ]);
    }
    let mut out = String::new();
    if rows.len() > 1 {
        let widths: Vec<usize> = (0..6)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            for (c, w) in widths.iter().enumerate() {
                out.push_str(&format!("{:<w$}   ", row[c], w = w));
            }
            out.push_str(&row[6]);
            out.push('\n');
        }
    }
    let s = &r.summary;
    out.push_str(&format!(
        "{} pods judged: {} pass, {} fail, {} warn, {} error\n",
        s.pods, s.pass, s.fail, s.warn, s.error
    ));
    out
}
