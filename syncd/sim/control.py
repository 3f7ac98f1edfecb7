"""The ``/_sim/`` control API: drive a simulator from another process.

JSON in, JSON out.  Routes:

- ``GET /_sim/state``: URLs, users, scenario name
- ``GET /_sim/stats``, ``POST /_sim/stats/reset``
- ``GET /_sim/faults``, ``POST /_sim/faults`` (knobs and injections, see Faults.apply;
  ``{"hold": {"point": "inloox_created"}}`` holds a request, ``{"release": {}}``
  lets it go)
- ``GET /_sim/holds``: requests armed and waiting at each hold point
- ``GET /_sim/calendars/{mailbox}/events[?start=..&end=..]`` (stored, or the view)
- ``POST /_sim/calendars/{mailbox}/events`` and ``.../series`` -> ``{"id"}``
- ``PATCH`` / ``DELETE /_sim/calendars/{mailbox}/events/{id}``
- ``POST /_sim/calendars/{mailbox}/occurrences/delete`` ``{"series_id", "start"}``
- ``GET /_sim/calendars/{mailbox}/keys/{key}``: the id of a scenario event
- ``GET /_sim/inloox/entries[?mailbox=..]``, ``POST /_sim/inloox/entries/{id}/billed``
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from syncd.sim.calendar import EventNotFound
from syncd.sim.http import Request, Response, json_response

if TYPE_CHECKING:
    from syncd.sim.simulator import Simulator


async def handle(sim: Simulator, request: Request) -> Response:
    parts = [unquote(p) for p in request.path.split("/")[2:] if p]
    try:
        return _route(sim, request, parts)
    except (KeyError, EventNotFound) as exc:
        return json_response(404, {"error": f"not found: {exc}"})
    except (TypeError, ValueError) as exc:
        return json_response(400, {"error": str(exc)})


def _route(sim: Simulator, request: Request, parts: list[str]) -> Response:
    method = request.method
    if parts == ["state"]:
        return json_response(200, _state(sim))
    if parts == ["stats"]:
        return json_response(200, sim.stats.to_json())
    if parts == ["stats", "reset"] and method == "POST":
        sim.reset_stats()
        return json_response(200, {})
    if parts == ["faults"]:
        if method == "POST":
            sim.faults.apply(request.json() or {})
        return json_response(200, sim.faults.to_json())
    if parts == ["holds"]:
        return json_response(200, sim.faults.holds_json())
    if parts[:1] == ["calendars"] and len(parts) >= 3:
        return _calendar(sim, request, parts[1], parts[2:])
    if parts == ["inloox", "entries"]:
        return json_response(200, sim.inloox_entries(request.query.get("mailbox")))
    if parts[:2] == ["inloox", "entries"] and parts[3:] == ["billed"]:
        sim.set_billed(parts[2], bool((request.json() or {}).get("billed", True)))
        return json_response(200, {})
    return json_response(404, {"error": f"no control route {method} {request.path}"})


def _state(sim: Simulator) -> dict[str, Any]:
    return {
        "scenario": sim.scenario.name,
        "authority": sim.authority,
        "graph_url": sim.graph_url,
        "inloox_url": sim.inloox_url,
        "client_id": sim.client_id,
        "ca_path": str(sim.ca_path),
        "users": sim.users,
    }


def _calendar(
    sim: Simulator, request: Request, mailbox: str, rest: list[str]
) -> Response:
    calendar = sim.calendar(mailbox)
    method = request.method
    if rest == ["events"] and method == "GET":
        query = request.query
        if "start" in query and "end" in query:
            return json_response(
                200, calendar.view(_moment(query["start"]), _moment(query["end"]))
            )
        return json_response(200, calendar.events())
    if rest == ["events"] and method == "POST":
        return json_response(201, {"id": calendar.add_event(**request.json())})
    if rest == ["series"] and method == "POST":
        return json_response(201, {"id": calendar.add_series(**request.json())})
    if rest[:1] == ["events"] and len(rest) == 2:
        if method == "GET":
            return json_response(200, calendar.get(rest[1]))
        if method == "PATCH":
            calendar.update_event(rest[1], **request.json())
            return json_response(200, calendar.get(rest[1]))
        if method == "DELETE":
            calendar.delete_event(rest[1])
            return json_response(200, {})
    if rest == ["occurrences", "delete"] and method == "POST":
        body = request.json()
        deleted = calendar.delete_occurrence(body["series_id"], _moment(body["start"]))
        return json_response(200, {"id": deleted})
    if rest[:1] == ["keys"] and len(rest) == 2:
        return json_response(200, {"id": sim.event_id(mailbox, rest[1])})
    return json_response(404, {"error": f"no control route {method} {request.path}"})


def _moment(text: str) -> datetime:
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        raise ValueError(f"{text}: give Z or an offset")
    return moment
