"""The `aws` secrets engine through hvac's `secrets.aws`, against moto in server mode.

moto speaks the real IAM and STS query protocol on a local port; boto3 checks what
leash did there: the issued credentials work (`sts:GetCallerIdentity` with them), an
`iam_user` lease's revocation leaves no user or key behind, the session policy and the
`<agent>@<trace id>` session name are sent (a small recording proxy sits in front of
moto's STS), and locking an identity that holds STS credentials attaches the
revoke-older-sessions policy to the role, removed again on unlock.
"""

from __future__ import annotations

import http.server
import json
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import boto3
import hvac
import pytest
import requests
from botocore.exceptions import ClientError

REGION = "us-east-1"
TRACE = secrets.token_hex(16)
TRUST = json.dumps({"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}]})
READ_S3 = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": ["arn:aws:s3:::reports/*"]}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def moto():
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(url + "/moto-api/", timeout=1)
            break
        except Exception:
            assert proc.poll() is None, "moto_server exited"
            assert time.time() < deadline, "moto_server did not start"
            time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


class Recorder:
    """A proxy in front of moto that keeps every form body it forwards."""

    def __init__(self, target: str):
        self.bodies: list[dict] = []
        rec = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n)
                rec.bodies.append({k: v[0] for k, v in urllib.parse.parse_qs(body.decode()).items()})
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                r = requests.post(target + self.path, data=body, headers=headers, timeout=30)
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "text/xml"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def aws(moto, service, **creds):
    creds = creds or {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
    return boto3.client(service, endpoint_url=moto, region_name=REGION, **creds)


@pytest.fixture
def engine(root, name, moto):
    """An `aws` mount configured with a root IAM user made in moto."""
    iam = aws(moto, "iam")
    user = f"leash-root-{name}"
    iam.create_user(UserName=user)
    key = iam.create_access_key(UserName=user)["AccessKey"]
    sts = Recorder(moto)
    root.sys.enable_secrets_engine("aws", path=name)
    root.secrets.aws.configure_root_iam_credentials(
        access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"], region=REGION,
        iam_endpoint=moto, sts_endpoint=sts.url, max_retries=2, mount_point=name)
    yield {"mount": name, "iam": iam, "root_user": user, "root_key": key, "sts": sts}
    sts.close()


def test_root_configuration_lease_and_rotation(root, engine):
    m, iam = engine["mount"], engine["iam"]
    cfg = root.adapter.get(f"/v1/{m}/config/root")["data"]
    assert cfg["access_key"] == engine["root_key"]["AccessKeyId"]
    assert "secret_key" not in cfg
    assert engine["root_key"]["SecretAccessKey"] not in json.dumps(cfg)

    # Pointing the engine elsewhere needs the secret again (it never follows on its own).
    with pytest.raises(hvac.exceptions.InvalidRequest, match="secret_key"):
        root.adapter.post(f"/v1/{m}/config/root", json={"iam_endpoint": "http://127.0.0.1:9"})

    root.secrets.aws.configure_lease(lease="5m", lease_max="1h", mount_point=m)
    assert root.secrets.aws.read_lease_config(mount_point=m)["data"] == {"lease": "0h5m0s", "lease_max": "1h0m0s"}

    rotated = root.secrets.aws.rotate_root_iam_credentials(mount_point=m)
    new_key = rotated["data"]["access_key"]
    assert new_key != engine["root_key"]["AccessKeyId"]
    keys = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=engine["root_user"])["AccessKeyMetadata"]]
    assert keys == [new_key], "the old key is deleted"
    assert root.adapter.get(f"/v1/{m}/config/root")["data"]["access_key"] == new_key


def test_iam_user_credentials_work_and_revocation_leaves_nothing(root, engine, moto):
    m, iam = engine["mount"], engine["iam"]
    root.secrets.aws.configure_lease(lease="5m", lease_max="1h", mount_point=m)
    managed = iam.create_policy(PolicyName=f"{m}-read", PolicyDocument=json.dumps(READ_S3))["Policy"]["Arn"]
    root.secrets.aws.create_or_update_role(
        name="reports", credential_type="iam_user", policy_document=READ_S3,
        policy_arns=[managed], mount_point=m)
    role = root.secrets.aws.read_role("reports", mount_point=m)["data"]
    assert role["credential_type"] == "iam_user" and role["policy_arns"] == [managed]

    creds = root.secrets.aws.generate_credentials("reports", mount_point=m)
    assert creds["lease_duration"] == 300
    d = creds["data"]
    me = aws(moto, "sts", aws_access_key_id=d["access_key"], aws_secret_access_key=d["secret_key"]).get_caller_identity()
    user = me["Arn"].rsplit("/", 1)[1]
    assert user.startswith("leash-root-")  # leash-<display>-<role>-…
    assert [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]] == [managed]
    assert iam.list_user_policies(UserName=user)["PolicyNames"] == ["leash-reports"]

    root.sys.revoke_lease(creds["lease_id"])
    with pytest.raises(ClientError, match="NoSuchEntity"):
        iam.get_user(UserName=user)
    assert not any(u["UserName"] == user for u in iam.list_users()["Users"])

    # STS options are refused for iam_user; bad roles name the field.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="ttl"):
        root.secrets.aws.generate_credentials("reports", ttl="15m", mount_point=m)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="role_arns"):
        root.secrets.aws.create_or_update_role(name="bad", credential_type="assumed_role", mount_point=m)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="policy_document"):
        root.secrets.aws.create_or_update_role(name="bad", credential_type="iam_user",
                                               policy_document="{not json", mount_point=m)


def test_assumed_role_session_policy_trace_and_containment(root, engine, moto, name):
    m, iam, sts = engine["mount"], engine["iam"], engine["sts"]
    role_arn = iam.create_role(RoleName=f"agents-{name}", AssumeRolePolicyDocument=TRUST)["Role"]["Arn"]
    root.secrets.aws.create_or_update_role(
        name="agent", credential_type="assumed_role", role_arns=[role_arn],
        policy_document=READ_S3, default_sts_ttl=900, max_sts_ttl=3600, mount_point=m)
    root.adapter.post(f"/v1/{m}/roles/agent", json={"session_tags": {"team": "agents"}})

    # An agent logs in (userpass: a token with an entity) and asks under a trace.
    root.sys.enable_auth_method("userpass", path=f"{name}-up")
    root.sys.create_or_update_policy(name=f"{name}-aws", policy=f'path "{m}/sts/agent" {{ capabilities = ["update"] }}')
    pw = "pw-" + secrets.token_hex(8)
    root.auth.userpass.create_or_update_user(username="summariser", password=pw, policies=[f"{name}-aws"],
                                             mount_point=f"{name}-up")
    login = hvac.Client(url=root.url).auth.userpass.login("summariser", pw, mount_point=f"{name}-up")["auth"]
    r = requests.post(f"{root.url}/v1/{m}/sts/agent", json={},
                      headers={"X-Vault-Token": login["client_token"],
                               "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["lease_duration"] == 900 and body["renewable"] is False
    assert any("cannot be revoked" in w for w in body["warnings"])
    d = body["data"]
    assert d["security_token"] == d["session_token"]

    # The issued credentials work, as the assumed role, under the agent's session name.
    me = aws(moto, "sts", aws_access_key_id=d["access_key"], aws_secret_access_key=d["secret_key"],
             aws_session_token=d["session_token"]).get_caller_identity()
    assert f"assumed-role/agents-{name}/summariser@{TRACE}" in me["Arn"], me["Arn"]

    # What went to STS: the role, the session policy, the name, the duration, the tags.
    sent = [b for b in sts.bodies if b.get("Action") == "AssumeRole"][-1]
    assert sent["RoleArn"] == role_arn
    assert json.loads(sent["Policy"]) == READ_S3
    assert sent["RoleSessionName"] == f"summariser@{TRACE}"
    assert sent["DurationSeconds"] == "900"
    assert (sent["Tags.member.1.Key"], sent["Tags.member.1.Value"]) == ("team", "agents")

    # Locking the agent's entity denies the role's sessions issued before the lock.
    locked = root.adapter.put("/v1/sys/containment/lock", json={"entity_id": login["entity_id"], "reason": "test"})
    assert locked["data"]["revoked"]["leases"] == 1, locked
    names = iam.list_role_policies(RoleName=f"agents-{name}")["PolicyNames"]
    assert len(names) == 1 and names[0].startswith("leash-contained-"), names
    doc = iam.get_role_policy(RoleName=f"agents-{name}", PolicyName=names[0])["PolicyDocument"]
    doc = json.loads(doc) if isinstance(doc, str) else doc
    st = doc["Statement"][0]
    assert st["Effect"] == "Deny" and "aws:TokenIssueTime" in st["Condition"]["DateLessThan"]

    root.adapter.put("/v1/sys/containment/unlock", json={"entity_id": login["entity_id"]})
    assert iam.list_role_policies(RoleName=f"agents-{name}")["PolicyNames"] == []

    # A role_arn outside the role's list is refused.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="role_arn"):
        root.secrets.aws.generate_credentials("agent", role_arn="arn:aws:iam::123456789012:role/other",
                                              endpoint="sts", mount_point=m)
