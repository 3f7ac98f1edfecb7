"""Health and metrics over HTTP: ``/metrics``, ``/livez``, ``/readyz``.

A deliberately tiny HTTP/1.1 server on the service's own event loop: probes
and Prometheus scrapes send one GET and read one answer, so ``asyncio``
streams are all it takes, and the server starts in microseconds.  Because it
shares the loop, a hung loop stops answering -- which is what a liveness
probe should see.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from syncd.metrics import REGISTRY

log = structlog.get_logger(__name__)

Probe = Callable[[], Awaitable[str | None]]
"""A check: ``None`` when healthy, otherwise the reason it is not."""

_REQUEST_TIMEOUT = 5.0
_MAX_REQUEST_HEAD = 16 * 1024
_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


class HealthListenError(OSError):
    """``metrics.listen`` could not be bound (address in use, not local, ...)."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``; an empty host means every interface)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics.listen must be host:port, not {listen!r}")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


class HealthServer:
    """Serve metrics and probes until :meth:`close`."""

    def __init__(
        self,
        listen: str,
        *,
        livez: Probe,
        readyz: Probe,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.listen = listen
        self._probes = {"/livez": livez, "/readyz": readyz}
        self._registry = registry
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``; the port is real even for ``:0``."""
        if self._server is None:
            raise RuntimeError("health server is not running")
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        host, port = parse_listen(self.listen)
        try:
            self._server = await asyncio.start_server(
                self._serve, host, port, limit=_MAX_REQUEST_HEAD
            )
        except OSError as error:
            log.error("health_listen_failed", listen=self.listen, error=str(error))
            raise HealthListenError(
                f"metrics.listen {self.listen}: {error.strerror or error}"
            ) from error
        log.info("health_server_started", listen=f"{host}:{self.address[1]}")

    async def close(self) -> None:
        if self._server is None:
            return

        self._server.close()
        await self._server.wait_closed()
        self._server = None

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), _REQUEST_TIMEOUT
            )
            method, path = _request_line(head)
            response = await self._respond(method, path)
            writer.write(_encode(response, head_only=method == "HEAD"))
            await writer.drain()
        except (
            TimeoutError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ConnectionError,
            ValueError,
        ):
            pass
        finally:
            writer.close()

    async def _respond(self, method: str, path: str) -> Response:
        if method not in ("GET", "HEAD"):
            return Response(405, b"method not allowed\n")
        if path == "/metrics":
            return Response(200, generate_latest(self._registry), CONTENT_TYPE_LATEST)

        probe = self._probes.get(path)
        if probe is None:
            return Response(404, b"not found\n")

        reason = await probe()
        if reason is None:
            return Response(200, b"ok\n")
        return Response(503, f"{path.lstrip('/')} failed: {reason}\n".encode())


def _request_line(head: bytes) -> tuple[str, str]:
    first = head.split(b"\r\n", 1)[0].decode("latin-1")
    method, target, _version = first.split(" ", 2)
    return method.upper(), target.split("?", 1)[0]


def _encode(response: Response, *, head_only: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {response.status} {_REASONS.get(response.status, '')}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Cache-Control: no-store",
        "Connection: close",
    ]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body
