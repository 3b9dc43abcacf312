"""What the simulator and client tests share: clocks for the simulators, and JSON calls
over HTTP."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp


class FakeClock:
    """Seconds the test moves by hand, so rate-limit tests need no sleeping."""

    def __init__(self, start: float = 1000.0) -> None:
        self.value = start

    def __call__(self) -> float:
        return self.value


class TickingClock:
    """Real time, but a millisecond later at every reading: no two events share a timestamp
    (and none lands in the millisecond of a later request's default ``latest``)."""

    def __init__(self) -> None:
        self.value = 0.0

    def __call__(self) -> float:
        self.value = max(time.time(), self.value + 0.001)
        return self.value


def bearer_session(base_url: str, token: str) -> aiohttp.ClientSession:
    """A session that sends ``token`` as a Bearer token with every request."""
    return aiohttp.ClientSession(base_url, headers={"Authorization": f"Bearer {token}"})


async def call(
    session: aiohttp.ClientSession, method: str, path: str, **kwargs: Any
) -> tuple[int, Any]:
    """The status and the JSON body (None when empty) of one request."""
    async with session.request(method, path, **kwargs) as resp:
        body = await resp.read()
        return resp.status, json.loads(body) if body else None


async def statuses(session: aiohttp.ClientSession, path: str, times: int = 1) -> list[int]:
    """The statuses of ``times`` GETs of ``path`` in a row."""
    found = []
    for _ in range(times):
        async with session.get(path) as resp:
            found.append(resp.status)
    return found
