"""ACL policies through hvac: sys/policy, sys/policies/acl, and the seed policy of
issue 2 behaving exactly as written."""

import json

import hvac
import pytest

HCL = """
path "secret/data/{name}/*" {{
  capabilities = ["read", "list"]
}}
"""

# The seed policy from issue 2, verbatim: it must load unchanged and behave as written.
SEED_POLICY = """path "database/creds/agent-readonly" { capabilities = ["read"] }
path "secret/data/agents/config/*"   { capabilities = ["read"] }
path "auth/token/renew-self"         { capabilities = ["update"] }
path "*"                             { capabilities = ["deny"] }
"""


def test_policy_crud_with_hcl(root, name):
    text = HCL.format(name=name)
    r = root.sys.create_or_update_policy(name, text)
    assert r.status_code == 204

    got = root.sys.read_policy(name)
    assert got["data"]["name"] == name
    assert got["data"]["rules"] == text
    assert got["rules"] == text, "sys/policy data is also at the top level"

    listed = root.sys.list_policies()
    assert name in listed["data"]["policies"]
    assert name in listed["policies"]
    assert {"default", "root"} <= set(listed["data"]["policies"])

    root.sys.delete_policy(name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.sys.read_policy(name)
    assert name not in root.sys.list_policies()["data"]["policies"]


def test_policy_as_dict_is_sent_as_json_and_enforced(dev_server, root, name):
    policy = {"path": {f"secret/data/{name}": {"capabilities": ["read"]}}}
    root.sys.create_or_update_policy(name, policy)  # hvac json.dumps it
    stored = root.sys.read_policy(name)["data"]["rules"]
    assert json.loads(stored) == policy

    root.secrets.kv.v2.create_or_update_secret(path=name, secret={"v": "1"})
    c = dev_server.client(root.auth.token.create(policies=[name])["auth"]["client_token"])
    got = c.secrets.kv.v2.read_secret_version(path=name, raise_on_deleted_version=True)
    assert got["data"]["data"] == {"v": "1"}
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v2.create_or_update_secret(path=name, secret={"v": "2"})


def test_acl_policy_endpoints(root, name):
    text = HCL.format(name=name)
    r = root.sys.create_or_update_acl_policy(name, text)
    assert r.status_code == 204
    got = root.sys.read_acl_policy(name)
    assert got["data"] == {"name": name, "policy": text}
    assert name in root.sys.list_acl_policies()["data"]["keys"]
    # The two APIs are views of one store.
    assert root.sys.read_policy(name)["data"]["rules"] == text
    root.sys.delete_acl_policy(name)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.sys.read_acl_policy(name)


def test_acl_policy_from_dict(root, name):
    policy = {"path": {"secret/data/a": {"capabilities": ["read"]}}}
    root.sys.create_or_update_acl_policy(name, policy)
    assert json.loads(root.sys.read_acl_policy(name)["data"]["policy"]) == policy


def test_invalid_hcl_is_a_400_naming_the_line(root, name):
    bad = 'path "secret/*" {\n  capabilities = ["read"]\n  oops = \n}\n'
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root.sys.create_or_update_policy(name, bad)
    assert "line" in str(e.value).lower(), str(e.value)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.sys.read_policy(name)


def test_unknown_capability_is_refused(root, name):
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root.sys.create_or_update_policy(name, 'path "a/*" { capabilities = ["reed"] }')
    assert "reed" in str(e.value)


def test_root_and_default_are_protected(root):
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.create_or_update_policy("root", 'path "*" { capabilities = ["read"] }')
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.delete_policy("default")
    assert "default" in root.sys.list_policies()["data"]["policies"]


def test_default_policy_is_vaults(root):
    text = root.sys.read_policy("default")["data"]["rules"]
    for p in (
        "auth/token/lookup-self",
        "auth/token/renew-self",
        "auth/token/revoke-self",
        "sys/capabilities-self",
        "sys/leases/renew",
        "sys/leases/lookup",
    ):
        assert p in text, p


def test_deny_wins_and_most_specific_rule_wins(dev_server, root, name):
    root.sys.create_or_update_policy(
        f"{name}-grant", f'path "secret/data/{name}/*" {{ capabilities = ["read"] }}'
    )
    root.sys.create_or_update_policy(
        f"{name}-deny", f'path "secret/data/{name}/private" {{ capabilities = ["deny"] }}'
    )
    for p in ("public", "private"):
        root.secrets.kv.v2.create_or_update_secret(path=f"{name}/{p}", secret={"p": p})
    token = root.auth.token.create(policies=[f"{name}-grant", f"{name}-deny"])["auth"]["client_token"]
    c = dev_server.client(token)
    assert c.secrets.kv.v2.read_secret_version(path=f"{name}/public", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        c.secrets.kv.v2.read_secret_version(path=f"{name}/private", raise_on_deleted_version=True)


# --- the seed policy of issue 2 ---------------------------------------------------------


@pytest.fixture
def seed(dev_server, root, name):
    pol = f"agent-seed-{name}"
    root.sys.create_or_update_policy(pol, SEED_POLICY)
    assert root.sys.read_policy(pol)["data"]["rules"] == SEED_POLICY, "loads unchanged"
    root.secrets.kv.v2.create_or_update_secret(path="agents/config/x", secret={"model": "m1"})
    root.secrets.kv.v2.create_or_update_secret(path="agents/config/deep/y", secret={"d": "1"})
    root.secrets.kv.v2.create_or_update_secret(path="other", secret={"nope": "1"})
    token = root.auth.token.create(policies=[pol], ttl="1h")["auth"]["client_token"]
    return dev_server.client(token)


def test_seed_policy_reads_agent_config(seed):
    got = seed.secrets.kv.v2.read_secret_version(path="agents/config/x", raise_on_deleted_version=True)
    assert got["data"]["data"] == {"model": "m1"}
    deep = seed.secrets.kv.v2.read_secret_version(path="agents/config/deep/y", raise_on_deleted_version=True)
    assert deep["data"]["data"] == {"d": "1"}


def test_seed_policy_cannot_write_agent_config(seed, root):
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.create_or_update_secret(path="agents/config/x", secret={"model": "evil"})
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.create_or_update_secret(path="agents/config/new", secret={"a": "b"})
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.delete_latest_version_of_secret(path="agents/config/x")
    assert root.secrets.kv.v2.read_secret_version(
        path="agents/config/x", raise_on_deleted_version=True
    )["data"]["data"] == {"model": "m1"}


def test_seed_policy_cannot_read_or_list_elsewhere(seed):
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.read_secret_version(path="other", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.list_secrets(path="agents/config")
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.read_secret_metadata(path="agents/config/x")
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.secrets.kv.v2.read_secret_version(path="agents/configx", raise_on_deleted_version=True)


def test_seed_policy_can_renew_self(seed):
    r = seed.auth.token.renew_self()
    assert r["auth"]["lease_duration"] > 0
    # default is still attached and its exact paths beat the "*" deny.
    assert seed.auth.token.lookup_self()["data"]["ttl"] > 0


def test_seed_policy_is_forbidden_on_sys(seed):
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.sys.list_policies()
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.sys.create_or_update_policy("escalate", 'path "*" { capabilities = ["sudo"] }')
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.sys.list_mounted_secrets_engines()
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.auth.token.create(policies=["root"])
    with pytest.raises(hvac.exceptions.Forbidden):
        seed.sys.enable_audit_device("file", options={"file_path": "/tmp/x"})


def test_seed_policy_capabilities_self(seed):
    paths = [
        "secret/data/agents/config/x",
        "secret/data/other",
        "database/creds/agent-readonly",
        "auth/token/renew-self",
        "sys/policy/foo",
    ]
    caps = seed.sys.get_capabilities(paths=paths)
    assert caps["secret/data/agents/config/x"] == ["read"]
    assert caps["secret/data/other"] == ["deny"]
    assert caps["database/creds/agent-readonly"] == ["read"]
    assert caps["auth/token/renew-self"] == ["update"]
    assert caps["sys/policy/foo"] == ["deny"]
    assert caps["data"]["secret/data/agents/config/x"] == ["read"]

    one = seed.adapter.post("/v1/sys/capabilities-self", json={"paths": ["secret/data/agents/config/x"]})
    assert one["capabilities"] == ["read"]
    assert one["secret/data/agents/config/x"] == ["read"]


def test_root_can_ask_capabilities_of_another_token(seed, root):
    caps = root.sys.get_capabilities(paths=["secret/data/agents/config/x"], token=seed.token)
    assert caps["secret/data/agents/config/x"] == ["read"]
    assert root.sys.get_capabilities(paths=["anything/at/all"])["anything/at/all"] == ["root"]
