"""Markup of notification targets: escaping item content, and fitting length limits.

Templates are trusted markup; what they print from an item is data. The renderer runs
every ``{{ … }}`` output of a message through the sink's ``escape`` (see
``Sink.escape``), so a subject such as ``*urgent* <b>@here</b>`` shows as written and
can neither change the formatting nor ping anyone. Dialects (Telegram MarkdownV2, Slack
mrkdwn, Discord) live with their sink; the common ones are here.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

# CommonMark's ASCII punctuation that can start or end formatting, links and HTML.
_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~])")

Escaper = Callable[[str], str]


def plain(text: str) -> str:
    return text


def escape_markdown(text: str) -> str:
    """Backslash every Markdown special, so content cannot change the formatting."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def escape_html(text: str) -> str:
    """``&``, ``<``, ``>`` and ``"`` as entities: safe in text and in attribute values."""
    return html.escape(text, quote=True)


def line_breaks(html: str) -> str:
    """A message written line by line (as templates for every target are) kept in lines
    where HTML would run them together."""
    return html.replace("\n", "<br>")


def hard_breaks(markdown: str) -> str:
    """A message written line by line kept in lines where Markdown would join them: a
    single newline is only a soft break there (a blank line, a paragraph, stays)."""
    return re.sub(r"(?<![\n ])\n(?!\n)", "  \n", markdown)


ESCAPERS: dict[str, Escaper] = {"text": plain, "markdown": escape_markdown, "html": escape_html}


def fit(text: str, limit: int, *, end: str = "…") -> str:
    """At most ``limit`` characters, cut with ``end`` when it is longer."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(end))].rstrip() + end[:limit]


def fit_bytes(text: str, limit: int, *, end: str = "…", encoding: str = "utf-8") -> str:
    """At most ``limit`` bytes once encoded, cut at a character boundary with ``end``."""
    data = text.encode(encoding)
    if len(data) <= limit:
        return text
    room = max(0, limit - len(end.encode(encoding)))
    return data[:room].decode(encoding, errors="ignore").rstrip() + end
