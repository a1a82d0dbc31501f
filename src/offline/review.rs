//! `review`: one AdmissionReview answered exactly as the server answers it.

use std::io::Read;

use anyhow::{Context, Result};
use base64::Engine;
use serde_json::Value;

use super::args::{EndpointArg, ReviewArgs};
use super::manifests::read_labels;
use super::namespaces::Facts;
use super::output::{self, OutputFormat};
use crate::admission::{self, Endpoint};
use crate::manifest;

fn read_body(file: &str) -> Result<Vec<u8>> {
    if file == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading stdin")?;
        Ok(buf)
    } else {
        std::fs::read(file).with_context(|| format!("reading {file}"))
    }
}

/// When the body is a manifest rather than an AdmissionReview, the command to use.
fn hint(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let (_, docs) = manifest::read_documents(text).ok()?;
    let kind = docs.first()?.get("kind")?.as_str()?;
    (kind != "AdmissionReview").then(|| {
        format!(
            "hint: the input is a {kind}, not an AdmissionReview; to preview manifests use `mutate -f FILE` (or `verify -f FILE`)"
        )
    })
}

/// The response for people: verdict, patch operations, warnings, audit annotations.
fn text(resp: &Value) -> String {
    let r = &resp["response"];
    let mut out = String::new();
    if r["allowed"].as_bool() == Some(true) {
        out.push_str("allowed\n");
    } else {
        let msg = r["status"]["message"].as_str().unwrap_or("");
        out.push_str(&format!("denied: {msg}\n"));
    }
    if let Some(p) = r["patch"].as_str()
        && let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(p)
        && let Ok(Value::Array(ops)) = serde_json::from_slice::<Value>(&bytes)
    {
        for op in ops {
            out.push_str(&format!("patch: {op}\n"));
        }
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", w.as_str().unwrap_or("")));
    }
    if let Some(a) = r["auditAnnotations"].as_object() {
        for (k, v) in a {
            out.push_str(&format!("audit: {k}={}\n", v.as_str().unwrap_or("")));
        }
    }
    out
}

pub fn review(args: &ReviewArgs) -> Result<i32> {
    let cfg = args.config.load()?;
    let body = read_body(&args.file)?;
    let endpoint = match args.endpoint {
        EndpointArg::Mutate => Endpoint::Mutate,
        EndpointArg::Validate => Endpoint::Validate,
    };
    let mut facts = Facts::default();
    if let Some(p) = &args.namespace_labels {
        read_labels(p, &mut facts)?;
    }
    // The namespace's facts need the namespace; an unparseable body is answered (with its
    // error) by `review` below, exactly as the server answers it.
    let ns_facts = match admission::parse_review(&body) {
        Ok((_, req)) => facts.for_namespace(&req.namespace()),
        Err(_) => Default::default(),
    };
    match admission::review(endpoint, &body, &cfg, &ns_facts) {
        Ok(out) => {
            match args.output {
                OutputFormat::Json => println!("{}", String::from_utf8_lossy(&out)),
                f => {
                    let v: Value = serde_json::from_slice(&out).context("reading the response")?;
                    match f {
                        OutputFormat::Text => print!("{}", text(&v)),
                        _ => print!("{}", output::render(f, &v)?),
                    }
                }
            }
            Ok(0)
        }
        Err(e) => {
            eprintln!("error: {e}");
            if let Some(h) = hint(&body) {
                eprintln!("{h}");
            }
            Ok(2)
        }
    }
}
