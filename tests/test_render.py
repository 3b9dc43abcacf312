"""The template layer: filters, template files, inline templates, conditions, the sandbox."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from jinja2 import Environment

from bot.errors import ConfigError, RenderError
from bot.item import Attachment, Item
from bot.markup import Escaper, escape_html, escape_markdown
from bot.render import Renderer, links, md_escape, template_fields, truncate

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_item(**changes: Any) -> Item:
    values: dict[str, Any] = {
        "account": "a",
        "feed": "f",
        "kind": "email",
        "id": "1",
        "created_at": NOW - timedelta(minutes=5),
        "sender": "bob@example.org",
        "subject": "Hello",
        "text": "Your code is 123456",
        "attachments": (Attachment("a.pdf", "application/pdf", 10),),
    }
    return Item(**(values | changes))


def context(renderer: Renderer, item: Item | None = None, **extract: str) -> dict[str, Any]:
    return renderer.context(item or make_item(), now=NOW, rule="r", extract=extract)


@pytest.fixture
def tmpl_dir(tmp_path: Path) -> Path:
    files = {
        "dmail.j2": "{% block title %}From {{ item.sender }}{% endblock %}\n"
        "{% block message %}\n{{ item.subject }}: {{ item.text }}\n{% endblock %}\n",
        "base.j2": "{% block title %}{{ rule }}{% endblock %}"
        "{% block message %}base {{ item.subject }}{% endblock %}",
        "child.j2": '{% extends "base.j2" %}{% set mark = "!" %}'
        "{% block message %}{{ super() }}{{ mark }}{% endblock %}",
        "notitle.j2": "{% block message %}x{% endblock %}",
        "broken.j2": "{% block title %}x{% endblock %}\n{% block message %}\n{{ item.text }\n"
        "{% endblock %}",
        "whole.j2": "{% block title %}t{% endblock %}{% block message %}{{ item }}{% endblock %}",
        "badref.j2": '{% block title %}t{% endblock %}\n{% block message %}{% include "nope.j2" %}'
        "{% endblock %}",
        "missing.j2": "{% block title %}{{ code }}{% endblock %}\n"
        "{% block message %}\n\n{{ nothing }}{% endblock %}",
    }
    for name, source in files.items():
        (tmp_path / name).write_text(source)
    return tmp_path


@pytest.fixture
def renderer(tmpl_dir: Path) -> Renderer:
    return Renderer([tmpl_dir])


@pytest.mark.parametrize(
    ("value", "length", "expected"),
    [
        ("short", 10, "short"),
        (None, 10, ""),
        ("exactly ten", 11, "exactly ten"),
        ("hello wonderful world", 18, "hello wonderful…"),
        ("hello wonderful world", 20, "hello wonderful wor…"),
        ("hello wonderful world", 16, "hello wonderful…"),
        ("abcdefghijklmnopqrstuvwxyz", 10, "abcdefghi…"),
        ("a bcdefghijklmnopqrstuvwxyz", 10, "a bcdefgh…"),
        ("word " * 100, 200, ("word " * 40).rstrip() + "…"),
        ("abc", 1, "a"),
    ],
)
def test_truncate(value: str | None, length: int, expected: str) -> None:
    assert truncate(value, length) == expected
    assert len(truncate(value, length)) <= length


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("plain", "plain"),
        ("*bold* _it_", r"\*bold\* \_it\_"),
        ("[x](http://a.b)", r"\[x\]\(http://a\.b\)"),
        ("# h1 + - ! | < > ~ ` { } \\", r"\# h1 \+ \- \! \| \< \> \~ \` \{ \} \\"),
        (None, ""),
    ],
)
def test_md_escape(value: str | None, expected: str) -> None:
    assert md_escape(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            "see https://a.example/x, and http://b.example.",
            ["https://a.example/x", "http://b.example"],
        ),
        (
            '<p><a href="https://a.example/v?x=1&amp;y=2">verify</a></p>',
            ["https://a.example/v?x=1&y=2"],
        ),
        ("link <https://a.example/x> here", ["https://a.example/x"]),
        ("no links at all", []),
        (None, []),
    ],
)
def test_links(value: str | None, expected: list[str]) -> None:
    assert links(value) == expected


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ item.created_at|ago }}", "5 minutes ago"),
        ("{{ item.age|ago }}", "5 minutes ago"),
        ("{{ (now - delta)|ago }}", "1 minute ago"),
        ("{{ now|ago }}", "just now"),
        ("{{ item.created_at|ago }}|{{ (now - delta * 60 * 3)|ago }}", "5 minutes ago|3 hours ago"),
        ("{{ (now - delta * 60 * 24 * 2)|ago }}", "2 days ago"),
        ("{{ (now - delta * 60 * 24)|ago }}", "1 day ago"),
        ("{{ '<p>Hi <b>you</b></p>'|html2text }}", "Hi you"),
        ("{{ none|html2text }}", ""),
        ("{{ item.text|truncate(10) }}", "Your code…"),
        ("{{ item.subject|md_escape }}", "Hello"),
        ("{{ 'go to https://x.example'|links|first }}", "https://x.example"),
    ],
)
def test_filters_in_templates(renderer: Renderer, source: str, expected: str) -> None:
    ctx = context(renderer) | {"delta": timedelta(minutes=1), "none": None}
    assert renderer.inline(source).render(ctx) == expected


def test_named_template_renders_title_and_message(renderer: Renderer) -> None:
    template = renderer.load("dmail")
    assert template.name == "dmail"
    assert template.render(context(renderer)) == (
        "From bob@example.org",
        "Hello: Your code is 123456",
    )


def test_template_inheritance_and_top_level_set(renderer: Renderer) -> None:
    template = renderer.load("child")
    assert template.render(context(renderer)) == ("r", "base Hello!")
    assert template.fields_used == frozenset({"subject"})


def test_names_lists_stems_first_dir_wins(
    tmpl_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = tmp_path_factory.mktemp("other")
    (other / "extra.j2").write_text(
        "{% block title %}{% endblock %}{% block message %}{% endblock %}"
    )
    (other / "dmail.j2").write_text(
        "{% block title %}other{% endblock %}{% block message %}{% endblock %}"
    )
    (other / "notes.txt").write_text("not a template")
    renderer = Renderer([tmpl_dir, other])
    assert "extra" in renderer.names() and "notes" not in renderer.names()
    assert renderer.names().count("dmail") == 1
    assert renderer.load("dmail").render(context(renderer))[0] == "From bob@example.org"


@pytest.mark.parametrize(
    ("name", "where", "words"),
    [
        ("nosuch", "rules/x.yaml:7", "'nosuch.j2' not found"),
        ("notitle", "notitle.j2", "lacks block 'title'"),
        ("broken", "broken.j2:3", "template syntax error"),
        ("badref", "badref.j2:2", "'nope.j2' not found"),
    ],
)
def test_load_errors_name_file_and_line(
    renderer: Renderer, name: str, where: str, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        renderer.load(name, file="rules/x.yaml", line=7)
    assert where in str(caught.value)
    assert words in str(caught.value)


def test_unknown_template_lists_available(renderer: Renderer) -> None:
    with pytest.raises(ConfigError, match=r"available: .*dmail"):
        renderer.load("nosuch")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Code {{ code }}", "Code 123456"),
        ("{{ item.subject }}\n{{ link }}\n", "Hello\nhttps://x.example"),
        ("{{ rule }}/{{ account }}/{{ item.kind }}", "r/a/email"),
        ("{% for a in item.attachments %}{{ a.name }} {% endfor %}", "a.pdf"),
        ("{{ item['sender'] }}", "bob@example.org"),
    ],
)
def test_inline_templates(renderer: Renderer, source: str, expected: str) -> None:
    ctx = context(renderer, code="123456", link="https://x.example")
    assert renderer.inline(source).render(ctx) == expected


@pytest.mark.parametrize("source", ["{{ code ", "{% if x %}", "{{ a b }}", "{{ x|nosuchfilter }}"])
def test_inline_syntax_error_names_rule(renderer: Renderer, source: str) -> None:
    with pytest.raises(ConfigError, match=r"^rules/x\.yaml:12: template syntax error"):
        renderer.inline(source, file="rules/x.yaml", line=12)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ item.kind == 'email' }}", True),
        ("{{ item.kind == 'dmail' }}", False),
        ("item.age < delta", False),
        ("item.attachments|length > 0 and 'code' in item.text", True),
        ("{{ code is defined }}", False),
        ("{{ item.unread }}", False),
        ("{{ 'Hel' in item.subject }}", True),
    ],
)
def test_conditions(renderer: Renderer, source: str, expected: bool) -> None:
    ctx = context(renderer) | {"delta": timedelta(minutes=1)}
    assert renderer.condition(source)(ctx) is expected


@pytest.mark.parametrize("source", ["{{ item.kind == }}", "", "a b", "{{ a }} and {{ b }}"])
def test_condition_syntax_error(renderer: Renderer, source: str) -> None:
    with pytest.raises(ConfigError, match=r"^r\.yaml:3: "):
        renderer.condition(source, file="r.yaml", line=3)


@pytest.mark.parametrize(
    ("render", "words"),
    [
        (lambda r: r.inline("Code {{ code }}").render, "'code' is undefined"),
        (
            lambda r: r.inline("{{ item.subjet }}").render,
            "'item' has no field 'subjet' \\(fields: account, ",
        ),
        (lambda r: r.condition("{{ code == '1' }}"), "'code' is undefined"),
        (lambda r: r.condition("{{ code }}"), "'code' is undefined"),
        (lambda r: r.inline("{{ item.text|int(strict) }}").render, "'strict' is undefined"),
    ],
)
def test_undefined_names_are_errors(renderer: Renderer, render: Any, words: str) -> None:
    with pytest.raises(RenderError, match=words):
        render(renderer)(context(renderer))


def test_render_error_names_template_and_line(renderer: Renderer) -> None:
    with pytest.raises(RenderError) as caught:
        renderer.load("missing").render(context(renderer, code="1"))
    assert str(caught.value) == "missing.j2, line 4: 'nothing' is undefined"


def test_render_error_hides_item_content(renderer: Renderer) -> None:
    item = make_item(text="secret-value")
    with pytest.raises(RenderError) as caught:
        renderer.inline("{{ item.text|int + (1 / 0) }}").render(context(renderer, item))
    assert "secret" not in str(caught.value)
    assert "\n" not in str(caught.value)
    assert "ZeroDivisionError" in str(caught.value)


@pytest.mark.parametrize(
    "source",
    [
        "{{ item.__class__.__mro__ }}",
        "{{ ''.__class__.__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ item.text.format.__globals__ }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(item) }}",
        "{{ item.attachments.append(1) }}",
        "{{ item.update({'subject': 'x'}) }}",
        "{{ range.__self__ }}",
        "{{ item.created_at.__class__.__init__ }}",
    ],
)
def test_sandbox_refuses_attribute_tricks(renderer: Renderer, source: str) -> None:
    with pytest.raises(RenderError, match=r"unsafe|no attribute"):
        renderer.inline(source).render(context(renderer))


@pytest.mark.parametrize(
    "content",
    ["{{ 7*7 }}", "{% raw %}{{ x }}{% endraw %}", "{% for x in range(9) %}x{% endfor %}", "{#"],
)
def test_item_content_is_data(renderer: Renderer, content: str) -> None:
    item = make_item(subject=content, text=content)
    ctx = context(renderer, item)
    assert renderer.inline("{{ item.subject }}").render(ctx) == content
    assert renderer.load("dmail").render(ctx) == ("From bob@example.org", f"{content}: {content}")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("plain text", frozenset()),
        ("{{ code }} {{ rule }}", frozenset()),
        ("{{ item.text }}", {"text"}),
        ("{{ item['html']|html2text }} {{ item.subject|truncate(9) }}", {"html", "subject"}),
        ("{% if item.unread %}{{ item.age|ago }}{% endif %}", {"unread", "age"}),
        ("{% for a in item.attachments %}{{ a.name }}{% endfor %}", {"attachments"}),
        ("{{ item.links[0] }}", {"links"}),
        ("{{ item }}", None),
        ("{{ item|tojson }}", None),
        ("{{ item|attr('text') }}", None),
        ("{% for k in item %}{{ k }}{% endfor %}", None),
        ("{{ item[key] }}", None),
        ("{{ item.values()|list }}", None),
        ("{% set x = item %}{{ x.text }}", None),
    ],
)
def test_template_fields(
    renderer: Renderer, source: str, expected: frozenset[str] | set[str] | None
) -> None:
    expected_set = None if expected is None else frozenset(expected)
    assert renderer.inline(source).fields_used == expected_set


@pytest.mark.parametrize(
    ("kind", "source", "expected"),
    [
        ("load", "dmail", {"sender", "subject", "text"}),
        ("load", "whole", None),
        ("condition", "{{ item.kind == 'email' and item.text }}", {"kind", "text"}),
        ("condition", "item.raw|length > 0", {"raw"}),
        ("condition", "{{ item|length }}", None),
        ("inline", '{% include "dmail.j2" %}{{ item.url }}', {"sender", "subject", "text", "url"}),
        ("inline", "{% include name %}", None),
    ],
)
def test_fields_used(renderer: Renderer, kind: str, source: str, expected: set[str] | None) -> None:
    compiled = getattr(renderer, kind)(source)
    assert compiled.fields_used == (None if expected is None else frozenset(expected))


def test_template_fields_on_a_parsed_ast() -> None:
    ast = Environment().parse("{{ item.subject }}{{ item['text'] }}")
    assert template_fields(ast) == frozenset({"subject", "text"})


HOSTILE = "*bold* _x_ <b>x</b> @here [link](http://evil) `code` & {{ 7*7 }}"


@pytest.mark.parametrize(
    ("escape", "expected"),
    [
        (None, HOSTILE),
        (escape_markdown, escape_markdown(HOSTILE)),
        (escape_html, escape_html(HOSTILE)),
    ],
)
def test_message_outputs_are_escaped_for_the_sink(
    renderer: Renderer, escape: Escaper | None, expected: str
) -> None:
    template = renderer.inline("**New:** {{ item.subject }}")
    ctx = context(renderer, make_item(subject=HOSTILE))
    assert template.render(ctx, escape) == f"**New:** {expected}"


def test_named_template_escapes_the_message_not_the_title(tmp_path: Path) -> None:
    (tmp_path / "t.j2").write_text(
        "{% block title %}{{ item.subject }}{% endblock %}\n"
        "{% block message %}<b>{{ item.subject | truncate(16) }}</b>{% endblock %}"
    )
    r = Renderer([tmp_path])
    title, message = r.load("t").render(context(r, make_item(subject=HOSTILE)), escape_html)
    assert title == HOSTILE
    assert message == "<b>*bold* _x_ &lt;b&gt;x…</b>"


def test_safe_marks_output_the_template_vouches_for(renderer: Renderer) -> None:
    template = renderer.inline("{{ '<i>' | safe }}{{ item.subject }}{{ '</i>' | safe }}")
    ctx = context(renderer, make_item(subject="<b>"))
    assert template.render(ctx, escape_html) == "<i>&lt;b&gt;</i>"


def test_a_macros_output_is_escaped_once(renderer: Renderer) -> None:
    template = renderer.inline(
        "{% macro em(x) %}<i>{{ x }}</i>{% endmacro %}{{ em(item.subject) }}"
    )
    ctx = context(renderer, make_item(subject="<b>"))
    assert template.render(ctx, escape_html) == "<i>&lt;b&gt;</i>"
    assert template.render(ctx) == "<i><b></i>"
