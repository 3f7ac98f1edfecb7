"""One error root, split by what the caller must do.

- ``TransientError``: try again later, with backoff (throttling, outages).
- ``PermanentError``: record the reason and move on; retried only on request.
- ``AuthError``: pause the user until its credentials work again.
- ``ConfigError``: tell the human what to change; never a traceback.

Errors carry their context (user, event id, HTTP method and URL) and build
their own message from it.  They never carry a token, a secret or a body of
a calendar event.
"""

from __future__ import annotations

from dataclasses import dataclass


class SyncdError(Exception):
    """Root of every error syncd raises on purpose."""

    def __init__(self, message: str, *, user: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.user = user
        self.event_id = event_id

    def __str__(self) -> str:
        context = [f"{k}={v}" for k, v in (("user", self.user),
                                           ("event", self.event_id)) if v]
        if not context:
            return self.message
        return f"{self.message} ({', '.join(context)})"


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong in the configuration, located as precisely as known."""

    file: str
    line: int | None
    key: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        key = f" {self.key}:" if self.key else ""
        return f"{where}:{key} {self.message}"


class ConfigError(SyncdError):
    """The configuration is wrong; ``problems`` lists every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p}" for p in self.problems)
        super().__init__(f"{len(self.problems)} configuration problem(s):\n{lines}")


class HttpError(SyncdError):
    """An HTTP exchange with Graph, InLoox or the identity platform failed."""

    def __init__(self, message: str, *, method: str | None = None,
                 url: str | None = None, status: int | None = None,
                 code: str | None = None, user: str | None = None,
                 event_id: str | None = None) -> None:
        super().__init__(message, user=user, event_id=event_id)
        self.method = method
        self.url = url
        self.status = status
        self.code = code

    def __str__(self) -> str:
        base = super().__str__()
        request = " ".join(p for p in (self.method, _strip_query(self.url)) if p)
        status = f" -> {self.status}" if self.status is not None else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{base}{code}" + (f" ({request}{status})" if request else "")


def _strip_query(url: str | None) -> str | None:
    """Drop the query string: delta links carry opaque state tokens."""
    if url is None:
        return None
    return url.split("?", 1)[0]


class TransientError(HttpError):
    """Try again later; ``retry_after`` (seconds) is the server's hint, if any."""

    def __init__(self, message: str, *, retry_after: float | None = None,
                 **context: object) -> None:
        super().__init__(message, **context)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ThrottledError(TransientError):
    """The server answered 429 (or 503 with Retry-After): slow down."""


class OutcomeUnknown(TransientError):
    """A non-idempotent request was sent but no answer came back.

    The write may or may not have happened: never resend blindly, look the
    result up first.
    """


class DeltaExpired(HttpError):
    """Graph no longer knows the delta link (410 SyncStateNotFound): new round."""


class PermanentError(HttpError):
    """The request can never succeed as it is; record the reason and move on."""


class BilledLocked(PermanentError):
    """InLoox refuses to change or delete a billed time entry."""


class AuthError(HttpError):
    """Credentials were rejected; the user is paused until they work again."""


class LeaseLost(SyncdError):
    """Another process took over this user; stop writing at once."""


class LedgerError(SyncdError):
    """The ledger database is unreachable or refused the operation."""
