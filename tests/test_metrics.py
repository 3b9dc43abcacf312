"""The per-feed metrics, kept in plain slots, expose as prometheus_client's would."""

from __future__ import annotations

from bot.metrics import Metrics


def test_feed_metrics_exposition() -> None:
    metrics = Metrics()
    feed = metrics.feed("inbox", "messages")
    assert metrics.feed("inbox", "messages") is feed
    feed.polls.inc()
    feed.polls.inc()
    feed.new_items.inc(3)
    for seconds in (0.05, 0.3, 200):
        feed.poll_seconds.observe(seconds)
    feed.last_poll.set(1700000000.0)
    text = metrics.exposition().decode()
    labels = 'account="inbox",feed="messages"'
    for line in [
        f"inboxbot_polls_total{{{labels}}} 2.0",
        f"inboxbot_new_items_total{{{labels}}} 3.0",
        f'inboxbot_poll_duration_seconds_bucket{{{labels},le="0.05"}} 1.0',
        f'inboxbot_poll_duration_seconds_bucket{{{labels},le="0.25"}} 1.0',
        f'inboxbot_poll_duration_seconds_bucket{{{labels},le="0.5"}} 2.0',
        f'inboxbot_poll_duration_seconds_bucket{{{labels},le="120.0"}} 2.0',
        f'inboxbot_poll_duration_seconds_bucket{{{labels},le="+Inf"}} 3.0',
        f"inboxbot_poll_duration_seconds_count{{{labels}}} 3.0",
        f"inboxbot_poll_duration_seconds_sum{{{labels}}} 200.35",
        f"inboxbot_last_successful_poll_timestamp_seconds{{{labels}}} 1.7e+09",
    ]:
        assert line + "\n" in text, line
