"""The upstreams inboxbot can poll: one module each, listed here by ``type:``."""

from bot.sources.base import Feed, PollResult, Source
from bot.sources.e621 import E621Source
from bot.sources.imap import ImapSource
from bot.sources.mailtd import MailTdSource
from bot.sources.minutemail import MinuteMailSource
from bot.sources.rocketchat import RocketChatSource

SOURCES: dict[str, type[Source]] = {
    "e621": E621Source,
    "imap": ImapSource,
    "mailtd": MailTdSource,
    "minutemail": MinuteMailSource,
    "rocketchat": RocketChatSource,
}

__all__ = ["SOURCES", "Feed", "PollResult", "Source"]
