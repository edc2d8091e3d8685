"""Audit devices through hvac: enable, list, hash, the log's contents, disable — and
fail closed. Each test gets its own dev server: an audit device sees every request, and
a failing one (rightly) stops the server from answering anything."""

import json
import os
import secrets
import shutil
import subprocess
from pathlib import Path

import hvac
import pytest
import requests


def read_entries(path: Path) -> list[dict]:
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_file_audit_device_hashes_tokens_and_secrets(servers, tmp_path):
    srv = servers.dev("audit")
    root = srv.client()
    log = tmp_path / "audit.log"

    r = root.sys.enable_audit_device("file", options={"file_path": str(log)})
    assert r.status_code == 204
    devices = root.sys.list_enabled_audit_devices()
    assert devices["data"]["file/"]["type"] == "file"
    assert devices["data"]["file/"]["options"]["file_path"] == str(log)
    assert "file/" in devices, "sys/audit data is also at the top level"

    secret_value = "sv-" + secrets.token_hex(16)
    agent = root.auth.token.create(ttl="10m")["auth"]
    root.secrets.kv.v2.create_or_update_secret(path="audited", secret={"password": secret_value})
    got = root.secrets.kv.v2.read_secret_version(path="audited", raise_on_deleted_version=True)
    assert got["data"]["data"]["password"] == secret_value
    srv.client(agent["client_token"]).auth.token.lookup_self()

    text = log.read_text()
    entries = read_entries(log)
    assert entries, "the audit file is empty"
    # The first line records the device being enabled (it is also its test write).
    assert entries[0]["type"] == "audit_device_enabled"
    types = {e["type"] for e in entries[1:]}
    # Vault's request/response pairs, plus leash's credential lifecycle events
    # (token issued, token used), see docs/audit.md.
    assert types == {"request", "response", "lifecycle"}
    events = {e["event"] for e in entries if e["type"] == "lifecycle"}
    assert {"agent.credential.issued", "agent.credential.used"} <= events
    # Every line is chained to the one before it (tamper evidence).
    assert all(e["prev_hash"].startswith("sha256:") for e in entries)
    assert "hmac-sha256:" in text

    # Nothing secret in clear: not the root token, not a child token, not an accessor,
    # not the secret value.
    for clear in (srv.root_token, agent["client_token"], agent["accessor"], secret_value):
        assert clear not in text, f"{clear[:8]}… appears in clear in the audit log"

    # sys/audit-hash gives the same HMAC as the log, so an operator can search for a value.
    h = root.sys.calculate_hash("file", secret_value)
    assert h["data"]["hash"].startswith("hmac-sha256:")
    assert h["data"]["hash"] in text, "the secret's hash is not in the log"
    token_hash = root.sys.calculate_hash("file", agent["client_token"])["data"]["hash"]
    assert token_hash in text

    # Entries have Vault's shape.
    write = [
        e for e in entries
        if e["type"] == "request" and e["request"]["path"] == "secret/data/audited"
        and e["request"]["operation"] in ("create", "update")
    ]
    assert write, "no request entry for the KV write"
    req = write[0]["request"]
    assert req["remote_address"] == "127.0.0.1"
    assert req["client_token"].startswith("hmac-sha256:")
    assert req["id"]
    assert write[0]["auth"]["policies"] == ["root"]

    reads = [
        e for e in entries
        if e["type"] == "response" and e["request"]["path"] == "secret/data/audited"
        and e["request"]["operation"] == "read"
    ]
    assert reads, "no response entry for the KV read"
    assert reads[-1]["response"]["data"]["data"]["password"].startswith("hmac-sha256:")

    # Disable: the device goes away and writes stop.
    r = root.sys.disable_audit_device("file")
    assert r.status_code == 204
    assert "file/" not in root.sys.list_enabled_audit_devices()["data"]
    size = log.stat().st_size
    root.secrets.kv.v2.read_secret_version(path="audited", raise_on_deleted_version=True)
    assert log.stat().st_size == size


def test_audit_hash_of_unknown_device_is_an_error(servers):
    root = servers.dev("audit-unknown").client()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.calculate_hash("nope", "x")


def test_audit_device_needs_a_usable_path(servers, tmp_path):
    root = servers.dev("audit-bad").client()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_audit_device("file", options={"file_path": str(tmp_path / "no" / "such" / "dir" / "a.log")})
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.enable_audit_device("file", options={})
    assert root.sys.list_enabled_audit_devices()["data"] == {}


def test_fail_closed_when_no_audit_device_can_write(servers, tmp_path):
    srv = servers.dev("fail-closed")
    root = srv.client()
    secret_value = "fc-" + secrets.token_hex(16)
    root.secrets.kv.v2.create_or_update_secret(path="guarded", secret={"password": secret_value})

    # The only device is a FIFO: enabling it works (its test line lands in the pipe),
    # then the reader goes away and every later write fails with EPIPE.
    fifo, reader = _fifo_with_reader(tmp_path)
    root.sys.enable_audit_device("file", path="pipe", options={"file_path": str(fifo)})
    os.close(reader)

    with pytest.raises(hvac.exceptions.InternalServerError) as e:
        root.secrets.kv.v2.read_secret_version(path="guarded", raise_on_deleted_version=True)
    assert secret_value not in str(e.value)
    assert secret_value not in (e.value.text or "")

    r = requests.get(
        f"{srv.url}/v1/secret/data/guarded", headers={"X-Vault-Token": srv.root_token}, timeout=15
    )
    assert r.status_code == 500
    assert secret_value not in r.text
    assert r.json()["errors"], "the 500 says why"

    # Writes fail too, and change nothing.
    with pytest.raises(hvac.exceptions.InternalServerError):
        root.secrets.kv.v2.create_or_update_secret(path="guarded", secret={"password": "new"})
    # Token creation must not hand out a token it could not audit.
    with pytest.raises(hvac.exceptions.InternalServerError):
        root.auth.token.create(ttl="1m")


def _fifo_with_reader(tmp_path):
    """A FIFO with a non-blocking reader open (so a device can open it for writing)."""
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    return fifo, reader


def test_a_device_that_cannot_write_is_refused_at_enable(servers):
    srv = servers.dev("refuse-broken")
    root = srv.client()
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root.sys.enable_audit_device("file", path="full", options={"file_path": "/dev/full"})
    assert "test write failed" in str(e.value)
    assert root.sys.list_enabled_audit_devices()["data"] == {}
    # The server keeps working: nothing was left enabled.
    root.secrets.kv.v2.create_or_update_secret(path="still-works", secret={"v": "1"})


def test_one_working_device_is_enough(servers, tmp_path):
    srv = servers.dev("one-works")
    root = srv.client()
    root.secrets.kv.v2.create_or_update_secret(path="k", secret={"v": "1"})
    log = tmp_path / "ok.log"
    root.sys.enable_audit_device("file", path="ok", options={"file_path": str(log)})
    fifo, reader = _fifo_with_reader(tmp_path)
    root.sys.enable_audit_device("file", path="full", options={"file_path": str(fifo)})
    os.close(reader)
    assert sorted(root.sys.list_enabled_audit_devices()["data"]) == ["full/", "ok/"]
    got = root.secrets.kv.v2.read_secret_version(path="k", raise_on_deleted_version=True)
    assert got["data"]["data"] == {"v": "1"}
    assert log.stat().st_size > 0
    # Removing the working device leaves only the broken one: now it fails closed.
    # The disabling request is audited by "ok" before it goes; its response can only go
    # to "full", so the answer to it may be a 500 although the device is gone.
    try:
        root.sys.disable_audit_device("ok")
    except hvac.exceptions.InternalServerError:
        pass
    with pytest.raises(hvac.exceptions.InternalServerError):
        root.secrets.kv.v2.read_secret_version(path="k", raise_on_deleted_version=True)


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A 64 KiB tmpfs (needs root and mount); skipped where it cannot be made."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root and mount(8) for a tmpfs")
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_fail_closed_when_the_audit_disk_fills_up(servers, tiny_tmpfs):
    srv = servers.dev("disk-full")
    root = srv.client()
    secret_value = "df-" + secrets.token_hex(16)
    root.secrets.kv.v2.create_or_update_secret(path="k", secret={"password": secret_value})
    log = tiny_tmpfs / "audit.log"
    root.sys.enable_audit_device("file", options={"file_path": str(log)})
    # Fill the filesystem around the audit log.
    try:
        with open(tiny_tmpfs / "filler", "wb") as f:
            while True:
                f.write(b"x" * 4096)
                f.flush()
    except OSError:
        pass  # ENOSPC: full
    failed = None
    for _ in range(200):  # the log may still fit a few entries in its last page
        try:
            root.secrets.kv.v2.read_secret_version(path="k", raise_on_deleted_version=True)
        except hvac.exceptions.InternalServerError as e:
            failed = e
            break
    assert failed is not None, "reads kept succeeding on a full audit disk"
    assert secret_value not in (failed.text or "")
