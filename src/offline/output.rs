//! `-o text|json|yaml`: one switch for every offline command. Text is for people; JSON and
//! YAML carry the same facts for machines, keys in a stable order.

use anyhow::{Context, Result};
use serde::Serialize;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputFormat {
    Text,
    Json,
    Yaml,
}

/// A value as JSON (pretty, newline-terminated) or YAML.
pub(crate) fn render<T: Serialize>(format: OutputFormat, value: &T) -> Result<String> {
    Ok(match format {
        OutputFormat::Json | OutputFormat::Text => {
            serde_json::to_string_pretty(value).context("writing JSON")? + "\n"
        }
        OutputFormat::Yaml => {
            let v = serde_json::to_value(value).context("writing YAML")?;
            crate::manifest::write_documents(crate::manifest::Format::Yaml, &[v])?
        }
    })
}
