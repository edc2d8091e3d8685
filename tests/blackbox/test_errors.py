"""Error shapes and input handling that Vault clients depend on: 403 never 401, 404
with {"errors": []}, 400 for bad input, 204 for no body, exact content type."""

import http.client
import json
from urllib.parse import urlparse

import hvac
import pytest


def test_unknown_path_reads_as_none_and_404(root, http, dev_server):
    assert root.read("nope/x") is None
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.adapter.get("/v1/nope/x")
    r = http("GET", "nope/x", token=dev_server.root_token)
    assert r.status_code == 404
    assert r.headers["Content-Type"] == "application/json"
    assert isinstance(r.json()["errors"], list)


def test_missing_kv_key_is_404_saying_what_was_not_found(http, dev_server, name):
    r = http("GET", f"secret/data/{name}", token=dev_server.root_token)
    assert r.status_code == 404
    assert r.json() == {"errors": [f"no value found at secret/data/{name}"]}
    r = http("LIST", f"secret/metadata/{name}", token=dev_server.root_token)
    assert r.status_code == 404
    assert r.json() == {"errors": [f"no keys found under secret/metadata/{name}/"]}
    # No mount there at all: said so.
    r = http("GET", "nosuchmount/x", token=dev_server.root_token)
    assert r.status_code == 404
    assert "nothing is mounted at or serves nosuchmount/x" in r.json()["errors"][1]


@pytest.mark.parametrize("token", [None, "", "lsh.bogus", "hvs.bogus", "x" * 600])
def test_missing_or_bad_token_is_403_never_401(http, token):
    for method, path in (
        ("GET", "secret/data/anything"),
        ("GET", "auth/token/lookup-self"),
        ("LIST", "sys/policy"),
        ("POST", "auth/token/create"),
    ):
        r = http(method, path, token=token)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        # The reason, as Vault's second error string; an unknown, malformed, expired
        # or revoked token all read the same.
        reason = "no token presented" if not token else "token is not valid"
        assert r.json() == {"errors": ["permission denied", reason]}
        assert r.headers["Content-Type"] == "application/json"


def test_bad_token_through_hvac_is_forbidden(dev_server, root, name):
    root.secrets.kv.v2.create_or_update_secret(path=name, secret={"v": "1"})
    bad = dev_server.client("lsh.bogus")
    with pytest.raises(hvac.exceptions.Forbidden):
        bad.secrets.kv.v2.read_secret_version(path=name, raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        bad.auth.token.lookup_self()


def test_denied_and_unknown_paths_look_the_same_to_a_weak_token(dev_server, make_token):
    """A token that may not touch a path must not learn whether it exists."""
    # (an empty policy list would inherit the parent's, as in Vault: name one)
    c = dev_server.client(make_token(policies=["default"]))
    with pytest.raises(hvac.exceptions.Forbidden):
        c.adapter.get("/v1/secret/data/exists-or-not")
    with pytest.raises(hvac.exceptions.Forbidden):
        c.adapter.get("/v1/no-such-mount/x")


def test_success_without_body_is_204(root, name):
    r = root.sys.create_or_update_policy(name, 'path "a" { capabilities = ["read"] }')
    assert r.status_code == 204
    assert r.content == b""


def test_success_with_body_is_exact_json(http, dev_server):
    r = http("GET", "auth/token/lookup-self", token=dev_server.root_token)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    body = r.json()
    for k in ("request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"):
        assert k in body, k


def test_put_and_post_are_the_same(http, dev_server, root, name):
    for method in ("PUT", "POST"):
        r = http(method, f"secret/data/{name}", token=dev_server.root_token, json={"data": {"m": method}})
        assert r.status_code == 200, r.text
    got = root.secrets.kv.v2.read_secret_version(path=name, raise_on_deleted_version=True)
    assert got["data"]["data"] == {"m": "POST"}
    assert got["data"]["metadata"]["version"] == 2


def test_malformed_json_is_400_saying_where(http, dev_server, name):
    r = http(
        "POST", f"secret/data/{name}", token=dev_server.root_token,
        data='{"data": {"a": 1,}}', headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    msg = " ".join(r.json()["errors"])
    assert "json" in msg.lower() and "line" in msg.lower(), msg


def test_invalid_input_is_invalid_request(root, name):
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.token.create(ttl="ten minutes")
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.adapter.post(f"/v1/secret/data/{name}", json={"data": "not an object"})
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.token.create(num_uses=-1)


def test_oversized_body_is_413(http, dev_server, name):
    big = {"data": {"blob": "x" * (1024 * 1024 + 10)}}
    r = http("POST", f"secret/data/{name}", token=dev_server.root_token, data=json.dumps(big))
    assert r.status_code == 413
    assert r.json()["errors"]
    assert http("GET", f"secret/data/{name}", token=dev_server.root_token).status_code == 404


def _raw_request(dev_server, method, target, token):
    """http.client sends the path exactly as given (requests/urllib3 normalise dots)."""
    u = urlparse(dev_server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=15)
    try:
        conn.request(method, target, headers={"X-Vault-Token": token})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


@pytest.mark.parametrize(
    "target",
    [
        "/v1/secret/data/../../sys/policy",
        "/v1/secret/data/a/../b",
        "/v1/secret/data/./a",
        "/v1/secret//data/a",
        "/v1/secret/data/a%2Fb",
        "/v1/secret/data/a%2fb",
        "/v1/secret/data/%2e%2e/x",
    ],
)
def test_path_tricks_are_400(dev_server, target):
    status, body = _raw_request(dev_server, "GET", target, dev_server.root_token)
    assert status == 400, (target, status, body)
    assert json.loads(body)["errors"]


def test_patch_needs_merge_patch_content_type(http, dev_server, name):
    r = http("PATCH", f"secret/data/{name}", token=dev_server.root_token, json={"data": {"a": "b"}})
    assert r.status_code == 415


def test_unsupported_operation_is_405(dev_server, root):
    # auth/token/create is update-only.
    with pytest.raises(hvac.exceptions.UnexpectedError):
        root.adapter.delete("/v1/auth/token/create")
    r = root.adapter.delete("/v1/auth/token/create", raise_exception=False)
    assert r.status_code == 405


def test_unknown_http_method_is_405(http, dev_server):
    r = http("BREW", "sys/health", token=dev_server.root_token)
    assert r.status_code == 405


def test_non_v1_paths_are_404(dev_server):
    import requests

    r = requests.get(f"{dev_server.url}/v2/sys/health", timeout=15)
    assert r.status_code == 404
