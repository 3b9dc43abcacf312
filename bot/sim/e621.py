"""A simulator of the e621 (e621ng) DMail, comment and user APIs, served by aiohttp.

It follows ``shared/api/FACTS.md`` section 1: HTTP Basic (or ``login``/``api_key``
params) with 401/403 in the app's own shapes; the edge in front of the app, which
refuses an empty, browser-like or library-default User-Agent (403 HTML page) and
answers 503 (HTML) past 2 requests a second, counting every request; the app's
write throttle (60/min per user, 429 JSON with ``X-Api-Limit``); the paginator
(``a<id>``/``b<id>``/numbered pages, ``limit`` 0..320, 410 otherwise), id-desc
output, 302 on blank ``search[...]``; DMails stored twice (the sender's copy is in
the sender's list), soft delete, 204 for ``.json`` and 302 for HTML; comments with
hidden/threshold/sticky visibility and votes that toggle; timestamps in each
user's zone (US Eastern by default, with DST; ``time_zone=`` overrides); a legacy
mode (no ``to_name``/``from_name``/``vote``, ``{"dmails": []}`` when empty). On top:
queued faults, a "down" switch, a request log and an unauthenticated ``/_sim/`` API.

    python -m bot.sim.e621 --port 8621 --dmails 12 --comments 20
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import fnmatch
import os
import random
import secrets
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from http import HTTPStatus
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim import base
from bot.sim.base import (
    Fault,
    SimServer,
    SlidingWindows,
    json_object,
    serve_until_stopped,
    simulator_parser,
)

MAX_LIMIT = 320
DEFAULT_LIMIT = 75
MAX_PAGE = 750
MAX_CURSOR = 2**31 - 1
EDGE_RATE = 2.0  # requests per second per client, counted at the edge
STAFF = frozenset({"moderator", "admin"})
BURST = {"member": 60, "privileged": 90, "former_staff": 120, "moderator": 120, "admin": 120}
FAULT_KINDS = base.FAULT_KINDS | {"throttled"}
ZONES = {
    "Eastern Time (US & Canada)": "America/New_York",
    "Central Time (US & Canada)": "America/Chicago",
    "Pacific Time (US & Canada)": "America/Los_Angeles",
    "London": "Europe/London",
    "Berlin": "Europe/Berlin",
    "Tokyo": "Asia/Tokyo",
    "UTC": "UTC",
}
BLOCKED_AGENTS = ("mozilla/", "python", "aiohttp", "requests", "curl/", "wget/", "go-http")
_EDGE_PAGE = (
    "<!DOCTYPE html>\n<html><head><title>{status} {phrase}</title></head><body>"
    "<h1>{status} {phrase}</h1><p>{text}</p><hr><p>e621 edge</p></body></html>\n"
)
_REDIRECT = '<html><body>You are being <a href="{url}">redirected</a>.</body></html>'
T = TypeVar("T")


PARAMS: web.RequestKey[Mapping[str, str]] = web.RequestKey("e621_params")
USER: web.RequestKey[SimUser | None] = web.RequestKey("e621_user")
ZONE: web.RequestKey[tzinfo] = web.RequestKey("e621_zone")


class _ApiError(Exception):
    """An app error: ``reason`` shape for 403/404, ``message`` shape for the others."""

    def __init__(self, status: int, text: str, *, reason: bool = False) -> None:
        super().__init__(text)
        self.status, self.text, self.reason = status, text, reason


def _denied(text: str = "Access Denied") -> _ApiError:
    return _ApiError(403, text, reason=True)


def _not_found() -> _ApiError:
    return _ApiError(404, "not found", reason=True)


def _gone(text: str) -> _ApiError:
    return _ApiError(410, text)


def _error_json(status: int, text: str, *, reason: bool = False) -> web.Response:
    body: dict[str, Any] = {"success": False, "reason": text}
    if not reason:
        body = {"success": False, "message": text, "code": None}
    return web.json_response(body, status=status)


def _edge_page(status: int, text: str) -> web.Response:
    page = _EDGE_PAGE.format(status=status, phrase=HTTPStatus(status).phrase, text=text)
    return web.Response(status=status, text=page, content_type="text/html")


def _zone(name: str | None) -> tzinfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(ZONES.get(name, name))
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _stamp(moment: datetime, zone: tzinfo) -> str:
    """Rails' TimeWithZone JSON: milliseconds and the zone's numeric offset."""
    return moment.astimezone(zone).isoformat(timespec="milliseconds")


def _like(pattern: str, text: str) -> bool:
    """``*`` wildcards (LIKE), else a case-insensitive word search (full text, roughly)."""
    if "*" in pattern:
        return fnmatch.fnmatchcase(text.lower(), pattern.lower())
    return pattern.lower() in text.lower()


def _in_list(raw: str, value: object) -> bool:
    return str(value).lower() in {v.strip().lower() for v in raw.split(",")}


def _id_matches(raw: str, value: int) -> bool:
    """``search[id]``: ``5``, ``1,2,3``, ``>5``, ``<=9``, ``1..5``."""
    raw = raw.strip()
    for op, test in ((">=", value.__ge__), ("<=", value.__le__),
                     (">", value.__gt__), ("<", value.__lt__)):  # fmt: skip
        if raw.startswith(op) and raw[len(op) :].isdigit():
            return bool(test(int(raw[len(op) :])))
    low, dots, high = raw.partition("..")
    if dots and low.isdigit() and high.isdigit():
        return int(low) <= value <= int(high)
    return _in_list(raw, value)


def _truthy(raw: str | None) -> bool:
    return (raw or "").strip().lower() in ("1", "true", "t", "yes", "on")


@dataclass
class SimUser:
    id: int
    name: str
    api_key: str
    level: str = "member"
    time_zone: str = "Eastern Time (US & Canada)"
    comment_threshold: int = -2
    show_hidden_comments: bool = False
    banned: str | None = None  # e.g. "forever"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def staff(self) -> bool:
        return self.level in STAFF


@dataclass
class SimDmail:
    """One stored copy: each DMail is stored for its recipient and for its sender."""

    id: int
    owner_id: int
    from_id: int
    to_id: int
    title: str
    body: str
    created_at: datetime
    is_read: bool = False
    is_deleted: bool = False
    updated_at: datetime | None = None


@dataclass
class SimPost:
    id: int
    uploader_id: int
    comments_locked: bool = False
    comments_disabled: bool = False


@dataclass
class SimComment:
    id: int
    post_id: int
    creator_id: int
    body: str
    created_at: datetime
    score: int = 0
    is_hidden: bool = False
    is_sticky: bool = False
    do_not_bump_post: bool = False
    warning_type: str | None = None
    warning_user_id: int | None = None
    updater_id: int | None = None
    updated_at: datetime | None = None


class E621Sim(SimServer):
    """The simulated site: state, the aiohttp app and the control API tests drive.

    Fault params: ``latency`` takes ``seconds``; ``status`` takes ``status`` and ``message``
    (or ``reason`` for the 403/404 shape); ``html`` takes ``status`` (default 502); ``reset``
    takes ``before_headers``; ``rate_limited`` is the edge's 503 page, ``throttled`` the
    app's 429. The request log holds every request that reached the edge."""

    fault_kinds = FAULT_KINDS
    partial_body = b'[{"id": 1, "body": "'
    window_filter = "user"

    def __init__(
        self,
        *,
        edge_rate: float = EDGE_RATE,
        legacy: bool = False,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(clock)
        self.edge_rate = edge_rate
        self.legacy = legacy
        self.now = now
        self.votes_disabled = False
        self.redirect_json_writes = False  # answer writes as the seed page says (302)
        self.users: dict[int, SimUser] = {}
        self.dmails: dict[int, SimDmail] = {}
        self.posts: dict[int, SimPost] = {}
        self.comments: dict[int, SimComment] = {}
        self.votes: dict[tuple[int, int], int] = {}  # (comment, user) → ±1
        self.locked_votes: set[tuple[int, int]] = set()
        self._ids = {"user": 100_000, "dmail": 1_800_000, "post": 4_500_000, "comment": 7_200_000}
        # Every request enters the edge's window, refused ones too: a client that keeps
        # hammering stays refused until it slows down.
        self._edge_windows = SlidingWindows(count_refused=True)
        self._writes = SlidingWindows(60.0)

    # --- state control, used by tests and the demo in the same event loop ------------

    def _next(self, kind: str) -> int:
        self._ids[kind] += 1
        return self._ids[kind]

    def add_user(self, name: str, *, api_key: str | None = None, **fields: Any) -> SimUser:
        if self.user_named(name) is not None:
            raise ValueError(f"name taken: {name}")
        key = api_key or secrets.token_urlsafe(18)[:24]
        user = SimUser(self._next("user"), name, key, created_at=self.now(), **fields)
        self.users[user.id] = user
        return user

    def user_named(self, name: str) -> SimUser | None:
        wanted = name.strip().replace(" ", "_").lower()
        return next((u for u in self.users.values() if u.name.lower() == wanted), None)

    def _user(self, who: SimUser | int | str) -> SimUser:
        if isinstance(who, SimUser):
            return who
        found = self.users.get(who) if isinstance(who, int) else self.user_named(who)
        if found is None:
            raise KeyError(f"no such user: {who}")
        return found

    def send_dmail(
        self,
        sender: SimUser | int | str,
        to: SimUser | int | str,
        title: str,
        body: str,
        *,
        created_at: datetime | None = None,
    ) -> int:
        """Store a DMail twice, as e621 does; returns the recipient's copy's id."""
        src, dst = self._user(sender), self._user(to)
        moment = created_at or self.now()
        ids = []
        for owner, is_read in ((dst, False), (src, True)):  # the sender's copy is read
            copy = SimDmail(self._next("dmail"), owner.id, src.id, dst.id, title, body, moment,
                            is_read=is_read, updated_at=moment)  # fmt: skip
            self.dmails[copy.id] = copy
            ids.append(copy.id)
        return ids[0]

    def add_post(self, uploader: SimUser | int | str, **fields: Any) -> int:
        post = SimPost(self._next("post"), self._user(uploader).id, **fields)
        self.posts[post.id] = post
        return post.id

    def add_comment(
        self,
        post_id: int,
        creator: SimUser | int | str,
        body: str,
        *,
        created_at: datetime | None = None,
        **fields: Any,
    ) -> int:
        if post_id not in self.posts:
            raise KeyError(f"no such post: {post_id}")
        moment = created_at or self.now()
        comment = SimComment(self._next("comment"), post_id, self._user(creator).id, body,
                             moment, updated_at=moment, **fields)  # fmt: skip
        self.comments[comment.id] = comment
        return comment.id

    def max_requests_in_window(self, window: float | None = None, user: str | None = None) -> int:
        """Most requests (accepted or refused) claiming to be ``user`` (or any) that reached
        the edge within ``window`` seconds."""
        return super().max_requests_in_window(window, user)

    # --- the HTTP application --------------------------------------------------------

    def add_routes(self, router: web.UrlDispatcher) -> None:
        fmt, one = r"{fmt:(?:\.json)?}", r"{id:\d+}"
        add = router.add_route
        add("GET", "/dmails" + fmt, self._dmail_index, name="dmails.list")
        add("PUT", "/dmails/mark_all_as_read" + fmt, self._dmail_mark_all)
        add("GET", f"/dmails/{one}" + fmt, self._dmail_show, name="dmails.detail")
        add("DELETE", f"/dmails/{one}" + fmt, self._dmail_delete)
        add("PUT", f"/dmails/{one}/mark_as_read" + fmt, self._dmail_mark_read)
        add("PUT", f"/dmails/{one}/mark_as_unread" + fmt, self._dmail_mark_unread)
        add("GET", "/comments" + fmt, self._comment_index, name="comments.list")
        add("POST", "/comments" + fmt, self._comment_create)
        add("GET", f"/comments/{one}" + fmt, self._comment_show, name="comments.detail")
        add("POST", f"/comments/{one}/hide" + fmt, self._comment_hide)
        add("POST", f"/comments/{one}/unhide" + fmt, self._comment_unhide)
        add("POST", f"/comments/{one}/votes" + fmt, self._vote)
        add("DELETE", f"/comments/{one}/votes" + fmt, self._unvote)
        add("GET", "/users" + fmt, self._user_index, name="users.list")
        add("GET", f"/users/{one}" + fmt, self._user_show, name="users.detail")
        for name, handler in self._controls().items():
            add("POST", f"/_sim/{name}", handler)

    def caller(self, request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                return base64.b64decode(value).decode().partition(":")[0] or None
            except ValueError:
                return None
        return request.query.get("login")

    async def respond(self, request: web.Request, handler: Handler) -> web.StreamResponse | None:
        """What the CDN in front of the app does: rate limit, User-Agent check, outages."""
        if not self._edge_windows.admit(request.remote or "?", self.edge_rate, self.clock()):
            return _edge_page(503, "Rate limit exceeded: at most 2 requests per second.")
        agent = request.headers.get("User-Agent", "").strip().lower()
        if not agent or agent.startswith(BLOCKED_AGENTS):
            return _edge_page(403, "Blocked: send a descriptive User-Agent with your username.")
        return await super().respond(request, handler)

    def down_response(self) -> web.Response:
        return _edge_page(502, "The origin did not answer.")

    def fault_response(self, fault: Fault) -> web.Response:
        if fault.kind == "rate_limited":
            return _edge_page(503, "Rate limit exceeded: at most 2 requests per second.")
        if fault.kind == "throttled":
            response = _error_json(429, "Throttled: Too many requests")
            response.headers["X-Api-Limit"] = "0"
            return response
        status = int(fault.params.get("status", 502 if fault.kind == "html" else 500))
        if fault.kind == "html":
            return _edge_page(status, "Something went wrong.")
        if "reason" in fault.params:
            return _error_json(status, str(fault.params["reason"]), reason=True)
        text = str(fault.params.get("message", HTTPStatus(status).phrase))
        body = {"success": False, "message": text, "code": fault.params.get("code")}
        return web.json_response(body, status=status)

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """The Rails app: session, write throttle, blank-search redirect, then the action."""
        as_json = request.path.endswith(".json")
        try:
            params = await _params(request)
            request[PARAMS] = params
            user = self._login(request, params)
            request[USER] = user
            request[ZONE] = _zone(params.get("time_zone")) or _zone(
                user.time_zone if user else None
            ) or ZoneInfo(ZONES["Eastern Time (US & Canada)"])  # fmt: skip
            write = request.method not in ("GET", "HEAD")
            remaining = self._throttle(user) if write and user else None
            if request.method == "GET" and any(
                k.startswith("search[") and not v.strip() for k, v in request.query.items()
            ):
                return _without_blank_search(request)
            response = await handler(request)
        except _ApiError as err:
            return self._error(err, as_json, request)
        except web.HTTPException as err:
            return self._error(_ApiError(err.status, err.reason, reason=err.status == 404),
                               as_json, request)  # fmt: skip
        if remaining is not None:
            response.headers["X-Api-Limit"] = str(remaining)
        return response

    def _error(self, err: _ApiError, as_json: bool, request: web.Request) -> web.Response:
        if as_json or err.status == 429 or err.status == 401:
            response = _error_json(err.status, err.text, reason=err.reason)
            if err.status == 429:
                response.headers["X-Api-Limit"] = "0"
            return response
        if err.status == 403:  # the HTML flavour sends people to the login page
            return _redirect(f"/session/new?url={request.path}")
        return _edge_page(err.status, err.text)

    def _login(self, request: web.Request, params: Mapping[str, str]) -> SimUser | None:
        name, key = _credentials(request, params)
        if name is None and key is None:
            return None
        user = self.user_named(name or "")
        if user is None or key is None or not secrets.compare_digest(user.api_key, key):
            raise _ApiError(401, "SessionLoader::AuthenticationFailure")
        if user.banned:
            raise _ApiError(401, f"Account is banned: {user.banned}")
        return user

    def _throttle(self, user: SimUser) -> int:
        """The sliding 1-minute write budget; returns what is left after this request."""
        limit = BURST.get(user.level, 60)
        if not self._writes.admit(user.id, limit, self.clock()):
            raise _ApiError(429, "Throttled: Too many requests")
        return limit - self._writes.used(user.id)

    # --- shared pieces of the actions ------------------------------------------------

    def _member(self, request: web.Request) -> SimUser:
        user: SimUser | None = request[USER]
        if user is None:
            raise _denied()
        return user

    def _render(self, request: web.Request, data: Any, *, status: int = 200) -> web.Response:
        if request.match_info.get("fmt") == ".json":
            return web.json_response(data, status=status)
        return web.Response(text=f"<html><body><pre>{data!r}</pre></body></html>",
                            content_type="text/html", status=status)  # fmt: skip

    def _done(self, request: web.Request, then: str) -> web.Response:
        """A write without a body: 204 for ``.json``, 302 for the HTML flavour."""
        if request.match_info.get("fmt") == ".json" and not self.redirect_json_writes:
            return web.Response(status=204)
        return _redirect(then)

    def _listing(self, name: str, records: list[dict[str, Any]]) -> Any:
        if not records and self.legacy:
            return {name: []}
        return records

    # --- DMails ----------------------------------------------------------------------

    def _dmail_json(self, d: SimDmail, zone: tzinfo) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": d.id, "owner_id": d.owner_id, "from_id": d.from_id, "to_id": d.to_id,
            "title": d.title, "body": d.body, "is_read": d.is_read, "is_deleted": d.is_deleted,
            "created_at": _stamp(d.created_at, zone),
            "updated_at": _stamp(d.updated_at or d.created_at, zone),
        }  # fmt: skip
        if not self.legacy:
            data["to_name"] = self.users[d.to_id].name
            data["from_name"] = self.users[d.from_id].name
        return data

    def _inbox(self, user: SimUser) -> list[SimDmail]:
        """``Dmail.active.visible``: the user's own copies that are not deleted."""
        return [d for d in self.dmails.values() if d.owner_id == user.id and not d.is_deleted]

    def _owned_dmail(self, request: web.Request) -> SimDmail:
        user = self._member(request)
        dmail = self.dmails.get(int(request.match_info["id"]))
        if dmail is None:
            raise _not_found()
        if dmail.owner_id != user.id:
            raise _denied()
        return dmail

    def _dmail_search(self, d: SimDmail, search: Mapping[str, str]) -> bool:
        names = {"to": self.users[d.to_id].name, "from": self.users[d.from_id].name}
        checks: dict[str, Callable[[str], bool]] = {
            "to_id": lambda v: _in_list(v, d.to_id),
            "from_id": lambda v: _in_list(v, d.from_id),
            "to_name": lambda v: _in_list(v, names["to"]),
            "from_name": lambda v: _in_list(v, names["from"]),
            "title_matches": lambda v: _like(v, d.title),
            "message_matches": lambda v: _like(v, d.body),
            "is_read": lambda v: _truthy(v) == d.is_read,
            "read": lambda v: _truthy(v) == d.is_read or (_truthy(v) and d.is_deleted),
            "id": lambda v: _id_matches(v, d.id),
        }
        return all(checks[k](v) for k, v in search.items() if k in checks)

    async def _dmail_index(self, request: web.Request) -> web.Response:
        user = self._member(request)
        search = _search(request[PARAMS])
        found = [d for d in self._inbox(user) if self._dmail_search(d, search)]
        page = _paginate(sorted(found, key=lambda d: -d.id), lambda d: d.id, request[PARAMS])
        records = [self._dmail_json(d, request[ZONE]) for d in page]
        return self._render(request, self._listing("dmails", records))

    async def _dmail_show(self, request: web.Request) -> web.Response:
        dmail = self._owned_dmail(request)
        if request.match_info.get("fmt") != ".json":
            dmail.is_read = True  # only the HTML view marks it read
        return self._render(request, self._dmail_json(dmail, request[ZONE]))

    async def _dmail_mark_read(self, request: web.Request) -> web.Response:
        self._owned_dmail(request).is_read = True
        return self._done(request, "/dmails")

    async def _dmail_mark_unread(self, request: web.Request) -> web.Response:
        self._owned_dmail(request).is_read = False
        return self._done(request, "/dmails")

    async def _dmail_delete(self, request: web.Request) -> web.Response:
        dmail = self._owned_dmail(request)
        dmail.is_read = dmail.is_deleted = True  # soft, and idempotent
        return self._done(request, "/dmails")

    async def _dmail_mark_all(self, request: web.Request) -> web.Response:
        user = self._member(request)
        for dmail in self.dmails.values():
            if dmail.owner_id == user.id:
                dmail.is_read = True
        return self._done(request, "/dmails")

    # --- comments --------------------------------------------------------------------

    def _comment_json(self, c: SimComment, viewer: SimUser | None, zone: tzinfo) -> dict[str, Any]:
        updater = c.updater_id or c.creator_id
        data: dict[str, Any] = {
            "id": c.id, "created_at": _stamp(c.created_at, zone),
            "updated_at": _stamp(c.updated_at or c.created_at, zone), "post_id": c.post_id,
            "creator_id": c.creator_id, "body": c.body, "score": c.score, "updater_id": updater,
            "do_not_bump_post": c.do_not_bump_post, "is_hidden": c.is_hidden,
            "is_sticky": c.is_sticky, "warning_type": c.warning_type,
            "warning_user_id": c.warning_user_id, "creator_name": self.users[c.creator_id].name,
            "updater_name": self.users[updater].name,
        }  # fmt: skip
        if not self.legacy:
            data["vote"] = self.votes.get((c.id, viewer.id), 0) if viewer else 0
        return data

    def _visible(self, c: SimComment, viewer: SimUser | None, by_id: bool) -> bool:
        staff = viewer is not None and viewer.staff
        if c.is_hidden and not staff:
            own = viewer is not None and viewer.id == c.creator_id
            if not (own and viewer is not None and viewer.show_hidden_comments):
                return False
        threshold = viewer.comment_threshold if viewer else -2
        if c.score < threshold and not c.is_sticky and not by_id:
            return False
        return staff or c.is_sticky or not self.posts[c.post_id].comments_disabled

    def _comment_search(self, c: SimComment, search: Mapping[str, str], staff: bool) -> bool:
        post = self.posts[c.post_id]
        checks: dict[str, Callable[[str], bool]] = {
            "post_id": lambda v: _in_list(v, c.post_id),
            "creator_id": lambda v: _in_list(v, c.creator_id),
            "creator_name": lambda v: _in_list(v, self.users[c.creator_id].name),
            "poster_id": lambda v: _in_list(v, post.uploader_id),
            "poster_name": lambda v: _in_list(v, self.users[post.uploader_id].name),
            "body_matches": lambda v: _like(v, c.body),
            "is_sticky": lambda v: _truthy(v) == c.is_sticky,
            "do_not_bump_post": lambda v: _truthy(v) == c.do_not_bump_post,
            "id": lambda v: _id_matches(v, c.id),
        }
        if staff:  # unpermitted keys are dropped silently
            checks["is_hidden"] = lambda v: _truthy(v) == c.is_hidden
        return all(checks[k](v) for k, v in search.items() if k in checks)

    async def _comment_index(self, request: web.Request) -> web.Response:
        params, viewer = request[PARAMS], request[USER]
        if params.get("group_by") == "post":
            return self._render(request, {"posts": []})  # the UI's view; not modelled
        search = _search(params)
        staff = viewer is not None and viewer.staff
        found = [
            c
            for c in self.comments.values()
            if self._visible(c, viewer, "id" in search) and self._comment_search(c, search, staff)
        ]
        found.sort(key=_comment_order(search), reverse=True)
        page = _paginate(found, lambda c: c.id, params)
        records = [self._comment_json(c, viewer, request[ZONE]) for c in page]
        return self._render(request, self._listing("comments", records))

    def _comment_or_404(self, request: web.Request) -> SimComment:
        comment = self.comments.get(int(request.match_info["id"]))
        if comment is None:
            raise _not_found()
        return comment

    async def _comment_show(self, request: web.Request) -> web.Response:
        comment, viewer = self._comment_or_404(request), request[USER]
        own = viewer is not None and viewer.id == comment.creator_id
        if comment.is_hidden and not own and not (viewer and viewer.staff):
            raise _denied()
        return self._render(request, self._comment_json(comment, viewer, request[ZONE]))

    async def _comment_create(self, request: web.Request) -> web.Response:
        user, params = self._member(request), request[PARAMS]
        body = params.get("comment[body]", "")
        post = self.posts.get(int(params.get("comment[post_id]", "0") or 0))
        if post is None:
            raise _ApiError(422, "Validation failed: Post must exist")
        if not 1 <= len(body.strip()) <= 10_000:
            raise _ApiError(422, "Validation failed: Body must be 1 to 10000 characters")
        if (post.comments_locked or post.comments_disabled) and not user.staff:
            raise _ApiError(422, "Validation failed: Post has comments locked")
        new = self.add_comment(post.id, user, body.replace("\r\n", "\n"))
        data = self._comment_json(self.comments[new], user, request[ZONE])
        if request.match_info.get("fmt") != ".json":
            return _redirect(f"/posts/{post.id}#comment-{new}")
        return web.json_response(data, status=201)

    async def _comment_hide(self, request: web.Request) -> web.Response:
        user, comment = self._member(request), self._comment_or_404(request)
        if comment.creator_id != user.id and not user.staff:
            raise _denied()
        comment.is_hidden = True
        return self._render(request, self._comment_json(comment, user, request[ZONE]))

    async def _comment_unhide(self, request: web.Request) -> web.Response:
        user, comment = self._member(request), self._comment_or_404(request)
        if not user.staff:
            raise _denied()
        comment.is_hidden = False
        return self._render(request, self._comment_json(comment, user, request[ZONE]))

    def _vote_refusal(self, comment: SimComment, user: SimUser, score: str) -> str | None:
        post = self.posts[comment.post_id]
        if score not in ("1", "-1"):
            return "Invalid vote"
        if post.comments_disabled:
            return "Comment section is disabled"
        if post.comments_locked:
            return "Comment section is locked"
        if (comment.id, user.id) in self.locked_votes:
            return "Vote is locked"
        if comment.creator_id == user.id:
            return "Validation failed: You cannot vote on your own comments"
        if comment.is_sticky:
            return "Validation failed: You cannot vote on sticky comments"
        return None

    async def _vote(self, request: web.Request) -> web.Response:
        user, comment = self._member(request), self._comment_or_404(request)
        if self.votes_disabled:
            raise _denied("Votes are disabled")
        score = request[PARAMS].get("score", "").strip()
        refusal = self._vote_refusal(comment, user, score)
        if refusal:
            raise _ApiError(422, refusal)
        key, wanted = (comment.id, user.id), int(score)
        current = self.votes.get(key, 0)
        ours = 0 if current == wanted and not _truthy(request[PARAMS].get("no_unvote")) else wanted
        self._set_vote(comment, user, ours)
        return self._render(request, {"score": comment.score, "our_score": ours})

    async def _unvote(self, request: web.Request) -> web.Response:
        user, comment = self._member(request), self._comment_or_404(request)
        if (comment.id, user.id) in self.locked_votes:
            raise _ApiError(422, "Vote is locked")
        self._set_vote(comment, user, 0)
        return self._done(request, f"/posts/{comment.post_id}")

    def _set_vote(self, comment: SimComment, user: SimUser, score: int) -> None:
        key = (comment.id, user.id)
        comment.score += score - self.votes.pop(key, 0)
        if score:
            self.votes[key] = score

    # --- users -----------------------------------------------------------------------

    def _user_json(self, user: SimUser, viewer: SimUser | None, zone: tzinfo) -> dict[str, Any]:
        data: dict[str, Any] = {
            "id": user.id, "created_at": _stamp(user.created_at, zone), "name": user.name,
            "level": {"member": 20, "privileged": 30, "moderator": 40, "admin": 50}.get(
                user.level, 20), "level_string": user.level.replace("_", " ").title(),
            "is_banned": user.banned is not None,
        }  # fmt: skip
        if viewer is not None and viewer.id == user.id:
            unread = sum(1 for d in self._inbox(user) if not d.is_read)
            used = self._writes.used(user.id)
            limit = BURST.get(user.level, 60)
            data.update(unread_dmail_count=unread, has_mail=unread > 0, api_burst_limit=limit,
                        remaining_api_limit=max(0, limit - used), time_zone=user.time_zone,
                        comment_threshold=user.comment_threshold,
                        show_hidden_comments=user.show_hidden_comments)  # fmt: skip
        return data

    async def _user_index(self, request: web.Request) -> web.Response:
        search, viewer = _search(request[PARAMS]), request[USER]
        found = [
            u
            for u in self.users.values()
            if ("name_matches" not in search or _name_like(search["name_matches"], u.name))
            and ("id" not in search or _id_matches(search["id"], u.id))
        ]
        page = _paginate(sorted(found, key=lambda u: -u.id), lambda u: u.id, request[PARAMS])
        records = [self._user_json(u, viewer, request[ZONE]) for u in page]
        return self._render(request, records)

    async def _user_show(self, request: web.Request) -> web.Response:
        user = self.users.get(int(request.match_info["id"]))
        if user is None:
            raise _not_found()
        return self._render(request, self._user_json(user, request[USER], request[ZONE]))

    # --- the /_sim/ control API: no auth, not logged, for other processes -------------

    def _controls(self) -> dict[str, Handler]:
        return {
            "users": self._ctl_user,
            "dmails": self._ctl_dmail,
            "posts": self._ctl_post,
            "comments": self._ctl_comment,
            "seed": self._ctl_seed,
        }

    async def _ctl_user(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        user = self.add_user(str(body.pop("name")), **body)
        return web.json_response({"id": user.id, "name": user.name, "api_key": user.api_key},
                                 status=201)  # fmt: skip

    async def _ctl_dmail(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        new = self.send_dmail(body["from"], body["to"], str(body["title"]), str(body["body"]))
        return web.json_response({"id": new}, status=201)

    async def _ctl_post(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        return web.json_response({"id": self.add_post(body.pop("uploader"), **body)}, status=201)

    async def _ctl_comment(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        post, creator, text = int(body.pop("post_id")), body.pop("creator"), str(body.pop("body"))
        return web.json_response({"id": self.add_comment(post, creator, text, **body)}, status=201)

    async def _ctl_seed(self, request: web.Request) -> web.StreamResponse:
        body = await json_object(request)
        rng = random.Random(body.get("seed"))
        user = self._user(body["user"])
        made = seed_realistic(
            self, user, int(body.get("dmails", 5)), int(body.get("comments", 5)), rng
        )
        return web.json_response(made, status=201)


def _credentials(request: web.Request, params: Mapping[str, str]) -> tuple[str | None, str | None]:
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            name, _, key = base64.b64decode(value, validate=True).decode().partition(":")
        except ValueError:
            raise _ApiError(401, "SessionLoader::AuthenticationFailure") from None
        return name, key
    if "login" in params or "api_key" in params:
        return params.get("login"), params.get("api_key")
    return None, None


async def _params(request: web.Request) -> dict[str, str]:
    """Query and body parameters, as Rails merges them; JSON bodies are flattened
    (``{"comment": {"body": …}}`` → ``comment[body]``)."""
    params = dict(request.query)
    if request.method in ("GET", "HEAD") or not request.can_read_body:
        return params
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise _ApiError(400, "Invalid JSON body") from None
        params.update(_flatten(body) if isinstance(body, dict) else {})
    else:
        params.update({k: str(v) for k, v in (await request.post()).items()})
    return params


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name))
        else:
            flat[name] = str(value).lower() if isinstance(value, bool) else str(value)
    return flat


def _search(params: Mapping[str, str]) -> dict[str, str]:
    return {k[7:-1]: v for k, v in params.items() if k.startswith("search[") and k.endswith("]")}


def _name_like(pattern: str, name: str) -> bool:
    pattern = pattern.strip().replace(" ", "_").lower()
    return fnmatch.fnmatchcase(name.lower(), pattern) if "*" in pattern else name.lower() == pattern


def _comment_order(search: Mapping[str, str]) -> Callable[[SimComment], tuple[Any, ...]]:
    """id desc, or created_at desc when body, creator or poster filters are used."""
    by_time = any(k.startswith(("body", "creator", "poster")) for k in search)
    orders: dict[str, Callable[[SimComment], tuple[Any, ...]]] = {
        "score_desc": lambda c: (c.score, c.id),
        "updated_at_desc": lambda c: (c.updated_at or c.created_at, c.id),
        "post_id_desc": lambda c: (c.post_id, c.id),
    }
    if search.get("order") in orders:
        return orders[search["order"]]
    return (lambda c: (c.created_at, c.id)) if by_time else (lambda c: (c.id,))


def _paginate(records: list[T], key: Callable[[T], int], params: Mapping[str, str]) -> list[T]:
    """The e621ng paginator over ``records`` in their default order (FACTS 1.4)."""
    limit = _limit(params.get("limit"))
    page = (params.get("page") or "1").strip()
    if page[:1] in ("a", "b") and page[1:].isdigit():
        cursor = int(page[1:])
        if cursor > MAX_CURSOR:
            raise _gone("Page parameter is out of valid range.")
        if page[0] == "a":  # the `limit` closest above the cursor, shown newest first
            above = sorted((r for r in records if key(r) > cursor), key=key)[:limit]
            return sorted(above, key=key, reverse=True)
        return sorted((r for r in records if key(r) < cursor), key=key, reverse=True)[:limit]
    if not page.isdigit() or int(page) < 1:
        raise _gone("Invalid page number.")
    if int(page) > MAX_PAGE:
        raise _gone(f"You cannot go beyond page {MAX_PAGE}. Please narrow your search terms.")
    start = (int(page) - 1) * limit
    return records[start : start + limit]


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    if not raw.strip().isdigit():
        raise _gone("Invalid limit.")
    if int(raw) > MAX_LIMIT:
        raise _gone(f"Limit must be between 0 and {MAX_LIMIT}.")
    return int(raw)


def _without_blank_search(request: web.Request) -> web.Response:
    kept = [
        (k, v) for k, v in request.query.items() if not (k.startswith("search[") and not v.strip())
    ]
    return _redirect(str(request.rel_url.with_query(kept)))


def _redirect(location: str) -> web.Response:
    page = _REDIRECT.format(url=location)
    return web.Response(
        status=302, text=page, content_type="text/html", headers={"Location": location}
    )


# --- realistic content -------------------------------------------------------------------

_PEOPLE = ("wolfpaw", "kiwi_fox", "Sable-Art", "mothmoth", "dragonkeeper_9", "auto_moderator")
_TAGS = ("canine", "digital_media_(artwork)", "solo", "smile", "fluffy_tail", "sketch")


def _dmail_text(rng: random.Random, post: int) -> tuple[str, str]:
    tag = rng.choice(_TAGS)
    return rng.choice(
        [
            ("Commission slots?", f"Hi! Are your [b]commission slots[/b] open? I loved post #{post}"
             f".\nRefs: \"ref sheet\":https://example.com/refs/{rng.randrange(99)} [i]no rush[/i]"),
            (f"Post update notices for post #{post}",
             f"[quote]Tag changes:[/quote]\n* added {tag}\nSee \"the post\":/posts/{post}."),
            ("Collab idea", f"Hey, want to do a collab? [url=https://example.org/moodboard]Moodboard"
             f"[/url] is up.\nh4.Details\nDeadline in {rng.randrange(2, 9)} weeks."),
            ("Thanks!", f"Thanks for the fav on post #{post} :) [spoiler]new one soon[/spoiler]"),
        ]
    )  # fmt: skip


def _comment_text(rng: random.Random) -> str:
    return rng.choice(
        [
            "This is [b]amazing[/b], the lighting is great!",
            f"[quote]\"{rng.choice(_PEOPLE)}\":/users/1 said:\nlove it[/quote]\nSame here!",
            "Source? Found it: \"artist page\":https://example.com/gallery",
            "[[fluffy_tail]] done right. 10/10",
            f"Reminds me of post #{rng.randrange(1_000_000, 4_000_000)}",
        ]
    )  # fmt: skip


def _others(sim: E621Sim, me: SimUser) -> list[SimUser]:
    people = [sim.user_named(n) or sim.add_user(n) for n in _PEOPLE]
    return [p for p in people if p.id != me.id]


def add_realistic_dmail(sim: E621Sim, me: SimUser, rng: random.Random, **kw: Any) -> int:
    posts = [p.id for p in sim.posts.values() if p.uploader_id == me.id] or [sim.add_post(me)]
    title, body = _dmail_text(rng, rng.choice(posts))
    return sim.send_dmail(rng.choice(_others(sim, me)[:-1]), me, title, body, **kw)


def add_realistic_comment(sim: E621Sim, me: SimUser, rng: random.Random, **kw: Any) -> int:
    posts = [p.id for p in sim.posts.values() if p.uploader_id == me.id] or [sim.add_post(me)]
    author = rng.choice(_others(sim, me)[:-1])
    return sim.add_comment(rng.choice(posts), author, _comment_text(rng), **kw)


def seed_realistic(
    sim: E621Sim, me: SimUser, dmails: int, comments: int, rng: random.Random
) -> dict[str, list[int]]:
    """Posts by ``me``, DMails to ``me`` (and one sent by ``me``), comments on the posts,
    one a minute up to now."""
    for _ in range(3 - sum(1 for p in sim.posts.values() if p.uploader_id == me.id)):
        sim.add_post(me)
    start = sim.now() - timedelta(minutes=dmails + comments + 1)
    made: dict[str, list[int]] = {"dmails": [], "comments": []}
    for n in range(dmails):
        moment = start + timedelta(minutes=n)
        made["dmails"].append(add_realistic_dmail(sim, me, rng, created_at=moment))
    sim.send_dmail(me, _others(sim, me)[0], "Re: Commission slots?", "Yes, two slots open!",
                   created_at=start + timedelta(minutes=dmails))  # fmt: skip
    for n in range(comments):
        moment = start + timedelta(minutes=dmails + 1 + n)
        made["comments"].append(add_realistic_comment(sim, me, rng, created_at=moment))
    return made


@asynccontextmanager
async def demo(rng: random.Random) -> AsyncIterator[Callable[[], object]]:
    """e621 for ``inboxbot demo``: started, seeded, announced in ``INBOXBOT_DEMO_E621_*``;
    yields a function that delivers a new DMail or a new comment on the demo user's posts."""
    async with E621Sim() as sim:
        me = sim.add_user("demo_artist")
        seed_realistic(sim, me, 3, 3, rng)
        os.environ.update(
            INBOXBOT_DEMO_E621_URL=sim.base_url,
            INBOXBOT_DEMO_E621_USERNAME=me.name,
            INBOXBOT_DEMO_E621_API_KEY=me.api_key,
            INBOXBOT_DEMO_E621_USER_ID=str(me.id),
        )
        add = (add_realistic_dmail, add_realistic_comment)
        yield lambda: rng.choice(add)(sim, me, rng)


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = E621Sim(edge_rate=args.edge_rate, legacy=args.legacy)
    me = sim.add_user(args.username, api_key=args.api_key)
    seed_realistic(sim, me, args.dmails, args.comments, random.Random(args.seed))

    def banner() -> list[str]:
        return [
            f"e621 simulator at {sim.base_url}",
            f"  username={me.name} api_key={me.api_key} user_id={me.id}",
        ]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated e621 DMail/comment API.", port=8621)
    parser.add_argument("--username", default="demo_artist")
    parser.add_argument("--api-key", default=None, help="default: a random 24-char key")
    parser.add_argument("--dmails", type=int, default=8, help="DMails seeded to the user")
    parser.add_argument("--comments", type=int, default=12, help="comments on the user's posts")
    parser.add_argument("--edge-rate", type=float, default=EDGE_RATE, help="requests/s at the edge")
    parser.add_argument("--legacy", action="store_true", help="an older server's JSON shapes")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
