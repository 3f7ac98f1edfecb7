"""What the default scenario (syncd/sim/scenarios/default.yaml) must produce.

Written by hand from the scenario file and the configuration the simulator
writes for it (trigger category ``Track``; rules in project order: Apollo by
category, ``[APOLLO]`` subjects, Zephyr by category, ``[ZEPHYR]`` subjects,
Internal by category; the contract's default skip policy; no default
project).  Day N is N days after the anchor Monday, two weeks before this one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

ALICE = "alice@contoso.example"
BOB = "bob@contoso.example"
CHIYO = "chiyo@contoso.example"
USERS = (ALICE, BOB, CHIYO)

APOLLO = "6f1c0c52-7d6b-4f0e-9a43-2b1f3a2f9e10"
ZEPHYR = "2b7e4c91-58a3-4d0f-b6e2-9c1a7f3d5e84"
INTERNAL = "d3a1f5e7-0c2b-4a69-8e4d-71b6c9f2a0d5"

BERLIN, LOS_ANGELES, TOKYO = "Europe/Berlin", "America/Los_Angeles", "Asia/Tokyo"

STANDUP = "Daily Stand-up"
STANDUP_EXCEPTION = "Daily Stand-up (Sprint-Review-Vorbereitung)"
KICKOFF = "Apollo Kick-off mit Müller GmbH"
ARCHITECTURE = "[APOLLO] Architektur-Review"
WORKSHOP = "Zephyr Workshop \u2013 Datenmodell"  # an en dash
CALL_LA = "Zephyr customer call (West Coast)"
TOKYO_REVIEW = "日本語の打ち合わせ 🎌 Zephyr 進捗"
ZEPHYR_SYNC = "Zephyr sync"
OFFER = "[ZEPHYR] Angebotsklärung"
CUTOVER = "Apollo go-live cutover"
RETRO = "🚀 Zephyr launch retro"
LUNCH = "Mittagessen mit Ümit"
FOCUS = "Fokuszeit"
SUMMIT = "Cloud Summit (Konferenz)"
PLANNING_BOOKED = "Apollo Sprint Planning"
DOCTOR = "Arzttermin"
OFFSITE = "Team-Offsite Planung"
VACATION = "Vacation"
STEERING = "Canceled: Apollo steering committee"
RETRO_NEXT = "Apollo Retrospektive"


@dataclass(frozen=True)
class Booking:
    """One time entry the scenario calls for: a meeting in its own time zone."""

    subject: str
    project: str
    day: int
    start: str  # local clock time in ``zone``
    minutes: int
    zone: str

    def key(self, anchor: date) -> tuple[str, str, str, int]:
        """(DisplayName, ProjectId, StartDateTime, DurationMinutes) as InLoox stores."""
        local = datetime.combine(anchor + timedelta(days=self.day),
                                 time.fromisoformat(self.start), ZoneInfo(self.zone))
        start = local.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return self.subject, self.project, start, self.minutes


# Stand-up: Mon-Fri of days 0-11, day 2 moved to 10:00-10:30 and renamed,
# day 3 deleted: 8 ordinary occurrences and the exception.
_STANDUP_DAYS = (0, 1, 4, 7, 8, 9, 10, 11)
_STANDUPS = (
    *(Booking(STANDUP, INTERNAL, d, "09:30", 15, BERLIN) for d in _STANDUP_DAYS),
    Booking(STANDUP_EXCEPTION, INTERNAL, 2, "10:00", 30, BERLIN),
)
_KICKOFF = Booking(KICKOFF, APOLLO, 0, "14:00", 90, BERLIN)
_CALL_LA = Booking(CALL_LA, ZEPHYR, 3, "08:00", 60, LOS_ANGELES)
_TOKYO_REVIEW = Booking(TOKYO_REVIEW, ZEPHYR, 4, "16:00", 60, TOKYO)
_RETRO = Booking(RETRO, ZEPHYR, 11, "09:00", 60, TOKYO)

BOOKINGS: dict[str, tuple[Booking, ...]] = {
    ALICE: (
        *_STANDUPS,
        _KICKOFF,
        Booking(ARCHITECTURE, APOLLO, 1, "10:00", 90, BERLIN),
        Booking(WORKSHOP, ZEPHYR, 2, "13:00", 240, BERLIN),
        _CALL_LA,  # tentative, and skip.tentative is false
        _TOKYO_REVIEW,
        _RETRO,
    ),
    BOB: (
        _KICKOFF,
        _CALL_LA,
        Booking(OFFER, ZEPHYR, 7, "09:00", 60, LOS_ANGELES),
        Booking(CUTOVER, APOLLO, 10, "22:00", 240, LOS_ANGELES),  # across midnight
        _RETRO,
    ),
    CHIYO: (
        *_STANDUPS,
        _TOKYO_REVIEW,
        *(Booking(ZEPHYR_SYNC, ZEPHYR, d, "11:00", 30, TOKYO) for d in (1, 3, 8, 10)),
        _RETRO,
    ),
}
BOOKED_COUNT = {ALICE: 15, BOB: 5, CHIYO: 15}

# Events seen in the window and skipped, by subject.  Alice's private doctor's
# appointment is not skipped as private (skip.private is false) but carries
# only the trigger category and matches no rule: unmapped.
SKIPS: dict[str, dict[str, str]] = {
    ALICE: {
        LUNCH: "not_selected",
        FOCUS: "free",
        SUMMIT: "all_day",
        PLANNING_BOOKED: "booked_elsewhere",
        DOCTOR: "unmapped",
        OFFSITE: "unmapped",
    },
    BOB: {WORKSHOP: "declined", VACATION: "all_day", STEERING: "cancelled"},
    CHIYO: {},
}


def expected_entries(mailbox: str, anchor: date) -> Counter[tuple[str, str, str, int]]:
    """The user's time entries as a multiset of (name, project, start, minutes)."""
    return Counter(b.key(anchor) for b in BOOKINGS[mailbox])


def expected_skip_reasons(mailbox: str, anchor: date,
                          now: datetime) -> Counter[str]:
    """Skip reasons counted, as a pass sees them at ``now``.

    Alice's next-week retrospective (day 22, 15:00-16:00 Berlin) only enters
    her window (up to the end of tomorrow in Berlin) in the last hour of a
    UTC Sunday, when it is already Monday in Berlin; then it waits: not_ended.
    """
    reasons = Counter(SKIPS[mailbox].values())
    tomorrow = (now + timedelta(days=1)).astimezone(ZoneInfo(BERLIN)).date()
    if mailbox == ALICE and anchor + timedelta(days=22) <= tomorrow:
        reasons["not_ended"] += 1
    return reasons
