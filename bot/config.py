"""Configuration: the main YAML file as pydantic models that refuse unknown keys.

Account and sink sections are validated by the model of their ``type``, taken
from the registries in ``bot.sources`` and ``bot.sinks``; every error is turned
into ``file:line: field: message`` through the positions kept by ``bot.yamlfile``.
"""

from __future__ import annotations

import functools
import glob
import re
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
)

from bot.errors import ConfigError, ConfigErrors
from bot.yamlfile import Path_, YamlDoc, dotted, load_yaml

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)")


def parse_duration(value: Any) -> Any:
    """``30s``, ``2m``, ``1h30m``, ``1d`` or a number of seconds → timedelta."""
    if isinstance(value, timedelta | bool):
        return value
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    return _duration(str(value))


@functools.lru_cache(maxsize=256)  # 10,000 feeds share a few intervals
def _duration(value: str) -> timedelta:
    text = value.strip().replace(" ", "")
    if not text or _DURATION.sub("", text):
        raise ValueError(f"{value!r} is not a duration; write e.g. 30s, 2m, 1h30m, 1d")
    return timedelta(seconds=sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text)))


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]

_PERIODS = {"s": 1, "sec": 1, "second": 1, "min": 60, "minute": 60, "h": 3600, "hour": 3600}


def parse_rate(value: Any) -> Any:
    """``20/min``, ``1/s``, ``100/hour`` → (count, period in seconds)."""
    if isinstance(value, tuple):
        return value
    count, _, unit = str(value).partition("/")
    if not count.strip().isdigit() or int(count) < 1 or unit.strip() not in _PERIODS:
        raise ValueError(f"{value!r} is not a rate; write e.g. 20/min, 1/s, 100/hour")
    return (int(count), float(_PERIODS[unit.strip()]))


Rate = Annotated[tuple[int, float], BeforeValidator(parse_rate)]


def parse_http_url(value: Any) -> Any:
    """A service's address as a person writes it: http(s), a host, no query; no final ``/``."""
    parts = urlsplit(str(value))
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ValueError(f"{value!r} is not a server's address; write e.g. https://example.org")
    return str(value).rstrip("/")


HttpUrl = Annotated[str, AfterValidator(parse_http_url)]


class Model(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class FeedConfig(Model):
    every: Duration | None = None
    enabled: bool = True
    backlog: Literal["skip", "notify"] | None = None


class AccountConfig(Model):
    """Keys every account understands; each source's model adds its own."""

    type: str
    base_url: str
    every: Duration = timedelta(minutes=1)
    timeout: Duration = timedelta(seconds=30)
    feeds: dict[str, FeedConfig] = Field(default_factory=dict)
    enabled: bool = True
    feed_names: ClassVar[tuple[str, ...]] = ()

    @field_validator("feeds")
    @classmethod
    def _known_feeds(cls, feeds: dict[str, FeedConfig]) -> dict[str, FeedConfig]:
        unknown = sorted(set(feeds) - set(cls.feed_names))
        if unknown:
            raise ValueError(f"unknown feed {unknown[0]!r}; allowed: {', '.join(cls.feed_names)}")
        return feeds


class SinkConfig(Model):
    """Keys every sink understands; each sink's model adds its own."""

    type: str
    format: Literal["text", "markdown", "html"] | None = None
    rate: Rate | None = None
    timeout: Duration = timedelta(seconds=15)


class Config(Model):
    accounts: dict[str, AccountConfig]
    sinks: dict[str, SinkConfig]
    rules: list[str] = ["rules/*.yaml"]
    templates: list[str] = ["templates"]
    state: Path | None = None
    backlog: Literal["skip", "notify"] = "skip"
    max_actions_per_poll: int = Field(50, ge=1)
    retention: Duration = timedelta(days=30)
    alerts_to: str | None = None
    alerts_after: Duration = timedelta(minutes=30)
    _base_dir: Path = PrivateAttr(Path("."))

    def rule_files(self, pattern: str | None = None) -> list[Path]:
        """The rule files named by ``rules:`` (or one of its patterns), globs expanded,
        relative to the config file."""
        files: list[Path] = []
        for each in [pattern] if pattern else self.rules:
            full = self._base_dir / each
            matches = sorted(glob.glob(str(full))) if glob.has_magic(each) else [str(full)]
            files += [Path(m) for m in matches]
        return files

    def template_dirs(self) -> list[Path]:
        return [self._base_dir / d for d in self.templates]

    def unknown_alert_sink(self, doc: YamlDoc) -> list[ConfigError]:
        if self.alerts_to is None or self.alerts_to in self.sinks:
            return []
        known = ", ".join(sorted(self.sinks)) or "none configured"
        return [
            doc.error(
                ("alerts_to",), f"alerts_to: unknown sink {self.alerts_to!r}; configured: {known}"
            )
        ]

    def missing_files(self, doc: YamlDoc) -> list[ConfigError]:
        """A rules pattern that names no file, a templates folder that does not exist."""
        errors = [
            doc.error(("rules", i), f"rules: {p!r} names no file")
            for i, p in enumerate(self.rules)
            if not [f for f in self.rule_files(p) if f.is_file()]
        ]
        errors += [
            doc.error(("templates", i), f"templates: {d} is not a folder")
            for i, d in enumerate(self.template_dirs())
            if not d.is_dir()
        ]
        return errors


def validation_errors(doc: YamlDoc, prefix: Path_, err: ValidationError) -> list[ConfigError]:
    """One located ConfigError per pydantic error, with the field and what is allowed."""
    errors = []
    for e in err.errors(include_url=False):
        path = (*prefix, *e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            message = "unknown key"
        elif e["type"] == "missing":
            message = "required key is missing"
        elif e["type"].startswith("literal_error") or e["type"] == "enum":
            message = f"{message}, not {e['input']!r}"
        errors.append(doc.error(path, f"{dotted(path)}: {message}"))
    return errors


def load_config(path: Path, registries: Mapping[str, Mapping[str, type[Model]]]) -> Config:
    """Read and validate the main file; raises ConfigErrors listing every problem found.

    ``registries`` maps ``accounts``/``sinks`` to ``{type: model}``.
    """
    doc = load_yaml(path)
    data = doc.data
    if not isinstance(data, dict):
        raise ConfigErrors(
            [ConfigError("the file must be a mapping (accounts:, sinks:, …)", doc.file, 1)]
        )
    errors: list[ConfigError] = []
    typed: dict[str, dict[str, Any]] = {}
    for section, registry in registries.items():
        typed[section] = _typed_section(doc, section, data.get(section), registry, errors)
    top = {k: v for k, v in data.items() if k not in registries}
    try:
        config = Config.model_validate({**top, **typed})
    except ValidationError as err:
        raise ConfigErrors(errors + validation_errors(doc, (), err)) from None
    config._base_dir = path.parent
    errors += config.missing_files(doc) + config.unknown_alert_sink(doc)
    if errors:
        raise ConfigErrors(errors)
    return config


def _typed_section(
    doc: YamlDoc,
    section: str,
    raw: Any,
    registry: Mapping[str, type[Model]],
    errors: list[ConfigError],
) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        errors.append(doc.error((section,), f"{section}: must be a mapping of names to settings"))
        return {}
    result: dict[str, Any] = {}
    for name, body in raw.items():
        where: Path_ = (section, name)
        kind = body.get("type") if isinstance(body, dict) else None
        model = registry.get(str(kind))
        if model is None:
            allowed = ", ".join(sorted(registry))
            shown = "missing" if kind is None else repr(kind)
            errors.append(
                doc.error((*where, "type"), f"{dotted(where)}.type: {shown}; allowed: {allowed}")
            )
            continue
        try:
            result[name] = model.model_validate(body)
        except ValidationError as err:
            errors += validation_errors(doc, where, err)
    return result
