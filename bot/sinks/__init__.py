"""The notification targets: one module each, listed here by ``type:``."""

from bot.sinks.base import Notification, Sink
from bot.sinks.console import ConsoleSink
from bot.sinks.webhook import WebhookSink

SINKS: dict[str, type[Sink]] = {
    "console": ConsoleSink,
    "webhook": WebhookSink,
}

__all__ = ["SINKS", "Notification", "Sink"]
