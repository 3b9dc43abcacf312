"""The template layer: sandboxed Jinja2 for notification titles, messages and `if:` conditions.

Template files (`templates/dmail.j2`) define the blocks `title` and `message`; rules may give
inline templates and `if: "{{ expression }}"` conditions instead. Item content is data, never
a template: undefined names and sandbox refusals become a one-line RenderError. Each compiled
template knows which item fields it reads (`fields_used`), so detail fields such as a mail's
body are fetched only when needed.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    Template,
    TemplateError,
    TemplateNotFound,
    TemplateSyntaxError,
    meta,
    nodes,
    pass_context,
)
from jinja2.environment import TemplateExpression
from jinja2.runtime import Context, Macro
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from bot.errors import ConfigError, RenderError
from bot.item import Item
from bot.markup import Escaper, escape_markdown
from bot.syntax import syntax_message, unclosed
from bot.text import find_links, html_to_text

ITEM_NAMES = (*(f.name for f in dataclasses.fields(Item) if f.name != "complete"), "age")
ITEM_FIELDS = frozenset(ITEM_NAMES)
BLOCKS = ("title", "message")
ESCAPE = "inboxbot escape"  # a context key no template can assign: the sink's escaper
_Ref = nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport
_REFERENCES: tuple[type[_Ref], ...] = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*[\s/>]")
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))
Reads = Callable[[nodes.Node], frozenset[str] | None]
_DICT_METHODS = frozenset(name for name in dir(dict) if not name.startswith("_"))


def html2text(html: str | None) -> str:
    return html_to_text(html) if html else ""


def truncate(value: object, length: int = 200, end: str = "…") -> str:
    """At most `length` characters; cut at a word boundary if one lies in the last 20%."""
    text = "" if value is None else str(value)
    if len(text) <= length:
        return text
    if length <= len(end):
        return text[:length]
    room = length - len(end)
    # A space right after the cut also counts: the last word then fits whole.
    boundary = max(text.rfind(space, 0, room + 1) for space in " \n\t")
    cut = text[:boundary] if boundary >= room * 0.8 else text[:room]
    return cut.rstrip() + end


def md_escape(value: object) -> str:
    """Backslash every Markdown special, so content cannot change the formatting."""
    return "" if value is None else escape_markdown(str(value))


def links(value: str | None) -> list[str]:
    """Every URL in a text, or in an HTML document's links and text."""
    if not value:
        return []
    if _HTML_TAG.search(value):
        return list(find_links(html=value))
    return list(find_links(value))


@pass_context
def ago(context: Context, value: datetime | timedelta) -> str:
    """`5 minutes ago` for a datetime (measured from the context's `now`) or an age."""
    if isinstance(value, datetime):
        now = context.get("now") or datetime.now(UTC)
        value = now - value
    seconds = int(value.total_seconds())
    for unit, size in _UNITS:
        if seconds >= size:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'} ago"
    return "just now"


@pass_context
def escape_output(context: Context, value: object) -> object:
    """Every ``{{ … }}`` output through the sink's escaper, unless marked ``| safe``."""
    escape = context.get(ESCAPE)
    if escape is None or isinstance(value, Markup):
        return value
    return escape(str(value))


class Fields(dict[str, Any]):
    """An item's (or an attachment's) fields, named in the error for a field it lacks."""

    def __init__(self, label: str, values: Mapping[str, Any]) -> None:
        super().__init__(values)
        self.label = label


class FieldUndefined(StrictUndefined):
    """StrictUndefined that says which fields exist: `'item' has no field 'subjct' (…)`."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        fields, name = self._undefined_obj, self._undefined_name
        if isinstance(fields, Fields) and isinstance(name, str) and self._undefined_hint is None:
            return no_field(fields.label, name, fields)
        return str(super()._undefined_message)


def no_field(label: str, name: str, fields: Iterable[str]) -> str:
    return f"{label!r} has no field {name!r} (fields: {', '.join(fields)})"


def template_context(
    item: Item, *, now: datetime, rule: str, extract: Mapping[str, str],
    values: Mapping[str, Any] | None = None,
) -> dict[str, Any]:  # fmt: skip
    """What a template sees: the item's fields under `item` (``values`` when the caller has
    them already), the extractions by name, …"""
    fields = Fields("item", item.fields(now, with_raw=True) if values is None else values)
    fields["attachments"] = [Fields("attachment", a) for a in fields["attachments"]]
    return {"item": fields, **extract, "rule": rule, "account": item.account, "now": now}


class TemplateEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, where what a macro returns counts as template text: its outputs were
    escaped inside it, and escaping them again would show entities and backslashes."""

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        result = super().call(context, obj, *args, **kwargs)
        return Markup(result) if isinstance(obj, Macro) and isinstance(result, str) else result


FILTERS: dict[str, Callable[..., Any]] = {
    "html2text": html2text,
    "truncate": truncate,
    "md_escape": md_escape,
    "links": links,
    "ago": ago,
}


def template_fields(ast: nodes.Node) -> frozenset[str] | None:
    """Item fields an AST reads as `item.x` or `item["x"]`; None when `item` escapes whole."""
    found: set[str] = set()

    def visit(node: nodes.Node) -> bool:
        key = _item_field(node)
        if key is not None:
            found.add(key)
            return True
        if isinstance(node, nodes.Name) and node.name == "item":
            return False
        return all(visit(child) for child in node.iter_child_nodes())

    return frozenset(found) if visit(ast) else None


def _item_field(node: nodes.Node) -> str | None:
    key = _item_key(node)
    return key if key in ITEM_FIELDS else None


def _item_key(node: nodes.Node) -> str | None:
    """`x` of `item.x` or `item["x"]`."""
    if isinstance(node, nodes.Getattr):
        key: object = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
    else:
        return None
    inner = node.node
    is_item = isinstance(inner, nodes.Name) and inner.name == "item"
    return key if is_item and isinstance(key, str) else None


def raw_keys(ast: nodes.Node) -> frozenset[str] | None:
    """Keys of ``raw`` an AST reads as `item.raw.k` or `item.raw["k"]`; None when `item.raw`
    (or `item`) is used some other way (whole, by a variable key, `.get(…)`)."""
    found: set[str] = set()

    def visit(node: nodes.Node) -> bool:
        key = _raw_key(node)
        if key is not None:
            found.add(key)
            return True
        read = _item_field(node)
        if read is not None:
            return read != "raw"  # another field; or raw used whole
        if isinstance(node, nodes.Name) and node.name == "item":
            return False
        return all(visit(child) for child in node.iter_child_nodes())

    return frozenset(found) if visit(ast) else None


def _raw_key(node: nodes.Node) -> str | None:
    if isinstance(node, nodes.Getattr) and node.attr not in _DICT_METHODS:
        key: object = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
    else:
        return None
    return key if isinstance(key, str) and _item_field(node.node) == "raw" else None


def _fields_used(
    asts: Sequence[nodes.Template], literal: bool, reads: Reads = template_fields
) -> frozenset[str] | None:
    parts = [reads(ast) for ast in asts]
    known = [part for part in parts if part is not None]
    return frozenset[str]().union(*known) if literal and len(known) == len(parts) else None


@dataclass(frozen=True)
class Reference:
    """A name a template reads, wherever it is (a branch not taken on a sample, too): an
    item field that does not exist (`field`), or a plain name the template does not set."""

    name: str
    filename: str | None  # None: the inline template itself
    line: int
    field: bool


_Closure = list[tuple[nodes.Template, str | None]]


def references(closure: _Closure) -> tuple[Reference, ...]:
    """Unknown `item.x` in every template of the closure; names the root leaves undeclared."""
    found: list[Reference] = []
    for ast, filename in closure:
        named = {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        if "item" in named:  # `{% for item in … %}`: not the item any more
            continue
        for node in ast.find_all((nodes.Getattr, nodes.Getitem)):
            key = _item_key(node)
            if key is not None and key not in ITEM_FIELDS:
                found.append(Reference(key, filename, node.lineno, True))
    root, filename = closure[0]
    # A block sees what the template (or a parent) sets at its top: Jinja's scopes do not say so.
    undeclared = meta.find_undeclared_variables(root) - _declared(closure)
    first: dict[str, int] = {}
    for name in root.find_all(nodes.Name):
        if name.name in undeclared:
            first.setdefault(name.name, name.lineno)
    found += [Reference(name, filename, line, False) for name, line in first.items()]
    return tuple(found)


def _declared(closure: _Closure) -> set[str]:
    """Every name a template of the closure sets, defines or imports, wherever."""
    found: set[str] = set()
    for ast, _ in closure:
        found |= {n.name for n in ast.find_all(nodes.Name) if n.ctx in ("store", "param")}
        found |= {n.name for n in ast.find_all(nodes.Macro)}
        found |= {n.target for n in ast.find_all(nodes.Import)}
        for node in ast.find_all(nodes.FromImport):
            found |= {n if isinstance(n, str) else n[1] for n in node.names}
    return found


def _const_name(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _label(kind: str, file: str, line: int | None) -> str:
    if not file:
        return kind
    return f"{kind} at {file}:{line}" if line else f"{kind} at {file}"


class RenderFailure(RenderError):
    """A RenderError that knows where: the template file (None: an inline template), the
    line in it, the reason, and the exception behind it."""

    def __init__(
        self, where: str, filename: str | None, line: int | None, reason: str, cause: Exception
    ) -> None:
        super().__init__(f"{where}, line {line}: {reason}" if line else f"{where}: {reason}")
        self.where = where
        self.filename = filename
        self.line = line
        self.reason = reason
        self.cause = cause


def _failure(err: Exception, label: str) -> RenderFailure:
    """A one-line error naming the template and line; item content stays out of it."""
    where, filename, line = label, None, None
    tb = err.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template):
            where, filename = template.name or label, template.name and template.filename
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    reason = str(err) if isinstance(err, TemplateError) else ""
    reason = (reason.splitlines() or [type(err).__name__])[0][:200]
    return RenderFailure(where, filename, line, reason, err)


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    fields_used: frozenset[str] | None
    template: Template = field(repr=False, compare=False)
    raw_used: frozenset[str] | None = frozenset()  # keys of `item.raw` read; None: any
    references: tuple[Reference, ...] = field(default=(), repr=False, compare=False)

    def render(self, context: Mapping[str, Any], escape: Escaper | None = None) -> tuple[str, str]:
        """(title, message), each stripped; ``escape`` applies to the message's outputs
        (the title is plain text)."""
        try:
            ctx = self.template.new_context({**context, ESCAPE: None})
            # Running the whole template first executes top-level `set`, `import` and
            # `extends`, and gives ctx the full block chain that `super()` needs.
            for _ in self.template.root_render_func(ctx):
                pass
            title = "".join(ctx.blocks["title"][0](ctx)).strip()
            ctx.vars[ESCAPE] = escape
            message = "".join(ctx.blocks["message"][0](ctx)).strip()
        except Exception as err:
            raise _failure(err, f"template {self.name!r}") from None
        return title, message


@dataclass(frozen=True)
class InlineTemplate:
    fields_used: frozenset[str] | None
    template: Template = field(repr=False, compare=False)
    label: str = "inline template"
    raw_used: frozenset[str] | None = frozenset()  # keys of `item.raw` read; None: any
    references: tuple[Reference, ...] = field(default=(), repr=False, compare=False)

    def render(self, context: Mapping[str, Any], escape: Escaper | None = None) -> str:
        try:
            ctx = self.template.new_context({**context, ESCAPE: escape})
            return "".join(self.template.root_render_func(ctx)).strip()
        except Exception as err:
            raise _failure(err, self.label) from None


@dataclass(frozen=True)
class Condition:
    fields_used: frozenset[str] | None
    expression: TemplateExpression = field(repr=False, compare=False)
    label: str = "condition"
    raw_used: frozenset[str] | None = frozenset()  # keys of `item.raw` read; None: any

    def __call__(self, context: Mapping[str, Any]) -> bool:
        try:
            return bool(self.expression(context))
        except Exception as err:
            raise _failure(err, self.label) from None


class Renderer:
    """Sandboxed Jinja2: template files with blocks `title` and `message`, inline templates,
    `if:` expressions."""

    def __init__(self, template_dirs: Sequence[Path]) -> None:
        self._dirs = list(template_dirs)
        self._loader = FileSystemLoader(self._dirs)
        self._env = TemplateEnvironment(
            loader=self._loader,
            undefined=FieldUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=escape_output,
        )
        self._env.filters.update(FILTERS)
        # A big configuration names the same templates in many rules: each is read once.
        self._named: dict[str, NamedTemplate] = {}
        self._inline: dict[str, InlineTemplate] = {}

    def names(self) -> list[str]:
        found: dict[str, None] = {}
        for folder in self._dirs:
            for path in sorted(folder.glob("*.j2")):
                found.setdefault(path.stem, None)
        return sorted(found)

    def load(self, name: str, *, file: str = "", line: int | None = None) -> NamedTemplate:
        """`name` without extension; checks the blocks and every template it refers to."""
        if name in self._named:
            return self._named[name]
        root, filename = self._parse(f"{name}.j2", file=file, line=line)
        closure, literal = self._closure(root, filename, file, line)
        asts = [ast for ast, _ in closure]
        # Blocks may come from a parent template; only an unreadable parent name defers the check.
        missing = set(BLOCKS) - {b.name for ast in asts for b in ast.find_all(nodes.Block)}
        if missing and literal:
            blocks = " and ".join(repr(b) for b in sorted(missing))
            raise ConfigError(f"template {name!r} lacks block {blocks}", filename, 1)
        template = self._env.get_template(f"{name}.j2")
        fields, raw = _fields_used(asts, literal), _fields_used(asts, literal, raw_keys)
        named = NamedTemplate(name, fields, template, raw, references(closure))
        self._named[name] = named
        return named

    def inline(self, source: str, *, file: str = "", line: int | None = None) -> InlineTemplate:
        """A template given in a rule, e.g. `Code {{ code }}`."""
        label = _label("inline template", file, line)
        if source in self._inline:
            return dataclasses.replace(self._inline[source], label=label)
        try:
            ast = self._env.parse(source)
            template = self._env.from_string(ast)
        except TemplateSyntaxError as err:
            raise ConfigError(syntax_message(err, source, inline=True), file, line) from None
        closure, literal = self._closure(ast, None, file, line)
        asts = [ast for ast, _ in closure]
        fields, raw = _fields_used(asts, literal), _fields_used(asts, literal, raw_keys)
        self._inline[source] = InlineTemplate(fields, template, label, raw, references(closure))
        return self._inline[source]

    def condition(self, source: str, *, file: str = "", line: int | None = None) -> Condition:
        """An `if:` condition, `{{ expression }}` or a bare expression."""
        expr = source.strip()
        if expr.startswith("{{") and expr.endswith("}}"):
            expr = expr[2:-2]
        try:
            compiled = self._env.compile_expression(expr, undefined_to_none=False)
            ast = self._env.parse(f"{{{{ {expr} }}}}")
        except TemplateSyntaxError as err:
            raise ConfigError(syntax_message(err, inline=True), file, line) from None
        return Condition(
            template_fields(ast), compiled, _label("condition", file, line), raw_keys(ast)
        )

    def context(
        self,
        item: Item,
        *,
        now: datetime,
        rule: str,
        extract: Mapping[str, str],
        values: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """What a template sees; ``values`` are the item's fields at ``now`` when the caller
        has them already (the planner, which matched the rules on them)."""
        return template_context(item, now=now, rule=rule, extract=extract, values=values)

    def _parse(self, name: str, *, file: str, line: int | None) -> tuple[nodes.Template, str]:
        """A template file's AST and path, compiled once to find every syntax error now."""
        try:
            source, filename, _ = self._loader.get_source(self._env, name)
            self._env.get_template(name)
            return self._env.parse(source, name, filename), filename or name
        except TemplateNotFound:
            available = ", ".join(self.names()) or "none"
            message = f"template {name!r} not found in {', '.join(map(str, self._dirs))}"
            raise ConfigError(f"{message}; available: {available}", file, line) from None
        except TemplateSyntaxError as err:
            opened = unclosed(err, source)
            at = opened[1] if opened else err.lineno
            raise ConfigError(syntax_message(err, source), err.filename or name, at) from None

    def _closure(
        self, root: nodes.Template, filename: str | None, file: str, line: int | None
    ) -> tuple[_Closure, bool]:
        """`root` (read from `filename`, None when inline at `file`:`line`) and all it extends,
        includes or imports, each with its file; False if a name is a variable."""
        found: dict[str, tuple[nodes.Template, str | None]] = {}
        literal = True
        todo = [(root, filename)]
        while todo:
            ast, where = todo.pop()
            for node in ast.find_all(_REFERENCES):
                ref = _const_name(node.template)
                if ref is None:
                    literal = False
                elif ref not in found:
                    at = (where, node.lineno) if where else (file, line)
                    found[ref] = self._parse(ref, file=at[0], line=at[1])
                    todo.append(found[ref])
        return [(root, filename), *found.values()], literal
