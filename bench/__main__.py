"""Run the benchmark: ``python -m bench --size small|full [options]``.

Starts the simulator in a process of its own, runs syncd in worker
processes against it, runs the full re-read strategy side by side, prints a
table of every figure of issue 6 with its target and writes a JSON report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.report import figures, render
from bench.scenario import Shape, mailbox
from bench.simproc import READY
from bench.worker import RESULT
from syncd.service import DEFAULT_MAX_PARALLEL_PASSES

ROOT = Path(__file__).resolve().parent.parent
SERVICE_PARALLEL = DEFAULT_MAX_PARALLEL_PASSES  # what `syncd run` does today


@dataclass(frozen=True)
class Size:
    """Everything that differs between a quick check and the real figures."""

    users: int
    events: int
    latency: float
    inloox_concurrency: int
    parallel: int
    quiet_rounds: int
    reread_rounds: int
    profile_users: int
    memory_users: tuple[int, int]
    memory_events: int
    startup_runs: int
    whatif_parallel: int = 4  # a second backlog with this many passes at once
    memory_quiet_rounds: int = 3
    page_size: int = 50  # syncd's default graph.page_size


SIZES = {
    "small": Size(users=3, events=4, latency=0.01, inloox_concurrency=16,
                  parallel=SERVICE_PARALLEL, quiet_rounds=2, reread_rounds=2,
                  profile_users=1, memory_users=(4, 8), memory_events=2,
                  startup_runs=2),
    "full": Size(users=100, events=40, latency=0.1, inloox_concurrency=16,
                 parallel=SERVICE_PARALLEL, quiet_rounds=5, reread_rounds=3,
                 profile_users=16, memory_users=(1000, 2000), memory_events=4,
                 startup_runs=7),
}


def parse_args(argv: list[str] | None) -> tuple[Size, argparse.Namespace]:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--users", type=int, help="backlog users")
    parser.add_argument("--events", type=int, help="bookable events per user")
    parser.add_argument("--latency", type=float, help="seconds per simulated request")
    parser.add_argument("--inloox-concurrency", type=int)
    parser.add_argument("--parallel", type=int,
                        help="passes at once (the service's max_parallel_passes)")
    parser.add_argument("--memory-users", type=int, nargs=2, metavar=("N1", "N2"))
    parser.add_argument("--out", type=Path, default=Path("bench-report.json"),
                        help="where the JSON report goes")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    if args.latency is not None and args.latency <= 0:
        parser.error("--latency must be above 0 (the lower bound is made of it)")
    size = SIZES[args.size]
    changes = {k: getattr(args, k) for k in
               ("users", "events", "latency", "inloox_concurrency", "parallel")
               if getattr(args, k) is not None}
    if args.memory_users:
        changes["memory_users"] = tuple(args.memory_users)
    return Size(**{**asdict(size), **changes}), args


# -- processes --------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    return env


class SimProcess:
    """The simulator in its own process, stopped by closing its stdin."""

    def __init__(self, shapes: list[Shape], directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._log = open(directory / "sim.log", "w", encoding="utf-8")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.simproc"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._log, text=True, env=_env(),
            cwd=ROOT)
        assert self.process.stdin and self.process.stdout
        job = {"shapes": [asdict(s) for s in shapes], "config_dir": str(directory),
               "ledger_url": f"sqlite:///{directory / 'ledger.db'}"}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        self.info = _marked(self.process.stdout, READY, "simulator")

    def control(self, path: str, body: dict[str, Any]) -> None:
        import ssl

        import httpx

        trust = ssl.create_default_context(cafile=self.info["ca_path"])
        httpx.post(f"{self.info['control_url']}/{path}", json=body, verify=trust,
                   timeout=30).raise_for_status()

    def stop(self) -> None:
        assert self.process.stdin
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def _marked(stream: Any, marker: str, what: str) -> dict[str, Any]:
    for line in stream:
        if line.startswith(marker):
            return dict(json.loads(line[len(marker):]))
    raise RuntimeError(f"the {what} process ended without an answer")


def run_worker(job: dict[str, Any], log_path: Path) -> dict[str, Any]:
    with open(log_path.with_suffix(".err"), "w", encoding="utf-8") as errors:
        done = subprocess.run(
            [sys.executable, "-m", "bench.worker"], input=json.dumps(job),
            capture_output=False, stdout=subprocess.PIPE, stderr=errors, text=True,
            env=_env(), cwd=ROOT, check=False)
    for line in done.stdout.splitlines():
        if line.startswith(RESULT):
            return dict(json.loads(line[len(RESULT):]))
    raise RuntimeError(f"worker failed (exit {done.returncode}); see "
                       f"{log_path.with_suffix('.err')}")


# -- the runs ------------------------------------------------------------------------


def run_main(size: Size, work: Path) -> dict[str, Any]:
    shapes = [Shape(size.users, size.events, prefix="u"),
              Shape(size.profile_users, size.events, prefix="p"),
              Shape(size.users, size.events, prefix="w")]
    sim = SimProcess(shapes, work / "main")
    try:
        latency = {"identity": size.latency, "graph": size.latency,
                   "inloox": size.latency}
        sim.control("faults", {"latency": latency, "delta_duplicates": False,
                               "inloox_concurrency": size.inloox_concurrency,
                               "graph_concurrency_limit": 4})
        job = {"job": "main", "config": sim.info["config"], "env": sim.info["env"],
               "control_url": sim.info["control_url"], "ca_path": sim.info["ca_path"],
               "sim_pid": sim.process.pid,
               "log_path": str(work / "main" / "syncd.log"),
               "users": [mailbox("u", i) for i in range(size.users)],
               "profile_users": [mailbox("p", i) for i in range(size.profile_users)],
               "whatif_users": [mailbox("w", i) for i in range(size.users)],
               "whatif_parallel": size.whatif_parallel,
               "parallel": size.parallel, "quiet_rounds": size.quiet_rounds,
               "reread_rounds": size.reread_rounds,
               "reread_page_sizes": [size.page_size, None],
               "inloox_concurrency": size.inloox_concurrency}
        result = run_worker(job, work / "main" / "worker")
        result["startup"] = startup(sim.info, size.startup_runs)
        return result
    finally:
        sim.stop()


def run_memory(size: Size, work: Path) -> list[dict[str, Any]]:
    small, large = size.memory_users
    shapes = [Shape(large, size.memory_events, bookable=False, prefix="m")]
    directory = work / "memory"
    sim = SimProcess(shapes, directory)
    try:
        results = []
        for count in (small, large):
            config = _subset_config(sim.info["config"], count, directory)
            job = {"job": "memory", "config": str(config), "env": sim.info["env"],
                   "log_path": str(directory / f"syncd-{count}.log"),
                   "parallel": size.parallel, "inloox_concurrency": None,
                   "quiet_rounds": size.memory_quiet_rounds}
            results.append(run_worker(job, directory / f"worker-{count}"))
        return results
    finally:
        sim.stop()


def _subset_config(config: str, count: int, directory: Path) -> Path:
    """A copy of the simulator's configuration with only the first ``count`` users."""
    source = Path(config)
    subset = directory / f"users-{count}"
    users = subset / "users.d"
    users.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        name = f"{mailbox('m', index).split('@', 1)[0]}.yaml"
        target = users / name
        if not target.exists():
            target.symlink_to(source.parent / "users.d" / name)
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    data["users_dir"] = str(users)
    data["ledger"] = {"url": f"sqlite:///{subset / 'ledger.db'}"}
    path = subset / "syncd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def startup(info: dict[str, Any], runs: int) -> dict[str, Any]:
    """Median wall time of ``syncd --help`` and ``syncd check-config``."""
    env = {**_env(), **info["env"]}
    commands = {
        "help": [sys.executable, "-m", "syncd.cli", "--help"],
        "check_config": [sys.executable, "-m", "syncd.cli", "check-config", "-c",
                         info["config"]],
    }
    out: dict[str, Any] = {}
    for name, command in commands.items():
        times = []
        for _ in range(runs):
            started = time.perf_counter()
            done = subprocess.run(command, env=env, capture_output=True, check=False)
            times.append(time.perf_counter() - started)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} exited {done.returncode}: "
                                   f"{done.stderr.decode()[-400:]}")
        out[name] = {"median": statistics.median(times), "runs": times}
    return out


def lower_bound(size: Size) -> dict[str, Any]:
    """The fastest any client could book the backlog within the limits.

    One token request and one Graph page must precede the first create; then
    every create holds one of ``inloox_concurrency`` slots for one latency.
    (Graph's 4 requests per mailbox do not bind: a 40-event round is one page
    and mailboxes are independent.)
    """
    creates = size.users * size.events
    pages = max(1, math.ceil(size.events / size.page_size))
    waves = math.ceil(creates / size.inloox_concurrency)
    seconds = size.latency * (1 + pages + waves)
    return {"seconds": seconds, "creates": creates, "waves": waves,
            "formula": "latency x (1 token + pages + ceil(creates / inloox "
                       "concurrency))"}


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    size, args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="syncd-bench-"))
    started = time.perf_counter()
    report: dict[str, Any] = {"size": args.size, "settings": asdict(size),
                              "cpus": os.cpu_count(), "load_before": load_average(),
                              "lower_bound": lower_bound(size)}
    try:
        report["main"] = run_main(size, work)
        report["memory"] = run_memory(size, work)
    finally:
        report["load_after"] = load_average()
        report["seconds"] = round(time.perf_counter() - started, 1)
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report["figures"] = figures(report)
    args.out.write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(render(report))
    print(f"\nJSON report: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
