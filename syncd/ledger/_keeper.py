"""Which users this process serves: a fair share of per-user leases.

Used on PostgreSQL, where several ``syncd run`` processes share one ledger.
Every process schedules every user; a pass first asks :meth:`LeaseKeeper.take`
for the user's lease.  A process takes a free lease only while it holds fewer
than its fair share (users divided by live owners, rounded up), so work
spreads as replicas join; a background task renews what it holds, sheds
leases above the share (idle users first) and stops a pass whose lease is
lost or about to run out before a request could finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any

import structlog

from syncd.errors import SyncdError

log = structlog.get_logger("syncd.leases")


class LeaseKeeper:
    """Takes, renews and gives back one owner's per-user leases."""

    def __init__(
        self,
        ledger: Any,
        owner: str,
        users: Sequence[str],
        *,
        ttl: timedelta,
        renew_every: timedelta,
        request_deadline: timedelta,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.owner = owner
        self.users = sorted(users)
        self.ttl = ttl
        self.renew_every = renew_every.total_seconds()
        self.held: dict[str, int] = {}
        self._margin = request_deadline.total_seconds()
        self._clock = clock
        self._valid_until: dict[str, float] = {}
        self._passes: dict[str, asyncio.Task[Any]] = {}
        self._stopped: set[str] = set()
        self._owners = (1, -math.inf)  # count, when read
        self._beat_at = -math.inf
        self._task: asyncio.Task[None] | None = None

    # ---- a pass ----------------------------------------------------------

    def take(self, mailbox: str) -> int | None:
        """The fence of this user's lease (renewed now), or None if not ours."""
        self._start()
        self._beat()
        fence = self.held.get(mailbox)
        if fence is not None and self._renew_one(mailbox, fence):
            return fence
        if len(self.held) >= self.share():
            return None

        started = self._clock()
        taken: dict[str, int] = self.ledger.acquire_leases(
            self.owner, [mailbox], self.ttl
        )
        fence = taken.get(mailbox)
        if fence is not None:
            self.held[mailbox] = fence
            self._valid_until[mailbox] = started + self.ttl.total_seconds()
        return fence

    @contextlib.contextmanager
    def serving(self, mailbox: str, task: asyncio.Task[Any]) -> Iterator[None]:
        """While a pass runs: stop ``task`` if the user's lease is lost."""
        self._passes[mailbox] = task
        self._stopped.discard(mailbox)
        try:
            yield
        finally:
            self._passes.pop(mailbox, None)

    def stopped(self, mailbox: str) -> bool:
        """Whether the keeper cancelled this user's pass (lease lost)."""
        return mailbox in self._stopped

    def share(self) -> int:
        """How many users this owner may serve: all users over live owners."""
        count, read_at = self._owners
        if self._clock() - read_at >= self.renew_every:
            count = self.ledger.live_owners(self.ttl)
            self._owners = (count, self._clock())
        return math.ceil(len(self.users) / max(count, 1))

    # ---- background ------------------------------------------------------

    def renew(self) -> None:
        """Heartbeat, renew held leases and shed those above the fair share."""
        self._beat(force=True)
        if not self.held:
            return

        started = self._clock()
        kept = self.ledger.acquire_leases(
            self.owner,
            sorted(self.held),
            self.ttl,
            limit=self.share(),
            busy=set(self._passes),
        )
        for mailbox in sorted(set(self.held) - set(kept)):
            self._drop(mailbox, reason="shed")
        for mailbox, fence in kept.items():
            if self.held.get(mailbox) != fence:
                self._drop(mailbox, reason="taken over")
            self.held[mailbox] = fence
            self._valid_until[mailbox] = started + self.ttl.total_seconds()

    async def aclose(self) -> None:
        """Stop renewing and give every lease back."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            self.ledger.retire_owner(self.owner)
        except SyncdError as exc:
            log.warning("lease_release_failed", owner=self.owner, error=str(exc))
        self.held.clear()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.renew_every)
            try:
                self.renew()
            except SyncdError as exc:
                log.warning("lease_renew_failed", owner=self.owner, error=str(exc))
            self._expire()

    def _start(self) -> None:
        if self._task is None:
            # A context of its own: the first pass starts it, and its lines
            # must not carry that pass's user and pass id.
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"leases:{self.owner}", context=contextvars.Context()
            )

    def _beat(self, *, force: bool = False) -> None:
        now = self._clock()
        if force or now - self._beat_at >= self.renew_every:
            self.ledger.heartbeat(self.owner)
            self._beat_at = now

    def _renew_one(self, mailbox: str, fence: int) -> bool:
        started = self._clock()
        if self.ledger.renew_lease(self.owner, mailbox, fence, self.ttl):
            self._valid_until[mailbox] = started + self.ttl.total_seconds()
            return True
        self._drop(mailbox, reason="renewal refused")
        return False

    def _expire(self) -> None:
        """Stop serving leases that might run out before a request could end."""
        now = self._clock()
        for mailbox in sorted(self.held):
            if self._valid_until.get(mailbox, 0.0) - self._margin <= now:
                self._drop(mailbox, reason="not renewed in time")

    def _drop(self, mailbox: str, *, reason: str) -> None:
        self.held.pop(mailbox, None)
        self._valid_until.pop(mailbox, None)
        task = self._passes.get(mailbox)
        if reason == "shed" and task is None:
            log.info("lease_shed", owner=self.owner, user=mailbox)
            return
        log.warning(
            "lease_lost",
            owner=self.owner,
            user=mailbox,
            reason=reason,
            pass_stopped=task is not None,
        )
        if task is not None and not task.done():
            self._stopped.add(mailbox)
            task.cancel()
