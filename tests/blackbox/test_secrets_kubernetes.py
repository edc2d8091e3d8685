"""The `kubernetes` secrets engine through hvac, as an operator and an agent use it.

hvac 2.4 has no `secrets.kubernetes` module, so the calls go through its generic
adapter (`client.adapter.post/get`) on Vault's paths — what hvac users do for engines
it does not wrap. The Kubernetes API is played by a small HTTPS server in this process
(certificate from a test CA leash is told to pin) that keeps the objects it was asked to
create, so the test sees the TokenRequest, the objects, and their deletion.
"""

from __future__ import annotations

import http.server
import json
import secrets
import threading

import hvac
import pytest

from test_auth_jwt_kubernetes import Pki, pki  # noqa: F401  (the module-scoped fixture)

ENGINE_JWT = "engine-" + secrets.token_hex(16)


class FakeApi:
    """The Kubernetes API calls the engine makes: create, delete, TokenRequest."""

    def __init__(self, pki: Pki):
        self.seen: list[tuple[str, str, dict]] = []
        self.objects = {"/api/v1/namespaces/agents/serviceaccounts/summariser"}
        api = self

        class H(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else {}
                api.seen.append((self.command, self.path, body))
                status, obj = api.handle(self.command, self.path, self.headers, body)
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = _answer

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.socket = pki.server_context().wrap_socket(self.httpd.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def handle(self, method, path, headers, body):
        if headers.get("Authorization") != f"Bearer {ENGINE_JWT}":
            return 401, {"kind": "Status", "status": "Failure", "message": "Unauthorized", "code": 401}
        if method == "POST" and path.endswith("/token"):
            if path.removesuffix("/token") not in self.objects:
                return 404, {"kind": "Status", "status": "Failure", "message": "not found", "code": 404}
            return 201, {**body, "status": {"token": "sa-token-" + secrets.token_hex(8),
                                            "expirationTimestamp": "2030-01-01T00:00:00Z"}}
        if method == "POST":
            self.objects.add(f"{path}/{body['metadata']['name']}")
            return 201, body
        if method == "DELETE":
            if path in self.objects:
                self.objects.remove(path)
                return 200, {"kind": "Status", "status": "Success"}
            return 404, {"kind": "Status", "status": "Failure", "message": "not found", "code": 404}
        return 405, {}

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def k8s(pki):
    s = FakeApi(pki)
    yield s
    s.close()


def test_agent_gets_service_account_tokens_and_revocation_cleans_up(root, name, pki, k8s, make_token):
    root.sys.enable_secrets_engine("kubernetes", path=name)
    root.adapter.post(f"/v1/{name}/config", json={
        "kubernetes_host": k8s.url, "kubernetes_ca_cert": pki.ca_pem,
        "service_account_jwt": ENGINE_JWT, "disable_local_ca_jwt": True,
    })
    config = root.adapter.get(f"/v1/{name}/config")["data"]
    assert config["kubernetes_host"] == k8s.url
    assert ENGINE_JWT not in json.dumps(config)

    root.adapter.post(f"/v1/{name}/roles/summariser", json={
        "allowed_kubernetes_namespaces": ["agents"], "service_account_name": "summariser",
        "token_default_ttl": "15m", "token_default_audiences": ["leash-api"],
    })
    root.adapter.post(f"/v1/{name}/roles/pod-reader", json={
        "allowed_kubernetes_namespaces": "*",
        "generated_role_rules": json.dumps({"rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]}),
        "token_default_ttl": "5m",
    })
    assert sorted(root.adapter.list(f"/v1/{name}/roles")["data"]["keys"]) == ["pod-reader", "summariser"]

    root.sys.create_or_update_policy(
        name=f"{name}-agent",
        policy=f'path "{name}/creds/*" {{ capabilities = ["update"] }}',
    )
    agent = hvac.Client(url=root.url, token=make_token([f"{name}-agent"]))

    # An existing service account: a TokenRequest with the lease's TTL.
    r = agent.adapter.post(f"/v1/{name}/creds/summariser", json={"kubernetes_namespace": "agents"})
    assert r["lease_duration"] == 900
    assert r["data"]["service_account_name"] == "summariser"
    assert r["data"]["service_account_token"].startswith("sa-token-")
    method, path, body = k8s.seen[-1]
    assert (method, path) == ("POST", "/api/v1/namespaces/agents/serviceaccounts/summariser/token")
    assert body["spec"] == {"expirationSeconds": 900, "audiences": ["leash-api"]}

    # A generated role: Role, ServiceAccount, RoleBinding, then the token.
    before = len(k8s.seen)
    r = agent.adapter.post(f"/v1/{name}/creds/pod-reader", json={"kubernetes_namespace": "jobs"})
    sa = r["data"]["service_account_name"]
    assert r["lease_duration"] == 300
    made = [(m, p) for m, p, _ in k8s.seen[before:]]
    assert made == [
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/roles"),
        ("POST", "/api/v1/namespaces/jobs/serviceaccounts"),
        ("POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/jobs/rolebindings"),
        ("POST", f"/api/v1/namespaces/jobs/serviceaccounts/{sa}/token"),
    ]

    # The agent may not touch the configuration or the roles.
    with pytest.raises(hvac.exceptions.Forbidden):
        agent.adapter.get(f"/v1/{name}/config")

    # Revoking the lease deletes what was made.
    root.sys.revoke_lease(r["lease_id"])
    assert f"/api/v1/namespaces/jobs/serviceaccounts/{sa}" not in k8s.objects
    assert not any(sa in o for o in k8s.objects)
    assert "/api/v1/namespaces/agents/serviceaccounts/summariser" in k8s.objects

    # Bad input is a 400 naming the field.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="allowed_kubernetes_namespaces"):
        agent.adapter.post(f"/v1/{name}/creds/summariser", json={"kubernetes_namespace": "kube-system"})
