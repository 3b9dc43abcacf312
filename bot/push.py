"""Push channels: the feeds whose upstream tells when something is new (IMAP IDLE, the
Rocket.Chat realtime stream) get a ``Source.watch`` task beside their polls.

A push only wakes the feed's ordinary poll, so a pushed item goes the way a polled one
does (the seen ledger, rules, outbox, noise control) and the two are one item. While a
channel is connected the feed is also polled every ``SAFETY_NET`` (a push the channel
missed is found then); while it is not, at the feed's own ``every``. Each change is
logged once and kept in the state for ``inboxbot status``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta

from bot.logs import fields
from bot.sources import Feed, Source
from bot.store import Store

log = logging.getLogger("inboxbot.push")

SAFETY_NET = timedelta(minutes=5)  # the poll of a connected feed, for what a push missed


class Pushes:
    def __init__(self, wake: Callable[[Feed], None]) -> None:
        self.wake = wake
        self.connected: set[str] = set()  # feed keys whose channel is up
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, feeds: Sequence[Feed], sources: Mapping[str, Source], store: Store) -> None:
        """A watch task for each feed whose source pushes."""
        store.clear_pushes()
        for feed in feeds:
            source = sources.get(feed.account)
            if source is not None and source.pushes(feed.name):
                task = asyncio.create_task(self._watch(source, feed, store))
                self._tasks[feed.key] = task

    async def stop(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._tasks.clear()
        self.connected.clear()

    def interval(self, feed: Feed) -> float:
        """How often the feed is polled now: its ``every``, or the safety net when pushed."""
        every = feed.every.total_seconds()
        if feed.key in self.connected:
            return max(every, SAFETY_NET.total_seconds())
        return every

    async def _watch(self, source: Source, feed: Feed, store: Store) -> None:
        def report(up: bool, what: str) -> None:
            was = feed.key in self.connected
            (self.connected.add if up else self.connected.discard)(feed.key)
            if store.record_push(feed.key, up, what, now=time.time()):
                level = logging.INFO if up or not was else logging.WARNING
                log.log(level, "push connected" if up else "push not connected",
                        extra=fields(feed=feed.key, what=what))  # fmt: skip

        try:
            await source.watch(feed.name, lambda: self.wake(feed), report)
        except asyncio.CancelledError:
            raise
        except Exception:  # a watch must not raise; if one does, the feed is polled
            log.exception("push channel failed", extra=fields(feed=feed.key))
            report(False, "the push channel failed; polling")
