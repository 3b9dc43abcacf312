"""The upstreams inboxbot can poll: one module each, listed here by ``type:``."""

from bot.sources.base import Feed, PollResult, Source
from bot.sources.mailtd import MailTdSource

SOURCES: dict[str, type[Source]] = {
    "mailtd": MailTdSource,
}

__all__ = ["SOURCES", "Feed", "PollResult", "Source"]
