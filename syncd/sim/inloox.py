"""InLoox's OData TimeEntry and Project API, booking from the simulated Graph.

A personal access token belongs to one contact (the performer) and may book
for one mailbox.  A token sees only its own contact's time entries.
"""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from syncd.sim.calendar import EventNotFound
from syncd.sim.faults import RetryAfter, Stats, retry_after_header
from syncd.sim.http import Request, Response, dropped, empty_response, json_response
from syncd.sim.odata import ODataError, query
from syncd.sim.scenario import User

if TYPE_CHECKING:
    from syncd.sim.simulator import Simulator

JSON = dict[str, Any]
BOOKED_CATEGORY = "InLoox"
TIME_ENTRY_FIELDS = {
    "TimeEntryId",
    "ProjectId",
    "TaskItemId",
    "StartDateTime",
    "EndDateTime",
    "DurationMinutes",
    "DisplayName",
    "Description",
    "PerformedByContactId",
    "IsBilled",
    "CreatedDateTime",
    "ChangedDateTime",
}
PROJECT_FIELDS = {"ProjectId", "Name", "Number"}
_PATCHABLE = {
    "ProjectId",
    "TaskItemId",
    "StartDateTime",
    "EndDateTime",
    "DisplayName",
    "Description",
    "DurationMinutes",
}
_ENTITY_KEY = re.compile(r"^(TimeEntry|Project)\((?:guid')?([0-9a-fA-F-]{36})'?\)$")


class InLooxError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.response = json_response(
            status, {"error": {"code": code, "message": message}}, headers
        )


def instant(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class InLoox:
    """Serves /odata for the scenario's projects and contacts."""

    def __init__(self, sim: Simulator) -> None:
        self._sim = sim
        self._lock = threading.RLock()
        self._entries: dict[str, JSON] = {}
        self._in_flight = 0
        self._projects = [
            {"ProjectId": p.project_id, "Name": p.name, "Number": p.number}
            for p in sim.scenario.projects
        ]

    # ----- direct access (tests, demo) --------------------------------

    def entries(self, contact_id: str | None = None) -> list[JSON]:
        with self._lock:
            return [
                dict(e)
                for e in self._entries.values()
                if contact_id is None or e["PerformedByContactId"] == contact_id
            ]

    def set_billed(self, entry_id: str, billed: bool) -> None:
        with self._lock:
            self._entries[entry_id.lower()]["IsBilled"] = billed

    # ----- HTTP -------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        kind = _kind(request.path)
        try:
            response = await self._handle(request)
        except InLooxError as error:
            response = error.response
        except ODataError as error:
            response = InLooxError(400, "BadRequest", str(error)).response
        status = 0 if response.drop else response.status
        self._sim.update_stats(
            lambda s: s.requests.update([("inloox", request.method, kind, status)])
        )
        return response

    async def _handle(self, request: Request) -> Response:
        user = self._authenticate(request)
        self._throttle()
        try:
            delay = self._sim.faults.latency.get("inloox", 0.0)
            if delay:
                await asyncio.sleep(delay)
            creates = _kind(request.path) == "create_from_event"
            faults = self._sim.faults
            if creates and not await faults.pass_point("inloox_create"):
                return dropped()
            response = self._route(request, user)
            if creates and not await faults.pass_point("inloox_created"):
                return dropped()
            return response
        finally:
            with self._lock:
                self._in_flight -= 1

    def _authenticate(self, request: Request) -> User:
        key = request.header("x-api-key")
        scheme, _, token = request.header("authorization").partition(" ")
        if not key and scheme.lower() == "bearer":
            key = token.strip()
        user = self._sim.scenario.user_by_key(key) if key else None
        if user is not None:
            return user
        raise InLooxError(
            401,
            "Unauthorized",
            "A valid personal access token is "
            "required (x-api-key or Authorization: Bearer).",
        )

    def _throttle(self) -> None:
        injected = self._sim.faults.take_inloox_throttle()
        with self._lock:
            self._in_flight += 1
            current = self._in_flight
        self._sim.update_stats(lambda s: _record_concurrency(s, current))
        limit = self._sim.faults.inloox_concurrency
        if injected is not None or current > limit:
            with self._lock:
                self._in_flight -= 1
            retry: RetryAfter = injected.retry_after if injected else 1
            raise InLooxError(
                429,
                "TooManyRequests",
                "Too many concurrent requests.",
                retry_after_header(retry),
            )

    # ----- routes -----------------------------------------------------

    def _route(self, request: Request, user: User) -> Response:
        path = request.path.removeprefix("/odata").strip("/")
        method = request.method
        if path == "TimeEntry" and method == "GET":
            return self._list(
                request, self._visible(user), TIME_ENTRY_FIELDS, "TimeEntry"
            )
        if path == "TimeEntry" and method == "POST":
            return self._create_manual(request, user)
        if path == "TimeEntry/CreateTimeEntryFromGraphEvent" and method == "POST":
            return self._create_from_event(request, user)
        if path == "Project" and method == "GET":
            return self._list(request, list(self._projects), PROJECT_FIELDS, "Project")
        match = _ENTITY_KEY.match(path)
        if match and match[1] == "Project" and method == "GET":
            return self._project(match[2])
        if match and match[1] == "TimeEntry":
            return self._entity(request, user, match[2].lower())
        if path == "" and method == "GET":
            return json_response(
                200,
                {
                    "@odata.context": f"{request.base_url}/odata/$metadata",
                    "value": [
                        {"name": "TimeEntry", "kind": "EntitySet", "url": "TimeEntry"},
                        {"name": "Project", "kind": "EntitySet", "url": "Project"},
                    ],
                },
            )
        raise InLooxError(
            404, "NotFound", f"No resource {request.method} {request.path}."
        )

    def _visible(self, user: User) -> list[JSON]:
        if self._sim.scenario.settings.entry_visibility == "all":
            return self.entries()
        return self.entries(user.contact_id)

    def _list(
        self, request: Request, entities: list[JSON], fields: set[str], name: str
    ) -> Response:
        body = query(
            entities,
            request.query,
            fields=fields,
            page_size=self._sim.scenario.settings.inloox_page_size,
            context=f"{request.base_url}/odata/$metadata#{name}",
            link_base=f"{request.base_url}/odata/{name}",
        )
        return json_response(200, body)

    def _project(self, project_id: str) -> Response:
        for project in self._projects:
            if project["ProjectId"].lower() == project_id.lower():
                return json_response(200, project)
        raise InLooxError(404, "ProjectNotFound", f"Project {project_id} not found.")

    def _entity(self, request: Request, user: User, entry_id: str) -> Response:
        with self._lock:
            entry = self._entries.get(entry_id)
            readable = entry is not None and (
                entry["PerformedByContactId"] == user.contact_id
                or self._sim.scenario.settings.entry_visibility == "all"
            )
            if entry is None or not readable:
                raise InLooxError(404, "NotFound", f"TimeEntry {entry_id} not found.")
            if request.method == "GET":
                return json_response(200, dict(entry))
            if entry["PerformedByContactId"] != user.contact_id:
                raise InLooxError(
                    403, "Forbidden", f"TimeEntry {entry_id} is not yours to change."
                )
            if request.method == "PATCH":
                return self._patch(request, entry)
            if request.method == "DELETE":
                self._refuse_billed(entry)
                del self._entries[entry_id]
                self._count_write(create=False)
                return empty_response(204)
        raise InLooxError(405, "MethodNotAllowed", f"{request.method} not allowed.")

    def _patch(self, request: Request, entry: JSON) -> Response:
        changes = _json_body(request)
        self._refuse_billed(entry)
        refused = set(changes) - _PATCHABLE
        if refused:
            raise InLooxError(
                400, "BadRequest", f"Properties cannot be changed: {sorted(refused)}."
            )
        updated = {**entry, **changes}
        if "ProjectId" in changes:
            self._require_project(str(changes["ProjectId"]))
        start = _parse_instant(updated["StartDateTime"], "StartDateTime")
        end = _parse_instant(updated["EndDateTime"], "EndDateTime")
        if "StartDateTime" in changes:
            self._check_backdating(start)
        updated.update(_times(start, end))
        if "DurationMinutes" in changes and not {"StartDateTime", "EndDateTime"} & set(
            changes
        ):
            updated["DurationMinutes"] = int(changes["DurationMinutes"])
        updated["ChangedDateTime"] = instant(self._sim.clock())
        entry.update(updated)
        self._count_write(create=False)
        if "return=representation" in request.header("prefer"):
            return json_response(200, dict(entry))
        return empty_response(204)

    def _refuse_billed(self, entry: JSON) -> None:
        if entry["IsBilled"]:
            raise InLooxError(
                409,
                "TimeEntryBilled",
                f"TimeEntry {entry['TimeEntryId']} is billed and cannot "
                "be changed or deleted.",
            )

    # ----- creating ---------------------------------------------------

    def _create_manual(self, request: Request, user: User) -> Response:
        body = _json_body(request)
        missing = [
            k for k in ("ProjectId", "StartDateTime", "EndDateTime") if not body.get(k)
        ]
        if missing:
            raise InLooxError(400, "BadRequest", f"Missing properties: {missing}.")
        start = _parse_instant(body["StartDateTime"], "StartDateTime")
        end = _parse_instant(body["EndDateTime"], "EndDateTime")
        entry = self._commit(
            user,
            str(body["ProjectId"]),
            body.get("TaskItemId"),
            start,
            end,
            str(body.get("DisplayName", "")),
            str(body.get("Description", "")),
        )
        return self._created(entry, request, "entity201")

    def _create_from_event(self, request: Request, user: User) -> Response:
        body = _json_body(request)
        missing = [k for k in ("eventId", "mailbox", "projectId") if not body.get(k)]
        if missing:
            raise InLooxError(400, "BadRequest", f"Missing parameters: {missing}.")
        mailbox = str(body["mailbox"])
        if mailbox.lower() != user.mailbox.lower():
            raise InLooxError(
                403, "Forbidden", f"This token may not book for mailbox {mailbox}."
            )
        event = self._read_event(mailbox, str(body["eventId"]))
        start = _graph_instant(event["start"])
        end = _graph_instant(event["end"])
        entry = self._commit(
            user,
            str(body["projectId"]),
            body.get("taskItemId"),
            start,
            end,
            str(event.get("subject") or ""),
            "",
        )
        if body.get("tagEvent"):
            self._sim.calendar(mailbox).add_category(
                str(body["eventId"]), BOOKED_CATEGORY
            )
        mode = (
            self._sim.faults.create_response
            or self._sim.scenario.settings.create_response
        )
        return self._created(entry, request, mode)

    def _read_event(self, mailbox: str, event_id: str) -> JSON:
        if not self._sim.has_mailbox(mailbox):
            raise InLooxError(404, "EventNotFound", f"Mailbox {mailbox} not found.")
        try:
            return self._sim.calendar(mailbox).get(event_id)
        except EventNotFound:
            raise InLooxError(
                404, "EventNotFound", "The event was not found in the calendar."
            ) from None

    def _commit(
        self,
        user: User,
        project_id: str,
        task_id: Any,
        start: datetime,
        end: datetime,
        name: str,
        description: str,
    ) -> JSON:
        self._require_project(project_id)
        self._check_backdating(start)
        if end < start:
            raise InLooxError(400, "BadRequest", "EndDateTime is before StartDateTime.")
        now = instant(self._sim.clock())
        entry: JSON = {
            "TimeEntryId": str(uuid.uuid4()),
            "ProjectId": project_id.lower(),
            "TaskItemId": str(task_id).lower() if task_id else None,
            **_times(start, end),
            "DisplayName": name,
            "Description": description,
            "PerformedByContactId": user.contact_id,
            "IsBilled": False,
            "CreatedDateTime": now,
            "ChangedDateTime": now,
        }
        with self._lock:
            self._entries[entry["TimeEntryId"]] = entry
        self._count_write(create=True)
        return dict(entry)

    def _created(self, entry: JSON, request: Request, mode: str) -> Response:
        fault = self._sim.faults.take_commit_fault()
        if fault == "drop":
            return dropped()
        if fault == "502":
            raise InLooxError(502, "BadGateway", "The upstream server did not answer.")
        if mode == "empty204":
            return empty_response(204)
        location = [
            ("Location", f"{request.base_url}/odata/TimeEntry({entry['TimeEntryId']})")
        ]
        context = f"{request.base_url}/odata"
        return json_response(
            200 if mode == "entity200" else 201,
            {
                "@odata.context": f"{context}/$metadata#TimeEntry/$entity",
                **entry,
            },
            location,
        )

    def _require_project(self, project_id: str) -> None:
        if not any(
            p["ProjectId"].lower() == project_id.lower() for p in self._projects
        ):
            raise InLooxError(
                404, "ProjectNotFound", f"Project {project_id} not found."
            )

    def _check_backdating(self, start: datetime) -> None:
        days = self._sim.scenario.settings.backdating_days
        if start < self._sim.clock() - timedelta(days=days):
            raise InLooxError(
                422, "TimeEntryTooOld", f"Time can be booked at most {days} days back."
            )

    def _count_write(self, *, create: bool) -> None:
        def change(stats: Stats) -> None:
            stats.inloox_writes += 1
            stats.inloox_creates += int(create)

        self._sim.update_stats(change)


def _record_concurrency(stats: Stats, current: int) -> None:
    stats.inloox_max_concurrent = max(stats.inloox_max_concurrent, current)


def _times(start: datetime, end: datetime) -> JSON:
    return {
        "StartDateTime": instant(start),
        "EndDateTime": instant(end),
        "DurationMinutes": int((end - start).total_seconds() // 60),
    }


def _kind(path: str) -> str:
    rest = path.removeprefix("/odata").strip("/")
    if rest.endswith("CreateTimeEntryFromGraphEvent"):
        return "create_from_event"
    if _ENTITY_KEY.match(rest):
        return rest.split("(")[0].lower() + "_entity"
    return rest.lower() or "service"


def _json_body(request: Request) -> JSON:
    try:
        body = request.json()
    except ValueError:
        raise InLooxError(400, "BadRequest", "The body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise InLooxError(400, "BadRequest", "The body must be a JSON object.")
    return body


def _parse_instant(value: Any, name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise InLooxError(
            400, "BadRequest", f"{name} is not a date and time."
        ) from None
    if moment.tzinfo is None:
        raise InLooxError(400, "BadRequest", f"{name} needs Z or an offset.")
    return moment.astimezone(UTC)


def _graph_instant(value: JSON) -> datetime:
    text = str(value["dateTime"])[:26]
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
