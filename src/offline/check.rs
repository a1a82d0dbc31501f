//! `check`: does the config load, and does it mean what its author likely meant.

use anyhow::Result;
use serde::Serialize;

use super::args::CheckArgs;
use super::output::{self, OutputFormat};
use super::{lint, values};
use crate::config::Config;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ErrorReport {
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    column: Option<u64>,
    reason: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CheckReport {
    ok: bool,
    warnings: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorReport>,
}

/// Exit 0 when the config loads (warnings do not fail it), 1 when it does not.
pub fn check(args: &CheckArgs) -> Result<i32> {
    let loaded = match &args.config.config {
        Some(p) => Config::load(p).map_err(|e| ErrorReport {
            message: e.to_string(),
            file: Some(e.file.clone()),
            line: Some(e.line),
            column: Some(e.col),
            reason: e.reason.clone(),
        }),
        None => values::load(&args.config.values).map_err(|e| ErrorReport {
            message: format!("{e:#}"),
            file: None,
            line: None,
            column: None,
            reason: format!("{e:#}"),
        }),
    };
    let report = match loaded {
        Ok(cfg) => CheckReport {
            ok: true,
            warnings: lint::warnings(&cfg),
            error: None,
        },
        Err(e) => CheckReport {
            ok: false,
            warnings: Vec::new(),
            error: Some(e),
        },
    };
    match args.output {
        OutputFormat::Text => {
            for w in &report.warnings {
                eprintln!("warning: {w}");
            }
            match &report.error {
                None => println!("ok"),
                Some(e) => eprintln!("{}", e.message),
            }
        }
        f => print!("{}", output::render(f, &report)?),
    }
    Ok(if report.ok { 0 } else { 1 })
}
