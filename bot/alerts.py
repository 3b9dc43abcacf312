"""Alerts: tell the ``alerts_to`` sink what is failing, and when it is over.

Not a stage of its own: it reads what the stages recorded in ``Health``.
"""

from __future__ import annotations

import hashlib
import logging

from bot.errors import RemoteError
from bot.logs import fields
from bot.parts import Parts
from bot.sinks import Notification, Sink

log = logging.getLogger("inboxbot.pipeline.alerts")


async def alert(parts: Parts) -> None:
    """Tell ``alerts_to`` about failures older than ``alerts_after`` (auth: at once), once,
    and once more when they are over. An alert that cannot go out is tried next time."""
    sink = parts.sinks.get(parts.config.alerts_to or "")
    if sink is None:
        return
    health, now = parts.health, parts.clock.time()
    for key, failure in health.due(now, parts.config.alerts_after.total_seconds()):
        title = f"inboxbot: {key} is failing"
        if await _send_alert(sink, f"{key}:{failure.since}", title, failure.reason):
            health.alerted.add(key)
    for key in sorted(health.recovered):
        if await _send_alert(sink, f"{key}:ok:{now}", f"inboxbot: {key} recovered", ""):
            health.recovered.discard(key)


async def _send_alert(sink: Sink, key: str, title: str, message: str) -> bool:
    alert = Notification(
        id=hashlib.sha256(key.encode()).hexdigest()[:32], rule="inboxbot-alert", account="",
        feed="", kind="alert", item_id="", title=title, message=sink.escape(message), url=None,
        priority="high",
    )  # fmt: skip
    try:
        await sink.send(alert)
    except RemoteError as err:
        log.warning("alert not sent", extra=fields(sink=sink.name, error=str(err)))
        return False
    log.info("alert sent", extra=fields(sink=sink.name, title=title))
    return True
