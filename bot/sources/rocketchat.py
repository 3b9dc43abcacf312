"""Rocket.Chat direct messages: new messages in the user's 1:1 and group DMs.

    work:
      type: rocketchat
      base_url: https://chat.example.org
      user_id: rbAXPnMktTFbNpwtJ          # a personal access token (Account > Personal
      token: ${ROCKETCHAT_TOKEN}          # Access Tokens) with its owner's user id, or:
      # username: alice                   # password login, repeated when the token is refused
      # password: ${ROCKETCHAT_PASSWORD}
      every: 1m
      rate: 10/min                        # calls per route (10 alone: per minute): the default

A poll asks ``subscriptions.get?updatedSince=`` which DM rooms changed (one request when
nothing did), then reads only those rooms' ``dm.history`` with ``showThreadMessages=true``
(thread replies included), from the newest message seen in the room, paging back to the
first page holding a message the feed has seen. The first poll reads, in each room with
unread activity, the messages since the user last looked (the newest 50). The user's own
and system messages are never items. The cursor is JSON: the newest subscription update
(the server's ``_updatedAt``, not our clock) and the newest message time per room (at
most 200 rooms).

Rocket.Chat allows 10 calls per minute per route and client IP by default, so each route
has its own limiter, shared by every account on the server. With ``realtime: true`` the
account also keeps the server's DDP WebSocket, which wakes the poll when a DM changes
(``rocketchat_realtime``); the feed is polled at ``every`` while that stream is down.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import quote, urlsplit

import aiohttp
from pydantic import BeforeValidator, Field, SecretStr, model_validator

from bot.config import AccountConfig, HttpUrl, Interval, parse_rate, show_rate
from bot.errors import AuthError, GoneError, PermanentError, RemoteError, TransientError
from bot.http import HttpClient, Limiters, Response, classify, retry_after
from bot.item import Attachment, Item
from bot.sources.base import Known, PollResult, Report, Source, Wake, nothing_known
from bot.sources.rocketchat_realtime import Stream, every_of
from bot.text import find_links

log = logging.getLogger("inboxbot.sources.rocketchat")

FIRST_POLL_COUNT = 50
PAGE = 100  # the server's cap on `count`
LOOKBACK = timedelta(seconds=30)  # messages saved while the previous poll ran
MAX_ROOMS = 200
EDGE = timedelta(milliseconds=1)
RATE_PERIOD = 60.0
TRANSIENT_TYPES = frozenset({"error-too-many-requests", "too-many-requests"})
AUTH_TYPES = frozenset({"totp-required", "error-unauthorized", "error-forbidden"})
GONE_TYPES = frozenset({"error-room-not-found", "invalid-channel"})
_BRACKETED = re.compile(r"\[([\w.-]+)\]\s*$")
_WAIT = re.compile(r"wait (\d+) seconds")


def _route_rate(value: Any) -> Any:
    """The server counts calls per minute per route, so a bare number means per minute."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, RATE_PERIOD)
    return parse_rate(value)


class RocketChatAccount(AccountConfig):
    type: Literal["rocketchat"]
    base_url: HttpUrl = "https://open.rocket.chat"
    user_id: str | None = Field(None, min_length=1)
    token: SecretStr | None = None
    username: str | None = Field(None, min_length=1)
    password: SecretStr | None = None
    every: Interval = timedelta(minutes=1)
    realtime: bool = False
    rate: Annotated[tuple[int, float], BeforeValidator(_route_rate)] = (10, RATE_PERIOD)
    feed_names: ClassVar[tuple[str, ...]] = ("dms",)

    def poll_budget(self) -> tuple[float, str]:
        count, period = self.rate
        allows = f"Rocket.Chat allows {show_rate(self.rate)} calls per route (rate:)"
        return count * 60 / period, f"{allows}, and every poll calls the same routes"

    @model_validator(mode="after")
    def _one_login(self) -> RocketChatAccount:
        token = (self.user_id is not None, self.token is not None)
        login = (self.username is not None, self.password is not None)
        wanted = "give user_id + token (a personal access token) or username + password"
        if any(token) and any(login):
            raise ValueError(f"{wanted}, not both")
        if token != (True, True) and login != (True, True):
            raise ValueError(wanted)
        return self


@dataclass(frozen=True)
class DmCursor:
    """Where the last poll stopped: the newest subscription update (``since``, with the
    subscriptions updated in that very millisecond: ``edge``) and the newest message per room."""

    since: datetime | None = None
    edge: frozenset[str] = frozenset()
    rooms: dict[str, datetime] = field(default_factory=dict)

    @classmethod
    def load(cls, text: str | None) -> DmCursor:
        """An unreadable cursor starts over as a first poll, rather than stop the feed."""
        try:
            data = json.loads(text or "{}")
            since = parse_time(data["since"]) if data.get("since") else None
            rooms = {str(k): parse_time(v) for k, v in data.get("rooms", {}).items()}
            return cls(since, frozenset(map(str, data.get("edge", []))), rooms)
        except (AttributeError, TypeError, ValueError):
            return cls()

    def dump(self) -> str:
        newest = sorted(self.rooms.items(), key=lambda kv: kv[1], reverse=True)[:MAX_ROOMS]
        since = iso(self.since) if self.since else None
        rooms = {rid: iso(ts) for rid, ts in newest}
        return json.dumps({"since": since, "edge": sorted(self.edge), "rooms": rooms})

    def query(self) -> dict[str, str]:
        """``updatedSince`` is exclusive: ask from a millisecond earlier, to also see what
        changed in the millisecond of ``since`` after the last answer was made."""
        return {"updatedSince": iso(self.since - EDGE)} if self.since else {}

    def changed(self, subs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [s for s in subs if _updated(s) != self.since or str(s.get("_id")) not in self.edge]

    def advanced(self, subs: list[dict[str, Any]], rooms: dict[str, datetime]) -> DmCursor:
        stamps = {str(s.get("_id")): _updated(s) for s in subs}
        since = max([t for t in (*stamps.values(), self.since) if t], default=None)
        edge = {i for i, t in stamps.items() if t == since}
        return DmCursor(
            since, frozenset(edge | (self.edge if since == self.since else set())), rooms
        )

    def oldest(self, rid: str) -> datetime | None:
        start = self.rooms.get(rid) or self.since
        return start - LOOKBACK if start else None


class RocketChatSource(Source):
    type_name = "rocketchat"
    config_model = RocketChatAccount
    feed_kinds: ClassVar[Mapping[str, str]] = {"dms": "chat"}
    actions: ClassVar[Mapping[str, frozenset[str]]] = {"chat": frozenset({"mark_read", "reply"})}
    batch_actions = frozenset({"mark_read"})
    default_feeds = ("dms",)

    def __init__(
        self, name: str, config: AccountConfig, session: aiohttp.ClientSession, limiters: Limiters
    ) -> None:
        super().__init__(name, config, session, limiters)
        assert isinstance(config, RocketChatAccount)
        self.account = config
        self.base = config.base_url.rstrip("/")
        self.host = urlsplit(self.base).netloc
        self.http = HttpClient(
            session, self.base, service=name, timeout=config.timeout.total_seconds()
        )
        self.user_id = config.user_id
        self.auth_token = config.token.get_secret_value() if config.token else None
        self._login_lock = asyncio.Lock()

    # --- push ----------------------------------------------------------------------------

    def pushes(self, feed: str) -> bool:
        return self.account.realtime

    async def watch(self, feed: str, wake: Wake, report: Report) -> None:
        await Stream(self, every_of(self, feed), wake, report).run()

    async def session_token(self, refused: str | None = None) -> str:
        """The token the realtime login resumes: the configured one, or one from a
        password login (a new one when ``refused`` was refused)."""
        if self.auth_token is None or self.auth_token == refused:
            await self._login(refused=self.auth_token)
        if self.auth_token is None:
            raise AuthError("no token to log in with", service=self.name)
        return self.auth_token

    # --- poll ----------------------------------------------------------------------------

    async def poll(self, feed: str, cursor: str | None, known: Known = nothing_known) -> PollResult:
        state = DmCursor.load(cursor)
        data = await self._call("GET", "subscriptions.get", params=state.query())
        subs = self._objects(data, "update")
        rooms, items = dict(state.rooms), {}
        try:
            for sub in state.changed(subs):
                if sub.get("t") != "d" or (state.since is None and not _has_unread(sub)):
                    continue
                rid = sub["rid"]
                if not (isinstance(rid, str) and rid):  # else its history would look empty
                    raise ValueError(f"a subscription without a proper rid: {rid!r}")
                oldest = state.oldest(rid) if state.since else _time_or_none(sub.get("ls"))
                for m in await self._history(rid, oldest, known, first=state.since is None):
                    created = parse_time(m["ts"])
                    rooms[rid] = max(created, rooms.get(rid, created))
                    if self._wanted(m):
                        items[str(m["_id"])] = self.normalize(m, sub)
            after = state.advanced(subs, rooms)
        except (KeyError, TypeError, ValueError) as err:
            raise TransientError(f"malformed answer: {err!r}", service=self.name) from None
        ordered = sorted(items.values(), key=lambda i: i.created_at)
        return PollResult(ordered, after.dump())

    async def _history(
        self, rid: str, oldest: datetime | None, known: Known, *, first: bool
    ) -> list[dict[str, Any]]:
        """Every message after ``oldest`` (newest ``count`` only on the first poll), paging
        back with ``latest`` up to the first page holding a message the feed has seen; a
        room that is gone has none."""
        count = FIRST_POLL_COUNT if first else PAGE
        params = {"roomId": rid, "count": str(count), "showThreadMessages": "true",
                  "inclusive": "true", **({"oldest": iso(oldest)} if oldest else {})}  # fmt: skip
        found: dict[str, dict[str, Any]] = {}
        while True:
            try:
                data = await self._call("GET", "dm.history", params=params)
            except GoneError:
                return []
            batch = self._objects(data, "messages")
            fresh = [m for m in batch if str(m.get("_id")) not in found]
            found.update((str(m.get("_id")), m) for m in batch)
            if first or len(batch) < count or not fresh or known(list(map(_id, batch))):
                return list(reversed(found.values()))  # oldest first
            params["latest"] = iso(min(parse_time(m["ts"]) for m in batch))

    def _wanted(self, m: Mapping[str, Any]) -> bool:
        user = m.get("u")
        mine = isinstance(user, Mapping) and user.get("_id") == self.user_id
        return not mine and m.get("t") in (None, "e2e")

    def normalize(self, m: Mapping[str, Any], sub: Mapping[str, Any]) -> Item:
        """One message of a DM room as an item; ``sub`` is the user's subscription to it.
        Raises KeyError, TypeError or ValueError on a malformed message."""
        if not (isinstance(m.get("_id"), str) and m["_id"]):
            raise ValueError("a message without a proper _id")
        rid, mid = str(m.get("rid") or sub["rid"]), m["_id"]
        created, seen = parse_time(m["ts"]), _time_or_none(sub.get("ls"))
        text = _text(m)
        room = str(sub.get("name") or "")
        return Item(
            account=self.name,
            feed="dms",
            kind="chat",
            upstream="rocketchat",
            id=mid,
            created_at=created,
            sender=str(m["u"]["username"]),
            recipient=room,
            subject=str(sub.get("fname") or room) if ", " in room else "",
            text=text,
            # no `ls`: the room was never opened, so its messages are unread if it says so
            unread=created > seen if seen else (True if _has_unread(sub) else None),
            url=f"{self.base}/direct/{quote(rid)}?msg={quote(mid)}",
            attachments=_attachments(m),
            links=self._links(m, text),
            raw=dict(m),
        )

    def _links(self, m: Mapping[str, Any], text: str) -> tuple[str, ...]:
        urls = [str(u.get("url")) for u in _dicts(m.get("urls")) if u.get("url")]
        for a in _dicts(m.get("attachments")):
            link = str(a.get("title_link") or "")
            urls += [self.base + link if link.startswith("/") else link] if link else []
        return tuple(dict.fromkeys([*find_links(text), *find_links("\n".join(urls))]))

    # --- actions -------------------------------------------------------------------------

    async def act(self, action: str, args: Mapping[str, Any], items: Sequence[Item]) -> None:
        if action == "mark_read":
            for rid in dict.fromkeys(str(i.raw.get("rid")) for i in items):
                await self._call("POST", "subscriptions.read", json={"rid": rid})
        elif action == "reply":
            text = str(args.get("message") or "")
            if not text:
                raise PermanentError("reply needs a message", service=self.name)
            for item in items:
                body = {"roomId": str(item.raw.get("rid")), "text": text}
                body |= {"tmid": str(item.raw["tmid"])} if item.raw.get("tmid") else {}
                await self._call("POST", "chat.postMessage", json=body)
        else:
            raise PermanentError(f"Rocket.Chat cannot {action}", service=self.name)

    # --- HTTP, auth, errors --------------------------------------------------------------

    async def _call(self, method: str, route: str, **kwargs: Any) -> Any:
        """One API call; with a password, a refused token is replaced once by a new login."""
        fresh = self.auth_token is None
        if fresh:
            await self._login(refused=None)
        used = self.auth_token
        resp = await self._send(method, route, **kwargs)
        if resp.status == 401 and self.account.password is not None and not fresh:
            await self._login(refused=used)
            resp = await self._send(method, route, **kwargs)
        if not resp.ok:
            raise self._error(resp)
        return resp.json(self.name)

    async def _send(self, method: str, route: str, **kwargs: Any) -> Response:
        key = f"rocketchat:{self.host}:{method} {route}"
        await self.limiters.get(key, *self.account.rate).wait()
        auth = {"X-User-Id": self.user_id or "", "X-Auth-Token": self.auth_token or ""}
        headers = auth if self.auth_token else {}
        return await self.http.request(method, f"/api/v1/{route}", headers=headers, **kwargs)

    async def _login(self, refused: str | None) -> None:
        async with self._login_lock:
            if self.auth_token != refused:
                return  # another call logged in meanwhile
            account = self.account
            if account.password is None:
                raise AuthError("no token and no password to log in with", service=self.name)
            self.auth_token = None
            body = {"user": account.username, "password": account.password.get_secret_value()}
            resp = await self._send("POST", "login", json=body)
            if not resp.ok:
                raise self._error(resp)
            data = resp.json(self.name).get("data")
            if not isinstance(data, dict) or not data.get("authToken") or not data.get("userId"):
                raise AuthError("POST /api/v1/login answered no token", service=self.name)
            self.user_id, self.auth_token = str(data["userId"]), str(data["authToken"])

    def _objects(self, data: Any, key: str) -> list[dict[str, Any]]:
        found = data.get(key) if isinstance(data, dict) else None
        if not isinstance(found, list):
            raise TransientError(f"no {key!r} list in the answer", service=self.name)
        return _dicts(found)

    def _error(self, resp: Response) -> RemoteError:
        error = resp.error_code("error", "message")
        bracketed = _BRACKETED.search(error)
        kind = resp.error_code("errorType") or (bracketed.group(1) if bracketed else "")
        detail = kind or error or ("HTML page" if not resp.is_json() else "")
        what, status = f"{resp.what} → HTTP {resp.status} ({detail})", resp.status
        if status == 429 or kind in TRANSIENT_TYPES:
            wait = _reset_after(resp, error)
            return TransientError(what, service=self.name, status=status, retry_after=wait)
        if status == 401 or kind in AUTH_TYPES:
            return AuthError(what, service=self.name, status=status)
        if status == 400 and kind in GONE_TYPES:
            return GoneError(what, service=self.name, status=status)
        return classify(resp, self.name, detail)

    # --- a sample record, that `check` renders templates on ---------------------------

    sample_blank: ClassVar[Mapping[str, Mapping[str, Any]]] = {"chat": {"html": None}}
    sample_raw: ClassVar[Mapping[str, Mapping[str, Any]]] = {
        "chat": {
            "_id": "m1", "rid": "r1", "msg": "Your code 123456", "ts": "2024-05-01T12:00:00.000Z",
            "u": {"_id": "u2", "username": "alice", "name": "Alice"},
            "_updatedAt": "2024-05-01T12:00:00.000Z", "urls": [], "mentions": [],
            "channels": [], "md": [{"type": "PARAGRAPH",
                                    "value": [{"type": "PLAIN_TEXT", "value": "Your code"}]}],
            "file": {"_id": "f1", "name": "invoice.pdf", "type": "application/pdf", "size": 2048},
            "files": [{"_id": "f1", "name": "invoice.pdf", "type": "application/pdf",
                       "size": 2048, "format": "PDF"}],
            "attachments": [{"type": "file", "title": "invoice.pdf",
                             "title_link": "/file-upload/f1/invoice.pdf",
                             "title_link_download": True, "ts": "2024-05-01T12:00:00.000Z"}],
        },
    }  # fmt: skip


def _reset_after(resp: Response, error: str) -> float:
    """Seconds until the window resets: a ``Retry-After`` (from a proxy in front), else
    ``X-RateLimit-Reset`` (epoch milliseconds), else the wait the error names."""
    hint = retry_after(resp.headers)
    if hint is not None:
        return hint
    try:
        reset = float(resp.headers.get("X-RateLimit-Reset", ""))
        return max(0.0, (reset / 1000 if reset > 1e11 else reset) - time.time())
    except ValueError:
        waited = _WAIT.search(error)
        return float(waited.group(1)) if waited else RATE_PERIOD


def _id(m: Mapping[str, Any]) -> str:
    return str(m.get("_id"))


def _updated(sub: Mapping[str, Any]) -> datetime | None:
    return parse_time(sub["_updatedAt"]) if sub.get("_updatedAt") else None


def _has_unread(sub: Mapping[str, Any]) -> bool:
    return bool(sub.get("unread") or sub.get("alert") or sub.get("tunread"))


def _text(m: Mapping[str, Any]) -> str:
    if m.get("t") == "e2e":
        return "(end-to-end encrypted message)"
    captions = [
        str(a.get("description") or a.get("text") or "") for a in _dicts(m.get("attachments"))
    ]
    return str(m.get("msg") or "") or "\n".join(c for c in captions if c)


def _attachments(m: Mapping[str, Any]) -> tuple[Attachment, ...]:
    """Uploaded files: ``files`` (or the older single ``file``), else file attachments."""
    files = _dicts(m.get("files")) or _dicts([m.get("file")])
    if files:
        return tuple(_attachment(f.get("name"), f.get("type"), f.get("size")) for f in files)
    return tuple(
        _attachment(a.get("title"), a.get("image_type") or a.get("audio_type")
                    or a.get("video_type"), a.get("image_size") or a.get("size"))
        for a in _dicts(m.get("attachments")) if a.get("type") == "file"
    )  # fmt: skip


def _attachment(name: Any, content_type: Any, size: Any) -> Attachment:
    kind = str(content_type or "application/octet-stream")
    return Attachment(str(name or "file"), kind, size if isinstance(size, int) else None)


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _time_or_none(value: Any) -> datetime | None:
    try:
        return parse_time(value) if value else None
    except (TypeError, ValueError):
        return None


def parse_time(value: Any) -> datetime:
    """An ISO time (REST) or an EJSON ``{"$date": ms}`` (realtime API) as an aware datetime."""
    if isinstance(value, Mapping):
        value = value.get("$date")
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)
        except (OverflowError, OSError):  # far outside any real message's time
            raise ValueError(f"not a time: {value!r}") from None
    if not isinstance(value, str):
        raise TypeError(f"not a time: {value!r}")
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def iso(moment: datetime) -> str:
    """The form Rocket.Chat writes: UTC, milliseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
