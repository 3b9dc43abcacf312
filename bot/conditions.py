"""``when:`` conditions compiled once into predicates over an item's fields.

A plain value means equals, a list means any-of; operators ``regex``,
``contains``, ``startswith``, ``endswith``, ``in``, ``eq``, ``ne``,
``gt``/``gte``/``lt``/``lte`` (numbers, dates, durations) and ``not``; the
combinators ``any``, ``all``, ``not`` and ``if`` (a Jinja expression) nest.
``contains``/``startswith``/``endswith`` ignore case; ``regex`` is as written.
On a list field (``links``, ``attachments`` by name) a text test holds when it
holds for any element, and a comparison compares the count.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bot.config import parse_duration
from bot.errors import ConfigError
from bot.render import Renderer
from bot.yamlfile import Path_, YamlDoc, dotted

Context = Mapping[str, Any]  # {"item": item fields, "account": …, "now": …}, as templates see it
Predicate = Callable[[Context], bool]

FIELDS = (
    "account", "feed", "kind", "id", "sender", "recipient", "subject", "text", "html",
    "unread", "created_at", "age", "url", "attachments", "links", "upstream",
)  # fmt: skip
_COMPARE = {"gt": operator.gt, "gte": operator.ge, "lt": operator.lt, "lte": operator.le}
_TEXT_OPS = ("regex", "contains", "startswith", "endswith")
OPERATORS = (*_TEXT_OPS, "in", "eq", "ne", "not", *_COMPARE)
COMBINATORS = ("any", "all", "not", "if")


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


def _read(context: Context, key: str) -> Any:
    value: Any = context["item"]
    for part in key.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _texts(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [str(v.get("name", "")) if isinstance(v, Mapping) else str(v) for v in value]
    return [str(value)]


class WhenCompiler:
    """Compiles one rule's ``when:``; errors name the rule file and line."""

    def __init__(self, doc: YamlDoc, renderer: Renderer) -> None:
        self.doc = doc
        self.renderer = renderer

    def error(self, path: Path_, message: str) -> ConfigError:
        return self.doc.error(path, f"{dotted(path)}: {message}")

    def compile(self, spec: Any, path: Path_) -> Compiled:
        if not isinstance(spec, dict):
            raise self.error(path, "conditions must be a mapping of fields to values")
        parts = [self._entry(key, value, (*path, key)) for key, value in spec.items()]
        preds = [p.predicate for p in parts]
        named = tuple((key, p.predicate, p.fields) for key, p in zip(spec, parts, strict=True))
        fields = union_fields(p.fields for p in parts)
        return Compiled(lambda f: all(p(f) for p in preds), fields, named)

    def _entry(self, key: str, value: Any, path: Path_) -> Compiled:
        if key in ("any", "all"):
            return self._combine(key, value, path)
        if key == "not":
            inner = self.compile(value, path)
            return Compiled(lambda f: not inner.predicate(f), inner.fields)
        if key == "if":
            cond = self.renderer.condition(str(value), file=self.doc.file, line=self.doc.line(path))
            return Compiled(cond, cond.fields_used)
        top = key.split(".", 1)[0]
        if top not in (*FIELDS, "raw"):
            allowed = ", ".join((*FIELDS, "raw.<key>", *COMBINATORS))
            raise self.error(path, f"unknown field {key!r}; allowed: {allowed}")
        test = self._value_test(key, value, path)
        return Compiled(lambda f: test(_read(f, key)), frozenset({top}))

    def _combine(self, key: str, value: Any, path: Path_) -> Compiled:
        if not isinstance(value, list) or not value:
            raise self.error(path, f"{key} takes a non-empty list of conditions")
        parts = [self.compile(v, (*path, i)) for i, v in enumerate(value)]
        preds = [p.predicate for p in parts]
        join = any if key == "any" else all
        return Compiled(lambda f: join(p(f) for p in preds), union_fields(p.fields for p in parts))

    def _value_test(self, key: str, value: Any, path: Path_) -> Callable[[Any], bool]:
        if isinstance(value, list):
            options = [self._equals(key, v, path) for v in value]
            return lambda x: any(t(x) for t in options)
        if isinstance(value, dict):
            tests = [self._operator(key, op, arg, (*path, op)) for op, arg in value.items()]
            return lambda x: all(t(x) for t in tests)
        return self._equals(key, value, path)

    def _equals(self, key: str, expected: Any, path: Path_) -> Callable[[Any], bool]:
        if isinstance(expected, dict | list):
            raise self.error(path, "expected a plain value here")
        want = self._operand(key, expected, path) if key in ("age", "created_at") else expected
        if key in ("links", "attachments"):
            return lambda x: str(want) in _texts(x)
        return lambda x: bool(x == want)

    def _operator(self, key: str, op: str, arg: Any, path: Path_) -> Callable[[Any], bool]:
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
            return lambda x: any(pattern.search(t) for t in _texts(x))
        needle = str(arg).casefold()
        method = {"contains": str.__contains__, "startswith": str.startswith}.get(op, str.endswith)
        return lambda x: any(method(t.casefold(), needle) for t in _texts(x))

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
