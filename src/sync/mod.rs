//! Credential delivery: keeps each registry entry's source pull secret copied into every
//! namespace in its scope, refreshed on rotation and removed when no longer wanted.
//!
//! `desired` decides (pure), `source` validates, `cache` holds what the watches saw and
//! answers the webhook, `controller` executes the decisions on the Lease holder.

pub mod desired;
pub mod source;
