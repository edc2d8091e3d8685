"""Real Vault clients nobody here wrote, unmodified, against the real binary: node-vault
(npm, tests/clients/node) and vaultrs (crates.io, tests/clients/vaultrs). scripts/test
installs both from their registries (`npm ci`; `cargo build --locked`) and exports where
they are. Each prints one line per check and closes with "<client>: N passed, M failed".

Outside CI a missing client is a skip with the command that installs it; in CI it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NODE_DIR = REPO / "tests" / "clients" / "node"


def _missing(what: str, how: str):
    if os.environ.get("CI") in ("true", "1"):
        pytest.fail(f"{what} is required in CI ({how}; scripts/test does it)")
    pytest.skip(f"{what} is not installed: {how} (scripts/test does it)")


def _run(cmd: list[str], dev_server, cwd: Path) -> str:
    env = dict(os.environ)
    env["LEASH_ADDR"] = dev_server.url
    env["LEASH_ROOT_TOKEN"] = dev_server.root_token
    r = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )
    out = r.stdout + r.stderr
    print(out)
    assert r.returncode == 0, out
    return r.stdout


def test_node_vault(dev_server):
    node = shutil.which("node")
    if node is None:
        _missing("node", "apt-get install nodejs npm")
    if not (NODE_DIR / "node_modules" / "node-vault").is_dir():
        _missing("node-vault", "cd tests/clients/node && npm ci")
    out = _run([node, "check.js"], dev_server, NODE_DIR)
    last = out.strip().splitlines()[-1]
    assert last.startswith("node-vault: ") and last.endswith(" passed, 0 failed"), out
    assert "FAIL" not in out, out


def test_vaultrs(dev_server):
    exe = os.environ.get("LEASH_VAULTRS_CHECK")
    if not exe or not Path(exe).is_file():
        _missing(
            "the vaultrs check program",
            "cargo build --locked --manifest-path tests/clients/vaultrs/Cargo.toml "
            "and export LEASH_VAULTRS_CHECK=<target>/debug/leash-vaultrs-check",
        )
    out = _run([exe], dev_server, REPO)
    last = out.strip().splitlines()[-1]
    assert last.startswith("vaultrs: ") and last.endswith(" passed, 0 failed"), out
    assert "FAIL" not in out, out


def test_hvac_least_privilege_flows(root, dev_server, name, make_token):
    """The same flows through hvac: list_accessors (sudo), the sys/auth fields, and the
    KV-version probe a least-privilege token makes before reading."""
    import hvac

    root.sys.create_or_update_policy(
        f"{name}-cfg", 'path "secret/data/agent/*" { capabilities = ["read"] }'
    )
    root.secrets.kv.v2.create_or_update_secret(path=f"agent/{name}", secret={"k": "v"})
    token = make_token(policies=[f"{name}-cfg"])
    agent = dev_server.client(token)
    probe = agent.adapter.get(f"/v1/sys/internal/ui/mounts/secret/agent/{name}")
    assert probe["data"]["type"] == "kv"
    assert probe["data"]["options"]["version"] == "2"
    read = agent.secrets.kv.v2.read_secret_version(
        path=f"agent/{name}", raise_on_deleted_version=True
    )
    assert read["data"]["data"] == {"k": "v"}

    accessor = agent.auth.token.lookup_self()["data"]["accessor"]
    assert accessor in root.auth.token.list_accessors()["data"]["keys"]
    with pytest.raises(hvac.exceptions.Forbidden):
        agent.auth.token.list_accessors()

    for path, entry in root.sys.list_auth_methods()["data"].items():
        assert entry["config"]["token_type"] == "default-service", path
