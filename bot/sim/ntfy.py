"""A simulator of an ntfy server's JSON publishing API, served by aiohttp.

It models: ``POST|PUT /`` with topic, title, message, priority 1–5, tags, click, icon,
actions (at most 3 of view, http, broadcast) and markdown, answered with the stored
message; auth by ``Bearer tk_…`` or Basic (user and password, or an empty user and a
token): 401 for refused credentials, 403 where the topic's access control (the user's
entries, then everyone's, then the default access) does not let the caller write; the
4,096-byte message limit (a longer message becomes ``attachment.txt``, or 400 code 40014
when attachments are off) and the JSON body limit of twice that (413 code 41303); the
visitor request bucket per client address (60, one more every 5 s: 429 code 42901, no
``Retry-After`` unless ``retry_after`` is set); a daily message quota when set (429 code
42908); ntfy's error body ``{"code", "http", "error", "link"}``. On top: ``received``,
queued faults (``status`` takes ``status``, ``code``, ``error``, ``retry_after``;
``rate_limited`` takes ``retry_after``), a down switch, a request log and ``/_sim/``.

Not modelled: publishing with headers to ``/<topic>``, subscribing, uploads and
attachment URLs, e-mail, calls, delayed delivery, UnifiedPush, Matrix, accounts, tiers.

    python -m bot.sim.ntfy --port 8090 --user alice:secret --default-access deny-all
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import fnmatch
import json
import re
import secrets
import string
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from aiohttp import web

from bot.sim.base import Fault, SimServer, proxy_page, serve_until_stopped, simulator_parser

TOPIC = re.compile(r"[-_A-Za-z0-9]{1,64}")
ACCESS = {"read-write": (True, True), "read-only": (True, False), "write-only": (False, True),
          "deny": (False, False), "deny-all": (False, False)}  # fmt: skip
CACHE_SECONDS = 12 * 3600
DOCS = "https://ntfy.sh/docs/"
ERRORS = {  # ntfy's server/errors.go: code → (error, link)
    40007: ("invalid priority parameter", DOCS + "publish/#message-priority"),
    40009: ("invalid request: topic invalid", ""),
    40014: ("invalid request: attachments not allowed", DOCS + "config/#attachments"),
    40018: ("invalid request: actions invalid", DOCS + "publish/#action-buttons"),
    40021: ("invalid request: icon URL is invalid", DOCS + "publish/#icons"),
    40024: ("invalid request: request body must be valid JSON", ""),
    40101: ("unauthorized", DOCS + "publish/#authentication"),
    40301: ("forbidden", DOCS + "publish/#authentication"),
    41303: ("JSON body too large", ""),
    42901: ("limit reached: too many requests", DOCS + "publish/#limitations"),
    42908: ("limit reached: daily message quota reached", DOCS + "publish/#limitations"),
}


class NtfyError(Exception):
    """An answer in ntfy's error shape; ``detail`` is appended as ntfy's wrapped errors do."""

    def __init__(
        self,
        code: int,
        detail: str = "",
        *,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        known, self.link = ERRORS.get(code, (HTTPStatus(code // 100).phrase.lower(), ""))
        self.code, self.error = code, error or (f"{known}, {detail}" if detail else known)
        self.headers = headers or {}
        super().__init__(self.error)

    def response(self) -> web.Response:
        body: dict[str, Any] = {"code": self.code, "http": self.code // 100, "error": self.error}
        body |= {"link": self.link} if self.link else {}
        return web.json_response(body, status=self.code // 100, headers=self.headers)


@dataclass
class SimUser:
    name: str
    password: str
    tokens: set[str] = field(default_factory=set)
    admin: bool = False


@dataclass(frozen=True)
class Published:
    """One accepted message, as the server answered it, and who sent it."""

    message: dict[str, Any]
    user: str | None


class NtfySim(SimServer):
    """The simulated server. ``default_access`` is ntfy's ``auth-default-access``;
    ``burst`` and ``refill`` its visitor request limit; ``retry_after`` a Retry-After
    header to add to 429s (ntfy sends none)."""

    partial_body = b'{"id":"'

    def __init__(
        self,
        *,
        default_access: str = "read-write",
        burst: int = 60,
        refill: float = 5.0,
        message_limit: int = 4096,
        attachments: bool = True,
        daily_limit: int | None = None,
        retry_after: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(clock)
        self.default_access = ACCESS[default_access]
        self.burst, self.refill = burst, refill
        self.message_limit, self.attachments = message_limit, attachments
        self.daily_limit, self.retry_after = daily_limit, retry_after
        self.users: dict[str, SimUser] = {}
        self.acl: list[tuple[str, str, tuple[bool, bool]]] = []  # (user or "*", pattern, rw)
        self.received: list[Published] = []
        self._buckets: dict[str, tuple[float, float]] = {}  # visitor → (requests left, at)

    # State control, used by tests and the demo in the same event loop.

    def add_user(self, name: str, password: str = "", *, admin: bool = False) -> SimUser:
        user = SimUser(name, password or secrets.token_urlsafe(12), admin=admin)
        self.users[name] = user
        return user

    def add_token(self, name: str) -> str:
        """A new access token of user ``name``: ``tk_`` and 29 characters, like ntfy's."""
        alphabet = string.ascii_lowercase + string.digits
        token = "tk_" + "".join(secrets.choice(alphabet) for _ in range(29))
        self.users[name].tokens.add(token)
        return token

    def allow(self, who: str, pattern: str, access: str) -> None:
        """``ntfy access WHO PATTERN ACCESS``: ``who`` is a user name or ``*`` (everyone)."""
        self.acl.append((who, pattern, ACCESS[access]))

    def messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [p.message for p in self.received if topic in (None, p.message["topic"])]

    # The HTTP application.

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/", self._publish)
        router.add_put("/", self._publish)
        router.add_get("/_sim/messages", self._ctl_messages)

    def caller(self, request: web.Request) -> str | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "basic":
            user, _, password = _basic(value)
            return user or password or None
        return value.strip() or None if scheme.lower() == "bearer" else None

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        headers = self._hint(fault.params.get("retry_after", self.retry_after))
        if fault.kind == "rate_limited":
            return NtfyError(42901, headers=headers).response()
        status = int(fault.params.get("status", 502 if fault.kind == "html" else 500))
        if fault.kind == "html":
            return proxy_page(status)
        code, error = int(fault.params.get("code", status * 100 + 1)), fault.params.get("error")
        return NtfyError(code, error=error, headers=headers).response()

    @staticmethod
    def _hint(seconds: float | None) -> dict[str, str]:
        return {"Retry-After": f"{seconds:g}"} if seconds is not None else {}

    async def _publish(self, request: web.Request) -> web.Response:
        """In ntfy's order: credentials, request limit, body, topic, access, quota, fields."""
        try:
            user = self._authenticate(request)
            self._take_request(request)
            fields = self._fields(await request.read())
            topic = str(fields.get("topic", ""))
            if not TOPIC.fullmatch(topic):
                raise NtfyError(40009)
            if not self._may_write(user, topic):
                raise NtfyError(40301)
            who = user.name if user else None
            if self.daily_limit is not None and self._sent_by(who) >= self.daily_limit:
                raise NtfyError(42908)
            message = self._message(topic, fields)
        except NtfyError as err:
            return err.response()
        self.received.append(Published(message, who))
        return web.json_response(message)

    def _authenticate(self, request: web.Request) -> SimUser | None:
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("basic", "bearer"):
            return None  # anonymous, as ntfy treats any other scheme
        if scheme.lower() == "basic":
            name, ok, password = _basic(value)
            if ok and name:
                user = self.users.get(name)
                if user is None or user.password != password:
                    raise NtfyError(40101)
                return user
            value = password  # an empty user name: the password is a token
        found = next((u for u in self.users.values() if value.strip() in u.tokens), None)
        if found is None:
            raise NtfyError(40101)
        return found

    def _take_request(self, request: web.Request) -> None:
        """ntfy's request limiter: a bucket of ``burst`` that gains one every ``refill`` s."""
        visitor, now = request.remote or "?", self.clock()
        left, at = self._buckets.get(visitor, (float(self.burst), now))
        left = min(float(self.burst), left + (now - at) / self.refill)
        self._buckets[visitor] = (max(0.0, left - 1), now)
        if left < 1:
            raise NtfyError(42901, headers=self._hint(self.retry_after))

    def _fields(self, raw: bytes) -> dict[str, Any]:
        if len(raw) > 2 * self.message_limit:  # ntfy reads at most twice the message limit
            raise NtfyError(41303)
        try:
            fields = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            fields = None
        # Go's decoder also refuses a priority that is not a number
        if not isinstance(fields, dict) or not isinstance(fields.get("priority", 0), int):
            raise NtfyError(40024)
        return fields

    def _may_write(self, user: SimUser | None, topic: str) -> bool:
        if user is not None and user.admin:
            return True
        names = {"*"} | ({user.name} if user else set())
        # The user's own entries before everyone's, the most specific pattern first.
        entries = [(who != "*", len(p), rw) for who, p, rw in self.acl
                   if who in names and fnmatch.fnmatchcase(topic, p)]  # fmt: skip
        return max(entries)[2][1] if entries else self.default_access[1]

    def _sent_by(self, who: str | None) -> int:
        return sum(1 for p in self.received if p.user == who)

    def _message(self, topic: str, fields: dict[str, Any]) -> dict[str, Any]:
        now = int(self.clock())
        mid = "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(12))
        message: dict[str, Any] = {"id": mid, "time": now, "expires": now + CACHE_SECONDS,
                                   "event": "message", "topic": topic}  # fmt: skip
        message |= _optional_fields(fields)
        text = str(fields.get("message") or "") or "triggered"
        if len(text.encode()) > self.message_limit:  # ntfy keeps a long message as a file
            if not self.attachments:
                raise NtfyError(40014)
            message["attachment"] = {"name": "attachment.txt", "size": len(text.encode()),
                                     "type": "text/plain; charset=utf-8",
                                     "url": f"{self.base_url}/file/{mid}.txt"}  # fmt: skip
            text = "You received a file: attachment.txt"
        return message | {"message": text}

    async def _ctl_messages(self, request: web.Request) -> web.Response:
        return web.json_response(self.messages(request.query.get("topic")))


def _basic(value: str) -> tuple[str, bool, str]:
    """(user, whether it decoded, password) of a Basic credential."""
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", False, ""
    user, colon, password = decoded.partition(":")
    return user, bool(colon), password


def _optional_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """Title, priority, tags, click, icon, actions and content type, checked as ntfy does."""
    out: dict[str, Any] = {k: str(fields[k]) for k in ("title", "click") if fields.get(k)}
    priority = fields.get("priority") or 0
    if priority:
        if not 1 <= priority <= 5 or isinstance(priority, bool):
            raise NtfyError(40007)
        out["priority"] = priority
    if fields.get("tags"):
        out["tags"] = [str(t) for t in fields["tags"]]
    if fields.get("icon"):
        if not re.match(r"https?://", str(fields["icon"])):
            raise NtfyError(40021)
        out["icon"] = str(fields["icon"])
    if fields.get("actions"):
        out["actions"] = [_action(a) for a in _action_list(fields["actions"])]
    if fields.get("markdown"):
        out["content_type"] = "text/markdown"
    return out


def _action_list(actions: Any) -> list[dict[str, Any]]:
    if not isinstance(actions, list) or not all(isinstance(a, dict) for a in actions):
        raise NtfyError(40018, "actions must be a JSON array of objects")
    if len(actions) > 3:
        raise NtfyError(40018, "only 3 actions allowed")
    return actions


def _action(given: dict[str, Any]) -> dict[str, Any]:
    """One action as ntfy checks and stores it (with an id, the method upper-cased)."""
    action = {"id": secrets.token_hex(5), "clear": False, **given}
    kind = action["action"] = str(given.get("action", "")).lower()
    if kind not in ("view", "broadcast", "http"):
        raise NtfyError(40018, f"action '{kind}' unknown")
    if not action.get("label"):
        raise NtfyError(40018, "parameter 'label' is required")
    if kind in ("view", "http") and not action.get("url"):
        raise NtfyError(40018, f"parameter 'url' is required for action '{kind}'")
    if kind == "http":
        method = action["method"] = str(given.get("method") or "POST").upper()
        if method in ("GET", "HEAD") and action.get("body"):
            raise NtfyError(40018, f"parameter 'body' cannot be set if method is {method}")
    return action


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = NtfySim(default_access=args.default_access, burst=args.burst, refill=args.refill)
    for spec in args.user:
        name, _, password = spec.partition(":")
        sim.add_user(name, password)
        sim.allow(name, "*", "read-write")
    tokens = {name: sim.add_token(name) for name in sim.users}

    def banner() -> list[str]:
        lines = [f"ntfy simulator at {sim.base_url} (default access: {args.default_access})"]
        return lines + [f"  user {n} token={t}" for n, t in tokens.items()]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated ntfy publishing API.", port=8090)
    parser.add_argument("--user", action="append", default=[], help="USER:PASSWORD, repeatable")
    parser.add_argument("--default-access", default="read-write", choices=sorted(ACCESS))
    parser.add_argument("--burst", type=int, default=60, help="requests before the limit")
    parser.add_argument("--refill", type=float, default=5.0, help="seconds per new request")
    asyncio.run(_serve_forever(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
