"""Prometheus metrics, in a registry of their own (one per daemon; tests make their own)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

FEED = ("account", "feed")


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

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
