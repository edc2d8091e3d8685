# Policy of the injected agents (kubernetes auth role ai-agent-role): the seed's
# database credential, and what `leash agent` needs to keep it alive and end it.
path "database/creds/agent-readonly" { capabilities = ["read"] }
# Renew the credential, learn its max TTL, revoke a replaced one after rotation.
path "sys/leases/renew"  { capabilities = ["update"] }
path "sys/leases/lookup" { capabilities = ["update"] }
path "sys/leases/revoke" { capabilities = ["update"] }
path "auth/token/renew-self" { capabilities = ["update"] }
