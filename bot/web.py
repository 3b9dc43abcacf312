"""The local HTTP endpoints: ``/healthz``, ``/readyz`` and ``/metrics`` (Prometheus)."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.metrics import Metrics

Check = Callable[[], list[str]]  # the reasons it is not fine; empty when fine


def make_app(healthy: Check, ready: Check, metrics: Metrics) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _answer(healthy())

    async def readyz(_: web.Request) -> web.Response:
        return _answer(ready())

    async def exposition(_: web.Request) -> web.Response:
        return web.Response(
            body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", exposition)
    return app


def _answer(reasons: list[str]) -> web.Response:
    text = "\n".join(reasons) if reasons else "ok"
    return web.Response(text=text + "\n", status=503 if reasons else 200)


async def serve(app: web.Application, listen: str) -> web.AppRunner:
    """Start listening on ``host:port``; the caller cleans the runner up."""
    host, _, port = listen.rpartition(":")
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    try:
        await web.TCPSite(runner, host.strip("[]") or "127.0.0.1", int(port)).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner
