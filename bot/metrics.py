"""Prometheus metrics, in a registry of their own (one per daemon; tests make their own)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FEED = ("account", "feed")


@dataclass(frozen=True)
class FeedMetrics:
    """One feed's children of the per-feed metrics, looked up once (``labels()`` takes a
    lock and builds a key at every call)."""

    polls: Counter
    new_items: Counter
    poll_seconds: Histogram
    last_poll: Gauge


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter("inboxbot_polls", "Polls of a feed", FEED, registry=r)
        self.poll_errors = Counter(
            "inboxbot_poll_errors", "Failed polls, by reason", (*FEED, "reason"), registry=r
        )
        self.new_items = Counter("inboxbot_new_items", "New items found", FEED, registry=r)
        self.poll_seconds = Histogram(
            "inboxbot_poll_duration_seconds", "Time one poll took", FEED, registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
        )  # fmt: skip
        self.last_poll = Gauge(
            "inboxbot_last_successful_poll_timestamp_seconds", "Last good poll", FEED, registry=r
        )
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
        self.outbox_depth = Gauge("inboxbot_outbox_depth", "Pending steps", registry=r)
        self.outbox_oldest = Gauge(
            "inboxbot_outbox_oldest_age_seconds", "Age of the oldest pending step", registry=r
        )

        self._feeds: dict[tuple[str, str], FeedMetrics] = {}
        self._children: dict[tuple[str, ...], Counter] = {}

    def feed(self, account: str, feed: str) -> FeedMetrics:
        """The feed's metric children (one entry per configured feed, as in the registry)."""
        found = self._feeds.get((account, feed))
        if found is None:
            labels = (account, feed)
            found = FeedMetrics(
                self.polls.labels(*labels),
                self.new_items.labels(*labels),
                self.poll_seconds.labels(*labels),
                self.last_poll.labels(*labels),
            )
            self._feeds[labels] = found
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
