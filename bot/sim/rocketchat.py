"""A simulator of the Rocket.Chat REST API for direct messages, served by aiohttp.

It models what FACTS.md §2 records from the server code: users with personal access tokens
and password login (``X-User-Id`` + ``X-Auth-Token``; 401 bodies of servers before and after
8.0; 2FA refusals), 1:1 DMs (rid = the two user ids sorted and joined) and group DMs,
channels next to them, subscriptions with ``unread``/``alert``/``tunread``/``ls`` and
``_updatedAt`` (``subscriptions.get?updatedSince``, ``subscriptions.read``), ``dm.*`` and
``im.*`` (``list``, ``history`` with ``oldest``/``latest``/``inclusive``/``count`` ≤ 100 newest
first and thread replies hidden unless ``showThreadMessages=true``, ``messages``),
``chat.postMessage`` (also into threads; to ``#channel``, ``@username`` or a room id; refused
over ``Message_MaxAllowedSize``, 5,000 UTF-16 units by default, as ``processWebhookMessage``
checks it; accepted bodies kept in ``posted``), HTTP 400 ``errorType`` answers, and the default
rate limit: 10 calls per 60 s per client IP, route and method, in a fixed window counted before the
check, with ``X-RateLimit-Limit/-Remaining/-Reset`` (epoch ms) and the 429 body. The realtime
API (DDP at ``/websocket``, ``rocketchat_ddp``) pushes ``subscriptions-changed`` as they change.
On top: queued faults, a "down" switch, a request log and an unauthenticated ``/_sim/`` control
API.

    python -m bot.sim.rocketchat --port 3000
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim.base import (
    Fault,
    SimRequest,
    SimServer,
    busiest_window,
    proxy_page,
    serve_until_stopped,
    simulator_parser,
)
from bot.sim.rocketchat_ddp import SimStream, ejson_dates

API = "/api/v1/"
DEFAULT_COUNT, MAX_COUNT = 50, 100
LOGGED_OUT = "You must be logged in to do this."
NO_PERMISSION = "User does not have the permissions required for this action"
ID_ALPHABET = "23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz"
NewFile = tuple[str, str, int]  # name, content type, size
USER = web.RequestKey("user", object)

_URL = re.compile(r"https?://[^\s<>\"')\]]+")


def random_id() -> str:
    """A Meteor ``Random.id()``: 17 characters of an unambiguous alphabet."""
    return "".join(secrets.choice(ID_ALPHABET) for _ in range(17))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _ms(moment: datetime) -> datetime:
    """Mongo keeps dates to the millisecond."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class _ApiError(Exception):
    """A failure answered as ``{"success": false, "error": …}`` (with ``errorType`` on 400)."""

    def __init__(
        self,
        status: int,
        error: str,
        error_type: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.error_type = status, error, error_type
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        if self.error_type is None:
            return {"success": False, "error": self.error, **self.extra}
        error = f"{self.error} [{self.error_type}]"
        return {"success": False, "error": error, "errorType": self.error_type, **self.extra}

    def response(self) -> web.Response:
        return web.json_response(self.body(), status=self.status)


def _bad(error_type: str, reason: str) -> _ApiError:
    return _ApiError(400, reason, error_type)


@dataclass
class SimUser:
    id: str
    username: str
    name: str
    password: str | None = None
    token: str = ""  # the personal access token
    tokens: set[str] = field(default_factory=set)  # every accepted token: PAT and logins
    two_factor: bool = False

    def brief(self) -> dict[str, str]:
        return {"_id": self.id, "username": self.username, "name": self.name}


@dataclass
class SimRoom:
    id: str
    t: str  # "d" (direct), "c" (channel)
    uids: list[str]
    ts: datetime
    updated_at: datetime
    name: str | None = None
    msgs: int = 0
    lm: datetime | None = None
    last_message: dict[str, Any] | None = None


@dataclass
class SimSubscription:
    id: str
    room: SimRoom
    user: SimUser
    name: str
    fname: str
    ts: datetime
    updated_at: datetime
    unread: int = 0
    alert: bool = False
    open: bool = True
    ls: datetime | None = None
    lr: datetime | None = None
    tunread: list[str] = field(default_factory=list)

    def json(self) -> dict[str, Any]:
        data = {
            "_id": self.id, "rid": self.room.id, "t": self.room.t, "name": self.name,
            "fname": self.fname, "u": self.user.brief(), "open": self.open, "alert": self.alert,
            "unread": self.unread, "userMentions": 0, "groupMentions": 0,
            "tunread": list(self.tunread), "tunreadUser": [], "tunreadGroup": [],
            "ts": iso(self.ts), "_updatedAt": iso(self.updated_at),
        }  # fmt: skip
        data |= {"ls": iso(self.ls)} if self.ls else {}
        return data | ({"lr": iso(self.lr)} if self.lr else {})


@dataclass
class SimMessage:
    id: str
    room: SimRoom
    user: SimUser
    text: str
    ts: datetime
    tmid: str | None = None
    tshow: bool = False
    t: str | None = None
    file: tuple[str, str, str, int] | None = None  # id, name, type, size
    replies: list[str] = field(default_factory=list)  # user ids, for a thread's parent
    tcount: int = 0
    tlm: datetime | None = None

    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "_id": self.id, "rid": self.room.id, "msg": self.text, "ts": iso(self.ts),
            "u": self.user.brief(), "_updatedAt": iso(self.tlm or self.ts),
            "urls": [{"url": u} for u in _URL.findall(self.text)], "mentions": [],
            "channels": [], "md": [{"type": "PARAGRAPH",
                                     "value": [{"type": "PLAIN_TEXT", "value": self.text}]}],
        }  # fmt: skip
        if self.t:
            data["t"] = self.t
        if self.tmid:
            data |= {"tmid": self.tmid} | ({"tshow": True} if self.tshow else {})
        if self.tlm:
            data |= {"replies": list(self.replies), "tcount": self.tcount, "tlm": iso(self.tlm)}
        return data | (self._file_fields() if self.file else {})

    def _file_fields(self) -> dict[str, Any]:
        assert self.file is not None
        fid, name, kind, size = self.file
        brief = {"_id": fid, "name": name, "type": kind, "size": size}
        attachment: dict[str, Any] = {
            "type": "file", "title": name, "title_link": f"/file-upload/{fid}/{quote(name)}",
            "title_link_download": True, "ts": iso(self.ts),
        }  # fmt: skip
        if kind.startswith("image/"):
            attachment |= {"image_url": attachment["title_link"], "image_type": kind,
                           "image_size": size}  # fmt: skip
        return {"file": brief, "files": [brief | {"format": name.rpartition(".")[2].upper()}],
                "attachments": [attachment]}  # fmt: skip


class RocketChatSim(SimServer):
    """The simulated server: state, the aiohttp app and the control API tests drive.

    ``version`` picks the 401/403 bodies (before or from 8.0); ``rate_limit`` calls per
    ``rate_period`` seconds per IP, route and method (the server default: 10 per 60 s);
    ``realtime=False``: no realtime API (``/websocket`` answers 404, as behind a proxy
    without WebSocket).
    The request log names callers by ``X-User-Id`` and is read per route (``requests_to``).

    Fault params: ``latency`` takes ``seconds``; ``status`` takes ``status``, ``error`` and
    ``errorType``; ``html`` takes ``status``; ``reset`` takes ``before_headers``."""

    partial_body = b'{"messages": [{"_id": "'
    window_seconds = 60.0
    window_filter = "route"

    def __init__(
        self,
        *,
        version: str = "7.10.0",
        rate_limit: int = 10,
        rate_period: float = 60.0,
        clock: Callable[[], float] = time.time,
        realtime: bool = True,
    ) -> None:
        super().__init__(clock)
        self.realtime = realtime
        self.stream = SimStream(self._resume)
        self.version = version
        self.rate_limit, self.rate_period = rate_limit, rate_period
        self.max_message_size = 5000  # Message_MaxAllowedSize
        self.posted: list[dict[str, Any]] = []  # accepted chat.postMessage bodies
        self.users: dict[str, SimUser] = {}
        self.rooms: dict[str, SimRoom] = {}
        self.subscriptions: dict[tuple[str, str], SimSubscription] = {}  # (rid, uid)
        self.messages: dict[str, SimMessage] = {}
        self._windows: dict[tuple[str, str], list[float]] = {}  # → [reset at, calls]

    @property
    def modern(self) -> bool:
        """8.0 and later answer without the legacy ``status``/``message`` fields."""
        return int(self.version.split(".")[0]) >= 8

    def now(self) -> datetime:
        return _ms(datetime.fromtimestamp(self.clock(), UTC))

    # State control, used by tests and the demo in the same event loop.

    def add_user(
        self,
        username: str,
        name: str | None = None,
        *,
        password: str | None = None,
        token: str | None = None,
        two_factor: bool = False,
    ) -> SimUser:
        """A user with a personal access token (``user.token``) and optionally a password."""
        if self.find_user(username) is not None:
            raise ValueError(f"username taken: {username}")
        pat = token or secrets.token_urlsafe(32)
        user = SimUser(random_id(), username, name or username, password, pat, {pat}, two_factor)
        self.users[user.id] = user
        return user

    def find_user(self, username: str) -> SimUser | None:
        return next((u for u in self.users.values() if u.username == username), None)

    def revoke(self, user: SimUser) -> None:
        """Every token of ``user`` stops working (logout everywhere, PAT removed)."""
        user.tokens.clear()
        self.stream.drop(user.id)

    def drop_sockets(self) -> None:
        """Cut every realtime connection (a restart, a proxy reload); clients reconnect."""
        self.stream.drop()

    def set_down(self, down: bool) -> None:
        super().set_down(down)
        if down:
            self.drop_sockets()

    async def stop(self) -> None:
        self.drop_sockets()
        await super().stop()

    def direct(self, *members: SimUser | str) -> SimRoom:
        """The DM between ``members`` (1:1 or group), created with its subscriptions."""
        users = list({u.id: u for u in map(self._user, members)}.values())
        uids = sorted(u.id for u in users)
        existing = next((r for r in self.rooms.values() if r.t == "d" and r.uids == uids), None)
        if existing is not None:
            return existing
        rid = "".join(uids) if len(uids) <= 2 else secrets.token_hex(12)
        room = self._add_room(rid, "d", uids)
        for user in users:
            others = [u for u in users if u is not user] or [user]
            names = ", ".join(u.username for u in others)
            self._subscribe(room, user, names, ", ".join(u.name for u in others))
        return room

    def channel(self, name: str, *members: SimUser | str) -> SimRoom:
        users = [self._user(m) for m in members]
        room = self._add_room(random_id(), "c", sorted(u.id for u in users), name)
        for user in users:
            self._subscribe(room, user, name, name)
        return room

    def subscription(self, room: SimRoom | str, user: SimUser | str) -> SimSubscription:
        return self.subscriptions[(self._room(room).id, self._user(user).id)]

    def add_message(
        self,
        room: SimRoom | str,
        sender: SimUser | str,
        text: str = "",
        *,
        tmid: str | None = None,
        tshow: bool = False,
        file: NewFile | None = None,
        ts: datetime | None = None,
        t: str | None = None,
    ) -> SimMessage:
        """A message from ``sender``, with what the server updates around it: the room, the
        members' subscriptions (for a thread reply only the thread's followers'), the thread."""
        room, user, now = self._room(room), self._user(sender), self.now()
        if tmid is not None and not self._in_room(tmid, room):
            raise ValueError(f"no message {tmid} in room {room.id}")
        fields = (random_id(), *file) if file else None
        msg = SimMessage(random_id(), room, user, text, _ms(ts or now), tmid, tshow, t, fields)
        self.messages[msg.id] = msg
        room.msgs, room.lm, room.updated_at = room.msgs + 1, msg.ts, now
        if tmid is not None:
            self._thread_reply(msg, self.messages[tmid], now)
        if tmid is None or tshow:
            room.last_message = msg.json()
            self._alert(room, [uid for uid in room.uids if uid != user.id], now, unread=True)
        if (room.id, user.id) in self.subscriptions:
            mine = self.subscriptions[(room.id, user.id)]
            mine.lr, mine.updated_at = now, now
            self._changed(mine)
        return msg

    def mark_read(self, room: SimRoom | str, user: SimUser | str) -> None:
        sub, now = self.subscription(room, user), self.now()
        sub.ls, sub.unread, sub.alert, sub.tunread, sub.updated_at = now, 0, False, [], now
        self._changed(sub)

    def requests_to(self, route: str, method: str | None = None) -> list[SimRequest]:
        """The logged requests to ``route`` (e.g. ``dm.history``)."""
        return [
            r
            for r in self.requests
            if r.path.removeprefix(API) == route and method in (None, r.method)
        ]

    def max_requests_in_window(self, window: float | None = None, route: str | None = None) -> int:
        """Most requests (accepted or refused) to ``route`` (or any) within ``window`` s."""
        chosen = self.requests if route is None else self.requests_to(route)
        return busiest_window(chosen, self.window_seconds if window is None else window)

    def _user(self, user: SimUser | str) -> SimUser:
        if isinstance(user, SimUser):
            return user
        found = self.users.get(user) or self.find_user(user)
        if found is None:
            raise KeyError(f"no such user: {user}")
        return found

    def _room(self, room: SimRoom | str) -> SimRoom:
        return room if isinstance(room, SimRoom) else self.rooms[room]

    def _in_room(self, mid: str, room: SimRoom) -> bool:
        return mid in self.messages and self.messages[mid].room is room

    def _add_room(self, rid: str, t: str, uids: list[str], name: str | None = None) -> SimRoom:
        now = self.now()
        room = SimRoom(rid, t, uids, now, now, name)
        self.rooms[rid] = room
        return room

    def _subscribe(self, room: SimRoom, user: SimUser, name: str, fname: str) -> None:
        now = self.now()
        sub = SimSubscription(random_id(), room, user, name, fname, now, now, ls=now)
        self.subscriptions[(room.id, user.id)] = sub

    def _thread_reply(self, msg: SimMessage, parent: SimMessage, now: datetime) -> None:
        # Rocket.Chat tells only the thread's followers (its author and repliers) about a
        # reply, in ``tunread``; the unread count is for the room's main timeline.
        followers = [uid for uid in (parent.user.id, *parent.replies) if uid != msg.user.id]
        parent.tcount, parent.tlm = parent.tcount + 1, msg.ts
        if msg.user.id not in parent.replies:
            parent.replies.append(msg.user.id)
        self._alert(msg.room, followers, now, thread=parent.id)

    def _alert(
        self,
        room: SimRoom,
        uids: Sequence[str],
        now: datetime,
        *,
        unread: bool = False,
        thread: str | None = None,
    ) -> None:
        for uid in dict.fromkeys(uids):
            sub = self.subscriptions.get((room.id, uid))
            if sub is None:
                continue
            sub.unread += 1 if unread else 0
            if thread and thread not in sub.tunread:
                sub.tunread.append(thread)
            sub.alert, sub.open, sub.updated_at = True, True, now
            self._changed(sub)

    def _changed(self, sub: SimSubscription) -> None:
        """What the server's ``notifyOnSubscriptionChanged`` broadcasts after the write."""
        record = ejson_dates(sub.json(), ("ts", "_updatedAt", "ls", "lr"))
        self.stream.emit(sub.user.id, "subscriptions-changed", ["updated", record])

    def _resume(self, token: str) -> str | None:
        user = self._credentials_user({"resume": token})
        return user.id if user else None

    # The HTTP application.

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post(API + "login", self._login)
        router.add_get(API + "me", self._me)
        router.add_get(API + "subscriptions.get", self._subscriptions, name="subscriptions.get")
        router.add_get(API + "subscriptions.getOne", self._subscription_one)
        router.add_post(API + "subscriptions.read", self._read)
        for prefix in ("dm", "im"):  # every dm.* route has its im.* alias
            router.add_get(f"{API}{prefix}.list", self._dm_list, name=f"{prefix}.list")
            router.add_get(f"{API}{prefix}.history", self._dm_history, name=f"{prefix}.history")
            router.add_get(f"{API}{prefix}.messages", self._dm_messages, name=f"{prefix}.messages")
        router.add_post(API + "chat.postMessage", self._post_message)
        router.add_get("/websocket", self._websocket, name="websocket")
        router.add_post("/_sim/users", self._ctl_user)
        router.add_post("/_sim/rooms", self._ctl_room)
        router.add_post("/_sim/messages", self._ctl_message)
        router.add_post("/_sim/sockets/drop", self._ctl_drop_sockets)

    def caller(self, request: web.Request) -> str | None:
        return request.headers.get("X-User-Id")

    def control_error(self, err: Exception) -> web.Response:
        return web.json_response({"success": False, "error": str(err)}, status=400)

    def fault_response(self, fault: Fault) -> web.Response:
        status = int(fault.params.get("status", 502 if fault.kind == "html" else 500))
        if fault.kind == "html":
            return proxy_page(status)
        if fault.kind == "rate_limited":
            return self._too_many(self.clock() + self.rate_period)
        error = str(fault.params.get("error", HTTPStatus(status).phrase))
        return _ApiError(status, error, fault.params.get("errorType")).response()

    def truncate(self, response: web.StreamResponse) -> web.Response:
        cut = super().truncate(response)
        cut.headers.update(
            {k: v for k, v in response.headers.items() if k.startswith("X-RateLimit")}
        )
        return cut

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.match_info.http_exception is not None:
            return _ApiError(404, "Resource not found").response()
        if request.path == "/websocket":  # DDP has its own login and limits
            return await handler(request)
        reset_at, calls = self._count(request)
        if calls > self.rate_limit:
            return self._too_many(reset_at)
        try:
            if request.path != API + "login":
                request[USER] = self._authenticate(request)
            response = await handler(request)
        except _ApiError as err:
            response = err.response()
        response.headers.update(self._limit_headers(reset_at, calls))
        return response

    def _count(self, request: web.Request) -> tuple[float, int]:
        """Meteor's rate limiter: a fixed window per IP and route+method, counted before the
        check, so the 10th call passes with ``Remaining: 0`` and the 11th is refused."""
        key, now = (request.remote or "", f"{request.path}{request.method}"), self.clock()
        window = self._windows.get(key)
        if window is None or now >= window[0]:
            window = self._windows[key] = [now + self.rate_period, 0]
        window[1] += 1
        return window[0], int(window[1])

    def _limit_headers(self, reset_at: float, calls: int) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.rate_limit),
            "X-RateLimit-Remaining": str(max(0, self.rate_limit - calls)),
            "X-RateLimit-Reset": str(int(reset_at * 1000)),  # epoch milliseconds
        }

    def _too_many(self, reset_at: float) -> web.Response:
        wait = math.ceil(max(0.0, reset_at - self.clock()))
        error = (
            f"Error, too many requests. Please slow down. You must wait {wait} seconds before "
            "trying this endpoint again. [error-too-many-requests]"
        )
        headers = self._limit_headers(reset_at, self.rate_limit + 1)
        return web.json_response({"success": False, "error": error}, status=429, headers=headers)

    def _authenticate(self, request: web.Request) -> SimUser:
        user = self.users.get(request.headers.get("X-User-Id", ""))
        token = request.headers.get("X-Auth-Token", "")
        if user is None or not token or token not in user.tokens:
            legacy = {} if self.modern else {"status": "error", "message": LOGGED_OUT}
            raise _ApiError(401, LOGGED_OUT, extra=legacy)
        return user

    def _forbidden(self) -> _ApiError:
        kind = "error-forbidden" if self.modern else "error-unauthorized"
        return _ApiError(403, f"{NO_PERMISSION} [{kind}]")

    def _login_refused(self, error: str, message: str) -> _ApiError:
        if self.modern:
            return _ApiError(401, "unauthorized" if error == "Unauthorized" else error)
        return _ApiError(401, error, extra={"status": "error", "message": message})

    # API handlers.

    async def _websocket(self, request: web.Request) -> web.StreamResponse:
        return await self.stream.serve(request) if self.realtime else proxy_page(404)

    async def _login(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        user = self._credentials_user(body)
        if user is None:
            raise self._login_refused("Unauthorized", "Unauthorized")
        if user.two_factor and not (body.get("code") or request.headers.get("X-2FA-Code")):
            raise self._login_refused("totp-required", "TOTP Required")
        token = secrets.token_urlsafe(32)
        user.tokens.add(token)
        data = {"userId": user.id, "authToken": token, "me": user.brief()}
        return _ok({"status": "success", "data": data})

    def _credentials_user(self, body: dict[str, Any]) -> SimUser | None:
        if "resume" in body:
            return next((u for u in self.users.values() if body["resume"] in u.tokens), None)
        name = body.get("user") or body.get("username") or body.get("email")
        user = self.find_user(str(name)) if isinstance(name, str) else None
        good = user is not None and user.password is not None
        return user if good and user is not None and body.get("password") == user.password else None

    async def _me(self, request: web.Request) -> web.Response:
        return _ok(_user_of(request).brief())

    async def _subscriptions(self, request: web.Request) -> web.Response:
        user, raw = _user_of(request), request.query.get("updatedSince")
        since = None
        if raw:
            since = _parse_date(raw)
            if since is None:
                reason = 'The "lastUpdate" query parameter must be a valid date.'
                raise _bad("error-roomId-param-invalid", reason)
        update = [
            s.json()
            for s in self.subscriptions.values()
            if s.user is user and (since is None or s.updated_at > since)
        ]
        return _ok({"update": update, "remove": []})

    async def _subscription_one(self, request: web.Request) -> web.Response:
        rid = request.query.get("roomId")
        if not rid:
            raise _bad("invalid-params", "must have required property 'roomId'")
        sub = self.subscriptions.get((rid, _user_of(request).id))
        return _ok({"subscription": sub.json() if sub else None})

    async def _read(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        rid = body.get("rid") or body.get("roomId")
        if not isinstance(rid, str) or not rid:
            raise _bad("invalid-params", "must have required property 'rid'")
        if (rid, _user_of(request).id) not in self.subscriptions:
            raise _bad("error-invalid-subscription", "Invalid subscription")
        self.mark_read(rid, _user_of(request))
        return _ok({})

    def _direct_room(self, request: web.Request) -> SimRoom:
        user = _user_of(request)
        rid, username = request.query.get("roomId"), request.query.get("username")
        if not rid and not username:
            raise _bad("error-room-param-not-provided", 'Query param "roomId" is required')
        room = self.rooms.get(rid or "")
        if username and not rid:
            other = self.find_user(username)
            room = self.direct(user, other) if other else None
        if room is None or room.t != "d":
            reason = 'The required "roomId" or "username" param provided does not match any DM'
            raise _bad("error-room-not-found", reason)
        if user.id not in room.uids:
            raise self._forbidden()
        return room

    def _timeline(self, room: SimRoom) -> list[SimMessage]:
        """The room's messages newest first (ties: the later saved first)."""
        found = [m for m in self.messages.values() if m.room is room]
        return list(reversed(sorted(found, key=lambda m: m.ts)))

    async def _dm_history(self, request: web.Request) -> web.Response:
        room, q = self._direct_room(request), request.query
        latest = _parse_date(q.get("latest", "")) or self.now()
        oldest = _parse_date(q.get("oldest", ""))
        inclusive, threads = q.get("inclusive") == "true", q.get("showThreadMessages") == "true"
        offset, count = _pagination(q)

        def wanted(m: SimMessage) -> bool:
            after = oldest is None or m.ts > oldest or (inclusive and m.ts == oldest)
            before = m.ts < latest or (inclusive and m.ts == latest)
            return after and before and (threads or m.tmid is None or m.tshow)

        found = [m for m in self._timeline(room) if wanted(m)]
        page = found[offset : offset + count] if count else found[offset:]
        data: dict[str, Any] = {"messages": [m.json() for m in page]}
        if q.get("unreads") == "true" and oldest is not None and found:
            data |= {"firstUnread": found[-1].json(), "unreadNotLoaded": len(found) - len(page)}
        return _ok(data)

    async def _dm_messages(self, request: web.Request) -> web.Response:
        room = self._direct_room(request)
        offset, count = _pagination(request.query)
        found = self._timeline(room)  # thread replies included
        if '"ts":1' in request.query.get("sort", "").replace(" ", ""):
            found.reverse()
        page = found[offset : offset + count] if count else found[offset:]
        messages = [m.json() for m in page]
        return _ok(
            {"messages": messages, "count": len(page), "offset": offset, "total": len(found)}
        )

    async def _dm_list(self, request: web.Request) -> web.Response:
        user = _user_of(request)
        rooms = [r for r in self.rooms.values() if r.t == "d" and user.id in r.uids]
        offset, count = _pagination(request.query)
        page = rooms[offset : offset + count] if count else rooms[offset:]
        ims = [self._room_json(r) for r in page]
        return _ok({"ims": ims, "offset": offset, "count": len(page), "total": len(rooms)})

    def _room_json(self, room: SimRoom) -> dict[str, Any]:
        usernames = [self.users[uid].username for uid in room.uids]
        data: dict[str, Any] = {
            "_id": room.id, "t": room.t, "usernames": usernames, "usersCount": len(room.uids),
            "uids": list(room.uids), "msgs": room.msgs, "ts": iso(room.ts),
            "_updatedAt": iso(room.updated_at), "default": False, "ro": False, "sysMes": True,
        }  # fmt: skip
        if room.lm is not None:
            data["lm"] = iso(room.lm)
        return data | ({"lastMessage": room.last_message} if room.last_message else {})

    async def _post_message(self, request: web.Request) -> web.Response:
        user, body = _user_of(request), await _json_body(request)
        target = body.get("roomId") or body.get("channel")
        room = self._post_target(user, str(target)) if target else None
        if room is None:
            raise _bad("invalid-channel", "Invalid channel")
        if user.id not in room.uids:
            raise self._forbidden()
        tmid = body.get("tmid")
        if tmid is not None and not self._in_room(str(tmid), room):
            raise _bad("invalid-params", "Invalid thread message id")
        text = str(body.get("text") or "")
        if len(text.encode("utf-16-le")) // 2 > self.max_message_size:  # JavaScript's length
            raise _bad("error-message-size-exceeded", "Message size exceeds Message_MaxAllowedSize")
        msg = self.add_message(room, user, text, tmid=str(tmid) if tmid else None)
        self.posted.append(body)
        stamp = int(msg.ts.timestamp() * 1000)
        return _ok({"ts": stamp, "channel": target, "message": msg.json()})

    def _post_target(self, user: SimUser, target: str) -> SimRoom | None:
        if target.startswith("@"):
            other = self.find_user(target[1:])
            return self.direct(user, other) if other else None
        if target.startswith("#"):
            return next((r for r in self.rooms.values() if r.name == target[1:]), None)
        return self.rooms.get(target)

    # The /_sim/ control API: no auth, not logged, for other processes.

    async def _ctl_user(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        user = self.add_user(
            str(body["username"]),
            body.get("name"),
            password=body.get("password"),
            token=body.get("token"),
        )
        return web.json_response({"id": user.id, "username": user.username, "token": user.token})

    async def _ctl_room(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        members = [str(u) for u in body["usernames"]]
        channel = body.get("channel")
        room = self.channel(str(channel), *members) if channel else self.direct(*members)
        return web.json_response({"rid": room.id}, status=201)

    async def _ctl_message(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        raw_file = body.get("file")
        file = (
            (str(raw_file["name"]), str(raw_file["type"]), int(raw_file["size"]))
            if raw_file
            else None
        )
        msg = self.add_message(
            str(body["rid"]), str(body["from"]), str(body.get("text", "")),
            tmid=body.get("tmid"), tshow=bool(body.get("tshow")), file=file,
        )  # fmt: skip
        return web.json_response({"id": msg.id}, status=201)

    async def _ctl_drop_sockets(self, request: web.Request) -> web.Response:
        dropped = len(self.stream.sockets)
        self.drop_sockets()
        return web.json_response({"dropped": dropped})


def _ok(data: dict[str, Any]) -> web.Response:
    return web.json_response({**data, "success": True})


def _user_of(request: web.Request) -> SimUser:
    user = request[USER]
    assert isinstance(user, SimUser)
    return user


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise _bad("invalid-params", "the body must be a JSON object")
    return body


def _parse_date(value: str | None) -> datetime | None:
    """What JavaScript's ``new Date(value)`` accepts of ISO strings; None when invalid."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return _ms(moment if moment.tzinfo else moment.replace(tzinfo=UTC))


def _pagination(query: Any) -> tuple[int, int]:
    """``offset`` (0) and ``count`` (50, at most 100; 0 means all)."""
    try:
        offset = max(0, int(query.get("offset", 0)))
        count = int(query.get("count", DEFAULT_COUNT))
    except ValueError:
        raise _bad("invalid-params", "offset and count must be numbers") from None
    return offset, min(max(count, 0), MAX_COUNT)


# Realistic chat for the demo and `python -m bot.sim.rocketchat`.

_PEOPLE = (
    ("dana.kim", "Dana Kim"),
    ("marco.rossi", "Marco Rossi"),
    ("priya.n", "Priya Natarajan"),
    ("tom.b", "Tom Becker"),
)
_THREAD_REPLIES = (
    "agreed, let's ship it",
    "looking now 👀",
    "done ✅",
    "can we move this to tomorrow?",
    "+1, thanks for digging into it",
)


def realistic_chat(rng: random.Random) -> dict[str, Any]:
    """A plausible DM: ``text`` and sometimes a ``file`` (``add_message`` keywords)."""
    n = rng.randrange(100, 999)
    lines: list[dict[str, Any]] = [
        {"text": "hey, do you have 5 minutes for a quick call?"},
        {"text": f"PR is up for review: https://git.example.org/platform/api/pull/{n}"},
        {"text": f"v2.{n % 10}.{n % 7} is deployed, dashboards look fine so far"},
        {"text": "can you check the staging logs? the queue consumer keeps restarting"},
        {"text": "lunch at 12:30? 🍜"},
        {"text": "reminder: our 1:1 moved to Thursday 15:00"},
        {"text": f"incident room: https://status.example.org/incidents/{n}"},
        {"text": "", "file": ("slides-q3-review.pdf", "application/pdf", 48213 + n)},
        {"text": "", "file": (f"screenshot-{n}.png", "image/png", 183402 + n)},
    ]
    return rng.choice(lines)


def seed_demo(sim: RocketChatSim, me: SimUser, rng: random.Random) -> list[SimRoom]:
    """Partners for ``me``: two 1:1 DMs and a group DM with a little history, a thread
    among it, and a channel next to them (whose messages are not DMs)."""
    people = [sim.find_user(u) or sim.add_user(u, name) for u, name in _PEOPLE]
    rooms = [sim.direct(me, people[0]), sim.direct(me, people[1])]
    rooms.append(sim.direct(me, people[2], people[3]))
    for room in rooms:
        partner = sim.users[next(uid for uid in room.uids if uid != me.id)]
        first = sim.add_message(room, partner, **realistic_chat(rng))
        sim.add_message(room, me, "thanks, will have a look")
        sim.add_message(room, partner, rng.choice(_THREAD_REPLIES), tmid=first.id)
    general = sim.channel("general", me, *people)
    sim.add_message(general, people[0], "good morning everyone ☀️")
    return rooms


def new_chat(sim: RocketChatSim, me: SimUser, rooms: Sequence[SimRoom], rng: random.Random) -> str:
    """One new message from a partner of ``me``: mostly in a room, sometimes in a thread."""
    room = rng.choice(rooms)
    partner = sim.users[rng.choice([uid for uid in room.uids if uid != me.id])]
    parents = [m for m in sim.messages.values() if m.room is room and m.tmid is None]
    if parents and rng.random() < 0.25:
        parent = rng.choice(parents)
        return sim.add_message(room, partner, rng.choice(_THREAD_REPLIES), tmid=parent.id).id
    return sim.add_message(room, partner, **realistic_chat(rng)).id


@asynccontextmanager
async def demo(rng: random.Random) -> AsyncIterator[Callable[[], object]]:
    """Rocket.Chat for ``inboxbot demo``: started with the real rate limit (10/min per
    route), seeded, announced in ``INBOXBOT_DEMO_ROCKETCHAT_*``; yields a function that
    delivers a new direct message."""
    async with RocketChatSim() as sim:
        me = sim.add_user("demo", "Demo User")
        rooms = seed_demo(sim, me, rng)
        os.environ.update(
            INBOXBOT_DEMO_ROCKETCHAT_URL=sim.base_url,
            INBOXBOT_DEMO_ROCKETCHAT_USER_ID=me.id,
            INBOXBOT_DEMO_ROCKETCHAT_TOKEN=me.token,
        )
        yield lambda: new_chat(sim, me, rooms, rng)


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = RocketChatSim(
        version=args.server_version, rate_limit=args.rate_limit, rate_period=args.rate_period,
        realtime=not args.no_realtime,
    )  # fmt: skip
    me = sim.add_user(args.username, password=args.password)
    seed_demo(sim, me, random.Random(args.seed))

    def banner() -> list[str]:
        users = [f"  @{u.username} user_id={u.id} token={u.token}" for u in sim.users.values()]
        return [f"Rocket.Chat simulator ({sim.version}) at {sim.base_url}", *users]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated Rocket.Chat DM API.", port=3000)
    parser.add_argument("--username", default="demo", help="the user whose DMs are seeded")
    parser.add_argument("--password", default=None, help="allow password login for that user")
    parser.add_argument("--server-version", default="7.10.0", help="8.0+ changes 401 bodies")
    parser.add_argument("--rate-limit", type=int, default=10, help="calls per route and window")
    parser.add_argument("--rate-period", type=float, default=60.0, help="window in seconds")
    parser.add_argument("--no-realtime", action="store_true", help="404 on /websocket")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
