"""The container image recipe, read as Docker would read it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
RUN_AS = "10001"

Instruction = tuple[str, str]

_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")


def instructions() -> list[Instruction]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, arguments = (pending + line).partition(" ")
        found.append((keyword.upper(), arguments.strip()))
        pending = ""
    return found


def stages() -> list[list[Instruction]]:
    """The build stages, each starting with its FROM."""
    result: list[list[Instruction]] = []
    for instruction in instructions():
        if instruction[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(instruction)
    return result


def global_args() -> dict[str, str]:
    """ARG defaults declared before the first FROM."""
    args: dict[str, str] = {}
    for keyword, arguments in instructions():
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name] = default
    return args


def base_image(stage: list[Instruction]) -> str:
    """The image a stage starts from, ARG references resolved."""
    image = stage[0][1].split()[0]
    return _VARIABLE.sub(lambda m: global_args()[m.group(1) or m.group(2)], image)


def last(stage: list[Instruction], keyword: str) -> str:
    """The arguments of the last ``keyword`` instruction in a stage."""
    found = [arguments for k, arguments in stage if k == keyword]
    assert found, f"no {keyword} in the stage"
    return found[-1]


def environment(stage: list[Instruction]) -> dict[str, str]:
    """ENV assignments (KEY=value form) of a stage."""
    result: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            for pair in arguments.split():
                key, _, value = pair.partition("=")
                result[key] = value
    return result


def test_build_has_a_builder_and_a_runtime_stage() -> None:
    """The image is multi-stage: build tools stay out of the final image."""
    final = stages()[-1]

    assert len(stages()) >= 2
    assert any(k == "COPY" and a.startswith("--from=") for k, a in final)


def test_final_stage_is_python_311_slim() -> None:
    """The runtime starts from a pinned python:3.11 slim image, not `latest`."""
    image = base_image(stages()[-1])

    assert image.startswith("python:3.11-slim")


def test_runs_as_numeric_non_root_user() -> None:
    """The final USER is numeric (user and group) and not root."""
    user, _, group = last(stages()[-1], "USER").partition(":")

    assert user == RUN_AS
    assert group in ("", RUN_AS)


def test_entrypoint_is_syncd_running_the_daemon() -> None:
    """`docker run IMAGE` starts `syncd run -c /etc/syncd/syncd.yaml`."""
    final = stages()[-1]

    assert json.loads(last(final, "ENTRYPOINT")) == ["syncd"]
    assert json.loads(last(final, "CMD")) == ["run", "-c", "/etc/syncd/syncd.yaml"]


def test_credentials_directory_matches_the_kubernetes_mount() -> None:
    """The image and the Deployment agree on where credential files live."""
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}

    assert environment(stages()[-1])["CREDENTIALS_DIRECTORY"] == mounts["credentials"]


def test_copied_sources_exist() -> None:
    """Every file the build copies from the context is in the repository."""
    sources = [
        path
        for stage in stages()
        for keyword, arguments in stage
        if keyword == "COPY" and not arguments.startswith("--")
        for path in arguments.split()[:-1]
    ]

    assert sources
    assert [s for s in sources if not (ROOT / s).exists()] == []
