"""``inboxbot demo``: the daemon against the built-in Mail.td simulator, on the console.

The simulator listens on loopback, starts with a small realistic inbox and
receives a new mail every few seconds (some of them verification mails with a
code and a link); the daemon runs ``examples/demo/`` against it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import tempfile
from pathlib import Path

from bot.app import load, running
from bot.daemon import Daemon
from bot.errors import ConfigError, ConfigErrors
from bot.settings import Settings
from bot.sim.corpus import realistic_message
from bot.sim.mailtd import MailTdSim, SimAccount, seed_realistic

DEMO_DIR = Path(__file__).resolve().parent.parent / "examples" / "demo"
NEW_MAIL_EVERY = (3.0, 8.0)


def demo_config() -> Path:
    for folder in (Path("examples/demo"), DEMO_DIR):
        if (folder / "inboxbot.yaml").is_file():
            return folder / "inboxbot.yaml"
    raise ConfigError("examples/demo/inboxbot.yaml not found; run the demo from a checkout")


async def run_demo(settings: Settings, duration: float | None) -> int:
    rng = random.Random()
    async with MailTdSim() as sim:
        account = sim.add_account("demo@mail.td")
        seed_realistic(sim, account, 4, rng)
        os.environ.update(
            INBOXBOT_DEMO_MAILTD_URL=sim.base_url,
            INBOXBOT_DEMO_MAILTD_ACCOUNT=account.address,
            INBOXBOT_DEMO_MAILTD_TOKEN=account.token,
        )
        try:
            loaded = load(demo_config())
        except (ConfigError, ConfigErrors) as err:
            print(err)
            return 2
        print(
            f"demo: Mail.td simulator at {sim.base_url}; a new mail every few seconds; Ctrl-C stops"
        )
        with tempfile.TemporaryDirectory(prefix="inboxbot-demo-") as tmp:
            async with running(loaded, Path(tmp) / "state.db") as pipeline:
                daemon = Daemon(pipeline, loaded.feeds(), stop_timeout=settings.stop_timeout)
                feeder = asyncio.create_task(_keep_mailing(sim, account, rng))
                if duration:
                    asyncio.get_running_loop().call_later(duration, daemon.stop)
                try:
                    await daemon.run()
                finally:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder
    return 0


async def _keep_mailing(sim: MailTdSim, account: SimAccount, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(rng.uniform(*NEW_MAIL_EVERY))
        sim.add_message(account, **realistic_message(rng))
