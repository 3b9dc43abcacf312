"""The daemon: one scheduled job per feed, a delivery job, and a bounded, orderly stop.

Stop order (arq's): a signal sets the stop event → the scheduler stops starting
jobs → running jobs get the rest of the stop bound to finish → what is left is
cancelled (the store has every finished step; the rest resumes at next start).
"""

from __future__ import annotations

import asyncio
import logging
import random
import signal
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from bot.errors import RemoteError
from bot.logs import fields
from bot.pipeline import Pipeline
from bot.sources import Feed

log = logging.getLogger("inboxbot.daemon")

DELIVER_EVERY = 1.0
PRUNE_EVERY = timedelta(hours=6)


class Daemon:
    def __init__(
        self, pipeline: Pipeline, feeds: list[Feed], *, stop_timeout: float = 10.0
    ) -> None:
        self.pipeline = pipeline
        self.feeds = feeds
        self.stop_timeout = stop_timeout
        self.stopping = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``), then stop within the bound."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        scheduler = self._schedule()
        scheduler.start()
        log.info("started", extra=fields(feeds=len(self.feeds), rules=len(self.pipeline.rules)))
        try:
            await self.stopping.wait()
        finally:
            # pause, not shutdown: APScheduler's shutdown cancels running jobs at once
            scheduler.pause()
            await asyncio.sleep(0.01)  # jobs submitted just before see the stop and return
            await self._drain()
            scheduler.shutdown(wait=False)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("stopped")

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping", extra=fields(bound_s=self.stop_timeout))
        self.stopping.set()

    def _schedule(self) -> AsyncIOScheduler:
        scheduler = AsyncIOScheduler(timezone="UTC")
        now = datetime.now().astimezone()
        for feed in self.feeds:
            every = feed.every.total_seconds()
            trigger = IntervalTrigger(seconds=every, jitter=min(every * 0.1, 30.0))
            first = now + timedelta(seconds=random.uniform(0, min(every, 5.0) / 5))
            scheduler.add_job(
                self._job, trigger, args=[self._poll, feed], id=feed.key, name=feed.key,
                max_instances=1, coalesce=True, next_run_time=first, misfire_grace_time=None,
            )  # fmt: skip
        scheduler.add_job(
            self._job, IntervalTrigger(seconds=DELIVER_EVERY), args=[self._flush, None],
            id="deliver", max_instances=1, coalesce=True, next_run_time=now,
        )  # fmt: skip
        scheduler.add_job(
            self._job, IntervalTrigger(seconds=PRUNE_EVERY.total_seconds()),
            args=[self._prune, None], id="prune", max_instances=1, coalesce=True,
        )  # fmt: skip
        return scheduler

    async def _job(self, work: Callable[[Feed | None], Awaitable[None]], feed: Feed | None) -> None:
        if self.stopping.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self.running.add(task)
        try:
            await work(feed)
        except RemoteError:
            pass  # logged once by Health when the failing starts
        except asyncio.CancelledError:
            # cancelled by the stop bound; the store has every finished step
            log.info("job cancelled", extra=fields(job=feed.key if feed else work.__name__))
        except Exception:
            log.exception("job failed", extra=fields(job=feed.key if feed else work.__name__))
        finally:
            self.running.discard(task)

    async def _poll(self, feed: Feed | None) -> None:
        assert feed is not None
        await self.pipeline.poll(feed)
        await self.pipeline.flush()

    async def _flush(self, _: Feed | None) -> None:
        await self.pipeline.flush()

    async def _prune(self, _: Feed | None) -> None:
        self.pipeline.prune()

    async def _drain(self) -> None:
        if not self.running:
            return
        _, pending = await asyncio.wait(set(self.running), timeout=max(0.0, self.stop_timeout - 1))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.warning("cancelled in-flight work", extra=fields(jobs=len(pending)))


async def once(pipeline: Pipeline, feeds: list[Feed]) -> int:
    """Poll every feed once, deliver and act; the number of feeds that failed."""
    results = await asyncio.gather(*(pipeline.poll(f) for f in feeds), return_exceptions=True)
    failed = 0
    for feed, result in zip(feeds, results, strict=True):
        if isinstance(result, BaseException):
            failed += 1
            if not isinstance(result, RemoteError):
                log.error("poll crashed", extra=fields(feed=feed.key, error=repr(result)))
    await pipeline.flush()
    return failed
