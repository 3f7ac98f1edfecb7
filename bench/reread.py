"""The strategy most existing tools use: re-read the whole window on every poll.

``GET /users/{m}/calendarView?startDateTime&endDateTime`` (not delta), every
page followed, every event parsed -- what a poller without delta links pays
each time, before it even compares anything with what it booked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from syncd.graph import parse_event, window_params
from syncd.http import ssl_context
from syncd.model import Window


@dataclass
class Poll:
    """What one poll of one mailbox cost."""

    requests: int = 0
    bytes: int = 0
    events: int = 0


class FullReread:
    """Polls calendarView with the same token provider and TLS trust as syncd.

    ``page_size`` None sends no ``odata.maxpagesize``: the server's default.
    """

    def __init__(self, graph_url: str, auth: Any, ca_bundle: Path | None,
                 page_size: int | None) -> None:
        self._base = graph_url.rstrip("/")
        self._auth = auth
        prefer = 'IdType="ImmutableId"'
        if page_size is not None:
            prefer += f", odata.maxpagesize={page_size}"
        self._headers = {"Prefer": prefer, "Accept": "application/json"}
        self._client = httpx.AsyncClient(verify=ssl_context(ca_bundle), timeout=30)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def poll(self, mailbox: str, window: Window) -> Poll:
        """Every page of the window, every event parsed."""
        url: str | None = f"{self._base}/users/{quote(mailbox, safe='@')}/calendarView"
        params: dict[str, str] | None = window_params(window)
        poll = Poll()
        while url is not None:
            token = await self._auth.get_token(mailbox)
            headers = {**self._headers, "Authorization": f"Bearer {token}"}
            response = await self._client.get(url, params=params, headers=headers)
            response.raise_for_status()
            poll.requests += 1
            poll.bytes += len(response.content)
            body = response.json()
            poll.events += len([parse_event(item) for item in body["value"]])
            url, params = body.get("@odata.nextLink"), None
        return poll
