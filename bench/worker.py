"""syncd alone in a process: ``python -m bench.worker`` (a JSON job on stdin).

Jobs: ``main`` (backlog, settle, quiet, unchanged, full re-read, profiles)
and ``memory`` (peak RSS with N users configured).  Everything measured here
is syncd's own work: CPU is ``time.process_time()`` of this process, memory
its ``ru_maxrss``.  The result is one line ``BENCH-RESULT {json}``.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import os
import pstats
import resource
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

RESULT = "BENCH-RESULT "
T = TypeVar("T")


def max_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class Sim:
    """The simulator's control API, read between measurements (never inside)."""

    def __init__(self, control_url: str, ca_path: str, pid: int | None) -> None:
        self._url = control_url
        self._client = httpx.Client(
            verify=ssl.create_default_context(cafile=ca_path), timeout=60)
        self._pid = pid

    def cpu(self) -> float:
        """CPU seconds the simulator process has used so far (Linux /proc)."""
        if self._pid is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self._pid}/stat").read_text().rsplit(")", 1)[1]
        except OSError:
            return 0.0
        utime, stime = fields.split()[11:13]
        return (int(utime) + int(stime)) / os.sysconf("SC_CLK_TCK")

    def faults(self, **changes: Any) -> None:
        self._client.post(f"{self._url}/faults", json=changes).raise_for_status()

    def begin(self) -> float:
        """Start a phase: zero the simulator's counters; its CPU so far."""
        self._client.post(f"{self._url}/stats/reset").raise_for_status()
        return self.cpu()

    def requests(self, cpu_before: float) -> dict[str, int]:
        """What the simulator served since ``begin()``, by service, and the peak
        concurrency it saw (InLoox overall, Graph per mailbox)."""
        stats = self._client.get(f"{self._url}/stats").json()
        out: dict[str, int] = {"identity": 0, "graph": 0, "inloox": 0}
        for row in stats["requests"]:
            out[row["service"]] = out.get(row["service"], 0) + row["count"]
        out["inloox_creates"] = stats["inloox_creates"]
        out["inloox_max_concurrent"] = stats["inloox_max_concurrent"]
        out["graph_max_concurrent"] = max(stats["max_concurrent"].values(), default=0)
        out["throttled"] = stats["throttled"]
        out["sim_cpu_ms"] = int((self.cpu() - cpu_before) * 1000)
        return out


async def measure(work: Callable[[], Awaitable[T]],
                  profile: cProfile.Profile | None = None) -> tuple[T, float, float]:
    """``(result, cpu seconds, wall seconds)`` of one awaited piece of work."""
    cpu, wall = time.process_time(), time.perf_counter()
    if profile is not None:
        profile.enable()
    try:
        result = await work()
    finally:
        if profile is not None:
            profile.disable()
    return result, time.process_time() - cpu, time.perf_counter() - wall


async def passes(runner: Any, mailboxes: Sequence[str], parallel: int) -> list[Any]:
    """One pass per user, at most ``parallel`` at once (like the service)."""
    limit = asyncio.Semaphore(parallel)

    async def one(mailbox: str) -> Any:
        async with limit:
            return await runner.run_pass(mailbox)

    return list(await asyncio.gather(*(one(m) for m in mailboxes)))


def totals(results: Sequence[Any]) -> dict[str, Any]:
    return {
        "passes": len(results),
        "ok": sum(1 for r in results if r.ok),
        "seen": sum(r.seen for r in results),
        "booked": sum(r.booked for r in results),
        "unchanged": sum(r.unchanged for r in results),
        "failed": sum(r.failed for r in results),
        "errors": sorted({f"{r.error_kind}: {r.error}" for r in results if not r.ok}),
    }


def profile_summary(profile: cProfile.Profile, units: int, dump_to: Path,
                    top: int = 12) -> dict[str, list[dict[str, Any]]]:
    """The functions with the most own time, and syncd's functions with the most
    time inside them, in ms per unit (event or pass).  Profiling slows every
    call down: compare the rows with each other, not with the timed figures.

    The whole profile is also written next to the logs for pstats/snakeviz.
    """
    stats = pstats.Stats(profile, stream=io.StringIO())
    stats.dump_stats(str(dump_to / f"profile-{len(list(dump_to.glob('*.prof')))}.prof"))
    rows = []
    for (path, line, name), (_cc, calls, tottime, cumtime, _) in stats.stats.items():  # type: ignore[attr-defined]
        where = f"{_short(path)}:{line}({name})"
        rows.append({"function": where, "calls_per_unit": round(calls / units, 2),
                     "own_ms_per_unit": round(tottime * 1000 / units, 4),
                     "cum_ms_per_unit": round(cumtime * 1000 / units, 4)})
    own = sorted(rows, key=lambda r: r["own_ms_per_unit"], reverse=True)[:top]
    ours = sorted((r for r in rows if r["function"].startswith("syncd/")),
                  key=lambda r: r["cum_ms_per_unit"], reverse=True)[:top]
    return {"own": own, "syncd_cumulative": ours}


def _short(path: str) -> str:
    for marker, prefix in (("site-packages/", ""), ("/syncd/", "syncd/"),
                           ("/lib/python", "python")):
        if marker in path:
            return prefix + path.split(marker, 1)[1]
    return path


# -- the jobs -------------------------------------------------------------------


def setup(job: dict[str, Any]) -> tuple[Any, Any, Any]:
    """Configuration, ledger and runner, the way ``syncd run`` builds them."""
    from syncd.config import load_config
    from syncd.ledger import Ledger
    from syncd.logs import configure_logging
    from syncd.runner import Runner, register_secrets

    os.environ.update(job["env"])
    log_stream = open(job["log_path"], "a", encoding="utf-8")  # noqa: SIM115
    configure_logging(level="info", fmt="json", stream=log_stream)
    config = load_config(Path(job["config"]))
    if job.get("inloox_concurrency"):
        http = config.http.model_copy(
            update={"inloox_concurrency": job["inloox_concurrency"]})
        config = config.model_copy(update={"http": http})
    register_secrets(config)
    ledger = Ledger.open(config.ledger.url)
    return config, ledger, Runner(config, ledger)


async def main_job(job: dict[str, Any]) -> dict[str, Any]:
    config, ledger, runner = setup(job)
    sim = Sim(job["control_url"], job["ca_path"], job.get("sim_pid"))
    users, extra = job["users"], job["profile_users"]
    parallel = job["parallel"]
    out: dict[str, Any] = {"parallel": parallel}
    try:
        await _backlog(out, runner, sim, users, parallel)
        await _settle(out, runner, sim, users, parallel)
        await _quiet(out, runner, sim, users, parallel, job["quiet_rounds"])
        await _unchanged(out, runner, ledger, sim, users, parallel)
        out["reread"] = [
            await _reread(config, runner, sim, users, parallel, size,
                          job["reread_rounds"])
            for size in job["reread_page_sizes"]]
        if job.get("whatif_users"):
            await _backlog(out, runner, sim, job["whatif_users"],
                           job["whatif_parallel"], "backlog_whatif")
        await _profiles(out, runner, ledger, sim, users, extra, parallel,
                        Path(job["log_path"]).parent)
    finally:
        await runner.aclose()
        ledger.close()
    return out


async def _backlog(out: dict[str, Any], runner: Any, sim: Sim, users: list[str],
                   parallel: int, name: str = "backlog") -> None:
    before = sim.begin()
    results, cpu, wall = await measure(lambda: passes(runner, users, parallel))
    out[name] = {"cpu": cpu, "wall": wall, "parallel": parallel, **totals(results),
                 "requests": sim.requests(before)}


async def _settle(out: dict[str, Any], runner: Any, sim: Sim, users: list[str],
                  parallel: int) -> None:
    """The pass after booking: InLoox tagged every event, so each one is back."""
    before = sim.begin()
    results, cpu, wall = await measure(lambda: passes(runner, users, parallel))
    out["settle"] = {"cpu": cpu, "wall": wall, **totals(results),
                     "requests": sim.requests(before)}


async def _quiet(out: dict[str, Any], runner: Any, sim: Sim, users: list[str],
                 parallel: int, rounds: int) -> None:
    before = sim.begin()
    cpu = wall = 0.0
    results: list[Any] = []
    for _ in range(rounds):
        got, c, w = await measure(lambda: passes(runner, users, parallel))
        results += got
        cpu, wall = cpu + c, wall + w
    out["quiet"] = {"cpu": cpu, "wall": wall, **totals(results),
                    "requests": sim.requests(before)}


async def _unchanged(out: dict[str, Any], runner: Any, ledger: Any, sim: Sim,
                     users: list[str], parallel: int) -> None:
    """A fresh round (as when the window moves): every event again, unchanged."""
    for mailbox in users:
        ledger.drop_cursor(mailbox)
    before = sim.begin()
    results, cpu, wall = await measure(lambda: passes(runner, users, parallel))
    out["unchanged"] = {"cpu": cpu, "wall": wall, **totals(results),
                        "requests": sim.requests(before)}


async def _reread(config: Any, runner: Any, sim: Sim, users: list[str],
                  parallel: int, page_size: int | None, rounds: int
                  ) -> dict[str, Any]:
    from bench.reread import FullReread
    from syncd.engine import window_for

    tool = FullReread(config.graph.base_url, runner.auth(), config.tls.ca_bundle,
                      page_size)
    limit = asyncio.Semaphore(parallel)
    now = runner.clock()
    windows = {m: window_for(config.user(m), now) for m in users}

    async def one(mailbox: str) -> Any:
        async with limit:
            return await tool.poll(mailbox, windows[mailbox])

    async def round_() -> list[Any]:
        got: list[Any] = []
        for _ in range(rounds):
            got += await asyncio.gather(*(one(m) for m in users))
        return got

    before = sim.begin()
    polls, cpu, wall = await measure(round_)
    await tool.aclose()
    return {"page_size": page_size, "polls": len(polls), "cpu": cpu, "wall": wall,
            "client_requests": sum(p.requests for p in polls),
            "bytes": sum(p.bytes for p in polls),
            "events": sum(p.events for p in polls),
            "requests": sim.requests(before)}


def cpu_profile() -> cProfile.Profile:
    """A profiler that counts CPU time (waiting for the network is not work)."""
    return cProfile.Profile(time.process_time)


async def _profiles(out: dict[str, Any], runner: Any, ledger: Any, sim: Sim,
                    users: list[str], extra: list[str], parallel: int,
                    dump_to: Path) -> None:
    """Where the time goes (cProfile; these runs are not the timed ones)."""
    profiles: dict[str, Any] = {}
    profile = cpu_profile()
    await measure(lambda: passes(runner, users, parallel), profile)
    profiles["quiet_pass"] = profile_summary(profile, len(users), dump_to)
    for mailbox in users:
        ledger.drop_cursor(mailbox)
    profile = cpu_profile()
    results, _, _ = await measure(lambda: passes(runner, users, parallel), profile)
    profiles["unchanged_round_per_event"] = profile_summary(
        profile, max(1, totals(results)["seen"]), dump_to)
    if extra:
        profile = cpu_profile()
        results, _, _ = await measure(lambda: passes(runner, extra, parallel),
                                      profile)
        profiles["booked_per_event"] = profile_summary(
            profile, max(1, totals(results)["booked"]), dump_to)
    out["profiles"] = profiles


async def memory_job(job: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"rss_start_kb": max_rss_kb()}
    config, ledger, runner = setup(job)
    out["rss_config_kb"] = max_rss_kb()
    out["users"] = len(config.users)
    users = [u.mailbox for u in config.users]
    try:
        first, cpu1, wall1 = await measure(
            lambda: passes(runner, users, job["parallel"]))
        rounds = []
        for _ in range(job.get("quiet_rounds", 1)):
            rounds.append(await measure(
                lambda: passes(runner, users, job["parallel"])))
    finally:
        await runner.aclose()
        ledger.close()
    quiet, cpu2, wall2 = sorted(rounds, key=lambda r: r[1])[len(rounds) // 2]
    out.update(first=totals(first), first_cpu=cpu1, first_wall=wall1,
               quiet=totals(quiet), quiet_cpu=cpu2, quiet_wall=wall2,
               quiet_round_cpus=[r[1] for r in rounds], rss_peak_kb=max_rss_kb())
    return out


JOBS = {"main": main_job, "memory": memory_job}


def main() -> int:
    job = json.loads(sys.stdin.read())
    result = asyncio.run(JOBS[job["job"]](job))
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
