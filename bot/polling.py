"""The poll stage: ask a feed's source for what is new and store it.

A failing feed rests (longer after each failure, as long as the upstream asks): a poll
during its rest does nothing, so an upstream in trouble is not hammered. Sinks that show
feeds (Home Assistant sensors) are given each feed's state after its poll.
"""

from __future__ import annotations

import logging
import time as _time

from bot.errors import AuthError, PermanentError, RemoteError, TransientError
from bot.logs import fields
from bot.parts import Parts
from bot.sinks.base import FeedState
from bot.sources import Feed

log = logging.getLogger("inboxbot.pipeline.polling")

# An upstream that is down (5xx, refused, timeouts) is tried again at least every 15 s
# (or at the feed's every, if longer; or when its Retry-After says): four requests a minute
# spare it, and mail is found within seconds of its return, whatever the outage's length.
FEED_REST_CAP = 15.0
BROKEN_FEED_REST = 900.0  # refused credentials, a vanished mailbox: from 15 min up to 6 h
LAST_FIELDS = ("id", "subject", "sender", "created_at", "url")


def rest(failures: int, err: RemoteError, every: float) -> float:
    """How long a feed that failed ``failures`` times in a row waits before its next poll."""
    if isinstance(err, AuthError | PermanentError):
        return min(6 * 3600.0, BROKEN_FEED_REST * float(2 ** min(failures - 1, 5)))
    hint = err.retry_after if isinstance(err, TransientError) else None
    grown = every * float(2 ** min(failures - 1, 10) - 1)  # first retry: the next interval
    return max(hint or 0.0, min(FEED_REST_CAP, grown))


class Polling:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.resting: dict[str, tuple[int, float]] = {}  # feed → (failures in a row, until)
        self.last_success: dict[str, float] = {}  # feed → time of its last good poll
        self._shown: dict[tuple[str, str], FeedState] = {}  # (sink, feed) → state it shows
        self._showing = [sink for sink in parts.sinks.values() if sink.wants_feed_state]

    async def poll(self, feed: Feed) -> int | None:
        """Poll one feed and store its new items: how many were new, None when the feed
        rests; raises when the poll failed."""
        p = self.parts
        failures, until = self.resting.get(feed.key, (0, 0.0))
        if until and p.clock.time() < until:
            return None
        source = p.sources[feed.account]
        polled_before, cursor = p.store.cursor(feed.key)
        metrics = p.metrics.feed(feed.account, feed.name)
        metrics.polls.inc()
        started = _time.perf_counter()
        try:
            result = await source.poll(feed.name, cursor, lambda ids: p.store.known(feed.key, ids))
        except RemoteError as err:
            p.metrics.poll_errors.labels(feed.account, feed.name, type(err).__name__).inc()
            wait = rest(failures + 1, err, feed.every.total_seconds())
            self.resting[feed.key] = (failures + 1, p.clock.time() + wait)
            p.health.failed(feed.key, err, retry_at=p.clock.time() + wait)
            raise
        metrics.poll_seconds.observe(_time.perf_counter() - started)
        if failures:
            del self.resting[feed.key]
        now = self.last_success[feed.key] = p.clock.time()
        metrics.last_poll.set(now)
        skip = not polled_before and (feed.backlog or p.config.backlog) == "skip"
        added = p.store.record_poll(feed.key, result.items, result.cursor, now=now, skip=skip)
        p.health.ok(feed.key)
        if added:
            metrics.new_items.inc(added)
            log.info("polled", extra=fields(feed=feed.key, new=added, backlog_skipped=skip))
        return added

    async def show_state(self, feed: Feed) -> None:
        """Give sinks that show feeds (Home Assistant sensors) the feed's state when it
        changed."""
        showing = self._showing
        if not showing:
            return
        unread, last = self.parts.store.feed_summary(feed.key)
        summary = {k: v for k, v in last.to_json().items() if k in LAST_FIELDS} if last else None
        state = FeedState(feed.account, feed.name, unread, summary)
        for sink in showing:
            if self._shown.get((sink.name, feed.key)) == state:
                continue  # unchanged: the sink shows it already (and again after reconnecting)
            try:
                await sink.feed_state([state])
            except RemoteError as err:  # shown again after the next poll
                log.debug("feed state not shown", extra=fields(sink=sink.name, error=str(err)))
            else:
                self._shown[sink.name, feed.key] = state
