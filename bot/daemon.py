"""The daemon: a timer per feed, a delivery job, health, reload, and a bounded stop.

Stop order (arq's): a signal sets the stop event → the scheduler stops starting
jobs → running jobs get the rest of the stop bound to finish → what is left is
cancelled (the store has every finished step; the rest resumes at next start).
SIGHUP re-reads the configuration: a bad one is reported and the running one kept;
a good one is swapped in between jobs, so no in-flight work is lost.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path

from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.schedulers.base import STATE_RUNNING
from apscheduler.triggers.interval import IntervalTrigger

from bot.app import Loaded, Resources, build, close, load, start
from bot.errors import ConfigError, ConfigErrors, RemoteError
from bot.logs import fields
from bot.pipeline import Pipeline
from bot.push import Pushes
from bot.sentry import Scrubber, secret_values
from bot.sources import Feed
from bot.store import FORCED
from bot.systemd import Notifier
from bot.web import make_app, serve

log = logging.getLogger("inboxbot.daemon")

DELIVER_EVERY = 1.0
PRUNE_EVERY = timedelta(hours=6)  # at most; a shorter retention is pruned 4 times a period
PRUNE_FIRST = timedelta(minutes=1)  # after a start
RELOAD_DRAIN = 60.0  # how long a reload waits for running jobs
SPREAD_RATE = 20.0  # feeds per second whose first poll starts, when they are many
STUCK_ATTEMPTS = 8  # a delivery tried this often (hours of backoff) is past its schedule


class Daemon:
    def __init__(
        self,
        loaded: Loaded,
        res: Resources,
        *,
        config_path: Path | None = None,
        stop_timeout: float = 10.0,
        listen: str = "",
        notifier: Notifier | None = None,
        scrubber: Scrubber | None = None,
    ) -> None:
        self.loaded = loaded
        self.res = res
        self.pipeline: Pipeline = build(loaded, res)
        self.config_path = config_path
        self.stop_timeout = stop_timeout
        self.listen = listen
        self.notifier = notifier or Notifier({})
        self.scrubber = scrubber or Scrubber()
        self.stopping = asyncio.Event()
        self.running: set[asyncio.Task[None]] = set()
        self.scheduler = AsyncIOScheduler(timezone="UTC")
        self._timers: dict[str, asyncio.TimerHandle] = {}  # feed → its next poll
        self._polling: set[str] = set()  # feeds whose poll runs now
        self._again: set[str] = set()  # feeds woken by a push while their poll ran
        self.pushes = Pushes(self.wake)
        self.started = time.time()
        self.last_tick = time.monotonic()
        self.refused: list[str] = []  # the last reload's errors, while it is not fixed
        res.metrics.config_loaded(True, self.started)

    async def run(self) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``), then stop within the bound."""
        loop = asyncio.get_running_loop()
        handlers = {signal.SIGTERM: self.stop, signal.SIGINT: self.stop, signal.SIGHUP: self.hup}
        for sig, handler in handlers.items():
            loop.add_signal_handler(sig, handler)
        self.res.metrics.tasks.set_function(lambda: len(asyncio.all_tasks(loop)))
        web_runner = await self._serve_http()
        watchdog = asyncio.create_task(self.notifier.feed_watchdog())
        try:
            await start(self.pipeline)
            self._schedule()
            self.pushes.start(self.loaded.feeds(), self.pipeline.sources, self.pipeline.store)
            # READY=1 once the feeds are scheduled, before any job can run
            self.notifier.ready(self.summary())
            self.scheduler.start()
            log.info("started", extra=fields(status=self.summary()))
            await self.stopping.wait()
        finally:
            self.notifier.stopping()
            await self.pushes.stop()
            await self._wind_down()
            watchdog.cancel()
            if web_runner:
                await web_runner.cleanup()
            for sig in handlers:
                loop.remove_signal_handler(sig)
            await close(self.pipeline)
        log.info("stopped")

    def stop(self) -> None:
        if not self.stopping.is_set():
            log.info("stopping", extra=fields(bound_s=self.stop_timeout))
        self.stopping.set()

    def hup(self) -> None:
        asyncio.get_running_loop().create_task(self.reload())

    def summary(self) -> str:
        failing = len(self.pipeline.health.failing)
        feeds, rules = len(self.loaded.feeds()), len(self.loaded.rules)
        return f"{feeds} feeds, {rules} rules, {failing} failing"

    # --- reload ------------------------------------------------------------------------

    async def reload(self) -> None:
        if self.config_path is None or self.stopping.is_set():
            return
        self.notifier.reloading()
        try:
            loaded = load(self.config_path)
        except (ConfigError, ConfigErrors) as err:
            self.refused = str(err).splitlines()
            for line in self.refused:
                log.error("reload refused, configuration kept", extra=fields(error=line))
            self.res.metrics.config_loaded(False, time.time())
            self.notifier.ready(self.summary())
            return
        self.refused = []
        self.res.metrics.config_loaded(True, time.time())
        self.scheduler.pause()
        await self._wait_for_jobs(RELOAD_DRAIN)
        old = self.pipeline
        self.loaded, self.pipeline = loaded, build(loaded, self.res)
        self.scrubber.update(secret_values(loaded.config))
        self.pipeline.last_success.update(old.last_success)
        self.pipeline.health = old.health
        old.health.attach(self.pipeline.store)  # the new pipeline's fresh Health cleared it
        carry_over(old, self.pipeline)
        if loaded.config.retention != old.config.retention:  # else its turn would be put off
            self.scheduler.reschedule_job("prune", trigger=prune_trigger(loaded.config.retention))
        await self.pushes.stop()
        await close(old)
        await start(self.pipeline)
        self._schedule_feeds()
        self.pushes.start(loaded.feeds(), self.pipeline.sources, self.pipeline.store)
        self.scheduler.resume()
        self.notifier.ready(self.summary())
        log.info("reloaded", extra=fields(feeds=len(loaded.feeds()), rules=len(loaded.rules)))

    # --- scheduling --------------------------------------------------------------------

    def _schedule(self) -> None:
        self._schedule_feeds()
        now = datetime.now().astimezone()
        self.scheduler.add_job(
            self._job, IntervalTrigger(seconds=DELIVER_EVERY), args=[self._flush, None],
            id="deliver", max_instances=1, coalesce=True, next_run_time=now,
        )  # fmt: skip
        prune = prune_trigger(self.loaded.config.retention)
        first = now + min(PRUNE_FIRST, prune.interval)  # a daemon restarted often prunes too
        self.scheduler.add_job(
            self._job, prune, args=[self._prune, None], id="prune", max_instances=1,
            coalesce=True, next_run_time=first,
        )  # fmt: skip

    def _schedule_feeds(self) -> None:
        """One event-loop timer per feed (APScheduler's per-job bookkeeping costs more than
        a poll that finds nothing): the feeds' first polls spread evenly, SPREAD_RATE a second
        but over no more than their interval (10,000 feeds do not all poll at second 0; a few
        all poll at once), then each every ``every``. Polls
        wait while the scheduler is paused; a feed still polling skips its turn."""
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        feeds = self.loaded.feeds()
        now = asyncio.get_running_loop().time()
        spread = len(feeds) / SPREAD_RATE
        for n, feed in enumerate(feeds):
            self._arm(feed, now + min(spread, feed.every.total_seconds()) * n / len(feeds))

    def _arm(self, feed: Feed, at: float) -> None:
        self._timers[feed.key] = asyncio.get_running_loop().call_at(at, self._due, feed, at)

    def _due(self, feed: Feed, at: float) -> None:
        if self.stopping.is_set():
            return
        loop = asyncio.get_running_loop()
        every = feed.every.total_seconds()
        missed = int((loop.time() - at) // every)  # turns a busy loop let pass: coalesced
        self._arm(feed, at + every * (max(0, missed) + 1))
        if feed.key in self.pushes.connected:  # pushed: polled as a safety net only
            since = time.time() - self.pipeline.last_success.get(feed.key, 0.0)
            if since < self.pushes.interval(feed) - every / 2:
                return
        self._start_poll(feed)

    def wake(self, feed: Feed) -> None:
        """A push channel says ``feed`` may have something new: poll it now (once more
        after the poll running now, if one runs)."""
        if feed.key in self._polling:
            self._again.add(feed.key)
        else:
            self._start_poll(feed)

    def _start_poll(self, feed: Feed) -> None:
        if self.stopping.is_set() or self.scheduler.state != STATE_RUNNING:
            return
        if feed.key not in self._polling:
            self._polling.add(feed.key)
            loop = asyncio.get_running_loop()
            self.running.add(loop.create_task(self._job(self._poll, feed)))

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
        try:
            if await self.pipeline.poll(feed):
                await self.pipeline.flush()  # new items: deliver now (else the delivery job)
        finally:
            self._polling.discard(feed.key)
            if feed.key in self._again:
                self._again.discard(feed.key)
                self._start_poll(feed)

    async def _flush(self, _: Feed | None) -> None:
        self.last_tick = time.monotonic()
        await self.pipeline.flush()

    async def _prune(self, _: Feed | None) -> None:
        self.pipeline.prune()

    async def _wind_down(self) -> None:
        # pause, not shutdown: APScheduler's shutdown cancels running jobs at once
        if self.scheduler.running:
            self.scheduler.pause()
        await asyncio.sleep(0.01)  # jobs submitted just before see the stop and return
        pending = await self._wait_for_jobs(max(0.0, self.stop_timeout - 1))
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)
            log.warning("cancelled in-flight work", extra=fields(jobs=len(pending)))
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    async def _wait_for_jobs(self, bound: float) -> set[asyncio.Task[None]]:
        if not self.running:
            return set()
        _, pending = await asyncio.wait(set(self.running), timeout=bound)
        return pending

    # --- health ------------------------------------------------------------------------

    async def _serve_http(self) -> web.AppRunner | None:
        if not self.listen:
            return None
        app = make_app(self.health_problems, self.readiness_problems, self.res.metrics)
        return await serve(app, self.listen)

    def health_problems(self) -> list[str]:
        """The loop answers (or this would not run); the scheduler must run and tick."""
        if not self.scheduler.running:
            return ["scheduler not running"]
        idle = time.monotonic() - self.last_tick
        if idle > max(30.0, RELOAD_DRAIN + 5):
            return [f"delivery job has not run for {idle:.0f}s"]
        return []

    def readiness_problems(self) -> list[str]:
        now = time.time()
        problems = []
        for feed in self.loaded.feeds():
            allowed = 3 * self.pushes.interval(feed)
            last = self.pipeline.last_success.get(feed.key)
            if last is None and now - self.started > allowed:
                problems.append(f"feed {feed.key}: no successful poll since start")
            elif last is not None and now - last > allowed:
                problems.append(f"feed {feed.key}: last successful poll {now - last:.0f}s ago")
        for sink, attempts in self.pipeline.store.struggling_sinks(STUCK_ATTEMPTS).items():
            problems.append(f"sink {sink}: a notification failed {attempts} times")
        for sink, reason in sorted(self.pipeline.health.refused("sink ").items()):
            if sink in self.loaded.config.sinks:
                problems.append(f"sink {sink}: credentials refused: {reason}")
        if self.refused:
            more = f" (and {len(self.refused) - 1} more)" if len(self.refused) > 1 else ""
            problems.append(
                f"configuration reload refused, the previous one runs: {self.refused[0]}{more}"
            )
        return problems


def prune_trigger(retention: timedelta) -> IntervalTrigger:
    """Prune every quarter of ``retention`` (so nothing outlives it by more than that), at
    most every PRUNE_EVERY, at least a second apart."""
    return IntervalTrigger(seconds=max(1.0, min(PRUNE_EVERY, retention / 4).total_seconds()))


def carry_over(old: Pipeline, new: Pipeline) -> None:
    """What a reload keeps of the backoff: a failing feed whose account did not change keeps
    resting; one whose account changed is polled at its next turn, and deliveries waiting
    for a sink whose configuration changed are due now (the user probably fixed them)."""
    was, now = old.config, new.config
    changed = {name for name, account in now.accounts.items() if was.accounts.get(name) != account}
    for key, resting in old.polling.resting.items():
        if key.split("/")[0] in changed:
            log.info("backoff reset", extra=fields(feed=key, reason="configuration changed"))
        else:
            new.polling.resting[key] = resting
    for name, sink in now.sinks.items():
        if was.sinks.get(name) != sink and new.store.due_now(name, now=new.clock.time()):
            log.info("backoff reset", extra=fields(sink=name, reason="configuration changed"))


async def once(pipeline: Pipeline, feeds: list[Feed], *, grace: float = 0.0) -> int:
    """Poll every feed once, deliver and act; go on delivering while a retry falls due
    within ``grace`` seconds. The exit code: 1 when a feed failed or notifications are
    left queued or failed, else 0."""
    started = pipeline.clock.time()
    results = await asyncio.gather(*(pipeline.poll(f) for f in feeds), return_exceptions=True)
    failed = 0
    for feed, result in zip(feeds, results, strict=True):
        if isinstance(result, BaseException):
            failed += 1
            if not isinstance(result, RemoteError):
                log.error("poll crashed", extra=fields(feed=feed.key, error=repr(result)))
    await pipeline.flush()
    deadline = pipeline.clock.time() + grace
    while (due := next_delivery(pipeline)) is not None and due <= deadline:
        await asyncio.sleep(max(0.05, due - pipeline.clock.time()))
        await pipeline.flush()
    pending = pipeline.store.pending_steps("deliver")
    held = sum(1 for s in pending if s.reason and s.reason != FORCED)  # by noise control
    queued, refused = len(pending) - held, pipeline.store.deliveries_failed(since=started)
    if held:
        log.info("once: held for later", extra=fields(held=held))
    if failed or queued or refused:
        log.error("once: work left", extra=fields(feeds_failed=failed, queued=queued,
                                                  failed=refused))  # fmt: skip
    return 1 if failed or queued or refused else 0


def next_delivery(pipeline: Pipeline) -> float | None:
    """When the earliest sink's queue can go on: each sink waits for its oldest step."""
    heads: dict[str, float] = {}
    for step in pipeline.store.pending_steps("deliver"):
        if step.target in pipeline.sinks and step.reason in (None, FORCED):  # not held ones
            heads.setdefault(step.target, step.due_at)
    return min(heads.values(), default=None)
