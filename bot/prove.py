"""`check` renders every template of a rule on sample items, so that a name a template gets
wrong is refused now, not found on the first real item (where the notification is lost).

Each upstream gives a sample item of each kind (``Source.samples``): every field filled and
typed as on a real one, ``raw`` the upstream's own record. Item fields are strict. A ``raw``
key the sample lacks reads as empty, and what a template does with it passes: a real record
may hold it. Besides rendering, every `item.x` and plain name a template reads is checked,
also in branches a sample does not take.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jinja2 import ChainableUndefined, TemplateError
from jinja2.defaults import DEFAULT_NAMESPACE
from jinja2.filters import FILTERS as JINJA_FILTERS

from bot.errors import ConfigError
from bot.item import Item
from bot.markup import ESCAPERS
from bot.render import (
    FILTERS,
    ITEM_NAMES,
    InlineTemplate,
    NamedTemplate,
    Reference,
    RenderFailure,
    no_field,
    template_context,
)
from bot.yamlfile import Path_

if TYPE_CHECKING:
    from bot.rules import Rule

NAMES = ("item", "rule", "account", "now")  # besides the extractions (and `format`)
_UNDEFINED = re.compile(r"'(\w+)' is undefined")
SAMPLE_TEXT = "123456"  # what each extraction holds on a sample
_FILTER_CODE = {
    f.__code__: name for name, f in {**JINJA_FILTERS, **FILTERS}.items() if hasattr(f, "__code__")
}


class RawUnknown(ChainableUndefined):
    """A ``raw`` key the sample lacks: empty, and so is each key under it. What fails on it
    (``+ 1``, ``| round``) only a real record can tell."""

    __slots__ = ()


class SampleRaw(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        return RawUnknown(name=key)


def lenient(value: Any) -> Any:
    """A sample's ``raw``, where a key it lacks is a RawUnknown, at every depth."""
    if isinstance(value, Mapping):
        return SampleRaw({k: lenient(v) for k, v in value.items()})
    if isinstance(value, list):
        return [lenient(v) for v in value]
    return value


@dataclass(frozen=True)
class Target:
    """One template of a rule, as the pipeline renders it."""

    label: str  # `notify[0].message`, `then[1].reply.message`, `notify[0].template 'email'`
    template: NamedTemplate | InlineTemplate
    key: Path_  # where the rule gives it, from the rule: ("notify", 0, "message")
    format: str | None  # the sink's format; None: a reply (its context has no `format`)
    escaped: bool = True  # a message's outputs are escaped for the format; a title's are not


def targets(rule: Rule, formats: Mapping[str, str]) -> list[Target]:
    """Every template of ``rule``; ``formats`` maps each sink to its format."""
    found: list[Target] = []
    for i, n in enumerate(rule.notify):
        fmt = formats[n.sink]
        if n.template:
            label = f"notify[{i}].template {n.template.name!r}"
            found.append(Target(label, n.template, ("notify", i, "template"), fmt))
        for key, t in (("title", n.title), ("message", n.message)):
            if t is not None:
                where = ("notify", i, key)
                found.append(Target(f"notify[{i}].{key}", t, where, fmt, key == "message"))
    found += [
        Target(f"then[{i}].{a.name}.message", a.message, ("then", i, a.name, "message"), None)
        for i, a in enumerate(rule.then) if a.message is not None
    ]  # fmt: skip
    return found


def attempt(target: Target, ctx: dict[str, Any]) -> RenderFailure | None:
    """How rendering ``target`` fails in ``ctx``, if it does (and can be known to)."""
    escape = ESCAPERS[target.format] if target.format and target.escaped else None
    try:
        target.template.render(ctx | ({"format": target.format} if target.format else {}), escape)
    except RenderFailure as err:
        return None if _unknowable(err.cause) else err
    return None


def _unknowable(err: Exception) -> bool:
    """Whether ``err`` comes from a RawUnknown: a Python frame (not a template's) holds one."""
    tb = err.__traceback__
    while tb is not None:
        frame = tb.tb_frame
        if "__jinja_template__" not in frame.f_globals and any(
            isinstance(value, RawUnknown) for value in frame.f_locals.values()
        ):
            return True
        tb = tb.tb_next
    return False


def describe(err: RenderFailure) -> str:
    """At run time a Python error shows as its type only, to keep item content out; on a
    sample (or a test's item) it can say what went wrong, and in which filter."""
    cause = err.cause
    if isinstance(cause, TemplateError):
        return err.reason
    tb, name = cause.__traceback__, None
    while tb is not None and name is None:
        name, tb = _FILTER_CODE.get(tb.tb_frame.f_code), tb.tb_next
    text = f"{type(cause).__name__}: {cause}"[:200]
    return f"filter {name!r} cannot take this value ({text})" if name else text


_Failure = tuple[str | None, int | None, str]  # template file (None: inline), line, reason


@dataclass
class Prover:
    """Proves rules' templates; each (template, sample, format, extractions) renders once."""

    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    _rendered: dict[tuple[Any, ...], _Failure | None] = field(default_factory=dict)
    _seen: set[tuple[str, int | None, str]] = field(default_factory=set)

    def prove(
        self, rule: Rule, line: Callable[[Path_], int | None], targets: Sequence[Target],
        samples: Sequence[Item],
    ) -> list[ConfigError]:  # fmt: skip
        """Every problem of the rule's templates on each sample, each once; ``line`` gives
        the line of a key of the rule."""
        errors: list[ConfigError] = []
        extract = list(rule.extract)
        for target in targets:
            for template_file, at, reason in self._failures(rule.name, target, samples, extract):
                reason = _hint(reason, extract, target.format)
                error = self.error(rule.name, target.label, rule.file, line(target.key),
                                   template_file, at, reason)  # fmt: skip
                errors += [error] if error else []
        return errors

    def _failures(
        self, rule: str, target: Target, samples: Sequence[Item], extract: Sequence[str]
    ) -> list[_Failure]:
        """The names it reads that do not exist, then what fails when rendered on a sample."""
        names = {*NAMES, *extract, *DEFAULT_NAMESPACE, *(["format"] if target.format else [])}
        found = [f for ref in target.template.references if (f := _static(ref, names))]
        for sample in samples:
            failure = self._render(rule, target, sample, extract)
            if failure is not None and failure[2] not in {f[2] for f in found}:
                found.append(failure)
        return found

    def error(
        self, rule: str, label: str, file: str, line: int | None,
        template_file: str | None, template_line: int | None, reason: str,
    ) -> ConfigError | None:  # fmt: skip
        """The error located in the template file when it is one (once, whichever rule uses
        it), else at the rule's key."""
        if template_file is None or template_file == file:
            inner = f" (line {template_line} of the template)" if (template_line or 1) > 1 else ""
            return ConfigError(f"rule {rule!r} {label}: {reason}{inner}", file, line)
        key = (template_file, template_line, reason)
        if key in self._seen:
            return None
        self._seen.add(key)
        where = f"{file}:{line}" if line else file
        message = f"rule {rule!r} {label} ({where}): {reason}"
        return ConfigError(message, template_file, template_line)

    def _render(
        self, rule: str, target: Target, sample: Item, extract: Sequence[str]
    ) -> _Failure | None:
        key = (target.template.template, sample.upstream, sample.kind, target.format,
               target.escaped, tuple(extract))  # fmt: skip
        if key not in self._rendered:
            ctx = template_context(
                sample, now=self.now, rule=rule, extract=dict.fromkeys(extract, SAMPLE_TEXT)
            )
            ctx["item"]["raw"] = lenient(sample.raw)
            err = attempt(target, ctx)
            self._rendered[key] = (
                (err.filename, err.line, describe(err) + _on(sample, err)) if err else None
            )
        return self._rendered[key]


def _on(sample: Item, err: RenderFailure) -> str:
    """Which sample a value error came from, and what that upstream leaves empty."""
    if isinstance(err.cause, TemplateError):
        return ""
    empty = [f for f in ("html", "unread", "url") if getattr(sample, f) is None]
    empty += [] if sample.attachments else ["attachments"]
    never = f"; it never has {', '.join(empty)}: guard with {{% if … %}}" if empty else ""
    return f" (on a {sample.upstream} {sample.kind}{never})"


def _static(ref: Reference, names: set[str]) -> _Failure | None:
    if ref.field:
        return ref.filename, ref.line, no_field("item", ref.name, ITEM_NAMES)
    if ref.name not in names:
        return ref.filename, ref.line, f"{ref.name!r} is undefined"
    return None


def _hint(reason: str, extract: Sequence[str], fmt: str | None) -> str:
    """`'cod' is undefined` with the names there are."""
    undefined = _UNDEFINED.fullmatch(reason)
    if not undefined:
        return reason
    if undefined[1] == "format" and not fmt:
        return f"{reason} (a reply has no format: only notifications do)"
    if undefined[1] in (*NAMES, "format"):  # only where an import leaves the context behind
        return f"{reason} (an imported macro sees it only when imported `with context`)"
    also = ", ".join([*NAMES, *(["format"] if fmt else [])])
    return f"{reason} (extractions: {', '.join(extract) or 'none'}; also: {also})"
