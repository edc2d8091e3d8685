"""sys/health, sys/init, sys/seal-status, authentication checks, mounts and KV v1."""

import hvac
import pytest


def test_health_reports_an_active_unsealed_initialised_server(root):
    h = root.sys.read_health_status(method="GET")
    assert isinstance(h, dict), h
    assert h["initialized"] is True
    assert h["sealed"] is False
    assert h["standby"] is False
    assert h["replication_dr_mode"] == "disabled"
    assert isinstance(h["version"], str) and h["version"]
    assert isinstance(h["server_time_utc"], int)


def test_health_needs_no_token(dev_server, http):
    r = http("GET", "sys/health")
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json()["initialized"] is True
    # HEAD works too (load balancers use it) and has no body.
    r = http("HEAD", "sys/health")
    assert r.status_code == 200
    assert r.content == b""


def test_health_honours_activecode(http):
    r = http("GET", "sys/health", params={"activecode": "299"})
    assert r.status_code == 299
    assert r.json()["sealed"] is False


def test_initialised_and_unsealed(root):
    assert root.sys.is_initialized() is True
    assert root.sys.is_sealed() is False
    status = root.sys.read_seal_status()
    assert status["sealed"] is False and status["initialized"] is True


def test_is_authenticated(dev_server, root):
    assert root.is_authenticated() is True
    # A bad token must give False, not an exception (a 401 would make hvac raise).
    assert dev_server.client("lsh.not-a-real-token").is_authenticated() is False
    assert dev_server.client("hvs.CAESIJunk").is_authenticated() is False


# --- mounts ---------------------------------------------------------------------------


def test_dev_server_mounts_kv_v2_at_secret(root):
    mounts = root.sys.list_mounted_secrets_engines()
    # Vault copies sys/mounts data to the top level as well; hvac users read either.
    for view in (mounts, mounts["data"]):
        assert "secret/" in view, sorted(view)
        assert view["secret/"]["type"] == "kv"
        assert view["secret/"]["options"]["version"] == "2"
        assert "sys/" in view


def test_enable_tune_read_disable_a_mount(root, name):
    root.sys.enable_secrets_engine(
        "kv", path=name, description="scratch", options={"version": "2"}
    )
    mounts = root.sys.list_mounted_secrets_engines()["data"]
    assert f"{name}/" in mounts
    assert mounts[f"{name}/"]["description"] == "scratch"
    assert mounts[f"{name}/"]["type"] == "kv"

    root.secrets.kv.v2.create_or_update_secret(
        path="a", secret={"k": "v"}, mount_point=name
    )

    root.sys.tune_mount_configuration(name, default_lease_ttl="30m", max_lease_ttl="2h")
    cfg = root.sys.read_mount_configuration(name)
    assert cfg["data"]["default_lease_ttl"] == 1800
    assert cfg["data"]["max_lease_ttl"] == 7200

    root.sys.disable_secrets_engine(name)
    assert f"{name}/" not in root.sys.list_mounted_secrets_engines()["data"]
    # Its data went with it: the path is unknown now.
    assert root.read(f"{name}/data/a") is None


def test_enabling_a_taken_path_is_refused(root):
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})


def test_enabling_an_unknown_engine_type_is_refused(root, name):
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_secrets_engine("no-such-engine", path=name)
    assert f"{name}/" not in root.sys.list_mounted_secrets_engines()["data"]


def test_system_mounts_cannot_be_disabled(root):
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.disable_secrets_engine("sys")
    assert "sys/" in root.sys.list_mounted_secrets_engines()["data"]


def test_auth_methods_list_has_token(root):
    methods = root.sys.list_auth_methods()
    assert "token/" in methods["data"]
    assert methods["data"]["token/"]["type"] == "token"
    assert "token/" in methods  # top-level copy, as Vault


# --- KV version 1 ---------------------------------------------------------------------


@pytest.fixture
def kv1(root, name):
    root.sys.enable_secrets_engine("kv", path=name, options={"version": "1"})
    yield name
    root.sys.disable_secrets_engine(name)


def test_kv_v1_round_trip(root, kv1):
    kv = root.secrets.kv.v1
    r = kv.create_or_update_secret(path="app/db", secret={"user": "u", "n": 3}, mount_point=kv1)
    assert r.status_code == 204
    kv.create_or_update_secret(path="app/api", secret={"key": "k"}, mount_point=kv1)
    kv.create_or_update_secret(path="top", secret={"x": "y"}, mount_point=kv1)

    got = kv.read_secret(path="app/db", mount_point=kv1)
    assert got["data"] == {"user": "u", "n": 3}
    assert got["lease_id"] == ""

    assert sorted(kv.list_secrets(path="app", mount_point=kv1)["data"]["keys"]) == ["api", "db"]
    assert sorted(kv.list_secrets(path="", mount_point=kv1)["data"]["keys"]) == ["app/", "top"]

    # A write replaces the whole value (KV v1 has no versions).
    kv.create_or_update_secret(path="app/db", secret={"user": "u2"}, mount_point=kv1)
    assert kv.read_secret(path="app/db", mount_point=kv1)["data"] == {"user": "u2"}

    kv.delete_secret(path="app/db", mount_point=kv1)
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret(path="app/db", mount_point=kv1)
    assert kv.list_secrets(path="app", mount_point=kv1)["data"]["keys"] == ["api"]


def test_kv_v1_create_and_update_are_different_capabilities(dev_server, root, kv1, name):
    """KV v1 decides create vs update by whether the key exists."""
    root.sys.create_or_update_policy(
        f"{name}-create", f'path "{kv1}/*" {{ capabilities = ["create", "read"] }}'
    )
    root.sys.create_or_update_policy(
        f"{name}-update", f'path "{kv1}/*" {{ capabilities = ["update", "read"] }}'
    )
    creator = dev_server.client(root.auth.token.create(policies=[f"{name}-create"])["auth"]["client_token"])
    updater = dev_server.client(root.auth.token.create(policies=[f"{name}-update"])["auth"]["client_token"])

    with pytest.raises(hvac.exceptions.Forbidden):
        updater.secrets.kv.v1.create_or_update_secret(path="new", secret={"a": "1"}, mount_point=kv1)
    creator.secrets.kv.v1.create_or_update_secret(path="new", secret={"a": "1"}, mount_point=kv1)
    with pytest.raises(hvac.exceptions.Forbidden):
        creator.secrets.kv.v1.create_or_update_secret(path="new", secret={"a": "2"}, mount_point=kv1)
    updater.secrets.kv.v1.create_or_update_secret(path="new", secret={"a": "3"}, mount_point=kv1)
    assert creator.secrets.kv.v1.read_secret(path="new", mount_point=kv1)["data"] == {"a": "3"}
