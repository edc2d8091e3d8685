"""KV version 2 at secret/ through hvac.secrets.kv.v2: versions, cas, soft delete,
undelete, destroy, metadata and listing."""

import hvac
import pytest


@pytest.fixture
def kv(root):
    return root.secrets.kv.v2


def read(kv, path, **kw):
    kw.setdefault("raise_on_deleted_version", True)
    return kv.read_secret_version(path=path, **kw)


def test_write_and_read_versions_with_cas(kv, name):
    w = kv.create_or_update_secret(path=name, secret={"a": "1"}, cas=0)
    assert w["data"]["version"] == 1
    assert w["data"]["destroyed"] is False
    assert w["data"]["deletion_time"] == ""
    assert w["data"]["created_time"]

    # cas=0 means "only if absent": the key exists now.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret(path=name, secret={"a": "x"}, cas=0)
    # cas must name the current version.
    with pytest.raises(hvac.exceptions.InvalidRequest):
        kv.create_or_update_secret(path=name, secret={"a": "x"}, cas=5)

    w = kv.create_or_update_secret(path=name, secret={"a": "2"}, cas=1)
    assert w["data"]["version"] == 2
    w = kv.create_or_update_secret(path=name, secret={"a": "3", "n": 7})
    assert w["data"]["version"] == 3

    latest = read(kv, name)
    assert latest["data"]["data"] == {"a": "3", "n": 7}
    assert latest["data"]["metadata"]["version"] == 3
    assert latest["data"]["metadata"]["deletion_time"] == ""
    assert latest["data"]["metadata"]["destroyed"] is False
    assert read(kv, name, version=1)["data"]["data"] == {"a": "1"}
    assert read(kv, name, version=2)["data"]["data"] == {"a": "2"}


def test_missing_secret_is_invalid_path(kv, root, name):
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, f"{name}/nothing")
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, f"{name}/nothing", raise_on_deleted_version=False)
    assert root.read(f"secret/data/{name}/nothing") is None


def test_patch_is_read_then_cas_write(kv, name):
    kv.create_or_update_secret(path=name, secret={"a": "1", "b": "1"})
    r = kv.patch(path=name, secret={"b": "2", "c": "3"})
    assert r["data"]["version"] == 2
    assert read(kv, name)["data"]["data"] == {"a": "1", "b": "2", "c": "3"}
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.patch(path=f"{name}-absent", secret={"x": "y"})


def test_soft_delete_undelete_destroy(kv, name):
    for i in range(1, 4):
        kv.create_or_update_secret(path=name, secret={"v": str(i)})

    r = kv.delete_latest_version_of_secret(path=name)
    assert r.status_code == 204
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, name)
    # With raise_on_deleted_version=False hvac returns the 404 body: data is null,
    # metadata says when it was deleted.
    body = read(kv, name, raise_on_deleted_version=False)
    assert body["data"]["data"] is None
    assert body["data"]["metadata"]["deletion_time"] != ""
    assert body["data"]["metadata"]["version"] == 3
    # Older versions are untouched.
    assert read(kv, name, version=2)["data"]["data"] == {"v": "2"}

    kv.undelete_secret_versions(path=name, versions=[3])
    assert read(kv, name)["data"]["data"] == {"v": "3"}

    kv.delete_secret_versions(path=name, versions=[1])
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, name, version=1)

    kv.destroy_secret_versions(path=name, versions=[2])
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, name, version=2, raise_on_deleted_version=False)
    # A destroyed version cannot come back.
    kv.undelete_secret_versions(path=name, versions=[2])
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, name, version=2)

    versions = kv.read_secret_metadata(path=name)["data"]["versions"]
    assert versions["1"]["deletion_time"] != "" and versions["1"]["destroyed"] is False
    assert versions["2"]["destroyed"] is True
    assert versions["3"]["deletion_time"] == "" and versions["3"]["destroyed"] is False


def test_metadata(kv, name):
    kv.create_or_update_secret(path=name, secret={"v": "1"})
    kv.create_or_update_secret(path=name, secret={"v": "2"})
    md = kv.read_secret_metadata(path=name)["data"]
    assert md["current_version"] == 2
    assert md["oldest_version"] in (0, 1)
    assert sorted(md["versions"]) == ["1", "2"]
    assert md["created_time"] and md["updated_time"]
    assert "max_versions" in md and "cas_required" in md


def test_list_secrets(kv, name):
    kv.create_or_update_secret(path=f"{name}/a", secret={"v": "1"})
    kv.create_or_update_secret(path=f"{name}/b", secret={"v": "1"})
    kv.create_or_update_secret(path=f"{name}/dir/c", secret={"v": "1"})
    keys = kv.list_secrets(path=name)["data"]["keys"]
    assert sorted(keys) == ["a", "b", "dir/"]
    assert kv.list_secrets(path=f"{name}/dir")["data"]["keys"] == ["c"]
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.list_secrets(path=f"{name}/empty")


def test_list_verb_and_list_query_agree(root, http, dev_server, name):
    root.secrets.kv.v2.create_or_update_secret(path=f"{name}/k", secret={"v": "1"})
    a = http("LIST", f"secret/metadata/{name}", token=dev_server.root_token)
    b = http("GET", f"secret/metadata/{name}?list=true", token=dev_server.root_token)
    assert a.status_code == b.status_code == 200
    assert a.json()["data"]["keys"] == b.json()["data"]["keys"] == ["k"]


def test_delete_metadata_and_all_versions(kv, name):
    kv.create_or_update_secret(path=f"{name}/gone", secret={"v": "1"})
    kv.create_or_update_secret(path=f"{name}/gone", secret={"v": "2"})
    kv.create_or_update_secret(path=f"{name}/stays", secret={"v": "1"})
    r = kv.delete_metadata_and_all_versions(path=f"{name}/gone")
    assert r.status_code == 204
    with pytest.raises(hvac.exceptions.InvalidPath):
        kv.read_secret_metadata(path=f"{name}/gone")
    with pytest.raises(hvac.exceptions.InvalidPath):
        read(kv, f"{name}/gone", version=1, raise_on_deleted_version=False)
    assert kv.list_secrets(path=name)["data"]["keys"] == ["stays"]
    # Writing again starts from version 1.
    assert kv.create_or_update_secret(path=f"{name}/gone", secret={"v": "n"})["data"]["version"] == 1


def test_values_of_any_json_type_round_trip(kv, name):
    secret = {"s": "x", "n": 1.5, "b": True, "l": [1, "2"], "o": {"k": None}, "u": "ünïcødé ✓"}
    kv.create_or_update_secret(path=name, secret=secret)
    assert read(kv, name)["data"]["data"] == secret


def test_custom_mount_point(root, name):
    root.sys.enable_secrets_engine("kv", path=name, options={"version": "2"})
    try:
        kv = root.secrets.kv.v2
        kv.create_or_update_secret(path="p", secret={"v": "1"}, mount_point=name)
        assert read(kv, "p", mount_point=name)["data"]["data"] == {"v": "1"}
        with pytest.raises(hvac.exceptions.InvalidPath):
            read(kv, "p")  # not in secret/
    finally:
        root.sys.disable_secrets_engine(name)
