"""YAML files read with the line of every key, and ``${VAR}``, ``${VAR:-default}``,
``${file:PATH}`` and ``${credential:NAME}`` (systemd ``LoadCredential=``, /run/secrets) expanded.

Configuration errors must name the file and line of the offending field, so the
loader keeps a map from each value's path (``("accounts", "signup", "token")``)
to the line of its key.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError, ConfigErrors

Path_ = tuple[str | int, ...]
_REFERENCE = re.compile(r"\$\{(?!\{)([^}]*)\}")  # ${{ x }} is a $ before a template
_OPENING = re.compile(r"\$\{(?!\{)")
Naming = Callable[["YamlDoc", list[ConfigError]], list[ConfigError]]
_STR = "tag:yaml.org,2002:str"
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~30x faster at 10,000 feeds


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
    doc = YamlDoc(shown, None)
    builder = _Builder(doc, expand, path.parent, yaml.parse(text, Loader=_LOADER))
    try:
        doc.data = builder.document()
    except yaml.MarkedYAMLError as err:
        raise _syntax_error(_pure_error(text) or err, text, shown) from None
    except yaml.reader.ReaderError as err:  # a control character: unmarked, but placed
        line = text.count("\n", 0, err.position) + 1
        problem = f"YAML syntax error: {str(err).splitlines()[0]}; remove that character"
        raise ConfigError(problem, shown, line) from None
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


def _pure_error(text: str) -> yaml.MarkedYAMLError | None:
    """The pure-Python parser's error for ``text``: the same place as libyaml's, in the
    words PyYAML's documentation and users know (only read when a file is broken)."""
    try:
        for _ in yaml.parse(text, Loader=yaml.SafeLoader):
            pass
    except yaml.MarkedYAMLError as err:
        return err
    return None


class _Builder:
    """The data and its lines straight from the parser's events: no tree of nodes (which
    takes ~60 MB and most of the time for 10,000 feeds). Problems are kept in ``errors``, so
    that all of a file's are told at once."""

    def __init__(self, doc: YamlDoc, expand: bool, base: Path, events: Iterator[Any]) -> None:
        self.doc = doc
        self.expand = expand
        self.base = base
        self.events = events
        self.constructor = yaml.SafeLoader("")
        self.anchors: dict[str, Any] = {}
        self.errors: list[ConfigError] = []

    def document(self) -> Any:
        """The one document's data (None for an empty file)."""
        next(self.events)  # StreamStartEvent
        if isinstance(event := next(self.events), yaml.StreamEndEvent):
            return None
        data = self.build(next(self.events), ())
        next(self.events)  # DocumentEndEvent
        if not isinstance(event := next(self.events), yaml.StreamEndEvent):
            line = event.start_mark.line + 1
            raise ConfigError("YAML syntax error: expected a single document", self.doc.file, line)
        return data

    def build(self, event: Any, path: Path_) -> Any:
        self.doc.lines.setdefault(path, event.start_mark.line + 1)
        if isinstance(event, yaml.AliasEvent):
            if event.anchor not in self.anchors:
                raise self.doc.error(path, f"YAML syntax error: unknown alias *{event.anchor}")
            return copy.deepcopy(self.anchors[event.anchor])
        if isinstance(event, yaml.MappingStartEvent):
            value: Any = self._mapping(path)
        elif isinstance(event, yaml.SequenceStartEvent):
            value = self._sequence(path)
        else:
            value = self._scalar(event)
            if self.expand and isinstance(value, str) and "${" in value:
                value = self._expand(value, path)
        if event.anchor:
            self.anchors[event.anchor] = value
        return value

    def _sequence(self, path: Path_) -> list[Any]:
        result: list[Any] = []
        while not isinstance(event := next(self.events), yaml.SequenceEndEvent):
            result.append(self.build(event, (*path, len(result))))
        return result

    def _mapping(self, path: Path_) -> dict[str, Any]:
        result: dict[str, Any] = {}
        while not isinstance(key_event := next(self.events), yaml.MappingEndEvent):
            is_scalar = isinstance(key_event, yaml.ScalarEvent)
            key = self._scalar(key_event) if is_scalar else self.build(key_event, path)
            line = key_event.start_mark.line + 1
            problem = self._key_problem(key, path, result)
            if problem:
                self.errors.append(ConfigError(problem, self.doc.file, line))
                self.build(next(self.events), path)  # its value, read and left out
                continue
            self.doc.lines[(*path, str(key))] = line
            result[str(key)] = self.build(next(self.events), (*path, str(key)))
        return result

    def _key_problem(self, key: Any, path: Path_, result: dict[str, Any]) -> str | None:
        if not isinstance(key, str | int) or isinstance(key, bool):
            if isinstance(key, dict):  # message: {{ item.subject }}, unquoted
                return 'YAML reads an unquoted {{ … }} as a mapping; quote it: "{{ … }}"'
            return f"keys must be text, not {key!r}"
        if str(key) in result:
            return f"duplicate key {str(key)!r} (first on line {self.doc.lines[(*path, str(key))]})"
        return None

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.constructor.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _STR:  # most values: none of the constructor's bookkeeping
            return event.value
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return self.constructor.construct_object(node, deep=True)

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
