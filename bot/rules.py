"""Rules: loaded and compiled once, then ``plan(rules, item)`` turns an item into steps.

A rule is ``when`` → ``extract`` → ``notify`` → ``then``. Planning is pure: it
reads the item and returns the deliveries and actions to perform, each with a
stable id, so the outbox can record what is done and resume the rest.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BeforeValidator, Field, ValidationError, model_validator

from bot.conditions import FIELDS, Compiled, Context, WhenCompiler, listing
from bot.config import Duration, Limit, Model, parse_duration, validation_errors
from bot.detail import Detail, DetailReads, when_raw_keys
from bot.digest import context as digest_context
from bot.digest import samples
from bot.errors import ConfigError, ConfigErrors, RenderError
from bot.item import Item
from bot.markup import ESCAPERS
from bot.prove import Prover, targets
from bot.render import InlineTemplate, NamedTemplate, Renderer
from bot.windows import show_duration
from bot.yamlfile import Path_, YamlDoc, dotted, load_yaml

PRIORITIES = ("min", "low", "default", "high", "urgent")
T = TypeVar("T")


def _priority(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 5:
        return PRIORITIES[value - 1]
    return value


def _listed(value: Any) -> Any:
    return [value] if isinstance(value, dict | str) else value


class Group(Model):
    """A notify's digest: the first item opens the group, ``wait`` later it goes out as one
    notification; what arrives later goes out every ``interval``; ``max`` listed per message."""

    by: Annotated[list[str], BeforeValidator(lambda v: [v] if isinstance(v, str) else v)] = Field(
        default_factory=list
    )
    wait: Duration = timedelta(seconds=30)
    interval: Duration = timedelta(minutes=10)
    max: int = Field(25, ge=1, le=500)
    template: str | None = None

    def describe(self) -> str:
        by = f" by {', '.join(self.by)}" if self.by else ""
        return (
            f"grouped{by}: first after {show_duration(self.wait)}, then every "
            f"{show_duration(self.interval)}, {self.max} listed per message"
        )


class NotifySpec(Model):
    sink: str
    template: str | None = None
    title: str | None = None
    message: str | None = None
    priority: Annotated[
        Literal["min", "low", "default", "high", "urgent"], BeforeValidator(_priority)
    ] = "default"
    options: dict[str, Any] = Field(default_factory=dict)
    group: Group | None = None

    @model_validator(mode="after")
    def _one_source(self) -> NotifySpec:
        if self.template and (self.title or self.message):
            raise ValueError("give either template or title/message, not both")
        if not self.template and self.message is None:
            raise ValueError("give a template, or an inline message (and title)")
        return self


class ExtractSpec(Model):
    from_: str = Field(alias="from")
    regex: str


class RuleSpec(Model):
    name: str = Field(min_length=1)
    description: str | None = None
    enabled: bool = True
    when: dict[str, Any] = Field(default_factory=dict)
    extract: dict[str, ExtractSpec] = Field(default_factory=dict)
    notify: Annotated[list[NotifySpec], BeforeValidator(_listed)] = Field(default_factory=list)
    then: Annotated[list[str | dict[str, Any]], BeforeValidator(_listed)] = Field(
        default_factory=list
    )
    stop: bool = False
    group: Group | None = None  # for each notify without its own
    limit: Limit | None = None  # per sink: the first N a period, the rest in one digest


@dataclass(frozen=True)
class Notify:
    sink: str
    priority: str
    options: Mapping[str, Any]
    template: NamedTemplate | None = None
    title: InlineTemplate | None = None
    message: InlineTemplate | None = None
    group: Group | None = None
    digest: NamedTemplate | None = None  # the group's own digest template


@dataclass(frozen=True)
class Action:
    name: str
    after: timedelta | None = None
    args: Mapping[str, Any] = field(default_factory=dict)
    message: InlineTemplate | None = None  # a reply's text, rendered like a notification


@dataclass(frozen=True)
class Extract:
    source: str
    pattern: re.Pattern[str]

    def apply(self, fields: Mapping[str, Any]) -> str:
        """The first group of the first match, or the match itself; from a list field
        (``links``) without a group, the whole matching element. Empty when none."""
        value = fields.get(self.source)
        listed = isinstance(value, list | tuple)
        texts: Sequence[Any] = value if isinstance(value, list | tuple) else [value]
        for text in texts:
            match = self.pattern.search(str(text)) if text is not None else None
            if match and self.pattern.groups:
                return match.group(1) or ""
            if match:
                return str(text) if listed else match.group(0)
        return ""


@dataclass(frozen=True)
class Rule:
    name: str
    file: str
    line: int | None
    when: Compiled
    extract: Mapping[str, Extract]
    notify: tuple[Notify, ...]
    then: tuple[Action, ...]
    stop: bool
    detail: Detail  # what of an item's detail it reads, and why
    accounts: frozenset[str]  # the accounts whose items this rule can see
    limit: tuple[int, float] | None = None

    @property
    def needs_detail(self) -> bool:
        """Whether some item's detail may be needed (``detail.needed`` says for which)."""
        return self.detail.possible


@dataclass(frozen=True)
class Step:
    id: str
    rule: str
    kind: Literal["deliver", "act"]
    target: str  # a sink's name, or an action's name
    index: int
    notify: Notify | None = None
    action: Action | None = None


@dataclass(frozen=True)
class Match:
    rule: Rule
    extract: Mapping[str, str]
    steps: tuple[Step, ...]


def step_id(item: Item, rule: str, kind: str, target: str, index: int) -> str:
    key = "\x1f".join((item.account, item.feed, item.id, rule, kind, target, str(index)))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def plan(rules: Sequence[Rule], item: Item, context: Context) -> list[Match]:
    """The rules that match ``item`` in order, with their steps; pure."""
    matches: list[Match] = []
    for rule in rules:
        if item.account not in rule.accounts or not rule.when.predicate(context):
            continue
        extract = {name: ex.apply(context["item"]) for name, ex in rule.extract.items()}
        steps = [
            Step(
                step_id(item, rule.name, "deliver", n.sink, i),
                rule.name,
                "deliver",
                n.sink,
                i,
                notify=n,
            )
            for i, n in enumerate(rule.notify)
        ]
        steps += [
            Step(step_id(item, rule.name, "act", a.name, i), rule.name, "act", a.name, i, action=a)
            for i, a in enumerate(rule.then)
        ]
        matches.append(Match(rule, extract, tuple(steps)))
        if rule.stop:
            break
    return matches


def wants_detail(rules: Sequence[Rule], item: Item, context: Context) -> bool:
    """Whether planning ``item`` needs its detail (a body): some rule that reads one can still
    match, judged on the summary; a summary-only rule that matches and stops settles it."""
    for rule in rules:
        if item.account not in rule.accounts:
            continue
        if rule.detail.needed(item.raw):
            if not rule.when.ruled_out(context, rule.detail.unknown(item.raw)):
                return True
        elif rule.stop and rule.when.predicate(context):
            return False
    return False


@dataclass(frozen=True)
class AccountCaps:
    """What rule checking needs to know of an account: its kinds and their actions."""

    type: str
    actions: Mapping[str, frozenset[str]]  # kind → actions
    samples: Mapping[str, Item] = field(default_factory=dict)  # kind → a sample item
    feeds: tuple[str, ...] = ()  # the feeds it polls (enabled or not); () when not known


@dataclass(frozen=True)
class SinkCaps:
    """What rule checking needs to know of a sink."""

    sink_type: str
    detail: bool = False  # whether every item it gets is fetched whole first (`detail: true`)
    options: type[Model] = Model  # what its notify `options:` may hold
    format: str = "text"  # what its messages are written in


@dataclass
class RuleLoader:
    renderer: Renderer
    accounts: Mapping[str, AccountCaps]
    sinks: Mapping[str, SinkCaps]
    errors: list[ConfigError] = field(default_factory=list)
    prover: Prover = field(default_factory=Prover)
    allowed: Mapping[str, Mapping[str, None]] = field(default_factory=dict)

    def load(self, files: Sequence[Path]) -> list[Rule]:
        """Every rule of ``files``; raises ConfigErrors with all their problems, by line."""
        self.allowed = self._closed_values()
        rules: list[Rule] = []
        seen: dict[str, str] = {}
        for path in files:
            for rule in self._file(path):
                if rule.name in seen:
                    self.errors.append(
                        ConfigError(
                            f"rule name {rule.name!r} is used twice (also in {seen[rule.name]})",
                            rule.file,
                            rule.line,
                        )
                    )
                seen[rule.name] = f"{rule.file}:{rule.line}"
                rules.append(rule)
        if self.errors:
            raise ConfigErrors(self.errors)
        return rules

    def _file(self, path: Path) -> list[Rule]:
        try:
            doc = load_yaml(path, named=_by_rule)
        except ConfigError as err:
            self.errors.append(err)
            return []
        if doc.data is None:
            return []
        if not isinstance(doc.data, list):
            self.errors.append(doc.error((), "a rule file is a list of rules (- name: …)"))
            return []
        rules = []
        for i, raw in enumerate(doc.data):
            label = _label(raw, i)
            try:
                spec = RuleSpec.model_validate(raw)
                if spec.enabled:
                    rules.append(self._compile(doc, (i,), spec))
            except ValidationError as err:
                found = validation_errors(doc, (i,), err) + self._when_errors(doc, i, raw)
                self.errors += [_named(e, doc, i, label) for e in found]
            except ConfigErrors as err:
                self.errors += [_named(e, doc, i, label) for e in err.errors]
        return rules

    def _when_errors(self, doc: YamlDoc, i: int, raw: Any) -> list[ConfigError]:
        """The conditions' errors of a rule refused for its shape, so all show at once."""
        when = raw.get("when") if isinstance(raw, dict) else None
        if not isinstance(when, dict):
            return []
        compiler = WhenCompiler(doc, self.renderer, self.allowed)
        compiler.compile(when, (i, "when"))
        return compiler.errors

    def _closed_values(self) -> dict[str, dict[str, None]]:
        """The values ``when:`` may name for the closed fields, in configuration order."""
        caps = self.accounts.values()
        allowed = {
            "account": dict.fromkeys(self.accounts),
            "upstream": dict.fromkeys(c.type for c in caps),
            "kind": dict.fromkeys(k for c in caps for k in c.actions),
        }
        if all(c.feeds for c in caps):
            allowed["feed"] = dict.fromkeys(f for c in caps for f in c.feeds)
        return allowed

    def _compile(self, doc: YamlDoc, at: Path_, spec: RuleSpec) -> Rule:
        """The rule compiled; raises ConfigErrors with every problem of its when, extract,
        notify and then."""
        compiler = WhenCompiler(doc, self.renderer, self.allowed)
        when = compiler.compile(spec.when, (*at, "when"))
        errors = compiler.errors
        accounts = self._accounts(spec.when)
        if not accounts and not errors:
            errors.append(self._reaches_none(doc, (*at, "when"), spec.when))
        extract = {}
        for key, ex in spec.extract.items():
            if (
                compiled := _kept(errors, self._extract, doc, (*at, "extract", key), ex)
            ) is not None:
                extract[key] = compiled
        notify = tuple(
            n
            for i, spec_n in enumerate(spec.notify)
            if (n := _kept(errors, self._notify, doc, (*at, "notify", i), spec_n, spec)) is not None
        )
        then = tuple(
            a
            for i, raw in enumerate(spec.then)
            if (a := _kept(errors, self._action, doc, (*at, "then", i), raw, accounts, spec))
            is not None
        )
        if errors:
            raise ConfigErrors(errors)
        detail = self._detail(spec.when, when, extract, notify, then)
        line = doc.line(at)
        rule = Rule(
            spec.name,
            doc.file,
            line,
            when,
            extract,
            notify,
            then,
            spec.stop,
            detail,
            accounts,
            spec.limit,
        )
        self._prove(doc, at, rule, spec.when)
        return rule

    def _detail(
        self,
        spec: Mapping[str, Any],
        when: Compiled,
        extract: Mapping[str, Extract],
        notify: Sequence[Notify],
        then: Sequence[Action],
    ) -> Detail:
        """What of an item's detail the compiled rule reads, each read with who reads it."""
        reads = DetailReads()
        for key, _, fields in when.parts:
            reads.add(f"condition {key!r}", fields, when_raw_keys({key: spec[key]}, self.renderer))
        for name, ex in extract.items():
            reads.add(f"extract {name!r}", frozenset({ex.source}))
        for n in notify:
            for who, t in _templates(n):
                reads.add(who, t.fields_used, t.raw_used)
            if self.sinks[n.sink].detail:
                reads.need(f"sink {n.sink!r} has detail: true")
            if n.options.get("attach"):
                reads.need(f"sink {n.sink!r} attaches the item's files")
        for a in then:
            if a.message:
                reads.add(f"the {a.name} message", a.message.fields_used, a.message.raw_used)
        return reads.build()

    def _accounts(self, when: Mapping[str, Any]) -> frozenset[str]:
        names = set(self.accounts)
        named = _closed(when.get("account"))
        if named is not None:
            names &= named
        upstreams = _closed(when.get("upstream"))
        if upstreams is not None:
            names = {n for n in names if self.accounts[n].type in upstreams}
        kinds = _closed(when.get("kind"))
        if kinds is not None:
            names = {n for n in names if kinds & set(self.accounts[n].actions)}
        feeds = _closed(when.get("feed"))
        if feeds is not None and "feed" in self.allowed:
            names = {n for n in names if feeds & set(self.accounts[n].feeds)}
        return frozenset(names)

    def _reaches_none(self, doc: YamlDoc, at: Path_, when: Mapping[str, Any]) -> ConfigError:
        """Why a rule whose values all exist still reaches no account: their combination."""
        named = ", ".join(f"{k}: {when[k]}" for k in CLOSED_KEYS if k in when)
        if not self.accounts:
            return doc.error(at, f"{dotted(at)}: no account is configured, so no item can match")
        accounts = listing(
            f"{n} ({c.type}: {', '.join(c.actions)})" for n, c in self.accounts.items()
        )
        message = f"no configured account has {named} together; accounts: {accounts}"
        return doc.error(at, f"{dotted(at)}: {message}")

    def _notify(self, doc: YamlDoc, at: Path_, spec: NotifySpec, rule_spec: RuleSpec) -> Notify:
        rule = rule_spec.name
        if spec.sink not in self.sinks:
            allowed = ", ".join(sorted(self.sinks)) or "none configured"
            raise doc.error(
                (*at, "sink"),
                f"{dotted(at)}.sink: unknown sink {spec.sink!r}; configured: {allowed}",
            )
        self._check_options(doc, at, spec)
        where = f"notify[{at[-1]}]"
        group, digest = self._group(doc, at, spec, rule_spec)
        if spec.template:
            label, load = f"{where}.template {spec.template!r}", self.renderer.load
            template = self._template(doc, rule, label, (*at, "template"), load, spec.template)
            return Notify(
                spec.sink, spec.priority, spec.options, template=template, group=group,
                digest=digest,
            )  # fmt: skip
        inline = self.renderer.inline
        title = self._template(doc, rule, f"{where}.title", (*at, "title"), inline, spec.title)
        message = self._template(
            doc, rule, f"{where}.message", (*at, "message"), inline, spec.message
        )
        return Notify(
            spec.sink, spec.priority, spec.options, title=title, message=message, group=group,
            digest=digest,
        )  # fmt: skip

    def _group(
        self, doc: YamlDoc, at: Path_, spec: NotifySpec, rule: RuleSpec
    ) -> tuple[Group | None, NamedTemplate | None]:
        """The notify's group (its own, else its rule's), ``by`` checked, with the digest
        template compiled."""
        group = spec.group or rule.group
        if group is None:
            return None, None
        where = (*at, "group") if spec.group else (at[0], "group")
        names = (*FIELDS, *rule.extract)
        for i, name in enumerate(group.by):
            if name not in names:
                path = (*where, "by", i)
                raise doc.error(path, f"{dotted(path)}: unknown field {name!r}; allowed: "
                                f"{', '.join(names)}")  # fmt: skip
        if group.template is None:
            return group, None
        label = f"{'notify[' + str(at[-1]) + '].' if spec.group else ''}group.template"
        label += f" {group.template!r}"
        path = (*where, "template")
        digest = self._template(doc, rule.name, label, path, self.renderer.load, group.template)
        if digest is not None:
            self._prove_digest(doc, path, label, digest, spec.sink, rule)
        return group, digest

    def _prove_digest(
        self, doc: YamlDoc, path: Path_, label: str, digest: NamedTemplate, sink: str,
        rule: RuleSpec,
    ) -> None:  # fmt: skip
        """The digest template rendered on a sample group of three items."""
        items = [s for a in sorted(self._accounts(rule.when))
                 for s in self.accounts[a].samples.values()]  # fmt: skip
        if not items:
            return
        now = datetime.now(UTC)
        fmt = self.sinks[sink].format
        ctx = digest_context(samples(items, list(rule.extract), rule.name, now), listed=2,
                             group={}, now=now, fmt=fmt)  # fmt: skip
        try:
            digest.render(ctx, ESCAPERS[fmt])
        except RenderError as err:
            message = f"rule {rule.name!r} {label}: on a sample group of three items: {err}"
            self.errors.append(ConfigError(message, doc.file, doc.line(path)))

    def _template(
        self, doc: YamlDoc, rule: str, label: str, at: Path_, make: Callable[..., T],
        source: str | None,
    ) -> T | None:  # fmt: skip
        """A compiled template, or None with its error recorded: every one of a file is told."""
        line = doc.line(at)
        try:
            return make(source or "", file=doc.file, line=line)
        except ConfigError as err:
            if err.file == doc.file:
                self.errors.append(
                    ConfigError(f"rule {rule!r} {label}: {err.message}", err.file, err.line)
                )
            else:  # in a template file: told once, whichever rules use it
                found = self.prover.error(
                    rule, label, doc.file, line, err.file, err.line, err.message
                )
                self.errors += [found] if found else []
            return None

    def _prove(self, doc: YamlDoc, at: Path_, rule: Rule, when: Mapping[str, Any]) -> None:
        """Each template of the rule rendered on a sample of each upstream kind it can see."""
        kinds = when.get("kind")
        wanted = {kinds} if isinstance(kinds, str) else set(kinds or ())
        samples: dict[tuple[str, str], Item] = {}
        for account in sorted(rule.accounts):
            caps = self.accounts[account]
            for kind, sample in caps.samples.items():
                if not wanted or kind in wanted:
                    samples.setdefault((caps.type, kind), sample)
        formats = {name: sink.format for name, sink in self.sinks.items()}
        found = self.prover.prove(
            rule, lambda key: doc.line((*at, *key)), targets(rule, formats), [*samples.values()]
        )
        self.errors += found

    def _check_options(self, doc: YamlDoc, at: Path_, spec: NotifySpec) -> None:
        caps = self.sinks[spec.sink]
        try:
            caps.options.model_validate(spec.options)
        except ValidationError as err:
            first = err.errors()[0]
            where = (*at, "options", *(str(p) for p in first["loc"]))
            takes = ", ".join(sorted(caps.options.model_fields)) or "none"
            problem = (
                f"sink {spec.sink!r} ({caps.sink_type}) has no such option; it takes: {takes}"
                if first["type"] == "extra_forbidden"
                else first["msg"]
            )
            raise doc.error(where, f"{dotted(where)}: {problem}") from None

    def _extract(self, doc: YamlDoc, at: Path_, spec: ExtractSpec) -> Extract:
        if at[-1] in TAKEN_NAMES:
            taken = ", ".join(TAKEN_NAMES)
            message = f"{at[-1]!r} is a name templates already have ({taken}); choose another"
            raise doc.error(at, f"{dotted(at)}: {message}")
        if spec.from_ not in FIELDS:
            message = f"unknown field {spec.from_!r}; allowed: {', '.join(FIELDS)}"
            raise doc.error((*at, "from"), f"{dotted(at)}.from: {message}")
        try:
            return Extract(spec.from_, re.compile(spec.regex))
        except re.error as err:
            raise doc.error(
                (*at, "regex"), f"{dotted(at)}.regex: bad regex {spec.regex!r}: {err}"
            ) from None

    def _action(
        self,
        doc: YamlDoc,
        at: Path_,
        raw: str | dict[str, Any],
        accounts: frozenset[str],
        rule: RuleSpec,
    ) -> Action:
        name, args = (raw, {}) if isinstance(raw, str) else _single(doc, at, raw)
        kinds = rule.when.get("kind")
        for account in sorted(accounts):
            caps = self.accounts[account]
            for kind, allowed in caps.actions.items():
                if kinds and kind not in (kinds if isinstance(kinds, list) else [kinds]):
                    continue
                if name not in allowed:
                    can = ", ".join(sorted(allowed)) or "none"
                    where = f"account {account!r} ({caps.type} {kind})"
                    message = f"action {name!r} is not available for {where}; it can do: {can}"
                    raise doc.error(at, f"{dotted(at)}: {message}")
        after = args.pop("after", None)
        try:
            delay = parse_duration(after) if after is not None else None
        except ValueError as err:
            raise doc.error((*at, name, "after"), f"{dotted(at)}.{name}.after: {err}") from None
        message = args.pop("message", None)
        kept = {"to": args.pop("to", None)} if name == "move" else {}  # move: {to: FOLDER}
        if args:  # after and message are the only arguments an action takes (and move's to)
            key = next(iter(args))
            known = "after, to" if name == "move" else "after, message"
            problem = f"{dotted(at)}.{name}.{key}: unknown argument; allowed: {known}"
            raise doc.error((*at, name, key), problem)
        if kept and not (isinstance(kept["to"], str) and kept["to"]):
            raise doc.error(at, f"{dotted(at)}: move needs a folder: {{move: {{to: Archive}}}}")
        if (message is None) == (name == "reply"):
            problem = (
                'reply needs a message: {reply: {message: "…"}}'
                if name == "reply"
                else f"{name} takes no message (only reply does)"
            )
            raise doc.error(at, f"{dotted(at)}: {problem}")
        template = (
            self._template(
                doc, rule.name, f"then[{at[-1]}].{name}.message", (*at, name, "message"),
                self.renderer.inline, str(message),
            )
            if message is not None
            else None
        )  # fmt: skip
        return Action(name, delay, kept or args, template)


TAKEN_NAMES = ("item", "rule", "account", "now", "format")  # an extraction would hide them
CLOSED_KEYS = ("account", "upstream", "kind", "feed")


def _closed(value: Any) -> set[str] | None:
    """A closed key's value (one name or a list of them) as names; None when not given."""
    if isinstance(value, str):
        return {value}
    return {str(v) for v in value} if isinstance(value, list) else None


def _kept(errors: list[ConfigError], compile: Callable[..., T], *args: Any) -> T | None:
    """``compile(*args)``, or None with its errors kept (several, from ConfigErrors)."""
    try:
        return compile(*args)
    except ConfigError as err:
        errors += err.errors if isinstance(err, ConfigErrors) else [err]
        return None


def _label(raw: Any, index: int) -> str:
    name = raw.get("name") if isinstance(raw, dict) else None
    return f"rule {name!r}" if isinstance(name, str) and name else f"rule #{index + 1}"


def _by_rule(doc: YamlDoc, errors: list[ConfigError]) -> list[ConfigError]:
    """A rule file's reading errors (duplicate keys, ``${…}``), each named by its rule."""
    rules = list(enumerate(doc.data)) if isinstance(doc.data, list) else []
    named = []
    for err in errors:
        holding = [(i, raw) for i, raw in rules if err.line and doc.lines[(i,)] <= err.line]
        if holding:
            index, raw = holding[-1]
            err = _named(err, doc, index, _label(raw, index))
        named.append(err)
    return named


def _named(err: ConfigError, doc: YamlDoc, index: int, label: str) -> ConfigError:
    """``err`` of the rule at ``index`` of ``doc``, naming it by ``label`` (``rule 'x'``) in
    place of its index: ``0.notify.0.sink: …`` → ``rule 'x' notify.0.sink: …``."""
    if err.file != doc.file:
        return err  # a template file's own error: the same for every rule using it
    prefix = str(index)
    if err.message.startswith(f"{prefix}."):
        message = f"{label} {err.message[len(prefix) + 1 :]}"
    elif err.message.startswith(f"{prefix}:"):
        message = f"{label}{err.message[len(prefix) :]}"
    else:
        message = f"{label}: {err.message}"
    return ConfigError(message, err.file, err.line)


def _single(doc: YamlDoc, at: Path_, raw: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if len(raw) != 1:
        raise doc.error(at, f"{dotted(at)}: an action is a name, or one name with its arguments")
    name, args = next(iter(raw.items()))
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise doc.error(at, f"{dotted(at)}.{name}: arguments must be a mapping (e.g. after: 1h)")
    return str(name), dict(args)


def _templates(n: Notify) -> list[tuple[str, NamedTemplate | InlineTemplate]]:
    if n.template is not None:
        return [(f"template {n.template.name!r}", n.template)]
    inline = (("title", n.title), ("message", n.message))
    return [(f"the {part} for {n.sink!r}", t) for part, t in inline if t is not None]
