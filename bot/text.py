"""Plain text and links out of HTML and free text (mail bodies, DText, chat)."""

from __future__ import annotations

import re
from functools import cache, lru_cache
from html.parser import HTMLParser
from typing import Any

_URL = re.compile(r"""https?://[^\s<>"'()\[\]{}]+""")
_TRAILING = ".,;:!?"
_URL_ENTITY = re.compile(r"&(#|colon;|sol;|period;)")


@cache
def _inscriptis() -> tuple[Any, Any]:
    """inscriptis (and lxml under it) is imported at the first HTML body, not at start."""
    from inscriptis import get_text
    from inscriptis.css_profiles import CSS_PROFILES
    from inscriptis.model.config import ParserConfig

    return get_text, ParserConfig(css=CSS_PROFILES["strict"], display_links=False)


@lru_cache(maxsize=8)  # a detail's body is converted for its text, then again for its links
def html_to_text(html: str) -> str:
    """Readable plain text of an HTML document: layout kept, tags and scripts gone."""
    if not html.strip():
        return ""
    get_text, config = _inscriptis()
    text = get_text(html, config)
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


class _HrefParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(v for k, v in attrs if k == "href" and v)


def find_links(text: str | None = None, html: str | None = None) -> tuple[str, ...]:
    """Every distinct http(s) URL in ``text`` and in ``html``'s links and text, in order."""
    found: dict[str, None] = {}
    candidates: list[str] = [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(text or "")]
    if html:
        parser = _HrefParser()
        parser.feed(html)
        parser.close()
        candidates += [h.strip() for h in parser.hrefs if _URL.match(h.strip())]
        if not _found_already(html, candidates):
            candidates += [m.group(0).rstrip(_TRAILING) for m in _URL.finditer(html_to_text(html))]
    for url in candidates:
        found.setdefault(url, None)
    return tuple(found)


def _found_already(html: str, candidates: list[str]) -> bool:
    """Whether every URL in ``html``'s source is among ``candidates``: then its text holds
    no other (a URL of the text is in the source, unless entities or tags split it, and
    then the source's piece of it is not a candidate), so the HTML need not be converted
    (inscriptis: most of a detail's CPU)."""
    if _URL_ENTITY.search(html):  # https&#58;//… is a URL of the text only
        return False
    known = set(candidates)
    return all(m.group(0).rstrip(_TRAILING) in known for m in _URL.finditer(html))
