"""The deliver stage: send each due notification of the outbox to its sink.

Each sink in its own order and within its rate, sinks side by side. A notification that
cannot go out now is tried again later (``retry_delay``); one refused for good is
recorded as failed and cancels the actions of its rule behind it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import defaultdict, deque

from bot.config import parse_rate
from bot.errors import AuthError, GoneError, PermanentError, RenderError, TransientError
from bot.http import RateLimiter
from bot.item import File
from bot.logs import fields
from bot.noise import Hold, Unit
from bot.parts import Parts
from bot.planning import rerender
from bot.sinks import Notification, Sink
from bot.store import FAILED, StepRecord

log = logging.getLogger("inboxbot.pipeline.delivery")

BACKOFF_BASE = 5.0
BACKOFF_CAP = 10.0  # a target that comes back gets its queue within 10 s, whatever the outage
AUTH_RETRY_CAP = 120.0  # refused credentials: tried again within 2 min, in case they were fixed
IN_FLIGHT = 8  # notifications in flight at once per sink (each account's one at a time)


def backoff(attempts: int, hint: float | None) -> float:
    """Exponential with jitter; a remote's own hint wins when it asks for longer."""
    delay: float = min(BACKOFF_CAP, BACKOFF_BASE * 2 ** min(attempts, 20))
    delay *= random.uniform(0.5, 1.0)
    return max(delay, hint) if hint is not None else delay


def retry_delay(attempts: int, err: TransientError | AuthError) -> float:
    """When a refused step is tried again: refused credentials are tried again within
    ``AUTH_RETRY_CAP`` (a reload with changed ones makes it due at once)."""
    if isinstance(err, AuthError):
        return min(AUTH_RETRY_CAP, backoff(attempts, None))
    return backoff(attempts, err.retry_after)


def sink_rate(sink: Sink) -> tuple[int, float] | None:
    """The sink's ``rate:``, else the limit its service documents."""
    if sink.config.rate:
        return sink.config.rate
    return parse_rate(sink.default_rate) if sink.default_rate else None


class Delivery:
    def __init__(self, parts: Parts, hold: Hold) -> None:
        self.parts = parts
        self.hold = hold  # what must wait is held there; the rest comes back as units
        self._delivering = asyncio.Lock()
        self._sink_limits = {
            name: RateLimiter(*rate, margin=0.0)
            for name, sink in parts.sinks.items()
            if (rate := sink_rate(sink))
        }

    async def deliver(self) -> None:
        """Send every due notification, each sink in its own order, sinks side by side."""
        async with self._delivering:
            queues: dict[str, list[StepRecord]] = defaultdict(list)
            for step in self.parts.store.pending_steps("deliver"):
                queues[step.target].append(step)
            await asyncio.gather(*(self._deliver_to(name, steps) for name, steps in queues.items()))

    async def _deliver_to(self, name: str, steps: list[StepRecord]) -> None:
        """A sink's notifications, up to IN_FLIGHT at once: each account's in their order,
        accounts side by side. A failed send ends the round for the sink."""
        sink = self.parts.sinks.get(name)
        if sink is None:
            self.parts.health.failed(
                f"sink {name}",
                PermanentError("sink is no longer configured; its notifications wait"),
            )
            return
        by_account: dict[str, list[Unit]] = defaultdict(list)
        for unit in self.hold.admit(sink, steps, self.parts.clock.time()):
            by_account[unit.account or str(unit.steps[0].batch)].append(unit)
        queues, failed = deque(by_account.values()), [False]

        async def worker() -> None:
            while queues and not failed[0]:
                failed[0] = not await self._deliver_queue(sink, queues.popleft(), failed)

        await asyncio.gather(*(worker() for _ in range(min(IN_FLIGHT, len(queues)))))

    async def _deliver_queue(self, sink: Sink, units: list[Unit], failed: list[bool]) -> bool:
        """One account's notifications to ``sink`` in order; False when a send failed."""
        for unit in units:
            if failed[0] or unit.due_at > self.parts.clock.time():
                return True  # an earlier notification waits for its retry: keep the order
            if sink.name in self._sink_limits:
                await self._sink_limits[sink.name].wait()
            if not await self._send(sink, unit):
                return False
        return True

    async def _send(self, sink: Sink, unit: Unit) -> bool:
        """Send one due unit (a notification, or a digest of several) to ``sink`` and record
        how it went; False when it is to be tried again (the sink's round ends), True when
        it is done or failed for good."""
        p, key = self.parts, f"sink {sink.name}"
        unit = self._rendered(sink, unit)
        if not unit.steps:
            return True
        ids = [s.id for s in unit.steps]
        try:
            notification, files = await self._notification(sink, unit)
            await sink.send(notification, files)
        except (TransientError, AuthError) as err:
            p.metrics.notified(sink.name, "retry").inc()
            p.health.failed(key, err)
            due = p.clock.time() + retry_delay(unit.steps[0].attempts, err)
            for sid in ids:
                p.store.retry_step(sid, due_at=due, error=str(err))
            return False
        except PermanentError as err:
            p.metrics.notified(sink.name, "failed").inc()
            log.error("delivery failed", extra=fields(
                sink=sink.name, step=ids[0], rule=unit.steps[0].rule, error=str(err)))  # fmt: skip
            for s in unit.steps:
                p.store.finish_step(s.id, now=p.clock.time(), status=FAILED, error=str(err))
                p.store.cancel_actions(s.feed, s.item_id, s.rule, now=p.clock.time())
            return True
        p.store.finish_steps(ids, now=p.clock.time())
        p.metrics.notified(sink.name, "delivered").inc()
        p.health.ok(key)
        said = {"sink": sink.name, "rule": notification.rule, "item": notification.item_id}
        log.info("delivered", extra=fields(**said, **({"items": len(ids)} if len(ids) > 1 else {})))
        return True

    def _rendered(self, sink: Sink, unit: Unit) -> Unit:
        """The unit's steps kept unrendered rendered now; those that still fail are failed."""
        p, kept = self.parts, []
        for step in unit.steps:
            try:
                kept.append(rerender(p, step))
            except RenderError as err:
                log.error("render failed",
                          extra=fields(sink=sink.name, step=step.id, error=str(err)))  # fmt: skip
                p.store.finish_step(step.id, now=p.clock.time(), status=FAILED, error=str(err))
        return Unit(tuple(kept))

    async def _notification(self, sink: Sink, unit: Unit) -> tuple[Notification, list[File]]:
        if len(unit.steps) > 1:
            return self.hold.notification(sink, unit, self.parts.clock.time()), []
        step = unit.steps[0]
        files = await self._files(step, sink.max_file_size) if sink.max_file_size else []
        return Notification(**step.payload), files

    async def _files(self, step: StepRecord, max_size: int) -> list[File]:
        """The item's attachments when the rule asks (``options: {attach: true}``); an
        upstream that no longer has them leaves them out."""
        if not step.payload["options"].get("attach"):
            return []
        item = self.parts.store.item(step.feed, step.item_id)
        source = self.parts.sources.get(item.account) if item else None
        if item is None or source is None:
            return []
        try:
            item = await source.complete(item)
            return await source.files(item, max_size)
        except GoneError as err:
            log.warning("attachments gone", extra=fields(item=step.item_id, error=str(err)))
            return []
