//! `leash agent`: runs the sidecar (crate `leash-agent`) from a Vault-Agent-shaped
//! configuration file. The arguments and the entry point live in `leash_agent::cli`,
//! shared with the small `leash-agent` binary so the two cannot drift apart.

pub(crate) use leash_agent::cli::{AgentArgs, init_tracing, run};
