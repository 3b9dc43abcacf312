"""A simulator of a Gotify server's message API, served by aiohttp.

It models: applications with tokens (``A`` and 14 characters, like Gotify's) and a default
priority; ``POST /message`` with the token in ``X-Gotify-Key``, ``Authorization: Bearer``
or ``?token=``, as JSON (title, message, priority, extras) or as a form (no extras); the
answer with the stored message (``id``, ``appid``, ``message``, ``title`` — the
application's name when empty —, ``priority`` — the application's default when missing —,
``extras``, ``date``); Gotify's error body ``{"error", "errorCode", "errorDescription"}``
for 401 (no token, an unknown one, or a client's token) and 400 (a body that is no
message: not JSON, a missing or empty ``message``, a priority that is not a number); with
``mysql=True``, MySQL's TEXT column (65,535 bytes) that makes a longer message fail with
500. On top: ``received`` messages, queued faults (``status`` takes ``status`` and
``description``; ``html`` takes ``status``; ``rate_limited`` is a reverse proxy's 429
page with ``Retry-After: retry_after``), a down switch, a request log and ``/_sim/``.

Gotify itself has no rate limit. Not modelled: users, clients, reading or deleting
messages, the WebSocket stream, plugins, application images.

    python -m bot.sim.gotify --port 8070 --app inboxbot
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any

from aiohttp import web

from bot.sim.base import Fault, SimServer, proxy_page, serve_until_stopped, simulator_parser

NO_TOKEN = "you need to provide a valid access token or user credentials to access this api"
MYSQL_TEXT = 65_535  # bytes


class GotifyError(Exception):
    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status, self.description = status, description

    def response(self) -> web.Response:
        body = {"error": HTTPStatus(self.status).phrase, "errorCode": self.status,
                "errorDescription": self.description}  # fmt: skip
        return web.json_response(body, status=self.status)


@dataclass
class SimApp:
    id: int
    name: str
    token: str
    default_priority: int = 0


@dataclass(frozen=True)
class Received:
    """One stored message as Gotify answered it, and how its token came."""

    message: dict[str, Any]
    token_via: str  # "header", "bearer" or "query"


class GotifySim(SimServer):
    """The simulated server; ``mysql`` limits messages as its MySQL backend does."""

    partial_body = b'{"id":'

    def __init__(self, *, mysql: bool = False, clock: Callable[[], float] = time.time) -> None:
        super().__init__(clock)
        self.mysql = mysql
        self.apps: dict[str, SimApp] = {}  # token → app
        self.received: list[Received] = []

    def add_app(self, name: str, *, default_priority: int = 0) -> SimApp:
        alphabet = string.ascii_letters + string.digits + ".-_"
        token = "A" + "".join(secrets.choice(alphabet) for _ in range(14))
        app = SimApp(len(self.apps) + 1, name, token, default_priority)
        self.apps[token] = app
        return app

    def messages(self) -> list[dict[str, Any]]:
        return [r.message for r in self.received]

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/message", self._create)
        router.add_get("/_sim/messages", self._ctl_messages)

    def caller(self, request: web.Request) -> str | None:
        return _token(request)[0] or None

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        status = int(fault.params.get("status", 502 if fault.kind == "html" else 500))
        if fault.kind == "rate_limited":
            page = proxy_page(429)
            page.headers["Retry-After"] = str(fault.params.get("retry_after", 30))
            return page
        if fault.kind == "html":
            return proxy_page(status)
        description = str(fault.params.get("description", HTTPStatus(status).phrase))
        return GotifyError(status, description).response()

    async def _create(self, request: web.Request) -> web.Response:
        """Gotify's order: the app token (401), then the body (400), then the database."""
        token, via = _token(request)
        app = self.apps.get(token)
        try:
            if app is None:
                raise GotifyError(401, NO_TOKEN)
            fields = await _fields(request)
            message = self._store(app, fields)
        except GotifyError as err:
            return err.response()
        self.received.append(Received(message, via))
        return web.json_response(message)

    def _store(self, app: SimApp, fields: dict[str, Any]) -> dict[str, Any]:
        text, title = fields["message"], str(fields.get("title") or "")
        if self.mysql and max(len(text.encode()), len(title.encode())) > MYSQL_TEXT:
            column = "message" if len(text.encode()) > MYSQL_TEXT else "title"
            raise GotifyError(500, f"Error 1406 (22001): Data too long for column '{column}'"
                                   " at row 1")  # fmt: skip
        priority = fields.get("priority")
        message = {
            "id": len(self.received) + 1, "appid": app.id, "message": text,
            "title": title if title.strip() else app.name,
            "priority": app.default_priority if priority is None else priority,
            "date": datetime.fromtimestamp(self.clock(), UTC).isoformat(),
        }  # fmt: skip
        return message | ({"extras": fields["extras"]} if fields.get("extras") else {})

    async def _ctl_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages())


def _token(request: web.Request) -> tuple[str, str]:
    """The token and where it came from, in Gotify's order: header, bearer, query."""
    if "X-Gotify-Key" in request.headers:
        return request.headers["X-Gotify-Key"], "header"
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return value.strip(), "bearer"
    return request.query.get("token", ""), "query"


async def _fields(request: web.Request) -> dict[str, Any]:
    """The message of a JSON or form body, bound as gin binds it."""
    if request.content_type == "application/json":
        try:
            fields = json.loads(await request.read())
        except (UnicodeDecodeError, ValueError) as err:
            raise GotifyError(400, str(err)) from None
        if not isinstance(fields, dict):
            raise GotifyError(400, "json: cannot unmarshal into Go value of type MessageExternal")
    else:  # a form: gin binds no extras from it
        form = await request.post()
        fields = {k: str(v) for k, v in form.items() if k in ("title", "message", "priority")}
        if fields.get("priority", "").lstrip("-").isdigit():
            fields["priority"] = int(fields["priority"])
    priority = fields.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise GotifyError(400, "Field 'priority' is not valid")
    if not isinstance(fields.get("message"), str) or not fields["message"]:
        raise GotifyError(400, "Field 'message' is required")
    if not isinstance(fields.get("extras") or {}, dict):
        raise GotifyError(400, "Field 'extras' is not valid")
    return fields


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = GotifySim(mysql=args.mysql)
    apps = [sim.add_app(name) for name in args.app or ["inboxbot"]]

    def banner() -> list[str]:
        return [f"Gotify simulator at {sim.base_url}",
                *(f"  app {a.name} token={a.token}" for a in apps)]  # fmt: skip

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated Gotify message API.", port=8070)
    parser.add_argument("--app", action="append", help="an application's name, repeatable")
    parser.add_argument("--mysql", action="store_true", help="limit messages as MySQL does")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
