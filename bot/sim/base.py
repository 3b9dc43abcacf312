"""What every upstream simulator shares: the aiohttp lifecycle, queued faults, a "down"
switch, the request log (``counts`` per kind: list, detail, probe…) and the
unauthenticated ``/_sim/`` control endpoints for them.

A simulator subclasses ``SimServer``, adds its routes in ``add_routes`` and answers its
upstream's requests in ``serve``; it overrides ``fault_response``, ``down_response`` and
``caller`` where its upstream looks different. Faults every simulator knows:

- ``latency`` (``seconds``): wait, then answer normally;
- ``status``, ``html`` (``status``), ``rate_limited``: answer in the upstream's shape;
- ``truncated``: the real answer cut in half; ``reset`` (``before_headers``): drop the
  connection, by default mid-body;
- ``empty`` (``status``, 200 by default): a 200 with an empty JSON body, or a 204;
- ``rewrite`` (``fn``): the real answer's JSON passed through ``fn`` (a callable, so only
  in-process, not through ``/_sim/faults``), e.g. ids turned into objects;
- ``before`` (``fn``): ``fn(request)`` runs, then the request is answered normally (e.g. mail
  inserted and deleted between a page 1 and a page 2 request).

Every kind answering in place of the service (``status``, ``html``, ``rate_limited``,
``empty``…) takes ``headers``, added to its answer (e.g. ``Retry-After``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, ClassVar, Self

from aiohttp import web
from aiohttp.typedefs import Handler

FAULT_KINDS = frozenset(
    {"latency", "status", "html", "truncated", "reset", "rate_limited", "empty", "rewrite",
     "before"}
)  # fmt: skip

_PROXY_PAGE = (
    "<html>\r\n<head><title>{status} {phrase}</title></head>\r\n<body>\r\n"
    "<center><h1>{status} {phrase}</h1></center>\r\n<hr><center>{server}</center>\r\n"
    "</body>\r\n</html>\r\n"
)


@dataclass
class Fault:
    """A failure queued for the next ``remaining`` requests that match method and path."""

    kind: str
    remaining: int
    method: str | None = None
    path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def matches(self, request: web.Request) -> bool:
        """``path`` is a substring of the request's path; ending in ``$``, its end."""
        method_ok = self.method is None or self.method.upper() == request.method
        if self.path is not None and self.path.endswith("$"):
            return method_ok and request.path.endswith(self.path[:-1])
        return method_ok and (self.path is None or self.path in request.path)


@dataclass(frozen=True)
class SimRequest:
    """One logged API request; ``status`` 0 means the connection was reset. ``caller`` is
    who the request claims to be (a token, a user name or id), as the simulator reads it."""

    time: float
    method: str
    path: str
    query: str
    status: int
    caller: str | None
    agent: str = ""

    @property
    def token(self) -> str | None:
        """The caller, for APIs whose callers are Bearer tokens."""
        return self.caller


class SlidingWindows:
    """Request times per key within the last ``seconds``. By default only admitted requests
    enter a window (a client that keeps hammering gets through again once its successes age
    out); with ``count_refused`` every request does, so hammering keeps a client refused."""

    def __init__(self, seconds: float = 1.0, *, count_refused: bool = False) -> None:
        self.seconds = seconds
        self.count_refused = count_refused
        self._times: dict[Hashable, deque[float]] = {}

    def admit(self, key: Hashable, limit: float, now: float) -> bool:
        times = self._times.setdefault(key, deque())
        while times and times[0] <= now - self.seconds:
            times.popleft()
        if self.count_refused:
            times.append(now)
            return len(times) <= limit
        if len(times) >= limit:
            return False
        times.append(now)
        return True

    def used(self, key: Hashable) -> int:
        """The requests in ``key``'s window as of its last admission."""
        return len(self._times.get(key, ()))


def busiest_window(requests: Iterable[SimRequest], window: float) -> int:
    """Most of ``requests`` that arrived within any ``window`` seconds."""
    times = sorted(r.time for r in requests)
    best = start = 0
    for end, moment in enumerate(times):
        while moment - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def proxy_page(status: int, server: str = "nginx") -> web.Response:
    """The HTML error page a reverse proxy in front of the service answers with."""
    page = _PROXY_PAGE.format(status=status, phrase=HTTPStatus(status).phrase, server=server)
    return web.Response(status=status, text=page, content_type="text/html")


async def json_object(request: web.Request) -> dict[str, Any]:
    """A control request's JSON body; anything but an object is a TypeError (a 400)."""
    body = await request.json()
    if not isinstance(body, dict):
        raise TypeError("the body must be a JSON object")
    return body


class SimServer:
    """An upstream served on a local port; ``async with`` starts and stops it.

    ``clock`` (seconds) stamps the request log; tests may replace it at any time."""

    fault_kinds: ClassVar[frozenset[str]] = FAULT_KINDS
    partial_body: ClassVar[bytes] = b'{"items": [{"id": "'  # what a cut answer starts with
    window_seconds: ClassVar[float] = 1.0  # the default of ``max_requests_in_window``
    window_filter: ClassVar[str] = "caller"  # its query parameter on ``/_sim/requests/…``

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.down = False
        self.base_url = ""
        self.requests: list[SimRequest] = []
        self.counts: Counter[str] = Counter()  # requests per ``route_name``, refused ones too
        self.faults: list[Fault] = []
        self._runner: web.AppRunner | None = None

    # State control, used by tests and the demo in the same event loop.

    def inject(
        self,
        kind: str,
        *,
        count: int = 1,
        method: str | None = None,
        path: str | None = None,
        **params: Any,
    ) -> None:
        """Queue ``kind`` for the next ``count`` matching requests; ``path`` is a substring.
        The class docstring says which ``params`` each kind takes."""
        if kind not in self.fault_kinds:
            raise ValueError(f"unknown fault {kind!r}; one of {sorted(self.fault_kinds)}")
        self.faults.append(Fault(kind, count, method, path, params))

    def set_down(self, down: bool) -> None:
        self.down = down

    def max_requests_in_window(
        self, window: float | None = None, caller: str | None = None, /
    ) -> int:
        """Most requests (accepted or refused) from ``caller`` (or anyone) that arrived
        within any ``window`` seconds."""
        chosen = [r for r in self.requests if caller is None or r.caller == caller]
        return busiest_window(chosen, self.window_seconds if window is None else window)

    # Lifecycle.

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        runner = web.AppRunner(self.make_app(), access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        self.base_url = f"http://{shown}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # The HTTP application; subclasses fill in the parts their upstream shapes.

    def make_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gate])
        self.add_routes(app.router)
        app.router.add_post("/_sim/faults", self._ctl_fault)
        app.router.add_post("/_sim/down", self._ctl_down)
        app.router.add_get("/_sim/requests/max_window", self._ctl_max_window)
        app.router.add_get("/_sim/requests/counts", self._ctl_counts)
        return app

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """The upstream's API and the simulator's own ``/_sim/`` controls."""

    async def serve(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer a request no fault or outage got in the way of."""
        return await handler(request)

    def route_name(self, request: web.Request) -> str:
        """The kind of request ``counts`` counts: the route's name where the simulator gave
        one (its list, detail and probe routes), else the method and the path pattern."""
        route = request.match_info.route
        if route.name:
            return route.name
        return f"{request.method} {route.resource.canonical if route.resource else request.path}"

    def caller(self, request: web.Request) -> str | None:
        """Who the request claims to be, for the log."""
        return bearer_token(request)

    def down_response(self) -> web.StreamResponse:
        return proxy_page(503)

    def fault_response(self, fault: Fault) -> web.StreamResponse:
        """The answer to a queued ``status``, ``html``, ``rate_limited``… fault."""
        return proxy_page(int(fault.params.get("status", 502)))

    def control_error(self, err: Exception) -> web.Response:
        body = {"error": "invalid_request", "message": str(err)}
        return web.json_response(body, status=400)

    def truncate(self, response: web.StreamResponse) -> web.Response:
        body = response.body if isinstance(response, web.Response) else None
        full = body if isinstance(body, bytes) and len(body) > 2 else self.partial_body
        return web.Response(body=full[: len(full) // 2], content_type="application/json")

    async def respond(self, request: web.Request, handler: Handler) -> web.StreamResponse | None:
        """The answer, or None when the connection was dropped."""
        if self.down:
            return self.down_response()
        fault = self._take_fault(request)
        if fault is not None and fault.kind in ("latency", "before"):
            if fault.kind == "before":
                fault.params["fn"](request)
            else:
                await asyncio.sleep(float(fault.params.get("seconds", 1.0)))
            fault = None
        if fault is not None and fault.kind == "reset":
            await self._reset(request, before_headers=bool(fault.params.get("before_headers")))
            return None
        if fault is not None and fault.kind not in ("truncated", "rewrite"):
            answer = _empty(fault) if fault.kind == "empty" else self.fault_response(fault)
            answer.headers.update(fault.params.get("headers") or {})
            return answer
        response = await self.serve(request, handler)
        if fault is not None and fault.kind == "rewrite":
            return _rewritten(response, fault.params["fn"])
        return response if fault is None else self.truncate(response)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith("/_sim/"):
            try:
                return await handler(request)
            except (KeyError, TypeError, ValueError) as err:
                return self.control_error(err)
        arrived, caller = self.clock(), self.caller(request)
        self.counts[self.route_name(request)] += 1
        response = await self.respond(request, handler)
        status = 0 if response is None else response.status
        agent = request.headers.get("User-Agent", "")
        self.requests.append(SimRequest(arrived, request.method, request.path,
                                        request.query_string, status, caller, agent))  # fmt: skip
        return web.Response() if response is None else response  # a closed transport drops it

    def _take_fault(self, request: web.Request) -> Fault | None:
        fault = next((f for f in self.faults if f.matches(request)), None)
        if fault is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.faults.remove(fault)
        return fault

    async def _reset(self, request: web.Request, *, before_headers: bool) -> None:
        """Drop the connection; by default mid-body, because aiohttp clients silently retry
        an idempotent request once when the connection drops before the response head."""
        if not before_headers:
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            response.content_length = 64
            await response.prepare(request)
            await response.write(self.partial_body)
        if request.transport is not None:
            request.transport.close()

    # The /_sim/ control endpoints every simulator has: no auth, not logged.

    async def _ctl_fault(self, request: web.Request) -> web.Response:
        body = await json_object(request)
        self.inject(str(body.pop("kind")), **body)
        return web.json_response({"queued": len(self.faults)}, status=201)

    async def _ctl_down(self, request: web.Request) -> web.Response:
        self.set_down(bool((await json_object(request))["down"]))
        return web.json_response({"down": self.down})

    async def _ctl_max_window(self, request: web.Request) -> web.Response:
        window = float(request.query.get("window", self.window_seconds))
        most = self.max_requests_in_window(window, request.query.get(self.window_filter))
        return web.json_response({"max": most, "requests": len(self.requests)})

    async def _ctl_counts(self, request: web.Request) -> web.Response:
        return web.json_response(dict(self.counts))


def _empty(fault: Fault) -> web.StreamResponse:
    status = int(fault.params.get("status", 200))
    if status == 204:
        return web.Response(status=204)
    return web.Response(status=status, body=b"", content_type="application/json")


def _rewritten(response: web.StreamResponse, fn: Callable[[Any], Any]) -> web.StreamResponse:
    """``response`` with its JSON body passed through ``fn`` (unchanged if it is not JSON)."""
    body = response.body if isinstance(response, web.Response) else None
    try:
        data = json.loads(body) if isinstance(body, bytes) else None
    except ValueError:
        return response
    if data is None:
        return response
    headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
    return web.Response(status=response.status, headers=headers, text=json.dumps(fn(data)))


def simulator_parser(description: str, port: int) -> argparse.ArgumentParser:
    """The command line every ``python -m bot.sim.…`` shares: ``--host``, ``--port``,
    ``--seed``; the caller adds its own options."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=port)
    parser.add_argument("--seed", type=int, default=None, help="random seed for the content")
    return parser


async def serve_until_stopped(
    sim: SimServer, host: str, port: int, banner: Callable[[], Sequence[str]]
) -> None:
    """Serve ``sim`` until SIGINT or SIGTERM, printing ``banner()`` once it listens."""
    stop = asyncio.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    await sim.start(host, port)
    try:
        for line in banner():
            print(line, flush=True)
        await stop.wait()
    finally:
        await sim.stop()
