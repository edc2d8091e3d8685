path "secret/data/*" {
  capabilities = ["read", "list"]
  allowed_parameters = { "ttl" = ["1h", "2h"] }
  control_group = { factor "ops" { identity { group_names = ["ops"] approvals = 2 } } }
}
path "sys/*" { capabilities = ["deny"] }
