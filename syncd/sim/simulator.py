"""The simulator: identity platform, Graph calendar and InLoox on one HTTPS port."""

from __future__ import annotations

import asyncio
import copy
import shutil
import ssl
import tempfile
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import structlog
import trustme

from syncd.sim import control
from syncd.sim.calendar import Calendar
from syncd.sim.config import config_env, write_config
from syncd.sim.faults import Faults, Stats
from syncd.sim.graph import Graph
from syncd.sim.http import HttpsServer, Request, Response, json_response
from syncd.sim.identity import Identity
from syncd.sim.inloox import InLoox
from syncd.sim.placement import place_scenario
from syncd.sim.scenario import Scenario, load_scenario

log = structlog.get_logger(__name__)
Clock = Callable[[], datetime]


def _real_clock() -> datetime:
    return datetime.now(UTC)


class Simulator:
    """Local stand-ins for login.microsoftonline.com, Graph and InLoox.

    ``start()`` serves all three (plus the ``/_sim/`` control API) on one
    HTTPS port of 127.0.0.1 from a background thread with its own event
    loop.  Every method is safe to call from any thread.
    """

    def __init__(
        self, scenario: Scenario | None = None, clock: Clock | None = None
    ) -> None:
        self.scenario = scenario or load_scenario()
        self.clock: Clock = clock or _real_clock
        self.faults = Faults()
        self._stats = Stats()
        self._stats_lock = threading.Lock()
        self._calendars = {
            u.mailbox.lower(): Calendar(
                u.mailbox, clock=self.clock, seed=self.scenario.settings.id_seed
            )
            for u in self.scenario.users
        }
        self._event_ids = place_scenario(
            self.scenario, self._calendars, self.clock().date()
        )
        self.identity = Identity(self.scenario, self.faults, self.clock)
        self.graph = Graph(self)
        self.inloox = InLoox(self)
        self._workdir = Path(tempfile.mkdtemp(prefix="syncd-sim-"))
        self._ca = trustme.CA()
        self.ca_path = self._workdir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: HttpsServer | None = None
        self.port = 0

    # ----- lifecycle --------------------------------------------------

    def start(self) -> Simulator:
        """Serve on 127.0.0.1:<free port> until ``stop()``; idempotent."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []
        self._thread = threading.Thread(
            target=self._run, args=(ready, failure), name="syncd-sim", daemon=True
        )
        self._thread.start()
        ready.wait(30)
        if failure:
            self._thread = None
            raise failure[0]
        log.info("sim_started", port=self.port, scenario=self.scenario.name)
        return self

    def stop(self) -> None:
        """Stop serving (``start()`` serves again on the same port)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._thread = self._loop = None
        log.info("sim_stopped", port=self.port)

    def close(self) -> None:
        """Stop and delete the simulator's temporary files (CA included)."""
        self.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)

    def __enter__(self) -> Simulator:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _run(self, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        context = self._ca.issue_cert("127.0.0.1", "localhost")
        ssl_context = _server_ssl(context)
        server = HttpsServer(self._dispatch, ssl_context)
        try:
            loop.run_until_complete(server.start(port=self.port))
        except OSError as exc:
            failure.append(exc)
            ready.set()
            loop.close()
            return
        self._server = server
        self.port = server.port
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(server.close())
            loop.close()

    # ----- addresses and credentials ----------------------------------

    @property
    def base_url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def authority(self) -> str:
        return f"{self.base_url}/{self.scenario.tenant_id}"

    @property
    def graph_url(self) -> str:
        return f"{self.base_url}/v1.0"

    @property
    def inloox_url(self) -> str:
        return f"{self.base_url}/odata"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_sim"

    @property
    def client_id(self) -> str:
        return self.scenario.client_id

    @property
    def client_secret(self) -> str:
        return self.scenario.client_secret

    @property
    def users(self) -> list[str]:
        return [u.mailbox for u in self.scenario.users]

    def ssl_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts the simulator's CA (for httpx)."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def inloox_key(self, mailbox: str) -> str:
        """The personal access token of the user's InLoox contact."""
        return self.scenario.user(mailbox).api_key

    def write_config(self, directory: Path, *, ledger_url: str | None = None) -> Path:
        """Write syncd.yaml, users.d/ and credentials/; returns syncd.yaml."""
        return write_config(self, Path(directory), ledger_url=ledger_url)

    def config_env(
        self, directory: Path, *, include_secrets: bool = False
    ) -> dict[str, str]:
        """Environment a syncd process needs for the config in ``directory``."""
        return config_env(self, Path(directory), include_secrets=include_secrets)

    # ----- calendars and entries --------------------------------------

    def calendar(self, mailbox: str) -> Calendar:
        try:
            return self._calendars[mailbox.lower()]
        except KeyError:
            raise KeyError(f"no mailbox {mailbox} in the scenario") from None

    def has_mailbox(self, mailbox: str) -> bool:
        return mailbox.lower() in self._calendars

    def event_id(self, mailbox: str, key: str) -> str:
        """The id of a scenario event (its ``key``) in one mailbox's calendar."""
        return self._event_ids[(mailbox.lower(), key)]

    def inloox_entries(self, mailbox: str | None = None) -> list[dict[str, Any]]:
        """Time entries as stored (all, or those performed by the mailbox's contact)."""
        contact = self.scenario.user(mailbox).contact_id if mailbox else None
        return self.inloox.entries(contact)

    def set_billed(self, entry_id: str, billed: bool = True) -> None:
        self.inloox.set_billed(entry_id, billed)

    # ----- statistics -------------------------------------------------

    @property
    def stats(self) -> Stats:
        """A snapshot of the counters."""
        with self._stats_lock:
            snapshot = copy.deepcopy(self._stats)
        snapshot.tokens_issued.update(self.identity.issued)
        return snapshot

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats = Stats()
        self.identity.issued.clear()

    def update_stats(self, change: Callable[[Stats], None]) -> None:
        with self._stats_lock:
            change(self._stats)

    # ----- dispatch ---------------------------------------------------

    async def _dispatch(self, request: Request) -> Response:
        path = request.path
        try:
            if path.startswith("/_sim/"):
                return await control.handle(self, request)
            if path.startswith("/v1.0/"):
                return await self.graph.handle(request)
            if path.startswith("/odata/") or path == "/odata":
                return await self.inloox.handle(request)
            return await self._identity(request)
        except Exception:  # the simulator must answer, like a real server would
            log.exception("sim_handler_failed", path=path, method=request.method)
            return json_response(
                500,
                {
                    "error": {
                        "code": "InternalServerError",
                        "message": "simulator failure",
                    }
                },
            )

    async def _identity(self, request: Request) -> Response:
        delay = self.faults.latency.get("identity", 0.0)
        if delay:
            await asyncio.sleep(delay)
        response = self.identity.handle(request, request.base_url)
        kind = request.path.rstrip("/").rsplit("/", 1)[-1]
        self.update_stats(
            lambda s: s.requests.update(
                [("identity", request.method, kind, response.status)]
            )
        )
        return response


def _server_ssl(cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    return context
