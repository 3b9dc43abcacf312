"""What the targets' tests share: a notification as rendered for a sink, one feed, and a
deliver round hours later."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.digest import build
from bot.pipeline import Pipeline
from bot.sinks import Notification, Sink
from bot.sources import Feed

FEED = Feed("inbox", "messages", timedelta(seconds=1), None)


async def deliver_round(pipe: Pipeline, hours: int) -> None:
    """Poll and deliver with the clock ``hours`` × 2 h ahead: past any backoff (capped at
    1 h), so each round tries every pending notification again. ``hours`` ≥ 1: steps are
    planned at the real time, which a frozen clock of now would not reach."""
    later = time.time() + hours * 7200
    pipe.clock.time = lambda: later  # type: ignore[method-assign]
    await pipe.poll(FEED)
    await pipe.flush()


def rendered(sink: Sink, prefix: str, content: str, **changes: Any) -> Notification:
    """A notification as the renderer makes one for ``sink``: the template's ``prefix``
    as written, then item ``content`` escaped by the sink (unless ``message`` is given)."""
    fields: dict[str, Any] = {
        "id": "n1", "rule": "r", "account": "inbox", "feed": "messages", "kind": "email",
        "item_id": "m1", "title": "New mail", "url": None, "priority": "default",
        "message": prefix + sink.escape(content),
    }  # fmt: skip
    return Notification(**(fields | changes))


def digest_of_200(sink: Sink) -> Notification:
    """A digest of 200 notifications, every one listed (``max: 200``), far beyond any
    target's length limit: the target must still take it, cut or split to its limit."""
    payloads = [
        {"id": f"n{n}", "rule": "news", "account": "inbox", "feed": "messages", "kind": "email",
         "item_id": f"m{n}", "title": f"Newsletter {n}: <b>*deals*</b> @here " + "x" * 60,
         "message": sink.escape("body"), "url": None, "priority": "default", "item": {},
         "extract": {}}
        for n in range(200)
    ]  # fmt: skip
    return build(sink, payloads, batch="b", batch_at=0.0, listed=200, group={}, template=None,
                 now=datetime.now(UTC))  # fmt: skip


async def through_an_outage(pipe: Pipeline, set_down: Callable[[bool], None]) -> None:
    """The target down for six deliver rounds (beyond the retry schedule: the notification
    waits in the outbox), then up for three (it goes out)."""
    set_down(True)
    for hours in range(1, 7):
        await deliver_round(pipe, hours)
    assert pipe.store.outbox_depth() == 1, "the notification left the outbox during the outage"
    set_down(False)
    for hours in range(7, 10):
        await deliver_round(pipe, hours)
    assert pipe.store.outbox_depth() == 0, "the notification did not go out after the outage"
