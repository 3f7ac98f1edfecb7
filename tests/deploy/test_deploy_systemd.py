"""The systemd units: verified, hardened, and consistent with the docs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "systemd"
OPERATIONS = ROOT / "README.md"
SYSTEM_BINARY = "/usr/local/bin/syncd"
USER_BINARY = "%h/.local/bin/syncd"
MAX_EXPOSURE = 1.5
EX_CONFIG = "78"

# (unit file, name to analyse it under): a template is analysed as an instance.
SYSTEM_UNITS = [
    ("syncd.service", "syncd.service"),
    ("syncd@.service", "syncd@alice@contoso.example.service"),
]
USER_UNIT = "user/syncd.service"
ALL_UNITS = [unit for unit, _ in SYSTEM_UNITS] + [USER_UNIT]

_EXPOSURE = re.compile(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)")


def directives(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) for every assignment, in file order, repeats kept."""
    section = ""
    found = []
    for raw in (UNITS / unit).read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        found.append((section, key.strip(), value.strip()))
    return found


def values(unit: str, key: str) -> list[str]:
    """Every value assigned to ``key`` in ``unit``."""
    return [value for _, k, value in directives(unit) if k == key]


@pytest.fixture(scope="module")
def analyze() -> str:
    """The systemd-analyze binary; missing is a failure in CI, a skip elsewhere."""
    path = shutil.which("systemd-analyze")
    if path is not None:
        return path
    if os.environ.get("CI"):
        pytest.fail("systemd-analyze is missing in CI: install Debian's systemd")
    pytest.skip("systemd-analyze is not installed")


def installable_copy(unit: str, name: str, tmp_path: Path) -> Path:
    """Copy ``unit`` as ``name`` with its syncd binary pointing at a real file.

    `verify` insists that ExecStart= binaries exist; everything else is unchanged.
    """
    fake = tmp_path / "bin" / "syncd"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = (UNITS / unit).read_text()
    text = text.replace(SYSTEM_BINARY, str(fake)).replace(USER_BINARY, str(fake))
    units = tmp_path / "units"
    units.mkdir()
    (units / Path(unit).name).write_text(text)
    return units / name


def run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command, capturing its output as text."""
    return subprocess.run(  # type: ignore[call-overload, no-any-return]
        command, capture_output=True, text=True, timeout=60, check=False, **kwargs
    )


@pytest.mark.parametrize(("unit", "name"), SYSTEM_UNITS)
def test_system_unit_verifies_clean(
    analyze: str, unit: str, name: str, tmp_path: Path
) -> None:
    """`systemd-analyze verify` accepts each system unit without a warning."""
    copy = installable_copy(unit, name, tmp_path)

    result = run([analyze, "verify", "--man=no", str(copy)])

    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_user_unit_verifies_clean(analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze --user verify` accepts the desktop unit."""
    copy = installable_copy(USER_UNIT, "syncd.service", tmp_path)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}

    result = run([analyze, "--user", "verify", "--man=no", str(copy)], env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


@pytest.mark.parametrize(("unit", "name"), SYSTEM_UNITS)
def test_system_unit_exposure_is_low(
    analyze: str, unit: str, name: str, tmp_path: Path
) -> None:
    """`systemd-analyze security --offline=yes` scores each system unit <= 1.5."""
    copy = installable_copy(unit, name, tmp_path)

    result = run([analyze, "security", "--offline=yes", "--no-pager", str(copy)])
    match = _EXPOSURE.search(result.stdout)

    assert match is not None, result.stdout + result.stderr
    assert float(match.group(1)) <= MAX_EXPOSURE


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_unit_is_a_notify_service_with_watchdog(unit: str) -> None:
    """Every unit waits for READY, lets only syncd notify, and has a watchdog."""
    assert values(unit, "Type") == ["notify"]
    assert values(unit, "NotifyAccess") == ["main"]
    assert values(unit, "WatchdogSec") != []


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_unit_reports_config_before_start_and_reload(unit: str) -> None:
    """check-config reports before start and before the HUP, its status ignored.

    A failing ExecStartPre= is not the main process, so RestartPreventExitStatus=
    would not stop its restart loop: `syncd run` (and the daemon on HUP) decide.
    """
    check = f"-{USER_BINARY if unit == USER_UNIT else SYSTEM_BINARY} check-config -c "
    reload = values(unit, "ExecReload")

    assert any(v.startswith(check) for v in values(unit, "ExecStartPre"))
    assert reload[0].startswith(check)
    assert reload[-1] == "/bin/kill -HUP $MAINPID"


@pytest.mark.parametrize("unit", ALL_UNITS)
def test_bad_config_is_not_restarted(unit: str) -> None:
    """Exit 78 (EX_CONFIG) stops the restart loop; other failures restart."""
    assert values(unit, "Restart") == ["on-failure"]
    assert values(unit, "RestartPreventExitStatus") == [EX_CONFIG]


def test_template_serves_only_its_instance() -> None:
    """syncd@.service passes its mailbox to `run --user` and has its own state."""
    unit = "syncd@.service"

    assert values(unit, "ExecStart")[0].endswith(
        " run -c /etc/syncd/syncd.yaml --user %I"
    )
    assert values(unit, "StateDirectory") == ["syncd/%i"]


@pytest.mark.parametrize("unit", [unit for unit, _ in SYSTEM_UNITS])
def test_system_unit_loads_credentials_under_config_names(unit: str) -> None:
    """Secrets arrive as the credential files the config reads by key name."""
    names = {v.partition(":")[0] for v in values(unit, "LoadCredential")}

    assert names == {"graph.client_secret", "inloox.api_key"}


def test_docs_install_the_binary_where_the_units_run_it() -> None:
    """The README's operations guide links the venv's syncd where the units run it."""
    text = OPERATIONS.read_text()

    assert f"ln -s /opt/syncd/venv/bin/syncd {SYSTEM_BINARY}" in text
    assert "~/.local/bin/syncd" in text
