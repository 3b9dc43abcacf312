"""``inboxbot demo``: the daemon against the built-in simulators, on the console.

Each upstream's simulator starts on loopback with a small realistic inbox and
announces itself in ``INBOXBOT_DEMO_*`` variables; every few seconds one of them
receives a new item; the daemon runs ``examples/demo/`` against them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from pathlib import Path

from bot.app import load, resources
from bot.daemon import Daemon
from bot.errors import ConfigError, ConfigErrors
from bot.settings import Settings
from bot.sim import e621, mailtd, minutemail, rocketchat

# One line per upstream: a context manager that starts its simulator for the demo and
# yields a function adding one new item.
Upstream = Callable[[random.Random], AbstractAsyncContextManager[Callable[[], object]]]
UPSTREAMS: list[Upstream] = [
    e621.demo,
    mailtd.demo,
    minutemail.demo,
    rocketchat.demo,
]

DEMO_DIR = Path(__file__).resolve().parent.parent / "examples" / "demo"
NEW_ITEM_EVERY = (2.0, 6.0)


def demo_config() -> Path:
    for folder in (Path("examples/demo"), DEMO_DIR):
        if (folder / "inboxbot.yaml").is_file():
            return folder / "inboxbot.yaml"
    raise ConfigError("examples/demo/inboxbot.yaml not found; run the demo from a checkout")


@contextlib.asynccontextmanager
async def simulators(rng: random.Random) -> AsyncIterator[list[Callable[[], object]]]:
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(start(rng)) for start in UPSTREAMS]


async def run_demo(settings: Settings, duration: float | None) -> int:
    rng = random.Random()
    async with simulators(rng) as new_item:
        try:
            loaded = load(demo_config())
        except (ConfigError, ConfigErrors) as err:
            print(err)
            return 2
        print("demo: simulators on loopback; a new item every few seconds; Ctrl-C stops")
        with tempfile.TemporaryDirectory(prefix="inboxbot-demo-") as tmp:
            # a temporary state, unless --state names one (to try `inboxbot status` on it)
            async with resources(settings.state or Path(tmp) / "state.db") as res:
                daemon = Daemon(
                    loaded, res, config_path=demo_config(), stop_timeout=settings.stop_timeout
                )
                feeder = asyncio.create_task(_keep_coming(new_item, rng))
                if duration:
                    asyncio.get_running_loop().call_later(duration, daemon.stop)
                try:
                    await daemon.run()
                finally:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder
    return 0


async def _keep_coming(new_item: Sequence[Callable[[], object]], rng: random.Random) -> None:
    while True:
        await asyncio.sleep(rng.uniform(*NEW_ITEM_EVERY))
        rng.choice(new_item)()
