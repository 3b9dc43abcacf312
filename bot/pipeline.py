"""The pipeline: poll → store → plan → outbox → deliver → act, one module a stage.

- ``bot.polling``: asks a feed's source for what is new and stores it; rests failing feeds.
- ``bot.planning``: turns each new item into its rendered steps, saved in the outbox.
- ``bot.noise``: decides when, and as what, each planned notification goes out: now,
  grouped, held (quiet hours, limits, deferring mutes) for one digest, or muted.
- ``bot.delivery``: sends each due notification of the outbox to its sink.
- ``bot.acting``: runs the due actions on their sources.
- ``bot.alerts``: tells ``alerts_to`` what is failing and when it is over.

Only the stages call sources and sinks, and each reads what the previous one stored: a
crash anywhere resumes from the store (items not planned yet are planned, steps not done
yet are retried). ``Pipeline`` builds the stages and runs them in this order; each is
given the same ``Parts`` (the pipeline itself) and passes its data on through the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from bot.acting import Acting
from bot.alerts import alert
from bot.delivery import IN_FLIGHT, Delivery, backoff, sink_rate
from bot.item import Item
from bot.noise import Hold
from bot.parts import Clock, Parts
from bot.planning import Planning
from bot.polling import Polling
from bot.sources import Feed
from bot.store import NewStep

__all__ = ["IN_FLIGHT", "Clock", "Pipeline", "backoff", "sink_rate"]

DEDUP_HORIZON = timedelta(days=365)


@dataclass
class Pipeline(Parts):
    """The stages, built on the pipeline's own parts, run in the order above."""

    def __post_init__(self) -> None:
        self.health.attach(self.store)  # what fails is recorded for `inboxbot status`
        self.polling = Polling(self)
        hold = Hold(self.store, self.metrics, lambda: self.rules)
        self.planning = Planning(self, hold)
        self.delivery = Delivery(self, hold)
        self.acting = Acting(self)

    @property
    def last_success(self) -> dict[str, float]:
        """Feed → time of its last good poll."""
        return self.polling.last_success

    async def poll(self, feed: Feed) -> int:
        """Poll one feed, store and plan its new items; raises when the poll failed.
        A feed resting after failures is not polled (0 new items)."""
        added = await self.polling.poll(feed)
        if added is None:
            return 0
        await self.planning.plan_polled(feed, added)
        await self.polling.show_state(feed)
        return added

    async def plan_new(self, feed: Feed) -> None:
        await self.planning.plan_new(feed)

    async def plan_item(self, item: Item) -> tuple[Item, list[NewStep]] | None:
        return await self.planning.plan_item(item)

    async def show_state(self, feed: Feed) -> None:
        await self.polling.show_state(feed)

    async def deliver(self) -> None:
        await self.delivery.deliver()

    async def act(self) -> None:
        await self.acting.act()

    async def alert(self) -> None:
        await alert(self)

    async def flush(self) -> None:
        """Deliver what is due, then act on what was delivered; with an empty outbox (the
        usual case) one query."""
        depth, oldest = self.store.outbox()
        if depth:
            await self.deliver()
            await self.act()
        await self.alert()
        if depth:
            depth, oldest = self.store.outbox()
        self.metrics.outbox_depth.set(depth)
        self.metrics.outbox_oldest.set(self.clock.time() - oldest if oldest else 0.0)

    def prune(self) -> None:
        now = self.clock.time()
        self.store.prune(before=now - self.config.retention.total_seconds(),
                         forget_before=now - DEDUP_HORIZON.total_seconds())  # fmt: skip
