//! `mutate` and `verify`: read the inputs, evaluate every object, say what was done, what
//! was skipped and what was not understood.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Result, bail};
use serde::Serialize;
use serde_json::Value;

use super::args::{InputArgs, MutateArgs, VerifyArgs};
use super::diff;
use super::inputs;
use super::namespaces::Facts;
use super::output::{self, OutputFormat};
use crate::config::Config;
use crate::manifest::{self, Evaluator, Format, ObjectReport, Outcome, Source};

/// Reads the inputs and what is known about their namespaces.
fn load_inputs(args: &InputArgs) -> Result<(Vec<Source>, Facts)> {
    let mut sources = Vec::new();
    for input in inputs::collect(&args.files)? {
        sources.push(Source::parse(&input.name, &input.text)?);
    }
    let mut facts = Facts::default();
    if let Some(p) = &args.namespace_labels {
        read_labels(p, &mut facts)?;
    }
    for s in &sources {
        facts.add_objects(&s.docs);
    }
    Ok((sources, facts))
}

pub(crate) fn read_labels(path: &Path, facts: &mut Facts) -> Result<()> {
    let input = inputs::read_file(path)?;
    let src = Source::parse(&input.name, &input.text)?;
    facts.read_file(&input.name, &src.docs)
}

/// Notes and warnings for people, on stderr: partial documents, kinds not understood,
/// unknown namespace labels, and whether any pod template was found at all.
fn notes(reports: &[ObjectReport], cfg: &Config, facts: &Facts) {
    for r in reports {
        match &r.outcome {
            Outcome::Partial(why) => eprintln!("note: {}: {}: skipped: {why}", r.source, r.id()),
            Outcome::NotChecked(why) => {
                eprintln!("note: {}: {}: not checked: {why}", r.source, r.id())
            }
            _ => {}
        }
        for w in &r.warnings {
            eprintln!("warning: {}: {w}", r.id());
        }
    }
    let templates = reports
        .iter()
        .any(|r| matches!(r.outcome, Outcome::Checked | Outcome::Skipped(_)));
    if !templates {
        eprintln!("note: no pod template found in the input; nothing to mutate or judge");
    }
    if cfg.registries.iter().any(|r| r.namespaces.has_selector()) {
        let unknown: BTreeSet<&str> = reports
            .iter()
            .filter(|r| r.outcome == Outcome::Checked && !r.namespace_labels_known)
            .map(|r| r.namespace.as_str())
            .collect();
        if !unknown.is_empty() {
            let hint = if facts.is_empty() {
                " (pass --namespace-labels FILE, or include the Namespace objects)"
            } else {
                ""
            };
            eprintln!(
                "note: labels of namespace {} unknown{hint}; selector scopes there count as satisfied",
                unknown.into_iter().collect::<Vec<_>>().join(", ")
            );
        }
    }
}

fn summary_line(r: &ObjectReport) -> String {
    let what = match &r.outcome {
        Outcome::Checked if r.patch.is_empty() => "unchanged".to_string(),
        Outcome::Checked => {
            let mut parts = Vec::new();
            if !r.added_secrets.is_empty() {
                parts.push(format!(
                    "added imagePullSecrets {}",
                    r.added_secrets.join(", ")
                ));
            }
            if !r.forced_always.is_empty() {
                parts.push(format!("Always for {}", r.forced_always.join(", ")));
            }
            parts.join("; ")
        }
        Outcome::NoPods => "no pods".into(),
        Outcome::Partial(w) => format!("skipped: {w}"),
        Outcome::NotChecked(w) => format!("not checked: {w}"),
        Outcome::Skipped(w) => format!("left alone: {w}"),
    };
    format!(
        "{}: {} (namespace {}): {what}",
        r.source,
        r.id(),
        r.namespace
    )
}

pub fn mutate(args: &MutateArgs) -> Result<i32> {
    let cfg = args.input.config.load()?;
    let (mut sources, facts) = load_inputs(&args.input)?;
    let originals = args.diff.then(|| sources.clone());
    let eval = Evaluator {
        cfg: &cfg,
        default_ns: &args.input.namespace,
        facts: &facts,
        judge: false,
    };
    let reports = eval.run(&mut sources)?;
    notes(&reports, &cfg, &facts);
    let format_of = |s: &Source| match args.output {
        Some(OutputFormat::Json) => Format::Json,
        Some(OutputFormat::Yaml) => Format::Yaml,
        _ => s.format,
    };
    if args.output == Some(OutputFormat::Text) && !args.diff {
        for r in &reports {
            println!("{}", summary_line(r));
        }
        return Ok(0);
    }
    if let Some(originals) = originals {
        for (before, after) in originals.iter().zip(&sources) {
            let f = format_of(after);
            print!(
                "{}",
                diff::unified(
                    &after.name,
                    &manifest::write_documents(f, &before.docs)?,
                    &manifest::write_documents(f, &after.docs)?
                )
            );
        }
        return Ok(0);
    }
    let format = sources.first().map_or(Format::Yaml, format_of);
    let docs: Vec<Value> = sources.into_iter().flat_map(|s| s.docs).collect();
    print!("{}", manifest::write_documents(format, &docs)?);
    Ok(0)
}

/// One offence with the object it was found in, for `verify -o json|yaml`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Found<'a> {
    source: &'a str,
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    #[serde(flatten)]
    offence: &'a manifest::OffenceReport,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Noted<'a> {
    source: &'a str,
    namespace: &'a str,
    kind: &'a str,
    name: &'a str,
    reason: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct VerifyReport<'a> {
    ok: bool,
    rejected: usize,
    warned: usize,
    audited: usize,
    offences: Vec<Found<'a>>,
    not_checked: Vec<Noted<'a>>,
    skipped: Vec<Noted<'a>>,
    warnings: Vec<Noted<'a>>,
}

pub fn verify(args: &VerifyArgs) -> Result<i32> {
    let cfg = args.input.config.load()?;
    if cfg.policy.is_none() {
        bail!(
            "{}: no `policy` section; nothing to verify",
            args.input.config.describe()
        );
    }
    let (mut sources, facts) = load_inputs(&args.input)?;
    let eval = Evaluator {
        cfg: &cfg,
        default_ns: &args.input.namespace,
        facts: &facts,
        judge: true,
    };
    let reports = eval.run(&mut sources)?;
    notes(&reports, &cfg, &facts);
    let mut report = VerifyReport {
        ok: true,
        rejected: 0,
        warned: 0,
        audited: 0,
        offences: Vec::new(),
        not_checked: Vec::new(),
        skipped: Vec::new(),
        warnings: Vec::new(),
    };
    for r in &reports {
        let note = |reason| Noted {
            source: &r.source,
            namespace: &r.namespace,
            kind: &r.kind,
            name: &r.name,
            reason,
        };
        match &r.outcome {
            Outcome::NotChecked(w) => report.not_checked.push(note(w)),
            Outcome::Partial(w) | Outcome::Skipped(w) => report.skipped.push(note(w)),
            _ => {}
        }
        for w in &r.warnings {
            report.warnings.push(note(w));
        }
        for o in &r.offences {
            match o.mode {
                "enforce" => report.rejected += 1,
                "warn" => report.warned += 1,
                _ => report.audited += 1,
            }
            report.offences.push(Found {
                source: &r.source,
                namespace: &r.namespace,
                kind: &r.kind,
                name: &r.name,
                offence: o,
            });
        }
    }
    let failed = report.rejected > 0
        || (args.fail_on_warn && (report.warned > 0 || !report.warnings.is_empty()));
    report.ok = !failed;
    match args.output {
        OutputFormat::Text => {
            for f in &report.offences {
                println!(
                    "{}/{}: {}: {}",
                    f.kind, f.name, f.offence.mode, f.offence.message
                );
            }
            for n in &report.not_checked {
                println!("{}/{}: not checked: {}", n.kind, n.name, n.reason);
            }
            if report.offences.is_empty() {
                match report.not_checked.len() {
                    0 => println!("ok: no policy breaches"),
                    n => println!(
                        "ok: no policy breaches in the objects checked; {n} not checked (above)"
                    ),
                }
            }
        }
        f => print!("{}", output::render(f, &report)?),
    }
    Ok(if failed { 1 } else { 0 })
}
