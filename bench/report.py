"""Issue 6's figures from a run's raw measurements, and the printed table."""

from __future__ import annotations

from typing import Any

PASSES_PER_SECOND_10K = 10_000 / 300  # 10,000 users polled every 5 minutes


def _row(key: str, name: str, value: float, unit: str, target: float, op: str,
         note: str = "", profile: str | None = None) -> dict[str, Any]:
    ok = value <= target if op == "<=" else value >= target
    if op == "==":
        ok = value == target
    return {"key": key, "figure": name, "value": value, "unit": unit,
            "target": target, "op": op, "ok": ok, "note": note, "profile": profile}


def figures(report: dict[str, Any]) -> list[dict[str, Any]]:
    main, memory = report["main"], report["memory"]
    return [*_quiet(main), _backlog(report, "backlog"),
            _backlog(report, "backlog_whatif"), *_cpu(main), *_memory(memory),
            _scale(main, memory), *_startup(main)]


def _quiet(main: dict[str, Any]) -> list[dict[str, Any]]:
    quiet = main["quiet"]
    passes = max(1, quiet["passes"])
    graph = quiet["requests"]["graph"] / passes
    rows = [
        _row("quiet_graph_requests", "quiet pass: Graph requests per user pass",
             graph, "req", 1.05, "<="),
        _row("quiet_inloox_requests", "quiet pass: InLoox requests (all passes)",
             quiet["requests"]["inloox"], "req", 0, "<="),
    ]
    for reread in main["reread"]:
        polls = max(1, reread["polls"])
        per_poll = reread["requests"]["graph"] / polls
        size = reread["page_size"] or "server default (10)"
        rows.append(_row(
            f"reread_ratio_{reread['page_size'] or 'default'}",
            f"full re-read / syncd, Graph requests per poll, page size {size}",
            per_poll / max(graph, 1e-9), "x", 10, ">=",
            note=(f"re-read {per_poll:.2f} req, {reread['events'] / polls:.0f} "
                  f"events, {reread['bytes'] / polls / 1024:.1f} KiB and "
                  f"{reread['cpu'] * 1000 / polls:.2f} ms CPU per poll; syncd "
                  f"{graph:.2f} req, {quiet['seen'] / passes:.0f} events per pass")))
    return rows


def _backlog(report: dict[str, Any], name: str) -> dict[str, Any]:
    backlog, bound = report["main"][name], report["lower_bound"]
    settings = report["settings"]
    title = "backlog: wall time / lower bound"
    if name != "backlog":
        title += f" (what-if: {backlog['parallel']} passes at once)"
    return _row(
        f"{name}_vs_bound", title,
        backlog["wall"] / bound["seconds"], "x", 1.25, "<=",
        note=(f"{backlog['booked']} booked in {backlog['wall']:.1f} s, lower bound "
              f"{bound['seconds']:.2f} s = {bound['formula']} "
              f"({settings['users']} users x "
              f"{settings['events']} events, {settings['latency'] * 1000:.0f} ms, "
              f"InLoox concurrency {settings['inloox_concurrency']}, "
              f"{backlog['parallel']} passes at once; peak InLoox in flight "
              f"{backlog['requests']['inloox_max_concurrent']})"),
        profile="booked_per_event")


def quiet_cpu_ms(main: dict[str, Any]) -> float:
    quiet = main["quiet"]
    return float(quiet["cpu"] * 1000 / max(1, quiet["passes"]))


def _cpu(main: dict[str, Any]) -> list[dict[str, Any]]:
    backlog, unchanged = main["backlog"], main["unchanged"]
    per_pass = quiet_cpu_ms(main)
    rest = unchanged["cpu"] * 1000 - per_pass * unchanged["passes"]
    return [
        _row("cpu_booked_event", "CPU per booked event (HTTP included)",
             backlog["cpu"] * 1000 / max(1, backlog["booked"]), "ms", 2.0, "<=",
             note=f"{backlog['cpu']:.2f} s CPU for {backlog['booked']} bookings",
             profile="booked_per_event"),
        _row("cpu_unchanged_event", "CPU per unchanged event in a round",
             rest / max(1, unchanged["seen"]), "ms", 0.1, "<=",
             note=(f"fresh round of {unchanged['seen']} unchanged events, minus "
                   "the quiet-pass cost"),
             profile="unchanged_round_per_event"),
        _row("cpu_quiet_pass", "CPU per quiet user pass", per_pass, "ms", 3.0, "<=",
             note=f"{main['quiet']['passes']} passes", profile="quiet_pass"),
    ]


def _memory(memory: list[dict[str, Any]]) -> list[dict[str, Any]]:
    small, large = memory
    peak = large["rss_peak_kb"] / 1024
    marginal = ((large["rss_peak_kb"] - small["rss_peak_kb"])
                / max(1, large["users"] - small["users"]))
    return [
        _row("rss_peak", f"peak RSS with {large['users']} users configured",
             peak, "MB", 150, "<=",
             note=f"after config {large['rss_config_kb'] / 1024:.0f} MB; "
                  f"{small['users']} users: {small['rss_peak_kb'] / 1024:.0f} MB"),
        _row("rss_per_user", "memory per additional user", marginal, "KB", 20, "<=",
             note=f"({large['users']} - {small['users']} users) peak RSS difference"),
    ]


def _scale(main: dict[str, Any], memory: list[dict[str, Any]]) -> dict[str, Any]:
    """CPU per quiet pass, growing linearly with the number of users configured."""
    small, large = memory
    at_small = small["quiet_cpu"] * 1000 / max(1, small["quiet"]["passes"])
    at_large = large["quiet_cpu"] * 1000 / max(1, large["quiet"]["passes"])
    slope = max(0.0, (at_large - at_small) / max(1, large["users"] - small["users"]))
    at_10k = at_large + slope * (10_000 - large["users"])
    share = at_10k * PASSES_PER_SECOND_10K / 1000
    return _row(
        "scale_10k", "10,000 users every 5 min: share of one core",
        share * 100, "%", 25, "<=",
        note=(f"{PASSES_PER_SECOND_10K:.1f} quiet passes/s x {at_10k:.2f} ms "
              f"(quiet pass CPU {at_small:.2f} ms at {small['users']} users, "
              f"{at_large:.2f} ms at {large['users']}, extrapolated linearly to "
              "10,000); scheduler and metrics scraping not included"),
        profile="quiet_pass")


def _startup(main: dict[str, Any]) -> list[dict[str, Any]]:
    startup = main["startup"]
    return [
        _row("startup_help", "start-up: syncd --help (median)",
             startup["help"]["median"], "s", 0.5, "<="),
        _row("startup_check_config", "start-up: syncd check-config (median)",
             startup["check_config"]["median"], "s", 0.5, "<="),
    ]


def render(report: dict[str, Any]) -> str:
    lines = [f"syncd benchmark ({report['size']}): {report['cpus']} CPUs, load "
             f"{report['load_before']} before, {report['load_after']} after, "
             f"{report['seconds']} s", ""]
    width = max(len(r["figure"]) for r in report["figures"])
    lines.append(f"{'figure':{width}}  {'measured':>12}  {'target':>10}  ok")
    for row in report["figures"]:
        value = f"{row['value']:.3g} {row['unit']}"
        target = f"{row['op']} {row['target']:g}"
        lines.append(f"{row['figure']:{width}}  {value:>12}  {target:>10}  "
                     f"{'yes' if row['ok'] else 'NO'}")
        if row["note"]:
            lines.append(f"{'':{width}}    {row['note']}")
    lines += _profiles(report)
    return "\n".join(lines)


def _profiles(report: dict[str, Any]) -> list[str]:
    """Profile summaries of every figure that missed its target."""
    profiles = report["main"].get("profiles", {})
    wanted = sorted({r["profile"] for r in report["figures"]
                     if not r["ok"] and r["profile"] in profiles})
    lines: list[str] = []
    for name in wanted:
        lines += ["", f"profile {name} (cProfile CPU ms per unit, inflated by the "
                      "profiler; own time, then time inside syncd's functions):"]
        for kind, field in (("own", "own_ms_per_unit"),
                            ("syncd_cumulative", "cum_ms_per_unit")):
            for row in profiles[name][kind][:8]:
                lines.append(f"  {kind[:5]:5} {row[field]:8.3f} ms "
                             f"{row['calls_per_unit']:7.2f} calls  {row['function']}")
    return lines
