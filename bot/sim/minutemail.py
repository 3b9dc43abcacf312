"""A simulator of the MinuteMail API (``/v1/mailboxes…``), served by aiohttp on a local port.

It models what the MinuteMail docs and SDK describe: ``mmak_`` API keys as Bearer tokens
(401 invalid, expired or missing; 403 when an ``Origin``/``Referer`` outside the key's allowed
domains is sent, or the mailbox is another user's), mailboxes created with ``expiresIn`` 1–60
minutes that vanish (404) when the simulator's clock passes their expiry, mails listed all at
once (no pages, no read flag) with one ``body`` that is plain text or HTML, single and atomic
bulk deletes that skip unknown ids, attachments listed and downloaded as JSON with base64
``data``, an API call quota reported in ``X-RateLimit-Remaining`` on every authenticated answer
(429 when it is spent), and an optional per-second limit (the real one is undocumented). On
top: queued faults, a "down" switch, a request log and an unauthenticated ``/_sim/`` API.

    python -m bot.sim.minutemail --port 8026 --mailboxes 2 --mails 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim import base
from bot.sim.base import (
    Fault,
    SimServer,
    SlidingWindows,
    bearer_token,
    proxy_page,
    serve_until_stopped,
    simulator_parser,
)
from bot.sim.corpus import realistic_message

DEFAULT_DOMAIN = "minutemail.cc"
DEFAULT_QUOTA = 10_000
FAULT_KINDS = base.FAULT_KINDS | {"quota"}
NewAttachment = tuple[str, str, bytes]  # name, content type, content

OWNER = web.RequestKey("owner", str)  # the authenticated key's user, for the handlers
_ALIAS = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")


class _ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _error(status: int, message: str, **headers: str) -> web.Response:
    # The SDK reads {"error", "message"}; the exact strings are a guess.
    body = {"error": HTTPStatus(status).phrase, "message": message}
    return web.json_response(body, status=status, headers=headers or None)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_api_key() -> str:
    """``mmak_`` and 52 base32 characters (32 random bytes, unpadded), like the real keys."""
    return "mmak_" + base64.b32encode(secrets.token_bytes(32)).decode().rstrip("=")


@dataclass
class SimKey:
    """An API key of ``owner``; ``allowed_domains`` empty means any origin."""

    key: str
    owner: str
    allowed_domains: tuple[str, ...] = ()
    expires_at: datetime | None = None


@dataclass
class SimMailbox:
    id: str
    alias: str
    domain: str
    owner: str
    created_at: datetime
    expires_at: datetime
    recoverable: bool = False
    tag: str | None = None
    deleted: bool = False

    @property
    def address(self) -> str:
        return f"{self.alias}@{self.domain}"

    def to_json(self, message_count: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "alias": self.alias,
            "domain": self.domain,
            "address": self.address,
            "recoverable": self.recoverable,
            "tag": self.tag,
            "owner": self.owner,
            "messageCount": message_count,
            "expiresAt": _iso(self.expires_at),
            "createdAt": _iso(self.created_at),
        }


@dataclass
class SimAttachment:
    id: str
    mail_id: str
    name: str
    content_type: str
    data: bytes

    def summary(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "sizeBytes": len(self.data)}

    def listed(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mailId": self.mail_id,
            "name": self.name,
            "contentType": self.content_type,
            "sizeBytes": len(self.data),
        }

    def download(self) -> dict[str, Any]:
        data = base64.b64encode(self.data).decode()
        return {
            "id": self.id,
            "name": self.name,
            "contentType": self.content_type,
            "data": data,
            "sizeBytes": len(self.data),
        }


@dataclass
class SimMail:
    id: str
    mailbox_id: str
    sender: str
    subject: str
    body: str
    received_at: datetime
    attachments: list[SimAttachment] = field(default_factory=list)
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "mailboxId": self.mailbox_id,
            "sender": self.sender,
            "subject": self.subject,
            "body": self.body,
            "hasAttachments": bool(self.attachments),
            "attachments": [a.summary() for a in self.attachments],
            "receivedAt": _iso(self.received_at),
        }


class MinuteMailSim(SimServer):
    """The simulated service: state, the aiohttp app and the control API tests drive.

    ``clock`` (monotonic seconds) drives the per-second limit; ``now`` (wall time) drives
    mailbox expiry and timestamps, so a test can make a mailbox vanish by moving it.

    Fault params: ``latency`` takes ``seconds``; ``status`` takes ``status`` and ``message``,
    or ``body`` (any JSON, or a string sent as a page or plain text) to answer as given;
    ``html`` takes ``status``; ``rate_limited`` takes ``remaining``; ``reset`` takes
    ``before_headers``; ``quota`` is the spent API call quota."""

    fault_kinds = FAULT_KINDS
    window_filter = "key"

    def __init__(
        self,
        *,
        quota: int = DEFAULT_QUOTA,
        rate_limit: float | None = None,
        max_mailboxes: int | None = None,
        domains: Sequence[str] = (DEFAULT_DOMAIN,),
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(clock)
        self.quota = quota  # API calls per owner
        self.rate_limit = rate_limit  # requests/s per key, None: unlimited
        self.max_mailboxes = max_mailboxes  # active mailboxes per owner
        self.domains = set(domains)
        self.now = now
        self.keys: dict[str, SimKey] = {}
        self.mailboxes: dict[str, SimMailbox] = {}
        self.mails: dict[str, SimMail] = {}
        self.calls: dict[str, int] = {}  # owner → API calls charged
        self._windows = SlidingWindows()

    # State control, used by tests and the demo in the same event loop.

    def add_key(
        self,
        key: str | None = None,
        *,
        owner: str | None = None,
        allowed_domains: Sequence[str] = (),
        expires_at: datetime | None = None,
    ) -> SimKey:
        made = SimKey(
            key or new_api_key(), owner or str(uuid.uuid4()), tuple(allowed_domains), expires_at
        )
        self.keys[made.key] = made
        return made

    def revoke_key(self, key: SimKey) -> None:
        self.keys.pop(key.key, None)

    def add_mailbox(
        self,
        owner: SimKey | str,
        *,
        minutes: float = 60,
        alias: str | None = None,
        domain: str = DEFAULT_DOMAIN,
        mailbox_id: str | None = None,
        recoverable: bool = False,
        tag: str | None = None,
    ) -> SimMailbox:
        """A mailbox living ``minutes`` (not bound to 1–60 here: the demo wants a long one)."""
        now = self.now()
        box = SimMailbox(
            id=mailbox_id or str(uuid.uuid4()),
            alias=alias or secrets.token_hex(5),
            domain=domain,
            owner=owner.owner if isinstance(owner, SimKey) else owner,
            created_at=now,
            expires_at=now + timedelta(minutes=minutes),
            recoverable=recoverable,
            tag=tag,
        )
        self.mailboxes[box.id] = box
        return box

    def expire(self, mailbox: SimMailbox | str) -> None:
        box = self.mailboxes[mailbox if isinstance(mailbox, str) else mailbox.id]
        box.expires_at = min(box.expires_at, self.now())

    def alive(self, box: SimMailbox) -> bool:
        return not box.deleted and self.now() < box.expires_at

    def add_mail(
        self,
        mailbox: SimMailbox | str,
        *,
        sender: str,
        subject: str,
        body: str,
        attachments: Sequence[NewAttachment] = (),
        received_at: datetime | None = None,
    ) -> str:
        box = self.mailboxes[mailbox if isinstance(mailbox, str) else mailbox.id]
        mail = SimMail(str(uuid.uuid4()), box.id, sender, subject, body, received_at or self.now())
        mail.attachments = [
            SimAttachment(str(uuid.uuid4()), mail.id, name, kind, data)
            for name, kind, data in attachments
        ]
        self.mails[mail.id] = mail
        return mail.id

    def mail(self, mail_id: str) -> SimMail:
        return self.mails[mail_id]

    def remaining(self, owner: str) -> int:
        return max(0, self.quota - self.calls.get(owner, 0))

    def max_requests_in_window(self, window: float | None = None, key: str | None = None) -> int:
        """Most requests (accepted or refused) with ``key`` (or any) within ``window`` s."""
        return super().max_requests_in_window(window, key)

    # The HTTP application.

    def add_routes(self, router: web.UrlDispatcher) -> None:
        boxes = "/v1/mailboxes"
        mails = boxes + "/{mailbox}/mails"
        files = mails + "/{mail}/attachments"
        routes = [
            ("POST", boxes, self._create_mailbox),
            ("GET", boxes, self._list_mailboxes),
            ("GET", boxes + "/{mailbox}", self._get_mailbox),
            ("DELETE", boxes + "/{mailbox}", self._delete_mailbox),
            ("GET", mails, self._list_mails),
            ("DELETE", mails, self._delete_mails),
            ("GET", mails + "/{mail}", self._get_mail),
            ("DELETE", mails + "/{mail}", self._delete_mail),
            ("GET", files, self._list_attachments),
            ("DELETE", files, self._delete_attachments),
            ("GET", files + "/{attachment}", self._get_attachment),
            ("DELETE", files + "/{attachment}", self._delete_attachment),
            ("POST", "/_sim/keys", self._ctl_key),
            ("POST", "/_sim/mailboxes", self._ctl_mailbox),
            ("POST", "/_sim/mails", self._ctl_mail),
            ("POST", "/_sim/expire", self._ctl_expire),
            ("POST", "/_sim/seed", self._ctl_seed),
        ]
        # the kinds of request ``counts`` tells apart
        names = {boxes + "/{mailbox}": "mailbox.detail", mails: "mails.list",
                 mails + "/{mail}": "mails.detail"}  # fmt: skip
        for method, path, handler in routes:
            router.add_route(
                method, path, handler, name=names.get(path) if method == "GET" else None
            )

    def control_error(self, err: Exception) -> web.Response:
        return web.json_response({"error": "Bad Request", "message": str(err)}, status=400)

    def down_response(self) -> web.Response:
        return _error(503, "Service temporarily unavailable")

    def fault_response(self, fault: Fault) -> web.Response:
        if fault.kind == "html":
            return proxy_page(int(fault.params.get("status", 502)), "cloudflare")
        if fault.kind == "status":
            status = int(fault.params.get("status", 500))
            if "body" in fault.params:
                return _raw_answer(status, fault.params["body"])
            return _error(status, str(fault.params.get("message", HTTPStatus(status).phrase)))
        if fault.kind == "quota":
            return _error(429, "Quota exceeded", **{"X-RateLimit-Remaining": "0"})
        left = str(fault.params.get("remaining", 100))
        headers = {"X-RateLimit-Remaining": left, "Retry-After": "1"}
        return _error(429, "Rate limit exceeded", **headers)

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        key = self._key(request)
        if key is None:
            return _error(401, "Invalid or missing API key")
        response = await self._serve_key(request, handler, key)
        response.headers["X-RateLimit-Remaining"] = str(self.remaining(key.owner))
        return response

    async def _serve_key(
        self, request: web.Request, handler: Handler, key: SimKey
    ) -> web.StreamResponse:
        if not _origin_allowed(key, request):
            return _error(403, "Origin not allowed for this API key")
        if not self._admit(key.key):
            return _error(429, "Rate limit exceeded", **{"Retry-After": "1"})
        if self.remaining(key.owner) <= 0:
            return _error(429, "Quota exceeded")
        self.calls[key.owner] = self.calls.get(key.owner, 0) + 1
        request[OWNER] = key.owner
        try:
            return await handler(request)
        except _ApiError as err:
            return _error(err.status, err.message)
        except web.HTTPException as err:
            return _error(err.status, err.reason)

    def _key(self, request: web.Request) -> SimKey | None:
        key = self.keys.get(bearer_token(request) or "")
        if key is None or (key.expires_at is not None and self.now() >= key.expires_at):
            return None
        return key

    def _admit(self, key: str) -> bool:
        if self.rate_limit is None:
            return True
        return self._windows.admit(key, self.rate_limit, self.clock())

    # Lookups: mailbox ownership is checked before anything else.

    def _mailbox(self, request: web.Request) -> SimMailbox:
        box = self.mailboxes.get(request.match_info["mailbox"])
        if box is None or not self.alive(box):
            raise _ApiError(404, "Mailbox not found")
        if box.owner != request[OWNER]:
            raise _ApiError(403, "You don't have access to this mailbox")
        return box

    def _visible(self, box: SimMailbox) -> list[SimMail]:
        found = [m for m in self.mails.values() if m.mailbox_id == box.id and not m.deleted]
        return sorted(found, key=lambda m: (m.received_at, m.id), reverse=True)

    def _mail(self, request: web.Request) -> SimMail:
        box = self._mailbox(request)
        mail = self.mails.get(request.match_info["mail"])
        if mail is None or mail.deleted or mail.mailbox_id != box.id:
            raise _ApiError(404, "Mail not found")
        return mail

    def _attachment(self, request: web.Request) -> tuple[SimMail, SimAttachment]:
        mail = self._mail(request)
        wanted = request.match_info["attachment"]
        found = next((a for a in mail.attachments if a.id == wanted), None)
        if found is None:
            raise _ApiError(404, "Attachment not found")
        return mail, found

    # Mailboxes.

    async def _create_mailbox(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        minutes, domain = body.get("expiresIn"), body.get("domain", DEFAULT_DOMAIN)
        if type(minutes) is not int or not 1 <= minutes <= 60:
            raise _ApiError(400, "expiresIn must be an integer from 1 to 60 (minutes)")
        if domain not in self.domains:
            raise _ApiError(400, f"domain not allowed: {domain}")
        recoverable, tag = bool(body.get("recoverable", False)), body.get("tag")
        if recoverable and not (isinstance(tag, str) and tag):
            raise _ApiError(400, "a recoverable mailbox needs a tag")
        alias = body.get("alias")
        if alias is not None and not (isinstance(alias, str) and _ALIAS.match(alias)):
            raise _ApiError(400, "invalid alias")
        self._check_room(request[OWNER], alias, domain)
        box = self.add_mailbox(
            request[OWNER],
            minutes=minutes,
            alias=alias,
            domain=domain,
            recoverable=recoverable,
            tag=tag,
        )
        return web.json_response(box.to_json(0), status=201)

    def _check_room(self, owner: str, alias: str | None, domain: str) -> None:
        live = [b for b in self.mailboxes.values() if self.alive(b)]
        if alias is not None and any(b.address == f"{alias}@{domain}" for b in live):
            raise _ApiError(409, "Alias already exists")
        mine = sum(1 for b in live if b.owner == owner)
        if self.max_mailboxes is not None and mine >= self.max_mailboxes:
            raise _ApiError(429, "Quota exceeded (active or archived mailbox limit)")

    def _box_json(self, box: SimMailbox) -> dict[str, Any]:
        return box.to_json(len(self._visible(box)))

    async def _list_mailboxes(self, request: web.Request) -> web.Response:
        address = request.query.get("address")
        boxes = [
            b
            for b in self.mailboxes.values()
            if self.alive(b)
            and b.owner == request[OWNER]
            and (address is None or b.address == address.lower())
        ]
        return web.json_response({"items": [self._box_json(b) for b in boxes]})

    async def _get_mailbox(self, request: web.Request) -> web.Response:
        return web.json_response(self._box_json(self._mailbox(request)))

    async def _delete_mailbox(self, request: web.Request) -> web.Response:
        self._mailbox(request).deleted = True
        return web.Response(status=204)

    # Mails.

    async def _list_mails(self, request: web.Request) -> web.Response:
        mails = self._visible(self._mailbox(request))
        return web.json_response({"items": [m.to_json() for m in mails]})

    async def _get_mail(self, request: web.Request) -> web.Response:
        return web.json_response(self._mail(request).to_json())

    async def _delete_mail(self, request: web.Request) -> web.Response:
        self._mail(request).deleted = True
        return web.Response(status=204)

    async def _delete_mails(self, request: web.Request) -> web.Response:
        box = self._mailbox(request)
        ids = await _ids(request)  # all validated first: the operation is atomic
        for mail in self._visible(box):
            if mail.id in ids:
                mail.deleted = True
        return web.Response(status=204)

    # Attachments.

    async def _list_attachments(self, request: web.Request) -> web.Response:
        mail = self._mail(request)
        return web.json_response({"items": [a.listed() for a in mail.attachments]})

    async def _get_attachment(self, request: web.Request) -> web.Response:
        return web.json_response(self._attachment(request)[1].download())

    async def _delete_attachment(self, request: web.Request) -> web.Response:
        mail, attachment = self._attachment(request)
        mail.attachments.remove(attachment)
        return web.Response(status=204)

    async def _delete_attachments(self, request: web.Request) -> web.Response:
        mail = self._mail(request)
        ids = await _ids(request)
        mail.attachments = [a for a in mail.attachments if a.id not in ids]
        return web.Response(status=204)

    # The /_sim/ control API: no auth, not logged, for other processes.

    async def _ctl_key(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        key = self.add_key(
            body.get("key"),
            owner=body.get("owner"),
            allowed_domains=body.get("allowed_domains", ()),
        )
        return web.json_response({"key": key.key, "owner": key.owner}, status=201)

    async def _ctl_mailbox(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        owner = self.keys[str(body["key"])].owner if "key" in body else str(body["owner"])
        box = self.add_mailbox(
            owner,
            minutes=float(body.get("minutes", 60)),
            alias=body.get("alias"),
            mailbox_id=body.get("id"),
        )
        return web.json_response(self._box_json(box), status=201)

    async def _ctl_mail(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        mailbox = str(body.pop("mailbox"))
        files = [
            (a["name"], a["content_type"], base64.b64decode(a["content_base64"]))
            for a in body.pop("attachments", [])
        ]
        if "received_at" in body:
            body["received_at"] = datetime.fromisoformat(body["received_at"])
        mail_id = self.add_mail(mailbox, attachments=files, **body)
        return web.json_response({"id": mail_id}, status=201)

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        self.expire(str((await _json_object(request))["mailbox"]))
        return web.Response(status=204)

    async def _ctl_seed(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        rng = random.Random(body.get("seed"))
        ids = seed_realistic(self, str(body["mailbox"]), int(body["count"]), rng)
        return web.json_response({"ids": ids}, status=201)


def _origin_allowed(key: SimKey, request: web.Request) -> bool:
    """Keys restricted to domains refuse a browser's foreign Origin (or Referer); a server
    that sends neither is fine."""
    origin = request.headers.get("Origin") or request.headers.get("Referer")
    if not origin or not key.allowed_domains:
        return True
    host = (urlsplit(origin).hostname or "").lower()
    return any(host == d or host.endswith(f".{d}") for d in key.allowed_domains)


def _raw_answer(status: int, body: Any) -> web.Response:
    """A status with any body: JSON for data, a page or plain words for a string."""
    if not isinstance(body, str):
        return web.json_response(body, status=status)
    kind = "text/html" if "<html" in body.lower() else "text/plain"
    return web.Response(status=status, text=body, content_type=kind)


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise _ApiError(400, "Invalid JSON body") from None
    if not isinstance(body, dict):
        raise _ApiError(400, "The body must be a JSON object")
    return body


async def _ids(request: web.Request) -> set[str]:
    """The ``ids`` of a bulk delete: a non-empty list of strings, or 400."""
    ids = (await _json_object(request)).get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) and i for i in ids):
        raise _ApiError(400, "Invalid input: ids must be a non-empty array of strings")
    return set(ids)


def single_body(message: dict[str, Any], rng: random.Random) -> str:
    """MinuteMail's one ``body`` for a corpus message: its HTML or its text (a coin decides
    when it has both)."""
    text, page = message.get("text_body"), message.get("html_body")
    if page and (not text or rng.random() < 0.5):
        return str(page)
    return str(text or "")


def realistic_mail(rng: random.Random) -> dict[str, Any]:
    """The keyword arguments of ``add_mail`` for a plausible mail."""
    message = realistic_message(rng)
    return {
        "sender": message["sender"],
        "subject": message["subject"],
        "body": single_body(message, rng),
        "attachments": message.get("attachments", ()),
    }


def seed_realistic(
    sim: MinuteMailSim, mailbox: SimMailbox | str, count: int, rng: random.Random
) -> list[str]:
    """Add ``count`` realistic mails, twenty seconds apart up to now, and return their ids."""
    start = sim.now() - timedelta(seconds=20 * count)
    return [
        sim.add_mail(mailbox, received_at=start + timedelta(seconds=20 * n), **realistic_mail(rng))
        for n in range(count)
    ]


@asynccontextmanager
async def demo(rng: random.Random) -> AsyncIterator[Callable[[], object]]:
    """MinuteMail for ``inboxbot demo``: started, seeded, announced in
    ``INBOXBOT_DEMO_MINUTEMAIL_*``; yields a function that delivers a new mail. The demo's
    mailbox lives a day, so the demo is not cut short by the real 60-minute limit."""
    async with MinuteMailSim() as sim:
        key = sim.add_key()
        box = sim.add_mailbox(key, minutes=24 * 60, alias="demo")
        seed_realistic(sim, box, 3, rng)
        os.environ.update(
            INBOXBOT_DEMO_MINUTEMAIL_URL=sim.base_url,
            INBOXBOT_DEMO_MINUTEMAIL_KEY=key.key,
            INBOXBOT_DEMO_MINUTEMAIL_MAILBOX=box.id,
        )
        yield lambda: sim.add_mail(box, **realistic_mail(rng))


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = MinuteMailSim(quota=args.quota, rate_limit=args.rate_limit)
    rng = random.Random(args.seed)
    key = sim.add_key()
    for _ in range(args.mailboxes):
        seed_realistic(sim, sim.add_mailbox(key, minutes=args.minutes), args.mails, rng)

    def banner() -> list[str]:
        boxes = [
            f"  {b.address} mailbox_id={b.id} expires={_iso(b.expires_at)}"
            for b in sim.mailboxes.values()
        ]
        return [f"MinuteMail simulator at {sim.base_url}  api_key={key.key}", *boxes]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated MinuteMail API.", port=8026)
    parser.add_argument("--mailboxes", type=int, default=1)
    parser.add_argument("--mails", type=int, default=10, help="mails seeded per mailbox")
    parser.add_argument("--minutes", type=float, default=60, help="lifetime of each mailbox")
    parser.add_argument("--quota", type=int, default=DEFAULT_QUOTA, help="API calls per user")
    parser.add_argument("--rate-limit", type=float, default=None, help="req/s per key")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
