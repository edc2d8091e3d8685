"""`leash injector`, the Kubernetes mutating webhook, end to end on its real wire formats
(no cluster runs here):

1. the example Deployment of deploy/kubernetes, its pod template wrapped in an
   AdmissionReview as the API server sends it, posted over HTTPS; the JSONPatch of the
   answer applied with an independent RFC 6902 implementation (Python `jsonpatch`);
2. the agent configuration of the patched pod run for real (`leash agent --config-env`,
   exactly the containers' command) against a leash server whose kubernetes auth checks
   a service-account JWT through a local TokenReview endpoint, with the PostgreSQL
   database engine: the file appears, a reader reloading on mtime connects with it, and
   stopping the sidecar revokes the lease;
3. malformed annotations denied naming the annotation, pods left alone, bad bodies 400.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import signal
import sys
import subprocess
import time
import uuid
from pathlib import Path

import hvac.exceptions
import jsonpatch
import kubernetes_validate
import pytest
import requests
import yaml

from conftest import find_binary
from test_auth_jwt_kubernetes import REVIEWER_JWT, Pki, api_server, pki, projected  # noqa: F401
from test_database import Pg, pg  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy/kubernetes/example-deployment.yaml"
V = "vault.hashicorp.com/"
SETUP_JOB = REPO / "deploy/kubernetes/leash-setup-job.yaml"


# --- the injector --------------------------------------------------------------------


class Injector:
    """A `leash injector` child process on a loopback port, with a certificate for
    127.0.0.1 from the test CA."""

    def __init__(self, pki: Pki, workdir: Path, *extra: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.ca = str(pki.dir / "ca.pem")
        self.log = open(workdir / "injector.stderr.log", "ab")
        self.log_path = workdir / "injector.stderr.log"
        self.proc = subprocess.Popen(
            [str(find_binary()), "injector", "--listen", "127.0.0.1:0",
             "--tls-cert", str(pki.dir / "srv.pem"), "--tls-key", str(pki.dir / "srv.key"), *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )
        line = self.proc.stdout.readline()
        assert "listening on https://" in line, f"no start line: {line!r}\n{self.stderr()}"
        self.url = line.strip().rsplit(" ", 1)[-1]

    def stderr(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def post(self, body, path: str = "/mutate") -> requests.Response:
        data = body if isinstance(body, (bytes, str)) else json.dumps(body)
        return requests.post(self.url + path, data=data, verify=self.ca, timeout=10,
                             headers={"Content-Type": "application/json"})

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def injector(pki, tmp_path_factory):
    s = Injector(pki, tmp_path_factory.mktemp("injector"), "--leash-addr", "https://leash.leash.svc:8200",
                 "--agent-image", "registry.example.com/leash:test")
    yield s
    s.stop()


def example_pod() -> dict:
    """The example Deployment's pod, as the ReplicaSet controller creates it."""
    dep = yaml.safe_load(EXAMPLE.read_text())
    tpl = dep["spec"]["template"]
    meta = copy.deepcopy(tpl["metadata"])
    meta.update({"generateName": "ai-agent-credentialed-5d9c7b8f4-", "namespace": "ai-agents"})
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": copy.deepcopy(tpl["spec"])}


def admission_review(pod: dict, operation: str = "CREATE") -> dict:
    """An AdmissionReview as the API server posts it to a webhook."""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid4()),
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
            "requestResource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": pod["metadata"].get("namespace", "default"),
            "operation": operation,
            "userInfo": {"username": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ["system:serviceaccounts", "system:authenticated"]},
            "object": pod,
            "oldObject": None,
            "dryRun": False,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
        },
    }


def answer(inj: Injector, pod: dict, operation: str = "CREATE") -> tuple[dict, dict]:
    """Posts the pod; checks the envelope; returns (review request, response)."""
    review = admission_review(pod, operation)
    r = inj.post(review)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == review["request"]["uid"]
    return review, body["response"]


def patched(pod: dict, resp: dict) -> dict:
    assert resp["allowed"] is True, resp
    assert resp["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(resp["patch"]))
    return jsonpatch.JsonPatch(ops).apply(pod)


def container(pod: dict, name: str, init: bool = False) -> dict:
    found = [c for c in pod["spec"].get("initContainers" if init else "containers", []) if c["name"] == name]
    assert len(found) == 1, f"{name}: {found}"
    return found[0]


def agent_config(c: dict) -> dict:
    assert c["command"] == ["leash"] and c["args"] == ["agent", "--config-env", "LEASH_AGENT_CONFIG"], c
    env = {e["name"]: e["value"] for e in c["env"]}
    return json.loads(env["LEASH_AGENT_CONFIG"])


# --- 1. the example Deployment -------------------------------------------------------


def test_example_deployment_is_patched_with_init_and_sidecar(injector):
    pod = example_pod()
    _, resp = answer(injector, pod)
    assert "warnings" not in resp, resp["warnings"]
    out = patched(pod, resp)

    # The patched pod is a valid Pod (the schema of the Kubernetes API, strict).
    kubernetes_validate.validate(out, kubernetes_validate.latest_version(), strict=True)
    vols = [v for v in out["spec"]["volumes"] if v["name"] == "vault-secrets"]
    assert vols == [{"name": "vault-secrets", "emptyDir": {"medium": "Memory"}}]
    # The app container: every field as it was (it already mounts vault-secrets).
    assert out["spec"]["containers"][0] == pod["spec"]["containers"][0]
    assert [c["name"] for c in out["spec"]["containers"]] == ["agent", "leash-agent"]
    assert [c["name"] for c in out["spec"]["initContainers"]] == ["leash-agent-init"]
    assert out["spec"]["serviceAccountName"] == "ai-agent-sa"
    assert out["metadata"]["labels"] == {"app": "ai-agent"}
    for k, v in pod["metadata"]["annotations"].items():
        assert out["metadata"]["annotations"][k] == v
    assert out["metadata"]["annotations"][V + "agent-inject-status"] == "injected"

    init = container(out, "leash-agent-init", init=True)
    side = container(out, "leash-agent")
    for c in (init, side):
        assert c["image"] == "registry.example.com/leash:test"
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}
        assert set(c["resources"]) == {"requests", "limits"}
        mounts = {m["name"]: m for m in c["volumeMounts"]}
        assert mounts["vault-secrets"]["mountPath"] == "/vault/secrets"
        assert mounts["leash-token"]["readOnly"] is True
        # No credential travels in the pod spec: the config names a token file only.
        text = json.dumps(c)
        assert "secret_id" not in text and "token_reviewer" not in text
    token_vol = [v for v in out["spec"]["volumes"] if v["name"] == "leash-token"][0]
    assert token_vol["projected"]["sources"][0]["serviceAccountToken"]["path"] == "token"

    cfg_init, cfg_side = agent_config(init), agent_config(side)
    assert cfg_init["exit_after_auth"] is True and cfg_side["exit_after_auth"] is False
    assert cfg_side["revoke_on_exit"] is True
    assert cfg_side["vault"] == {"address": "https://leash.leash.svc:8200"}
    assert cfg_side["auto_auth"]["method"]["kubernetes"] == {
        "mount_path": "auth/kubernetes",
        "config": {"role": "ai-agent-role", "token_path": "/var/run/secrets/leash/serviceaccount/token"},
    }
    [tpl] = cfg_side["template"]
    assert tpl["destination"] == "/vault/secrets/db-creds"
    assert tpl["contents"] == pod["metadata"]["annotations"][V + "agent-inject-template-db-creds"]
    # The agents' cache (it holds the token) is on a volume the app does not mount.
    assert cfg_side["lease_cache_file"].startswith("/home/leash/")
    assert "leash-agent-home" not in json.dumps(out["spec"]["containers"][0])


def test_app_containers_without_the_mount_get_exactly_one(injector):
    pod = example_pod()
    pod["spec"]["containers"][0].pop("volumeMounts")
    pod["spec"]["containers"].append({"name": "tools", "image": "busybox",
                                      "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]})
    pod["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    out = patched(pod, answer(injector, pod)[1])
    for c in out["spec"]["containers"][:2]:
        assert [m for m in c["volumeMounts"] if m["name"] == "vault-secrets"] == [
            {"name": "vault-secrets", "mountPath": "/vault/secrets", "readOnly": True}]
    assert out["spec"]["containers"][1]["volumeMounts"][0] == {"name": "scratch", "mountPath": "/scratch"}
    assert [v["name"] for v in out["spec"]["volumes"]].count("vault-secrets") == 1


def test_annotations_shape_the_injection(injector):
    pod = example_pod()
    a = pod["metadata"]["annotations"]
    a.update({
        V + "agent-inject-secret-cfg": "secret/data/agents/config/app",  # default template
        V + "agent-inject-file-cfg": "config.txt",
        V + "agent-inject-perms-cfg": "0440",
        V + "agent-inject-command-cfg": "kill -HUP 1",
        V + "secret-volume-path": "/run/creds",
        V + "agent-pre-populate-only": "true",
        V + "agent-requests-cpu": "50m",
        V + "agent-limits-mem": "128Mi",
        V + "agent-run-as-user": "1234",
        V + "service": "https://leash.other:8200",
        V + "tls-skip-verify": "true",
        V + "auth-path": "auth/k8s-prod",
        V + "agent-cache-enable": "true",
        V + "agent-image": "mirror.example/leash:1",
    })
    out = patched(pod, (resp := answer(injector, pod)[1]))
    kubernetes_validate.validate(out, kubernetes_validate.latest_version(), strict=True)
    assert any("agent-cache-enable" in w for w in resp["warnings"]), resp
    assert [c["name"] for c in out["spec"]["containers"]] == ["agent"], "pre-populate-only: no sidecar"
    init = container(out, "leash-agent-init", init=True)
    assert init["image"] == "mirror.example/leash:1"
    assert init["resources"]["requests"]["cpu"] == "50m"
    assert init["resources"]["limits"]["memory"] == "128Mi"
    assert init["securityContext"]["runAsUser"] == 1234
    cfg = agent_config(init)
    assert cfg["vault"] == {"address": "https://leash.other:8200", "tls_skip_verify": True}
    assert cfg["auto_auth"]["method"]["kubernetes"]["mount_path"] == "auth/k8s-prod"
    by_dest = {t["destination"]: t for t in cfg["template"]}
    assert set(by_dest) == {"/run/creds/db-creds", "/run/creds/config.txt"}
    t = by_dest["/run/creds/config.txt"]
    assert t["perms"] == "0440" and t["command"] == "kill -HUP 1"
    assert 'secret "secret/data/agents/config/app"' in t["contents"] and "range $k, $v := .Data" in t["contents"]
    # The app container already mounted vault-secrets at /vault/secrets: left as it is.
    assert out["spec"]["containers"][0] == pod["spec"]["containers"][0]


def test_update_status_reinjects_without_duplicates(injector):
    pod = example_pod()
    once = patched(pod, answer(injector, pod)[1])
    once["metadata"]["annotations"][V + "agent-inject-status"] = "update"
    twice = patched(once, answer(injector, once)[1])
    assert [c["name"] for c in twice["spec"]["containers"]] == ["agent", "leash-agent"]
    assert [c["name"] for c in twice["spec"]["initContainers"]] == ["leash-agent-init"]
    names = [v["name"] for v in twice["spec"]["volumes"]]
    assert len(names) == len(set(names)), names


# --- 3. refusals and pods left alone -------------------------------------------------


@pytest.mark.parametrize(
    "key,value,why",
    [
        ("agent-inject-perms-db-creds", "999", "octal"),
        ("agent-inject-perms-db-creds", "rw-r--r--", "octal"),
        ("agent-requests-cpu", "lots", "quantity"),
        ("agent-limits-mem", "64MB", "quantity"),
        ("agent-inject-template-db-creds", '{{ with secret "database/creds/agent-readonly" }}{{ .Data.username }', "parse"),
        ("agent-inject-template-db-creds", '{{ with secret "database/creds/agent-readonly" }}x', "parse"),
        ("agent-inject", "ture", "boolean"),
        ("agent-pre-populate", "yes please", "boolean"),
        ("agent-run-as-user", "root", "user id"),
        ("agent-run-as-user", "0", "root"),
        ("agent-run-as-same-user", "true", "runAsUser"),
        ("role", "", "required"),
        ("agent-inject-template-other", "{{ .Data }}", "agent-inject-secret-other"),
        ("agent-inject-file-db-creds", "../etc/passwd", "file name"),
        ("service", "leash:8200", "URL"),
        ("agent-inject-status", "done", "injected"),
    ],
)
def test_malformed_annotation_denies_naming_it(injector, key, value, why):
    pod = example_pod()
    pod["metadata"]["annotations"][V + key] = value
    _, resp = answer(injector, pod)
    assert resp["allowed"] is False, resp
    assert "patch" not in resp
    msg = resp["status"]["message"]
    assert V + key in msg, msg
    assert why in msg, msg
    assert resp["status"]["code"] == 400


def test_leash_prefix_is_an_alias_and_conflicts_are_denied(injector):
    pod = example_pod()
    pod["metadata"]["annotations"]["leash.dev/agent-inject-perms-db-creds"] = "0400"
    out = patched(pod, answer(injector, pod)[1])
    assert agent_config(container(out, "leash-agent"))["template"][0]["perms"] == "0400"
    pod["metadata"]["annotations"][V + "agent-inject-perms-db-creds"] = "0440"
    _, resp = answer(injector, pod)
    assert resp["allowed"] is False and "agent-inject-perms-db-creds" in resp["status"]["message"]


def test_unknown_vault_annotations_are_warnings(injector):
    pod = example_pod()
    pod["metadata"]["annotations"][V + "agent-inject-token"] = "true"
    pod["metadata"]["annotations"][V + "agnet-pre-populate"] = "false"
    _, resp = answer(injector, pod)
    assert resp["allowed"] is True and resp["patch"]
    text = " ".join(resp["warnings"])
    assert V + "agent-inject-token" in text and V + "agnet-pre-populate" in text


def test_already_injected_pod_is_left_alone(injector):
    pod = example_pod()
    pod["metadata"]["annotations"][V + "agent-inject-status"] = "injected"
    _, resp = answer(injector, pod)
    assert resp["allowed"] is True
    assert "patch" not in resp and "patchType" not in resp


@pytest.mark.parametrize("inject", [None, "false", "0"])
def test_pod_without_agent_inject_is_allowed_unchanged(injector, inject):
    pod = example_pod()
    if inject is None:
        del pod["metadata"]["annotations"][V + "agent-inject"]
    else:
        pod["metadata"]["annotations"][V + "agent-inject"] = inject
    _, resp = answer(injector, pod)
    assert resp == {"uid": resp["uid"], "allowed": True}


def test_other_operations_and_kinds_are_allowed_unchanged(injector):
    pod = example_pod()
    _, resp = answer(injector, pod, operation="UPDATE")
    assert resp == {"uid": resp["uid"], "allowed": True}
    review = admission_review(pod)
    review["request"]["kind"]["kind"] = "Deployment"
    r = injector.post(review)
    assert r.status_code == 200 and r.json()["response"]["allowed"] is True
    assert "patch" not in r.json()["response"]


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json at all",
        b"[1, 2]",
        json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}}),
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {"kind": "Pod"}}}),
        json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                    "request": {"uid": "u1", "kind": {"kind": "Pod"}, "operation": "CREATE"}}),
        b"\xff\xfe\x00garbage",
    ],
)
def test_a_body_that_is_not_an_admission_review_gets_400(injector, body):
    r = injector.post(body)
    assert r.status_code == 400, r.text
    assert r.json()["errors"]
    assert injector.proc.poll() is None, "the injector crashed"
    assert requests.get(injector.url + "/healthz", verify=injector.ca, timeout=5).status_code == 200


def test_healthz_and_unknown_paths(injector):
    r = requests.get(injector.url + "/healthz", verify=injector.ca, timeout=5)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    assert requests.get(injector.url + "/mutate", verify=injector.ca, timeout=5).status_code == 405
    assert requests.get(injector.url + "/nope", verify=injector.ca, timeout=5).status_code == 404


def test_certificate_is_reloaded_when_the_files_change(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = Pki(tmp_path / "a"), Pki(tmp_path / "b")  # two CAs, two certificates
    live = tmp_path / "live"
    live.mkdir()
    for f in ("srv.pem", "srv.key", "ca.pem"):
        (live / f).write_bytes((first.dir / f).read_bytes())
    view = Pki.__new__(Pki)  # the files the injector is started with
    view.dir = live
    inj = Injector(view, tmp_path / "w", "--leash-addr", "http://127.0.0.1:8200")
    try:
        assert requests.get(inj.url + "/healthz", verify=str(first.dir / "ca.pem"), timeout=5).ok
        # Rotate: key first, then the certificate (a half-rotated pair is not loaded).
        for f in ("srv.key", "srv.pem"):
            tmp = live / (f + ".tmp")
            tmp.write_bytes((second.dir / f).read_bytes())
            os.replace(tmp, live / f)
        deadline = time.time() + 15
        while True:
            try:
                requests.get(inj.url + "/healthz", verify=str(second.dir / "ca.pem"), timeout=5)
                break
            except requests.exceptions.SSLError:
                assert time.time() < deadline, "the new certificate was never served\n" + inj.stderr()
                time.sleep(0.5)
        assert "reloaded" in inj.stderr()
    finally:
        inj.stop()


# --- 2. the generated configuration, run for real ------------------------------------


class CredentialReader:
    """What an agent does with the file (like credential_manager.py): reloads it when
    its mtime changes and connects to PostgreSQL with what it holds."""

    def __init__(self, path: Path):
        self.path = path
        self.mtime = None
        self.creds = None
        self.reloads = 0

    def current(self) -> dict:
        m = self.path.stat().st_mtime_ns
        if m != self.mtime:
            self.creds = json.loads(self.path.read_text())
            self.mtime = m
            self.reloads += 1
        return self.creds


def remap(cfg: dict, d: Path) -> dict:
    """The container paths of the configuration, moved under the test's directory."""
    text = json.dumps(cfg)
    for src, dst in (("/vault/secrets", d / "secrets"), ("/home/leash", d / "home"),
                     ("/var/run/secrets/leash/serviceaccount", d / "sa")):
        text = text.replace(src, str(dst))
    return json.loads(text)


def run_agent(cfg: dict, log: Path) -> subprocess.Popen:
    env = dict(os.environ, LEASH_AGENT_CONFIG=json.dumps(cfg), LEASH_LOG="info")
    return subprocess.Popen([str(find_binary()), "agent", "--config-env", "LEASH_AGENT_CONFIG"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=open(log, "ab"), env=env)


def wait_until(pred, what: str, timeout: float = 30):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def run_setup_job(server, pg: Pg, d: Path) -> None:
    """Runs the steps of deploy/kubernetes/leash-setup-job.yaml — each container's
    command, as it is — with the `leash` CLI against `server`: the ConfigMap's files
    and the leash-database secret are put where the containers mount them."""
    docs = list(yaml.safe_load_all(SETUP_JOB.read_text()))
    data = next(x for x in docs if x["kind"] == "ConfigMap")["data"]
    job = next(x for x in docs if x["kind"] == "Job")["spec"]["template"]["spec"]
    (d / "setup").mkdir(parents=True)
    (d / "database").mkdir()
    for name, text in data.items():
        (d / "setup" / name).write_text(text)
    secret = {"connection_url": pg.connection_url(), "username": pg.admin_user,
              "password": pg.admin_password or "ignored-by-trust-auth"}
    for name, text in secret.items():
        (d / "database" / name).write_text(text)
    env = dict(os.environ, LEASH_ADDR=server.url, LEASH_TOKEN=server.root_token)
    for c in job["initContainers"] + job["containers"]:
        assert c["command"][0] == "leash", c
        argv = [a.replace("/setup/", f"{d}/setup/").replace("/database/", f"{d}/database/")
                for a in c["command"][1:]]
        p = subprocess.run([str(find_binary()), *argv], env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, f"setup step {c['name']}: {p.stdout}{p.stderr}"


def test_generated_agent_configuration_runs_for_real(servers, pki, api_server, pg, tmp_path):
    server = servers.dev("injector-real")
    root = server.client()
    run_setup_job(server, pg, tmp_path / "setup")
    # The Job's auth/kubernetes/config relies on leash running in the cluster (its pod's
    # CA and token); here the API server is the local TokenReview endpoint.
    root.auth.kubernetes.configure(kubernetes_host=api_server.url, kubernetes_ca_cert=pki.ca_pem,
                                   token_reviewer_jwt=REVIEWER_JWT, disable_local_ca_jwt=True)
    role = root.auth.kubernetes.read_role("ai-agent-role")
    assert role["bound_service_account_names"] == ["ai-agent-sa"], role

    inj = Injector(pki, tmp_path / "inj", "--leash-addr", server.url)
    try:
        pod = example_pod()
        out = patched(pod, answer(inj, pod)[1])
    finally:
        inj.stop()
    init_cfg = remap(agent_config(container(out, "leash-agent-init", init=True)), tmp_path)
    side_cfg = remap(agent_config(container(out, "leash-agent")), tmp_path)
    for sub in ("secrets", "home", "sa"):
        (tmp_path / sub).mkdir()
    # The kubelet's projected token of ai-agents/ai-agent-sa.
    (tmp_path / "sa/token").write_text(pki.sign(projected("ai-agents", "ai-agent-sa")))
    log = tmp_path / "agents.log"

    init = run_agent(init_cfg, log)
    assert init.wait(60) == 0, log.read_text()
    db_creds = tmp_path / "secrets/db-creds"
    reader = CredentialReader(db_creds)
    creds = reader.current()
    assert set(creds) == {"username", "password", "ttl_seconds"}
    pg.track(creds["username"])
    cache = json.loads((tmp_path / "home/cache.json").read_text())
    [lease_id] = [s["lease_id"] for s in cache["secrets"].values()]
    assert lease_id.startswith("database/creds/agent-readonly/")
    lease = root.sys.read_lease(lease_id)["data"]
    assert creds["ttl_seconds"] == 900
    assert abs(lease["ttl"] - creds["ttl_seconds"]) < 30, lease
    with pg.connect_as(creds["username"], creds["password"]) as c:
        assert c.execute("SELECT count(*) FROM public.items").fetchone()[0] == 3
    # The TokenReview saw the pod's service-account token.
    _, path, _, _ = api_server.seen[-1]
    assert path == "/apis/authentication.k8s.io/v1/tokenreviews"

    # The sidecar takes over the init container's lease: no second database user.
    side = run_agent(side_cfg, log)
    try:
        wait_until(lambda: "reusing a cached lease" in log.read_text(), "the sidecar to adopt the lease")
        again = reader.current()
        assert again["username"] == creds["username"]
        with pg.connect_as(again["username"], again["password"]) as c:
            assert c.execute("SELECT current_user").fetchone()[0] == creds["username"]
        assert side.poll() is None, log.read_text()
    finally:
        side.send_signal(signal.SIGTERM)
        code = side.wait(30)
    assert code == 0, log.read_text()
    # Stopping the sidecar revoked the lease and dropped the database user.
    with pytest.raises(hvac.exceptions.VaultError):
        root.sys.read_lease(lease_id)
    wait_until(lambda: not pg.role_exists(creds["username"]), "the database user to be dropped")


# --- deploy/kubernetes ---------------------------------------------------------------


def test_deploy_manifests_are_valid_kubernetes(tmp_path):
    """Every manifest of deploy/kubernetes against the Kubernetes API schema, strictly
    (unknown fields are errors), with the kubernetes-validate tool (offline: the
    schemas ship in the package)."""
    files = sorted((REPO / "deploy/kubernetes").glob("*.yaml"))
    assert len(files) >= 5, files
    tool = Path(sys.executable).parent / "kubernetes-validate"  # installed in .venv by scripts/test
    p = subprocess.run([str(tool), "--strict", *map(str, files)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    kinds = {line.split("resource ")[1].split("/")[0] for line in (p.stdout + p.stderr).splitlines() if "passed" in line}
    assert {"mutatingwebhookconfiguration", "deployment", "service", "serviceaccount", "statefulset",
            "clusterrolebinding", "job", "configmap", "namespace"} <= kinds, kinds
    # The same check refuses a misspelt field (so passing means something).
    bad = tmp_path / "bad.yaml"
    bad.write_text((REPO / "deploy/kubernetes/injector.yaml").read_text().replace("failurePolicy:", "failurePolcy:"))
    p = subprocess.run([str(tool), "--strict", str(bad)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "failurePolcy" in p.stdout + p.stderr, p.stdout + p.stderr


def test_agent_config_env_errors_name_the_variable():
    env = {k: v for k, v in os.environ.items() if k != "LEASH_AGENT_CONFIG"}
    p = subprocess.run([str(find_binary()), "agent", "--config-env", "LEASH_AGENT_CONFIG"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "LEASH_AGENT_CONFIG" in p.stderr and "not set" in p.stderr, p.stderr
    env["LEASH_AGENT_CONFIG"] = json.dumps({"vault": {"address": "http://127.0.0.1:1"}, "auto_auth": {
        "method": {"kubernetes": {"config": {"role": "r"}}}}, "exit_after_oath": True})
    p = subprocess.run([str(find_binary()), "agent", "--config-env", "LEASH_AGENT_CONFIG"],
                       env=env, capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "LEASH_AGENT_CONFIG" in p.stderr and "exit_after_oath" in p.stderr, p.stderr
