"""auth/approle and auth/userpass through hvac, as an agent (AppRole) or a human
approver (userpass) would use them: enable the method, write roles and users, log in,
and get a token carrying exactly the role's policies and TTLs.

Each test mounts its methods at a unique path. Tests that fail logins on purpose run
on a server of their own: failed logins are rate-limited per source address, and the
session server's budget belongs to every test in the suite.
"""

import time

import hvac
import pytest

INVALID_APPROLE = "invalid role or secret ID"
INVALID_USERPASS = "invalid username or password"


def anonymous(server) -> hvac.Client:
    """A client holding no token (what an agent has before it logs in)."""
    return server.client(token="")


def test_approle_enable_role_secret_id_and_login(dev_server, root, name):
    root.sys.enable_auth_method("approle", path=name)
    assert f"{name}/" in root.sys.list_auth_methods()["data"]
    root.sys.create_or_update_policy(
        name, 'path "secret/data/agents/*" { capabilities = ["read"] }'
    )
    root.auth.approle.create_or_update_approle(
        "summariser",
        token_policies=[name],
        token_ttl="15m",
        token_max_ttl="1h",
        secret_id_ttl="10m",
        secret_id_num_uses=3,
        secret_id_bound_cidrs=["127.0.0.0/8"],
        mount_point=name,
    )
    role = root.auth.approle.read_role("summariser", mount_point=name)["data"]
    assert role["token_policies"] == [name]
    assert role["token_ttl"] == 900 and role["token_max_ttl"] == 3600
    assert role["secret_id_ttl"] == 600 and role["secret_id_num_uses"] == 3
    assert role["bind_secret_id"] is True
    assert role["secret_id_bound_cidrs"] == ["127.0.0.0/8"]
    assert root.auth.approle.list_roles(mount_point=name)["data"]["keys"] == ["summariser"]

    role_id = root.auth.approle.read_role_id("summariser", mount_point=name)["data"]["role_id"]
    assert role_id not in str(role), "a role read must not show the role ID"
    sid = root.auth.approle.generate_secret_id(
        "summariser", metadata={"agent": "a-1"}, cidr_list=["127.0.0.1/32"], mount_point=name
    )["data"]
    assert sid["secret_id_ttl"] == 600 and sid["secret_id_num_uses"] == 3
    accessors = root.auth.approle.list_secret_id_accessors("summariser", mount_point=name)
    assert accessors["data"]["keys"] == [sid["secret_id_accessor"]]
    looked = root.auth.approle.read_secret_id("summariser", sid["secret_id"], mount_point=name)
    assert looked["data"]["metadata"] == {"agent": "a-1"}
    assert looked["data"]["cidr_list"] == ["127.0.0.1/32"]
    assert sid["secret_id"] not in str(looked)
    by_acc = root.auth.approle.read_secret_id_accessor(
        "summariser", sid["secret_id_accessor"], mount_point=name
    )
    assert by_acc["data"]["secret_id_accessor"] == sid["secret_id_accessor"]

    agent = anonymous(dev_server)
    resp = agent.auth.approle.login(role_id, sid["secret_id"], mount_point=name)
    auth = resp["auth"]
    assert sorted(auth["policies"]) == sorted(["default", name])
    assert auth["lease_duration"] == 900
    assert auth["orphan"] is True
    assert auth["metadata"]["role_name"] == "summariser"
    assert auth["metadata"]["agent"] == "a-1"
    assert agent.is_authenticated(), "hvac uses the login token"
    me = agent.auth.token.lookup_self()["data"]
    assert sorted(me["policies"]) == sorted(["default", name])
    assert me["creation_ttl"] == 900 and me["explicit_max_ttl"] == 3600
    assert me["display_name"] == "approle"
    assert me["entity_id"] == auth["entity_id"]

    # Another secret ID of the same role: the same identity.
    other = root.auth.approle.generate_secret_id("summariser", mount_point=name)["data"]
    again = anonymous(dev_server).auth.approle.login(role_id, other["secret_id"], mount_point=name)
    assert again["auth"]["entity_id"] == auth["entity_id"]
    assert again["auth"]["client_token"] != auth["client_token"]


def test_approle_destroy_and_role_delete(dev_server, root, name):
    root.sys.enable_auth_method("approle", path=name)
    root.auth.approle.create_or_update_approle("r", token_policies=["default"], mount_point=name)
    role_id = root.auth.approle.read_role_id("r", mount_point=name)["data"]["role_id"]
    a = root.auth.approle.generate_secret_id("r", mount_point=name)["data"]
    b = root.auth.approle.generate_secret_id("r", mount_point=name)["data"]
    root.auth.approle.destroy_secret_id_accessor("r", a["secret_id_accessor"], mount_point=name)
    root.auth.approle.destroy_secret_id("r", b["secret_id"], mount_point=name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.auth.approle.list_secret_id_accessors("r", mount_point=name)
    c = root.auth.approle.generate_secret_id("r", mount_point=name)["data"]
    anonymous(dev_server).auth.approle.login(role_id, c["secret_id"], mount_point=name)
    root.auth.approle.delete_role("r", mount_point=name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.auth.approle.read_role("r", mount_point=name)


def test_approle_custom_role_id(dev_server, root, name):
    root.sys.enable_auth_method("approle", path=name)
    root.auth.approle.create_or_update_approle("r", token_policies=["default"], mount_point=name)
    root.auth.approle.update_role_id("r", f"{name}-role-id", mount_point=name)
    role_id = root.auth.approle.read_role_id("r", mount_point=name)["data"]["role_id"]
    assert role_id == f"{name}-role-id"
    sid = root.auth.approle.generate_secret_id("r", mount_point=name)["data"]["secret_id"]
    resp = anonymous(dev_server).auth.approle.login(f"{name}-role-id", sid, mount_point=name)
    assert resp["auth"]["metadata"]["role_name"] == "r"


def test_userpass_users_and_login(dev_server, root, name):
    root.sys.enable_auth_method("userpass", path=name)
    root.sys.create_or_update_policy(name, 'path "sys/control-group/*" { capabilities = ["read"] }')
    root.auth.userpass.create_or_update_user(
        "alice", password="correct horse", policies=[name], token_ttl="30m", mount_point=name
    )
    user = root.auth.userpass.read_user("alice", mount_point=name)["data"]
    assert user["token_policies"] == [name]
    assert user["token_ttl"] == 1800
    assert "password" not in user and "correct horse" not in str(user)
    assert root.auth.userpass.list_user(mount_point=name)["data"]["keys"] == ["alice"]

    human = anonymous(dev_server)
    auth = human.auth.userpass.login("alice", "correct horse", mount_point=name)["auth"]
    assert sorted(auth["policies"]) == sorted(["default", name])
    assert auth["lease_duration"] == 1800
    assert auth["metadata"]["username"] == "alice"
    me = human.auth.token.lookup_self()["data"]
    assert me["display_name"] == "userpass-alice"
    assert me["meta"]["username"] == "alice"
    assert me["entity_id"] == auth["entity_id"]
    again = anonymous(dev_server).auth.userpass.login("alice", "correct horse", mount_point=name)
    assert again["auth"]["entity_id"] == auth["entity_id"]

    root.auth.userpass.update_password_on_user("alice", "a new passphrase", mount_point=name)
    anonymous(dev_server).auth.userpass.login("alice", "a new passphrase", mount_point=name)
    root.auth.userpass.delete_user("alice", mount_point=name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.auth.userpass.read_user("alice", mount_point=name)


def test_refused_logins_say_why_and_repeated_failures_are_rate_limited(servers):
    srv = servers.dev("auth-refusals")
    root = srv.client()
    root.sys.enable_auth_method("approle")
    root.sys.enable_auth_method("userpass")
    root.auth.approle.create_or_update_approle("r", token_policies=["default"])
    role_id = root.auth.approle.read_role_id("r")["data"]["role_id"]
    failures = 0

    def refused(call, message):
        nonlocal failures
        with pytest.raises(hvac.exceptions.InvalidRequest) as e:
            call()
        failures += 1
        assert message in str(e.value), str(e.value)

    # Replay of a single-use secret ID.
    # (hvac's generate_secret_id has no num_uses or ttl; Vault's fields, posted as is.)
    once = root.adapter.post("/v1/auth/approle/role/r/secret-id", json={"num_uses": 1})["data"]
    anonymous(srv).auth.approle.login(role_id, once["secret_id"])
    refused(
        lambda: anonymous(srv).auth.approle.login(role_id, once["secret_id"]),
        "secret ID has no uses left",
    )

    # A secret ID bound to another network.
    far = root.auth.approle.generate_secret_id("r", cidr_list=["10.0.0.0/8"])["data"]["secret_id"]
    refused(
        lambda: anonymous(srv).auth.approle.login(role_id, far),
        "source address 127.0.0.1 is not allowed by the secret ID's CIDR list",
    )
    near = root.auth.approle.generate_secret_id("r", cidr_list=["127.0.0.0/8"])["data"]["secret_id"]
    anonymous(srv).auth.approle.login(role_id, near)

    # An expired secret ID (a one-second TTL; lookups stop finding it once it is dead).
    short = root.adapter.post("/v1/auth/approle/role/r/secret-id", json={"ttl": "1s"})["data"]
    deadline = time.monotonic() + 10
    while isinstance(root.auth.approle.read_secret_id("r", short["secret_id"]), dict):
        assert time.monotonic() < deadline, "the secret ID never expired"
        time.sleep(0.2)
    refused(
        lambda: anonymous(srv).auth.approle.login(role_id, short["secret_id"]),
        "secret ID has expired",
    )

    # Unknown credentials: one answer, nothing echoed.
    refused(lambda: anonymous(srv).auth.approle.login(role_id, "not-a-secret-id"), INVALID_APPROLE)
    refused(lambda: anonymous(srv).auth.approle.login("not-a-role-id", near), INVALID_APPROLE)

    root.auth.userpass.create_or_update_user("alice", password="pw-alice", policies=["default"])
    with pytest.raises(hvac.exceptions.InvalidRequest) as wrong:
        anonymous(srv).auth.userpass.login("alice", "pw-bob")
    with pytest.raises(hvac.exceptions.InvalidRequest) as unknown:
        anonymous(srv).auth.userpass.login("mallory", "pw-alice")
    failures += 2
    assert INVALID_USERPASS in str(wrong.value)
    assert str(wrong.value).split(", on ")[0] == str(unknown.value).split(", on ")[0]

    # Past 20 failures in a minute, this source is refused with 429.
    with pytest.raises(hvac.exceptions.RateLimitExceeded):
        for _ in range(25):
            refused(
                lambda: anonymous(srv).auth.approle.login(role_id, "not-a-secret-id"),
                INVALID_APPROLE,
            )
    assert failures == 20
