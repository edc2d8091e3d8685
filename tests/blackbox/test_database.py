"""The `database` secrets engine and `sys/leases/*`, through hvac, against the real
PostgreSQL and MariaDB of this machine — what a Vault user (an operator configuring the
engine, an agent asking for credentials) does, checked from both sides: what leash
answers, and what the target database then holds.

Every test works in its own database (`lbb<hex>`) on its own mount (from the `name`
fixture), so tests share the session server and never see each other's leases or roles.
Each cleans up after itself: the mount is disabled (which revokes its leases), then every
role/user the test was issued, anything starting with its prefix, and anything still
holding privileges in its database is dropped, and the database with it.

Where the databases are: LEASH_TEST_POSTGRES_URL / LEASH_TEST_MYSQL_URL (scripts/test
exports them), else postgresql://postgres@127.0.0.1:5432/test and
mysql://root@127.0.0.1:3306/test. A database that cannot be reached skips its tests,
except under CI, where it fails them.

Note on passwords: this machine's PostgreSQL trusts every 127.0.0.1 connection
(pg_hba `trust`), so logging in does not by itself prove a password right. The tests
therefore also check the password against the SCRAM verifier stored in pg_authid.
MariaDB does check passwords, so a wrong one is shown to fail there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
import time
from contextlib import suppress
from datetime import datetime, timedelta, timezone
from urllib.parse import unquote, urlsplit

import hvac
import hvac.exceptions
import psycopg
import psycopg.errors
import pymysql
import pytest
from psycopg import sql

PG_URL = os.environ.get("LEASH_TEST_POSTGRES_URL") or "postgresql://postgres@127.0.0.1:5432/test"
MY_URL = os.environ.get("LEASH_TEST_MYSQL_URL") or "mysql://root@127.0.0.1:3306/test"
IN_CI = os.environ.get("CI", "") in ("true", "1")

ROLE = "agent-readonly"

# The role of the brief, verbatim.
CREATION = [
    "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';",
    'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{{name}}";',
]
REVOCATION = ['DROP ROLE IF EXISTS "{{name}}";']

POLL_LIMIT = 15.0


# --------------------------------------------------------------------------- helpers


def wait_until(predicate, what: str, timeout: float = POLL_LIMIT, interval: float = 0.2):
    """Polls `predicate` until it returns something truthy (returned), at most `timeout`s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def unreachable(what: str, err: Exception):
    msg = f"{what} is not reachable ({err}); scripts/test starts it"
    if IN_CI:
        pytest.fail(msg)
    pytest.skip(msg)


def scram_matches(verifier: str, password: str) -> bool:
    """Whether `password` matches a PostgreSQL `SCRAM-SHA-256$<iter>:<salt>$<stored>:<server>`
    verifier (RFC 5802/7677; generated passwords are ASCII, so SASLprep is the identity)."""
    mech, rest = verifier.split("$", 1)
    assert mech == "SCRAM-SHA-256", f"not a SCRAM verifier: {verifier[:20]}…"
    params, keys = rest.split("$", 1)
    iterations, salt = params.split(":", 1)
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":", 1))
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(salt), int(iterations))
    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
    return (
        hashlib.sha256(client_key).digest() == stored_key
        and hmac.new(salted, b"Server Key", hashlib.sha256).digest() == server_key
    )


def status_of(resp) -> int:
    """hvac returns a dict for 200 and the requests.Response otherwise."""
    return 200 if isinstance(resp, dict) else resp.status_code


# --------------------------------------------------------------------------- PostgreSQL


class Pg:
    """One test's PostgreSQL world: database `lbb<hex>` with
    public.items (readable by issued roles) and private.secrets (not)."""

    def __init__(self):
        u = urlsplit(PG_URL)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 5432
        self.admin_user = unquote(u.username or "postgres")
        self.admin_password = unquote(u.password) if u.password else None
        self.maint_db = (u.path or "/").lstrip("/") or "postgres"
        self.prefix = "lbb" + secrets.token_hex(5)
        self.db = self.prefix
        self.issued: set[str] = set()
        self.extra: list[tuple[str, psycopg.Connection]] = []
        try:
            self.maint = self._connect(self.maint_db)
        except psycopg.OperationalError as e:
            unreachable(f"PostgreSQL at {self.host}:{self.port}", e)
        self.maint.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.db)))
        self.conn = self._connect(self.db)
        self.conn.execute(
            """
            REVOKE CREATE ON SCHEMA public FROM PUBLIC;
            CREATE TABLE public.items (id int PRIMARY KEY, label text NOT NULL);
            INSERT INTO public.items VALUES (1, 'one'), (2, 'two'), (3, 'three');
            CREATE SCHEMA private;
            CREATE TABLE private.secrets (v text);
            INSERT INTO private.secrets VALUES ('do not read');
            """
        )

    def _connect(self, db, user=None, password=None):
        return psycopg.connect(
            host=self.host,
            port=self.port,
            dbname=db,
            user=user or self.admin_user,
            password=password if user else self.admin_password,
            autocommit=True,
            connect_timeout=5,
        )

    def connection_url(self, port: int | None = None) -> str:
        return (
            f"postgresql://{{{{username}}}}:{{{{password}}}}@{self.host}:{port or self.port}"
            f"/{self.db}?sslmode=disable"
        )

    def connect_as(self, user: str, password: str) -> psycopg.Connection:
        return self._connect(self.db, user, password)

    def extra_database(self) -> psycopg.Connection:
        """A second database of this test (dropped at the end), connected as admin."""
        db = f"{self.prefix}x{len(self.extra)}"
        self.maint.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)))
        conn = self._connect(db)
        self.extra.append((db, conn))
        return conn

    def track(self, username: str) -> str:
        self.issued.add(username)
        return username

    def role(self, user: str):
        """(rolcanlogin, rolvaliduntil, rolpassword) of `user`, or None if it does not exist."""
        return self.conn.execute(
            "SELECT rolcanlogin, rolvaliduntil, rolpassword FROM pg_catalog.pg_authid WHERE rolname = %s",
            (user,),
        ).fetchone()

    def role_exists(self, user: str) -> bool:
        return self.role(user) is not None

    def drop_role(self, user: str) -> None:
        ident = sql.Identifier(user)
        with suppress(psycopg.Error):
            self.conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
        self.conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))

    def leftovers(self) -> set[str]:
        """Roles this test made: issued ones, its prefix, and any role holding
        privileges or objects in its database."""
        rows = self.conn.execute(
            """
            SELECT DISTINCT r.rolname FROM pg_catalog.pg_shdepend d
              JOIN pg_catalog.pg_roles r ON r.oid = d.refobjid
             WHERE d.dbid = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database())
               AND d.refclassid = 'pg_catalog.pg_authid'::regclass
            UNION
            SELECT rolname FROM pg_catalog.pg_roles WHERE starts_with(rolname, %s)
            """,
            (self.prefix,),
        ).fetchall()
        found = {r[0] for r in rows} | self.issued
        return {r for r in found if r != self.admin_user and self.role_exists(r)}

    def close(self) -> None:
        # Extra databases first: dropping them drops whatever privileges roles hold there.
        for db, conn in self.extra:
            with suppress(psycopg.Error):
                conn.close()
            self.maint.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
        try:
            for r in sorted(self.leftovers()):
                with suppress(psycopg.Error):
                    self.drop_role(r)
        finally:
            with suppress(psycopg.Error):
                self.conn.close()
            self.maint.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.db))
            )
            self.maint.close()


@pytest.fixture
def pg():
    world = Pg()
    yield world
    world.close()


@pytest.fixture
def mount(root, name):
    """A database engine mounted at a path of this test's own; disabled afterwards
    (which revokes what it issued; if that fails the records are forced out)."""
    path = f"{name}-db"
    root.sys.enable_secrets_engine("database", path=path)
    yield path
    try:
        root.sys.disable_secrets_engine(path)
    except hvac.exceptions.VaultError:
        with suppress(hvac.exceptions.VaultError):
            root.sys.revoke_force(f"{path}/")
        root.sys.disable_secrets_engine(path)


@pytest.fixture
def pg_engine(root, pg, mount):
    """`mount` with connection `pg` configured for this test's PostgreSQL database and
    every role allowed. Teardown order: the mount goes (revoking leases) before the
    database is dropped."""
    root.secrets.database.configure(
        "pg",
        plugin_name="postgresql-database-plugin",
        connection_url=pg.connection_url(),
        username=pg.admin_user,
        password=pg.admin_password or "ignored-by-trust-auth",
        allowed_roles=["*"],
        mount_point=mount,
    )
    return mount


def make_role(root, mount, name=ROLE, *, creation=CREATION, revocation=REVOCATION,
              default_ttl="15m", max_ttl="1h", db_name="pg"):
    return root.secrets.database.create_role(
        name,
        db_name=db_name,
        creation_statements=creation,
        revocation_statements=revocation,
        default_ttl=default_ttl,
        max_ttl=max_ttl,
        mount_point=mount,
    )


def issue(client, mount, pg_or_my, role=ROLE):
    """generate_credentials, remembering the username for cleanup."""
    creds = client.secrets.database.generate_credentials(role, mount_point=mount)
    pg_or_my.track(creds["data"]["username"])
    return creds


def lease_keys(root, prefix) -> list[str]:
    """LIST sys/leases/lookup/<prefix> keys; [] when there are none (404)."""
    try:
        return root.sys.list_leases(prefix)["data"]["keys"]
    except hvac.exceptions.InvalidPath:
        return []


# --------------------------------------------------------------------------- 1. issue


def test_postgres_credentials_are_least_privilege(root, pg, mount):
    r = root.secrets.database.configure(
        "pg",
        plugin_name="postgresql-database-plugin",
        connection_url=pg.connection_url(),
        username=pg.admin_user,
        password="anything",
        allowed_roles=[ROLE],
        mount_point=mount,
    )
    assert status_of(r) in (200, 204)

    make_role(root, mount, creation=CREATION, revocation=REVOCATION)
    before = datetime.now(timezone.utc)
    creds = issue(root, mount, pg)

    assert creds["lease_id"].startswith(f"{mount}/creds/{ROLE}/"), creds["lease_id"]
    assert creds["lease_duration"] == 900
    assert creds["renewable"] is True
    user, password = creds["data"]["username"], creds["data"]["password"]
    assert len(user) <= 63, user
    assert "agent-re" in user, f"the username names the role it came from: {user}"
    assert password and password not in user

    canlogin, valid_until, verifier = pg.role(user)
    assert canlogin is True
    # VALID UNTIL is {{expiration}}: now + the lease's 15 minutes.
    assert abs(valid_until - (before + timedelta(seconds=900))) < timedelta(seconds=30), valid_until
    # The database holds a SCRAM verifier of exactly the password handed out, never
    # the plaintext.
    assert verifier.startswith("SCRAM-SHA-256$"), verifier[:16]
    assert password not in verifier
    assert scram_matches(verifier, password)
    assert not scram_matches(verifier, password + "x")

    with pg.connect_as(user, password) as c:
        assert c.execute("SELECT current_user").fetchone()[0] == user
        rows = c.execute("SELECT id, label FROM public.items ORDER BY id").fetchall()
        assert rows == [(1, "one"), (2, "two"), (3, "three")]
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("INSERT INTO public.items VALUES (4, 'four')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("CREATE TABLE public.mine (x int)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("SELECT v FROM private.secrets")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            c.execute("UPDATE public.items SET label = 'x'")

    # Two issuances never share a username or password.
    other = issue(root, mount, pg)
    assert other["data"]["username"] != user
    assert other["data"]["password"] != password
    assert other["lease_id"] != creds["lease_id"]


# --------------------------------------------------------------------------- 2. reads


def test_connection_and_role_reads(root, pg, mount):
    literal = "root-pw-" + secrets.token_hex(8)
    root.secrets.database.configure(
        "pg",
        plugin_name="postgresql-database-plugin",
        connection_url=pg.connection_url(),
        username=pg.admin_user,
        password=literal,
        allowed_roles=[ROLE, "other-*"],
        mount_point=mount,
    )

    conn = root.secrets.database.read_connection("pg", mount_point=mount)
    assert literal not in json.dumps(conn), "the connection's password is never returned"
    data = conn["data"]
    assert data["plugin_name"] == "postgresql-database-plugin"
    assert data["allowed_roles"] == [ROLE, "other-*"]
    details = data["connection_details"]
    assert details["username"] == pg.admin_user
    assert details["connection_url"] == pg.connection_url()
    assert "password" not in details
    assert data["verify_connection"] is True

    assert root.secrets.database.list_connections(mount_point=mount)["data"]["keys"] == ["pg"]

    r = make_role(root, mount, creation=CREATION, revocation=REVOCATION)
    assert status_of(r) in (200, 204)
    role = root.secrets.database.read_role(ROLE, mount_point=mount)
    d = role["data"]
    assert d["db_name"] == "pg"
    assert d["creation_statements"] == CREATION
    assert d["revocation_statements"] == REVOCATION
    assert d["rollback_statements"] == []
    assert d["renew_statements"] == []
    assert d["default_ttl"] == 900
    assert d["max_ttl"] == 3600
    assert d["credential_type"] == "password"
    warnings = role["warnings"] or []
    assert any("grant" in w.lower() and "table" in w.lower() for w in warnings), (
        f"direct per-credential table grants deserve a warning: {warnings}"
    )

    # A role that grants a group role instead draws no such warning.
    root.secrets.database.create_role(
        "other-group",
        db_name="pg",
        creation_statements=[
            "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}' IN ROLE pg_read_all_data;"
        ],
        mount_point=mount,
    )
    quiet = root.secrets.database.read_role("other-group", mount_point=mount)
    assert not quiet["warnings"], quiet["warnings"]
    assert quiet["data"]["default_ttl"] == 0 and quiet["data"]["max_ttl"] == 0

    assert sorted(root.secrets.database.list_roles(mount_point=mount)["data"]["keys"]) == [
        ROLE,
        "other-group",
    ]
    root.secrets.database.delete_role("other-group", mount_point=mount)
    with pytest.raises(hvac.exceptions.InvalidPath):
        root.secrets.database.read_role("other-group", mount_point=mount)
    assert root.secrets.database.list_roles(mount_point=mount)["data"]["keys"] == [ROLE]

    # A role outside allowed_roles is stored (with a warning) but cannot issue.
    w = root.secrets.database.create_role(
        "not-allowed", db_name="pg", creation_statements=CREATION, mount_point=mount
    )
    assert isinstance(w, dict) and any("allowed_roles" in x for x in w["warnings"]), w
    # Vault answers this with 500; leash with 400 (see the report). Either way it is
    # refused, and says why.
    with pytest.raises((hvac.exceptions.InvalidRequest, hvac.exceptions.InternalServerError)) as e:
        root.secrets.database.generate_credentials("not-allowed", mount_point=mount)
    assert "allowed" in str(e.value), e.value

    # reset_connection reopens the connection; issuing works afterwards.
    r = root.secrets.database.reset_connection("pg", mount_point=mount)
    assert status_of(r) == 204
    creds = issue(root, mount, pg)
    assert pg.role_exists(creds["data"]["username"])


def test_literal_password_in_connection_url_is_redacted(root, pg, mount):
    literal = "lit" + secrets.token_hex(8)
    url = pg.connection_url().replace("{{username}}:{{password}}", f"{pg.admin_user}:{literal}")
    root.secrets.database.configure(
        "pg",
        plugin_name="postgresql-database-plugin",
        connection_url=url,
        allowed_roles=[ROLE],
        mount_point=mount,
    )
    conn = root.secrets.database.read_connection("pg", mount_point=mount)
    assert literal not in json.dumps(conn)
    assert "[redacted]" in conn["data"]["connection_details"]["connection_url"]
    # The stored URL still works: credentials are issued through it.
    make_role(root, mount)
    creds = issue(root, mount, pg)
    assert pg.role_exists(creds["data"]["username"])


def test_rotate_root_credentials_postgres(root, pg, mount):
    admin = pg.prefix + "_admin"
    initial = "initial-" + secrets.token_hex(8)
    pg.maint.execute(
        sql.SQL("CREATE ROLE {} WITH LOGIN SUPERUSER PASSWORD {}").format(
            sql.Identifier(admin), sql.Literal(initial)
        )
    )
    root.secrets.database.configure(
        "pg",
        plugin_name="postgresql-database-plugin",
        connection_url=pg.connection_url(),
        username=admin,
        password=initial,
        allowed_roles=[ROLE],
        mount_point=mount,
    )
    before = pg.role(admin)[2]
    assert scram_matches(before, initial)

    r = root.secrets.database.rotate_root_credentials("pg", mount_point=mount)
    assert status_of(r) == 204
    after = pg.role(admin)[2]
    assert after != before and after.startswith("SCRAM-SHA-256$")
    assert not scram_matches(after, initial), "the old root password no longer matches"
    conn = root.secrets.database.read_connection("pg", mount_point=mount)
    assert initial not in json.dumps(conn)

    # The engine goes on working with the password only it knows.
    make_role(root, mount)
    creds = issue(root, mount, pg)
    assert pg.role_exists(creds["data"]["username"])
    root.sys.revoke_lease(creds["lease_id"])
    assert not pg.role_exists(creds["data"]["username"])


# --------------------------------------------------------------------------- 3. leases


def test_lease_lookup_list_renew_revoke(root, pg, pg_engine):
    mount = pg_engine
    make_role(root, mount)
    creds = issue(root, mount, pg)
    lease_id, user = creds["lease_id"], creds["data"]["username"]
    suffix = lease_id.rsplit("/", 1)[1]

    looked = root.sys.read_lease(lease_id)["data"]
    assert looked["id"] == lease_id
    assert looked["renewable"] is True
    assert 890 <= looked["ttl"] <= 900
    assert looked["issue_time"] and looked["expire_time"]
    assert looked["last_renewal"] is None

    assert lease_keys(root, f"{mount}/creds/{ROLE}/") == [suffix]
    assert lease_keys(root, f"{mount}/creds/") == [f"{ROLE}/"]

    # Renew beyond max_ttl: capped at the role's 1h, with a warning.
    r = root.sys.renew_lease(lease_id, increment=7200)
    assert r["lease_id"] == lease_id
    assert r["renewable"] is True
    assert 3500 <= r["lease_duration"] <= 3600, r
    assert r["warnings"] and any("capped" in w for w in r["warnings"]), r["warnings"]
    # The credential's own expiry moved with the lease.
    valid_until = pg.role(user)[1]
    now = datetime.now(timezone.utc)
    assert abs(valid_until - (now + timedelta(seconds=r["lease_duration"]))) < timedelta(seconds=30)
    looked = root.sys.read_lease(lease_id)["data"]
    assert looked["last_renewal"]
    assert 3500 <= looked["ttl"] <= 3600

    # A renewal within bounds is granted as asked, without warnings.
    r = root.sys.renew_lease(lease_id, increment=600)
    assert 595 <= r["lease_duration"] <= 600
    assert not r["warnings"], r["warnings"]

    r = root.sys.revoke_lease(lease_id)
    assert status_of(r) == 204
    assert not pg.role_exists(user), "revocation drops the role at once"
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(lease_id)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.renew_lease(lease_id)
    assert lease_keys(root, f"{mount}/creds/{ROLE}/") == []
    # Revoking again (an unknown lease) succeeds, as in Vault.
    assert status_of(root.sys.revoke_lease(lease_id)) == 204


def test_revoke_prefix_revokes_every_lease_under_it(root, pg, pg_engine):
    mount = pg_engine
    make_role(root, mount)
    make_role(root, mount, "other")
    mine = [issue(root, mount, pg) for _ in range(3)]
    other = issue(root, mount, pg, "other")
    users = [c["data"]["username"] for c in mine]
    assert all(pg.role_exists(u) for u in users)
    assert len(lease_keys(root, f"{mount}/creds/{ROLE}/")) == 3

    r = root.sys.revoke_prefix(f"{mount}/creds/{ROLE}")
    assert status_of(r) == 204
    assert not any(pg.role_exists(u) for u in users)
    assert lease_keys(root, f"{mount}/creds/{ROLE}/") == []
    # Leases outside the prefix are untouched.
    assert pg.role_exists(other["data"]["username"])
    assert root.sys.read_lease(other["lease_id"])["data"]["id"] == other["lease_id"]


def test_revoke_force_drops_records_but_not_the_credentials(root, pg, pg_engine):
    mount = pg_engine
    make_role(root, mount)
    creds = issue(root, mount, pg)
    user = creds["data"]["username"]

    r = root.sys.revoke_force(f"{mount}/creds/{ROLE}")
    assert status_of(r) in (200, 204)
    if isinstance(r, dict):
        assert r["warnings"], "forcing says what it left behind"
    assert lease_keys(root, f"{mount}/creds/{ROLE}/") == []
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(creds["lease_id"])

    # leash's revoke-force drops the lease records WITHOUT running the revocation
    # statements (Vault attempts revocation and ignores its errors): the role survives
    # in PostgreSQL and must be removed by hand — as done here.
    assert pg.role_exists(user), "revoke-force does not touch the target database"
    pg.drop_role(user)
    assert not pg.role_exists(user)


def test_role_with_table_grants_is_dropped_by_its_drop_role_statement(root, pg, pg_engine):
    """The brief's role revokes with `DROP ROLE` alone, which PostgreSQL refuses while
    the role still holds table privileges (2BP01). leash strips those first, so the
    statement works as an operator expects."""
    mount = pg_engine
    make_role(root, mount, creation=CREATION, revocation=REVOCATION)
    creds = issue(root, mount, pg)
    user = creds["data"]["username"]
    assert pg.conn.execute(
        "SELECT has_table_privilege(%s, 'public.items', 'SELECT')", (user,)
    ).fetchone()[0]
    assert status_of(root.sys.revoke_lease(creds["lease_id"])) == 204
    assert not pg.role_exists(user)


def test_failing_revocation_keeps_the_lease_until_it_succeeds(root, pg, pg_engine):
    """A revocation that the database refuses is not lost: it is reported (502, with
    the database's reason), the lease stays and can no longer be renewed, and it is
    retried until it succeeds. The obstacle here is one leash cannot remove from its
    connection: a privilege in *another* database of the cluster (DROP OWNED acts on
    the connected database only)."""
    mount = pg_engine
    make_role(root, mount, creation=CREATION, revocation=REVOCATION)
    creds = issue(root, mount, pg)
    lease_id, user = creds["lease_id"], creds["data"]["username"]
    other = pg.extra_database()
    other.execute("CREATE TABLE elsewhere (x int)")
    other.execute(sql.SQL("GRANT SELECT ON elsewhere TO {}").format(sql.Identifier(user)))

    with pytest.raises(hvac.exceptions.VaultError) as e:
        root.sys.revoke_lease(lease_id)
    msg = str(e.value)
    assert isinstance(e.value, hvac.exceptions.BadGateway), f"{type(e.value).__name__}: {msg}"
    assert "2BP01" in msg and "retried" in msg, msg
    assert pg.role_exists(user)
    looked = root.sys.read_lease(lease_id)["data"]
    assert looked["renewable"] is False, "a lease being revoked cannot be renewed back"
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.renew_lease(lease_id)
    assert lease_keys(root, f"{mount}/creds/{ROLE}/") == [lease_id.rsplit("/", 1)[1]]

    # Remove the obstacle; the retried revocation then goes through on its own.
    other.execute(sql.SQL("REVOKE ALL ON elsewhere FROM {}").format(sql.Identifier(user)))
    wait_until(lambda: not pg.role_exists(user), "the retried revocation to drop the role")
    wait_until(
        lambda: lease_keys(root, f"{mount}/creds/{ROLE}/") == [], "the revoked lease to disappear"
    )
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(lease_id)


# --------------------------------------------------------------------------- 4-5. agents


@pytest.fixture
def agent(dev_server, root, name, pg_engine):
    """An agent token: read on <mount>/creds/agent-readonly plus the default policy."""
    mount = pg_engine
    root.sys.create_or_update_policy(
        name, f'path "{mount}/creds/{ROLE}" {{ capabilities = ["read"] }}'
    )
    auth = root.auth.token.create(policies=[name], ttl="1h", display_name="summariser")["auth"]
    assert sorted(auth["policies"]) == sorted(["default", name])
    yield auth["client_token"], dev_server.client(auth["client_token"])
    with suppress(hvac.exceptions.VaultError):
        root.auth.token.revoke(auth["client_token"])
    with suppress(hvac.exceptions.VaultError):
        root.sys.delete_policy(name)


def test_agent_issues_and_renews_its_own_credentials_only(root, pg, pg_engine, agent):
    mount = pg_engine
    _, client = agent
    make_role(root, mount)

    creds = issue(client, mount, pg)
    lease_id, user = creds["lease_id"], creds["data"]["username"]
    assert lease_id.startswith(f"{mount}/creds/{ROLE}/")
    assert creds["lease_duration"] == 900
    assert pg.role_exists(user)
    with pg.connect_as(user, creds["data"]["password"]) as c:
        assert c.execute("SELECT count(*) FROM public.items").fetchone()[0] == 3

    # The default policy lets it look up and renew its own lease.
    assert client.sys.read_lease(lease_id)["data"]["id"] == lease_id
    r = client.sys.renew_lease(lease_id, increment=1200)
    assert 1195 <= r["lease_duration"] <= 1200

    # Nothing else.
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.revoke_prefix(f"{mount}/creds/{ROLE}")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.revoke_force(f"{mount}/creds/{ROLE}")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.list_leases(f"{mount}/creds/{ROLE}/")
    with pytest.raises(hvac.exceptions.Forbidden):
        client.sys.revoke_lease(lease_id)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.database.read_role(ROLE, mount_point=mount)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.database.read_connection("pg", mount_point=mount)
    with pytest.raises(hvac.exceptions.Forbidden):
        client.secrets.database.rotate_root_credentials("pg", mount_point=mount)
    assert pg.role_exists(user), "the denied calls changed nothing"
    assert root.sys.read_lease(lease_id)["data"]["renewable"] is True


def test_revoking_the_agent_token_revokes_its_credentials(root, pg, pg_engine, agent):
    mount = pg_engine
    token, client = agent
    make_role(root, mount)
    mine = [issue(client, mount, pg) for _ in range(2)]
    theirs = issue(root, mount, pg)
    users = [c["data"]["username"] for c in mine]
    assert all(pg.role_exists(u) for u in users)

    root.auth.token.revoke(token)
    wait_until(lambda: not any(pg.role_exists(u) for u in users), "the agent's roles to be dropped")
    wait_until(
        lambda: lease_keys(root, f"{mount}/creds/{ROLE}/") == [theirs["lease_id"].rsplit("/", 1)[1]],
        "only the root token's lease to remain",
    )
    assert pg.role_exists(theirs["data"]["username"]), "other tokens' credentials are untouched"


# --------------------------------------------------------------------------- 6. expiry


def test_expired_lease_drops_the_role_and_ends_its_sessions(root, pg, pg_engine):
    mount = pg_engine
    # No revocation_statements: leash's default (end sessions, REASSIGN/DROP OWNED,
    # DROP ROLE) handles a role with table grants.
    make_role(root, mount, "short", revocation=None, default_ttl="2s", max_ttl="1m")
    creds = issue(root, mount, pg, "short")
    assert creds["lease_duration"] == 2
    user = creds["data"]["username"]

    session = pg.connect_as(user, creds["data"]["password"])
    try:
        assert session.execute("SELECT count(*) FROM public.items").fetchone()[0] == 3
        wait_until(lambda: not pg.role_exists(user), "the expired credential's role to be dropped")
        with pytest.raises(psycopg.OperationalError):
            session.execute("SELECT 1")
    finally:
        session.close()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(creds["lease_id"])


# --------------------------------------------------------------------------- 7. errors


def test_malformed_definitions_are_refused_with_reasons(root, pg, pg_engine):
    mount = pg_engine
    db = root.secrets.database

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.create_role("r", db_name="nosuchdb", creation_statements=CREATION, mount_point=mount)
    assert "nosuchdb" in str(e.value) and "db_name" in str(e.value), e.value

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.create_role(
            "r",
            db_name="pg",
            creation_statements=['CREATE ROLE "{{name}}" PASSWORD \'{{nope}}\';'],
            mount_point=mount,
        )
    assert "{{nope}}" in str(e.value) and "creation_statements" in str(e.value), e.value

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.create_role(
            "r", db_name="pg", creation_statements=CREATION, default_ttl="2h", max_ttl="1h",
            mount_point=mount,
        )
    assert "default_ttl" in str(e.value) and "max_ttl" in str(e.value), e.value

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.create_role("r", db_name="pg", creation_statements=None, mount_point=mount)
    assert "creation_statements" in str(e.value), e.value

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.create_role("r", db_name="pg", creation_statements=[], mount_point=mount)
    assert "creation_statements" in str(e.value), e.value

    # None of the refused definitions was stored.
    with pytest.raises(hvac.exceptions.InvalidPath):
        db.read_role("r", mount_point=mount)

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.configure(
            "weird",
            plugin_name="mongodb-database-plugin",
            connection_url="mongodb://{{username}}:{{password}}@127.0.0.1:27017/admin",
            username="x",
            password="y",
            mount_point=mount,
        )
    # The field is named; the refused value is not repeated.
    assert "plugin_name" in str(e.value), e.value
    assert "mongodb-database-plugin" not in str(e.value), e.value

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.generate_credentials("nosuchrole", mount_point=mount)
    assert "nosuchrole" in str(e.value), e.value

    assert db.list_connections(mount_point=mount)["data"]["keys"] == ["pg"]


def test_configure_with_unreachable_database_says_why(root, pg, mount):
    """verify_connection: an unreachable database is refused at configure time with the
    driver's reason, and the password is not in the message."""
    db = root.secrets.database
    secret_pw = "sekrit-" + secrets.token_hex(8)
    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.configure(
            "badport",
            plugin_name="postgresql-database-plugin",
            connection_url=pg.connection_url(port=1),
            username=pg.admin_user,
            password=secret_pw,
            allowed_roles=["*"],
            mount_point=mount,
        )
    pg_msg = str(e.value)

    with pytest.raises(hvac.exceptions.InvalidRequest) as e:
        db.configure(
            "badport-my",
            plugin_name="mysql-database-plugin",
            connection_url="{{username}}:{{password}}@tcp(127.0.0.1:1)/",
            username="root",
            password=secret_pw,
            allowed_roles=["*"],
            mount_point=mount,
        )
    my_msg = str(e.value)

    for msg in (pg_msg, my_msg):
        assert secret_pw not in msg, "the password never appears in an error"
    # Nothing was stored.
    for conn in ("badport", "badport-my"):
        with pytest.raises(hvac.exceptions.InvalidPath):
            db.read_connection(conn, mount_point=mount)
    # The driver's reason (ECONNREFUSED) is what an operator needs to fix it.
    assert "refused" in my_msg.lower(), my_msg
    assert "refused" in pg_msg.lower(), pg_msg


# --------------------------------------------------------------------------- 8. MariaDB


class My:
    """One test's MariaDB world: database `lbb<hex>` with table items."""

    def __init__(self):
        u = urlsplit(MY_URL)
        self.host = u.hostname or "127.0.0.1"
        self.port = u.port or 3306
        self.admin_user = unquote(u.username or "root")
        self.admin_password = unquote(u.password) if u.password else ""
        # No '_' in the name: it is a wildcard in database-level GRANTs.
        self.prefix = "lbb" + secrets.token_hex(5)
        self.db = self.prefix
        self.issued: set[str] = set()
        try:
            self.conn = self._connect(self.admin_user, self.admin_password)
        except pymysql.err.MySQLError as e:
            unreachable(f"MariaDB at {self.host}:{self.port}", e)
        self.q(f"CREATE DATABASE `{self.db}`")
        self.q(f"CREATE TABLE `{self.db}`.items (id int PRIMARY KEY, label varchar(20))")
        self.q(f"INSERT INTO `{self.db}`.items VALUES (1, 'one'), (2, 'two')")

    def _connect(self, user, password, db=None):
        return pymysql.connect(
            host=self.host, port=self.port, user=user, password=password, database=db,
            autocommit=True, connect_timeout=5,
        )

    def q(self, query, args=None):
        with self.conn.cursor() as cur:
            cur.execute(query, args)
            return cur.fetchall()

    def connection_url(self) -> str:
        return f"{{{{username}}}}:{{{{password}}}}@tcp({self.host}:{self.port})/"

    def connect_as(self, user, password):
        return self._connect(user, password, self.db)

    def track(self, username: str) -> str:
        self.issued.add(username)
        return username

    def user_hosts(self, user: str) -> list[str]:
        return [r[0] for r in self.q("SELECT Host FROM mysql.user WHERE User = %s", (user,))]

    def close(self) -> None:
        try:
            rows = self.q(
                "SELECT User, Host FROM mysql.db WHERE Db = %s "
                "UNION SELECT User, Host FROM mysql.user WHERE User LIKE %s",
                (self.db, self.prefix + "%"),
            )
            accounts = set(rows) | {(u, h) for u in self.issued for h in self.user_hosts(u)}
            for user, host in sorted(accounts):
                with suppress(pymysql.err.MySQLError):
                    self.q("DROP USER IF EXISTS %s@%s", (user, host))
        finally:
            self.q(f"DROP DATABASE IF EXISTS `{self.db}`")
            self.conn.close()


@pytest.fixture
def my():
    world = My()
    yield world
    world.close()


def my_creation(db: str) -> list[str]:
    return [
        f"CREATE USER '{{{{name}}}}'@'%' IDENTIFIED BY '{{{{password}}}}'; "
        f"GRANT SELECT ON {db}.* TO '{{{{name}}}}'@'%';"
    ]


def test_mariadb_credentials(root, my, mount):
    r = root.secrets.database.configure(
        "my",
        plugin_name="mysql-database-plugin",
        connection_url=my.connection_url(),
        username=my.admin_user,
        password=my.admin_password,
        allowed_roles=[ROLE],
        mount_point=mount,
    )
    assert status_of(r) in (200, 204)
    conn = root.secrets.database.read_connection("my", mount_point=mount)["data"]
    assert conn["plugin_name"] == "mysql-database-plugin"
    assert conn["connection_details"]["connection_url"] == my.connection_url()

    root.secrets.database.create_role(
        ROLE, db_name="my", creation_statements=my_creation(my.db), default_ttl="15m",
        max_ttl="1h", mount_point=mount,
    )
    role = root.secrets.database.read_role(ROLE, mount_point=mount)
    assert role["data"]["creation_statements"] == my_creation(my.db)
    assert not role["warnings"], "the table-grant warning is PostgreSQL's"

    creds = issue(root, mount, my)
    assert creds["lease_id"].startswith(f"{mount}/creds/{ROLE}/")
    assert creds["lease_duration"] == 900 and creds["renewable"] is True
    user, password = creds["data"]["username"], creds["data"]["password"]
    assert len(user) <= 32, user
    assert user.startswith("v-"), user
    assert my.user_hosts(user) == ["%"]

    with pytest.raises(pymysql.err.OperationalError) as e:
        my.connect_as(user, password + "x")
    assert e.value.args[0] == 1045, "MariaDB checks the password"

    session = my.connect_as(user, password)
    try:
        with session.cursor() as cur:
            cur.execute("SELECT id, label FROM items ORDER BY id")
            assert cur.fetchall() == ((1, "one"), (2, "two"))
            with pytest.raises(pymysql.err.MySQLError) as e:
                cur.execute("INSERT INTO items VALUES (3, 'three')")
            assert e.value.args[0] == 1142, e.value  # command denied
            with pytest.raises(pymysql.err.MySQLError) as e:
                cur.execute("SELECT * FROM mysql.user")
            assert e.value.args[0] == 1142, e.value

        r = root.sys.renew_lease(creds["lease_id"], increment=1800)
        assert 1795 <= r["lease_duration"] <= 1800

        r = root.sys.revoke_lease(creds["lease_id"])
        assert status_of(r) == 204
        assert my.user_hosts(user) == [], "revocation removes the user from mysql.user"
        # ...and its open session is ended.
        with pytest.raises(pymysql.err.MySQLError):
            with session.cursor() as cur:
                cur.execute("SELECT 1")
    finally:
        with suppress(Exception):
            session.close()
    with pytest.raises(pymysql.err.OperationalError):
        my.connect_as(user, password)
    with pytest.raises(hvac.exceptions.InvalidRequest):
        root.sys.read_lease(creds["lease_id"])


def test_rotate_root_credentials_mariadb(root, my, mount):
    admin = my.prefix + "a"
    initial = "initial-" + secrets.token_hex(8)
    my.q("CREATE USER %s@'%%' IDENTIFIED BY %s", (admin, initial))
    my.q(f"GRANT ALL PRIVILEGES ON *.* TO `{admin}`@'%' WITH GRANT OPTION")
    my._connect(admin, initial).close()

    root.secrets.database.configure(
        "my",
        plugin_name="mysql-database-plugin",
        connection_url=my.connection_url(),
        username=admin,
        password=initial,
        allowed_roles=["*"],
        mount_point=mount,
    )
    r = root.secrets.database.rotate_root_credentials("my", mount_point=mount)
    assert status_of(r) == 204
    with pytest.raises(pymysql.err.OperationalError) as e:
        my._connect(admin, initial)
    assert e.value.args[0] == 1045, "the old root password no longer works"

    root.secrets.database.create_role(
        "ro", db_name="my", creation_statements=my_creation(my.db), mount_point=mount
    )
    creds = issue(root, mount, my, "ro")
    my.connect_as(creds["data"]["username"], creds["data"]["password"]).close()
    root.sys.revoke_lease(creds["lease_id"])
    assert my.user_hosts(creds["data"]["username"]) == []
