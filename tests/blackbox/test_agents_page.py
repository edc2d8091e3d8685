"""The `/ui/agents` page, end to end in headless Chromium against the real binary and
the real PostgreSQL.

An agent logs in with AppRole and takes two database credentials. An operator whose
policies give `sudo` on `sys/containment/lock` signs in, sees the agent with its
tokens and leases, and revokes everything and locks it (after a confirmation step):
the agent's token is refused, its database users are gone, and its next login is
refused with the lock's reason. A viewer without `sudo` sees the agent but no button,
and a POST forged with the viewer's own valid session and CSRF token is refused by the
server (the lock call is checked by the pipeline, not by the page).
"""

from __future__ import annotations

import re

import requests

from test_approvals import Browser, browser, screenshot_dir  # noqa: F401  (fixture)
from test_database import ROLE, make_role, mount, pg, pg_engine  # noqa: F401  (fixtures)

OPS_POLICY = 'path "sys/containment/*" { capabilities = ["update", "read", "list", "sudo"] }'
VIEWER_POLICY = 'path "sys/containment/agents" { capabilities = ["read", "list"] }'


class Agents:
    """An AppRole agent holding two database credentials, and two people on a userpass
    mount: `ops` (may contain) and `viewer` (may only look)."""

    def __init__(self, server, root, name, mount, pg):
        self.url = server.url
        self.mount = mount
        self.ar = f"{name}-ar"
        self.up = f"{name}-up"
        make_role(root, mount)
        root.sys.create_or_update_policy(
            f"{name}-agent", f'path "{mount}/creds/{ROLE}" {{ capabilities = ["read"] }}'
        )
        root.sys.create_or_update_policy(f"{name}-ops", OPS_POLICY)
        root.sys.create_or_update_policy(f"{name}-viewer", VIEWER_POLICY)
        root.sys.enable_auth_method("approle", path=self.ar)
        root.auth.approle.create_or_update_approle(
            "ai-agent", token_policies=[f"{name}-agent"], token_ttl="1h", mount_point=self.ar
        )
        self.role_id = root.auth.approle.read_role_id("ai-agent", mount_point=self.ar)["data"][
            "role_id"
        ]
        self.secret_id = root.auth.approle.generate_secret_id("ai-agent", mount_point=self.ar)[
            "data"
        ]["secret_id"]
        root.sys.enable_auth_method("userpass", path=self.up)
        for user, policy in (("ops", f"{name}-ops"), ("viewer", f"{name}-viewer")):
            root.auth.userpass.create_or_update_user(
                user, password=f"{user}-passphrase", policies=[policy], mount_point=self.up
            )
        auth = self.login_agent()
        assert auth.status_code == 200, auth.text
        self.token = auth.json()["auth"]["client_token"]
        self.entity = auth.json()["auth"]["entity_id"]
        assert self.entity
        self.users = []
        for _ in range(2):
            r = requests.get(
                f"{self.url}/v1/{mount}/creds/{ROLE}",
                headers={"X-Vault-Token": self.token},
                timeout=15,
            )
            assert r.status_code == 200, r.text
            self.users.append(pg.track(r.json()["data"]["username"]))
            self.leases = getattr(self, "leases", []) + [r.json()["lease_id"]]

    def login_agent(self):
        return requests.post(
            f"{self.url}/v1/auth/{self.ar}/login",
            json={"role_id": self.role_id, "secret_id": self.secret_id},
            timeout=15,
        )

    def token_works(self) -> bool:
        r = requests.get(
            f"{self.url}/v1/auth/token/lookup-self",
            headers={"X-Vault-Token": self.token},
            timeout=15,
        )
        return r.status_code == 200

    def row(self) -> str:
        return "#agent-entity-" + re.sub(r"[^A-Za-z0-9]", "-", self.entity)


def make_world(dev_server, root, name, pg_engine, pg):  # noqa: F811
    return Agents(dev_server, root, name, pg_engine, pg)


def sign_in(browser, w, user):  # noqa: F811
    browser.go(f"{w.url}/ui/agents")
    browser.type("#mount", w.up)
    browser.type("#username", user)
    browser.type("#password", f"{user}-passphrase")
    browser.click("#login")


def test_the_agents_page_in_headless_chromium(dev_server, root, name, pg_engine, pg, browser, tmp_path):  # noqa: F811
    w = make_world(dev_server, root, name, pg_engine, pg)
    try:
        run(w, pg, browser, tmp_path)
    finally:
        root.sys.disable_auth_method(w.ar)
        root.sys.disable_auth_method(w.up)


def run(w, pg, browser, tmp_path):  # noqa: F811
    shots = screenshot_dir(tmp_path)

    # --- A viewer without sudo: sees the agent, no button.
    sign_in(browser, w, "viewer")
    row = browser.text(w.row())
    assert "ai-agent" in row and w.entity in row, row
    assert f"{w.ar}/ai-agent" in row, "the login role, as mount/role"
    for lease in w.leases:
        assert lease in row, row
    assert browser.text(f"{w.row()} .tokens") == "1"
    assert browser.text(f"{w.row()} .leases .count") == "2"
    assert "contain-" not in browser.source(), "no containment button without sudo"
    assert "sudo" in browser.text("#no-contain")
    page = browser.source()
    assert w.token not in page and "lsh." not in page, "no token on the page"

    # A forged POST with the viewer's own session and CSRF token: the page does not
    # decide, the pipeline does (sudo on sys/containment/lock), and refuses.
    s = requests.Session()
    r = s.post(
        f"{w.url}/ui/login",
        data={"mount": w.up, "username": "viewer", "password": "viewer-passphrase", "next": "agents"},
        timeout=15,
    )
    assert r.status_code == 200 and 'id="agents"' in r.text, r.text
    csrf = re.search(r'name="csrf" value="([A-Za-z0-9]+)"', r.text).group(1)
    forged = {"csrf": csrf, "kind": "entity_id", "value": w.entity, "confirm": "yes", "reason": "forged"}
    r = s.post(f"{w.url}/ui/agents/contain", data=forged, timeout=15)
    assert "Could not contain" in r.text and "permission denied" in r.text, r.text
    assert w.token_works(), "the forged POST revoked nothing"
    assert all(pg.role_exists(u) for u in w.users)
    # Without the CSRF token, or from another site: refused before anything is asked.
    r = s.post(f"{w.url}/ui/agents/contain", data={**forged, "csrf": "x"}, timeout=15)
    assert r.status_code == 403
    r = s.post(
        f"{w.url}/ui/agents/contain", data=forged, headers={"Origin": "https://evil.example"}, timeout=15
    )
    assert r.status_code == 403
    assert w.token_works()

    browser.click("#logout")
    assert "see the live agents" in browser.text("#signin"), "signed out, back on the Agents page"

    # --- The operator: sees the button, confirms, and the agent is contained.
    sign_in(browser, w, "ops")
    row = browser.text(w.row())
    assert "Revoke everything and lock" in row
    # Styled by the same-origin stylesheet; screenshots for the docs (desktop, phone).
    assert browser.script(
        "return getComputedStyle(document.querySelector('header')).backgroundColor"
    ) == "rgb(20, 32, 46)"
    browser.viewport(1280, 800)
    browser.go(f"{w.url}/ui/agents")
    browser.screenshot(shots / "agents-desktop.png")
    browser.viewport(390, 844, mobile=True)
    browser.go(f"{w.url}/ui/agents")
    browser.script(f"document.querySelector('{w.row()}').scrollIntoView()")
    assert browser.script(
        f"return getComputedStyle(document.querySelector('{w.row()}')).display"
    ) == "block", "on a phone each agent is a card"
    assert browser.script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.screenshot(shots / "agents-phone.png")

    browser.click(f"#contain-entity-{re.sub(r'[^A-Za-z0-9]', '-', w.entity)}")
    # The confirmation step: nothing has happened yet.
    assert w.entity in browser.text("#target")
    assert w.token_works()
    browser.type("#reason", "prompt injection in ticket 4711")
    browser.screenshot(shots / "agents-confirm-phone.png")
    browser.viewport(1280, 720)
    browser.click("#confirm-contain")
    flash = browser.text("#flash")
    assert "Contained" in flash and "1 tokens, 2 leases" in flash and "locked" in flash, flash

    # The agent's token is refused, its database users are gone, its login is refused.
    assert not w.token_works()
    assert not any(pg.role_exists(u) for u in w.users)
    r = w.login_agent()
    assert r.status_code == 403, r.text
    assert "locked: prompt injection in ticket 4711" in " ".join(r.json()["errors"])
    assert "No live agents" in browser.source() or w.row()[1:] not in browser.source()
