"""A webhook receiver for tests and benchmarks: records every POST, fails on request.

It dedups nothing itself: ``keys`` counts each ``Idempotency-Key`` so a test can
see duplicates, which a real receiver would drop. With ``token`` set, a POST without
``Authorization: Bearer <token>`` is refused with 401, as long as the token stays set.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Failure:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    count: int = 1


class HookReceiver:
    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.keys: Counter[str] = Counter()
        self.failures: list[Failure] = []
        self.delay = 0.0
        self.token: str | None = None
        self.refused = 0  # POSTs answered 401 for a wrong or missing token
        self.runner: web.AppRunner | None = None
        self.url = ""

    def fail(self, status: int, *, count: int = 1, headers: dict[str, str] | None = None) -> None:
        """Answer the next ``count`` POSTs with ``status`` (and ``headers``)."""
        self.failures.append(Failure(status, headers or {}, count))

    def duplicates(self) -> int:
        return sum(n - 1 for n in self.keys.values())

    async def _hook(self, request: web.Request) -> web.Response:
        if self.delay:
            await asyncio.sleep(self.delay)
        wanted = f"Bearer {self.token}"
        if self.token is not None and request.headers.get("Authorization") != wanted:
            self.refused += 1
            return web.json_response({"error": "unauthorized"}, status=401)
        if self.failures:
            failure = self.failures[0]
            failure.count -= 1
            if failure.count <= 0:
                self.failures.pop(0)
            return web.json_response({"error": "failing on purpose"}, status=failure.status,
                                     headers=failure.headers)  # fmt: skip
        body = json.loads(await request.read())
        self.received.append(body)
        self.keys[request.headers.get("Idempotency-Key", "")] += 1
        return web.json_response({"ok": True})

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, host, port).start()
        self.url = f"http://{host}:{self.runner.addresses[0][1]}/hook"
        return self.url

    async def stop(self) -> None:
        if self.runner:
            await self.runner.cleanup()
