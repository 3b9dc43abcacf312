"""Configuration: the main YAML file as pydantic models that refuse unknown keys.

Account and sink sections are validated by the model of their ``type``, taken
from the registries in ``bot.sources`` and ``bot.sinks``; every error is turned
into ``file:line: field: message`` through the positions kept by ``bot.yamlfile``.
"""

from __future__ import annotations

import functools
import glob
import re
from collections.abc import Iterator, Mapping
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
    SecretStr,
    ValidationError,
    field_validator,
)

from bot.errors import ConfigError, ConfigErrors
from bot.windows import Quiet
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

MIN_EVERY = timedelta(seconds=1)


def at_least_a_second(every: timedelta) -> timedelta:
    if every < MIN_EVERY:
        raise ValueError(
            f"{every.total_seconds():g}s is too often: poll at most once a second (e.g. 30s, 2m)"
        )
    return every


Interval = Annotated[timedelta, BeforeValidator(parse_duration), AfterValidator(at_least_a_second)]

_PERIODS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600,
            "hour": 3600, "d": 86400, "day": 86400}  # fmt: skip
_RATE = re.compile(r"(\d+)\s*/\s*(\d*)\s*([a-z]+)")


def parse_rate(value: Any) -> Any:
    """``20/min``, ``1/s``, ``100/hour``, ``5/2s`` → (count, period in seconds)."""
    if isinstance(value, tuple):
        return value
    match = _RATE.fullmatch(str(value).strip().lower())
    word = match[3] if match else ""
    unit = word[:-1] if word not in _PERIODS and len(word) > 3 and word.endswith("s") else word
    if not match or int(match[1]) < 1 or unit not in _PERIODS or int(match[2] or 1) < 1:
        whole = "; counts are whole: 1/2s is one every 2 s" if "." in str(value) else ""
        raise ValueError(f"{value!r} is not a rate; write e.g. 4/s, 20/min, 100/hour{whole}")
    return (int(match[1]), float(int(match[2] or 1) * _PERIODS[unit]))


def parse_account_rate(value: Any) -> Any:
    """An account's rate: as :func:`parse_rate`, and a bare number means per second."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = f"{value}/s"
    return parse_rate(value)


def show_rate(rate: tuple[int, float]) -> str:
    """``20/min``, ``5/10min``, ``100/hour``, ``1/2s``: as a person writes it."""
    count, period = rate
    for unit, size in (("day", 86400), ("hour", 3600), ("min", 60), ("s", 1)):
        if period >= size and period % size == 0:
            times = period / size
            return f"{count}/{unit}" if times == 1 else f"{count}/{times:g}{unit}"
    return f"{count}/{period:g}s"


def parse_limit(value: Any) -> Any:
    """``5/10min`` as a rate; ``0/1h`` is refused with why."""
    if isinstance(value, str) and re.fullmatch(r"\s*0+\s*/.*", value):
        raise ValueError(
            f"{value!r} lets nothing through: a limit sends the first N and holds the rest "
            "for one digest; write at least 1/… (to hold everything use quiet hours or a mute)"
        )
    return parse_rate(value)


Rate = Annotated[tuple[int, float], BeforeValidator(parse_rate)]
Limit = Annotated[tuple[int, float], BeforeValidator(parse_limit)]
AccountRate = Annotated[tuple[int, float], BeforeValidator(parse_account_rate)]
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def url_problem(value: str, schemes: tuple[str, ...] = ("http", "https")) -> str | None:
    """Why ``value`` is not a URL of one of ``schemes`` with a host; None when it is."""
    scheme = _SCHEME.match(value)
    if not scheme:
        return f"it does not start with {' or '.join(s + '://' for s in schemes)}"
    if scheme[1].lower() not in schemes:
        return f"{scheme[1]}:// is not one of {', '.join(s + '://' for s in schemes)}"
    parts = urlsplit(value)
    if not parts.hostname or any(c.isspace() for c in value):
        return "it has no host" if not parts.hostname else "it holds a space"
    return None


def parse_http_url(value: Any) -> Any:
    """A service's address as a person writes it: http(s), a host, no query; no final ``/``."""
    problem = url_problem(str(value)) or (
        "it has a query (?…)" if urlsplit(str(value)).query else None
    )
    if problem:
        raise ValueError(
            f"{value!r} is not a server's address ({problem}); write e.g. https://example.org"
        )
    return str(value).rstrip("/")


def check_secret_url(value: SecretStr) -> SecretStr:
    """A URL that holds a secret (a webhook's): http(s) with a host; never shown in errors."""
    problem = url_problem(value.get_secret_value())
    if problem:
        raise ValueError(
            f"not a URL ({problem}); write e.g. https://hooks.example.org/… "
            "(the value is not shown: it may hold a secret)"
        )
    return value


HttpUrl = Annotated[str, AfterValidator(parse_http_url)]
SecretUrl = Annotated[SecretStr, AfterValidator(check_secret_url)]
_BARE_VARIABLE = re.compile(r"\$[A-Za-z_][A-Za-z0-9_]*")


def _plain_values(value: Any) -> Iterator[tuple[Any, str]]:
    """The text values in ``value`` (nested mappings and lists included), secrets revealed."""
    if isinstance(value, SecretStr):
        yield value, value.get_secret_value()
    elif isinstance(value, str):
        yield value, value
    elif isinstance(value, dict | list | tuple):
        for each in value.values() if isinstance(value, dict) else value:
            yield from _plain_values(each)


class Model(BaseModel):
    """Base of every configuration model: unknown keys are errors, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Section(Model):
    """A part of the main file: a secret may not be empty, a value may not be a bare
    ``$NAME`` (only ``${NAME}`` is read from the environment)."""

    @field_validator("*", mode="after")
    @classmethod
    def _filled_in(cls, value: Any) -> Any:
        for raw, text in _plain_values(value):
            if isinstance(raw, SecretStr) and not text:
                raise ValueError("is empty; give the secret (an unset ${VAR:-} gives '')")
            if _BARE_VARIABLE.fullmatch(text.strip()):
                name = text.strip()[1:]
                raise ValueError(
                    f"'${name}' is taken as it is written; write ${{{name}}} to read the "
                    "environment variable"
                )
        return value


class FeedConfig(Section):
    every: Interval | None = None
    enabled: bool = True
    backlog: Literal["skip", "notify"] | None = None


class AccountConfig(Section):
    """Keys every account understands; each source's model adds its own."""

    type: str
    base_url: HttpUrl
    every: Interval = timedelta(minutes=1)
    timeout: Duration = timedelta(seconds=30)
    feeds: dict[str, FeedConfig] = Field(default_factory=dict)
    enabled: bool = True
    feed_names: ClassVar[tuple[str, ...]] = ()

    def poll_budget(self) -> tuple[float, str] | None:
        """Requests a minute the upstream stands, and who says so; None: no known limit."""
        return None

    def cautions(self) -> list[tuple[Path_, str]]:
        """What ``check`` warns of in the account's settings: (path under it, message)."""
        return []

    def intervals(self) -> list[tuple[Path_, timedelta]]:
        """The intervals written in the file, with their paths under the account."""
        written = [(("every",), self.every)] if "every" in self.model_fields_set else []
        return written + [
            (("feeds", name, "every"), feed.every)
            for name, feed in self.feeds.items()
            if feed.every
        ]

    @field_validator("feeds")
    @classmethod
    def _known_feeds(cls, feeds: dict[str, FeedConfig]) -> dict[str, FeedConfig]:
        unknown = sorted(set(feeds) - set(cls.feed_names))
        if unknown:
            raise ValueError(f"unknown feed {unknown[0]!r}; allowed: {', '.join(cls.feed_names)}")
        return feeds


class SinkConfig(Section):
    """Keys every sink understands; each sink's model adds its own."""

    type: str
    format: Literal["text", "markdown", "html"] | None = None
    rate: Rate | None = None
    timeout: Duration = timedelta(seconds=15)
    quiet: Quiet | None = None  # hours when what it would send waits (bot.windows)
    limit: Limit | None = None  # at most N a period; the rest of the period in one digest


class Config(Section):
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
    _warnings: list[ConfigError] = PrivateAttr(default_factory=list)
    _doc: YamlDoc | None = PrivateAttr(None)

    @property
    def warnings(self) -> list[ConfigError]:
        """What ``check`` warns about without refusing: polling faster than an upstream likes,
        what no rule reaches (``warn``)."""
        return self._warnings

    def warn(self, path: Path_, message: str) -> None:
        """A warning at ``path`` of the configuration file."""
        where = self._doc.line(path) if self._doc else None
        file = self._doc.file if self._doc else ""
        self._warnings.append(ConfigError(f"warning: {message}", file, where))

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
        """The folders named by ``templates:``; the default folder only where it exists."""
        folders = [self._base_dir / d for d in self.templates]
        if "templates" in self.model_fields_set:
            return folders
        return [d for d in folders if d.is_dir()]

    def state_file(self) -> Path | None:
        """``state:``, relative to the config file like every other path in it."""
        return self._base_dir / self.state if self.state else None

    def fast_polls(self, doc: YamlDoc) -> list[ConfigError]:
        """Intervals whose polls alone take half of the upstream's budget or more: a poll
        takes at least one request, often two (a body, a second page)."""
        warnings = []
        for name, account in self.accounts.items():
            budget = account.poll_budget()
            for where, every in account.intervals() if budget else []:
                per_minute = 60 / every.total_seconds()
                if budget and per_minute >= budget[0] / 2:
                    path = ("accounts", name, *where)
                    meaning = f"{every.total_seconds():g}s means {per_minute:g} requests/min"
                    message = f"warning: {dotted(path)}: {meaning}; {budget[1]}"
                    warnings.append(doc.error(path, message))
        return warnings

    def unknown_alert_sink(self, doc: YamlDoc) -> list[ConfigError]:
        if self.alerts_to is None and "alerts_after" in self.model_fields_set:
            message = "alerts_after: no alert is sent without alerts_to: SINK; name the sink"
            return [doc.error(("alerts_after",), message)]
        if self.alerts_to is None or self.alerts_to in self.sinks:
            return []
        known = ", ".join(sorted(self.sinks)) or "none configured"
        return [
            doc.error(
                ("alerts_to",), f"alerts_to: unknown sink {self.alerts_to!r}; configured: {known}"
            )
        ]

    def missing_files(self, doc: YamlDoc) -> list[ConfigError]:
        """A rules pattern that names no file, a templates folder that does not exist; a
        default (``rules/*.yaml``, ``templates``) the user did not write may be missing."""
        named = "rules" in self.model_fields_set
        errors = [
            doc.error(("rules", i), f"rules: {p!r} names no file")
            for i, p in enumerate(self.rules)
            if named and not [f for f in self.rule_files(p) if f.is_file()]
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
        message = re.sub(r" or instance of \w+$", "", message)  # our class names mean nothing
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
    config._base_dir, config._doc = path.parent, doc
    config._warnings = config.fast_polls(doc) + [
        doc.error(at, f"warning: {dotted(at)}: {message}")
        for name, account in config.accounts.items()
        for at, message in [(("accounts", name, *w), m) for w, m in account.cautions()]
    ]
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
