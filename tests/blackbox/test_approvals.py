"""Just-in-time access against the real binary and the real PostgreSQL.

* The agent's four steps exactly as an agent script does them, with plain `requests`
  (request → poll → read the credentials → complete), approved by a human through
  the API (hvac has no control-group helpers, as for Vault).
* The approval page, end to end in headless Chromium driven through ChromeDriver's
  WebDriver HTTP API: sign in, see the pending request with its details, approve it
  with a comment; the agent then gets its credentials.

Each test has its own userpass mount, identity group, policy, database mount and
PostgreSQL database (fixtures from test_database), so tests share the session server.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import psycopg
import pytest
import requests

from conftest import HTTP_TIMEOUT
from test_database import Pg, mount, pg, pg_engine  # noqa: F401  (fixtures)

CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]
REVOCATION = ['DROP ROLE IF EXISTS "{{name}}";']


def control_group_policy(mount: str, group: str) -> str:
    # The stanza, for this test's mount and group.
    return f"""
path "{mount}/creds/agent-readwrite" {{
  capabilities = ["read"]
  control_group = {{
    ttl = "15m"
    factor "dba" {{
      identity {{
        group_names = ["{group}"]
        approvals   = 1
      }}
    }}
  }}
}}
"""


class World:
    """A database role behind a control group, an agent token, and approver `alice`
    (userpass, member of this test's group)."""

    def __init__(self, server, root, name, mount):
        self.url = server.url
        self.mount = mount
        self.up = f"{name}-up"
        root.secrets.database.create_role(
            "agent-readwrite",
            db_name="pg",
            creation_statements=CREATION,
            revocation_statements=REVOCATION,
            default_ttl="1h",
            max_ttl="2h",
            mount_point=mount,
        )
        group = f"{name}-dba"
        root.sys.create_or_update_policy(f"{name}-agent", control_group_policy(mount, group))
        root.sys.enable_auth_method("userpass", path=self.up)
        root.auth.userpass.create_or_update_user(
            "alice", password="alice-passphrase", policies=["default"], mount_point=self.up
        )
        accessor = root.sys.list_auth_methods()["data"][f"{self.up}/"]["accessor"]
        # hvac's identity helpers, as an operator's script would use them.
        entity = root.secrets.identity.lookup_entity(
            alias_name="alice", alias_mount_accessor=accessor
        )["data"]["id"]
        root.secrets.identity.create_or_update_group(name=group, member_entity_ids=[entity])
        self.agent = root.auth.token.create(policies=[f"{name}-agent"], ttl="1h")["auth"][
            "client_token"
        ]

    def alice(self) -> str:
        r = requests.post(
            f"{self.url}/v1/auth/{self.up}/login/alice",
            json={"password": "alice-passphrase"},
            timeout=HTTP_TIMEOUT,
        )
        assert r.status_code == 200, r.text
        return r.json()["auth"]["client_token"]


@pytest.fixture
def world(dev_server, root, name, pg_engine):  # noqa: F811
    w = World(dev_server, root, name, pg_engine)
    yield w
    root.sys.disable_auth_method(w.up)


def test_the_four_step_flow_from_a_plain_requests_script(world, pg):  # noqa: F811
    url, headers = world.url, {"X-Vault-Token": world.agent}

    # Without approval the credentials are refused, and the error says what to do.
    r = requests.get(f"{url}/v1/{world.mount}/creds/agent-readwrite", headers=headers, timeout=15)
    assert r.status_code == 403
    assert "requires an approval" in " ".join(r.json()["errors"])

    # 1. Ask.
    r = requests.post(
        f"{url}/v1/sys/control-group/request",
        headers=headers,
        json={
            "agent_id": "agent-7",
            "operation": "read",
            "target_resource": f"{world.mount}/creds/agent-readwrite",
            "justification": "apply the approved schema migration",
            "requested_duration_minutes": 10,
            "timestamp": "2026-11-29T10:00:00Z",
        },
        timeout=15,
    )
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]
    assert r.json()["data"]["status"] == "pending"

    # A DBA approves (through the API, with a comment).
    r = requests.post(
        f"{url}/v1/sys/control-group/request/{request_id}/approve",
        headers={"X-Vault-Token": world.alice()},
        json={"comment": "ticket DB-42"},
        timeout=15,
    )
    assert r.status_code == 200, r.text

    # 2. Poll until approved.
    deadline = time.monotonic() + 30
    while True:
        r = requests.get(f"{url}/v1/sys/control-group/request/{request_id}", headers=headers, timeout=15)
        assert r.status_code == 200, r.text
        if r.json()["approved"]:
            break
        assert time.monotonic() < deadline, r.text
        time.sleep(0.5)
    data = r.json()["data"]
    assert data["status"] == "approved"
    assert data["decided_by"]["comment"] == "ticket DB-42"

    # 3. The credentials: a lease no longer than the window, and they work.
    r = requests.get(f"{url}/v1/{world.mount}/creds/agent-readwrite", headers=headers, timeout=15)
    assert r.status_code == 200, r.text
    creds = r.json()
    assert 0 < creds["lease_duration"] <= 600
    user = pg.track(creds["data"]["username"])
    with pg.connect_as(user, creds["data"]["password"]) as conn:
        assert conn.execute("SELECT count(*) FROM public.items").fetchone()[0] == 3

    # 4. Done: the window ends and the credentials die with it.
    r = requests.post(
        f"{url}/v1/sys/control-group/request/{request_id}/complete", headers=headers, timeout=15
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "completed"
    assert not pg.role_exists(user)
    with pytest.raises(psycopg.OperationalError):
        pg.connect_as(user, creds["data"]["password"])


# ------------------------------------------------------------------- headless Chromium

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Browser:
    """Headless Chromium through ChromeDriver's W3C WebDriver HTTP API (no extra Python
    package: the protocol is JSON over HTTP)."""

    def __init__(self, chromium: str, chromedriver: str, workdir):
        self.port = free_port()
        self.log = open(workdir / "chromedriver.log", "ab")
        self.proc = subprocess.Popen(
            [chromedriver, f"--port={self.port}"], stdout=self.log, stderr=self.log
        )
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if requests.get(f"{self.base}/status", timeout=2).json()["value"]["ready"]:
                    break
            except (requests.RequestException, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "chromedriver did not start"
            time.sleep(0.2)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [
                            "--headless=new",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--disable-dev-shm-usage",
                            "--disable-background-networking",
                            "--disable-extensions",
                            "--no-first-run",
                            f"--user-data-dir={workdir / 'chromium-profile'}",
                        ],
                    },
                }
            }
        }
        r = requests.post(f"{self.base}/session", json=caps, timeout=60)
        assert r.status_code == 200, r.text
        self.session = r.json()["value"]["sessionId"]
        # A click that submits a form returns before the next page has loaded: element
        # lookups wait (up to 15 s) for what they look for instead of failing at once.
        self._call("POST", "/timeouts", {"implicit": 15000})

    def _call(self, method: str, path: str, body=None):
        r = requests.request(
            method, f"{self.base}/session/{self.session}{path}", json=body, timeout=60
        )
        assert r.status_code == 200, f"{method} {path}: {r.text}"
        return r.json()["value"]

    def go(self, url: str) -> None:
        self._call("POST", "/url", {"url": url})

    def find(self, css: str) -> str:
        r = requests.post(
            f"{self.base}/session/{self.session}/element",
            json={"using": "css selector", "value": css},
            timeout=60,
        )
        assert r.status_code == 200, f"no element {css!r} on the page:\n{self.source()}"
        return r.json()["value"][ELEMENT]

    def type(self, css: str, text: str) -> None:
        el = self.find(css)
        self._call("POST", f"/element/{el}/clear", {})
        self._call("POST", f"/element/{el}/value", {"text": text})

    def click(self, css: str) -> None:
        self._call("POST", f"/element/{self.find(css)}/click", {})

    def text(self, css: str) -> str:
        return self._call("GET", f"/element/{self.find(css)}/text")

    def source(self) -> str:
        return self._call("GET", "/source")

    def cookies(self) -> list:
        return self._call("GET", "/cookie")

    def script(self, js: str):
        return self._call("POST", "/execute/sync", {"script": js, "args": []})

    def viewport(self, width: int, height: int, mobile: bool = False) -> None:
        """Emulates a screen of `width`×`height` CSS pixels (a phone with `mobile`)
        through Chrome's DevTools protocol: a real window cannot be made phone-narrow."""
        r = requests.post(
            f"{self.base}/session/{self.session}/goog/cdp/execute",
            json={
                "cmd": "Emulation.setDeviceMetricsOverride",
                "params": {
                    "width": width,
                    "height": height,
                    "deviceScaleFactor": 2 if mobile else 1,
                    "mobile": mobile,
                },
            },
            timeout=60,
        )
        assert r.status_code == 200, r.text

    def screenshot(self, path) -> None:
        """Saves a PNG of the viewport."""
        import base64

        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self._call("GET", "/screenshot")))

    def close(self) -> None:
        try:
            requests.delete(f"{self.base}/session/{self.session}", timeout=30)
        finally:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
            self.log.close()


@pytest.fixture
def browser(tmp_path):
    chromium = os.environ.get("LEASH_CHROMIUM") or shutil.which("chromium")
    driver = os.environ.get("LEASH_CHROMEDRIVER") or shutil.which("chromedriver")
    if not chromium or not driver:
        if os.environ.get("CI") in ("true", "1"):
            pytest.fail("chromium and chromedriver are required in CI (scripts/test installs them)")
        pytest.skip("chromium/chromedriver not installed (scripts/test installs them)")
    b = Browser(chromium, driver, tmp_path)
    yield b
    b.close()


def screenshot_dir(tmp_path):
    """Where the browser tests save their screenshots: `docs/img/` when
    LEASH_UPDATE_SCREENSHOTS=1 (to refresh the ones the docs show), else the test's
    temporary directory."""
    if os.environ.get("LEASH_UPDATE_SCREENSHOTS") == "1":
        from conftest import REPO

        return REPO / "docs" / "img"
    return tmp_path / "screenshots"


def test_the_approval_page_in_headless_chromium(world, pg, browser, tmp_path):  # noqa: F811
    # The agent asks; its justification tries markup, which the page must show as text.
    justification = "migrate <b>orders</b> & rebuild the index"
    r = requests.post(
        f"{world.url}/v1/sys/control-group/request",
        headers={"X-Vault-Token": world.agent},
        json={
            "agent_id": "agent-7",
            "operation": "read",
            "target_resource": f"{world.mount}/creds/agent-readwrite",
            "justification": justification,
            "requested_duration_minutes": 5,
        },
        timeout=15,
    )
    assert r.status_code == 200, r.text
    request_id = r.json()["request_id"]

    browser.go(f"{world.url}/ui/approvals")
    browser.type("#mount", world.up)
    browser.type("#username", "alice")
    browser.type("#password", "alice-passphrase")
    browser.click("#login")

    # The pending request, with its agent, target, operation, duration, justification.
    row = browser.text(f"#req-{request_id}")
    assert "agent-7" in row
    assert f"{world.mount}/creds/agent-readwrite" in row
    assert "read" in row and "5 min" in row
    assert justification in row, row
    assert "<b>" not in browser.script(
        f"return document.querySelector('#req-{request_id}').innerHTML"
    ).replace("&lt;b&gt;", ""), "markup in a justification is escaped"
    # Styled by the one same-origin stylesheet (the CSP allows nothing else), readable
    # on a phone: the table becomes one card per request.
    assert browser.script(
        "return getComputedStyle(document.querySelector('header')).backgroundColor"
    ) == "rgb(20, 32, 46)"
    shots = screenshot_dir(tmp_path)
    browser.viewport(1280, 720)
    browser.screenshot(shots / "approvals-desktop.png")
    browser.viewport(390, 844, mobile=True)
    browser.go(f"{world.url}/ui/approvals")
    assert browser.script(
        f"return getComputedStyle(document.querySelector('#req-{request_id}')).display"
    ) == "block", "on a phone each request is a card"
    assert browser.script("return document.documentElement.scrollWidth <= window.innerWidth")
    browser.screenshot(shots / "approvals-phone.png")
    browser.viewport(1280, 720)
    browser.go(f"{world.url}/ui/approvals")

    # No secret on the page or readable by scripts: the session cookie is HttpOnly.
    page = browser.source()
    assert world.agent not in page and "lsh." not in page
    assert browser.script("return document.cookie") == ""
    assert any(c["name"] == "leash_ui_session" and c["httpOnly"] for c in browser.cookies())

    browser.type(f"#comment-{request_id}", "approved from the browser")
    browser.click(f"#approve-{request_id}")
    assert "Approved request" in browser.text("#flash")

    r = requests.get(
        f"{world.url}/v1/sys/control-group/request/{request_id}",
        headers={"X-Vault-Token": world.agent},
        timeout=15,
    )
    assert r.json()["approved"] is True
    assert r.json()["data"]["decided_by"]["comment"] == "approved from the browser"
    r = requests.get(
        f"{world.url}/v1/{world.mount}/creds/agent-readwrite",
        headers={"X-Vault-Token": world.agent},
        timeout=15,
    )
    assert r.status_code == 200, r.text
    pg.track(r.json()["data"]["username"])
