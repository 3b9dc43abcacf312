"""What the targets' pipeline tests share: one feed, and a deliver round hours later."""

from __future__ import annotations

import time
from datetime import timedelta

from bot.pipeline import Pipeline
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
