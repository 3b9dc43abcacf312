"""The Rocket.Chat simulator's realtime API: DDP over the WebSocket at ``/websocket``.

What FACTS.md §2.6 records of the server: ``{"server_id":"0"}`` first; ``connect`` (version
``1``) answered ``connected`` with a session id, or ``failed``; ``ping``/``pong`` both ways
(echoing ``id``); the ``login`` method with ``{"resume": token}`` (``updated`` then ``result``
with the user id, the token and its EJSON expiry; a token it does not know gets Meteor's
403 "You've been logged out by the server. Please log in again."); ``sub``/``ready``,
``unsub``/``nosub``, and ``nosub`` without an error for a stream the user may not read (the
streamer stops the publication). Of the streams it knows ``stream-notify-user``
``<uid>/<event>``, and the simulator emits ``subscriptions-changed`` (``["updated",
subscription]``, dates as ``{"$date": ms}``) whenever a subscription of the user changes.
Other publications get Meteor's 404 ``nosub``.

Tests drive it through ``RocketChatSim``: ``realtime=False`` answers the upgrade with a 404,
``drop_sockets()`` (``POST /_sim/sockets/drop``) cuts every connection, ``set_down(True)``
too (the upgrade then answers 503), ``stream.ping_every`` makes the server ping.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import WSMsgType, web

LOGGED_OUT = "You've been logged out by the server. Please log in again."
TOKEN_DAYS = 90  # Accounts_LoginExpiration
Resume = Callable[[str], str | None]  # a token → the id of its user, or None


def meteor_error(error: int | str, reason: str) -> dict[str, Any]:
    """A ``Meteor.Error`` as DDP sends it."""
    return {"isClientSafe": True, "error": error, "reason": reason,
            "message": f"{reason} [{error}]", "errorType": "Meteor.Error"}  # fmt: skip


def ejson_dates(record: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``record`` with the ISO times under ``keys`` as EJSON ``{"$date": ms}``."""
    data = dict(record)
    for key in keys:
        if isinstance(data.get(key), str):
            moment = datetime.fromisoformat(data[key].replace("Z", "+00:00"))
            data[key] = {"$date": int(moment.timestamp() * 1000)}
    return data


@dataclass
class SimSocket:
    """One client connection and what it did: connected, logged in as ``uid``, subscribed."""

    ws: web.WebSocketResponse
    request: web.Request
    connected: bool = False
    uid: str | None = None
    token: str | None = None
    subs: dict[str, str] = field(default_factory=dict)  # sub id → event name
    out: asyncio.Queue[dict[str, Any] | None] = field(default_factory=asyncio.Queue)

    def send(self, message: dict[str, Any] | None) -> None:
        self.out.put_nowait(message)

    async def write(self) -> None:
        while (message := await self.out.get()) is not None:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.ws.send_str(json.dumps(message))

    def cut(self) -> None:
        """Drop the connection without a close frame, as a restart or a NAT does."""
        if self.request.transport is not None:
            self.request.transport.close()


class SimStream:
    """The ``/websocket`` endpoint; ``resume`` says whose a token is."""

    def __init__(self, resume: Resume) -> None:
        self.resume = resume
        self.sockets: list[SimSocket] = []
        self.connects = 0  # WebSocket connections accepted
        self.logins: list[tuple[str | None, bool]] = []  # (user id, accepted)
        self.pongs = 0  # pongs answering the server's pings
        self.ping_every: float | None = None

    async def serve(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        sock = SimSocket(ws, request)
        self.sockets.append(sock)
        self.connects += 1
        tasks = [asyncio.create_task(sock.write()), asyncio.create_task(self._ping(sock))]
        sock.send({"server_id": "0"})
        try:
            async for frame in ws:
                if frame.type == WSMsgType.TEXT:
                    with contextlib.suppress(ValueError):
                        self._receive(sock, json.loads(frame.data))
        finally:
            self.sockets.remove(sock)
            for task in tasks:
                task.cancel()
        return ws

    def emit(self, uid: str, event: str, args: list[Any]) -> None:
        """``stream-notify-user`` ``<uid>/<event>`` to every socket subscribed to it."""
        name = f"{uid}/{event}"
        for sock in self.sockets:
            if sock.uid == uid and name in sock.subs.values():
                sock.send({"msg": "changed", "collection": "stream-notify-user", "id": "id",
                           "fields": {"eventName": name, "args": args}})  # fmt: skip

    def drop(self, uid: str | None = None) -> None:
        """Cut the connections of ``uid`` (of everyone when None)."""
        for sock in list(self.sockets):
            if uid is None or sock.uid == uid:
                sock.cut()

    async def _ping(self, sock: SimSocket) -> None:
        while self.ping_every:
            await asyncio.sleep(self.ping_every)
            sock.send({"msg": "ping"})

    def _receive(self, sock: SimSocket, message: Any) -> None:
        if not isinstance(message, dict):
            return
        kind, ident = message.get("msg"), message.get("id")
        if kind == "connect":
            self._connect(sock, message)
        elif not sock.connected:
            sock.send({"msg": "error", "reason": "Must connect first", "offendingMessage": message})
        elif kind == "ping":
            sock.send({"msg": "pong", **({"id": ident} if ident is not None else {})})
        elif kind == "pong":
            self.pongs += 1
        elif kind == "method":
            self._method(sock, str(ident), message.get("method"), message.get("params") or [])
        elif kind == "sub":
            self._sub(sock, str(ident), message.get("name"), message.get("params") or [])
        elif kind == "unsub":
            sock.subs.pop(str(ident), None)
            sock.send({"msg": "nosub", "id": ident})

    def _connect(self, sock: SimSocket, message: dict[str, Any]) -> None:
        if message.get("version") != "1" and "1" not in (message.get("support") or []):
            sock.send({"msg": "failed", "version": "1"})
            return
        sock.connected = True
        sock.send({"msg": "connected", "session": secrets.token_hex(8)})

    def _method(self, sock: SimSocket, ident: str, method: Any, params: list[Any]) -> None:
        if method != "login":
            error = meteor_error(404, f"Method '{method}' not found")
            sock.send({"msg": "result", "id": ident, "error": error})
            return
        options = params[0] if params and isinstance(params[0], dict) else {}
        if not isinstance(options.get("resume"), str):
            error = meteor_error(400, "Unrecognized options for login request")
            sock.send({"msg": "result", "id": ident, "error": error})
            return
        token, uid = options["resume"], self.resume(options["resume"])
        self.logins.append((uid, uid is not None))
        if uid is None:
            sock.send({"msg": "result", "id": ident, "error": meteor_error(403, LOGGED_OUT)})
            return
        sock.uid, sock.token = uid, token
        expires = int((time.time() + TOKEN_DAYS * 86400) * 1000)
        result = {"id": uid, "token": token, "tokenExpires": {"$date": expires}, "type": "resume"}
        sock.send({"msg": "updated", "methods": [ident]})
        sock.send({"msg": "result", "id": ident, "result": result})

    def _sub(self, sock: SimSocket, ident: str, name: Any, params: list[Any]) -> None:
        if name != "stream-notify-user":
            error = meteor_error(404, f"Subscription '{name}' not found")
            sock.send({"msg": "nosub", "id": ident, "error": error})
            return
        event = params[0] if params else None
        if sock.uid is None or not isinstance(event, str) or not event.startswith(f"{sock.uid}/"):
            sock.send({"msg": "nosub", "id": ident})  # the streamer stops the publication
            return
        sock.subs[ident] = event
        sock.send({"msg": "ready", "subs": [ident]})
