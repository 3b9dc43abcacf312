"""MQTT: each notification as JSON on one topic with QoS 1, and Home Assistant discovery of
a sensor per feed (its unread count, the last item as attributes).

    ha:
      type: mqtt
      url: mqtts://broker.lan:8883          # mqtt://host:1883 without TLS
      username: inboxbot
      password: ${MQTT_PASSWORD}
      topic: inboxbot/notify
      ca_file: /etc/inboxbot/broker-ca.pem  # optional; else the system's CAs
      discovery: true
      discovery_prefix: homeassistant
      node_id: inboxbot                     # the device id, and the root of its other topics

Topics (``node_id`` inboxbot, feed ``inbox/messages``):

- ``inboxbot/notify``: the webhook's payload (``id``, ``rule``, ``account``, ``feed``,
  ``kind``, ``item_id``, ``title``, ``message``, ``url``, ``priority``, ``item``,
  ``extract``), not retained unless ``retain: true``. One topic for every feed; subscribers
  filter on the payload, and drop a repeated ``id`` (a crash between PUBACK and our record).
- ``inboxbot/status``: ``online``, or ``offline`` on close and as the last will; retained.
- ``inboxbot/inbox_messages/state``: ``{"unread": n, "last": {…} | null}``; retained.
- ``homeassistant/sensor/inboxbot/inbox_messages/config``: the sensor (``discovery: true``),
  published with the feed's first state and left in place; retained.

Other keys: ``detail`` (fetch each item's detail, a mail's body, before publishing it;
default off: ``item`` is what was listed, ``complete: false`` when that is a summary),
``qos`` (1 or 2: a send returns once the broker acknowledged), ``retain``,
``client_id`` (default: a random one), ``reconnect_min`` (0.5s), ``reconnect_max`` (30s).

A background task keeps the connection, reconnecting after ``reconnect_min`` doubling up to
``reconnect_max``; after every connect it publishes the status, configs and states again, as
a broker without persistence forgets retained messages when it restarts. A send while the
broker is away raises TransientError, so the notification waits in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import ssl
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal
from urllib.parse import urlsplit

import aiohttp
from pydantic import Field, FilePath, SecretStr, field_validator

from bot import __version__
from bot.config import Duration, SinkConfig
from bot.errors import AuthError, RemoteError, TransientError
from bot.logs import fields
from bot.sinks.base import FeedState, File, Notification, Sink

if TYPE_CHECKING:  # aiomqtt and paho are imported when a configured MQTT sink connects
    import aiomqtt

log = logging.getLogger("inboxbot.sinks.mqtt")

AUTH_REFUSED = {4, 5, 134, 135}  # MQTT 3.1.1 CONNACK 4/5, their MQTT 5 reason codes


class MqttConfig(SinkConfig):
    type: Literal["mqtt"]
    format: Literal["text"] = "text"  # the payload is JSON: no markup to render
    url: str
    username: str | None = None
    password: SecretStr | None = None
    topic: str = "inboxbot/notify"
    qos: Literal[1, 2] = 1  # QoS 0 could lose a notification without anyone knowing
    retain: bool = False
    client_id: str | None = None
    ca_file: FilePath | None = None
    discovery: bool = True
    discovery_prefix: str = "homeassistant"
    node_id: str = Field("inboxbot", pattern=r"^[A-Za-z0-9_-]+$")
    reconnect_min: Duration = timedelta(seconds=0.5)
    reconnect_max: Duration = timedelta(seconds=30)
    detail: bool = False  # fetch each item's detail first, so `item` is complete

    @field_validator("url")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("write mqtt://host:1883 or mqtts://host:8883")
        if parts.username or parts.password or parts.path.strip("/"):
            raise ValueError("only scheme, host and port; credentials go in username/password")
        return url

    @field_validator("topic", "discovery_prefix")
    @classmethod
    def _plain_topic(cls, topic: str) -> str:
        if not topic or "+" in topic or "#" in topic:
            raise ValueError("a topic to publish on: not empty, no + or # wildcards")
        return topic.strip("/")


class MqttSink(Sink):
    type_name = "mqtt"
    config_model = MqttConfig
    wants_feed_state: ClassVar[bool] = True

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, MqttConfig)
        self.cfg = config
        url = urlsplit(config.url)
        self.host = url.hostname or ""
        self.port = url.port or (8883 if url.scheme == "mqtts" else 1883)
        self.status_topic = f"{config.node_id}/status"
        self._tls: ssl.SSLContext | None = None
        self._task: asyncio.Task[None] | None = None
        self._client: aiomqtt.Client | None = None  # set while connected
        self._lost = asyncio.Event()  # set when the current connection went down
        self._up = asyncio.Event()  # set while connected
        self._tried = asyncio.Event()  # the first connection attempt is over
        self._problem: RemoteError | None = None  # why the last attempt failed
        self._closing = False
        self._states: dict[str, FeedState] = {}  # object id → latest state, to re-announce
        self._announced: set[str] = set()  # configs published on this connection

    @classmethod
    def fetches_detail(cls, config: SinkConfig) -> bool:
        return isinstance(config, MqttConfig) and config.detail

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def wait_connected(self) -> None:
        """Until the connection is up (after a broker restart, say)."""
        await self._up.wait()

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Connect in the background; wait for the first attempt, within the timeout.
        Never raises (a reload must not fail halfway): sends say what is wrong."""
        if self._task is not None:
            return
        if self.cfg.url.startswith("mqtts:"):
            try:
                self._tls = await asyncio.to_thread(tls_context, self.cfg.ca_file)
            except OSError as err:  # ssl.SSLError too: a file without a CA certificate
                self._problem = AuthError(f"ca_file cannot be used: {err}", service=self.name)
                return
        self._task = asyncio.create_task(self._keep_connected(), name=f"mqtt {self.name}")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._tried.wait(), self.cfg.timeout.total_seconds())

    async def close(self) -> None:
        """Say ``offline`` and disconnect cleanly (so the broker does not send the will)."""
        task, self._task = self._task, None
        if task is None:
            return
        self._closing = True
        if self._client is not None:
            with contextlib.suppress(RemoteError):
                await self._publish(self.status_topic, "offline", retain=True)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    async def _keep_connected(self) -> None:
        failures = 0
        while True:
            try:
                await self._session()
            except Exception as err:  # whatever the library raises, keep reconnecting
                dropped = self._client is not None
                if dropped or self._problem is None:  # once per outage, not at every retry
                    event = "mqtt connection lost" if dropped else "mqtt unavailable"
                    log.warning(event, extra=self._fields(error=str(err)))
                self._problem = self._classify(err, dropped)
                failures = 0 if dropped else failures + 1
            finally:
                self._client = None
                self._up.clear()
                self._lost.set()
                self._tried.set()
            if self._closing:
                return
            low, high = self.cfg.reconnect_min, self.cfg.reconnect_max
            await asyncio.sleep(min(high, low * 2 ** min(failures, 16)).total_seconds())

    async def _session(self) -> None:
        """One connection: announce, then wait until it drops (raises MqttError)."""
        async with self._new_client() as client:
            await client.publish(self.status_topic, "online", qos=1, retain=True)
            self._client, self._lost, self._problem = client, asyncio.Event(), None
            self._announced.clear()
            self._up.set()
            self._tried.set()
            log.info("mqtt connected", extra=self._fields())
            await self._announce()
            async for _ in client.messages:  # nothing subscribed: ends when the link drops
                pass

    async def _announce(self) -> None:
        """Configs and states again: the broker may have forgotten its retained messages."""
        for state in list(self._states.values()):
            try:
                await self._show(state)
            except RemoteError:
                return  # the link dropped: the next connection announces again

    def _new_client(self) -> aiomqtt.Client:
        import aiomqtt

        c = self.cfg
        return aiomqtt.Client(
            self.host,
            self.port,
            username=c.username,
            password=c.password.get_secret_value() if c.password else None,
            identifier=c.client_id,
            will=aiomqtt.Will(self.status_topic, "offline", qos=1, retain=True),
            timeout=c.timeout.total_seconds(),
            tls_context=self._tls,
        )

    def _classify(self, err: Exception, dropped: bool) -> RemoteError:
        if dropped:
            return TransientError(f"connection to the broker lost: {err}", service=self.name)
        from aiomqtt.exceptions import MqttConnectError
        from paho.mqtt.reasoncodes import ReasonCode

        rc = getattr(err, "rc", None)
        code = rc.value if isinstance(rc, ReasonCode) else rc
        if isinstance(err, MqttConnectError) and code in AUTH_REFUSED:
            return AuthError(
                f"the broker refused the login ({err}): check username and password",
                service=self.name,
            )
        if "CERTIFICATE_VERIFY_FAILED" in str(err):  # aiomqtt keeps only the SSL error's text
            return AuthError(
                f"the broker's TLS certificate is not trusted ({err}): set ca_file to its CA",
                service=self.name,
            )
        return TransientError(
            f"broker {self.host}:{self.port} unavailable: {err}", service=self.name
        )

    def _fields(self, **more: Any) -> dict[str, Any]:
        return fields(sink=self.name, broker=f"{self.host}:{self.port}", **more)

    # --- publishing ------------------------------------------------------------------

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        if self._task is None:
            await self.start()
        payload = notification.to_json()
        payload.pop("options")
        await self._publish(self.cfg.topic, to_json(payload), retain=self.cfg.retain)

    async def feed_state(self, states: Sequence[FeedState]) -> None:
        """Remember each feed's state and show it; a feed's first state brings its sensor."""
        for state in states:
            self._states[object_id(state)] = state
        for state in states:
            await self._show(state)

    async def _show(self, state: FeedState) -> None:
        oid = object_id(state)
        if self.cfg.discovery and oid not in self._announced:
            topic = f"{self.cfg.discovery_prefix}/sensor/{self.cfg.node_id}/{oid}/config"
            await self._publish(topic, to_json(sensor_config(self.cfg, state)), retain=True)
            self._announced.add(oid)
        last = dict(state.last) if state.last is not None else None
        body = {"unread": state.unread, "last": last}
        await self._publish(state_topic(self.cfg, state), to_json(body), retain=True)

    async def _publish(self, topic: str, payload: str, *, retain: bool) -> None:
        """Publish and wait for the broker's acknowledgement, or for the link to drop."""
        import aiomqtt

        client, lost = self._client, self._lost
        if client is None:
            raise self._unavailable()
        publishing = asyncio.ensure_future(
            client.publish(topic, payload, qos=self.cfg.qos, retain=retain)
        )
        dropping = asyncio.ensure_future(lost.wait())
        try:
            await asyncio.wait((publishing, dropping), return_when=asyncio.FIRST_COMPLETED)
        finally:
            publishing.cancel()
            dropping.cancel()
        if not publishing.done() or publishing.cancelled():
            raise TransientError(
                "connection to the broker lost before its PUBACK", service=self.name
            )
        try:
            publishing.result()
        except aiomqtt.MqttError as err:
            raise TransientError(f"publish on {topic} failed: {err}", service=self.name) from err

    def _unavailable(self) -> RemoteError:
        problem = self._problem
        if isinstance(problem, AuthError):
            return AuthError(problem.message, service=self.name)
        reason = problem.message if problem else f"not connected to {self.host}:{self.port}"
        return TransientError(reason, service=self.name)


def object_id(state: FeedState) -> str:
    """``<account>_<feed>`` in the characters a discovery topic allows."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{state.account}_{state.feed}")


def state_topic(cfg: MqttConfig, state: FeedState) -> str:
    return f"{cfg.node_id}/{object_id(state)}/state"


def sensor_config(cfg: MqttConfig, state: FeedState) -> dict[str, Any]:
    """Home Assistant's MQTT sensor, as its discovery documentation describes it."""
    unique = f"{cfg.node_id}_{object_id(state)}"
    entity = re.sub(r"[^a-z0-9]+", "_", unique.lower()).strip("_")  # entity ids: [a-z0-9_]
    topic = state_topic(cfg, state)
    return {
        "name": f"{state.account} {state.feed}",
        "unique_id": unique,
        "object_id": entity,  # Home Assistant before 2025.10
        "default_entity_id": f"sensor.{entity}",  # its replacement since 2025.10
        "state_topic": topic,
        "value_template": "{{ value_json.unread }}",
        "json_attributes_topic": topic,
        "json_attributes_template": "{{ (value_json.last or {}) | tojson }}",
        "availability_topic": f"{cfg.node_id}/status",
        "payload_available": "online",
        "payload_not_available": "offline",
        "icon": "mdi:email",
        "state_class": "measurement",
        "qos": cfg.qos,
        "device": {
            "identifiers": [cfg.node_id],
            "name": "inboxbot",
            "manufacturer": "inboxbot",
            "model": "inboxbot",
            "sw_version": __version__,
        },
        "origin": {"name": "inboxbot", "sw_version": __version__},
    }


def to_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str)


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho-mqtt drops such a socket unclosed, which
    would leak a descriptor at every retry against a broker whose certificate we refuse."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """Verifying context: ``ca_file`` if given, else the system's CAs (reads files: a thread)."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.sslsocket_class = _ClosingSSLSocket
    return context
