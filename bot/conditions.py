"""``when:`` conditions compiled once into predicates over an item's fields.

A plain value means equals, a list means any-of; operators ``regex``,
``contains``, ``startswith``, ``endswith``, ``in``, ``eq``, ``ne``,
``gt``/``gte``/``lt``/``lte`` (numbers, dates, durations) and ``not``; the
combinators ``any``, ``all``, ``not`` and ``if`` (a Jinja expression) nest.
``contains``/``startswith``/``endswith`` ignore case; ``regex`` is as written.
On a list field (``links``, ``attachments`` by name) a text test holds when it
holds for any element, and a comparison compares the count.

Compiling proves what it can: an operator must fit the field's type (no ``regex`` on
``unread``, no ``gt`` on ``subject``), a value its type, and ``account``, ``feed``,
``kind`` and ``upstream`` a value the configuration has; ``raw.<key>`` takes anything.
Every problem is collected in ``errors``, not only the first.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

import jinja2
from jinja2 import nodes

from bot.config import parse_duration
from bot.errors import ConfigError
from bot.render import Renderer
from bot.yamlfile import Path_, YamlDoc, dotted

Context = Mapping[str, Any]  # {"item": item fields, "account": …, "now": …}, as templates see it
Predicate = Callable[[Context], bool]
T = TypeVar("T")

FIELDS = (
    "account", "feed", "kind", "id", "sender", "recipient", "subject", "text", "html",
    "unread", "created_at", "age", "url", "attachments", "links", "upstream",
)  # fmt: skip
_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_TEXT_OPS = ("regex", "contains", "startswith", "endswith")
OPERATORS = (*_TEXT_OPS, "in", "eq", "ne", "not", *_COMPARE)
COMBINATORS = ("any", "all", "not", "if")
IF_NAMES = ("item", "account", "now")  # what an `if:` expression sees (the pipeline's context)
# every field not named here is text; raw.<key> is anything
FIELD_TYPES = {"unread": "boolean", "created_at": "date", "age": "duration",
               "attachments": "list", "links": "list"}  # fmt: skip
CLOSED = {"account": "unknown account {!r}; configured: {}",
          "feed": "{!r} is not a feed of any configured account; feeds: {}",
          "kind": "{!r} is not a kind of any configured account; kinds: {}",
          "upstream": "{!r} is not the type of any configured account; configured: {}"}  # fmt: skip
_NOT_COMPARABLE = {
    "text": "text: use regex, contains, startswith or endswith",
    "boolean": "a boolean: write true or false",
}
_NOT_TEXT_HINT = {
    "boolean": "write true or false (or null: the upstream has no read state)",
    "date": "compare it with gt/gte/lt/lte, e.g. {gt: '2024-01-01'}",
    "duration": "compare it with gt/gte/lt/lte, e.g. {lt: 10m}",
}


@dataclass(frozen=True)
class Compiled:
    predicate: Predicate
    fields: frozenset[str] | None  # the item fields read; None: all of them
    # each top-level key with its predicate and the fields it reads (`explain`, lazy detail)
    parts: tuple[tuple[str, Predicate, frozenset[str] | None], ...] = ()

    def failing(self, context: Context) -> list[str]:
        """The top-level conditions that do not hold: why a rule did not match."""
        return [key for key, predicate, _ in self.parts if not predicate(context)]

    def ruled_out(self, context: Context, unknown: frozenset[str]) -> bool:
        """Whether a condition that reads none of the ``unknown`` fields already fails."""
        return any(
            fields is not None and not fields & unknown and not predicate(context)
            for _, predicate, fields in self.parts
        )


def _all(tests: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    """Whether every test holds (one test: itself, as matching is the hot path)."""
    if len(tests) == 1:
        return tests[0]
    return lambda x: all(t(x) for t in tests)


def _any(tests: Sequence[Callable[[Any], bool]]) -> Callable[[Any], bool]:
    if len(tests) == 1:
        return tests[0]
    return lambda x: any(t(x) for t in tests)


def _read(context: Context, key: str) -> Any:
    value: Any = context["item"]
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _each_text(test: Callable[[str], bool]) -> Callable[[Any], bool]:
    """``test`` on a text field's value, or on any of a list field's texts."""

    def run(value: Any) -> bool:
        if isinstance(value, str):
            return test(value)
        return any(test(t) for t in _texts(value))

    return run


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v.get("name", "")) if isinstance(v, Mapping) else str(v) for v in value]
    return [str(value)]


def listing(values: Iterable[str], limit: int = 12) -> str:
    """``a, b, c``; with more than ``limit``, the first ones and how many in all."""
    shown = list(itertools.islice(values, limit + 1))
    if len(shown) <= limit:
        return ", ".join(shown) or "none"
    return f"{', '.join(shown[:limit])}, …"


def field_type(key: str) -> str:
    """``text``, ``boolean``, ``date``, ``duration``, ``list``, or ``any`` for ``raw.<key>``."""
    return "any" if key.split(".", 1)[0] == "raw" else FIELD_TYPES.get(key, "text")


def _never(value: Any) -> bool:
    return False


_FAILED: Callable[[Any], bool] = _never
_NEVER = Compiled(_never, frozenset())  # stands for a condition that has an error


class WhenCompiler:
    """Compiles one rule's ``when:``; errors name the rule file and line, and are all kept
    in ``errors``. ``allowed`` holds the values the configuration has for the closed fields
    (``account``, ``feed``, ``kind``, ``upstream``); without it any value passes."""

    def __init__(
        self,
        doc: YamlDoc,
        renderer: Renderer,
        allowed: Mapping[str, Collection[str]] | None = None,
    ) -> None:
        self.doc = doc
        self.renderer = renderer
        self.allowed = allowed
        self.errors: list[ConfigError] = []

    def error(self, path: Path_, message: str) -> ConfigError:
        return self.doc.error(path, f"{dotted(path)}: {message}")

    def compile(self, spec: Any, path: Path_) -> Compiled:
        if not isinstance(spec, dict):
            self.errors.append(self.error(path, "conditions must be a mapping of fields to values"))
            return _NEVER
        parts = [
            self._kept(_NEVER, self._entry, key, value, (*path, key)) for key, value in spec.items()
        ]
        preds = [p.predicate for p in parts]
        named = tuple((key, p.predicate, p.fields) for key, p in zip(spec, parts, strict=True))
        return Compiled(_all(preds), union_fields(p.fields for p in parts), named)

    def _kept(self, failed: T, compile: Callable[..., T], *args: Any) -> T:
        """``compile(*args)``; an error is kept, and ``failed`` stands in for the part."""
        try:
            return compile(*args)
        except ConfigError as err:
            self.errors.append(err)
            return failed

    def _entry(self, key: str, value: Any, path: Path_) -> Compiled:
        if key in ("any", "all"):
            return self._combine(key, value, path)
        if key == "not":
            inner = self.compile(value, path)
            return Compiled(lambda f: not inner.predicate(f), inner.fields)
        if key == "if":
            cond = self.renderer.condition(str(value), file=self.doc.file, line=self.doc.line(path))
            for problem in unknown_names(str(value)):
                self.errors.append(self.error(path, problem))
            return Compiled(cond, cond.fields_used)
        top = key.split(".", 1)[0]
        if top not in (*FIELDS, "raw"):
            allowed = ", ".join((*FIELDS, "raw.<key>", *COMBINATORS))
            raise self.error(path, f"unknown field {key!r}; allowed: {allowed}")
        if top != "raw" and key != top:
            raise self.error(path, f"{top} has no parts; only raw.<key> takes a dotted name")
        if top == "raw" and not key[4:]:
            raise self.error(path, "raw takes the upstream's key after a dot: raw.<key>")
        test = self._value_test(key, value, path)
        if top == "raw":
            return Compiled(lambda f: test(_read(f, key)), frozenset({top}))
        return Compiled(lambda f: test(f["item"].get(key)), frozenset({top}))

    def _combine(self, key: str, value: Any, path: Path_) -> Compiled:
        if not isinstance(value, list) or not value:
            raise self.error(path, f"{key} takes a non-empty list of conditions")
        parts = [self.compile(v, (*path, i)) for i, v in enumerate(value)]
        preds = [p.predicate for p in parts]
        join = _any(preds) if key == "any" else _all(preds)
        return Compiled(join, union_fields(p.fields for p in parts))

    def _value_test(self, key: str, value: Any, path: Path_) -> Callable[[Any], bool]:
        if value == []:
            raise self.error(path, "an empty list matches nothing; give values")
        if value == {}:
            raise self.error(path, "{} names no operator; write e.g. {contains: …}")
        if isinstance(value, list):
            options = [
                self._kept(_FAILED, self._equals, key, v, (*path, i)) for i, v in enumerate(value)
            ]
            return _any(options)
        if isinstance(value, dict):
            tests = [
                self._kept(_FAILED, self._operator, key, op, arg, (*path, op))
                for op, arg in value.items()
            ]
            return _all(tests)
        return self._equals(key, value, path)

    def _equals(self, key: str, expected: Any, path: Path_) -> Callable[[Any], bool]:
        if isinstance(expected, dict | list):
            raise self.error(path, "expected a plain value here")
        kind = field_type(key)
        if kind in ("date", "duration"):
            want = self._operand(key, expected, path)
        elif kind == "boolean" and not (expected is None or isinstance(expected, bool)):
            raise self.error(path, f"{expected!r} is not a boolean; write true or false")
        elif kind == "text":
            want = self._text_value(key, expected, path)
        else:
            want = expected
        if key in ("links", "attachments"):
            return lambda x: str(want) in _texts(x)
        return lambda x: bool(x == want)

    def _text_value(self, key: str, value: Any, path: Path_) -> Any:
        """A text field's value: a whole number is its digits; a closed field's must exist."""
        if isinstance(value, bool | float | date) or value is None:
            hint = "YAML reads yes/no/on/off as booleans; " if isinstance(value, bool) else ""
            raise self.error(path, f"{key} is text, not {value!r}: {hint}quote the value")
        text = str(value)
        known = self.allowed.get(key) if self.allowed is not None else None
        if known is not None and text not in known:
            raise self.error(path, CLOSED[key].format(text, listing(known)))
        return text

    def _operator(self, key: str, op: str, arg: Any, path: Path_) -> Callable[[Any], bool]:
        kind = field_type(key)
        if op in _TEXT_OPS and kind in _NOT_TEXT_HINT:
            raise self.error(
                path, f"{op} tests text, and {key} is a {kind}: {_NOT_TEXT_HINT[kind]}"
            )
        if op in _COMPARE and kind in _NOT_COMPARABLE:
            compares = "compares numbers, dates, durations and the count of a list field"
            raise self.error(path, f"{op} {compares}, and {key} is {_NOT_COMPARABLE[kind]}")
        if op in _TEXT_OPS:
            return self._text_test(op, arg, path)
        if op in _COMPARE:
            want, cmp = self._operand(key, arg, path), _COMPARE[op]
            return lambda x: (
                x is not None and _comparable(x) is not None and cmp(_comparable(x), want)
            )
        if op == "in":
            if not isinstance(arg, list):
                raise self.error(path, "in takes a list of values")
            return self._value_test(key, arg, path)
        if op == "eq":
            return self._equals(key, arg, path)
        if op in ("ne", "not"):
            inner = self._equals(key, arg, path) if op == "ne" else self._value_test(key, arg, path)
            return lambda x: not inner(x)
        raise self.error(path, f"unknown operator {op!r}; allowed: {', '.join(OPERATORS)}")

    def _text_test(self, op: str, arg: Any, path: Path_) -> Callable[[Any], bool]:
        if not isinstance(arg, str | int | float) or isinstance(arg, bool):
            raise self.error(path, f"{op} takes text")
        if op == "regex":
            try:
                pattern = re.compile(str(arg))
            except re.error as err:
                raise self.error(path, f"bad regex {arg!r}: {err}") from None
            return _each_text(lambda t: pattern.search(t) is not None)
        needle = str(arg).casefold()
        method = {"contains": str.__contains__, "startswith": str.startswith}.get(op, str.endswith)
        return _each_text(lambda t: method(t.casefold(), needle))

    def _operand(self, key: str, arg: Any, path: Path_) -> Any:
        try:
            if key == "age":
                return parse_duration(arg)
            if key == "created_at":
                moment = arg if isinstance(arg, datetime) else datetime.fromisoformat(str(arg))
                return moment if moment.tzinfo else moment.astimezone()
        except ValueError as err:
            raise self.error(path, str(err)) from None
        if isinstance(arg, bool) or not isinstance(arg, int | float):
            raise self.error(path, f"expected a number, not {arg!r}")
        return arg


def unknown_names(source: str) -> list[str]:
    """What an ``if:`` expression (syntax already proven) reads that no item context has:
    a name but ``item``, ``account``, ``now`` and Jinja's own, or an item field not there."""
    expr = source.strip().removeprefix("{{").removesuffix("}}")
    ast = jinja2.Environment().parse(f"{{{{ {expr} }}}}")
    known = {*IF_NAMES, *jinja2.defaults.DEFAULT_NAMESPACE}
    names = sorted({n.name for n in ast.find_all(nodes.Name) if n.ctx == "load"} - known)
    sees = ", ".join(IF_NAMES)
    problems = [f"{name!r} is not defined here; a condition sees: {sees}" for name in names]
    for node in ast.find_all(nodes.Getattr):
        inner, key = node.node, node.attr
        is_item = isinstance(inner, nodes.Name) and inner.name == "item"
        if is_item and key not in (*FIELDS, "raw"):
            problems.append(f"'item' has no field {key!r} (fields: {', '.join(FIELDS)}, raw)")
    return problems


def _comparable(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return len(value)
    if isinstance(value, int | float | datetime | timedelta) and not isinstance(value, bool):
        return value
    return None


def union_fields(parts: Any) -> frozenset[str] | None:
    result: set[str] = set()
    for fields in parts:
        if fields is None:
            return None
        result |= fields
    return frozenset(result)
