storage "sqlite" { path = "./data" }
listener "tcp" {
  address = "127.0.0.1:8200"
  tls_disable = true
}
default_lease_ttl = "1h"
