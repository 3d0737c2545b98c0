"""Three fixed costs of every API request, each measured beside what it replaced: CPU
per call, in this process, no server.

1. Parsing an order (``OrderPlaceSerializer(data=...).is_valid()``, a valid limit order):
   DRF's own, which builds (deep-copies) the serializer's fields for every instance,
   against ``ParseOnce`` (``dex.api.rendering``), fields built once per class.
2. A request's trip to its thread and back (an ASGI app whose request makes two
   thread-sensitive ``sync_to_async`` calls, as Django's handler makes at least two):
   Django's own ``ThreadSensitiveContext()`` per request, which starts a thread for the
   request and one more to shut it down, against ``RequestThreads``
   (``dex.request_threads``), one-thread executors kept for later requests; one request
   at a time and eight at once.
3. A whole request, ``GET /api/v1/eip712/`` (a DRF view, every middleware, no database
   query), handed to the ASGI application as uvicorn hands it: Django's ASGI handler
   (its own thread per request, and its hops between the event loop and that thread for
   the signals, the middleware chain, the view and the response's close), the same
   handler on ``RequestThreads``' pooled threads, and what the web process serves,
   ``dex.asgi``'s ``WsgiBridge`` on them (one hop).

    DJANGO_SETTINGS_MODULE=dex.settings.test DATABASE_URL=postgres://... REDIS_URL=redis://... \\
        .venv/bin/python bench/request_path.py [--calls 4000] [--rounds 2]

Nothing is written to the database or Redis (the settings must still load).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ORDER = {
    "market": "ETH-USDC",
    "client_order_id": "bot-1",
    "side": "BUY",
    "type": "LIMIT",
    "price": "100.25",
    "quantity": "0.5",
    "nonce": "7",
    "signature": "0x" + "ab" * 65,
}


def parse_costs(calls: int) -> dict[str, float]:
    from rest_framework import serializers

    from exchange.api.serializers import OrderPlaceSerializer

    class DrfFields(OrderPlaceSerializer):
        def __init__(self, *args, **kwargs) -> None:
            serializers.Serializer.__init__(self, *args, **kwargs)  # not ParseOnce's

    costs = {}
    for name, cls in (("DRF, fields per instance", DrfFields), ("ParseOnce", OrderPlaceSerializer)):
        cls(data=ORDER).is_valid()  # the one-off build
        cpu = time.process_time()
        for _ in range(calls):
            serializer = cls(data=ORDER)
            if not serializer.is_valid():
                raise SystemExit(f"{name}: {serializer.errors}")
        costs[name] = (time.process_time() - cpu) / calls * 1e6
    return costs


def thread_costs(calls: int) -> dict[str, float]:
    from asgiref.sync import ThreadSensitiveContext, sync_to_async

    from dex.request_threads import RequestThreads

    def work() -> None:
        return None

    async def request(scope, receive, send) -> None:
        await sync_to_async(work)()
        await sync_to_async(work)()

    async def per_request_context(scope, receive, send) -> None:
        async with ThreadSensitiveContext():  # what Django's ASGIHandler opens
            await request(scope, receive, send)

    pooled = RequestThreads(per_request_context, keep=8)

    async def drive(app, concurrency: int) -> None:
        async def client() -> None:
            for _ in range(calls // concurrency):
                await app({}, None, None)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    costs = {}
    for concurrency in (1, 8):
        for name, app in (
            ("Django, a thread per request", per_request_context),
            ("RequestThreads", pooled),
        ):
            asyncio.run(drive(app, concurrency))  # warm
            cpu = time.process_time()
            asyncio.run(drive(app, concurrency))
            costs[f"{name}, {concurrency} at once"] = (time.process_time() - cpu) / calls * 1e6
    return costs


def handler_costs(calls: int) -> dict[str, float]:
    from django.core.asgi import get_asgi_application

    import dex.asgi
    from dex.request_threads import RequestThreads

    path = "/api/v1/eip712/"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost")],
        "client": ("127.0.0.1", 50000),
        "server": ("localhost", 80),
    }
    django_asgi = get_asgi_application()

    async def request(app) -> None:
        incoming = [{"type": "http.request", "body": b"", "more_body": False}]
        status = []

        async def receive() -> dict:
            if incoming:
                return incoming.pop()
            await asyncio.Event().wait()  # connected until the response is sent
            return {}

        async def send(message: dict) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        if status != [200]:
            raise SystemExit(f"{path}: {status}")

    async def drive(app, concurrency: int) -> None:
        async def client() -> None:
            for _ in range(calls // concurrency):
                await request(app)

        await asyncio.gather(*(client() for _ in range(concurrency)))

    costs = {}
    for concurrency in (1, 8):
        for name, app in (
            ("Django's ASGI handler", django_asgi),
            ("Django's ASGI handler, RequestThreads", RequestThreads(django_asgi, keep=8)),
            ("WsgiBridge, RequestThreads (dex.asgi)", dex.asgi.request_threads),
        ):
            asyncio.run(drive(app, concurrency))  # warm
            cpu = time.process_time()
            asyncio.run(drive(app, concurrency))
            costs[f"{name}, {concurrency} at once"] = (time.process_time() - cpu) / calls * 1e6
    return costs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")
    import django

    django.setup()
    for round_ in range(1, args.rounds + 1):
        print(
            f"round {round_} ({args.calls:,} calls each, {args.calls // 4:,} whole requests;"
            " CPU microseconds per call)"
        )
        costs = parse_costs(args.calls) | thread_costs(args.calls)
        costs |= handler_costs(args.calls // 4)
        for name, cost in costs.items():
            print(f"  {name:<52} {cost:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
