"""Rules: every operator and combinator, extraction, stop, and stable step ids (table-driven)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from bot.item import Attachment, Item
from bot.render import Renderer
from bot.rules import AccountCaps, Rule, RuleLoader, SinkCaps, plan, wants_detail

NOW = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
ITEM = Item(
    account="inbox", feed="messages", kind="email", id="m1",
    created_at=NOW - timedelta(minutes=30), sender="Bob <bob@example.com>",
    recipient="me@mail.td", subject="Your Verification Code", text="Use 482913 to sign in.",
    html="<p>Use <b>482913</b></p>", unread=True, url=None,
    attachments=(Attachment("invoice.pdf", "application/pdf", 1200),),
    links=("https://example.com/verify?t=1", "https://example.com/help"),
    raw={"size": 4523, "is_read": False},
)  # fmt: skip


def compile_rules(tmp_path: Path, rules: list[dict[str, object]]) -> list[Rule]:
    (tmp_path / "t").mkdir(exist_ok=True)
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(rules))
    caps = {
        "inbox": AccountCaps("mailtd", {"email": frozenset({"mark_read", "delete"})}),
        "other": AccountCaps("mailtd", {"email": frozenset({"mark_read", "delete"})}),
        "furry": AccountCaps("e621", {"dmail": frozenset({"mark_read", "delete"})}),
    }
    loader = RuleLoader(
        Renderer([tmp_path / "t"]),
        caps,
        {
            "phone": SinkCaps("ntfy"),
            "hooks": SinkCaps("webhook", True),
        },
    )
    return loader.load([tmp_path / "r.yaml"])


def matches(tmp_path: Path, when: object, item: Item = ITEM) -> bool:
    (rule,) = compile_rules(tmp_path, [{"name": "r", "when": when}])
    return bool(plan([rule], item, {"item": item.fields(NOW), "account": item.account, "now": NOW}))


CASES = [
    ({"kind": "email"}, True),
    ({"kind": "dmail"}, False),
    ({"kind": ["dmail", "email"]}, True),
    ({"unread": True}, True),
    ({"unread": False}, False),
    ({"account": "inbox"}, True),
    ({"account": "other"}, False),
    ({"subject": {"regex": "(?i)verif"}}, True),
    ({"subject": {"regex": "verif"}}, False),
    ({"subject": {"contains": "verification code"}}, True),
    ({"subject": {"startswith": "your"}}, True),
    ({"subject": {"endswith": "code"}}, True),
    ({"subject": {"startswith": "code"}}, False),
    ({"sender": {"in": ["Bob <bob@example.com>", "x"]}}, True),
    ({"sender": {"ne": "Bob <bob@example.com>"}}, False),
    ({"sender": {"not": {"contains": "example.com"}}}, False),
    ({"age": {"lt": "1h"}}, True),
    ({"age": {"gt": "1h"}}, False),
    ({"age": {"gte": "30m", "lte": "30m"}}, True),
    ({"created_at": {"gt": "2026-01-10T00:00:00+00:00"}}, True),
    ({"created_at": {"lt": "2026-01-10T00:00:00+00:00"}}, False),
    ({"raw.size": {"gt": 4000}}, True),
    ({"raw.size": {"lte": 4000}}, False),
    ({"raw.missing": {"gt": 1}}, False),
    ({"links": {"regex": "verify"}}, True),
    ({"links": {"gte": 2}}, True),
    ({"links": {"gt": 2}}, False),
    ({"attachments": {"contains": ".pdf"}}, True),
    ({"attachments": "invoice.pdf"}, True),
    ({"html": {"contains": "<b>"}}, True),
    ({"text": {"regex": r"\b\d{6}\b"}}, True),
    ({"any": [{"kind": "dmail"}, {"subject": {"contains": "code"}}]}, True),
    ({"any": [{"kind": "dmail"}, {"unread": False}]}, False),
    ({"all": [{"kind": "email"}, {"unread": True}]}, True),
    ({"all": [{"kind": "email"}, {"unread": False}]}, False),
    ({"not": {"kind": "email"}}, False),
    ({"not": {"any": [{"kind": "dmail"}, {"unread": False}]}}, True),
    ({"if": "{{ item.subject | length > 10 and 'example' in item.sender }}"}, True),
    ({"if": "item.attachments | length == 0"}, False),
    ({"kind": "email", "if": "{{ now.year == 2026 }}"}, True),
    ({}, True),
]


@pytest.mark.parametrize(("when", "expected"), CASES, ids=[str(c[0]) for c in CASES])
def test_conditions(tmp_path: Path, when: object, expected: bool) -> None:
    assert matches(tmp_path, when) is expected


def test_missing_values_never_match_text_tests(tmp_path: Path) -> None:
    bare = Item(
        account="inbox",
        feed="messages",
        kind="email",
        id="2",
        created_at=NOW,
        html=None,
        unread=None,
    )
    assert not matches(tmp_path, {"html": {"contains": "x"}}, bare)
    assert not matches(tmp_path, {"unread": True}, bare)
    assert matches(tmp_path, {"unread": None}, bare)


EXTRACTS = [
    ({"from": "text", "regex": r"\b(\d{6})\b"}, "482913"),
    ({"from": "text", "regex": r"\d{6}"}, "482913"),
    ({"from": "text", "regex": r"(\d{9})"}, ""),
    ({"from": "links", "regex": "verify"}, "https://example.com/verify?t=1"),
    ({"from": "links", "regex": r"t=(\d)"}, "1"),
    ({"from": "links", "regex": "nothing"}, ""),
    ({"from": "html", "regex": "<b>(.*?)</b>"}, "482913"),
]


@pytest.mark.parametrize(("spec", "value"), EXTRACTS)
def test_extraction(tmp_path: Path, spec: dict[str, str], value: str) -> None:
    (rule,) = compile_rules(tmp_path, [{"name": "r", "extract": {"v": spec}}])
    (match,) = plan([rule], ITEM, {"item": ITEM.fields(NOW), "account": "inbox", "now": NOW})
    assert match.extract == {"v": value}


def test_stop_hides_the_item_from_later_rules_and_ids_are_stable(tmp_path: Path) -> None:
    notify = [{"sink": "phone", "title": "t", "message": "m"}]
    rules = compile_rules(tmp_path, [
        {"name": "first", "when": {"kind": "email"}, "notify": notify, "then": ["mark_read"]},
        {"name": "second", "when": {"unread": True}, "notify": notify, "stop": True},
        {"name": "third", "notify": notify},
    ])  # fmt: skip
    context = {"item": ITEM.fields(NOW), "account": "inbox", "now": NOW}
    first = plan(rules, ITEM, context)
    assert [m.rule.name for m in first] == ["first", "second"]
    assert [(s.kind, s.target) for s in first[0].steps] == [
        ("deliver", "phone"),
        ("act", "mark_read"),
    ]
    again = plan(rules, ITEM, context)
    assert [s.id for m in first for s in m.steps] == [s.id for m in again for s in m.steps]
    assert len({s.id for m in first for s in m.steps}) == 3


def test_the_detail_is_needed_only_by_rules_that_read_it(tmp_path: Path) -> None:
    rules = compile_rules(tmp_path, [
        {"name": "subject-only", "when": {"subject": {"contains": "x"}}, "notify": [{"sink": "phone", "title": "{{ item.subject }}", "message": ""}]},
        {"name": "text", "when": {"text": {"contains": "x"}}},
        {"name": "extract", "extract": {"c": {"from": "links", "regex": "x"}}},
        {"name": "template", "notify": [{"sink": "phone", "title": "{{ item.html }}", "message": ""}]},
        {"name": "whole-item-sink", "notify": [{"sink": "hooks", "title": "", "message": "m"}]},
        {"name": "whole-item-template", "notify": [{"sink": "phone", "title": "{{ item }}", "message": ""}]},
    ])  # fmt: skip
    assert [r.needs_detail for r in rules] == [False, True, True, True, True, True]


def test_a_rule_limited_to_an_account_skips_the_others(tmp_path: Path) -> None:
    (rule,) = compile_rules(
        tmp_path, [{"name": "r", "when": {"account": "other"}, "then": ["delete"]}]
    )
    assert rule.accounts == frozenset({"other"})


DETAIL_CASES = [
    (
        [{"name": "r", "when": {"subject": {"contains": "invoice"}, "text": {"contains": "x"}}}],
        "Your invoice",
        True,
    ),
    (
        [{"name": "r", "when": {"subject": {"contains": "invoice"}, "text": {"contains": "x"}}}],
        "Hello",
        False,
    ),
    ([{"name": "r", "when": {"subject": {"contains": "invoice"}}}], "Your invoice", False),
    (
        [
            {"name": "s", "when": {"subject": {"contains": "hello"}}, "stop": True},
            {"name": "r", "when": {"text": {"contains": "x"}}},
        ],
        "Hello",
        False,
    ),
    (
        [
            {"name": "s", "when": {"subject": {"contains": "other"}}, "stop": True},
            {"name": "r", "when": {"text": {"contains": "x"}}},
        ],
        "Hello",
        True,
    ),
    ([{"name": "r", "when": {"if": "{{ item.text | length > 3 }}"}}], "Hello", True),
    ([{"name": "r", "when": {"account": "other", "text": {"contains": "x"}}}], "Hello", False),
    (
        [
            {
                "name": "r",
                "when": {"kind": "email"},
                "extract": {"c": {"from": "text", "regex": "x"}},
            }
        ],
        "Hello",
        True,
    ),
]


@pytest.mark.parametrize(("rules", "subject", "expected"), DETAIL_CASES)
def test_the_detail_is_wanted_only_when_a_body_rule_can_still_match(
    tmp_path: Path, rules: list[dict[str, object]], subject: str, expected: bool
) -> None:
    compiled = compile_rules(tmp_path, rules)
    item = Item(
        account="inbox",
        feed="messages",
        kind="email",
        id="1",
        created_at=NOW,
        subject=subject,
        complete=False,
    )
    assert (
        wants_detail(compiled, item, {"item": item.fields(NOW), "account": "inbox", "now": NOW})
        is expected
    )
