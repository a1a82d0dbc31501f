//! The offline commands (`check`, `review`, `mutate`, `verify`, `test`) as CI tools. Each
//! file has one job; every judgement goes through `admission` (via `manifest`), the same
//! code the server runs.

pub mod args;
pub(crate) mod certs_input;
mod check;
pub(crate) mod defaulting;
mod diff;
pub(crate) mod inputs;
mod junit;
mod lint;
mod manifests;
pub(crate) mod namespaces;
pub mod output;
mod review;
mod suite;
mod test;
mod values;

pub use args::{CheckArgs, ConfigSource, MutateArgs, ReviewArgs, TestArgs, VerifyArgs};
pub use check::check;
pub use manifests::{mutate, verify};
pub use review::review;
pub use test::test;

use std::path::Path;

use anyhow::Result;

use crate::config::Config;

impl ConfigSource {
    /// The config from `--config FILE` or from `--values FILE…`.
    pub(crate) fn load(&self) -> Result<Config> {
        match &self.config {
            Some(p) => load_config(p),
            None => values::load(&self.values),
        }
    }

    /// The config's origin, for messages.
    pub(crate) fn describe(&self) -> String {
        match &self.config {
            Some(p) => p.display().to_string(),
            None => {
                let v: Vec<String> = self
                    .values
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect();
                v.join(", ")
            }
        }
    }
}

fn load_config(path: &Path) -> Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}
