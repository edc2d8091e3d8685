"""auth/kubernetes and auth/jwt through hvac, as an operator and an agent use them.

Nothing leaves this machine: keys and certificates are made here with the `openssl`
command (nothing private is committed), JWTs are signed with them, and the Kubernetes
TokenReview API and a JWKS endpoint are played by small HTTPS servers inside this test
process, with certificates from a test CA that leash is told to pin.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import secrets
import ssl
import subprocess
import threading
import time
from pathlib import Path

import hvac
import pytest

REVIEWER_JWT = "reviewer-" + secrets.token_hex(16)
UID = "6f1c3a52-8f0e-4bde-9c7e-1f2b3c4d5e6f"
K8S_ISS = "https://kubernetes.default.svc.cluster.local"
CI_ISS = "https://ci.example.test"


# --- keys, certificates, tokens ------------------------------------------------------


def openssl(cwd: Path, *args: str, stdin: bytes | None = None) -> bytes:
    p = subprocess.run(["openssl", *args], cwd=cwd, input=stdin, capture_output=True)
    assert p.returncode == 0, f"openssl {args}: {p.stderr.decode(errors='replace')}"
    return p.stdout


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class Pki:
    """A test CA, a server certificate for 127.0.0.1 from it, and an RSA signing key
    (with a self-signed certificate, the form hvac accepts for pem_keys)."""

    def __init__(self, d: Path):
        self.dir = d
        openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key")
        (d / "ca.cnf").write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\nx509_extensions = v3_ca\n"
            "[dn]\nCN = leash blackbox CA\n"
            "[v3_ca]\nbasicConstraints = critical, CA:TRUE\n"
            "keyUsage = critical, keyCertSign, cRLSign\nsubjectKeyIdentifier = hash\n"
        )
        openssl(d, "req", "-x509", "-new", "-key", "ca.key", "-config", "ca.cnf", "-days", "2", "-out", "ca.pem")
        openssl(d, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "srv.key")
        (d / "srv.cnf").write_text("[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = 127.0.0.1\n")
        (d / "srv.ext").write_text(
            "basicConstraints = CA:FALSE\nkeyUsage = critical, digitalSignature\n"
            "extendedKeyUsage = serverAuth\nsubjectAltName = IP:127.0.0.1, DNS:localhost\n"
            "authorityKeyIdentifier = keyid\n"
        )
        openssl(d, "req", "-new", "-key", "srv.key", "-config", "srv.cnf", "-out", "srv.csr")
        openssl(
            d, "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "srv.ext", "-out", "srv.pem",
        )
        openssl(d, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "sa.key")
        openssl(d, "pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub")
        openssl(d, "req", "-x509", "-new", "-key", "sa.key", "-subj", "/CN=sa-signer", "-days", "2", "-out", "sa.crt")
        self.ca_pem = (d / "ca.pem").read_text()
        self.public_pem = (d / "sa.pub").read_text()
        self.signer_cert = (d / "sa.crt").read_text()
        modulus = openssl(d, "rsa", "-pubin", "-in", "sa.pub", "-modulus", "-noout").decode()
        n = bytes.fromhex(modulus.strip().split("=", 1)[1])
        self.jwk = {"kty": "RSA", "kid": "k1", "use": "sig", "alg": "RS256", "n": b64url(n), "e": "AQAB"}

    def sign(self, claims: dict, kid: str | None = None) -> str:
        header = {"alg": "RS256", "typ": "JWT"}
        if kid:
            header["kid"] = kid
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        sig = openssl(self.dir, "dgst", "-sha256", "-sign", "sa.key", "-binary", stdin=signing_input.encode())
        return f"{signing_input}.{b64url(sig)}"

    def server_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.dir / "srv.pem", self.dir / "srv.key")
        return ctx


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def projected(ns: str, name: str, **extra) -> dict:
    t = int(time.time())
    claims = {
        "aud": ["leash"], "iss": K8S_ISS, "sub": f"system:serviceaccount:{ns}:{name}",
        "iat": t, "nbf": t, "exp": t + 600,
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": f"{name}-5f7c9-x2x", "uid": "pod-uid"},
            "serviceaccount": {"name": name, "uid": UID},
        },
    }
    claims.update(extra)
    return claims


def ci_claims(**extra) -> dict:
    t = int(time.time())
    claims = {"iss": CI_ISS, "aud": "leash", "sub": "repo:acme/agents:ref:refs/heads/main",
              "repository": "acme/agents", "iat": t, "nbf": t, "exp": t + 300}
    claims.update(extra)
    return claims


def payload(jwt: str) -> dict:
    part = jwt.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


# --- fake servers --------------------------------------------------------------------


class FakeHttps:
    """An HTTPS server on 127.0.0.1 answering with handler(method, path, headers, body)
    -> (status, json); keeps what it received."""

    def __init__(self, ctx: ssl.SSLContext, handler):
        seen = self.seen = []

        class H(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                status, obj = handler(self.command, self.path, self.headers, body)
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *a):  # keep pytest output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def token_review(method, path, headers, body):
    """The Kubernetes TokenReview API as the API server answers it."""
    if method != "POST" or path != "/apis/authentication.k8s.io/v1/tokenreviews":
        return 404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}
    if headers.get("Authorization") != f"Bearer {REVIEWER_JWT}":
        return 401, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                     "message": "Unauthorized", "reason": "Unauthorized", "code": 401}
    review = json.loads(body)
    token = review["spec"]["token"]
    claims = payload(token)
    if claims.get("revoked"):
        return 201, {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                     "spec": {"token": token},
                     "status": {"user": {}, "error": "[invalid bearer token, service account token has been invalidated]"}}
    k = claims["kubernetes.io"]
    return 201, {
        "kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": None},
        "spec": review["spec"],
        "status": {
            "authenticated": True,
            "user": {"username": f"system:serviceaccount:{k['namespace']}:{k['serviceaccount']['name']}",
                     "uid": k["serviceaccount"]["uid"],
                     "groups": ["system:serviceaccounts", "system:authenticated"]},
            "audiences": review["spec"].get("audiences", []),
        },
    }


@pytest.fixture
def api_server(pki):
    s = FakeHttps(pki.server_context(), token_review)
    yield s
    s.close()


@pytest.fixture
def jwks_server(pki):
    s = FakeHttps(pki.server_context(), lambda m, p, h, b: (200, {"keys": [pki.jwk]}) if p == "/keys" else (404, {}))
    yield s
    s.close()


def refused(exc_info, want: str, jwt: str):
    """The refusal names the failed check and never contains the token."""
    text = str(exc_info.value) + json.dumps(exc_info.value.json or {})
    assert want in text, text
    for part in jwt.split(".")[1:]:
        if len(part) >= 8:
            assert part not in text, "the error echoes the token"


# --- Kubernetes ----------------------------------------------------------------------


def setup_kubernetes(root: hvac.Client, mount: str, api_url: str, pki: Pki):
    root.sys.enable_auth_method("kubernetes", path=mount)
    root.auth.kubernetes.configure(
        kubernetes_host=api_url,
        kubernetes_ca_cert=pki.ca_pem,
        token_reviewer_jwt=REVIEWER_JWT,
        disable_local_ca_jwt=True,
        mount_point=mount,
    )
    root.auth.kubernetes.create_role(
        name="agents",
        bound_service_account_names=["summariser", "planner"],
        bound_service_account_namespaces=["agents-*"],
        policies=["agent-read", "agent-db"],
        ttl="15m",
        max_ttl="1h",
        audience="leash",
        mount_point=mount,
    )


def test_kubernetes_login_through_tokenreview(dev_server, root, name, pki, api_server):
    setup_kubernetes(root, name, api_server.url, pki)

    config = root.auth.kubernetes.read_config(mount_point=name)
    assert config["kubernetes_host"] == api_server.url
    assert config["token_reviewer_jwt_set"] is True
    assert REVIEWER_JWT not in json.dumps(config), "the reviewer JWT is never read back"
    role = root.auth.kubernetes.read_role("agents", mount_point=name)
    assert role["bound_service_account_namespaces"] == ["agents-*"]
    assert role["audience"] == "leash"
    assert root.auth.kubernetes.list_roles(mount_point=name)["keys"] == ["agents"]

    agent = dev_server.client(token="")
    jwt = pki.sign(projected("agents-prod", "summariser"))
    resp = agent.auth.kubernetes.login("agents", jwt, mount_point=name)
    auth = resp["auth"]
    assert sorted(auth["policies"]) == ["agent-db", "agent-read", "default"]
    assert auth["lease_duration"] == 900
    assert auth["metadata"] == {
        "role": "agents", "service_account_name": "summariser",
        "service_account_namespace": "agents-prod", "service_account_uid": UID,
        "service_account_secret_name": "",
    }
    assert auth["entity_id"]
    # hvac now holds the new token, and it works.
    me = agent.auth.token.lookup_self()["data"]
    assert me["display_name"] == "kubernetes-agents-prod-summariser"
    assert me["explicit_max_ttl"] == 3600

    method, path, headers, body = api_server.seen[-1]
    assert (method, path) == ("POST", "/apis/authentication.k8s.io/v1/tokenreviews")
    assert headers["authorization"] == f"Bearer {REVIEWER_JWT}"
    assert json.loads(body) == {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
        "spec": {"token": jwt, "audiences": ["leash"]},
    }
    again = dev_server.client(token="").auth.kubernetes.login("agents", jwt, mount_point=name)
    assert again["auth"]["entity_id"] == auth["entity_id"], "stable identity"


def test_kubernetes_hostile_logins(servers, pki, api_server):
    server = servers.dev("k8s-hostile")  # its own failed-login budget
    root = server.client()
    setup_kubernetes(root, "kubernetes", api_server.url, pki)
    agent = server.client(token="")

    jwt = pki.sign(projected("kube-system", "summariser"))
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        agent.auth.kubernetes.login("agents", jwt)
    refused(e, "namespace not authorized", jwt)

    jwt = pki.sign(projected("agents-prod", "intruder"))
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        agent.auth.kubernetes.login("agents", jwt)
    refused(e, "service account name not authorized", jwt)

    jwt = pki.sign(projected("agents-prod", "summariser", revoked=True))
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        agent.auth.kubernetes.login("agents", jwt)
    refused(e, "TokenReview: not authenticated", jwt)

    with pytest.raises(hvac.exceptions.Forbidden) as e:
        agent.auth.kubernetes.login("agents", "not-a-jwt")
    assert "malformed JWT" in str(e.value)

    jwt = pki.sign(projected("agents-prod", "summariser"))
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        agent.auth.kubernetes.login("no-such-role", jwt)
    refused(e, "invalid role name", jwt)
    assert agent.token in (None, ""), "no token after refusals"


def test_kubernetes_offline_with_pem_keys(servers, pki):
    server = servers.dev("k8s-offline")
    root = server.client()
    root.sys.enable_auth_method("kubernetes")
    root.auth.kubernetes.configure(
        kubernetes_host="https://127.0.0.1:1",  # not contacted: pem_keys validate offline
        pem_keys=[pki.signer_cert],
        issuer=K8S_ISS,
        disable_local_ca_jwt=True,
    )
    root.auth.kubernetes.create_role(
        name="agents", bound_service_account_names="planner",
        bound_service_account_namespaces="agents-*", policies="agent-read", audience="leash",
    )
    agent = server.client(token="")
    resp = agent.auth.kubernetes.login("agents", pki.sign(projected("agents-dev", "planner")))
    assert resp["auth"]["metadata"]["service_account_namespace"] == "agents-dev"

    expired = pki.sign(projected("agents-dev", "planner", exp=int(time.time()) - 3600))
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        server.client(token="").auth.kubernetes.login("agents", expired)
    refused(e, "token has expired", expired)
    other_iss = pki.sign(projected("agents-dev", "planner", iss="https://other.example"))
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        server.client(token="").auth.kubernetes.login("agents", other_iss)
    refused(e, "issuer mismatch", other_iss)


# --- JWT / OIDC ----------------------------------------------------------------------


def setup_jwt(root: hvac.Client, mount: str, jwks_url: str, pki: Pki):
    root.sys.enable_auth_method("jwt", path=mount)
    root.auth.jwt.configure(jwks_url=jwks_url, jwks_ca_pem=pki.ca_pem, bound_issuer=CI_ISS, path=mount)
    root.auth.jwt.create_role(
        name="ci",
        role_type="jwt",
        user_claim="sub",
        allowed_redirect_uris=[],
        bound_audiences=["leash"],
        bound_claims={"repository": "acme/*"},
        bound_claims_type="glob",
        claim_mappings={"repository": "repo"},
        token_policies=["ci-deploy"],
        token_ttl="10m",
        token_max_ttl="30m",
        path=mount,
    )


def test_jwt_login_with_a_pinned_jwks(dev_server, root, name, pki, jwks_server):
    setup_jwt(root, name, f"{jwks_server.url}/keys", pki)
    config = root.auth.jwt.read_config(path=name)["data"]
    assert config["jwks_url"] == f"{jwks_server.url}/keys"
    assert config["bound_issuer"] == CI_ISS
    assert root.auth.jwt.list_roles(path=name)["data"]["keys"] == ["ci"]
    assert root.auth.jwt.read_role("ci", path=name)["data"]["bound_claims_type"] == "glob"

    agent = dev_server.client(token="")
    resp = agent.auth.jwt.jwt_login("ci", pki.sign(ci_claims(), kid="k1"), path=name)
    auth = resp["auth"]
    assert sorted(auth["policies"]) == ["ci-deploy", "default"]
    assert auth["lease_duration"] == 600
    assert auth["metadata"] == {"role": "ci", "repo": "acme/agents"}
    assert agent.auth.token.lookup_self()["data"]["explicit_max_ttl"] == 1800


def test_jwt_hostile_logins(servers, pki, jwks_server):
    server = servers.dev("jwt-hostile")
    setup_jwt(server.client(), "jwt", f"{jwks_server.url}/keys", pki)

    def attempt(jwt: str, want: str):
        with pytest.raises(hvac.exceptions.Forbidden) as e:
            server.client(token="").auth.jwt.jwt_login("ci", jwt)
        refused(e, want, jwt)

    t = int(time.time())
    header = lambda h: b64url(json.dumps(h).encode())  # noqa: E731
    body = b64url(json.dumps(ci_claims()).encode())
    attempt(f"{header({'alg': 'none'})}.{body}.", 'JWT algorithm "none" is not allowed')
    # Algorithm confusion: HS256 keyed with the (public) RSA key.
    signing_input = f"{header({'alg': 'HS256', 'kid': 'k1'})}.{body}"
    mac = hmac.new(pki.public_pem.encode(), signing_input.encode(), hashlib.sha256).digest()
    attempt(f"{signing_input}.{b64url(mac)}", 'JWT algorithm "HS256" is not allowed')
    attempt(pki.sign(ci_claims(exp=t - 3600, iat=t - 7200, nbf=t - 7200), kid="k1"), "token has expired")
    attempt(pki.sign(ci_claims(nbf=t + 3600, exp=t + 7200), kid="k1"), "token is not yet valid")
    attempt(pki.sign(ci_claims(iss="https://evil.example"), kid="k1"), "issuer mismatch")
    attempt(pki.sign(ci_claims(aud="someone-else"), kid="k1"), "invalid audience")
    attempt(pki.sign(ci_claims(repository="evil/agents"), kid="k1"), 'claim "repository" does not match')
    with pytest.raises(hvac.exceptions.Forbidden) as e:
        server.client(token="").auth.jwt.jwt_login("ci", "x.y.z")
    assert "malformed JWT" in str(e.value)
