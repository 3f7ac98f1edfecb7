"""The ``syncd`` command line: the contract of DESIGN.md, errors become words here.

Heavy modules (msgraph, msal, SQLAlchemy) are imported inside the commands
that need them, so ``syncd --help`` and ``syncd check-config`` start fast.
"""

from __future__ import annotations

import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer

from syncd.errors import ConfigError, LedgerError, SyncdError

EX_OK, EX_FAIL, EX_USAGE, EX_CONFIG = 0, 1, 2, 78

app = typer.Typer(
    name="syncd",
    help="Book Outlook meetings as InLoox time entries, unattended and exactly once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Path of syncd.yaml.",
                       envvar="SYNCD_CONFIG")]
UserOption = Annotated[
    str | None, typer.Option("--user", "-u", help="Only this mailbox.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

T = TypeVar("T")


def main() -> None:
    """Entry point of the ``syncd`` script."""
    app()


def _out(text: str) -> None:
    """A line on stdout, secrets masked as in the logs."""
    from syncd.redact import redact_text

    typer.echo(redact_text(text))


def _err(text: str) -> None:
    """A line on stderr, secrets masked as in the logs."""
    from syncd.redact import redact_text

    typer.echo(redact_text(text), err=True)


def _die(message: str, code: int) -> NoReturn:
    _err(f"syncd: {message}")
    raise typer.Exit(code)


def _load(path: Path, *, strict: bool = True) -> Any:
    """The configuration; exits 78 listing every problem when it is wrong.

    Not ``strict``: users whose own file is wrong are left out (and listed),
    so one bad user file never stops the others.
    """
    from syncd.config import format_problems, load_config, load_config_lenient

    if strict:
        try:
            return load_config(path)
        except ConfigError as exc:
            _config_problems(path, format_problems(exc.problems))
    result = load_config_lenient(path)
    if result.config is None or not result.config.users:
        # Nothing left to serve: that is a broken configuration, not a partial one.
        _config_problems(path, format_problems(result.problems))
    if result.problems:
        from syncd.redact import mask_registered

        typer.echo(mask_registered(format_problems(result.problems)), err=True)
        _err(f"syncd: left out: {', '.join(result.rejected)}; the other "
             "users go on")
    return result.config


def _config_problems(path: Path, text: str) -> NoReturn:
    from syncd.redact import mask_registered

    typer.echo(mask_registered(text), err=True)
    _err(f"Fix these, then run `syncd check-config -c {path}` again.")
    raise typer.Exit(EX_CONFIG)


def _logging(config: Any, *, default_level: str | None = None) -> None:
    from syncd.logs import configure_logging
    from syncd.runner import register_secrets

    level = default_level or config.log.level
    configure_logging(level=level, fmt=config.log.format)
    register_secrets(config)


def _users(config: Any, only: str | None) -> list[str]:
    """Every configured mailbox, or the one ``--user`` names (any letter case)."""
    mailboxes = [u.mailbox for u in config.users]
    if only is None:
        return mailboxes
    match = [m for m in mailboxes if m.casefold() == only.casefold()]
    if match:
        return match
    if len(mailboxes) < _configured_users(config.source):
        # Its file may be the one left out for problems (listed above).
        _die(f"no valid user {only!r}: fix the problems listed above", EX_CONFIG)
    _die(f"no user {only!r} in the configuration "
         f"(configured: {', '.join(mailboxes) or 'none'})", EX_USAGE)


def _ledger(config: Any) -> Any:
    from syncd.ledger import Ledger

    try:
        return Ledger.open(config.ledger.url)
    except LedgerError as exc:
        _die(f"{exc} (check ledger.url in {config.source})", EX_FAIL)


def _reading_ledger(config: Any) -> Any:
    """The ledger for commands that only read; a missing one reads as empty.

    ``plan`` and ``status`` never create or migrate the real ledger.
    """
    from syncd.ledger import Ledger, LedgerSchemaMissing, ledger_file

    path = ledger_file(config.ledger.url)
    if path is not None and not path.exists():
        _err(f"syncd: no ledger at {path} yet: nothing is recorded as "
             "booked (check ledger.url if that is unexpected)")
    if path is None or path.exists():
        try:
            return Ledger.open(config.ledger.url, migrate=False)
        except LedgerSchemaMissing:
            pass
        except LedgerError as exc:
            _die(f"{exc} (check ledger.url in {config.source})", EX_FAIL)
    return Ledger.open("sqlite://")  # in memory: no booking recorded yet


def _run(coro: Coroutine[Any, Any, T]) -> T:
    import asyncio  # not for --help and check-config: ~50 ms of start-up

    return asyncio.run(coro)


# ---- commands ---------------------------------------------------------------


@app.command("check-config")
def check_config(config: ConfigOption) -> None:
    """Validate the configuration; list every problem with its file, line and key."""
    from syncd.config import format_problems, load_config_lenient

    result = load_config_lenient(config)
    problems = list(result.problems)
    if result.config is not None:
        # The users that are valid so far are checked against InLoox too, so
        # every problem is listed at once.
        problems += _project_problems(result.config)
    if problems or result.config is None:
        _config_problems(config, format_problems(problems))
    loaded = result.config
    users = ", ".join(u.mailbox for u in loaded.users) or "none"
    _out(f"{config}: ok ({len(loaded.users)} user(s): {users})")


def _project_problems(config: Any) -> list[Any]:
    """Project names InLoox does not know (only asked when a rule names one)."""
    from syncd.config import is_guid

    named = [p for u in config.users for p in
             (*(r.project for r in u.rules), *(r.task for r in u.rules),
              u.default_project) if p and not is_guid(p)]
    if not named:
        return []
    from syncd.logs import configure_logging
    from syncd.projects import check_project_names

    configure_logging(level="warning", fmt=config.log.format)
    return _run(check_project_names(config))


@app.command()
def once(config: ConfigOption, user: UserOption = None) -> None:
    """One pass for every (or one) user, then exit: 0 when all succeeded.

    Exit 1 when a user's pass failed, an event could not be booked, or a
    user was left out for a bad configuration file.
    """
    loaded = _load(config, strict=False)
    _logging(loaded)
    results = _run(_once(loaded, _users(loaded, user)))
    for result in results:
        _report_pass(result)
    partial = len(loaded.users) < _configured_users(config)
    ok = all(r.ok and not r.failed for r in results) and not partial
    raise typer.Exit(EX_OK if ok else EX_FAIL)


def _report_pass(result: Any) -> None:
    """A word on stderr for each user whose pass did not simply succeed."""
    if result.ok and not result.failed and not result.error_kind:
        return
    if result.ok and not result.failed:
        _err(f"syncd: {result.user}: not served ({result.error_kind})")
        return
    what = (f"{result.error_kind}: {result.error}" if not result.ok
            else f"{result.failed} event(s) failed; see `syncd status`")
    _err(f"syncd: {result.user}: {what}")


def _configured_users(path: Path) -> int:
    from syncd.config import load_config_lenient

    result = load_config_lenient(path)
    count = len(result.config.users) if result.config else 0
    return count + len(result.rejected)


async def _once(config: Any, mailboxes: list[str]) -> list[Any]:
    from syncd.runner import Runner

    ledger = _ledger(config)
    try:
        ledger.acquire_process_lock()
    except LedgerError as exc:
        ledger.close()
        _die(f"{exc}; `syncd once` cannot run beside it on SQLite", EX_FAIL)
    runner = Runner(config, ledger)
    try:
        return [await _timed_pass(runner, m, config.pass_timeout.total_seconds())
                for m in mailboxes]
    finally:
        await runner.aclose()
        ledger.close()


async def _timed_pass(runner: Any, mailbox: str, timeout: float) -> Any:
    """One pass cut at ``pass_timeout``, as the daemon cuts it."""
    import asyncio

    from syncd.model import PassResult

    try:
        return await asyncio.wait_for(runner.run_pass(mailbox), timeout)
    except TimeoutError:
        return PassResult(user=mailbox, ok=False, error_kind="timeout",
                          error=f"pass exceeded pass_timeout ({timeout:g}s)")


@app.command()
def plan(config: ConfigOption, user: UserOption = None,
         as_json: JsonOption = False) -> None:
    """Dry run: every event in the window, its decision and why. Writes nothing."""
    loaded = _load(config, strict=False)
    _logging(loaded, default_level="warning")
    plans = _run(_plan(loaded, _users(loaded, user)))
    failed = [m for m, p in plans.items() if isinstance(p, Exception)]
    partial = len(loaded.users) < _configured_users(config)
    if as_json:
        _out(json.dumps({m: _plan_json(p) for m, p in plans.items()},
                              indent=2, ensure_ascii=False))
    else:
        for mailbox, planned in plans.items():
            _print_plan(f"{mailbox} (times in {loaded.user(mailbox).timezone})",
                        planned)
    raise typer.Exit(EX_FAIL if failed or partial else EX_OK)


async def _plan(config: Any, mailboxes: list[str]) -> dict[str, Any]:
    from syncd.runner import Runner

    ledger = _reading_ledger(config)
    runner = Runner(config, ledger, use_leases=False)
    plans: dict[str, Any] = {}
    try:
        for mailbox in mailboxes:
            try:
                plans[mailbox] = await runner.plan(mailbox)
            except SyncdError as exc:
                plans[mailbox] = exc
    finally:
        await runner.aclose()
        ledger.close()
    return plans


def _plan_json(planned: Any) -> Any:
    if isinstance(planned, Exception):
        return {"error": str(planned)}
    return [
        {"event_id": p.action.event_id, "subject": p.subject, "start": p.start,
         "end": p.end, "action": p.action.kind, "book": p.action.decision.book,
         "project": p.action.decision.project, "task": p.action.decision.task,
         "rule": p.action.decision.rule, "reason": p.action.decision.reason,
         "why": p.action.why}
        for p in planned
    ]


def _print_plan(mailbox: str, planned: Any) -> None:
    _out(f"== {mailbox}")
    if isinstance(planned, Exception):
        _out(f"   error: {planned}")
        return
    for p in planned:
        decision = p.action.decision
        verdict = (f"book on {decision.project}" if decision.book
                   else f"skip ({decision.reason})")
        subject = (p.subject or "(no subject)")[:40]
        _out(f"   {p.start[:16]:16}  {subject:40}  {p.action.kind:8} "
                   f"{verdict}  - {p.action.why}")
    counts: dict[str, int] = {}
    for p in planned:
        counts[p.action.kind] = counts.get(p.action.kind, 0) + 1
    _out("   " + ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))


@app.command()
def status(config: ConfigOption, as_json: JsonOption = False) -> None:
    """Per user: last success, counts by state and reason, recent failures."""
    loaded = _load(config, strict=False)
    _logging(loaded, default_level="warning")
    ledger = _reading_ledger(loaded)
    try:
        rows = ledger.status([u.mailbox for u in loaded.users])
    finally:
        ledger.close()
    if as_json:
        _out(json.dumps(rows, indent=2, default=str, ensure_ascii=False))
        return
    for row in rows:
        _print_status(row)


def _print_status(row: dict[str, Any]) -> None:
    _out(f"== {row.get('user')}  status: {row.get('status', 'active')}")
    _out(f"   last success: {row.get('last_success_at') or 'never'}"
               f"   last pass: {row.get('last_pass_at') or 'never'}")
    lease = row.get("lease")
    if lease:
        _out(f"   lease: {lease['owner']} until {lease['expires_at']} (a lease "
             "past its time is taken over by another replica)")
    states = row.get("states") or row.get("counts") or {}
    _out("   states: " + (", ".join(f"{k}={v}" for k, v in
                                          sorted(states.items())) or "none"))
    reasons = row.get("skip_reasons") or row.get("reasons") or {}
    if reasons:
        _out("   skipped: " + ", ".join(f"{k}={v}" for k, v in
                                              sorted(reasons.items())))
    for failure in row.get("recent_failures", [])[:5]:
        _out(f"   failed {str(failure.get('updated_at') or '')[:16]}  "
                   f"{failure.get('state')}  event {failure.get('event_id')}: "
                   f"{failure.get('last_error') or 'no message'}")


@app.command()
def retry(config: ConfigOption, user: UserOption = None,
          event: Annotated[str | None, typer.Option(help="Only this event id.")]
          = None) -> None:
    """Make failed bookings eligible again and resume users paused by an auth
    failure or throttling; the next pass tries them."""
    loaded = _load(config, strict=False)
    _logging(loaded, default_level="warning")
    only = _users(loaded, user)[0] if user is not None else None
    ledger = _ledger(loaded)
    try:
        if event is not None and not _event_known(ledger, loaded, only, event):
            _die(f"no booking of event {event!r} in the ledger"
                 + (f" for {only}" if only else ""), EX_USAGE)
        count = ledger.reset_failed(only, event)
        resumed = [] if event is not None else _resume(ledger, loaded, only)
    finally:
        ledger.close()
    _out(f"{count} failed booking(s) will be tried on the next pass")
    for mailbox, status in resumed:
        _out(f"{mailbox}: was {status}; resumed")


def _event_known(ledger: Any, config: Any, only: str | None, event: str) -> bool:
    mailboxes = [only] if only else [u.mailbox for u in config.users]
    return any(ledger.get(m, event) is not None for m in mailboxes)


def _resume(ledger: Any, config: Any, only: str | None) -> list[tuple[str, str]]:
    """Users in ``auth_required`` or ``paused`` set active again."""
    resumed = []
    for mailbox in [only] if only else [u.mailbox for u in config.users]:
        state = ledger.user_state(mailbox)
        if state is not None and state.status != "active":
            ledger.set_user_status(mailbox, "active")
            resumed.append((mailbox, state.status))
    return resumed


@app.command()
def login(config: ConfigOption,
          user: Annotated[str, typer.Option("--user", "-u", help="The mailbox.")]
          ) -> None:
    """Device-code sign-in for one user; the token is cached, never printed."""
    from syncd.runner import build_auth

    loaded = _load(config)
    _logging(loaded, default_level="warning")
    _users(loaded, user)
    if loaded.graph.auth != "device_code":
        _die("login is for graph.auth: device_code; this configuration uses "
             f"{loaded.graph.auth}", EX_USAGE)
    try:
        account = build_auth(loaded).login(typer.echo, mailbox=user)
    except SyncdError as exc:
        _die(str(exc), EX_FAIL)
    _out(f"signed in as {account}; token cached in {loaded.graph.token_cache}")


@app.command()
def run(config: ConfigOption, user: UserOption = None) -> None:
    """The daemon: scheduler, signals, health. Exits 0 after a clean stop."""
    import signal

    # A reload asked for while starting must not kill the process: the
    # service installs its own handler once it runs (and reads the files then).
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    loaded = _load(config, strict=False)
    _logging(loaded)
    only = _users(loaded, user)[0] if user is not None else None
    from syncd.daemon import run_daemon

    try:
        code = run_daemon(config, only=only)
    except LedgerError as exc:
        _die(str(exc), EX_FAIL)
    raise typer.Exit(code)


@app.command()
def demo(keep: Annotated[bool, typer.Option(help="Keep the demo directory.")]
         = False) -> None:
    """Start the simulator, run passes against it and show what was booked."""
    from syncd.demo import run_demo

    raise typer.Exit(run_demo(keep=keep))


@app.command()
def sim(scenario: Annotated[Path | None, typer.Option(
            help="Scenario YAML (default: the built-in fortnight).")] = None,
        port: Annotated[int, typer.Option(help="Port on 127.0.0.1 (0: any).")] = 0,
        config_dir: Annotated[Path | None, typer.Option(
            help="Where to write the ready configuration.")] = None) -> None:
    """Run the simulator of Microsoft and InLoox standalone and print its config."""
    from syncd.sim import ScenarioError, serve

    try:
        code = serve(scenario, port=port, config_dir=config_dir)
    except ScenarioError as exc:
        _die(f"{scenario}: {exc}", EX_CONFIG)
    raise typer.Exit(code or 0)


if __name__ == "__main__":  # pragma: no cover
    main()
