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
from collections.abc import Callable, Mapping, Sequence
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
from bot.text import find_links, html_to_text

ITEM_FIELDS = frozenset(f.name for f in dataclasses.fields(Item) if f.name != "complete") | {"age"}
BLOCKS = ("title", "message")
ESCAPE = "inboxbot escape"  # a context key no template can assign: the sink's escaper
_Ref = nodes.Extends | nodes.Include | nodes.Import | nodes.FromImport
_REFERENCES: tuple[type[_Ref], ...] = (nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9]*[\s/>]")
_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60))


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
    if isinstance(node, nodes.Getattr):
        key: object = node.attr
    elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        key = node.arg.value
    else:
        return None
    inner = node.node
    is_item = isinstance(inner, nodes.Name) and inner.name == "item"
    return key if is_item and isinstance(key, str) and key in ITEM_FIELDS else None


def _fields_used(asts: Sequence[nodes.Template], literal: bool) -> frozenset[str] | None:
    parts = [template_fields(ast) for ast in asts]
    known = [part for part in parts if part is not None]
    return frozenset[str]().union(*known) if literal and len(known) == len(parts) else None


def _const_name(node: nodes.Node) -> str | None:
    return node.value if isinstance(node, nodes.Const) and isinstance(node.value, str) else None


def _label(kind: str, file: str, line: int | None) -> str:
    if not file:
        return kind
    return f"{kind} at {file}:{line}" if line else f"{kind} at {file}"


def _failure(err: Exception, label: str) -> RenderError:
    """A one-line error naming the template and line; item content stays out of it."""
    where, line = label, None
    tb = err.__traceback__
    while tb is not None:
        template = tb.tb_frame.f_globals.get("__jinja_template__")
        if isinstance(template, Template):
            where = template.name or label
            line = template.get_corresponding_lineno(tb.tb_lineno)
        tb = tb.tb_next
    reason = str(err) if isinstance(err, TemplateError) else ""
    reason = (reason.splitlines() or [type(err).__name__])[0][:200]
    return RenderError(f"{where}, line {line}: {reason}" if line else f"{where}: {reason}")


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    fields_used: frozenset[str] | None
    template: Template = field(repr=False, compare=False)

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
            undefined=StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
            finalize=escape_output,
        )
        self._env.filters.update(FILTERS)

    def names(self) -> list[str]:
        found: dict[str, None] = {}
        for folder in self._dirs:
            for path in sorted(folder.glob("*.j2")):
                found.setdefault(path.stem, None)
        return sorted(found)

    def load(self, name: str, *, file: str = "", line: int | None = None) -> NamedTemplate:
        """`name` without extension; checks the blocks and every template it refers to."""
        root, filename = self._parse(f"{name}.j2", file=file, line=line)
        asts, literal = self._closure(root, filename)
        # Blocks may come from a parent template; only an unreadable parent name defers the check.
        missing = set(BLOCKS) - {b.name for ast in asts for b in ast.find_all(nodes.Block)}
        if missing and literal:
            blocks = " and ".join(repr(b) for b in sorted(missing))
            raise ConfigError(f"template {name!r} lacks block {blocks}", filename)
        template = self._env.get_template(f"{name}.j2")
        return NamedTemplate(name, _fields_used(asts, literal), template)

    def inline(self, source: str, *, file: str = "", line: int | None = None) -> InlineTemplate:
        """A template given in a rule, e.g. `Code {{ code }}`."""
        try:
            ast = self._env.parse(source)
            template = self._env.from_string(source)
        except TemplateSyntaxError as err:
            raise ConfigError(_syntax_message(err, inline=True), file, line) from None
        asts, literal = self._closure(ast, file)
        label = _label("inline template", file, line)
        return InlineTemplate(_fields_used(asts, literal), template, label)

    def condition(self, source: str, *, file: str = "", line: int | None = None) -> Condition:
        """An `if:` condition, `{{ expression }}` or a bare expression."""
        expr = source.strip()
        if expr.startswith("{{") and expr.endswith("}}"):
            expr = expr[2:-2]
        try:
            compiled = self._env.compile_expression(expr, undefined_to_none=False)
            ast = self._env.parse(f"{{{{ {expr} }}}}")
        except TemplateSyntaxError as err:
            raise ConfigError(_syntax_message(err, inline=True), file, line) from None
        return Condition(template_fields(ast), compiled, _label("condition", file, line))

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
        fields = item.fields(now, with_raw=True) if values is None else values
        return {"item": fields, **extract, "rule": rule, "account": item.account, "now": now}

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
            raise ConfigError(_syntax_message(err), err.filename or name, err.lineno) from None

    def _closure(self, root: nodes.Template, file: str) -> tuple[list[nodes.Template], bool]:
        """`root` and all it extends, includes or imports; False if a name is a variable."""
        found: dict[str, nodes.Template] = {}
        literal = True
        todo = [(root, file)]
        while todo:
            ast, where = todo.pop()
            for node in ast.find_all(_REFERENCES):
                ref = _const_name(node.template)
                if ref is None:
                    literal = False
                elif ref not in found:
                    found[ref], filename = self._parse(ref, file=where, line=node.lineno)
                    todo.append((found[ref], filename))
        return [root, *found.values()], literal


def _syntax_message(err: TemplateSyntaxError, *, inline: bool = False) -> str:
    where = f" (line {err.lineno} of the template)" if inline and err.lineno > 1 else ""
    return f"template syntax error: {err.message}{where}"
