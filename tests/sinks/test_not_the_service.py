"""A 2xx that is not the service's answer (a proxy's or captive portal's HTML page, an
empty body) means the notification may never have reached the service: every sink whose
service answers a send with its own body retries it instead of counting it delivered.
Against each service's simulator, over HTTP (found by proof/sinkfaults.py: before, six
of the seven sinks counted it delivered and dropped it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest
import yaml

from bot.errors import TransientError
from bot.sinks import SINKS, Notification, Sink
from proof.sinkfakes import KINDS, Kind

NAMES = [name for name in KINDS if name != "webhook"]  # to a webhook any 2xx is acceptance
NOT_AN_ANSWER = {
    "HTML page": ("html", {"status": 200}),
    "empty body": ("canned", {"status": 200, "body": ""}),
}


@pytest.fixture(params=NAMES)
async def kind(request: pytest.FixtureRequest) -> AsyncIterator[Kind]:
    started = await KINDS[request.param]()
    yield started
    await started.fake.stop()


def sink_of(kind: Kind, session: aiohttp.ClientSession) -> Sink:
    keys = yaml.safe_load(kind.sink)
    cls = SINKS[keys["type"]]
    return cls("out", cls.config_model.model_validate(keys), session)


def note(title: str) -> Notification:
    return Notification(id="n-1", rule="r", account="box", feed="messages", kind="email",
                        item_id="m1", title=title, message="hello", url=None,
                        priority="default")  # fmt: skip


@pytest.mark.parametrize("answer", NOT_AN_ANSWER)
async def test_a_200_that_is_not_the_services_answer_is_retried(
    kind: Kind, session: aiohttp.ClientSession, answer: str
) -> None:
    sink = sink_of(kind, session)
    fault, params = NOT_AN_ANSWER[answer]
    kind.fake.inject(fault, **params)
    with pytest.raises(TransientError):
        await sink.send(note("tagged1 mail"))
    assert not any("tagged1" in t for t in kind.texts())
    await sink.send(note("tagged1 mail"))  # the retry
    assert sum("tagged1" in t for t in kind.texts()) == 1


async def test_the_services_own_answer_is_a_delivery(
    kind: Kind, session: aiohttp.ClientSession
) -> None:
    await sink_of(kind, session).send(note("tagged2 mail"))
    assert sum("tagged2" in t for t in kind.texts()) == 1
