"""A homeserver reduced to what the matrix sink calls, for the fault matrix (a real Synapse
is too heavy to start per proof run): ``PUT /_matrix/client/v3/rooms/{room}/send/
{type}/{txn}`` and ``GET /_matrix/client/v3/directory/room/{alias}``, with the Matrix
client-server API's answers and error shapes:

- access tokens as ``Authorization: Bearer``: none → 401 ``M_MISSING_TOKEN``, an unknown
  one → 401 ``M_UNKNOWN_TOKEN`` (``soft_logout: false``);
- a room the user has not joined → 403 ``M_FORBIDDEN``; an unknown alias → 404
  ``M_NOT_FOUND``; a body that is not a JSON object → 400 ``M_NOT_JSON``; any other
  endpoint → 404 ``M_UNRECOGNIZED``;
- transaction ids per access token: a send repeated with the same txn id answers the
  first event's id and stores nothing (the spec's idempotency, which Synapse keeps 24 h);
- queued faults: ``rate_limited`` → 429 ``M_LIMIT_EXCEEDED`` with ``retry_after_ms``
  (``retry_after_ms``, default 2000; ``header: true`` adds the v1.10 ``Retry-After`` in
  whole seconds), ``status`` → ``M_UNKNOWN`` with that status, and the shared ``html``,
  ``latency``, ``truncated``, ``reset``.
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim.base import Fault, SimServer, bearer_token, proxy_page

API = "/_matrix/client/v3"


def matrix_error(status: int, errcode: str, error: str, **extra: Any) -> web.Response:
    return web.json_response({"errcode": errcode, "error": error, **extra}, status=status)


@dataclass(frozen=True)
class Event:
    event_id: str
    room_id: str
    sender: str
    type: str
    content: dict[str, Any]


class MatrixFake(SimServer):
    partial_body = b'{"event_id": "$'

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.users: dict[str, str] = {}  # token → user id
        self.rooms: dict[str, set[str]] = {}  # room id → joined user ids
        self.aliases: dict[str, str] = {}  # alias → room id
        self.events: list[Event] = []
        self._txns: dict[tuple[str, str], str] = {}  # (token, txn id) → event id

    def add_user(self, user_id: str) -> str:
        token = "syt_" + secrets.token_urlsafe(24)
        self.users[token] = user_id
        return token

    def add_room(self, room_id: str, *members: str, alias: str | None = None) -> str:
        self.rooms[room_id] = set(members)
        if alias:
            self.aliases[alias] = room_id
        return room_id

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_put(API + "/rooms/{room}/send/{type}/{txn}", self._send)
        router.add_get(API + "/directory/room/{alias}", self._directory)

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return matrix_error(404, "M_UNRECOGNIZED", "Unrecognized request")
        token = bearer_token(request)
        if token is None:
            return matrix_error(401, "M_MISSING_TOKEN", "Missing access token")
        if token not in self.users:
            return matrix_error(401, "M_UNKNOWN_TOKEN", "Invalid access token passed.",
                                soft_logout=False)  # fmt: skip
        return await handler(request)

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        if fault.kind == "html":
            return proxy_page(int(fault.params.get("status", 502)))
        if fault.kind == "rate_limited":
            wait_ms = int(fault.params.get("retry_after_ms", 2000))
            response = matrix_error(429, "M_LIMIT_EXCEEDED", "Too Many Requests",
                                    retry_after_ms=wait_ms)  # fmt: skip
            if fault.params.get("header"):
                response.headers["Retry-After"] = str(math.ceil(wait_ms / 1000))
            return response
        status = int(fault.params.get("status", 500))
        return matrix_error(status, "M_UNKNOWN", HTTPStatus(status).phrase)

    async def _send(self, request: web.Request) -> web.Response:
        token = str(bearer_token(request))
        user, room_id = self.users[token], request.match_info["room"]
        if user not in self.rooms.get(room_id, set()):
            return matrix_error(403, "M_FORBIDDEN", f"User {user} not in room {room_id}")
        try:
            content = json.loads(await request.read())
        except ValueError:
            content = None
        if not isinstance(content, dict):
            return matrix_error(400, "M_NOT_JSON", "Content not JSON.")
        key = (token, request.match_info["txn"])
        if key not in self._txns:
            event_id = "$" + secrets.token_urlsafe(32)
            self.events.append(Event(event_id, room_id, user, request.match_info["type"],
                                     content))  # fmt: skip
            self._txns[key] = event_id
        return web.json_response({"event_id": self._txns[key]})

    async def _directory(self, request: web.Request) -> web.Response:
        alias = request.match_info["alias"]
        room_id = self.aliases.get(alias)
        if room_id is None:
            return matrix_error(404, "M_NOT_FOUND", f"Room alias {alias} not found")
        return web.json_response({"room_id": room_id, "servers": [alias.partition(":")[2]]})
