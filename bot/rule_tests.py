"""``inboxbot test-rules CASES``: the user's own tests of their rules, templates and noise
control, read from YAML; one line a case, exit 1 when one fails.

    - name: a code arrives at night
      now: 2026-12-04T23:00:00+01:00         # default: the time of the run
      item: {subject: "Your code", text: "Use 482913"}
      match: [verification-code]
      extract: {code: "482913"}
      send: {phone: "held until 07:00 Europe/Berlin"}   # sent | grouped | muted | held until …
      mutes: [{rule: newsletters}]            # as `inboxbot mute` would set them
    - name: three newsletters, one digest
      items: [{subject: "A"}, {subject: "B"}, {subject: "C"}]
      match: [newsletters]
      digest: {phone: "newsletters: 3 notifications\\n\\n• A\\n• B\\n• C"}   # title, blank, message
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.app import Loaded
from bot.digest import build
from bot.errors import RenderError
from bot.held import Mute
from bot.item import Item
from bot.noise_view import outcome
from bot.planning import render_for
from bot.prove import attempt, describe, lenient, targets
from bot.rules import Match, plan
from bot.sinks import SINKS, Sink
from bot.tools import BadItem, item_from
from bot.yamlfile import YamlDoc, load_yaml

Payloads = dict[str, dict[str, list[dict[str, Any]]]]  # sink → rule → notifications
MUTE_KEYS = ("rule", "sink", "account", "match", "defer", "until", "comment")


async def run_rule_tests(loaded: Loaded, cases_file: Any) -> int:
    """Run the user's rule tests; print one line each and a summary; 1 when one failed."""
    doc = load_yaml(cases_file)
    if not isinstance(doc.data, list):
        raise doc.error((), "a rule test file is a list of cases (- item: …, match: […])")
    async with aiohttp.ClientSession() as session:  # unused: the sinks only escape here
        sinks = {n: SINKS[c.type](n, c, session) for n, c in loaded.config.sinks.items()}
        results = [_case(loaded, sinks, doc, i, case) for i, case in enumerate(doc.data)]
    passed = sum(results)
    print(f"{passed} passed, {len(results) - passed} failed")
    return 0 if passed == len(results) else 1


def _case(loaded: Loaded, sinks: Mapping[str, Sink], doc: YamlDoc, index: int, case: Any) -> bool:
    if not isinstance(case, dict) or not isinstance(
        case.get("item", case.get("items")), dict | list
    ):
        raise doc.error((index,), "each case needs item: {…} (or items: […]) and match: [rules]")
    label = str(case.get("name") or f"case {index + 1} (line {doc.line((index,))})")
    now = _now(doc, index, case.get("now"))
    mutes = _mutes(doc, index, case.get("mutes") or [])
    listed = case["items"] if "items" in case else [case["item"]]
    items = [_item(loaded, doc, (index, "items", n) if "items" in case else (index, "item"), f)
             for n, f in enumerate(listed)]  # fmt: skip
    problems: list[str] = []
    payloads: Payloads = {}
    for item in items:
        problems += _judge(loaded, sinks, case, item, now, mutes, payloads)
    for sink, want in (case.get("digest") or {}).items():
        problems += _digest(loaded, sinks, str(sink), payloads.get(str(sink), {}), want, now)
    verdict = f"FAIL {label}: {'; '.join(dict.fromkeys(problems))}" if problems else f"PASS {label}"
    print(verdict)
    return not problems


def _judge(
    loaded: Loaded, sinks: Mapping[str, Sink], case: Mapping[str, Any], item: Item,
    now: datetime, mutes: Sequence[Mute], payloads: Payloads,
) -> list[str]:  # fmt: skip
    """What is wrong with ``item``'s matches, extractions, renderings and noise verdicts."""
    context = {"item": item.fields(now), "account": item.account, "now": now}
    matches = plan(loaded.rules, item, context)
    got, want = [m.rule.name for m in matches], case.get("match", [])
    problems = [f"matched {got}, expected {want}"] if got != want else []
    extract = dict(matches[0].extract) if matches else {}
    for key, value in (case.get("extract") or {}).items():
        if extract.get(key) != str(value):
            problems.append(f"extract {key}={extract.get(key)!r}, expected {str(value)!r}")
    seen: dict[str, str] = {}
    for match in matches:
        found = _unrendered(loaded, match, item, now, with_raw=bool(item.raw))
        problems += found
        if not found:
            _render(loaded, sinks, match, item, now, mutes, payloads, seen)
    for sink, expected in (case.get("send") or {}).items():
        if seen.get(str(sink), "not notified") != str(expected):
            problems.append(f"to {sink}: {seen.get(str(sink), 'not notified')}, "
                            f"expected {expected}")  # fmt: skip
    return problems


def _render(
    loaded: Loaded, sinks: Mapping[str, Sink], match: Match, item: Item, now: datetime,
    mutes: Sequence[Mute], payloads: Payloads, seen: dict[str, str],
) -> None:  # fmt: skip
    """Each notification of ``match`` as its sink gets it (for digests), with its verdict."""
    ctx = loaded.renderer.context(item, now=now, rule=match.rule.name, extract=match.extract)
    for n in match.rule.notify:
        sink = sinks[n.sink]
        try:
            title, message = render_for(sink, n, {**ctx, "format": sink.format})
        except RenderError:  # a raw key the case did not give: _unrendered judged it
            continue
        public = {k: v for k, v in item.to_json().items() if k != "raw"}
        payload = {"id": item.id, "rule": match.rule.name, "account": item.account,
                   "feed": item.feed, "kind": item.kind, "item_id": item.id, "title": title,
                   "message": message, "url": item.url, "priority": n.priority, "item": public,
                   "extract": dict(match.extract), "options": dict(n.options)}  # fmt: skip
        payloads.setdefault(n.sink, {}).setdefault(match.rule.name, []).append(payload)
        cfg = loaded.config.sinks[n.sink]
        seen.setdefault(n.sink, outcome(match.rule, n, cfg, payload, mutes, now))


def _digest(
    loaded: Loaded, sinks: Mapping[str, Sink], sink: str,
    by_rule: Mapping[str, list[dict[str, Any]]], want: Any, now: datetime,
) -> list[str]:  # fmt: skip
    """The digest of the first rule that groups what it sends to ``sink`` (else of the
    first that sends to it), as ``sink`` would get it."""
    if sink not in sinks or not by_rule:
        return [f"digest to {sink}: nothing is sent to it"]
    rules = [r for r in loaded.rules if r.name in by_rule]
    rule = next((r for r in rules if any(n.group for n in r.notify if n.sink == sink)), rules[0])
    payloads = by_rule[rule.name]
    notify = next(n for n in rule.notify if n.sink == sink)
    group = notify.group
    by = {name: str({**p["extract"], **p["item"]}.get(name, "")) for p in payloads[:1]
          for name in (group.by if group else [])}  # fmt: skip
    digest = build(sinks[sink], payloads, batch="test", batch_at=0.0,
                   listed=group.max if group else 25, group=by, template=notify.digest,
                   now=now)  # fmt: skip
    text = f"{digest.title}\n\n{digest.message}"
    if text.strip() != str(want).strip():
        return [f"digest to {sink} was:\n{text}\n--- expected:\n{str(want).strip()}"]
    return []


def _now(doc: YamlDoc, index: int, value: Any) -> datetime:
    if value is None:
        return datetime.now(UTC)
    moment = value if isinstance(value, datetime) else None
    if moment is None:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            moment = None
    if moment is None or moment.tzinfo is None:
        raise doc.error((index, "now"), f"{index}.now: {value!r} is not a time with its zone; "
                        "write e.g. 2026-12-04T23:00:00+01:00")  # fmt: skip
    return moment.astimezone(UTC)


def _mutes(doc: YamlDoc, index: int, raw: Any) -> list[Mute]:
    found = []
    for n, spec in enumerate(raw if isinstance(raw, list) else [raw]):
        if not isinstance(spec, dict) or set(spec) - set(MUTE_KEYS):
            where = (index, "mutes", n)
            raise doc.error(where, f"{index}.mutes[{n}]: a mute takes {', '.join(MUTE_KEYS)}")
        until = _now(doc, index, spec["until"]).timestamp() if spec.get("until") else None
        match = {str(k): str(v) for k, v in (spec.get("match") or {}).items()}
        scope = (spec.get("rule"), spec.get("sink"), spec.get("account"), match)
        found.append(
            Mute(n + 1, until, str(spec.get("comment", "")), bool(spec.get("defer")), *scope)
        )
    return found


def _item(loaded: Loaded, doc: YamlDoc, at: tuple[Any, ...], raw: Any) -> Item:
    fields = dict(raw) if isinstance(raw, dict) else raw
    accounts = list(loaded.config.accounts)
    if isinstance(fields, dict):
        if "account" not in fields and len(accounts) == 1:
            fields["account"] = accounts[0]
        account = loaded.config.accounts.get(str(fields.get("account")))
        if account is not None:
            fields.setdefault("upstream", account.type)
    try:
        return item_from(fields)
    except BadItem as err:
        where = ".".join(str(p) for p in at)
        raise doc.error((*at, *err.loc), f"{where}: {err}") from None


def _unrendered(
    loaded: Loaded, match: Match, item: Item, now: datetime, with_raw: bool
) -> list[str]:
    """The rule's notifications and replies that would not render for ``item`` (and so
    would fail at run time). Without a ``raw`` in the case, a raw key reads as empty."""
    ctx = loaded.renderer.context(item, now=now, rule=match.rule.name, extract=match.extract)
    if not with_raw:
        ctx["item"]["raw"] = lenient({})
    formats = {name: sink.format or "text" for name, sink in loaded.config.sinks.items()}
    found = []
    for target in targets(match.rule, formats):
        err = attempt(target, ctx)
        if err is not None:
            if err.filename:
                where = f"{err.where}, line {err.line}: "
            else:
                where = f"line {err.line} of the template: " if (err.line or 1) > 1 else ""
            label = f"rule {match.rule.name!r} {target.label}"
            found.append(f"{label} would not render: {where}{describe(err)}")
    return found
