"""The operator's HTTP endpoints: ``/healthz`` and ``/readyz`` for the kubelet, ``/metrics``
for Prometheus.

They are served by aiohttp on the operator's own event loop, not by threads of their own,
so they stop, and free their ports, when the operator stops.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def serve(address: str, port: int, routes: dict[str, Handler]) -> web.AppRunner:
    """Serve ``routes`` (GET) on ``address:port`` until the returned runner's cleanup."""
    app = web.Application()
    for path, handler in routes.items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, address, port).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


async def serve_health(
    address: str, port: int, ready: Callable[[], bool], missing: Callable[[], list[str] | None]
) -> web.AppRunner:
    """``/healthz`` (alive) and ``/readyz``: 200 once ``ready()``, else 503 naming what is
    missing."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        if ready():
            return web.Response(text="ready")
        lacking = missing()
        return web.Response(
            text="missing: " + ", ".join(lacking) if lacking else "starting", status=503
        )

    return await serve(address, port, {"/healthz": healthz, "/readyz": readyz})


async def serve_metrics(address: str, port: int, registry: CollectorRegistry) -> web.AppRunner:
    """``/metrics``: the registry in the format the scraper asks for (Prometheus text or
    OpenMetrics)."""

    async def metrics(request: web.Request) -> web.Response:
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(registry), headers={"Content-Type": content_type})

    return await serve(address, port, {"/metrics": metrics})
