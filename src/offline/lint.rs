//! `check`'s warnings: configs that load but will not do what their author meant.

use crate::config::{Config, PullScope};

/// Warnings about `cfg`, one sentence each.
pub(crate) fn warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let Some(policy) = &cfg.policy else {
        return out;
    };
    let scopes = std::iter::once(("policy.requireAlwaysPull", &policy.global)).chain(
        policy
            .overrides
            .iter()
            .map(|(globs, r)| (globs.first().map_or("", String::as_str), r)),
    );
    for (at, rules) in scopes {
        let at = if at.starts_with("policy.") {
            at.to_string()
        } else {
            format!("policy.overrides[namespaces: {at}].requireAlwaysPull")
        };
        match rules.require_always_pull {
            // Mutation forces `Always` for private images only where an entry says
            // `alwaysPull` or `alwaysPullImages` is `private`/`all`; every other private
            // image without an explicit `Always` is then rejected by `/validate`.
            PullScope::Private if cfg.always_pull == PullScope::None => {
                let lacking: Vec<&str> = cfg
                    .registries
                    .iter()
                    .filter(|r| !r.always_pull)
                    .map(|r| r.name.as_str())
                    .collect();
                if !lacking.is_empty() {
                    out.push(format!(
                        "{at} is private, but mutation never forces Always for registries {} \
                         (alwaysPullImages: none, no alwaysPull): every Pod pulling their images \
                         without imagePullPolicy: Always will be rejected; set alwaysPullImages: private",
                        lacking.join(", ")
                    ));
                }
            }
            PullScope::All if cfg.always_pull != PullScope::All => out.push(format!(
                "{at} is all, but alwaysPullImages is not all: every Pod with an image not pulled \
                 Always will be rejected; set alwaysPullImages: all"
            )),
            _ => {}
        }
    }
    out
}
