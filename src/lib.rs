//! pullsecret-injector: a Kubernetes admission webhook that adds the `imagePullSecrets`
//! each Pod's images need, forces `imagePullPolicy: Always` where asked, and enforces
//! which registries may be used.
//!
//! Dependencies point one way: `cli`/`server` → `admission` → `config`/`matcher` → `image`.
//! Nothing below `admission` does I/O.

pub mod admission;
pub mod audit;
pub mod certs;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod duration;
pub mod image;
mod logging;
mod managed_certs;
pub mod manifest;
pub mod matcher;
pub mod metrics;
mod offline;
mod ownership;
mod policy_export;
pub mod reload;
pub mod server;
pub mod sync;
pub mod webhook;
