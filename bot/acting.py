"""The act stage: run the due actions on their sources (mark read, delete, …).

An action runs once its rule delivered everything before it; actions that the source can
batch (the same action with the same arguments on one feed) go out in one call.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict

from bot.delivery import retry_delay
from bot.errors import AuthError, GoneError, PermanentError, RenderError, TransientError
from bot.logs import fields
from bot.parts import Parts
from bot.planning import rerender
from bot.store import CANCELLED, DONE, FAILED, StepRecord

log = logging.getLogger("inboxbot.pipeline.acting")


class Acting:
    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self._acting = asyncio.Lock()

    async def act(self) -> None:
        """Run due actions whose rule delivered everything; batch where the source can."""
        p = self.parts
        async with self._acting:
            now = p.clock.time()
            groups: dict[tuple[str, str, str], list[StepRecord]] = defaultdict(list)
            for step in p.store.pending_steps("act"):
                if step.due_at <= now:
                    batch = step.target in p.sources[step.feed.split("/")[0]].batch_actions
                    key = (step.feed, step.target, json.dumps(step.payload) if batch else step.id)
                    groups[key].append(step)
            for (feed, action, _), steps in groups.items():
                await self._act(feed, action, steps)

    async def _act(self, feed: str, action: str, steps: list[StepRecord]) -> None:
        p = self.parts
        account = feed.split("/")[0]
        source = p.sources.get(account)
        items = [item for s in steps if (item := p.store.item(feed, s.item_id)) is not None]
        if source is None or len(items) != len(steps):
            self._finish_actions(action, steps, CANCELLED, "account or item gone")
            return
        try:
            payload = rerender(p, steps[0]).payload
        except RenderError as err:
            self._finish_actions(action, steps, FAILED, str(err))
            return
        args = {
            **payload["args"],
            **({"message": payload["message"]} if payload["message"] else {}),
        }
        try:
            await source.act(action, args, items)
        except GoneError:
            pass  # the item went away upstream: the action is moot
        except (TransientError, AuthError) as err:
            p.metrics.actions.labels(action, "retry").inc(len(steps))
            p.health.failed(f"{account} actions", err)
            for s in steps:
                due = p.clock.time() + retry_delay(s.attempts, err)
                p.store.retry_step(s.id, due_at=due, error=str(err))
            return
        except PermanentError as err:
            log.error("action failed", extra=fields(action=action, feed=feed, error=str(err)))
            self._finish_actions(action, steps, FAILED, str(err))
            return
        p.health.ok(f"{account} actions")
        self._finish_actions(action, steps, DONE, "")
        log.info("acted", extra=fields(action=action, feed=feed, items=len(steps)))

    def _finish_actions(
        self, action: str, steps: list[StepRecord], status: str, error: str
    ) -> None:
        p = self.parts
        p.metrics.actions.labels(action, status).inc(len(steps))
        for s in steps:
            p.store.finish_step(s.id, now=p.clock.time(), status=status, error=error)
