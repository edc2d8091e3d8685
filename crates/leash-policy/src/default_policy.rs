//! The built-in `default` policy every token gets unless created without it.
//!
//! Invariant: it grants only what a token needs to manage itself and its own leases —
//! look itself up, renew or revoke itself, ask its own capabilities, renew and look up
//! leases, use its cubbyhole, response wrapping, hashing, and ask for a just-in-time
//! approval. It follows Vault's `default` policy, minus the paths of features leash does
//! not have (identity entities, OIDC provider, UI resultant ACL), plus the legacy
//! `sys/renew` alias of `sys/leases/renew`, which leash serves.

/// HCL text of the `default` policy.
pub const DEFAULT_POLICY: &str = r#"# The default policy: what every token may do to and for itself.

# Read its own token properties.
path "auth/token/lookup-self" {
    capabilities = ["read"]
}

# Extend its own lifetime.
path "auth/token/renew-self" {
    capabilities = ["update"]
}

# End itself early.
path "auth/token/revoke-self" {
    capabilities = ["update"]
}

# Ask which capabilities it has on given paths.
path "sys/capabilities-self" {
    capabilities = ["update"]
}

# Renew a lease by the lease_id in the body (current path, then the legacy alias).
path "sys/leases/renew" {
    capabilities = ["update"]
}
path "sys/renew" {
    capabilities = ["update"]
}

# Look up a lease; the caller must already know its id, and nothing secret is returned.
path "sys/leases/lookup" {
    capabilities = ["update"]
}

# Its own private cubbyhole.
path "cubbyhole/*" {
    capabilities = ["create", "read", "update", "delete", "list"]
}

# Response wrapping: wrap a value, look up a wrapping token, unwrap it.
path "sys/wrapping/wrap" {
    capabilities = ["update"]
}
path "sys/wrapping/lookup" {
    capabilities = ["update"]
}
path "sys/wrapping/unwrap" {
    capabilities = ["update"]
}

# Hash data with the server's general-purpose hashing tool.
path "sys/tools/hash" {
    capabilities = ["update"]
}
path "sys/tools/hash/*" {
    capabilities = ["update"]
}

# Ask for just-in-time approval of an operation a control group guards.
path "sys/control-group/request" {
    capabilities = ["update", "list"]
}

# Follow, complete or decide just-in-time requests (leash checks that the caller is the
# requester or an approver the request names).
path "sys/control-group/request/*" {
    capabilities = ["read", "update", "list"]
}
"#;
