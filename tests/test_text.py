"""Links of a mail body: the shortcut that skips converting the HTML finds what the
conversion finds."""

from __future__ import annotations

import pytest

from bot.text import find_links


@pytest.mark.parametrize(
    ("text", "html", "links"),
    [
        (  # every URL of the source is a link or in the text: no conversion needed
            "see https://a.example/x.",
            '<p><a href="https://a.example/x">https://a.example/x</a> https://b.example/y</p>',
            ("https://a.example/x", "https://b.example/y"),
        ),
        ("", "<p>Go to https://c.example/<b>path</b></p>", ("https://c.example/path",)),
        ("", "<p>https&#58;//d.example/q</p>", ("https://d.example/q",)),
        (
            "",
            '<img src="https://t.example/p.gif"><a href="https://e.example/?a=1&amp;b=2">x</a>'
            " and https://f.example",
            ("https://e.example/?a=1&b=2", "https://f.example"),
        ),
    ],
)
def test_links_of_html(text: str, html: str, links: tuple[str, ...]) -> None:
    assert find_links(text, html) == links
