"""The fault matrix's sink side: each HTTP sink kind with its simulator started, the
configuration that points the sink at it, what the simulator accepted (as text, to find a
mail's notification in), and that service's own 5xx answer and rate signal.

Every simulator here also knows ``canned``: the next matching request is answered with
``status``, ``body``, ``content_type`` and ``headers`` as given (a 429 with an HTTP-date
``Retry-After``, an empty 200…), without the service seeing the request."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from aiohttp import web
from aiohttp.typedefs import Handler

from bot.sim.base import FAULT_KINDS, Fault, SimServer, proxy_page
from bot.sim.discord import DiscordSim
from bot.sim.gotify import GotifySim
from bot.sim.ntfy import NtfySim
from bot.sim.rocketchat import RocketChatSim
from bot.sim.slack import SlackSim
from bot.sim.telegram import TelegramSim
from proof.matrixfake import MatrixFake

TIMEOUT = 2.0  # the sinks' `timeout:` in the matrix
RC_PERIOD = 6.0  # the Rocket.Chat simulator's rate window (the server's is 60 s)
NTFY_REFILL = 5.0  # ntfy's bucket gains one request every 5 s and sends no Retry-After


class Canned(SimServer):
    """Adds the ``canned`` fault to a simulator (first in the bases, before the sim)."""

    fault_kinds: ClassVar[frozenset[str]] = FAULT_KINDS | {"canned"}

    async def respond(self, request: web.Request, handler: Handler) -> web.StreamResponse | None:
        # The body first, as a service does before it is slow: a ``latency`` past the
        # client's timeout then stores what the client gave up on (a possible duplicate).
        await request.read()
        return await super().respond(request, handler)

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        if fault.kind != "canned":
            return super().fault_response(fault)
        p = fault.params
        return web.Response(status=int(p.get("status", 200)), body=str(p.get("body", "")).encode(),
                            content_type=str(p.get("content_type", "application/json")),
                            headers=dict(p.get("headers") or {}))  # fmt: skip


class WebhookFake(Canned):
    """A webhook receiver as a simulator: ``POST /hook`` stores the JSON body and its
    ``Idempotency-Key``; ``status`` answers ``{"error": …}`` with that status."""

    def __init__(self) -> None:
        super().__init__(time.time)
        self.received: list[tuple[str, dict[str, Any]]] = []  # (key, body)

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_post("/hook", self._hook)

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        if fault.kind in ("status", "rate_limited"):
            status = 429 if fault.kind == "rate_limited" else int(fault.params.get("status", 503))
            hint = fault.params.get("retry_after")
            headers = {"Retry-After": str(hint)} if hint is not None else {}
            return web.json_response({"error": "failing"}, status=status, headers=headers)
        return super().fault_response(fault)

    async def _hook(self, request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        self.received.append((request.headers.get("Idempotency-Key", ""), body))
        return web.json_response({"ok": True})


class NtfyFake(Canned, NtfySim):
    pass


class GotifyFake(Canned, GotifySim):
    pass


class TelegramFake(Canned, TelegramSim):
    pass


class DiscordFake(Canned, DiscordSim):
    pass


class SlackFake(Canned, SlackSim):
    pass


class RocketChatFake(Canned, RocketChatSim):  # type: ignore[misc]  # its answers are Responses
    pass


class MatrixCanned(Canned, MatrixFake):
    pass


Spec = tuple[str, dict[str, Any]]  # a fault: kind and params


@dataclass
class Kind:
    """One sink kind in the matrix, its simulator started."""

    name: str  # as in the Result row: "ntfy"
    fake: SimServer
    sink: str  # the sink's YAML mapping, in flow style
    texts: Callable[[], list[str]]  # what the service accepted, one text per message
    error: Spec  # the service's own 5xx answer
    own: Spec | None  # the service's own rate signal, and the wait it asks for
    own_wait: float = 6.0
    answers_json: bool = True  # a 200 that is no answer of the service's (HTML, empty)
    port: int = 0

    async def restart(self) -> None:
        await self.fake.start(port=self.port)


def proxy_answer(status: int, headers: dict[str, str]) -> Spec:
    """A reverse proxy's error page (nginx, Cloudflare) with ``headers``."""
    page = proxy_page(status)
    assert page.text is not None
    return "canned", {"status": status, "body": page.text, "content_type": "text/html",
                      "headers": headers}  # fmt: skip


def _common(kind: str, **extra: Any) -> str:
    keys = {"type": kind, "timeout": f"{TIMEOUT:g}s", "rate": "600/min", **extra}
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in keys.items()) + "}"


async def _started(kind: Kind) -> Kind:
    kind.port = int(kind.fake.base_url.rpartition(":")[2])
    return kind


async def webhook() -> Kind:
    fake = WebhookFake()
    url = await fake.start()
    return await _started(Kind("webhook", fake, _common("webhook", url=url + "/hook"),
                               lambda: [str(b.get("title")) for _, b in fake.received],
                               ("status", {"status": 503}), None, answers_json=False))  # fmt: skip


async def ntfy() -> Kind:
    fake = NtfyFake()
    url = await fake.start()
    return await _started(Kind("ntfy", fake, _common("ntfy", url=url + "/inbox-faults"),
                               lambda: [str(m.get("title")) for m in fake.messages()],
                               ("status", {"status": 500}), ("rate_limited", {}),
                               own_wait=NTFY_REFILL))  # fmt: skip


async def gotify() -> Kind:
    fake = GotifyFake()
    url = await fake.start()
    app = fake.add_app("inboxbot")
    return await _started(Kind("Gotify", fake, _common("gotify", url=url, token=app.token),
                               lambda: [str(m.get("title")) for m in fake.messages()],
                               ("status", {"status": 500}),
                               ("rate_limited", {"retry_after": 6})))  # fmt: skip


async def telegram() -> Kind:
    fake = TelegramFake()
    url = await fake.start()
    token = fake.add_bot()
    fake.add_chat("123456789")
    sink = _common("telegram", base_url=url, token=token, chat_id="123456789")
    return await _started(Kind("Telegram", fake, sink, lambda: [m.text for m in fake.messages],
                               ("status", {"status": 502, "description": "Bad Gateway"}),
                               ("rate_limited", {"retry_after": 6})))  # fmt: skip


async def discord() -> Kind:
    fake = DiscordFake()
    await fake.start()
    hook = fake.add_webhook()
    return await _started(Kind("Discord", fake, _common("discord", url=fake.url(hook)),
                               lambda: [m.content for m in fake.messages],
                               ("status", {"status": 500, "message": "500: Internal Server Error"}),
                               ("rate_limited", {"retry_after": 6.0})))  # fmt: skip


async def slack() -> Kind:
    fake = SlackFake()
    await fake.start()
    hook = fake.add_webhook()
    return await _started(Kind("Slack", fake, _common("slack", url=fake.url(hook)),
                               lambda: [m.text for m in fake.messages],
                               ("status", {"status": 500, "body": "rollup_error"}),
                               ("rate_limited", {"retry_after": 6})))  # fmt: skip


async def rocketchat() -> Kind:
    fake = RocketChatFake(rate_period=RC_PERIOD, realtime=False)
    url = await fake.start()
    bot, _ = fake.add_user("inboxbot"), fake.add_user("alice")
    sink = _common("rocketchat", base_url=url, user_id=bot.id, token=bot.token, channel="@alice")
    return await _started(Kind("Rocket.Chat", fake, sink,
                               lambda: [str(b.get("text")) for b in fake.posted],
                               ("status", {"status": 500, "error": "Internal server error"}),
                               ("rate_limited", {}), own_wait=RC_PERIOD))  # fmt: skip


async def matrix() -> Kind:
    fake = MatrixCanned()
    url = await fake.start()
    token = fake.add_user("@inboxbot:example.org")
    room = fake.add_room("!inbox:example.org", "@inboxbot:example.org")
    sink = _common("matrix", homeserver=url, token=token, room=room)
    return await _started(Kind("Matrix", fake, sink,
                               lambda: [str(e.content.get("body")) for e in fake.events],
                               ("status", {"status": 500}),
                               ("rate_limited", {"retry_after_ms": 6500}),
                               own_wait=6.5))  # fmt: skip


KINDS: dict[str, Callable[[], Awaitable[Kind]]] = {
    "webhook": webhook, "ntfy": ntfy, "gotify": gotify, "telegram": telegram,
    "discord": discord, "slack": slack, "rocketchat": rocketchat, "matrix": matrix,
}  # fmt: skip
