"""Black-box harness: the real `leash` binary, driven by the real hvac client.

Nothing is built here. scripts/test builds the binary and exports LEASH_BIN; without it
the newest of target/{debug,release}/leash (under CARGO_TARGET_DIR if set, else the
repository's target/) is used.

Fixtures:
  dev_server     one `leash server --dev` for the whole session (random root token)
  root           an hvac.Client holding that server's root token
  make_token     creates a token through the root client and returns its value
  name           a fresh unique name, so tests sharing the session server never collide
  servers        starts extra servers (dev or --config) that are stopped after the test
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from pathlib import Path

import hvac
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = float(os.environ.get("LEASH_START_TIMEOUT", "30"))
HTTP_TIMEOUT = 15

# Variables that would change what the server under test does, or which token hvac
# picks up when none is given. The tests always say what they mean.
_SCRUB = (
    "LEASH_SEAL_KEY",
    "LEASH_DEV_ROOT_TOKEN_ID",
    "LEASH_ADDR",
    "LEASH_TOKEN",
    "VAULT_ADDR",
    "VAULT_TOKEN",
    "VAULT_CACERT",
)
for _k in _SCRUB:
    os.environ.pop(_k, None)


def find_binary() -> Path:
    env = os.environ.get("LEASH_BIN")
    if env:
        p = Path(env)
        if not (p.is_file() and os.access(p, os.X_OK)):
            raise RuntimeError(f"LEASH_BIN={env} is not an executable file")
        return p
    roots = []
    if os.environ.get("CARGO_TARGET_DIR"):
        roots.append(Path(os.environ["CARGO_TARGET_DIR"]))
    roots.append(REPO / "target")
    found = [r / prof / "leash" for r in roots for prof in ("debug", "release")]
    found = [p for p in found if p.is_file()]
    if not found:
        raise RuntimeError(
            "no leash binary found: run `cargo build -p leash` (scripts/test does) "
            "or set LEASH_BIN=/path/to/leash"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


class ServerStartError(RuntimeError):
    pass


class LeashServer:
    """A `leash server` child process. stdout is read line by line on a thread (so the
    pipe never fills); stderr goes to a log file next to the server's files."""

    def __init__(self, binary: Path, args: list[str], workdir: Path, label: str):
        self.args = [str(binary), "server", *args]
        self.workdir = workdir
        self.label = label
        self.url: str | None = None
        self.root_token: str | None = None
        self.stderr_path = workdir / f"{label}.stderr.log"
        self._stderr = open(self.stderr_path, "ab")
        self._lines: list[str] = []
        self._eof = False
        self._cond = threading.Condition()
        env = dict(os.environ)
        env.setdefault("LEASH_LOG", "info")
        self.proc = subprocess.Popen(
            self.args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            cwd=workdir,
            env=env,
            text=True,
            bufsize=1,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self._lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    @property
    def stdout(self) -> str:
        with self._cond:
            return "\n".join(self._lines)

    @property
    def stderr(self) -> str:
        self._stderr.flush()
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def describe(self) -> str:
        return (
            f"command: {' '.join(self.args)}\n"
            f"exit code: {self.proc.poll()}\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        """Waits until a stdout line matches; fails fast if the server exits first."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        seen = 0
        with self._cond:
            while True:
                for line in self._lines[seen:]:
                    m = rx.search(line)
                    if m:
                        return m
                seen = len(self._lines)
                if self._eof:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.2))
        # Give the process a moment to report its exit code in the message.
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            pass
        raise ServerStartError(
            f"leash server ({self.label}) did not print a line matching {pattern!r} "
            f"within {timeout:.0f}s.\n{self.describe()}"
        )

    def wait_ready(self, expect_root_token: bool | None) -> "LeashServer":
        """Waits for the banner. expect_root_token: True → must print one (first start,
        dev); False → must not (restart); None → take one if printed."""
        self.url = self.wait_for(r"Listening on:\s*(\S+)").group(1)
        if expect_root_token:
            self.root_token = self.wait_for(r"Root Token:\s*(\S+)").group(1)
        else:
            # The banner is printed in one piece before the server accepts requests, so
            # once it answers, every banner line has been written.
            self.wait_http()
            self._drain()
            m = re.search(r"Root Token:\s*(\S+)", self.stdout)
            if m:
                if expect_root_token is False:
                    raise AssertionError(
                        f"{self.label}: a root token was printed on a restart\n{self.describe()}"
                    )
                self.root_token = m.group(1)
        return self

    def _drain(self) -> None:
        # Let the reader thread catch up with what is already in the pipe.
        time.sleep(0.3)

    def wait_http(self, verify=True, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(f"{self.label} exited.\n{self.describe()}")
            try:
                requests.get(f"{self.url}/v1/sys/health", timeout=2, verify=verify)
                return
            except requests.RequestException as e:  # not up yet
                last = e
                time.sleep(0.1)
        raise ServerStartError(f"{self.label} never answered: {last}\n{self.describe()}")

    def client(self, token: str | None = None, **kw) -> hvac.Client:
        return hvac.Client(
            url=self.url, token=token if token is not None else self.root_token,
            timeout=HTTP_TIMEOUT, **kw
        )

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL if it does not stop in time. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self._stderr.close()
        return self.proc.returncode

    def wait_exit(self, timeout: float = START_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.label} was expected to exit but is still running\n{self.describe()}"
            ) from None


class ServerFactory:
    def __init__(self, binary: Path, base: Path):
        self.binary = binary
        self.base = base
        self.started: list[LeashServer] = []
        self._n = 0

    def _workdir(self, label: str) -> Path:
        self._n += 1
        d = self.base / f"{self._n:02d}-{label}"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def spawn(self, args: list[str], label: str, workdir: Path | None = None) -> LeashServer:
        s = LeashServer(self.binary, args, workdir or self._workdir(label), label)
        self.started.append(s)
        return s

    def dev(self, label: str = "dev") -> LeashServer:
        token = "dev-root-" + secrets.token_hex(12)
        s = self.spawn(
            [
                "--dev",
                "--dev-listen-address",
                "127.0.0.1:0",
                "--dev-root-token-id",
                token,
            ],
            label,
        )
        s.wait_ready(expect_root_token=True)
        assert s.root_token == token, f"dev root token printed as {s.root_token!r}"
        return s

    def config(self, config_path: Path, label: str, expect_root_token: bool | None) -> LeashServer:
        s = self.spawn(["--config", str(config_path)], label, workdir=config_path.parent)
        s.wait_ready(expect_root_token=expect_root_token)
        return s

    def stop_all(self) -> None:
        for s in self.started:
            s.stop()


@pytest.fixture(scope="session")
def leash_bin() -> Path:
    return find_binary()


@pytest.fixture(scope="session")
def dev_server(leash_bin, tmp_path_factory):
    factory = ServerFactory(leash_bin, tmp_path_factory.mktemp("session-server"))
    server = factory.dev("session")
    yield server
    alive = server.proc.poll() is None
    factory.stop_all()
    assert alive, f"the session server died during the run\n{server.describe()}"


@pytest.fixture
def servers(leash_bin, tmp_path):
    factory = ServerFactory(leash_bin, tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def root(dev_server) -> hvac.Client:
    return dev_server.client()


@pytest.fixture
def name() -> str:
    return "t" + secrets.token_hex(5)


@pytest.fixture
def make_token(root):
    def make(policies=None, **kw) -> str:
        resp = root.auth.token.create(policies=policies, **kw)
        return resp["auth"]["client_token"]

    return make


def raw(server: LeashServer, method: str, path: str, token: str | None = None, **kw):
    """A plain HTTP request, for what hvac hides: status codes, headers, raw bodies."""
    headers = dict(kw.pop("headers", {}) or {})
    if token is not None:
        headers["X-Vault-Token"] = token
    kw.setdefault("timeout", HTTP_TIMEOUT)
    return requests.request(method, f"{server.url}/v1/{path}", headers=headers, **kw)


@pytest.fixture
def http(dev_server):
    """raw() bound to the session server: http("GET", "sys/health", token=...)."""

    def call(method: str, path: str, token: str | None = None, **kw):
        return raw(dev_server, method, path, token, **kw)

    return call
