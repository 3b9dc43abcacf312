"""The notification targets: one module each, listed here by ``type:``."""

from bot.sinks.base import Notification, Sink
from bot.sinks.console import ConsoleSink
from bot.sinks.gotify import GotifySink
from bot.sinks.mqtt import MqttSink
from bot.sinks.ntfy import NtfySink
from bot.sinks.webhook import WebhookSink

SINKS: dict[str, type[Sink]] = {
    "console": ConsoleSink,
    "gotify": GotifySink,
    "mqtt": MqttSink,
    "ntfy": NtfySink,
    "webhook": WebhookSink,
}

__all__ = ["SINKS", "Notification", "Sink"]
