"""The Kubernetes manifests: the fields that decide whether syncd runs safely."""

from __future__ import annotations

import os
import posixpath
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
METRICS_PORT = 9464
RUN_AS = 10001
CONFIG_FILE = "/etc/syncd/config/syncd.yaml"
USERS_DIR = "/etc/syncd/users.d"

Doc = dict[str, Any]


def documents(name: str) -> list[Doc]:
    """Every YAML document in one manifest file."""
    with (MANIFESTS / name).open() as stream:
        return [doc for doc in yaml.safe_load_all(stream) if doc]


def applied() -> list[Doc]:
    """The documents `kubectl apply -k` would send."""
    kustomization = documents("kustomization.yaml")[0]
    return [doc for name in kustomization["resources"] for doc in documents(name)]


def one(kind: str, name: str | None = None) -> Doc:
    """The single applied object of ``kind`` (and ``name``)."""
    found = [
        d
        for d in applied()
        if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


@pytest.fixture
def pod() -> Doc:
    """The Deployment's pod spec."""
    return one("Deployment")["spec"]["template"]["spec"]  # type: ignore[no-any-return]


@pytest.fixture
def container(pod: Doc) -> Doc:
    """The syncd container."""
    (found,) = [c for c in pod["containers"] if c["name"] == "syncd"]
    return found  # type: ignore[no-any-return]


def env(container: Doc) -> dict[str, Doc]:
    """Environment entries by name."""
    return {e["name"]: e for e in container["env"]}


def mounts(container: Doc) -> dict[str, str]:
    """Mount path by volume name."""
    return {m["name"]: m["mountPath"] for m in container["volumeMounts"]}


def volume(pod: Doc, name: str) -> Doc:
    """One pod volume by name."""
    (found,) = [v for v in pod["volumes"] if v["name"] == name]
    return found  # type: ignore[no-any-return]


def port_number(container: Doc, port: int | str) -> int:
    """A probe's port, resolving a named container port."""
    if isinstance(port, int):
        return port
    (found,) = [p for p in container["ports"] if p["name"] == port]
    return found["containerPort"]  # type: ignore[no-any-return]


def syncd_yaml() -> Doc:
    """The syncd.yaml carried by the ConfigMap."""
    config = one("ConfigMap", "syncd-config")
    return yaml.safe_load(config["data"]["syncd.yaml"])  # type: ignore[no-any-return]


def test_manifests_are_namespace_agnostic() -> None:
    """No object pins a namespace: `kubectl apply -n` chooses it."""
    assert all("namespace" not in doc["metadata"] for doc in applied())


def test_deployment_runs_several_replicas() -> None:
    """The Deployment scales out (users are shared through PostgreSQL leases)."""
    assert one("Deployment")["spec"]["replicas"] >= 2


def test_ledger_is_postgresql_with_password_from_a_secret(container: Doc) -> None:
    """Replicas share a PostgreSQL ledger; its password comes from a Secret."""
    url = syncd_yaml()["ledger"]["url"]
    password = env(container)["SYNCD_LEDGER_PASSWORD"]

    assert url.startswith("postgresql+psycopg://")
    assert "${SYNCD_LEDGER_PASSWORD}" in url
    assert password["valueFrom"]["secretKeyRef"]["key"] == "password"


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        ("livenessProbe", "/livez"),
        ("readinessProbe", "/readyz"),
    ],
)
def test_probes_hit_health_endpoints_on_metrics_port(
    container: Doc, probe: str, path: str
) -> None:
    """Liveness asks /livez and readiness /readyz, on the metrics port."""
    check = container[probe]["httpGet"]

    assert check["path"] == path
    assert port_number(container, check["port"]) == METRICS_PORT


def test_metrics_listen_on_the_probed_port() -> None:
    """syncd serves metrics and health on the port the probes use."""
    assert syncd_yaml()["metrics"]["listen"] == f"0.0.0.0:{METRICS_PORT}"


def test_pod_security_context_is_restricted(pod: Doc) -> None:
    """The pod runs as UID 10001, never root, with the runtime's seccomp profile."""
    context = pod["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == RUN_AS
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False


def test_container_security_context_is_restricted(container: Doc) -> None:
    """The container cannot escalate, has no capabilities and a read-only root."""
    context = container["securityContext"]

    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == RUN_AS
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"


def test_secret_is_mounted_where_credentials_are_read(pod: Doc, container: Doc) -> None:
    """The credentials Secret is mounted at $CREDENTIALS_DIRECTORY."""
    directory = env(container)["CREDENTIALS_DIRECTORY"]["value"]

    assert volume(pod, "credentials")["secret"]["secretName"] == "syncd-credentials"
    assert mounts(container)["credentials"] == directory


def test_configmaps_are_mounted_for_config_and_users(pod: Doc, container: Doc) -> None:
    """syncd.yaml and the users.d files come from the ConfigMaps."""
    assert volume(pod, "config")["configMap"]["name"] == "syncd-config"
    assert volume(pod, "users")["configMap"]["name"] == "syncd-users"
    assert container["args"] == ["run", "-c", CONFIG_FILE]
    assert mounts(container)["config"] == str(PurePosixPath(CONFIG_FILE).parent)
    assert mounts(container)["users"] == USERS_DIR


def test_users_dir_resolves_to_the_users_mount() -> None:
    """users_dir, relative to syncd.yaml, points at the users.d mount."""
    resolved = PurePosixPath(CONFIG_FILE).parent / syncd_yaml()["users_dir"]

    assert posixpath.normpath(resolved) == USERS_DIR


def test_user_files_are_yaml_with_a_mailbox() -> None:
    """Every users.d entry is a YAML file describing one mailbox."""
    users = one("ConfigMap", "syncd-users")["data"]

    assert users
    for name, text in users.items():
        assert name.endswith(".yaml")
        assert "@" in yaml.safe_load(text)["mailbox"]


def test_writable_paths_are_empty_dirs(pod: Doc, container: Doc) -> None:
    """With a read-only root, /tmp and the state directory are emptyDirs."""
    by_path = {path: name for name, path in mounts(container).items()}

    assert "emptyDir" in volume(pod, by_path["/tmp"])
    assert "emptyDir" in volume(pod, by_path["/var/lib/syncd"])


def test_image_is_pinned(container: Doc) -> None:
    """The image names a version or digest, never `latest` or no tag."""
    image = container["image"]
    name, _, tag = image.rpartition(":")

    assert "@sha256:" in image or (name and "/" not in tag and tag != "latest")


def test_resources_are_bounded(container: Doc) -> None:
    """The container requests CPU and memory and has a memory limit."""
    resources = container["resources"]

    assert {"cpu", "memory"} <= resources["requests"].keys()
    assert "memory" in resources["limits"]


def test_service_exposes_metrics_of_the_pods() -> None:
    """The Service selects the pods and forwards the metrics port."""
    service = one("Service")
    pods = one("Deployment")["spec"]["template"]["metadata"]["labels"]

    assert service["spec"]["selector"].items() <= pods.items()
    assert [p["port"] for p in service["spec"]["ports"]] == [METRICS_PORT]


def test_disruption_budget_keeps_replicas_running() -> None:
    """The PodDisruptionBudget covers the pods and allows one down at a time."""
    budget = one("PodDisruptionBudget")
    pods = one("Deployment")["spec"]["template"]["metadata"]["labels"]

    assert budget["spec"]["selector"]["matchLabels"].items() <= pods.items()
    assert budget["spec"]["maxUnavailable"] == 1


def test_example_secret_is_not_applied() -> None:
    """The placeholder Secret is documentation, not part of the kustomization."""
    names = documents("kustomization.yaml")[0]["resources"]

    assert "secret.example.yaml" not in names
    assert all(d["kind"] != "Secret" for d in applied())


def test_configmaps_pass_check_config(tmp_path: Path) -> None:
    """`syncd check-config` accepts the ConfigMaps laid out as the pod mounts them."""
    layout = {"syncd-config": tmp_path / "config", "syncd-users": tmp_path / "users.d"}
    for name, directory in layout.items():
        directory.mkdir()
        for key, text in one("ConfigMap", name)["data"].items():
            (directory / key).write_text(text)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for key in ("graph.client_secret", "inloox.api_key"):
        (credentials / key).write_text("not-a-real-secret\n")
    env = {
        **os.environ,
        "SYNCD_LEDGER_PASSWORD": "not-a-real-password",
        "CREDENTIALS_DIRECTORY": str(credentials),
        "PYTHONPATH": str(ROOT),
    }

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from syncd.cli import main; main()",
            "check-config",
            "-c",
            str(layout["syncd-config"] / "syncd.yaml"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
