"""A small HTTPS/1.1 server on asyncio and h11.

The simulator needs control that frameworks hide: it must be able to close a
TCP connection without sending a single byte of response (a commit whose
answer is lost), and count requests in flight per mailbox while latency makes
them overlap.  h11 does the HTTP framing; everything else is plain asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import h11

MAX_BODY = 4 * 1024 * 1024
IDLE_TIMEOUT = 60.0


@dataclass
class Request:
    """One HTTP request, fully read."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes
    base_url: str

    @property
    def path(self) -> str:
        return urlsplit(self.target).path

    @property
    def query(self) -> dict[str, str]:
        return dict(parse_qsl(urlsplit(self.target).query, keep_blank_values=True))

    def header(self, name: str, default: str = "") -> str:
        return self.headers.get(name.lower(), default)

    def json(self) -> Any:
        return json.loads(self.body or b"null")

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), keep_blank_values=True))


@dataclass
class Response:
    """An HTTP response; ``drop`` closes the connection without answering."""

    status: int = 200
    body: bytes = b""
    headers: list[tuple[str, str]] = field(default_factory=list)
    drop: bool = False


def json_response(
    status: int, payload: Any, headers: list[tuple[str, str]] | None = None
) -> Response:
    body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    all_headers = [("Content-Type", "application/json; charset=utf-8")]
    return Response(status, body, all_headers + list(headers or []))


def empty_response(status: int = 204) -> Response:
    return Response(status)


def dropped() -> Response:
    return Response(drop=True)


Handler = Callable[[Request], Awaitable[Response]]


class HttpsServer:
    """Serves one handler over TLS on 127.0.0.1, keep-alive included."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext) -> None:
        self._handler = handler
        self._ssl = ssl_context
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await asyncio.start_server(
            self._serve_connection, host, port, ssl=self._ssl
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connections):
            task.cancel()
        if self._connections:
            await asyncio.gather(*self._connections, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            await _Connection(self, reader, writer).run()
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass
        finally:
            self._connections.discard(task)
            _close_quietly(writer)


def _close_quietly(writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError, ssl.SSLError):
        writer.close()


class _Connection:
    def __init__(
        self,
        server: HttpsServer,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._h11 = h11.Connection(h11.SERVER)

    async def run(self) -> None:
        while True:
            request = await self._read_request()
            if request is None:
                return
            response = await self._server._handler(request)
            if response.drop:
                self._abort()
                return
            await self._send(response)
            if not self._next_cycle():
                return

    async def _read_request(self) -> Request | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError:
                await self._send(json_response(400, {"error": "bad request"}))
                return None
            if event is h11.NEED_DATA:
                if not await self._receive():
                    return None
                continue
            if isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body.extend(event.data)
                if len(body) > MAX_BODY:
                    return None
            elif isinstance(event, h11.EndOfMessage) and head is not None:
                return self._build(head, bytes(body))
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _receive(self) -> bool:
        try:
            data = await asyncio.wait_for(self._reader.read(65536), IDLE_TIMEOUT)
        except TimeoutError:
            return False
        self._h11.receive_data(data)
        return bool(data)

    def _build(self, head: h11.Request, body: bytes) -> Request:
        headers = {
            name.decode("latin-1").lower(): value.decode("latin-1")
            for name, value in head.headers
        }
        host = headers.get("host", f"127.0.0.1:{self._server.port}")
        return Request(
            method=head.method.decode("ascii"),
            target=head.target.decode("latin-1"),
            headers=headers,
            body=body,
            base_url=f"https://{host}",
        )

    async def _send(self, response: Response) -> None:
        headers = list(response.headers)
        if response.status not in (204, 304):
            headers.append(("Content-Length", str(len(response.body))))
        events: list[h11.Event] = [
            h11.Response(status_code=response.status, headers=headers)
        ]
        if response.body and response.status not in (204, 304):
            events.append(h11.Data(data=response.body))
        events.append(h11.EndOfMessage())
        for event in events:
            data = self._h11.send(event)
            if data:
                self._writer.write(data)
        await self._writer.drain()

    def _next_cycle(self) -> bool:
        if self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE:
            self._h11.start_next_cycle()
            return True
        return False

    def _abort(self) -> None:
        transport = self._writer.transport
        transport.abort()
