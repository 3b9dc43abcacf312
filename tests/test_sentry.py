"""Sentry: events reach a local envelope receiver, scrubbed of secrets and item content."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from bot.sentry import Scrubber
from tests.conftest import Setup

CANARY_SUBJECT = "CANARY-SUBJECT-7731"
CANARY_SENDER = "canary.sender@canary.example"


def test_the_scrubber_masks_secrets_tokens_addresses_and_content() -> None:
    scrubber = Scrubber(["s3cret-config-value"])
    event = {
        "message": "x",
        "logentry": {"message": "failed with s3cret-config-value for bob@example.com"},
        "exception": {
            "values": [{"value": "GET https://api.mail.td/api/accounts/x/messages?token=abc"}]
        },
        "extra": {"fields": {"subject": CANARY_SUBJECT, "error": "Bearer td_0123456789abcdef"}},
        "breadcrumbs": {
            "values": [
                {"message": "auth mmak_FKI5IKBJ4FSZJLUFGJ3IMF4A55W2OZW7YMLWD3JI33IVUGDEJXLQ"}
            ]
        },
    }
    text = repr(scrubber.event(event, {}))
    for leak in ("s3cret", "bob@example.com", "/api/accounts", "td_0123", "mmak_F", CANARY_SUBJECT):
        assert leak not in text, leak
    assert "[secret]" in text and "[address]" in text and "https://api.mail.td/[path]" in text


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[str, list[bytes]]]:
    bodies: list[bytes] = []

    async def envelope(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/1/envelope/", envelope)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://public@127.0.0.1:{runner.addresses[0][1]}/1", bodies
    await runner.cleanup()


async def once(setup: Setup, env: dict[str, str]) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot", "--config", str(setup.tmp / "inboxbot.yaml"), "once",
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, env={**os.environ, **env},
        cwd=setup.tmp,
    )  # fmt: skip
    _, err = await proc.communicate()
    return proc.returncode or 0, err


async def test_events_arrive_without_canaries(
    setup: Setup, receiver: tuple[str, list[bytes]]
) -> None:
    dsn, bodies = receiver
    setup.sim.add_message(
        setup.account, sender=CANARY_SENDER, subject=CANARY_SUBJECT, text_body="canary body"
    )
    setup.write()
    setup.hook.fail(400)  # a permanent delivery failure: logged as an error → an event
    code, err = await once(setup, {"INBOXBOT_SENTRY_DSN": dsn})
    assert code == 1, err.decode()  # a notification refused for good is work left
    everything = b"".join(bodies)
    assert b'"type":"event"' in everything, "no event reached the receiver"
    for canary in (
        setup.account.token,
        CANARY_SUBJECT,
        CANARY_SENDER,
        "alice@mail.td",
        "public@127",
    ):
        assert canary.encode() not in everything, canary


async def test_sentry_is_not_imported_without_a_dsn(setup: Setup) -> None:
    setup.write()
    code = (
        "import sys; from bot.cli import main; main(['--config', sys.argv[1], 'once']);"
        "print('sentry_sdk' in sys.modules)"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(setup.tmp / "inboxbot.yaml"),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if k != "INBOXBOT_SENTRY_DSN"},
    )  # fmt: skip
    out, _ = await proc.communicate()
    assert out.strip().endswith(b"False")


def test_an_http_breadcrumb_keeps_no_query_string() -> None:
    crumb = {"type": "http", "data": {"http.query": "key=CANARY-Q", "http.fragment": "",
                                      "url": "http://hook.example/h", "method": "POST"}}  # fmt: skip
    scrubbed = Scrubber().breadcrumb(crumb, {})
    assert "CANARY-Q" not in repr(scrubbed)
    assert scrubbed["data"]["http.query"] == "[query]" and scrubbed["data"]["method"] == "POST"
