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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bot.errors import ConfigError

Path_ = tuple[str | int, ...]
_REFERENCE = re.compile(r"\$\{([^}]*)\}")
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


def load_yaml(path: Path, *, expand: bool = True) -> YamlDoc:
    """Parse ``path``; syntax errors, duplicate keys and bad ``${…}`` are ConfigErrors."""
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read file: {err.strerror}", shown) from None
    doc = YamlDoc(shown, None)
    try:
        doc.data = _Builder(doc, expand, path.parent, yaml.parse(text, Loader=_LOADER)).document()
    except yaml.MarkedYAMLError as err:
        err = _pure_error(text) or err
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark else None
        raise ConfigError(f"YAML syntax error: {err.problem or err}", shown, line) from None
    return doc


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
    takes ~60 MB and most of the time for 10,000 feeds)."""

    def __init__(self, doc: YamlDoc, expand: bool, base: Path, events: Iterator[Any]) -> None:
        self.doc = doc
        self.expand = expand
        self.base = base
        self.events = events
        self.constructor = yaml.SafeLoader("")
        self.anchors: dict[str, Any] = {}

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
            if isinstance(key_event, yaml.ScalarEvent):
                key = self._scalar(key_event)
            else:
                key = self.build(key_event, path)
            if not isinstance(key, str | int | bool) or isinstance(key, bool):
                raise self.doc.error(path, f"keys must be text, not {key!r}")
            key = str(key)
            line = key_event.start_mark.line + 1
            if key in result:
                raise ConfigError(f"duplicate key {key!r}", self.doc.file, line)
            self.doc.lines[(*path, key)] = line
            result[key] = self.build(next(self.events), (*path, key))
        return result

    def _scalar(self, event: Any) -> Any:
        tag = event.tag
        if tag is None or tag == "!":
            tag = self.constructor.resolve(yaml.ScalarNode, event.value, event.implicit)  # type: ignore[no-untyped-call]
        if tag == _STR:  # most values: none of the constructor's bookkeeping
            return event.value
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return self.constructor.construct_object(node, deep=True)

    def _expand(self, value: str, path: Path_) -> str:
        return _REFERENCE.sub(lambda m: self._reference(m.group(1), path), value)

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
