"""A changed configuration reaches events the delta rounds would not bring again."""

from __future__ import annotations

from syncd.runner import Runner

from .world import APOLLO, ZEPHYR, World, at


def _reload_with_apollo_rules(w: World, **change: str | None) -> None:
    """What SIGHUP does: a new runner over the same ledger, the rules that
    book on Apollo changed by ``change``."""
    user = w.config.users[0]
    rules = tuple(r.model_copy(update=change) if r.project == APOLLO
                  else r for r in user.rules)
    config = w.config.model_copy(
        update={"users": (user.model_copy(update={"rules": rules}),)})
    w.loop.run_until_complete(w.runner.aclose())
    w.runner = Runner(config, w.ledger, clock=w.clock)


def test_changed_rule_moves_booked_entries_after_a_reload(w: World) -> None:
    """A rule now mapping Apollo meetings to Zephyr moves the booked entry."""
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    _reload_with_apollo_rules(w, project=ZEPHYR)

    result = w.run_pass()

    assert result.updated == 1
    assert w.booked() == [(ZEPHYR, "2026-03-19T09:00", "2026-03-19T10:00")]


def test_unchanged_configuration_rereads_without_writing(w: World) -> None:
    """The first pass after a reload reads the window anew and writes nothing."""
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    writes = w.sim.stats.inloox_writes
    w.loop.run_until_complete(w.runner.aclose())
    w.runner = Runner(w.config, w.ledger, clock=w.clock)

    result = w.run_pass()

    assert (result.ok, result.booked, result.updated) == (True, 0, 0)
    assert w.sim.stats.inloox_writes == writes


TASK = "5c2d8e1f-4a3b-4c6d-9e7f-0a1b2c3d4e5f"


def test_task_removed_from_a_rule_is_removed_from_the_entry(w: World) -> None:
    """A rule that no longer names a task clears the booked entry's task."""
    _reload_with_apollo_rules(w, task=TASK)
    w.add("Apollo review", at(19, 9))
    w.run_pass()
    assert [e["TaskItemId"] for e in w.entries()] == [TASK]
    _reload_with_apollo_rules(w, task=None)

    result = w.run_pass()

    assert result.updated == 1
    assert [e["TaskItemId"] for e in w.entries()] == [None]
    assert w.booked() == [(APOLLO, "2026-03-19T09:00", "2026-03-19T10:00")]
