"""No secret in any output: client secret, InLoox keys and tokens, at debug level."""

from __future__ import annotations

import re
import signal
from collections import Counter
from collections.abc import Callable

import pytest

from syncd.sim import Simulator
from tests.e2e.support import (
    CliResult,
    Process,
    SimConfig,
    log_events,
    run_syncd,
)
from tests.integration.default_scenario import USERS

pytestmark = pytest.mark.slow

JWT = "eyJ"
"""How every JSON Web Token starts (the simulator's access tokens are JWT-shaped)."""
BEARER = re.compile(r"(?i)bearer\s+(?!\*\*\*)[A-Za-z0-9._~+/=-]{8,}")


def secrets_of(sim: Simulator) -> list[str]:
    return [sim.client_secret, *(sim.inloox_key(user) for user in USERS)]


def leaks(sim: Simulator, output: str) -> list[str]:
    """Each secret or token-looking string ``output`` contains."""
    found = [s for s in secrets_of(sim) if s in output]
    found += [JWT] if JWT in output else []
    return found + BEARER.findall(output)


def _daemon_output(sim_config: SimConfig,
                   syncd_process: Callable[..., Process]) -> str:
    """What `syncd run` prints until every user had a pass, and while it stops."""
    daemon = syncd_process("run", "-c", str(sim_config.path), env=sim_config.env)
    daemon.wait_for(
        lambda: set(USERS) <= {e.get("user") for e in log_events(daemon.stderr)
                               if e.get("event") == "pass_finished"},
        20, "a pass of every user")
    assert daemon.stop(signal.SIGTERM) == 0, daemon
    return daemon.output


def test_no_secret_in_any_output_at_debug_level(
        sim: Simulator, sim_config: SimConfig,
        syncd_process: Callable[..., Process]) -> None:
    """once, plan, status and run print no secret, key or token, even at debug."""
    sim_config.edit({"log": {"level": "debug", "format": "json"},
                     "schedule": {"interval": "1s", "jitter": "0s"}})
    config = str(sim_config.path)
    commands: dict[str, CliResult | str] = {
        " ".join(args): run_syncd(*args, "-c", config, env=sim_config.env)
        for args in (("once",), ("plan",), ("status",))
    }

    commands["run"] = _daemon_output(sim_config, syncd_process)

    assert sim.stats.tokens_issued["client_credentials"] >= 2
    for name, ran in commands.items():
        output = ran if isinstance(ran, str) else ran.output
        assert leaks(sim, output) == [], f"{name}:\n{output}"
    once = commands["once"]
    assert isinstance(once, CliResult) and once.code == 0, once
    levels = Counter(e.get("level") for e in log_events(once.stderr))
    assert levels["debug"] > 0, once


def test_no_secret_when_credentials_are_rejected(
        sim: Simulator, sim_config: SimConfig) -> None:
    """When the identity platform rejects the client secret, the error hides it."""
    sim_config.edit({"log": {"level": "debug", "format": "json"}})
    sim.faults.reject_client_secret()

    result = run_syncd("once", "-c", str(sim_config.path), env=sim_config.env)

    assert result.code == 1, result
    assert "user_auth_required" in result.stderr
    assert leaks(sim, result.output) == [], result


def test_no_secret_when_inloox_rejects_the_key(
        sim: Simulator, sim_config: SimConfig) -> None:
    """An InLoox key the server refuses is not echoed in any log line or message."""
    sim_config.edit({"log": {"level": "debug", "format": "json"}})
    wrong = "ilx_pat_wrong_" + "Zz9" * 8
    env = {**sim_config.env,
           "SYNCD_INLOOX_API_KEY_BOB": wrong}

    result = run_syncd("once", "-c", str(sim_config.path), "--user",
                       "bob@contoso.example", env=env)

    assert result.code == 1, result
    assert wrong not in result.output
    assert leaks(sim, result.output) == [], result


def test_no_secret_in_a_problem_about_a_misplaced_secret(
        sim: Simulator, sim_config: SimConfig) -> None:
    """A credential file referenced where it does not belong (a time zone, a
    URL) is named by the problem line, never printed."""
    sim_config.edit({"graph": {"authority": "${file:graph.client_secret}"}})

    result = run_syncd("check-config", "-c", str(sim_config.path),
                       env=sim_config.env)

    assert result.code == 78, result
    assert "graph.authority" in result.stderr
    assert leaks(sim, result.output) == [], result


def test_no_secret_in_the_summary_of_a_failed_pass(
        sim: Simulator, sim_config: SimConfig) -> None:
    """`once` names why a user failed on stderr with secrets masked, even
    when the failing setting quotes one."""
    sim_config.edit(
        {"graph": {"authority": f"{sim.base_url}/${{file:graph.client_secret}}"}})

    result = run_syncd("once", "-c", str(sim_config.path), env=sim_config.env)
    status = run_syncd("status", "--json", "-c", str(sim_config.path),
                       env=sim_config.env)
    plan = run_syncd("plan", "-c", str(sim_config.path), env=sim_config.env)

    assert result.code == 1, result
    assert "check graph.authority" in result.stderr
    assert "check graph.authority" in status.stdout  # the stored pass error
    for output in (result, status, plan):
        assert leaks(sim, output.output) == [], output
