"""The rules: which events are work, and on which project they are booked."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from syncd import rules
from syncd.model import Decision

from .factories import APOLLO, DEFAULT, NOW, ZEPHYR, at, event, user


def test_trigger_category_books_on_default_project() -> None:
    """An event with a trigger category and no matching rule goes to default_project."""
    decision = rules.decide(event(), user(), now=NOW)

    assert decision == Decision(book=True, project=DEFAULT, reason="default_project",
                                rule="default_project")


def test_first_matching_rule_wins() -> None:
    """Rules are tried in order; the first match gives project and label."""
    ev = event(categories=("Apollo",), subject="[ZEPHYR] kickoff")

    decision = rules.decide(ev, user(), now=NOW)

    assert (decision.book, decision.project, decision.rule) == (True, APOLLO, "apollo")


def test_rule_match_is_a_trigger_without_category() -> None:
    """A rule match alone makes an event a candidate."""
    ev = event(categories=(), subject="[ZEPHYR] design review")

    decision = rules.decide(ev, user(), now=NOW)

    assert (decision.project, decision.rule) == (ZEPHYR, "rules[1]")


def test_unselected_event_is_skipped() -> None:
    """No trigger category and no rule: not selected."""
    decision = rules.decide(event(categories=("Personal",)), user(), now=NOW)

    assert decision == Decision.skip("not_selected")


def test_unmapped_without_default_project() -> None:
    """Triggered but unmapped with default_project null: skipped as unmapped."""
    decision = rules.decide(event(), user(default_project=None), now=NOW)

    assert decision == Decision.skip("unmapped")


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"is_cancelled": True}, "cancelled"),
        ({"response": "declined"}, "declined"),
        ({"show_as": "free"}, "free"),
        ({"start": at(16, 10), "end": at(16, 10)}, "no_duration"),
        ({"start": at(16, 10), "end": at(16, 9)}, "no_duration"),
        ({"start": at(16, 6), "end": at(16, 19)}, "too_long"),
    ],
)
def test_default_skip_policies(fields: dict[str, object], reason: str) -> None:
    """Cancelled, declined, free, empty and overlong events are not work by default."""
    decision = rules.decide(event(**fields), user(), now=NOW)

    assert decision == Decision.skip(reason)


def test_all_day_is_skipped_by_default() -> None:
    """All-day events are dates and skipped by default."""
    ev = event(start=date(2026, 3, 16), end=date(2026, 3, 17), is_all_day=True)

    assert rules.decide(ev, user(), now=NOW) == Decision.skip("all_day")


def test_tentative_and_private_are_booked_by_default() -> None:
    """tentative: false and private: false are the contract's defaults."""
    tentative = event(response="tentativelyAccepted")
    private = event(sensitivity="private")

    assert rules.decide(tentative, user(), now=NOW).book
    assert rules.decide(private, user(), now=NOW).book


def test_tentative_and_private_skipped_when_configured() -> None:
    """The skip policy can turn tentative and private events away."""
    policy = user(skip={"tentative": True, "private": True})

    tentative = rules.decide(event(show_as="tentative"), policy, now=NOW)
    private = rules.decide(event(sensitivity="confidential"), policy, now=NOW)

    assert (tentative.reason, private.reason) == ("tentative", "private")


def test_booked_elsewhere_when_unknown() -> None:
    """The InLoox category on an event the ledger does not know: booked elsewhere."""
    ev = event(categories=("Track", "InLoox"))

    assert rules.decide(ev, user(), now=NOW) == Decision.skip("booked_elsewhere")
    assert rules.decide(ev, user(), now=NOW, known=True).book


def test_not_ended_events_wait() -> None:
    """By default only events that have ended are booked; the mapping is kept."""
    ev = event(start=NOW - timedelta(minutes=30), end=NOW + timedelta(minutes=30))

    decision = rules.decide(ev, user(), now=NOW)

    assert (decision.book, decision.reason, decision.project) == (
        False, "not_ended", DEFAULT)


def test_book_before_end_books_running_meeting() -> None:
    """book_before_end: true books a meeting that has not ended yet."""
    ev = event(start=NOW - timedelta(minutes=30), end=NOW + timedelta(minutes=30))

    assert rules.decide(ev, user(book_before_end=True), now=NOW).book


def test_older_than_backdating_limit() -> None:
    """Events that started more than 30 days ago cannot be booked in InLoox."""
    ev = event(start=NOW - timedelta(days=31), end=NOW - timedelta(days=31, hours=-1))

    assert rules.decide(ev, user(), now=NOW).reason == "too_old"


@pytest.mark.parametrize(
    ("match", "fields", "expected"),
    [
        ({"organizer": "boss@fabrikam.example"}, {"organizer": "boss@fabrikam.example"},
         True),
        ({"organizer": "@fabrikam.example"}, {"organizer": "ceo@fabrikam.example"},
         True),
        ({"organizer": "@fabrikam.example"}, {"organizer": "ceo@contoso.example"},
         False),
        ({"attendee_domain": "fabrikam.example"},
         {"attendees": ("a@contoso.example", "b@fabrikam.example")}, True),
        ({"location": "Room 4"}, {"location": "Berlin, Room 4.12"}, True),
        ({"all_categories": ["Apollo", "Billable"]}, {"categories": ("Apollo",)},
         False),
        ({"all_categories": ["Apollo", "Billable"]},
         {"categories": ("billable", "apollo")}, True),
    ],
)
def test_rule_conditions(match: dict[str, object], fields: dict[str, object],
                         expected: bool) -> None:
    """Organizer, attendee domain, location and all-of categories match as written."""
    policy = user(rules=[{"match": match, "project": APOLLO}], default_project=None,
                  select={"categories": []})
    fields.setdefault("categories", ())

    assert rules.decide(event(**fields), policy, now=NOW).book is expected


def test_all_day_event_ends_at_midnight_in_the_users_zone() -> None:
    """An all-day event on the 20th has ended once the 21st began in Berlin."""
    ev = event(start=date(2026, 3, 20), end=date(2026, 3, 21), is_all_day=True)
    policy = user(skip={"all_day": False})
    before = datetime(2026, 3, 20, 22, 30, tzinfo=UTC)  # 23:30 in Berlin
    after = datetime(2026, 3, 20, 23, 30, tzinfo=UTC)  # 00:30 on the 21st

    assert rules.decide(ev, policy, now=before).reason == "not_ended"
    assert rules.decide(ev, policy, now=after).book


@pytest.mark.parametrize(
    ("match", "fields", "expected"),
    [
        ({"categories": ["Apollo", "Zephyr"]}, {"categories": ("ZEPHYR",)}, True),
        ({"subject": r"(?i)apollo"}, {"subject": "Weekly APOLLO sync"}, True),
        ({"subject": r"^\[APOLLO\]"}, {"subject": "Re: [APOLLO] sync"}, False),
        ({"organizer": "boss@fabrikam.example"}, {"organizer": None}, False),
        ({"attendee_domain": "fabrikam.example"},
         {"attendees": ("x@notfabrikam.example",)}, False),
        ({"location": "Room 4"}, {"location": None}, False),
        ({"categories": ["Apollo"], "location": "Berlin"},
         {"categories": ("Apollo",), "location": "Munich"}, False),
    ],
)
def test_rule_conditions_more(match: dict[str, object], fields: dict[str, object],
                              expected: bool) -> None:
    """Any-of categories ignore case, regexes search, every condition must hold."""
    policy = user(rules=[{"match": match, "project": APOLLO}], default_project=None,
                  select={"categories": []})
    fields.setdefault("categories", ())

    assert rules.decide(event(**fields), policy, now=NOW).book is expected


def test_max_duration_is_configurable() -> None:
    """max_duration: 2h skips a three-hour meeting as too_long."""
    ev = event(start=at(16, 9), end=at(16, 12))

    assert rules.decide(ev, user(max_duration="2h"), now=NOW).reason == "too_long"
    assert rules.decide(ev, user(), now=NOW).book


def test_backdating_limit_is_configurable() -> None:
    """backdating_limit: 3d skips a meeting four days old as too_old."""
    ev = event(start=at(16, 9), end=at(16, 10))

    assert rules.decide(ev, user(backdating_limit="3d"), now=NOW).reason == "too_old"
