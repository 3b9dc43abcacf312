"""The notification targets: one module each, listed here by ``type:``."""

from bot.sinks.base import Notification, Sink
from bot.sinks.console import ConsoleSink
from bot.sinks.discord import DiscordSink
from bot.sinks.gotify import GotifySink
from bot.sinks.matrix import MatrixSink
from bot.sinks.mqtt import MqttSink
from bot.sinks.ntfy import NtfySink
from bot.sinks.rocketchat import RocketChatSink
from bot.sinks.slack import SlackSink
from bot.sinks.smtp import SmtpSink
from bot.sinks.telegram import TelegramSink
from bot.sinks.webhook import WebhookSink

SINKS: dict[str, type[Sink]] = {
    "console": ConsoleSink,
    "discord": DiscordSink,
    "gotify": GotifySink,
    "matrix": MatrixSink,
    "mqtt": MqttSink,
    "ntfy": NtfySink,
    "rocketchat": RocketChatSink,
    "slack": SlackSink,
    "smtp": SmtpSink,
    "telegram": TelegramSink,
    "webhook": WebhookSink,
}

__all__ = ["SINKS", "Notification", "Sink"]
