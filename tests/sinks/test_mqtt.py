"""The MQTT sink against a real Mosquitto broker (tests/servers/mosquitto.py): notifications
with QoS 1, passwords and TLS, Home Assistant discovery, the last will, a broker restart."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import aiomqtt
import jinja2
import pytest

from bot.app import load
from bot.errors import AuthError, ConfigErrors, TransientError
from bot.sinks.base import FeedState, Notification
from bot.sinks.mqtt import MqttConfig, MqttSink, object_id, sensor_config
from bot.sources import Feed
from tests.conftest import Setup
from tests.servers.mosquitto import PASSWORD, USERNAME, Mosquitto, running_mosquitto

ROOT = Path(__file__).resolve().parents[2]
INJECTION = '*bold* _x_ <b>x</b> @here @all [link](http://evil) `code` "quoted"\n{{ 7*7 }}'
WEBHOOK_KEYS = {"id", "rule", "account", "feed", "kind", "item_id", "title", "message", "url",
                "priority", "item", "extract"}  # fmt: skip
LAST = {"id": "m1", "subject": "Hi", "sender": "bob@example.com",
        "created_at": "2024-05-01T10:00:00+00:00", "url": "https://mail.example/m1"}  # fmt: skip


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[Mosquitto]:
    with running_mosquitto() as broker:
        yield broker


@pytest.fixture
def broker(mosquitto: Mosquitto) -> Mosquitto:
    if not mosquitto.running:  # a restart test that failed halfway
        mosquitto.start()
    return mosquitto


@pytest.fixture
def node() -> str:
    """A node id of the test's own, so that retained topics of other tests do not mix in."""
    return f"t{uuid.uuid4().hex[:10]}"


MakeSink = Callable[..., MqttSink]


@pytest.fixture
async def make_sink(session: aiohttp.ClientSession, node: str) -> AsyncIterator[MakeSink]:
    sinks: list[MqttSink] = []

    def make(url: str, name: str = "ha", **keys: Any) -> MqttSink:
        config = MqttConfig.model_validate(
            {"type": "mqtt", "url": url, "topic": f"{node}/notify", "node_id": node,
             "timeout": "3s", "reconnect_min": "0.1s", "reconnect_max": "0.5s", **keys}
        )  # fmt: skip
        sinks.append(MqttSink(name, config, session))
        return sinks[-1]

    yield make
    for sink in sinks:
        await sink.close()


@asynccontextmanager
async def subscriber(broker: Mosquitto, *topics: str) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client("127.0.0.1", broker.ports["anonymous"]) as client:
        for topic in topics:
            await client.subscribe(topic, qos=1)
        yield client


async def receive(client: aiomqtt.Client, count: int) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            got.append(message)
            if len(got) == count:
                break
    return got


async def reconnected(sink: MqttSink) -> None:
    async with asyncio.timeout(10):
        await sink.wait_connected()


def at(moment: float) -> Callable[[], float]:
    return lambda: moment


def notification(**changes: Any) -> Notification:
    fields: dict[str, Any] = {
        "id": "n1", "rule": "new-mail", "account": "inbox", "feed": "messages", "kind": "email",
        "item_id": "m1", "title": f"Subject {INJECTION}", "message": f"Body {INJECTION}",
        "url": "https://mail.example/m1", "priority": "high", "item": {"subject": INJECTION},
        "extract": {"code": "482913"}, "options": {"silent": True},
    }  # fmt: skip
    return Notification(**{**fields, **changes})


def payload(message: aiomqtt.Message) -> Any:
    assert isinstance(message.payload, bytes)
    return json.loads(message.payload)


# --- notifications -----------------------------------------------------------------------


@pytest.mark.parametrize("size", [100, 256 * 1024])
async def test_a_notification_arrives_as_the_webhook_json_with_qos_1(
    broker: Mosquitto, make_sink: MakeSink, node: str, size: int
) -> None:
    sink = make_sink(broker.url())
    n = notification(message=f"Body {INJECTION}".ljust(size, "x"))
    async with subscriber(broker, f"{node}/notify") as sub:
        await sink.start()
        await sink.send(n)
        (message,) = await receive(sub, 1)
    expected = n.to_json()
    del expected["options"]
    assert payload(message) == expected  # content verbatim: JSON carries no markup
    assert set(payload(message)) == WEBHOOK_KEYS
    assert (message.qos, message.retain) == (1, False)


async def test_the_password_listener_takes_the_right_password(
    broker: Mosquitto, make_sink: MakeSink, node: str
) -> None:
    sink = make_sink(broker.url("password"), username=USERNAME, password=PASSWORD)
    async with subscriber(broker, f"{node}/notify") as sub:
        await sink.start()
        await sink.send(notification())
        (message,) = await receive(sub, 1)
    assert payload(message)["id"] == "n1"


async def test_a_wrong_password_is_an_auth_error_naming_the_sink(
    broker: Mosquitto, make_sink: MakeSink, caplog: pytest.LogCaptureFixture
) -> None:
    sink = make_sink(broker.url("password"), "home-mqtt", username=USERNAME, password="Wr0ng-pw")
    await sink.start()
    with pytest.raises(AuthError) as err:
        await sink.send(notification())
    assert str(err.value).startswith("home-mqtt: ")
    assert "username and password" in str(err.value)
    assert "Wr0ng-pw" not in str(err.value) + caplog.text


async def test_the_tls_listener_with_its_ca_file(
    broker: Mosquitto, make_sink: MakeSink, node: str
) -> None:
    sink = make_sink(broker.url("tls"), username=USERNAME, password=PASSWORD,
                     ca_file=str(broker.ca_file))  # fmt: skip
    async with subscriber(broker, f"{node}/notify") as sub:
        await sink.start()
        await sink.send(notification())
        (message,) = await receive(sub, 1)
    assert payload(message)["title"].startswith("Subject")


async def test_an_untrusted_certificate_says_to_set_ca_file(
    broker: Mosquitto, make_sink: MakeSink
) -> None:
    sink = make_sink(broker.url("tls"), username=USERNAME, password=PASSWORD)
    await sink.start()
    with pytest.raises(AuthError, match="ca_file"):
        await sink.send(notification())
    await sink.close()
    gc.collect()  # a socket left open by a failed handshake would warn here


async def test_a_ca_file_without_a_certificate_is_an_auth_error(
    broker: Mosquitto, make_sink: MakeSink, tmp_path: Path
) -> None:
    (tmp_path / "ca.pem").write_text("not a certificate")
    sink = make_sink(broker.url("tls"), ca_file=str(tmp_path / "ca.pem"))
    await sink.start()  # never raises: a reload must not fail halfway
    with pytest.raises(AuthError, match="ca_file cannot be used"):
        await sink.send(notification())


@pytest.mark.parametrize(
    ("keys", "error"),
    [
        ("url: http://broker:1883", "sinks.ha.url: write mqtt://host:1883 or mqtts://host:8883"),
        ("url: mqtt://me:Secr3t@broker", "sinks.ha.url: only scheme, host and port"),
        ("url: mqtt://b, topic: 'inboxbot/#'", "sinks.ha.topic: a topic to publish on"),
        ("url: mqtt://b, qos: 0", "sinks.ha.qos: "),
        ("url: mqtt://b, node_id: my.box", "sinks.ha.node_id: "),
        ("url: mqtts://b, ca_file: /nonexistent.pem", "sinks.ha.ca_file: "),
    ],
)
def test_configuration_errors_name_the_key(setup: Setup, keys: str, error: str) -> None:
    path = setup.write(sinks=f"  ha: {{type: mqtt, {keys}}}\n")
    with pytest.raises(ConfigErrors) as err:
        load(path)
    assert error in str(err.value) and "Secr3t" not in str(err.value)


# --- Home Assistant discovery -----------------------------------------------------------

# Home Assistant's documented MQTT sensor options (integrations/sensor.mqtt).
SENSOR_KEYS = {
    "availability", "availability_mode", "availability_template", "availability_topic",
    "default_entity_id", "device", "device_class", "enabled_by_default", "encoding",
    "entity_category", "entity_picture", "expire_after", "force_update", "icon",
    "json_attributes_template", "json_attributes_topic", "last_reset_value_template", "name",
    "object_id", "options", "origin", "payload_available", "payload_not_available", "platform",
    "qos", "state_class", "state_topic", "suggested_display_precision", "unique_id",
    "unit_of_measurement", "value_template",
}  # fmt: skip
DEVICE_KEYS = {"configuration_url", "connections", "hw_version", "identifiers", "manufacturer",
               "model", "model_id", "name", "serial_number", "suggested_area", "sw_version",
               "via_device"}  # fmt: skip
ORIGIN_KEYS = {"name", "sw_version", "support_url"}
TOPIC_ID = re.compile(r"^[A-Za-z0-9_-]+$")
ENTITY_ID = re.compile(r"^sensor\.(?!_)(?!.*__)[a-z0-9_]+(?<!_)$")


def check_sensor(topic: str, config: dict[str, Any]) -> None:
    """A discovery message as Home Assistant's MQTT documentation asks for it."""
    prefix, component, node_id, oid, last = topic.split("/")
    assert (prefix, component, last) == ("homeassistant", "sensor", "config")
    assert TOPIC_ID.match(node_id) and TOPIC_ID.match(oid)
    assert set(config) <= SENSOR_KEYS and "state_topic" in config
    for key in ("state_topic", "json_attributes_topic", "availability_topic"):
        assert isinstance(config[key], str) and not set(config[key]) & {"+", "#"}
    assert config["state_class"] in {"measurement", "total", "total_increasing"}
    assert ENTITY_ID.match(config["default_entity_id"])
    assert config["default_entity_id"] == f"sensor.{config['object_id']}"
    assert config["icon"].startswith("mdi:") and config["qos"] in (0, 1, 2)
    assert set(config["device"]) <= DEVICE_KEYS and config["device"]["identifiers"] == [node_id]
    assert set(config["origin"]) <= ORIGIN_KEYS and config["origin"]["name"] == "inboxbot"
    assert (config["payload_available"], config["payload_not_available"]) == ("online", "offline")


def render(template: str, value_json: Any) -> str:
    """The way Home Assistant renders value and attribute templates (Jinja2, ``tojson``)."""
    return jinja2.Environment().from_string(template).render(value_json=value_json)


async def test_discovery_gives_a_retained_sensor_per_feed_for_a_late_subscriber(
    broker: Mosquitto, make_sink: MakeSink, node: str
) -> None:
    sink = make_sink(broker.url())
    await sink.start()
    await sink.feed_state([FeedState("inbox", "messages", 2, LAST),
                           FeedState("furry", "dmails", 0, None)])  # fmt: skip
    async with subscriber(broker, f"homeassistant/sensor/{node}/+/config", f"{node}/#") as sub:
        got = {str(m.topic): m for m in await receive(sub, 5)}  # 2 configs, 2 states, status
    assert all(m.retain for m in got.values())
    configs = {t: payload(m) for t, m in got.items() if t.startswith("homeassistant/")}
    assert sorted(configs) == [f"homeassistant/sensor/{node}/furry_dmails/config",
                               f"homeassistant/sensor/{node}/inbox_messages/config"]  # fmt: skip
    for topic, config in configs.items():
        check_sensor(topic, config)
        state = payload(got[config["state_topic"]])
        assert config["json_attributes_topic"] == config["state_topic"]
        attributes = json.loads(render(config["json_attributes_template"], state))
        assert render(config["value_template"], state) == str(state["unread"])
        assert attributes == (state["last"] or {})
        assert got[config["availability_topic"]].payload == b"online"
    inbox = configs[f"homeassistant/sensor/{node}/inbox_messages/config"]
    assert payload(got[inbox["state_topic"]]) == {"unread": 2, "last": LAST}
    assert inbox["unique_id"] == f"{node}_inbox_messages"


def test_object_ids_are_sanitised_for_topics_and_entity_ids() -> None:
    state = FeedState("Alice.Mail", "dm ails/x+#", 1, None)
    config = MqttConfig.model_validate({"type": "mqtt", "url": "mqtt://b", "node_id": "In-Box"})
    assert object_id(state) == "Alice_Mail_dm_ails_x__"
    sensor = sensor_config(config, state)
    assert sensor["state_topic"] == "In-Box/Alice_Mail_dm_ails_x__/state"
    assert sensor["default_entity_id"] == "sensor.in_box_alice_mail_dm_ails_x"
    check_sensor("homeassistant/sensor/In-Box/Alice_Mail_dm_ails_x__/config", sensor)


# --- availability and the last will ---------------------------------------------------


async def test_availability_is_online_then_offline_after_close(
    broker: Mosquitto, make_sink: MakeSink, node: str
) -> None:
    sink = make_sink(broker.url())
    async with subscriber(broker, f"{node}/status") as sub:
        await sink.start()
        (online,) = await receive(sub, 1)
        await sink.close()
        (offline,) = await receive(sub, 1)
    assert (online.payload, offline.payload) == (b"online", b"offline")
    async with subscriber(broker, f"{node}/status") as late:
        (kept,) = await receive(late, 1)
    assert (kept.payload, kept.retain) == (b"offline", True)


DYING_CLIENT = """\
import asyncio, sys
import aiohttp
from bot.sinks.mqtt import MqttConfig, MqttSink

async def main():
    config = MqttConfig.model_validate({"type": "mqtt", "url": sys.argv[1], "node_id": sys.argv[2]})
    async with aiohttp.ClientSession() as session:
        sink = MqttSink("ha", config, session)
        await sink.start()
        print("connected" if sink.connected else "not connected", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main())
"""


async def test_the_last_will_says_offline_when_the_process_dies(
    broker: Mosquitto, node: str
) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", DYING_CLIENT, broker.url(), node, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            assert await proc.stdout.readline() == b"connected\n"
        async with subscriber(broker, f"{node}/status") as sub:
            (online,) = await receive(sub, 1)
            proc.kill()  # no DISCONNECT: the broker publishes the will
            (will,) = await receive(sub, 1)
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.communicate()
    assert (online.payload, will.payload) == (b"online", b"offline")


# --- the broker restarts ----------------------------------------------------------------


async def test_a_broker_restart_loses_no_notification(
    broker: Mosquitto, make_sink: MakeSink, node: str
) -> None:
    sink = make_sink(broker.url())
    await sink.start()
    await sink.feed_state([FeedState("inbox", "messages", 1, LAST)])
    broker.stop()
    with pytest.raises(TransientError):  # the pipeline keeps it in the outbox
        await sink.send(notification(id="while-down"))
    assert not sink.connected
    broker.start()  # persistence is off: the broker forgot every retained message
    await reconnected(sink)
    config = f"homeassistant/sensor/{node}/inbox_messages/config"
    async with subscriber(broker, f"{node}/#", config) as sub:
        await sink.send(notification(id="while-down"))
        got = {str(m.topic): m for m in await receive(sub, 4)}
    assert payload(got[f"{node}/notify"])["id"] == "while-down"
    assert got[f"{node}/status"].payload == b"online"
    assert payload(got[f"{node}/inbox_messages/state"])["unread"] == 1
    assert payload(got[config])["state_topic"] == f"{node}/inbox_messages/state"


FEED = Feed("inbox", "messages", timedelta(seconds=1), None)
RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: ha, template: email}]
"""


async def test_an_outage_longer_than_the_retries_delivers_exactly_once(
    setup: Setup, broker: Mosquitto, node: str
) -> None:
    sinks = (f'  ha: {{type: mqtt, url: "{broker.url()}", topic: {node}/notify, node_id: {node},'
             " timeout: 3s, reconnect_min: 0.1s, reconnect_max: 0.5s}\n")  # fmt: skip
    mid = setup.sim.add_message(setup.account, sender="bob@example.com", subject="outage",
                                text_body="during the outage")  # fmt: skip
    async with setup.pipeline(RULES, sinks=sinks) as pipe:
        sink = pipe.sinks["ha"]
        assert isinstance(sink, MqttSink) and sink.connected
        broker.stop()
        start = time.time()
        await pipe.poll(FEED)  # plans the notification; the feed state cannot be shown
        for hour in range(1, 12, 2):  # beyond the retry schedule: hours, each round due
            pipe.clock.time = at(start + hour * 3600)  # type: ignore[method-assign]
            await pipe.flush()
            (step,) = pipe.store.pending_steps("deliver")
        assert step.attempts >= 6
        broker.start()
        await reconnected(sink)
        async with subscriber(broker, f"{node}/notify") as sub:
            for hour in (13, 15):  # a second round must not send it again
                pipe.clock.time = at(start + hour * 3600)  # type: ignore[method-assign]
                await pipe.flush()
            await sub.publish(f"{node}/notify", b"marker", qos=1)  # after all of ours
            got = await receive_until_marker(sub)
        assert pipe.store.pending_steps("deliver") == []
    assert [payload(m)["item_id"] for m in got] == [mid]


async def receive_until_marker(client: aiomqtt.Client) -> list[aiomqtt.Message]:
    got: list[aiomqtt.Message] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            if message.payload == b"marker":
                return got
            got.append(message)
    return got


READ_RULES = """\
- name: new-mail
  when: {kind: email}
  notify: [{sink: ha, template: email}]
  then: [mark_read]
"""


async def test_the_pipeline_shows_each_polls_unread_count_and_last_item(
    setup: Setup, broker: Mosquitto, node: str
) -> None:
    sinks = (f'  ha: {{type: mqtt, url: "{broker.url()}", topic: {node}/notify, node_id: {node},'
             " timeout: 3s}\n")  # fmt: skip
    for subject in ("first", "second"):
        setup.sim.add_message(setup.account, sender="bob@example.com", subject=subject,
                              text_body="x")  # fmt: skip
    state = f"{node}/inbox_messages/state"
    async with setup.pipeline(READ_RULES, sinks=sinks) as pipe, subscriber(broker, state) as sub:
        await pipe.poll(FEED)  # both new and unread, nothing delivered yet
        (got,) = await receive(sub, 1)
        assert payload(got)["unread"] == 2
        assert payload(got)["last"]["subject"] in ("first", "second")
        await pipe.flush()  # delivered, then marked read
        await pipe.poll(FEED)
        (got,) = await receive(sub, 1)
        assert payload(got)["unread"] == 0
