"""Prometheus metrics, in a registry of their own (one per daemon; tests make their own)."""

from __future__ import annotations

import bisect
import itertools
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from bot import __version__

FEED = ("account", "feed")
POLL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_LE = [*(repr(float(b)) for b in POLL_BUCKETS), "+Inf"]  # as prometheus_client spells them


class _Count:
    __slots__ = ("created", "value")

    def __init__(self) -> None:
        self.value, self.created = 0.0, time.time()

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class _Histogram:
    __slots__ = ("counts", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(POLL_BUCKETS) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(POLL_BUCKETS, value)] += 1
        self.sum += value


@dataclass(frozen=True, slots=True)
class FeedMetrics:
    """One feed's per-feed metrics: plain slots, read by ``_FeedCollector`` at a scrape (a
    prometheus_client child holds a lock and a dict per value: ~6 kB a feed, 60 MB at
    10,000 feeds). Updated from the event loop only, as the scrape is."""

    polls: _Count
    new_items: _Count
    poll_seconds: _Histogram
    last_poll: _Count


class _FeedCollector(Collector):
    """``inboxbot_polls``, ``inboxbot_new_items``, ``inboxbot_poll_duration_seconds`` and
    ``inboxbot_last_successful_poll_timestamp_seconds`` by account and feed."""

    def __init__(self, feeds: dict[tuple[str, str], FeedMetrics]) -> None:
        self.feeds = feeds

    def collect(self) -> Iterator[Metric]:
        polls = CounterMetricFamily("inboxbot_polls", "Polls of a feed", labels=FEED)
        new = CounterMetricFamily("inboxbot_new_items", "New items found", labels=FEED)
        seconds = HistogramMetricFamily(
            "inboxbot_poll_duration_seconds", "Time one poll took", labels=FEED
        )
        last = GaugeMetricFamily(
            "inboxbot_last_successful_poll_timestamp_seconds", "Last good poll", labels=FEED
        )
        for labels, m in self.feeds.items():
            polls.add_metric(labels, m.polls.value, created=m.polls.created)
            new.add_metric(labels, m.new_items.value, created=m.new_items.created)
            h = m.poll_seconds
            cumulative = list(zip(_LE, itertools.accumulate(h.counts), strict=True))
            seconds.add_metric(labels, cumulative, h.sum)
            last.add_metric(labels, m.last_poll.value)
        yield from (polls, new, seconds, last)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.poll_errors = Counter(
            "inboxbot_poll_errors", "Failed polls, by reason", (*FEED, "reason"), registry=r
        )
        self._feeds: dict[tuple[str, str], FeedMetrics] = {}
        r.register(_FeedCollector(self._feeds))
        self.matches = Counter(
            "inboxbot_rule_matches", "Items a rule matched", ("rule",), registry=r
        )
        self.notifications = Counter(
            "inboxbot_notifications",
            "Delivery attempts, by outcome",
            ("sink", "outcome"),
            registry=r,
        )
        self.actions = Counter(
            "inboxbot_actions", "Actions, by outcome", ("action", "outcome"), registry=r
        )
        self.noise = Counter(
            "inboxbot_noise_control",
            "Notifications noise control held (quiet hours), grouped, muted or limited",
            ("sink", "what"),
            registry=r,
        )
        self.outbox_depth = Gauge("inboxbot_outbox_depth", "Pending steps", registry=r)
        self.outbox_oldest = Gauge(
            "inboxbot_outbox_oldest_age_seconds", "Age of the oldest pending step", registry=r
        )
        self.reload_ok = Gauge(
            "inboxbot_config_last_reload_successful",
            "Whether the last configuration load (start or SIGHUP) was taken (1) or refused (0)",
            registry=r,
        )
        self.reload_time = Gauge(
            "inboxbot_config_last_reload_success_timestamp_seconds",
            "When a configuration was last taken",
            registry=r,
        )
        self.tasks = Gauge(
            "inboxbot_tasks", "asyncio tasks alive in the daemon (growth means a leak)", registry=r
        )
        build = Gauge("inboxbot_build_info", "The version", ("version", "python"), registry=r)
        build.labels(__version__, platform.python_version()).set(1)
        self._children: dict[tuple[str, ...], Counter] = {}

    def config_loaded(self, ok: bool, now: float) -> None:
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(now)

    def feed(self, account: str, feed: str) -> FeedMetrics:
        """The feed's metric children (one entry per configured feed, as in the registry)."""
        found = self._feeds.get((account, feed))
        if found is None:
            found = FeedMetrics(_Count(), _Count(), _Histogram(), _Count())
            self._feeds[(account, feed)] = found
        return found

    def notified(self, sink: str, outcome: str) -> Counter:
        """The ``inboxbot_notifications`` child of one sink and outcome."""
        key = ("notifications", sink, outcome)
        if key not in self._children:
            self._children[key] = self.notifications.labels(sink, outcome)
        return self._children[key]

    def matched(self, rule: str) -> Counter:
        """The ``inboxbot_rule_matches`` child of one rule."""
        key = ("matches", rule)
        if key not in self._children:
            self._children[key] = self.matches.labels(rule)
        return self._children[key]

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
