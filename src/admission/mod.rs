//! The admission decision: AdmissionReview bytes in, AdmissionReview bytes out. Knows
//! nothing of HTTP or TLS; the server and the CLI both enter here.

mod json;
pub mod mutate;
pub mod pod;
pub mod request;
pub mod text;
pub mod validate;
pub mod warnings;

use crate::config::Config;
pub use mutate::{NamespaceFacts, PodPlan};
pub use request::{AdmissionRequest, PatchJson, ReviewError, Verdict, parse_review, response_json};

/// Which webhook a review was sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Mutate,
    Validate,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// A decided review: the verdict plus what callers log and count.
#[derive(Debug, Clone)]
pub struct Decided<'c> {
    pub verdict: Verdict,
    /// Present for mutations that planned changes (secrets added, pull policies forced).
    pub plan: Option<PodPlan<'c>>,
    /// Registry-rule offences found by `/validate`, whatever the mode did with them.
    pub offences: usize,
}

/// The pure decision for one parsed request.
pub fn decide<'c>(
    endpoint: Endpoint,
    req: &AdmissionRequest,
    cfg: &'c Config,
    facts: &NamespaceFacts,
) -> Decided<'c> {
    let (mut verdict, plan, offences) = match endpoint {
        Endpoint::Mutate => {
            let (v, p) = mutate::mutate(req, cfg, facts);
            (v, p, 0)
        }
        Endpoint::Validate => {
            let (v, n) = validate::validate(req, cfg, facts);
            (v, None, n)
        }
    };
    verdict.warnings = warnings::shape(std::mem::take(&mut verdict.warnings));
    Decided {
        verdict,
        plan,
        offences,
    }
}

/// Bytes in, bytes out: what `/mutate`, `/validate` and `review` all run.
pub fn review(
    endpoint: Endpoint,
    body: &[u8],
    cfg: &Config,
    facts: &NamespaceFacts,
) -> Result<Vec<u8>, ReviewError> {
    let (api_version, req) = parse_review(body)?;
    let d = decide(endpoint, &req, cfg, facts);
    Ok(response_json(api_version, &req.uid, &d.verdict))
}
