"""The fault matrix's cells on the sink side: what each one does to the sink's simulator
(or its port) before a new mail arrives, and what that fault asks of the sink: a latency
before the answer, a wait after a refusal, or the moment the port opened again."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from proof.sinkfakes import TIMEOUT, Kind, proxy_answer

REFUSED = 4.0  # s the port refuses connections
WAIT = 6  # s of Retry-After asked for: past the first backoff (2.5–5 s), so a hint ignored shows


@dataclass
class Plan:
    """What a cell's fault asks of the sink: ``latency`` s before the service answers,
    a wait of ``wait`` s after the refusal or until the moment ``until``."""

    latency: float = 0.0
    wait: float | None = None
    until: float | None = None
    reopened: float | None = None  # when a closed port opened again
    refused: int = 429  # the status that asks for the wait


@dataclass(frozen=True)
class Cell:
    name: str
    apply: Callable[[Kind], Awaitable[Plan]]
    may_repeat: bool = False  # the first attempt may have reached the service
    needs_json: bool = False  # only for services that answer JSON (or "ok") on success


async def _timeout(kind: Kind) -> Plan:
    kind.fake.inject("latency", seconds=TIMEOUT + 1.5)
    return Plan(latency=TIMEOUT + 1.5)


def _queued(fault: str, **params: Any) -> Callable[[Kind], Awaitable[Plan]]:
    async def apply(kind: Kind) -> Plan:
        kind.fake.inject(fault, **params)
        return Plan()

    return apply


async def _service_error(kind: Kind) -> Plan:
    kind.fake.inject(kind.error[0], **kind.error[1])
    return Plan()


def _asking(status: int) -> Callable[[Kind], Awaitable[Plan]]:
    async def apply(kind: Kind) -> Plan:
        spec = proxy_answer(status, {"Retry-After": str(WAIT)})
        kind.fake.inject(spec[0], **spec[1])
        return Plan(wait=WAIT, refused=status)

    return apply


async def _date(kind: Kind) -> Plan:
    moment = math.ceil(time.time()) + WAIT + 2  # the request comes within a poll or two
    spec = proxy_answer(429, {"Retry-After": formatdate(moment, usegmt=True)})
    kind.fake.inject(spec[0], **spec[1])
    return Plan(until=moment)


async def _own(kind: Kind) -> Plan:
    assert kind.own is not None
    kind.fake.inject(kind.own[0], **kind.own[1])
    return Plan(wait=kind.own_wait)


async def _refused(kind: Kind) -> Plan:
    await kind.fake.stop()
    await asyncio.sleep(REFUSED)
    await kind.restart()
    return Plan(reopened=time.time())


CELLS = (
    Cell("timeout", _timeout, may_repeat=True),
    Cell("reset mid-body", _queued("reset"), may_repeat=True),
    Cell("reset before headers", _queued("reset", before_headers=True)),
    Cell("502 proxy page", _queued("html", status=502)),
    Cell("5xx service JSON", _service_error),
    Cell("429 Retry-After s", _asking(429)),
    Cell("503 Retry-After s", _asking(503)),
    Cell("429 Retry-After date", _date),
    Cell("own rate signal", _own),
    Cell("HTML with 200", _queued("html", status=200), needs_json=True),
    Cell("empty body", _queued("canned", status=200, body=""), needs_json=True),
    Cell("answer cut in half", _queued("truncated"), may_repeat=True),
    Cell("port refused", _refused),
)
