template {
  contents = <<EOT
{{ with secret "db/creds/ro" }}{{ .Data.username }}{{ end }}
EOT
  destination = "/run/a"
}
template { destination = "/run/b" }
template { destination = "/run/c" }
