"""YAML files read with the line of every key, and ``${VAR}``, ``${VAR:-default}``,
``${file:PATH}`` and ``${credential:NAME}`` (systemd ``LoadCredential=``, /run/secrets) expanded.

Configuration errors must name the file and line of the offending field, so the
loader keeps a map from each value's path (``("accounts", "signup", "token")``)
to the line of its key.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError, ConfigErrors

Path_ = tuple[str | int, ...]
_REFERENCE = re.compile(r"\$\{(?!\{)([^}]*)\}")  # ${{ x }} is a $ before a template
_OPENING = re.compile(r"\$\{(?!\{)")
Naming = Callable[["YamlDoc", list[ConfigError]], list[ConfigError]]


@dataclass
class YamlDoc:
    """A parsed file: its data and the line of every path in it."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            if path[:end] in self.lines:
                return self.lines[path[:end]]
        return None

    def error(self, path: Path_, message: str) -> ConfigError:
        return ConfigError(message, self.file, self.line(path))


def load_yaml(path: Path, *, expand: bool = True, named: Naming | None = None) -> YamlDoc:
    """Parse ``path``; syntax errors, duplicate keys and bad ``${…}`` are ConfigErrors,
    all of a file's at once (every unset variable, not only the first); ``named`` may
    rename them, seeing the document as far as it could be read."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read file: {err.strerror}", shown) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as err:
        raise _syntax_error(err, text, shown) from None
    doc = YamlDoc(shown, None)
    if node is not None:
        builder = _Builder(doc, expand, path.parent)
        doc.data = builder.build(node, ())
        errors = named(doc, builder.errors) if named and builder.errors else builder.errors
        if len(errors) == 1:
            raise errors[0]
        if errors:
            raise ConfigErrors(errors)
    return doc


_INDENT_PROBLEMS = ("expected <block end>", "did not find expected", "could not find expected ':'")


def _syntax_error(err: yaml.MarkedYAMLError, text: str, shown: str) -> ConfigError:
    """PyYAML's message, with what the user most likely has to do about it."""
    mark = err.problem_mark or err.context_mark
    line = mark.line + 1 if mark else None
    problem = str(err.problem or err)
    rows = text.splitlines()
    row = rows[line - 1] if line and line <= len(rows) else ""
    if "'\\t'" in problem or "\t" in row[: len(row) - len(row.lstrip())]:
        problem += "; indent with spaces, not tabs"
    elif problem.startswith("mapping values are not allowed"):
        problem += "; check the indentation, or quote a value that holds ': '"
    elif problem.startswith(_INDENT_PROBLEMS):
        problem += "; check the indentation"
    return ConfigError(f"YAML syntax error: {problem}", shown, line)


class _Builder:
    def __init__(self, doc: YamlDoc, expand: bool, base: Path) -> None:
        self.doc = doc
        self.expand = expand
        self.base = base
        self.constructor = yaml.SafeLoader("")
        self.errors: list[ConfigError] = []

    def build(self, node: yaml.Node, path: Path_) -> Any:
        self.doc.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(child, (*path, i)) for i, child in enumerate(node.value)]
        value = self.constructor.construct_object(node, deep=True)
        if self.expand and isinstance(value, str) and "${" in value:
            return self._expand(value, path)
        return value

    def _mapping(self, node: yaml.MappingNode, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.constructor.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int | bool) or isinstance(key, bool):
                message = f"keys must be text, not {key!r}"
                if isinstance(key, dict):  # message: {{ item.subject }}, unquoted
                    message = 'YAML reads an unquoted {{ … }} as a mapping; quote it: "{{ … }}"'
                self.errors.append(ConfigError(message, self.doc.file, line))
                continue
            key = str(key)
            if key in result:
                first = self.doc.lines[(*path, key)]
                message = f"duplicate key {key!r} (first on line {first})"
                self.errors.append(ConfigError(message, self.doc.file, line))
                continue
            self.doc.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key))
        return result

    def _expand(self, value: str, path: Path_) -> str:
        if _OPENING.search(_REFERENCE.sub("", value)):
            message = f"{dotted(path)}: a ${{ without its }}; write ${{NAME}}"
            self.errors.append(self.doc.error(path, message))
        return _REFERENCE.sub(lambda m: self._resolved(m.group(1), path), value)

    def _resolved(self, ref: str, path: Path_) -> str:
        """``${ref}``'s value; a problem is kept (the file's others are still reported)."""
        try:
            return self._reference(ref, path)
        except ConfigError as err:
            self.errors.append(err)
            return ""

    def _reference(self, ref: str, path: Path_) -> str:
        """The value of ``${ref}``: an environment variable, or ``file:PATH``'s content."""
        where = dotted(path)
        if ref.startswith("credential:"):
            return self._credential(ref[11:].strip(), path)
        if ref.startswith("file:"):
            target = self.base / os.path.expanduser(ref[5:].strip())
            try:
                return target.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as err:
                raise self.doc.error(
                    path, f"{where}: cannot read {target}: {err.strerror}"
                ) from None
        name, has_default, default = (part.strip() for part in ref.partition(":-"))
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise self.doc.error(
                path, f"{where}: ${{{ref}}} is neither a variable name nor file:PATH"
            )
        value = os.environ.get(name, default if has_default else None)
        if value is None:
            raise self.doc.error(path, f"{where}: environment variable {name} is not set")
        return value

    def _credential(self, name: str, path: Path_) -> str:
        """A systemd credential ($CREDENTIALS_DIRECTORY/NAME) or a container secret
        (/run/secrets/NAME), whichever exists."""
        folders = [os.environ.get("CREDENTIALS_DIRECTORY", ""), "/run/secrets"]
        for folder in filter(None, folders):
            target = Path(folder) / name
            if target.is_file():
                return target.read_text(encoding="utf-8").rstrip("\r\n")
        where = dotted(path)
        raise self.doc.error(
            path, f"{where}: no credential {name!r} in $CREDENTIALS_DIRECTORY or /run/secrets"
        )


def dotted(path: Path_) -> str:
    return ".".join(str(p) for p in path)
