"""Two fixed costs of every API request, each measured beside what it replaced: CPU per
call, in this process, no server.

1. Parsing an order (``OrderPlaceSerializer(data=...).is_valid()``, a valid limit order):
   DRF's own, which builds (deep-copies) the serializer's fields for every instance,
   against ``ParseOnce`` (``dex.api.rendering``), fields built once per class.
2. A request's trip to its thread and back (an ASGI app whose request makes two
   thread-sensitive ``sync_to_async`` calls, as Django's handler makes at least two):
   Django's own ``ThreadSensitiveContext()`` per request, which starts a thread for the
   request and one more to shut it down, against ``RequestThreads``
   (``dex.request_threads``), one-thread executors kept for later requests; one request
   at a time and eight at once.

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")
    import django

    django.setup()
    for round_ in range(1, args.rounds + 1):
        print(f"round {round_} ({args.calls:,} calls each; CPU microseconds per call)")
        for name, cost in (parse_costs(args.calls) | thread_costs(args.calls)).items():
            print(f"  {name:<44} {cost:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
