"""`leash server --config`: first start prints a root token once, restarts keep every
token, policy, mount and secret, the storage holds nothing in clear, a wrong key fails
cleanly and changes nothing, and TLS works with a verifying client."""

import base64
import os
import secrets
import shutil
import stat
import sqlite3
import subprocess
from pathlib import Path

import hvac
import pytest
import requests


def write_config(d: Path, tls: tuple[Path, Path] | None = None) -> Path:
    if tls:
        listener = (
            f'  address       = "127.0.0.1:0"\n'
            f'  tls_cert_file = "{tls[0]}"\n'
            f'  tls_key_file  = "{tls[1]}"\n'
        )
    else:
        listener = '  address     = "127.0.0.1:0"\n  tls_disable = true\n'
    cfg = d / "leash.hcl"
    cfg.write_text(
        f'storage "sqlite" {{\n  path = "{d / "data"}"\n}}\n\n'
        f'listener "tcp" {{\n{listener}}}\n\n'
        f'seal "file" {{\n  path = "{d / "leash.key"}"\n}}\n'
    )
    return cfg


def mount_kv2(c: hvac.Client) -> None:
    # Like Vault, only dev mode pre-mounts secret/.
    c.sys.enable_secrets_engine("kv", path="secret", options={"version": "2"})


def sqlite_dump(data_dir: Path, scratch: Path) -> list[str]:
    """The logical content of every SQLite database in data_dir, read from a copy (opening
    a WAL database checkpoints it, so the bytes on disk may change while the data do not)."""
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(data_dir, scratch)
    out = []
    for db in sorted(scratch.glob("*.db")):
        con = sqlite3.connect(db)
        try:
            out.extend(con.iterdump())
        finally:
            con.close()
    assert out, f"no SQLite database found in {data_dir}"
    return out


def files_bytes(root: Path) -> bytes:
    out = b""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out += p.read_bytes()
    return out


def test_restart_keeps_state_and_storage_is_encrypted(servers, tmp_path):
    cfg = write_config(tmp_path)
    first = servers.config(cfg, "first", expect_root_token=True)
    root_token = first.root_token
    assert root_token

    key = tmp_path / "leash.key"
    assert key.exists(), "the key file is created on first start"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600

    c = first.client()
    mount_kv2(c)
    secret_value = "pv-" + secrets.token_hex(16)
    c.secrets.kv.v2.create_or_update_secret(path="agents/config/p", secret={"password": secret_value})
    c.secrets.kv.v2.create_or_update_secret(path="agents/config/p", secret={"password": secret_value + "2"})
    c.sys.create_or_update_policy("persisted", 'path "secret/data/agents/*" { capabilities = ["read"] }')
    c.sys.enable_secrets_engine("kv", path="kv1", options={"version": "1"})
    c.secrets.kv.v1.create_or_update_secret(path="k", secret={"v": "one"}, mount_point="kv1")
    agent = c.auth.token.create(policies=["persisted"], ttl="1h")["auth"]
    assert first.stop() == 0, f"server did not stop cleanly\n{first.describe()}"

    # Nothing secret in clear on disk: not the secret, not the tokens.
    data = files_bytes(tmp_path / "data")
    assert data, "no storage files written"
    for clear in (secret_value, root_token, agent["client_token"]):
        assert clear.encode() not in data, f"{clear[:6]}… stored in clear"

    second = servers.config(cfg, "second", expect_root_token=False)
    c = second.client(root_token)
    assert c.is_authenticated(), "the root token survives a restart"
    got = c.secrets.kv.v2.read_secret_version(path="agents/config/p", raise_on_deleted_version=True)
    assert got["data"]["data"] == {"password": secret_value + "2"}
    assert got["data"]["metadata"]["version"] == 2
    assert c.sys.read_policy("persisted")["data"]["rules"] == 'path "secret/data/agents/*" { capabilities = ["read"] }'
    assert "kv1/" in c.sys.list_mounted_secrets_engines()["data"]
    assert c.secrets.kv.v1.read_secret(path="k", mount_point="kv1")["data"] == {"v": "one"}

    a = second.client(agent["client_token"])
    assert a.auth.token.lookup_self()["data"]["accessor"] == agent["accessor"]
    assert a.secrets.kv.v2.read_secret_version(path="agents/config/p", raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        a.secrets.kv.v2.create_or_update_secret(path="agents/config/p", secret={"x": "y"})


def test_wrong_key_fails_cleanly_and_changes_nothing(servers, tmp_path):
    cfg = write_config(tmp_path)
    first = servers.config(cfg, "first", expect_root_token=True)
    mount_kv2(first.client())
    first.client().secrets.kv.v2.create_or_update_secret(path="keep", secret={"v": "1"})
    assert first.stop() == 0

    key = tmp_path / "leash.key"
    good = key.read_bytes()
    before = sqlite_dump(tmp_path / "data", tmp_path / "copy")
    key.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    os.chmod(key, 0o600)

    bad = servers.spawn(["--config", str(cfg)], "wrong-key", workdir=tmp_path)
    code = bad.wait_exit()
    assert code != 0
    assert "does not match" in bad.stderr, bad.describe()
    assert "Listening on" not in bad.stdout
    assert sqlite_dump(tmp_path / "data", tmp_path / "copy") == before, "a wrong key changed the stored data"

    key.write_bytes(good)
    again = servers.config(cfg, "right-key", expect_root_token=False)
    got = again.client(first.root_token).secrets.kv.v2.read_secret_version(
        path="keep", raise_on_deleted_version=True
    )
    assert got["data"]["data"] == {"v": "1"}


def test_missing_key_file_next_to_existing_data_is_refused(servers, tmp_path):
    cfg = write_config(tmp_path)
    first = servers.config(cfg, "first", expect_root_token=True)
    assert first.stop() == 0
    key = tmp_path / "leash.key"
    key.rename(tmp_path / "moved.key")
    s = servers.spawn(["--config", str(cfg)], "missing-key", workdir=tmp_path)
    assert s.wait_exit() != 0
    assert "already holds data" in s.stderr, s.describe()
    assert not key.exists(), "no new, useless key file was created"


def test_malformed_key_file_is_a_clear_error(servers, tmp_path):
    cfg = write_config(tmp_path)
    (tmp_path / "leash.key").write_text("not a key\n")
    s = servers.spawn(["--config", str(cfg)], "malformed-key", workdir=tmp_path)
    assert s.wait_exit() != 0
    assert "key" in s.stderr.lower(), s.describe()


def test_bad_config_names_the_problem(servers, tmp_path):
    cfg = tmp_path / "leash.hcl"
    cfg.write_text('storage "sqlite" { path = "d" }\nlistener "tcp" { address = "127.0.0.1:0" tls_disable = true }\nbogus_key = 1\n')
    s = servers.spawn(["--config", str(cfg)], "bad-config", workdir=tmp_path)
    assert s.wait_exit() != 0
    assert "bogus_key" in s.stderr, s.describe()


@pytest.fixture
def self_signed(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl CLI not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    r = subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", str(key), "-out", str(cert),
        ],
        capture_output=True, text=True,
    )
    if r.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {r.stderr.strip()}")
    return cert, key


def test_tls_listener(servers, tmp_path, self_signed):
    cert, key = self_signed
    d = tmp_path / "srv"
    d.mkdir()
    cfg = write_config(d, tls=(cert, key))
    s = servers.spawn(["--config", str(cfg)], "tls", workdir=d)
    s.url = s.wait_for(r"Listening on:\s*(\S+)").group(1)
    assert s.url.startswith("https://"), s.url
    s.root_token = s.wait_for(r"Root Token:\s*(\S+)").group(1)

    c = hvac.Client(url=s.url, token=s.root_token, verify=str(cert), timeout=15)
    assert c.sys.read_health_status(method="GET")["initialized"] is True
    assert c.is_authenticated()
    mount_kv2(c)
    c.secrets.kv.v2.create_or_update_secret(path="tls", secret={"v": "1"})
    assert c.secrets.kv.v2.read_secret_version(path="tls", raise_on_deleted_version=True)["data"]["data"] == {"v": "1"}

    # A client that does not trust the certificate refuses to talk.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"{s.url}/v1/sys/health", timeout=15, verify=True)
    # Plain HTTP to the TLS port gets nothing useful.
    with pytest.raises(requests.exceptions.RequestException):
        r = requests.get(s.url.replace("https://", "http://") + "/v1/sys/health", timeout=5)
        if r.status_code < 400:
            raise AssertionError("plain HTTP was served on the TLS listener")
        raise requests.exceptions.RequestException(f"refused with {r.status_code}")


def test_missing_tls_files_are_a_clear_error(servers, tmp_path):
    d = tmp_path / "srv"
    d.mkdir()
    cfg = write_config(d, tls=(d / "nope-cert.pem", d / "nope-key.pem"))
    s = servers.spawn(["--config", str(cfg)], "tls-missing", workdir=d)
    assert s.wait_exit() != 0
    assert "nope-cert.pem" in s.stderr or "nope-key.pem" in s.stderr, s.describe()
