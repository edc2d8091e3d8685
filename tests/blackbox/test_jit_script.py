"""The design's agent-side script (jit_access.py), unmodified in behaviour, whatever
`operation` it states: "update", "write" and "production write" are intents; obtaining
the credential is a `read`, which is what the policy puts behind the control group, so
the grant is bound to it. A denied request reads `approved: false` with its status.

A DBA (alice) decides through the API while the script polls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from test_approvals import world  # noqa: F401  (fixture)
from test_database import mount, pg, pg_engine  # noqa: F401  (fixtures)

SCRIPT = Path(__file__).with_name("jit_access.py")


def start(world, operation: str) -> subprocess.Popen:  # noqa: F811
    env = dict(os.environ)
    env["LEASH_ADDR"] = world.url
    env["LEASH_TOKEN"] = world.agent
    return subprocess.Popen(
        [
            sys.executable,
            str(SCRIPT),
            "--operation",
            operation,
            "--target",
            f"{world.mount}/creds/agent-readwrite",
            "--justification",
            "production database writes: apply migration 42",
            "--minutes",
            "10",
            "--interval",
            "0.2",
            "--timeout",
            "60",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def pending(world, alice: str, proc) -> dict:  # noqa: F811
    """The script's pending request, as the approver lists it."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        r = requests.request(
            "LIST",
            f"{world.url}/v1/sys/control-group/request",
            headers={"X-Vault-Token": alice},
            timeout=15,
        )
        if r.status_code == 200:
            info = r.json()["data"]["key_info"]
            if info:
                (rid, details), *_ = info.items()
                return {"id": rid, **details}
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
    raise AssertionError("the script's request never showed up")


def decide(world, alice: str, rid: str, action: str) -> None:  # noqa: F811
    r = requests.post(
        f"{world.url}/v1/sys/control-group/request/{rid}/{action}",
        headers={"X-Vault-Token": alice},
        json={"comment": "ticket DB-42"},
        timeout=15,
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("operation", ["update", "write", "read", "production write"])
def test_the_design_script_gets_its_credentials_whatever_it_states(world, pg, operation):  # noqa: F811
    alice = world.alice()
    proc = start(world, operation)
    req = pending(world, alice, proc)
    # The approver sees the intent as stated.
    assert req["operation"] == operation, req
    assert req["agent_id"] == "agent-deployer"
    decide(world, alice, req["id"], "approve")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    creds = json.loads(out)
    user = pg.track(creds["username"])
    with pg.connect_as(user, creds["password"]) as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    # The grant is spent (single use): reading again needs a new approval.
    r = requests.get(
        f"{world.url}/v1/{world.mount}/creds/agent-readwrite",
        headers={"X-Vault-Token": world.agent},
        timeout=15,
    )
    assert r.status_code == 403, r.text


def test_a_denied_request_reads_approved_false_to_the_script(world):  # noqa: F811
    alice = world.alice()
    proc = start(world, "write")
    req = pending(world, alice, proc)
    decide(world, alice, req["id"], "deny")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 3, err
    assert "approved: false, status: denied" in err
    assert out == ""
    # What the script polled: approved false, with the status.
    r = requests.get(
        f"{world.url}/v1/sys/control-group/request/{req['id']}",
        headers={"X-Vault-Token": world.agent},
        timeout=15,
    )
    assert r.status_code == 200
    assert r.json()["approved"] is False
    assert r.json()["status"] == "denied"
