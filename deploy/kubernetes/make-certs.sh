#!/usr/bin/env bash
# Makes the TLS material of deploy/kubernetes with openssl and puts it in the cluster:
#   * a private CA (ca.pem / ca.key in the current directory — keep ca.key safe);
#   * secret leash/leash-injector-tls: the webhook's certificate for
#     leash-injector.leash.svc, and the webhook configuration's caBundle set to the CA;
#   * secret leash/leash-server-tls: the leash server's certificate for leash.leash.svc
#     (and ca.crt, which the injector hands to the agents).
# Run it after `kubectl apply -f namespaces.yaml` and before injector.yaml is applied or
# again after it (it patches the caBundle of the MutatingWebhookConfiguration if present).
# Re-running issues new certificates; the injector and the server pick up rotated files
# (the injector without a restart).
set -euo pipefail
DAYS=${DAYS:-365}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f ca.key ]; then
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout ca.key -out ca.pem -days 3650 -subj "/CN=leash deploy CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
    chmod 600 ca.key
fi

issue() { # name dns...
    local name=$1
    shift
    local san
    san=$(printf 'DNS:%s,' "$@")
    openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -keyout "$work/$name.key" -out "$work/$name.csr" -subj "/CN=$1"
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=%s\n' \
        "${san%,}" >"$work/$name.ext"
    openssl x509 -req -in "$work/$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
        -days "$DAYS" -extfile "$work/$name.ext" -out "$work/$name.crt"
}

issue injector leash-injector.leash.svc leash-injector.leash.svc.cluster.local
issue server leash.leash.svc leash.leash.svc.cluster.local leash

for s in injector server; do
    name=leash-$s-tls
    kubectl -n leash create secret generic "$name" \
        --from-file=tls.crt="$work/$s.crt" --from-file=tls.key="$work/$s.key" \
        --from-file=ca.crt=ca.pem --dry-run=client -o yaml | kubectl apply -f -
done

if kubectl get mutatingwebhookconfiguration leash-injector >/dev/null 2>&1; then
    kubectl patch mutatingwebhookconfiguration leash-injector --type=json -p \
        "[{\"op\":\"replace\",\"path\":\"/webhooks/0/clientConfig/caBundle\",\"value\":\"$(base64 -w0 <ca.pem)\"}]"
else
    echo "apply injector.yaml, then run this script again to set the webhook's caBundle"
fi
