"""auth/token/* through hvac's token API, as an agent or an operator would use it."""

import hvac
import pytest


def test_create_returns_vault_shaped_auth(root, name):
    root.sys.create_or_update_policy(name, 'path "secret/data/x" { capabilities = ["read"] }')
    resp = root.auth.token.create(policies=[name], ttl="1h", meta={"agent": "a1"})
    auth = resp["auth"]
    assert auth["client_token"].startswith("lsh."), "tokens carry the recognisable prefix"
    assert auth["accessor"] and auth["accessor"] != auth["client_token"]
    assert sorted(auth["policies"]) == sorted(["default", name])
    assert auth["lease_duration"] == 3600
    assert auth["renewable"] is True
    assert auth["orphan"] is False
    assert auth["token_type"] == "service"
    assert auth["metadata"] == {"agent": "a1"}
    assert resp["data"] is None


def test_lookup_self_lookup_and_lookup_accessor(dev_server, root, name):
    created = root.auth.token.create(policies=[name], ttl="1h", display_name="agent-7")["auth"]
    token, accessor = created["client_token"], created["accessor"]

    me = dev_server.client(token).auth.token.lookup_self()["data"]
    assert me["id"] == token
    assert me["accessor"] == accessor
    assert sorted(me["policies"]) == sorted(["default", name])
    assert 3500 < me["ttl"] <= 3600
    assert me["creation_ttl"] == 3600
    assert me["display_name"] == "token-agent-7"
    assert me["path"] == "auth/token/create"
    assert me["orphan"] is False
    assert me["renewable"] is True
    assert me["type"] == "service"
    assert isinstance(me["creation_time"], int)
    assert me["expire_time"]

    other = root.auth.token.lookup(token)["data"]
    assert other["id"] == token and other["accessor"] == accessor

    by_acc = root.auth.token.lookup_accessor(accessor)["data"]
    assert by_acc["accessor"] == accessor
    assert by_acc["id"] == "", "lookup by accessor must not reveal the token"
    assert sorted(by_acc["policies"]) == sorted(["default", name])


def test_lookup_of_unknown_token_is_forbidden(root):
    with pytest.raises(hvac.exceptions.Forbidden):
        root.auth.token.lookup("lsh.definitely-not-a-token")


def test_renew_self_and_renew(dev_server, root):
    token = root.auth.token.create(ttl="10m")["auth"]["client_token"]
    c = dev_server.client(token)
    r = c.auth.token.renew_self(increment="30m")
    assert r["auth"]["client_token"] == token
    assert 1700 <= r["auth"]["lease_duration"] <= 1800
    assert 1700 <= c.auth.token.lookup_self()["data"]["ttl"] <= 1800

    r = root.auth.token.renew(token, increment="45m")
    assert 2600 <= r["auth"]["lease_duration"] <= 2700
    assert 2600 <= root.auth.token.lookup(token)["data"]["ttl"] <= 2700


def test_renew_accessor(dev_server, root):
    a = root.auth.token.create(ttl="10m")["auth"]
    r = root.auth.token.renew_accessor(a["accessor"], increment="20m")
    assert 1100 <= r["auth"]["lease_duration"] <= 1200
    assert "client_token" not in r["auth"] or r["auth"]["client_token"] in ("", None), (
        "renewing by accessor must not reveal the token"
    )
    assert 1100 <= dev_server.client(a["client_token"]).auth.token.lookup_self()["data"]["ttl"] <= 1200


def test_renewal_is_capped_by_explicit_max_ttl(dev_server, root):
    token = root.auth.token.create(ttl="5m", explicit_max_ttl="10m")["auth"]["client_token"]
    r = dev_server.client(token).auth.token.renew_self(increment="2h")
    assert r["auth"]["lease_duration"] <= 600
    assert r["warnings"], "a capped renewal says so in warnings"


def test_non_renewable_token_cannot_be_renewed(dev_server, root):
    token = root.auth.token.create(ttl="10m", renewable=False)["auth"]["client_token"]
    with pytest.raises(hvac.exceptions.InvalidRequest):
        dev_server.client(token).auth.token.renew_self()


def test_revoke_self(dev_server, root):
    token = root.auth.token.create(ttl="10m")["auth"]["client_token"]
    c = dev_server.client(token)
    assert c.is_authenticated()
    r = c.auth.token.revoke_self()
    assert r.status_code == 204
    assert c.is_authenticated() is False
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.token.lookup_self()


def test_revoke_accessor_and_revoke(dev_server, root):
    a = root.auth.token.create(ttl="10m")["auth"]
    root.auth.token.revoke_accessor(a["accessor"])
    assert dev_server.client(a["client_token"]).is_authenticated() is False

    b = root.auth.token.create(ttl="10m")["auth"]["client_token"]
    root.auth.token.revoke(b)
    assert dev_server.client(b).is_authenticated() is False


def test_revoking_a_parent_revokes_children_but_not_orphans(dev_server, root, name):
    root.sys.create_or_update_policy(
        name,
        """
        path "auth/token/create" { capabilities = ["update"] }
        path "auth/token/create-orphan" { capabilities = ["update"] }
        """,
    )
    parent = root.auth.token.create(policies=[name], ttl="1h")["auth"]["client_token"]
    pc = dev_server.client(parent)
    child = pc.auth.token.create(policies=[name], ttl="30m")["auth"]
    assert child["orphan"] is False
    grandchild = dev_server.client(child["client_token"]).auth.token.create(ttl="10m")["auth"]
    orphan = pc.auth.token.create_orphan(policies=[name], ttl="30m")["auth"]
    assert orphan["orphan"] is True
    assert root.auth.token.lookup(orphan["client_token"])["data"]["orphan"] is True

    pc.auth.token.revoke_self()
    assert dev_server.client(child["client_token"]).is_authenticated() is False
    assert dev_server.client(grandchild["client_token"]).is_authenticated() is False
    assert dev_server.client(orphan["client_token"]).is_authenticated() is True


def test_revoke_orphan_keeps_children(dev_server, root, name):
    root.sys.create_or_update_policy(name, 'path "auth/token/create" { capabilities = ["update"] }')
    parent = root.auth.token.create(policies=[name], ttl="1h")["auth"]["client_token"]
    child = dev_server.client(parent).auth.token.create(policies=[name], ttl="30m")["auth"]
    r = root.auth.token.revoke_and_orphan_children(parent)
    assert r.status_code == 204
    assert dev_server.client(parent).is_authenticated() is False
    c = dev_server.client(child["client_token"])
    assert c.is_authenticated() is True
    assert c.auth.token.lookup_self()["data"]["orphan"] is True


def test_child_ttl_is_capped_by_parent_life(dev_server, root, name):
    root.sys.create_or_update_policy(name, 'path "auth/token/create" { capabilities = ["update"] }')
    parent = root.auth.token.create(policies=[name], ttl="5m", explicit_max_ttl="5m")
    child = dev_server.client(parent["auth"]["client_token"]).auth.token.create(ttl="2h")
    assert child["auth"]["lease_duration"] <= 300


def test_num_uses_counts_down_and_the_token_dies_at_zero(dev_server, root):
    token = root.auth.token.create(ttl="10m", num_uses=3)["auth"]
    assert token["num_uses"] == 3
    c = dev_server.client(token["client_token"])
    c.auth.token.lookup_self()
    c.auth.token.lookup_self()
    c.auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        c.auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.Forbidden):
        root.auth.token.lookup(token["client_token"])


def test_child_policies_must_be_a_subset_of_the_parent(dev_server, root, name):
    root.sys.create_or_update_policy(f"{name}-a", 'path "auth/token/create" { capabilities = ["update"] }')
    root.sys.create_or_update_policy(f"{name}-b", 'path "secret/*" { capabilities = ["read"] }')
    parent = dev_server.client(root.auth.token.create(policies=[f"{name}-a"])["auth"]["client_token"])
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        parent.auth.token.create(policies=[f"{name}-b"])
    assert "subset" in str(e.value)
    # A subset is fine, and the child gets default too.
    child = parent.auth.token.create(policies=[f"{name}-a"])["auth"]
    assert sorted(child["policies"]) == sorted(["default", f"{name}-a"])


def test_no_default_policy(dev_server, root, name):
    root.sys.create_or_update_policy(name, 'path "secret/data/x" { capabilities = ["read"] }')
    a = root.auth.token.create(policies=[name], no_default_policy=True)["auth"]
    assert a["policies"] == [name]
    # Without default it cannot even look itself up.
    with pytest.raises(hvac.exceptions.Forbidden):
        dev_server.client(a["client_token"]).auth.token.lookup_self()


def test_bad_ttl_is_invalid_request(root):
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.auth.token.create(ttl="banana")


def test_tokens_work_as_bearer_too(http, root):
    token = root.auth.token.create(ttl="10m")["auth"]["client_token"]
    r = http("GET", "auth/token/lookup-self", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    assert r.json()["data"]["id"] == token


def test_child_without_policies_inherits_the_parents(dev_server, root, name):
    root.sys.create_or_update_policy(name, 'path "auth/token/create" { capabilities = ["update"] }')
    parent = dev_server.client(root.auth.token.create(policies=[name])["auth"]["client_token"])
    child = parent.auth.token.create(ttl="5m")["auth"]
    assert sorted(child["policies"]) == sorted(["default", name])


def test_a_token_with_uses_cannot_create_children(dev_server, root):
    limited = dev_server.client(root.auth.token.create(ttl="5m", num_uses=5)["auth"]["client_token"])
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden)):
        limited.auth.token.create(ttl="1m")


# --- token roles ------------------------------------------------------------------------


def test_token_roles(dev_server, root, name):
    root.sys.create_or_update_policy(f"{name}-ok", 'path "secret/data/ok" { capabilities = ["read"] }')
    root.sys.create_or_update_policy(f"{name}-no", 'path "secret/data/no" { capabilities = ["read"] }')
    t = root.auth.token
    r = t.create_or_update_role(
        name, allowed_policies=[f"{name}-ok"], orphan=True, token_explicit_max_ttl="30m"
    )
    assert r.status_code == 204
    role = t.read_role(name)["data"]
    assert role["allowed_policies"] == [f"{name}-ok"]
    assert role["orphan"] is True
    assert name in t.list_roles()["data"]["keys"]

    a = t.create(role_name=name, policies=[f"{name}-ok"], ttl="2h")["auth"]
    assert a["orphan"] is True
    assert f"{name}-ok" in a["policies"]
    assert a["lease_duration"] <= 1800, "token_explicit_max_ttl caps the TTL"
    looked = root.auth.token.lookup(a["client_token"])["data"]
    assert looked["role"] == name
    assert looked["path"] == f"auth/token/create/{name}"

    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.create(role_name=name, policies=[f"{name}-no"])

    t.delete_role(name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        t.read_role(name)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        t.create(role_name=name, policies=[f"{name}-ok"])


def test_token_bound_cidrs_use_the_real_peer_address(dev_server, root, http, name):
    root.adapter.post(
        f"/v1/auth/token/roles/{name}",
        json={"allowed_policies": ["default"], "token_bound_cidrs": ["10.0.0.0/8"]},
    )
    token = root.auth.token.create(role_name=name, policies=["default"])["auth"]["client_token"]
    # The test talks from 127.0.0.1, outside 10.0.0.0/8; a forwarded-for header must not help.
    r = http("GET", "auth/token/lookup-self", token=token, headers={"X-Forwarded-For": "10.1.2.3"})
    assert r.status_code == 403
    assert dev_server.client(token).is_authenticated() is False

    root.adapter.post(
        f"/v1/auth/token/roles/{name}-lo",
        json={"allowed_policies": ["default"], "token_bound_cidrs": ["127.0.0.0/8"]},
    )
    ok = root.auth.token.create(role_name=f"{name}-lo", policies=["default"])["auth"]["client_token"]
    assert dev_server.client(ok).is_authenticated() is True
