//! What the exported CEL can afford. The API server stops an expression at a runtime cost
//! of 1,000,000 and a policy's evaluation at 10,000,000 (k8s.io/apiserver
//! `pkg/apis/cel/config.go`: `PerCallLimit`, `RuntimeCELCostBudget`); past either, the
//! policy fails (and with `failurePolicy: Ignore` does nothing). The per-site cost grows
//! with the number of patterns, so the export refuses configs beyond what was measured
//! to fit for a Pod of `MAX_SITES` images (`benches/BENCHMARKS.md`).

use crate::config::Config;

/// Image sites (containers of every kind plus image volumes) the limits are sized for.
pub const MAX_SITES: usize = 50;
/// Registry, allow and deny patterns together.
pub const MAX_PATTERNS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    #[error(
        "the config has {patterns} registry, allow and deny patterns; exported policies stay \
         within the API server's CEL cost limits for Pods of {MAX_SITES} images only up to \
         {MAX_PATTERNS} (use the webhook for this config, or merge patterns with `*` globs)"
    )]
    TooManyPatterns { patterns: usize },
}

/// All patterns the CEL evaluates per site.
pub(crate) fn pattern_count(cfg: &Config) -> usize {
    let entries: usize = cfg.registries.iter().map(|r| r.patterns.len()).sum();
    let rules: usize = cfg.policy.as_ref().map_or(0, |p| {
        std::iter::once(&p.global)
            .chain(p.overrides.iter().map(|(_, r)| r))
            .map(|r| r.deny.patterns().len() + r.allow.as_ref().map_or(0, |a| a.patterns().len()))
            .max()
            .unwrap_or(0)
    });
    entries + rules
}

pub(crate) fn check(cfg: &Config) -> Result<(), LimitError> {
    let patterns = pattern_count(cfg);
    if patterns > MAX_PATTERNS {
        return Err(LimitError::TooManyPatterns { patterns });
    }
    Ok(())
}
