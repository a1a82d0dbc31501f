//! The background audit: existing Pods judged against the registry rules (`policy:`) by
//! `/validate`'s own code, with the results as wg-policy `PolicyReport`s.
//!
//! One job per file:
//! - `judge` (pure): pods + config + namespace facts → findings per namespace;
//! - `report` (pure): findings → the `PolicyReport` / `ClusterPolicyReport` objects,
//!   bounded in size, with stable timestamps;
//! - `once`: the `audit` command (one run from a laptop, writes nothing).
//!
//! The controller's leader runs the same two pure steps on a Pod watch and writes the
//! reports (`sync::audit`).

pub(crate) mod judge;
pub(crate) mod once;
pub(crate) mod report;

pub use once::{AuditArgs, audit};
