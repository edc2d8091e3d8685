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


class _LinePeer:
    """A log pipeline on 127.0.0.1: accepts connections and keeps every line received."""

    def __init__(self, port: int = 0):
        import socket
        import threading

        self.lines: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen()
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        import socket

        conns = []
        while not self._stop.is_set():
            try:
                c, _ = self._sock.accept()
                c.settimeout(0.05)
                conns.append([c, b""])
            except socket.timeout:
                pass
            for pair in conns:
                try:
                    data = pair[0].recv(65536)
                except socket.timeout:
                    continue
                except OSError:
                    continue
                pair[1] += data
                while b"\n" in pair[1]:
                    line, pair[1] = pair[1].split(b"\n", 1)
                    self.lines.append(line.decode())
        for c, _ in conns:
            c.close()
        self._sock.close()

    def stop(self):
        self._stop.set()
        self._thread.join()

    def wait_for(self, pred, timeout: float = 30.0):
        import time

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(pred(json.loads(l)) for l in list(self.lines)):
                return
            time.sleep(0.05)
        raise AssertionError(f"no matching line among {len(self.lines)}")


def test_socket_device_streams_entries_and_fails_closed_when_its_peer_is_gone(servers):
    srv = servers.dev("socket-device")
    root = srv.client()
    secret_value = "sock-" + secrets.token_hex(16)
    peer = _LinePeer()
    root.sys.enable_audit_device(
        "socket", path="net", options={"address": f"127.0.0.1:{peer.port}", "socket_type": "tcp"}
    )
    root.secrets.kv.v2.create_or_update_secret(path="sock", secret={"password": secret_value})
    peer.wait_for(lambda e: e.get("type") == "response" and e["request"]["path"] == "secret/data/sock")
    assert all("prev_hash" in json.loads(l) for l in peer.lines)
    assert secret_value not in "\n".join(peer.lines)

    # A second device whose peer is unreachable is refused at enable.
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        root.sys.enable_audit_device("socket", path="net2", options={"address": "127.0.0.1:1"})
    assert "cannot connect" in str(e.value)

    # The peer goes away: the only device cannot record, so reads fail closed.
    peer.stop()
    r = requests.get(
        f"{srv.url}/v1/secret/data/sock", headers={"X-Vault-Token": srv.root_token}, timeout=30
    )
    assert r.status_code == 500
    assert secret_value not in r.text


def test_leak_scan_revokes_a_leaked_token(root, make_token):
    token = make_token(policies=["default"])
    r = requests.put(
        f"{root.url}/v1/sys/leaks/scan",
        headers={"X-Vault-Token": root.token},
        json={"text": f"oops: VAULT_TOKEN={token} in a log"},
        timeout=15,
    )
    assert r.status_code == 200, r.text
    found = r.json()["data"]["found"]
    assert [f["kind"] for f in found] == ["token"]
    assert found[0]["revoked"] is True
    assert token not in r.text
    r = requests.get(
        f"{root.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=15
    )
    assert r.status_code == 403
