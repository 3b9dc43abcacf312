"""A simulator of the Mail.td messages API, served by aiohttp on a local port.

It models what the Mail.td docs describe for ``/api/accounts/{account_id}/messages…``:
one Bearer ``td_`` token per mailbox (401/403/404 errors), 30 messages per page newest
first, nullable bodies, soft delete, 410 for expired bodies, ``.eml`` source and attachment
downloads, single and batch mark-as-read, a Redis-style sliding-window rate limit (4 req/s
per token by default, 10 for Pro; 8 req/s per IP without a valid token, no Retry-After) and a
monthly ops quota. On top of that: queued faults, a "down" switch, a request log and an
unauthenticated ``/_sim/`` control API for other processes.

    python -m bot.sim.mailtd --port 8025 --accounts 2 --messages 40
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import html
import os
import random
import re
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim import base
from bot.sim.base import (
    SimServer,
    SlidingWindows,
    bearer_token,
    json_object,
    proxy_page,
    serve_until_stopped,
    simulator_parser,
)
from bot.sim.corpus import realistic_message

PAGE_SIZE = 30
MAX_BATCH_IDS = 200
ANON_RATE_LIMIT = 8.0
FAULT_KINDS = base.FAULT_KINDS | {"quota", "expired"}
Attachment = tuple[str, str, bytes]  # filename, content type, content

_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.I | re.S)


class _ApiError(Exception):
    def __init__(self, status: int, code: str) -> None:
        super().__init__(code)
        self.status = status
        self.code = code


def _error(status: int, code: str) -> web.Response:
    return web.json_response({"error": code}, status=status)


def _snake(phrase: str) -> str:
    return re.sub(r"\W+", "_", phrase.strip().lower())


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _preview(text_body: str | None, html_body: str | None) -> str:
    text = text_body
    if text is None:
        text = html.unescape(_TAG.sub(" ", html_body or ""))
    return " ".join(text.split())[:100]


@dataclass
class SimAccount:
    """A mailbox; limits left at None follow the simulator's ``rate_limit`` and ``quota``."""

    id: str
    address: str
    token: str
    rate_limit: float | None = None  # e.g. 10 for a Pro user
    ops_limit: int | None = None
    ops_used: int = 0
    ops_month: str = ""


@dataclass
class SimMessage:
    """One stored mail; ``source`` is its RFC 822 form, whose length is the API's ``size``."""

    id: str
    account_id: str
    sender: str
    from_name: str | None
    subject: str
    text_body: str | None
    html_body: str | None
    attachments: list[Attachment]
    created_at: datetime
    is_read: bool = False
    deleted: bool = False
    expired: bool = False
    source: bytes = b""

    @property
    def from_header(self) -> str:
        return f"{self.from_name} <{self.sender}>" if self.from_name else self.sender

    def summary(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "sender": self.sender,
            "from": self.from_header,
            "subject": self.subject,
            "preview_text": _preview(self.text_body, self.html_body),
            "size": len(self.source),
            "is_read": self.is_read,
            "created_at": _rfc3339(self.created_at),
        }

    def detail(self, address: str) -> dict[str, Any]:
        fields = self.summary()
        del fields["preview_text"], fields["is_read"]  # the detail has neither
        files = [
            {"index": n, "filename": name, "content_type": kind, "size": len(data)}
            for n, (name, kind, data) in enumerate(self.attachments)
        ]
        bodies = {"text_body": self.text_body, "html_body": self.html_body}
        return {**fields, "address": address, **bodies, "attachments": files}


def _build_source(msg: SimMessage, address: str) -> bytes:
    eml = EmailMessage()
    eml["From"] = formataddr((msg.from_name or "", msg.sender))
    eml["To"] = address
    eml["Subject"] = msg.subject
    eml["Date"] = format_datetime(msg.created_at.astimezone(UTC))
    eml["Message-ID"] = make_msgid(domain=msg.sender.rpartition("@")[2] or "mail.td")
    if msg.text_body is not None:
        eml.set_content(msg.text_body)
        if msg.html_body is not None:
            eml.add_alternative(msg.html_body, subtype="html")
    elif msg.html_body is not None:
        eml.set_content(msg.html_body, subtype="html")
    for filename, content_type, data in msg.attachments:
        maintype, _, subtype = content_type.partition(";")[0].strip().partition("/")
        eml.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return eml.as_bytes(policy=SMTP)  # CRLF line ends, as stored by mail servers


class MailTdSim(SimServer):
    """The simulated service: state, the aiohttp app and the control API tests drive.

    Fault params: ``latency`` takes ``seconds``; ``status`` takes ``status`` and ``error``;
    ``html`` takes ``status``; ``reset`` takes ``before_headers``; ``quota`` and ``expired``
    answer 429 and 410 as the real service does."""

    fault_kinds = FAULT_KINDS
    partial_body = b'{"messages": [{"id": "'
    window_filter = "token"

    def __init__(
        self,
        *,
        rate_limit: float = 4,
        quota: int | None = None,
        quota_code: str = "quota_exceeded",
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        super().__init__(clock)
        self.rate_limit = rate_limit
        self.quota = quota
        self.quota_code = quota_code  # "ops_quota_exceeded" for the older API
        self.now = now
        self.accounts: dict[str, SimAccount] = {}
        self.messages: dict[str, SimMessage] = {}
        self._tokens: dict[str, SimAccount] = {}
        self._by_address: dict[str, SimAccount] = {}
        self._windows = SlidingWindows()

    # State control, used by tests and the demo in the same event loop.

    def add_account(
        self, address: str, *, token: str | None = None, account_id: str | None = None
    ) -> SimAccount:
        if address.lower() in self._by_address:
            raise ValueError(f"address taken: {address}")
        account = SimAccount(
            id=account_id or str(uuid.uuid4()),
            address=address.lower(),
            token=token or f"td_{secrets.token_hex(20)}",
        )
        self.accounts[account.id] = account
        self._tokens[account.token] = account
        self._by_address[account.address] = account
        return account

    def revoke_token(self, account: SimAccount) -> None:
        self._tokens.pop(account.token, None)

    def add_message(
        self,
        account: SimAccount | str,
        *,
        sender: str,
        subject: str,
        text_body: str | None = None,
        html_body: str | None = None,
        from_name: str | None = None,
        attachments: Sequence[Attachment] = (),
        created_at: datetime | None = None,
        is_read: bool = False,
    ) -> str:
        owner = self._find_account(account if isinstance(account, str) else account.id)
        if owner is None:
            raise KeyError(f"no such account: {account}")
        msg = SimMessage(
            id=str(uuid.uuid4()),
            account_id=owner.id,
            sender=sender,
            from_name=from_name,
            subject=subject,
            text_body=text_body,
            html_body=html_body,
            attachments=list(attachments),
            created_at=created_at or self.now(),
            is_read=is_read,
        )
        msg.source = _build_source(msg, owner.address)
        self.messages[msg.id] = msg
        return msg.id

    def message(self, message_id: str) -> SimMessage:
        return self.messages[message_id]

    def expire(self, message_id: str) -> None:
        self.messages[message_id].expired = True

    def max_requests_in_window(self, window: float | None = None, token: str | None = None) -> int:
        """Most requests (accepted or refused) with ``token`` (or any) within ``window`` s."""
        return super().max_requests_in_window(window, token)

    # The HTTP application.

    def add_routes(self, router: web.UrlDispatcher) -> None:
        api = "/api/accounts/{account_id}/messages"
        router.add_get(api, self._list, name="messages.list")
        router.add_put(api + "/read", self._mark_many)
        router.add_get(api + "/{id}", self._detail, name="messages.detail")
        router.add_delete(api + "/{id}", self._delete)
        router.add_get(api + "/{id}/source", self._source)
        router.add_get(api + "/{id}/attachments/{index}", self._attachment)
        router.add_put(api + "/{id}/read", self._mark_read)
        router.add_post("/_sim/accounts", self._ctl_account)
        router.add_post("/_sim/messages", self._ctl_message)
        router.add_post("/_sim/expire", self._ctl_expire)
        router.add_post("/_sim/seed", self._ctl_seed)

    def down_response(self) -> web.Response:
        return _error(503, "service_unavailable")

    def fault_response(self, fault: base.Fault) -> web.Response:
        status = int(fault.params.get("status", 502 if fault.kind == "html" else 500))
        if fault.kind == "html":
            return proxy_page(status)
        if fault.kind == "status":
            return _error(status, str(fault.params.get("error", _snake(HTTPStatus(status).phrase))))
        codes = {"rate_limited": "rate_limit_exceeded", "quota": self.quota_code}
        return _error(410, "gone") if fault.kind == "expired" else _error(429, codes[fault.kind])

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = bearer_token(request)
        account = self._tokens.get(token) if token else None
        if account is None:
            if not self._admit(f"ip:{request.remote}", ANON_RATE_LIMIT):
                return _error(429, "rate_limit_exceeded")
            return _error(401, "invalid_or_expired_token" if token else "unauthorized")
        if not self._admit(f"token:{token}", account.rate_limit or self.rate_limit):
            return _error(429, "rate_limit_exceeded")
        if not self._charge_op(account):
            return _error(429, self.quota_code)
        try:
            return await handler(request)
        except _ApiError as err:
            return _error(err.status, err.code)
        except web.HTTPException as err:
            return _error(err.status, _snake(err.reason))

    def _admit(self, key: str, limit: float) -> bool:
        # Like the real Redis sliding window, only admitted requests enter the window: a
        # client that keeps hammering gets through again one second after its last success.
        return self._windows.admit(key, limit, self.clock())

    def _charge_op(self, account: SimAccount) -> bool:
        month = self.now().strftime("%Y-%m")
        if account.ops_month != month:
            account.ops_month, account.ops_used = month, 0
        limit = self.quota if account.ops_limit is None else account.ops_limit
        if limit is not None and account.ops_used >= limit:
            return False
        account.ops_used += 1
        return True

    def _find_account(self, key: str) -> SimAccount | None:
        return self.accounts.get(key) or self._by_address.get(key.lower())

    def _mailbox(self, request: web.Request) -> SimAccount:
        account = self._find_account(request.match_info["account_id"])
        if account is None:
            raise _ApiError(404, "not_found")
        if account.token != bearer_token(request):
            raise _ApiError(403, "forbidden")
        return account

    def _message(self, request: web.Request, *, readable: bool) -> SimMessage:
        account = self._mailbox(request)
        msg = self.messages.get(request.match_info["id"])
        if msg is None or msg.deleted or msg.account_id != account.id:
            raise _ApiError(404, "not_found")
        if readable and msg.expired:
            raise _ApiError(410, "gone")
        return msg

    def _visible(self, account: SimAccount) -> list[SimMessage]:
        found = [m for m in self.messages.values() if m.account_id == account.id and not m.deleted]
        return sorted(found, key=lambda m: (m.created_at, m.id), reverse=True)

    async def _list(self, request: web.Request) -> web.Response:
        account = self._mailbox(request)
        raw = request.query.get("page", "1")
        if not (raw.isascii() and raw.isdigit()) or int(raw) < 1:
            raise _ApiError(400, "invalid_page")
        page = int(raw)
        chunk = self._visible(account)[(page - 1) * PAGE_SIZE : page * PAGE_SIZE]
        return web.json_response({"messages": [m.summary() for m in chunk], "page": page})

    async def _detail(self, request: web.Request) -> web.Response:
        msg = self._message(request, readable=True)
        return web.json_response(msg.detail(self.accounts[msg.account_id].address))

    async def _source(self, request: web.Request) -> web.Response:
        msg = self._message(request, readable=True)
        disposition = 'attachment; filename="message.eml"'
        headers = {"Content-Disposition": disposition}
        return web.Response(body=msg.source, content_type="message/rfc822", headers=headers)

    async def _attachment(self, request: web.Request) -> web.Response:
        msg = self._message(request, readable=True)
        raw = request.match_info["index"]
        if not (raw.isascii() and raw.isdigit()) or int(raw) >= len(msg.attachments):
            raise _ApiError(400, "invalid_index")
        filename, content_type, data = msg.attachments[int(raw)]
        headers = {
            "Content-Type": content_type,
            "Content-Disposition": f'attachment; filename="{filename}"',
        }
        return web.Response(body=data, headers=headers)

    async def _mark_read(self, request: web.Request) -> web.Response:
        self._message(request, readable=False).is_read = True
        return web.Response(status=204)

    async def _mark_many(self, request: web.Request) -> web.Response:
        account = self._mailbox(request)
        ids = await _batch_ids(request)
        chosen = [m for m in self._visible(account) if ids is None or m.id in ids]
        changed = [m for m in chosen if not m.is_read]
        for msg in changed:
            msg.is_read = True
        return web.json_response({"updated": len(changed)})

    async def _delete(self, request: web.Request) -> web.Response:
        self._message(request, readable=False).deleted = True
        return web.Response(status=204)

    # The /_sim/ control API: no auth, not logged, for other processes.

    async def _ctl_account(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        account = self.add_account(
            str(body["address"]), token=body.get("token"), account_id=body.get("id")
        )
        return web.json_response(_account_json(account), status=201)

    async def _ctl_message(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        account = str(body.pop("account"))
        files = [
            (a["filename"], a["content_type"], base64.b64decode(a["content_base64"]))
            for a in body.pop("attachments", [])
        ]
        if "created_at" in body:
            body["created_at"] = datetime.fromisoformat(body["created_at"])
        return web.json_response(
            {"id": self.add_message(account, attachments=files, **body)}, status=201
        )

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        self.expire(str((await json_object(request))["id"]))
        return web.Response(status=204)

    async def _ctl_seed(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        rng = random.Random(body.get("seed"))
        ids = seed_realistic(self, str(body["account"]), int(body["count"]), rng)
        return web.json_response({"ids": ids}, status=201)


def _account_json(account: SimAccount) -> dict[str, str]:
    return {"id": account.id, "address": account.address, "token": account.token}


async def _batch_ids(request: web.Request) -> set[str] | None:
    """The ids a batch mark-as-read names, or None for ``{"all": true}``."""
    try:
        body = await request.json()
    except ValueError:
        raise _ApiError(400, "invalid_request") from None
    if isinstance(body, dict) and body.get("all") is True:
        return None
    ids = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise _ApiError(400, "invalid_request")
    if len(ids) > MAX_BATCH_IDS:
        raise _ApiError(400, "too_many_ids")
    return set(ids)


def seed_realistic(
    sim: MailTdSim, account: SimAccount | str, count: int, rng: random.Random
) -> list[str]:
    """Add ``count`` realistic mails, one a minute up to now, and return their ids."""
    start = sim.now() - timedelta(minutes=count)
    return [
        sim.add_message(account, created_at=start + timedelta(minutes=n), **realistic_message(rng))
        for n in range(count)
    ]


@asynccontextmanager
async def demo(rng: random.Random) -> AsyncIterator[Callable[[], object]]:
    """Mail.td for ``inboxbot demo``: started, seeded, announced in ``INBOXBOT_DEMO_MAILTD_*``
    (which ``examples/demo/inboxbot.yaml`` reads); yields a function that delivers a new mail."""
    async with MailTdSim() as sim:
        account = sim.add_account("demo@mail.td")
        seed_realistic(sim, account, 4, rng)
        os.environ.update(
            INBOXBOT_DEMO_MAILTD_URL=sim.base_url,
            INBOXBOT_DEMO_MAILTD_ACCOUNT=account.address,
            INBOXBOT_DEMO_MAILTD_TOKEN=account.token,
        )
        yield lambda: sim.add_message(account, **realistic_message(rng))


async def _serve_forever(args: argparse.Namespace) -> None:
    sim = MailTdSim(rate_limit=args.rate_limit, quota=args.quota)
    rng = random.Random(args.seed)
    for n in range(args.accounts):
        seed_realistic(sim, sim.add_account(f"demo{n + 1}@mail.td"), args.messages, rng)

    def banner() -> list[str]:
        accounts = [f"  {a.address} id={a.id} token={a.token}" for a in sim.accounts.values()]
        return [f"Mail.td simulator at {sim.base_url}", *accounts]

    await serve_until_stopped(sim, args.host, args.port, banner)


def main(argv: Sequence[str] | None = None) -> None:
    parser = simulator_parser("Serve a simulated Mail.td messages API.", port=8025)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--messages", type=int, default=40, help="mails seeded per account")
    parser.add_argument("--rate-limit", type=float, default=4, help="req/s per token (Pro: 10)")
    parser.add_argument("--quota", type=int, default=None, help="monthly ops per account")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
