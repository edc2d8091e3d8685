#!/usr/bin/env python3
"""The design's agent-side JIT client, as described: it asks for just-in-time access,
polls until a human decides, then reads the database credentials.

1. POST /v1/sys/control-group/request with
   {"agent_id", "operation", "target_resource", "justification",
    "requested_duration_minutes", "timestamp"}
   — `operation` is the agent's stated intent ("update", "write", "read", …);
2. GET /v1/sys/control-group/request/<request_id> until `.get("approved")` is true
   (stops when the request is denied or expires);
3. GET /v1/database/creds/agent-readwrite (or --target).

Only `requests` is needed. Address and token from LEASH_ADDR/VAULT_ADDR and
LEASH_TOKEN/VAULT_TOKEN. On success prints the credential answer's `lease_id`,
`username` and `password` as one JSON object (the caller hands them to the agent's
database client) and exits 0; a denied or expired request exits 3, a timeout 4, any
refusal 1. Progress goes to stderr.

    python jit_access.py --operation update --justification "apply migration 42"
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time

import requests


def log(msg: str) -> None:
    print(f"jit_access: {msg}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agent-id", default="agent-deployer")
    p.add_argument("--operation", default="update", help="the stated intent")
    p.add_argument("--target", default="database/creds/agent-readwrite")
    p.add_argument("--justification", required=True)
    p.add_argument("--minutes", type=int, default=15)
    p.add_argument("--timeout", type=float, default=300, help="seconds to wait for a decision")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between polls")
    a = p.parse_args(argv)

    addr = (os.environ.get("LEASH_ADDR") or os.environ.get("VAULT_ADDR") or "").rstrip("/")
    token = os.environ.get("LEASH_TOKEN") or os.environ.get("VAULT_TOKEN")
    if not addr or not token:
        log("set LEASH_ADDR (or VAULT_ADDR) and LEASH_TOKEN (or VAULT_TOKEN)")
        return 1
    headers = {"X-Vault-Token": token}

    payload = {
        "agent_id": a.agent_id,
        "operation": a.operation,
        "target_resource": a.target,
        "justification": a.justification,
        "requested_duration_minutes": a.minutes,
        "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    r = requests.post(f"{addr}/v1/sys/control-group/request", headers=headers, json=payload, timeout=30)
    if r.status_code != 200:
        log(f"access request refused: HTTP {r.status_code} {r.text}")
        return 1
    request_id = r.json()["request_id"]
    log(f"access request {request_id} sent ({a.operation} on {a.target}); waiting for approval")

    deadline = time.monotonic() + a.timeout
    status = r.json()
    while not status.get("approved"):
        state = status.get("status") or status.get("data", {}).get("status")
        if state in ("denied", "expired"):
            log(f"approved: false, status: {state}")
            return 3
        if time.monotonic() > deadline:
            log(f"no decision within {a.timeout:.0f}s (status: {state})")
            return 4
        time.sleep(a.interval)
        r = requests.get(f"{addr}/v1/sys/control-group/request/{request_id}", headers=headers, timeout=30)
        if r.status_code != 200:
            log(f"polling refused: HTTP {r.status_code} {r.text}")
            return 1
        status = r.json()
    log("approved")

    r = requests.get(f"{addr}/v1/{a.target}", headers=headers, timeout=30)
    if r.status_code != 200:
        log(f"reading {a.target} refused: HTTP {r.status_code} {r.text}")
        return 1
    body = r.json()
    print(
        json.dumps(
            {
                "request_id": request_id,
                "lease_id": body.get("lease_id"),
                "lease_duration": body.get("lease_duration"),
                "username": body["data"]["username"],
                "password": body["data"]["password"],
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
