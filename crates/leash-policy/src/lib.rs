//! Vault-compatible ACL policies for leash: policy text (HCL or JSON) → [`PolicyDoc`] →
//! compiled [`Acl`] → an [`AclDecision`] per request.
//!
//! The semantics are Vault's (checked against OpenBao's `policy.go`/`acl.go`): exact,
//! glob-prefix (`*`) and segment-wildcard (`+`) paths, most-specific-rule-wins
//! precedence, merging of identical paths across policies, `deny` beats everything in
//! its rule, `sudo` for root-protected paths, parameter constraints and control groups.
//! Where this crate is deliberately stricter than Vault the module docs say so.
//!
//! The text is read by `leash-hcl` (the HCL1/JSON parser shared with the configuration
//! readers); this crate gives its tree a meaning.
//!
//! Pure and synchronous: no IO, no clock, no global state. Not here: storing policies,
//! deciding which paths need `sudo`, running approvals (the core does those).
#![forbid(unsafe_code)]

mod acl;
mod decode;
mod default_policy;
mod doc;
mod error;
mod index;
mod params;

pub use acl::{Acl, AclDecision, AclRequest, Denial};
pub use decode::parse_policy;
pub use default_policy::DEFAULT_POLICY;
pub use doc::{ControlGroup, ControlGroupFactor, PathRule, PolicyDoc};
pub use error::PolicyError;

#[cfg(test)]
mod tests;
