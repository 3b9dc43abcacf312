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
import signal
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, formataddr, make_msgid
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim.corpus import realistic_message

PAGE_SIZE = 30
MAX_BATCH_IDS = 200
ANON_RATE_LIMIT = 8.0
FAULT_KINDS = frozenset(
    {"latency", "status", "html", "truncated", "reset", "rate_limited", "quota", "expired"}
)
Attachment = tuple[str, str, bytes]  # filename, content type, content

_TAG = re.compile(r"<(script|style)\b.*?</\1\s*>|<[^>]*>", re.I | re.S)
_PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


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


def _bearer(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


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


@dataclass
class Fault:
    """A failure queued for the next ``remaining`` requests that match method and path."""

    kind: str
    remaining: int
    method: str | None = None
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, request: web.Request) -> bool:
        method_ok = self.method is None or self.method.upper() == request.method
        return method_ok and (self.path is None or self.path in request.path)


@dataclass(frozen=True)
class SimRequest:
    """One answered API request; ``status`` 0 means the connection was reset."""

    time: float
    method: str
    path: str
    query: str
    status: int
    token: str | None


class MailTdSim:
    """The simulated service: state, the aiohttp app and the control API tests drive."""

    def __init__(
        self,
        *,
        rate_limit: float = 4,
        quota: int | None = None,
        quota_code: str = "quota_exceeded",
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rate_limit = rate_limit
        self.quota = quota
        self.quota_code = quota_code  # "ops_quota_exceeded" for the older API
        self.clock = clock
        self.now = now
        self.down = False
        self.base_url = ""
        self.accounts: dict[str, SimAccount] = {}
        self.messages: dict[str, SimMessage] = {}
        self.requests: list[SimRequest] = []
        self.faults: list[Fault] = []
        self._tokens: dict[str, SimAccount] = {}
        self._by_address: dict[str, SimAccount] = {}
        self._windows: dict[str, deque[float]] = {}
        self._runner: web.AppRunner | None = None
        self.app = self.make_app()

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

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        method: str | None = None,
        path: str | None = None,
        **params: Any,
    ) -> None:
        """Queue ``kind`` for the next ``count`` matching requests; ``path`` is a substring.

        Params: ``latency`` takes ``seconds``; ``status`` takes ``status`` and ``error``;
        ``html`` takes ``status``; ``reset`` takes ``before_headers`` (see ``_reset``).
        """
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(FAULT_KINDS)}")
        self.faults.append(Fault(kind, count, method, path, params))

    def set_down(self, down: bool) -> None:
        self.down = down

    def max_requests_in_window(self, window: float = 1.0, token: str | None = None) -> int:
        """Most requests (accepted or refused) that arrived within any ``window`` seconds."""
        times = sorted(r.time for r in self.requests if token is None or r.token == token)
        best = start = 0
        for end, moment in enumerate(times):
            while moment - times[start] >= window:
                start += 1
            best = max(best, end - start + 1)
        return best

    # Lifecycle.

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{shown}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> MailTdSim:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # The HTTP application.

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        base = "/api/accounts/{account_id}/messages"
        app.router.add_get(base, self._list)
        app.router.add_put(base + "/read", self._mark_many)
        app.router.add_get(base + "/{id}", self._detail)
        app.router.add_delete(base + "/{id}", self._delete)
        app.router.add_get(base + "/{id}/source", self._source)
        app.router.add_get(base + "/{id}/attachments/{index}", self._attachment)
        app.router.add_put(base + "/{id}/read", self._mark_read)
        app.router.add_post("/_sim/accounts", self._ctl_account)
        app.router.add_post("/_sim/messages", self._ctl_message)
        app.router.add_post("/_sim/faults", self._ctl_fault)
        app.router.add_post("/_sim/down", self._ctl_down)
        app.router.add_post("/_sim/expire", self._ctl_expire)
        app.router.add_post("/_sim/seed", self._ctl_seed)
        app.router.add_get("/_sim/requests/max_window", self._ctl_max_window)
        return app

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            try:
                return await handler(request)
            except (KeyError, TypeError, ValueError) as err:
                body = {"error": "invalid_request", "message": str(err)}
                return web.json_response(body, status=400)
        arrived = self.clock()
        response = await self._respond(request, handler)
        status = 0 if response is None else response.status
        query, token = request.query_string, _bearer(request)
        self.requests.append(
            SimRequest(arrived, request.method, request.path, query, status, token)
        )
        return web.Response() if response is None else response  # a closed transport drops it

    async def _respond(self, request: web.Request, handler: Handler) -> web.StreamResponse | None:
        if self.down:
            return _error(503, "service_unavailable")
        fault = self._take_fault(request)
        if fault is not None and fault.kind == "latency":
            await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
            fault = None
        if fault is not None and fault.kind == "reset":
            await _reset(request, before_headers=bool(fault.params.get("before_headers")))
            return None
        if fault is not None and fault.kind != "truncated":
            return self._fault_response(fault)
        response = await self._serve(request, handler)
        return response if fault is None else _truncate(response)

    def _take_fault(self, request: web.Request) -> Fault | None:
        fault = next((f for f in self.faults if f.matches(request)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.remove(fault)
        return fault

    def _fault_response(self, fault: Fault) -> web.Response:
        status = int(fault.params.get("status", 502 if fault.kind == "html" else 500))
        if fault.kind == "html":
            page = _PROXY_PAGE.format(status=status, phrase=HTTPStatus(status).phrase)
            return web.Response(status=status, text=page, content_type="text/html")
        if fault.kind == "status":
            return _error(status, str(fault.params.get("error", _snake(HTTPStatus(status).phrase))))
        codes = {"rate_limited": "rate_limit_exceeded", "quota": self.quota_code}
        return _error(410, "gone") if fault.kind == "expired" else _error(429, codes[fault.kind])

    async def _serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = _bearer(request)
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
        now = self.clock()
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

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
        if account.token != _bearer(request):
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
        body = await _json_object(request)
        account = self.add_account(
            str(body["address"]), token=body.get("token"), account_id=body.get("id")
        )
        return web.json_response(_account_json(account), status=201)

    async def _ctl_message(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
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

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        self.inject(str(body.pop("kind")), **body)
        return web.json_response({"queued": len(self.faults)}, status=201)

    async def _ctl_down(self, request: web.Request) -> web.Response:
        self.set_down(bool((await _json_object(request))["down"]))
        return web.json_response({"down": self.down})

    async def _ctl_expire(self, request: web.Request) -> web.Response:
        self.expire(str((await _json_object(request))["id"]))
        return web.Response(status=204)

    async def _ctl_seed(self, request: web.Request) -> web.Response:
        body = await _json_object(request)
        rng = random.Random(body.get("seed"))
        ids = seed_realistic(self, str(body["account"]), int(body["count"]), rng)
        return web.json_response({"ids": ids}, status=201)

    async def _ctl_max_window(self, request: web.Request) -> web.Response:
        window = float(request.query.get("window", "1.0"))
        most = self.max_requests_in_window(window, request.query.get("token"))
        return web.json_response({"max": most, "requests": len(self.requests)})


def _account_json(account: SimAccount) -> dict[str, str]:
    return {"id": account.id, "address": account.address, "token": account.token}


async def _json_object(request: web.Request) -> dict[str, Any]:
    body = await request.json()
    if not isinstance(body, dict):
        raise TypeError("the body must be a JSON object")
    return body


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


async def _reset(request: web.Request, *, before_headers: bool) -> None:
    """Drop the connection; by default mid-body, because aiohttp clients silently retry an
    idempotent request once when the connection drops before the response head."""
    if not before_headers:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 64
        await response.prepare(request)
        await response.write(b'{"messages": [{"id": "')
    if request.transport is not None:
        request.transport.close()


def _truncate(response: web.StreamResponse) -> web.Response:
    body = response.body if isinstance(response, web.Response) else None
    full = body if isinstance(body, bytes) and body else b'{"messages": [{"id": "'
    return web.Response(body=full[: len(full) // 2], content_type="application/json")


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
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await sim.start(args.host, args.port)
    try:
        print(f"Mail.td simulator at {sim.base_url}", flush=True)
        for account in sim.accounts.values():
            print(f"  {account.address} id={account.id} token={account.token}", flush=True)
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a simulated Mail.td messages API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--accounts", type=int, default=1)
    parser.add_argument("--messages", type=int, default=40, help="mails seeded per account")
    parser.add_argument("--rate-limit", type=float, default=4, help="req/s per token (Pro: 10)")
    parser.add_argument("--quota", type=int, default=None, help="monthly ops per account")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the mails")
    args = parser.parse_args(argv)
    asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
