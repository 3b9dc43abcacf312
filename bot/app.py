"""Building a running inboxbot out of a configuration file, and taking it down again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bot.config import Config, Model, load_config
from bot.http import Limiters
from bot.metrics import Metrics
from bot.pipeline import Clock, Pipeline
from bot.render import Renderer
from bot.rules import AccountCaps, Rule, RuleLoader, SinkCaps
from bot.sinks import SINKS
from bot.sources import SOURCES, Feed
from bot.store import Store


@dataclass(frozen=True)
class Loaded:
    """A configuration with its rules and templates, checked and compiled."""

    config: Config
    rules: list[Rule]
    renderer: Renderer

    def feeds(self) -> list[Feed]:
        return [
            feed
            for name, account in self.config.accounts.items()
            if account.enabled
            for feed in SOURCES[account.type].feeds(name, account)
        ]


def load(path: Path) -> Loaded:
    """Read and check everything; raises ConfigErrors with every problem found."""
    registries: dict[str, dict[str, type[Model]]] = {
        "accounts": {t: s.config_model for t, s in SOURCES.items()},
        "sinks": {t: s.config_model for t, s in SINKS.items()},
    }
    config = load_config(path, registries)
    renderer = Renderer(config.template_dirs())
    accounts = {
        n: AccountCaps(
            a.type,
            SOURCES[a.type].actions,
            SOURCES[a.type].samples(n),
            tuple(a.feeds or SOURCES[a.type].default_feeds),
        )
        for n, a in config.accounts.items()
    }
    sinks = {
        n: SinkCaps(
            s.type, SINKS[s.type].fetches_detail(s), SINKS[s.type].options_model, s.format or "text"
        )
        for n, s in config.sinks.items()
    }
    rules = RuleLoader(renderer, accounts, sinks).load(config.rule_files())
    unreached(config, rules)
    return Loaded(config, rules, renderer)


def unreached(config: Config, rules: list[Rule]) -> None:
    """Warn of what polls or waits for nothing: no rule at all, an account whose items no
    rule sees, a sink no rule (nor ``alerts_to``) sends to."""
    if not rules and config.accounts:
        config.warn(("rules",), "rules: no rule is loaded, so no item notifies or acts")
        return
    seen = {a for r in rules for a in r.accounts}
    for name, account in config.accounts.items():
        if account.enabled and name not in seen:
            config.warn(("accounts", name), f"accounts.{name}: no rule sees its items")
    used = {n.sink for r in rules for n in r.notify} | {config.alerts_to}
    for name in config.sinks:
        if name not in used:
            config.warn(("sinks", name), f"sinks.{name}: no rule sends to it")


@dataclass(frozen=True)
class Resources:
    """What outlives a configuration reload: the store, the HTTP session, shared rate
    limits, metrics and the clock."""

    store: Store
    session: aiohttp.ClientSession
    limiters: Limiters
    metrics: Metrics
    clock: Clock


@asynccontextmanager
async def resources(state: Path, clock: Clock | None = None) -> AsyncIterator[Resources]:
    """Opened in order and closed in reverse, also when opening fails halfway."""
    async with AsyncExitStack() as stack:
        store = Store(state)
        stack.callback(store.close)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        yield Resources(store, session, Limiters(), Metrics(), clock or Clock())


def build(loaded: Loaded, res: Resources) -> Pipeline:
    """A pipeline for ``loaded``: its sources and sinks on the shared resources."""
    config = loaded.config
    sources = {
        name: SOURCES[account.type](name, account, res.session, res.limiters)
        for name, account in config.accounts.items()
        if account.enabled
    }
    sinks = {name: SINKS[s.type](name, s, res.session) for name, s in config.sinks.items()}
    return Pipeline(
        config, sources, sinks, loaded.rules, loaded.renderer, res.store, res.clock,
        metrics=res.metrics,
    )  # fmt: skip


async def start(pipeline: Pipeline) -> None:
    """Connect the sinks that keep a connection (they retry on their own when it fails)."""
    for sink in pipeline.sinks.values():
        await sink.start()


async def close(pipeline: Pipeline) -> None:
    for sink in pipeline.sinks.values():
        await sink.close()
    for source in pipeline.sources.values():
        await source.close()


@asynccontextmanager
async def running(
    loaded: Loaded, state: Path, clock: Clock | None = None
) -> AsyncIterator[Pipeline]:
    """A pipeline for one run (``once``, tests): resources and all, closed on exit."""
    async with resources(state, clock) as res:
        pipeline = build(loaded, res)
        try:
            await start(pipeline)
            yield pipeline
        finally:
            await close(pipeline)
