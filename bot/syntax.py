"""Where a template's syntax error is: a tag never closed is told where it opens, not where
the text ends (which is all Jinja says)."""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import Environment, TemplateSyntaxError

_LEXER = Environment()  # reads a template's tags, to tell which one is left open


def syntax_message(err: TemplateSyntaxError, source: str = "", *, inline: bool = False) -> str:
    """Jinja's message; a tag never closed is told where it opens, not where the text ends."""
    line, message, opened = err.lineno, err.message, unclosed(err, source)
    if opened:
        (tag, line), message = opened, f"'{{% {opened[0]} %}}' is never closed"
        message += f" (add '{{% end{tag} %}}')"
    where = f" (line {line} of the template)" if inline and line > 1 else ""
    return f"template syntax error: {message}{where}"


_PAIRED = frozenset({"block", "if", "for", "macro", "call", "filter", "with", "autoescape", "set"})


def unclosed(err: TemplateSyntaxError, source: str) -> tuple[str, int] | None:
    """The innermost tag left open when ``err`` is the end of ``source`` come too early."""
    if not (err.message or "").startswith("Unexpected end of template"):
        return None
    tokens = [t for t in _LEXER.lex(source) if t[1] != "whitespace"]
    stack: list[tuple[str, int]] = []
    for i, (line, kind, value) in enumerate(tokens):
        if kind != "name" or i == 0 or tokens[i - 1][1] != "block_begin":
            continue
        if stack and value == f"end{stack[-1][0]}":
            stack.pop()
        elif value in _PAIRED and not (value == "set" and _assigns(tokens[i:])):
            stack.append((value, line))
    return stack[-1] if stack else None


def _assigns(tokens: Sequence[tuple[int, str, str]]) -> bool:
    """Whether the `set` tag starting ``tokens`` is `{% set x = … %}` (no `endset`)."""
    for _, kind, value in tokens:
        if kind == "block_end":
            return False
        if kind == "operator" and value == "=":
            return True
    return False
