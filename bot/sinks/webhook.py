"""Webhook: POST each notification as JSON, with an ``Idempotency-Key`` header.

    hooks:
      type: webhook
      url: http://127.0.0.1:8080/hook
      headers: {Authorization: "Bearer ${HOOK_TOKEN}"}
      detail: true     # fetch each item's detail (a mail's body) before sending it

The payload: ``{"id", "rule", "account", "feed", "kind", "item_id", "title",
"message", "url", "priority", "item": {…}, "extract": {…}}``. The id is stable, so a
receiver can drop the duplicate a crash between its answer and our record may cause.
``item`` holds every normalized field but ``raw``, and ``complete``: false when only the
upstream's summary was fetched (no rule read the body and ``detail`` is off), so ``text``
is a preview and ``html``, ``attachments`` and ``links`` are empty.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import aiohttp
from pydantic import Field, SecretStr

from bot.config import SecretUrl, SinkConfig
from bot.http import HttpClient, classify
from bot.sinks.base import File, Notification, Sink


class WebhookConfig(SinkConfig):
    type: Literal["webhook"]
    url: SecretUrl
    headers: dict[str, SecretStr] = Field(default_factory=dict)
    detail: bool = False  # fetch each item's detail first, so `item` is complete


class WebhookSink(Sink):
    type_name = "webhook"
    config_model = WebhookConfig

    def __init__(self, name: str, config: SinkConfig, session: aiohttp.ClientSession) -> None:
        super().__init__(name, config, session)
        assert isinstance(config, WebhookConfig)
        headers = {k: v.get_secret_value() for k, v in config.headers.items()}
        self.http = HttpClient(
            session,
            config.url.get_secret_value(),
            service=name,
            headers=headers,
            timeout=config.timeout.total_seconds(),
        )

    @classmethod
    def fetches_detail(cls, config: SinkConfig) -> bool:
        return isinstance(config, WebhookConfig) and config.detail

    async def send(self, notification: Notification, files: Sequence[File] = ()) -> None:
        payload: dict[str, Any] = notification.to_json()
        payload.pop("options")
        resp = await self.http.request(
            "POST", "", json=payload, headers={"Idempotency-Key": notification.id}
        )
        if resp.status == 409:  # the receiver already has this id: delivered
            return
        if not resp.ok:
            raise classify(resp, self.name)
