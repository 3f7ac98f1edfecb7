"""``syncd demo``: the whole product on a fresh machine, against the simulator.

Starts the simulator with the default scenario, writes a configuration for
it, runs a pass for every user, changes a calendar (a meeting is added, a
booked one is cancelled), runs again and shows what was booked and why.

The scenario's fortnight may be more than ``freeze_after`` (7 days) old, and
syncd never touches entries that old: so that a cancellation shows on any
day of the week, the demo adds yesterday's meeting before the first pass and
cancels that one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer

from syncd.model import Action

NEW_MEETING = "Customer call: Apollo rollout (added for the demo)"
RECENT_MEETING = "Apollo status call (added for the demo)"

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(UTC)


def run_demo(*, keep: bool = False, clock: Clock = _utcnow) -> int:
    """Run the demo; returns the exit code (0 when both passes went as promised).

    ``clock`` is the time the simulator and syncd see (tests move it).
    """
    from syncd.logs import configure_logging
    from syncd.sim import Simulator, load_scenario

    configure_logging(level="warning", fmt="console")
    workdir = Path(tempfile.mkdtemp(prefix="syncd-demo-"))
    try:
        with Simulator(load_scenario(None), clock=clock) as sim:
            return asyncio.run(_demo(sim, workdir, clock))
    finally:
        if keep:
            typer.echo(f"\nDemo files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


async def _demo(sim: Any, workdir: Path, clock: Clock) -> int:
    from syncd.config import load_config
    from syncd.ledger import Ledger
    from syncd.runner import Runner

    path = sim.write_config(workdir, ledger_url=f"sqlite:///{workdir / 'ledger.db'}")
    os.environ.update(sim.config_env(workdir))
    config = load_config(path)
    _heading(f"Simulator at {sim.base_url} - {len(config.users)} users, "
             f"config in {path}")

    ledger = Ledger.open(config.ledger.url, clock=clock)
    runner = Runner(config, ledger, clock=clock)
    mailbox = config.users[0].mailbox
    recent = _add_meeting(sim, mailbox, RECENT_MEETING, clock() - timedelta(days=1))
    try:
        first = await _pass(runner, config, "Pass 1: the last fortnight "
                            "(and yesterday's meeting)")
        _show_entries(sim, config)
        _add_meeting(sim, mailbox, NEW_MEETING, clock() - timedelta(hours=2))
        sim.calendar(mailbox).update_event(recent, is_cancelled=True)
        change = (f"{mailbox}: one meeting added, yesterday's booked meeting "
                  "cancelled")
        second = await _pass(runner, config, f"Pass 2: after the calendar changed "
                             f"({change})")
        third = await _pass(runner, config, "Pass 3: nothing changed")
    finally:
        await runner.aclose()
        ledger.close()
    return _verdict(first, second, third)


async def _pass(runner: Any, config: Any, title: str) -> dict[str, Any]:
    _heading(title)
    results = {}
    for user in config.users:
        result = await runner.run_pass(user.mailbox)
        results[user.mailbox] = result
        _show_actions(user.mailbox, result, runner.last_actions.get(user.mailbox, []))
    return results


def _show_actions(mailbox: str, result: Any, actions: list[Action]) -> None:
    status = "ok" if result.ok else f"FAILED ({result.error_kind}: {result.error})"
    typer.echo(f"\n  {mailbox}: {status}; booked {result.booked}, updated "
               f"{result.updated}, retracted {result.retracted}, "
               f"{result.requests} HTTP requests")
    for action in actions:
        if action.kind in ("create", "update", "retract", "recover"):
            typer.echo(f"    {action.kind:8} {_label(action)}  <- {action.why}")
    skipped = Counter(a.decision.reason.split(":")[0] for a in actions
                      if a.kind == "skip")
    if skipped:
        typer.echo("    skipped: " + ", ".join(f"{n} {reason}"
                                              for reason, n in sorted(skipped.items())))


def _label(action: Action) -> str:
    event = action.event
    if event is None:
        return action.event_id[:16]
    start = event.start.isoformat()[:16].replace("T", " ")
    return f"{start}  {(event.subject or '')[:44]:44}"


def _show_entries(sim: Any, config: Any) -> None:
    _heading("InLoox time entries now")
    for user in config.users:
        entries = sorted(sim.inloox_entries(user.mailbox),
                         key=lambda e: e["StartDateTime"])
        typer.echo(f"\n  {user.mailbox}: {len(entries)} entries")
        for entry in entries:
            typer.echo(f"    {entry['StartDateTime'][:16].replace('T', ' ')}  "
                       f"{entry['DurationMinutes']:>4} min  "
                       f"{(entry.get('DisplayName') or '')[:44]:44}  "
                       f"project {_project_name(sim, entry['ProjectId'])}")


def _project_name(sim: Any, project_id: str) -> str:
    for project in sim.scenario.projects:
        if project.project_id == project_id:
            return str(project.name)
    return project_id


def _add_meeting(sim: Any, mailbox: str, subject: str, end: datetime) -> str:
    """An hour's meeting with the Apollo category, ending at ``end``'s hour."""
    end = end.replace(minute=0, second=0, microsecond=0)
    return str(sim.calendar(mailbox).add_event(
        subject=subject, start=end - timedelta(hours=1), end=end,
        categories=["Apollo"]))


def _verdict(first: dict[str, Any], second: dict[str, Any],
             third: dict[str, Any]) -> int:
    booked_first = sum(r.booked for r in first.values())
    booked_second = sum(r.booked for r in second.values())
    retracted = sum(r.retracted for r in second.values())
    booked_third = sum(r.booked + r.updated + r.retracted for r in third.values())
    ok = all(r.ok for r in (*first.values(), *second.values(), *third.values()))
    _heading("Result")
    typer.echo(f"  pass 1 booked {booked_first} meetings; pass 2 booked "
               f"{booked_second} new and retracted {retracted} cancelled; "
               f"pass 3 changed {booked_third} (nothing to do)")
    good = ok and booked_second == 1 and retracted == 1 and booked_third == 0
    typer.echo("  exactly once: " + ("yes" if good else "NO - see above"))
    return 0 if good else 1


def _heading(text: str) -> None:
    typer.echo(f"\n== {text}")
