"""What every stage of the pipeline is given: the configuration, the upstreams and the
targets, the rules and templates, the store, the clock, health and metrics.

The stages keep no copy of these: ``Pipeline`` is its own ``Parts``, so what a reload sets
on it (its ``health``) is what every stage sees from then on.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from bot.config import Config
from bot.health import Health
from bot.metrics import Metrics
from bot.render import Renderer
from bot.rules import Rule
from bot.sinks import Sink
from bot.sources import Source
from bot.store import Store


class Clock:
    """Wall time for records and item ages; tests pass their own."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def time(self) -> float:
        return _time.time()


@dataclass
class Parts:
    config: Config
    sources: Mapping[str, Source]
    sinks: Mapping[str, Sink]
    rules: Sequence[Rule]
    renderer: Renderer
    store: Store
    clock: Clock = field(default_factory=Clock)
    health: Health = field(default_factory=Health)
    metrics: Metrics = field(default_factory=Metrics)
