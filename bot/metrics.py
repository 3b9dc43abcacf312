"""Prometheus metrics, in a registry of their own (one per daemon; tests make their own)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot import __version__

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
        build = Gauge("inboxbot_build_info", "The version", ("version", "python"), registry=r)
        build.labels(__version__, platform.python_version()).set(1)

    def config_loaded(self, ok: bool, now: float) -> None:
        self.reload_ok.set(1 if ok else 0)
        if ok:
            self.reload_time.set(now)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
