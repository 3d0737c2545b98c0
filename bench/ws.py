"""Many WebSocket subscribers to one market while the simulator trades: connections held,
messages per second delivered, and the latency from the matcher's publish (and from its
batch, for trades) to receipt, at steps of subscribers.

    python bench/ws.py                                   # 1,000, 2,000, 5,000, 10,000
    python bench/ws.py --steps 1000 --seconds 10         # quick look
    python bench/ws.py --web-workers 1 --client-procs 3 --trades
    python bench/ws.py --profile                         # cProfile one web process

It needs what the platform needs: ``DATABASE_URL``, ``REDIS_URL`` and
``DJANGO_SETTINGS_MODULE`` (default ``dex.settings.local``). Without servers of your own:

    .venv/bin/python -m dex.devstack exec -- .venv/bin/python bench/ws.py

The configured database is never written to: the bench creates ``<name>_bench_ws`` beside
it (replacing a stale one), migrates it, seeds the demo markets and traders
(``demo_seed``) and drops it at the end. Redis: database ``--redis-db`` of the configured
server (default 14, never the configured one), flushed before and after; the bench
refuses one that holds keys that are not the platform's (``dex:*``).

The stack, as subprocesses against those databases: ``uvicorn dex.asgi:application
--workers N --loop uvloop --http httptools --ws websockets-sansio`` (a DB pool as the
Procfile runs it), ``manage.py run_matcher`` (every market: ``/healthz`` wants them all)
and the load: the demo simulator (``exchange.simulator``) on ETH-USDC only, in
``--sim-procs`` processes sharing ``--sim-rate`` steps a second: the market maker quoting
and the takers crossing, through ``order_place`` (validation, holds, the order and its
command, the matcher's wake-up), each command applied by the matcher in a batch and each
batch that moves a level published as one ``book.delta``. Its orders are not signed:
``simulate_market`` signs and verifies each one (EIP-712), ~0.6 ms of CPU a step here
(signing 0.31 ms, the digest again 0.18 ms, recovering the signer 0.08 ms), which the
machine's web processes would go without. Not every step changes the book (a fresh,
full set of quotes is left alone), so the rate that counts is the published deltas a
second, printed for every step. The load runs from before the first connection to the end.

The clients: ``--client-procs`` processes (asyncio on uvloop, ``bench/wsclient.py``:
the ``websockets`` package's Sans-I/O protocol handling each message as its bytes
arrive; each process raises its open-files limit), between them holding the step's number of
connections to ``/ws/stream/``, each subscribed to ``book.ETH-USDC`` (and
``trades.ETH-USDC`` with ``--trades``) and sending a ``ping`` every 20 s as a client
must (``WS_IDLE_TIMEOUT``). Steps (``--steps``) add connections to those already open;
a step is measured once every connection of it has its snapshot and ``--settle``
seconds have passed, for ``--seconds``.

Latency. A ``book.delta`` carries no server time, and the matcher's publishing code is
not changed for the bench, so the reference is a *tap*: this process subscribes to the
market's public pub/sub channel itself (``public_channel("ETH-USDC")``, where the
matcher publishes right after its commit and the Redis book write, and where each web
process's hub listens) and notes when each delta reaches it; it does nothing else, on a
process of its own, so that is the publish time plus one Redis hop. A subscriber's
latency is its receipt time minus the tap's for the same delta (``first_sequence``,
``sequence``): the time through the web servers' hub, the consumer and the socket, and
the client's own event loop. A busy web process sends several batches' deltas as one
(``exchange.streams_hub``): each tapped delta the one received covers counts, from when
the tap saw it, and "delivered" counts the tapped deltas received, alone or merged.
With ``--trades``, a second figure: receipt of a ``trades`` message minus its trades'
``time`` (``executed_at``, taken when the matcher's batch *starts*): an upper bound
on commit-to-receipt that includes the batch's SQL and commit; the tap's own lag on
that clock is printed beside it. Every clock is this machine's ``time.time()``.

Each step prints: connections held at its end and those that failed to open or closed
(with the close codes), book deltas per second published (the tap) and messages per
second delivered (every subscriber, every type), deliveries as a share of
held x published, gaps the clients saw and snapshots the server resent
(``"resync": true``), latency p50/p90/p99/max, and the CPU each part used
(web processes, matcher, simulator, PostgreSQL, Redis, the bench's clients and tap,
the rest of the machine). Steps stop at the first that breaks down: deliveries under
90%, p99 over 1 s, or under 95% of the connections held.

``--profile``: one web process runs under cProfile (its event-loop thread: every
WebSocket message is handled there) during the first step's measurement, and the
bench prints the top functions by own and cumulative time.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import bisect
import contextlib
import logging
import multiprocessing
import os
import pstats
import resource
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import wsclient
from bench.api import (
    _machine_busy,
    _named,
    _postmasters,
    _tree_cpu,
    bench_database_drop,
    free_port,
    percentile,
    processes_stop,
    redis_claim,
    redis_db_of,
    wait_until_ok,
    with_database,
    with_redis_db,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_SUFFIX = "_bench_ws"
MARKET = "ETH-USDC"
TARGET_SUBSCRIBERS = 1_000
TARGET_UPDATES_PER_SECOND = 100
TARGET_P99_MS = 50.0
PING_EVERY = 20.0  # seconds; the server closes a connection silent for WS_IDLE_TIMEOUT (60)
# Handshakes in flight, and closes at the end, per client process: each takes a Redis
# connection of the web process's channel-layer pool (redis-py's default cap of 100,
# past which it raises MaxConnectionsError rather than waiting).
CONNECT_CONCURRENCY = 32
SUBSCRIBE = f'{{"type":"subscribe","channels":["book.{MARKET}"]}}'
SUBSCRIBE_TRADES = f'{{"type":"subscribe","channels":["book.{MARKET}","trades.{MARKET}"]}}'
PING = '{"type":"ping"}'
DELTA = '{"type":"book.delta"'
TRADES = '{"type":"trades"'
SNAPSHOT = '{"type":"book.snapshot"'


def raise_open_files() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        new = hard if hard != resource.RLIM_INFINITY else 1_000_000
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        return new
    return soft


def _int_after(text: str, key: str) -> int:
    start = text.index(key) + len(key)
    end = start
    while text[end].isdigit():
        end += 1
    return int(text[start:end])


# --- the clients (one process each) --------------------------------------------------------


@dataclass
class Window:
    """What one client process saw during a measurement window."""

    messages: Counter = field(default_factory=Counter)  # by type
    delta_first: array.array = field(default_factory=lambda: array.array("q"))
    delta_seq: array.array = field(default_factory=lambda: array.array("q"))
    delta_at: array.array = field(default_factory=lambda: array.array("d"))
    trade_lag: array.array = field(default_factory=lambda: array.array("d"))  # seconds
    gaps: int = 0
    resyncs: int = 0
    closed: Counter = field(default_factory=Counter)  # close codes, during the window
    cpu: float = 0.0
    held: int = 0


class Subscriber:
    __slots__ = ("last", "ready", "ws")

    def __init__(self) -> None:
        self.ws: wsclient.Connection | None = None
        self.last: int | None = None  # last sequence
        self.ready = asyncio.get_running_loop().create_future()  # the first snapshot came


class ClientProcess:
    def __init__(self, conn, url: str, *, trades: bool, deflate: bool) -> None:
        self.conn = conn
        self.url = url
        self.subscribe = SUBSCRIBE_TRADES if trades else SUBSCRIBE
        self.deflate = deflate
        self.subs: list[Subscriber] = []
        self.failed: Counter = Counter()  # connections that never got their snapshot
        self.closed: Counter = Counter()  # close codes of connections lost after that
        self.window: Window | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        pinger = asyncio.create_task(self._ping())
        while True:
            command, *args = await loop.run_in_executor(None, self.conn.recv)
            if command == "grow":
                await self._grow(*args)
                held = sum(1 for s in self.subs if s.ws.close_code is None)
                self.conn.send((held, dict(self.failed), dict(self.closed)))
            elif command == "measure":
                self.conn.send(await self._measure(*args))
            elif command == "stop":
                pinger.cancel()
                await asyncio.gather(*(s.ws.close() for s in self.subs), return_exceptions=True)
                self.conn.send("stopped")
                return

    async def _grow(self, count: int) -> None:
        gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

        async def one() -> None:
            async with gate:
                await self._open()

        await asyncio.gather(*(one() for _ in range(count)))

    async def _open(self) -> None:
        sub = Subscriber()
        try:
            sub.ws = await wsclient.connect(
                self.url,
                lambda message: self._received(sub, message),
                deflate=self.deflate,
                open_timeout=120,
            )
            sub.ws.send(self.subscribe)
            await asyncio.wait_for(asyncio.shield(sub.ready), 120)
        except Exception as exc:
            code = getattr(getattr(exc, "response", None), "status_code", None)
            if sub.ws is not None:
                code = sub.ws.close_code
                sub.ws.transport.close()
            self.failed[code or type(exc).__name__] += 1
            return
        self.subs.append(sub)
        sub.ws.closed.add_done_callback(lambda _: self._lost(sub))

    def _received(self, sub: Subscriber, message: str) -> None:
        now = time.time()
        w = self.window
        if message.startswith(DELTA):
            first = _int_after(message, '"first_sequence":')
            sequence = _int_after(message, '"sequence":')
            if sub.last is not None and first != sub.last + 1 and w is not None:
                w.gaps += 1
            sub.last = sequence
            if w is not None:
                w.messages["book.delta"] += 1
                w.delta_first.append(first)
                w.delta_seq.append(sequence)
                w.delta_at.append(now)
        elif message.startswith(TRADES):
            if w is not None:
                w.messages["trades"] += 1
                start = message.index('"time":"') + 8
                executed = datetime.fromisoformat(message[start : message.index('"', start)])
                w.trade_lag.append(now - executed.timestamp())
        elif message.startswith(SNAPSHOT):
            sub.last = _int_after(message, '"sequence":')
            if not sub.ready.done():
                sub.ready.set_result(None)
            elif w is not None:
                w.messages["book.snapshot"] += 1
                w.resyncs += '"resync":true' in message
        elif w is not None:
            w.messages[message[9 : message.index('"', 9)]] += 1

    def _lost(self, sub: Subscriber) -> None:
        code = sub.ws.close_code
        self.closed[code] += 1
        if self.window is not None:
            self.window.closed[code] += 1

    async def _ping(self) -> None:
        """Every connection sends a ping each ``PING_EVERY`` seconds, spread over them."""
        tick = 0
        while True:
            await asyncio.sleep(1)
            tick += 1
            slot = tick % int(PING_EVERY)
            for n, sub in enumerate(self.subs):
                if n % int(PING_EVERY) == slot and sub.ws.close_code is None:
                    sub.ws.send(PING)

    async def _measure(self, start: float, end: float) -> Window:
        await asyncio.sleep(max(0.0, start - time.time()))
        window = Window()
        cpu = time.process_time()
        self.window = window
        await asyncio.sleep(max(0.0, end - time.time()))
        self.window = None
        window.cpu = time.process_time() - cpu
        window.held = sum(1 for s in self.subs if s.ws.close_code is None)
        return window


def client_main(conn, url: str, trades: bool, deflate: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    raise_open_files()
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    asyncio.run(ClientProcess(conn, url, trades=trades, deflate=deflate).run())


@dataclass
class Clients:
    procs: list[multiprocessing.Process]
    conns: list

    def ask(self, messages: Sequence[tuple]) -> list:
        for conn, message in zip(self.conns, messages, strict=True):
            conn.send(message)
        return [conn.recv() for conn in self.conns]


def clients_start(count: int, url: str, *, trades: bool, deflate: bool) -> Clients:
    ctx = multiprocessing.get_context("fork")  # before this process starts any thread
    procs, conns = [], []
    for _ in range(count):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=client_main, args=(child, url, trades, deflate), daemon=True)
        proc.start()
        procs.append(proc)
        conns.append(parent)
    return Clients(procs, conns)


def clients_stop(clients: Clients) -> None:
    with contextlib.suppress(Exception):
        clients.ask([("stop",)] * len(clients.conns))
    for proc in clients.procs:
        proc.join(10)
        if proc.is_alive():
            proc.kill()


# --- the tap: this process on the market's public pub/sub channel -------------------------


class Tap:
    """When each delta (and each trades message) reached a subscriber of the market's
    public channel that does nothing else."""

    def __init__(self) -> None:
        self.deltas: dict[tuple[int, int], float] = {}
        self.trade_lag: list[tuple[float, float]] = []  # (received, received - executed_at)
        self.task: asyncio.Task | None = None

    async def start(self) -> None:
        import json

        import redis.asyncio as aioredis
        from django.conf import settings

        from exchange.matcher.publish import public_channel

        client = aioredis.Redis.from_url(settings.REDIS_URL)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(public_channel(MARKET))
        self.task = asyncio.create_task(self._run(pubsub, json.loads))

    async def _run(self, pubsub, loads) -> None:
        async for raw in pubsub.listen():
            now = time.time()
            if raw["type"] != "message":
                continue
            message = loads(raw["data"])
            if message["type"] == "book.delta":
                self.deltas[(message["first_sequence"], message["sequence"])] = now
            elif message["type"] == "trades" and message["trades"]:
                executed = datetime.fromisoformat(message["trades"][0]["time"]).timestamp()
                self.trade_lag.append((now, now - executed))

    def published(self, start: float, end: float) -> int:
        return sum(1 for t in list(self.deltas.values()) if start <= t < end)


# --- the stack -------------------------------------------------------------------------------


@dataclass
class Stack:
    web: subprocess.Popen
    matcher: subprocess.Popen
    simulators: list[subprocess.Popen]
    port: int
    log: Path
    profile_out: Path | None = None

    def processes(self) -> list[subprocess.Popen]:
        return [self.web, self.matcher, *self.simulators]


def stack_start(env: dict, web_env: dict, args, log: Path, profile_out: Path | None) -> Stack:
    port = free_port()
    out = log.open("ab")
    uvicorn_args = [
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--ws",
        args.ws,
        "--backlog",
        "4096",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    app = "dex.asgi:application"
    if profile_out is None:
        cmd = [sys.executable, "-m", "uvicorn", app, *uvicorn_args]
        cmd += ["--workers", str(args.web_workers)]
    else:
        cmd = [sys.executable, __file__, "--serve-profiled", str(profile_out), *uvicorn_args]
    web = subprocess.Popen(cmd, env=web_env, cwd=BASE_DIR, stdout=out, stderr=out)
    matcher = subprocess.Popen(
        [sys.executable, "manage.py", "run_matcher"],  # every market: /healthz wants them all
        env=env,
        cwd=BASE_DIR,
        stdout=out,
        stderr=out,
    )
    return Stack(web, matcher, [], port, log, profile_out)


def simulators_start(stack: Stack, env: dict, rate: float, procs: int, seed: int) -> None:
    out = stack.log.open("ab")
    for n in range(procs):
        stack.simulators.append(
            subprocess.Popen(
                [sys.executable, __file__, "--simulate", f"{rate / procs:g}", str(seed + n)],
                env=env,
                cwd=BASE_DIR,
                stdout=out,
                stderr=out,
            )
        )


def simulate(rate: float, seed: int) -> None:
    """The demo simulator on ``MARKET`` at ``rate`` steps a second, its orders placed
    with ``order_place`` rather than signed and verified (EIP-712 signing and signer
    recovery, ~0.6 ms of CPU a step, are the load's cost, not the streams'). The rest is
    the services' path: validation, holds, the order, its command and the matcher's
    wake-up."""
    import django

    django.setup()
    from exchange.models import Market
    from exchange.services.orders import OrderRejected, OrderRequest, order_place
    from exchange.simulator import Simulator, demo_traders

    class UnsignedSimulator(Simulator):
        def _place(self, trader, market, **fields):
            self._count += 1
            # A placeholder signature, and a random hash (unique, as a real one is).
            request = OrderRequest(
                client_order_id=f"ws-{self.run_id}-{self._count}",
                nonce=self._nonce(),
                order_hash="0x" + secrets.token_hex(32),
                signature="0x" + "00" * 65,
                **fields,
            )
            try:
                order = order_place(account=trader.account, market=market, request=request)
            except OrderRejected as exc:
                self.stats.rejected[exc.code] += 1
                return None
            self.stats.placed += 1
            return order

    traders = demo_traders()
    market = Market.objects.select_related("base", "quote").get(symbol=MARKET)
    simulator = UnsignedSimulator(markets=[market], maker=traders[0], takers=traders[1:], seed=seed)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    stats = simulator.run(rate=rate, should_stop=lambda: bool(stop))
    print(f"simulator: {stats.summary()}", flush=True)


def stack_wait_healthy(stack: Stack, timeout: float = 90) -> None:
    url = f"http://127.0.0.1:{stack.port}/healthz"
    wait_until_ok(url, stack.processes(), stack.log, timeout)


def stack_stop(stack: Stack) -> None:
    # The simulators first: they place orders through the web tier until they stop.
    processes_stop(stack.simulators, timeout=20)
    processes_stop([stack.web, stack.matcher], timeout=60 if stack.profile_out else 20)


class CpuMeter:
    """CPU seconds per part of the stack between ``start`` and ``stop``."""

    def __init__(self, stack: Stack, clients: Clients) -> None:
        import psutil

        self.parts = {
            "web": [psutil.Process(stack.web.pid)],
            "matcher": [psutil.Process(stack.matcher.pid)],
            "simulator": [psutil.Process(p.pid) for p in stack.simulators],
            "postgresql": _postmasters(),
            "redis": _named("redis-server"),
            "bench clients": [psutil.Process(p.pid) for p in clients.procs],
        }
        self.me = psutil.Process()

    def _sample(self) -> dict[str, float]:
        import psutil

        me = self.me.cpu_times()
        return {name: sum(_tree_cpu(p) for p in procs) for name, procs in self.parts.items()} | {
            "bench tap (this process)": me.user + me.system,
            "machine": _machine_busy(psutil.cpu_times()),
        }

    def start(self) -> None:
        self.before = self._sample()
        self.t0 = time.perf_counter()

    def stop(self) -> None:
        after = self._sample()
        self.seconds = time.perf_counter() - self.t0
        self.used = {k: after[k] - self.before[k] for k in after}

    def cores(self, part: str) -> float:
        return self.used[part] / self.seconds

    def lines(self) -> list[str]:
        machine = self.used["machine"]
        rows = [(k, v) for k, v in self.used.items() if k != "machine"]
        known = sum(v for _, v in rows)
        rows.append(("other (rest of the machine)", max(0.0, machine - known)))
        cores = os.cpu_count() or 1
        out = [f"  CPU over {self.seconds:.1f}s ({cores} cores):"]
        for name, used in rows:
            out.append(
                f"    {name:<28} {used / self.seconds:5.2f} cores"
                f"  {100 * used / machine if machine else 0:5.1f}% of busy"
            )
        out.append(f"    {'machine busy':<28} {machine / self.seconds:5.2f} cores")
        return out


# --- a step ----------------------------------------------------------------------------------


@dataclass
class StepResult:
    target: int
    held: int
    failed: Counter
    closed: Counter
    seconds: float
    published: int
    delivered: Counter
    deltas: int  # tapped deltas the clients received (alone or merged)
    latencies_ms: list[float]
    unmatched: int
    trade_lags_ms: list[float]
    tap_trade_lags_ms: list[float]
    gaps: int
    resyncs: int
    client_cpu: float
    meter: CpuMeter

    @property
    def delivery(self) -> float:
        expected = self.held * self.published
        return self.deltas / expected if expected else 0.0

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 0.99)


def subscribers_add(clients: Clients, add: int) -> tuple[int, Counter, Counter]:
    """Open ``add`` more subscriptions, spread over the client processes; return the
    connections held, and those that failed to open and those closed so far (by code)."""
    procs = len(clients.conns)
    shares = [add // procs + (1 if i < add % procs else 0) for i in range(procs)]
    grown = clients.ask([("grow", n) for n in shares])
    held = sum(g[0] for g in grown)
    failed = sum((Counter(g[1]) for g in grown), Counter())
    closed = sum((Counter(g[2]) for g in grown), Counter())
    return held, failed, closed


def delta_latencies(windows: Sequence[Window], tap: Tap) -> tuple[list[float], int]:
    """For each delta the tap saw that a client received in its window: the receipt time
    minus the tap's, in ms; and how many received deltas cover none the tap saw.

    A busy web process may send several batches' deltas as one (``first_sequence`` of
    the first … ``sequence`` of the last): each tapped delta in that range counts, with
    the time that one arrived. An expiry-only delta (``sequence`` = ``first_sequence``
    - 1) counts where it matches exactly."""
    keys = sorted(tap.deltas)
    firsts = [first for first, _ in keys]
    latencies, unmatched = [], 0
    for w in windows:
        for first, seq, at in zip(w.delta_first, w.delta_seq, w.delta_at, strict=True):
            tapped = tap.deltas.get((first, seq))
            if tapped is not None:
                latencies.append((at - tapped) * 1000)
                continue
            covered = 0
            i = bisect.bisect_left(firsts, first)
            while i < len(keys) and keys[i][0] <= seq and keys[i][1] <= seq:
                latencies.append((at - tap.deltas[keys[i]]) * 1000)
                covered += 1
                i += 1
            unmatched += covered == 0
    return latencies, unmatched


def run_step(
    target: int, clients: Clients, tap: Tap, stack: Stack, args, held_before: int, profile: bool
) -> StepResult:
    procs = len(clients.conns)
    add = max(0, target - held_before)
    t0 = time.perf_counter()
    held, failed, closed = subscribers_add(clients, add)
    print(
        f"  {held:,} connections held ({add:,} opened in {time.perf_counter() - t0:.1f}s;"
        f" failed to open, total: {dict(failed) or 0}; closed, total: {dict(closed) or 0})",
        flush=True,
    )
    time.sleep(args.settle)
    start = time.time() + 0.5
    end = start + args.seconds
    meter = CpuMeter(stack, clients)
    time.sleep(max(0.0, start - time.time()))
    meter.start()
    if profile:
        stack.web.send_signal(signal.SIGUSR1)
    windows = clients.ask([("measure", start, end)] * procs)
    meter.stop()
    if profile:
        stack.web.send_signal(signal.SIGUSR2)
    time.sleep(0.5)  # deltas the tap gets late still count for the ones received in time

    delivered: Counter = sum((w.messages for w in windows), Counter())
    latencies, unmatched = delta_latencies(windows, tap)
    return StepResult(
        target=target,
        held=sum(w.held for w in windows),
        failed=failed,
        closed=sum((w.closed for w in windows), Counter()),
        seconds=end - start,
        published=tap.published(start, end),
        delivered=delivered,
        deltas=len(latencies),
        latencies_ms=latencies,
        unmatched=unmatched,
        trade_lags_ms=[lag * 1000 for w in windows for lag in w.trade_lag],
        tap_trade_lags_ms=[lag * 1000 for at, lag in list(tap.trade_lag) if start <= at < end],
        gaps=sum(w.gaps for w in windows),
        resyncs=sum(w.resyncs for w in windows),
        client_cpu=sum(w.cpu for w in windows),
        meter=meter,
    )


def _quantiles(values: Sequence[float]) -> str:
    cells = [percentile(values, q) for q in (0.5, 0.9, 0.99)] + [max(values, default=0.0)]
    return " / ".join(f"{v:.1f}" for v in cells)


def report_step(r: StepResult) -> None:
    total = sum(r.delivered.values())
    print(f"step {r.target:,} subscribers: measured {r.seconds:.0f}s")
    print(
        f"  held {r.held:,}; closed during the window: {dict(r.closed) or 0};"
        f" failed to open so far: {dict(r.failed) or 0}"
    )
    print(
        f"  book deltas published {r.published / r.seconds:,.1f}/s;"
        f" delivered {total / r.seconds:,.0f} messages/s"
        f" ({', '.join(f'{k} {v / r.seconds:,.0f}/s' for k, v in r.delivered.most_common())});"
        f" deltas delivered {100 * r.delivery:.1f}% of held x published"
        f" ({r.deltas:,} in {r.delivered['book.delta']:,} book.delta messages)"
    )
    print(f"  gaps seen by clients {r.gaps:,}; snapshots resent by the server {r.resyncs:,}")
    unmatched = f", {r.unmatched:,} not seen by the tap" if r.unmatched else ""
    print(
        f"  latency tap -> client p50/p90/p99/max (ms): {_quantiles(r.latencies_ms)}"
        f"  ({len(r.latencies_ms):,} deltas{unmatched})"
    )
    if r.trade_lags_ms:
        print(
            f"  trades: batch start (executed_at) -> client p50/p90/p99/max (ms):"
            f" {_quantiles(r.trade_lags_ms)}; -> tap: {_quantiles(r.tap_trade_lags_ms)}"
        )
    print(f"  client CPU {r.client_cpu / r.seconds:.2f} cores")
    print("\n".join(r.meter.lines()), flush=True)


def table(results: Sequence[StepResult], header: str) -> None:
    print(f"\n{header}")
    print(
        f"  {'subs':>6} {'held':>6} {'closed':>7} {'deltas/s':>8} {'msgs/s':>8} {'deliv%':>6}"
        f" {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'web':>5} {'clients':>7} {'busy':>5}"
    )
    for r in results:
        closed = sum(r.closed.values()) + sum(r.failed.values())
        print(
            f"  {r.target:>6,} {r.held:>6,} {closed:>7,} {r.published / r.seconds:>8.1f}"
            f" {sum(r.delivered.values()) / r.seconds:>8,.0f} {100 * r.delivery:>6.1f}"
            + "".join(f" {percentile(r.latencies_ms, q):>7.1f}" for q in (0.5, 0.9, 0.99))
            + f" {max(r.latencies_ms, default=0.0):>7.1f}"
            f" {r.meter.cores('web'):>5.2f} {r.meter.cores('bench clients'):>7.2f}"
            f" {r.meter.used['machine'] / r.meter.seconds:>5.2f}"
        )
    print(
        "  (latency in ms from the tap to the client; web, clients, busy: cores used by the"
        " web processes, the bench's clients and the whole machine; closed: connections"
        " closed or failed to open so far)",
        flush=True,
    )


def broken(r: StepResult) -> str | None:
    if r.held < 0.95 * r.target:
        return f"{r.held:,} of {r.target:,} connections held"
    if r.delivery < 0.9:
        return f"{100 * r.delivery:.0f}% of deltas delivered"
    if r.p99 > 1000:
        return f"p99 {r.p99:,.0f} ms"
    return None


# --- the profiled web server -----------------------------------------------------------------


def serve_profiled(out: Path, uvicorn_args: list[str]) -> None:
    """uvicorn in this process, its event-loop thread under cProfile from SIGUSR1 to
    SIGUSR2 (the WebSocket work all runs on that thread)."""
    import cProfile

    import dex.asgi  # noqa: F401  (imported before profiling: startup is not the subject)

    profiler = cProfile.Profile()
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())

    def dump(*_) -> None:
        profiler.disable()
        profiler.dump_stats(str(out))

    signal.signal(signal.SIGUSR2, dump)
    from uvicorn.main import main as uvicorn_main

    sys.argv = ["uvicorn", "dex.asgi:application", *uvicorn_args]
    uvicorn_main()


def report_profile(out: Path, top: int) -> None:
    if not out.exists():
        print("(the profiled server left no profile)")
        return
    stats = pstats.Stats(str(out))
    print(f"\nweb process under cProfile, its event loop during step 1, {stats.total_tt:.1f}s:")
    for sort, title in (("tottime", "own time"), ("cumulative", "cumulative")):
        print(f"\ntop {top} by {title}:")
        stats.sort_stats(sort).print_stats(top)


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The bench's own subprocesses.
    if argv[:1] == ["--simulate"]:
        simulate(float(argv[1]), int(argv[2]))
        return 0
    if argv[:1] == ["--serve-profiled"]:
        serve_profiled(Path(argv[1]), argv[2:])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--steps",
        default="1000,2000,5000,10000",
        help="total subscribers at each step, comma-separated",
    )
    parser.add_argument("--seconds", type=float, default=20, help="measurement per step")
    parser.add_argument("--settle", type=float, default=3, help="seconds after connecting")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn --workers")
    parser.add_argument("--client-procs", type=int, default=2, help="client processes")
    parser.add_argument(
        "--sim-rate", type=float, default=130, help="simulator orders and cancels per second"
    )
    parser.add_argument("--sim-procs", type=int, default=2, help="simulator processes")
    parser.add_argument("--trades", action="store_true", help="subscribe to trades as well")
    parser.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate (off by default)"
    )
    parser.add_argument(
        "--ws",
        default="websockets-sansio",
        choices=("websockets", "websockets-sansio", "wsproto"),
        help="uvicorn --ws",
    )
    parser.add_argument("--redis-db", type=int, default=14)
    parser.add_argument("--db-pool", type=int, default=16, help="DB_POOL_MAX_SIZE per web process")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more environment for the server processes (repeatable)",
    )
    parser.add_argument("--keep-going", action="store_true", help="run every step")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile one web process")
    parser.add_argument("--top", type=int, default=25, help="profile rows to print")
    args = parser.parse_args(argv)

    steps = [int(s) for s in args.steps.split(",")]
    limit = raise_open_files()
    redis_url = with_redis_db(os.environ["REDIS_URL"], args.redis_db)
    if args.redis_db == redis_db_of(os.environ["REDIS_URL"]):
        raise SystemExit(f"--redis-db {args.redis_db} is the configured Redis database")
    redis_claim(redis_url)
    os.environ["REDIS_URL"] = redis_url  # this process too: the configured one is not touched
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")
    import django
    from django.conf import settings
    from django.db import connection

    django.setup()
    settings.DEBUG = False
    logging.getLogger("httpx").setLevel(logging.WARNING)

    configured = connection.settings_dict["NAME"]
    database = f"{configured}{DATABASE_SUFFIX}"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = database
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    stack = clients = None
    workdir = Path(tempfile.mkdtemp(prefix="dex-bench-ws-"))
    try:
        from exchange.services.demo import demo_seed

        demo_seed(staff_password=secrets.token_urlsafe(16))
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        connection.close()
        print(
            f"PostgreSQL {version}, database {database} (created, demo_seed), Redis {redis_url};"
            f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f};"
            f" open-files limit {limit:,}",
            flush=True,
        )
        env = dict(
            os.environ,
            DATABASE_URL=with_database(os.environ["DATABASE_URL"], database),
            REDIS_URL=redis_url,
            DEBUG="0",
            PYTHONUNBUFFERED="1",
        )
        env.update(item.split("=", 1) for item in args.server_env)
        web_env = dict(env, ASGI_THREADS="32", DB_POOL_MAX_SIZE=str(args.db_pool))
        log = workdir / "stack.log"
        profile_out = workdir / "web.prof" if args.profile else None
        if args.profile:
            args.web_workers = 1
        stack = stack_start(env, web_env, args, log, profile_out)
        stack_wait_healthy(stack)
        simulators_start(stack, env, args.sim_rate, args.sim_procs, args.seed)
        print(
            f"server: uvicorn dex.asgi:application --workers {args.web_workers} --loop uvloop"
            f" --ws {args.ws}{' under cProfile' if args.profile else ''}"
            f" (DB_POOL_MAX_SIZE="
            f"{args.db_pool}, ASGI_THREADS=32{''.join(', ' + e for e in args.server_env)});"
            f" run_matcher (every market); simulate_market --market {MARKET} --rate"
            f" {args.sim_rate:g} in {args.sim_procs} process(es); log {log}",
            flush=True,
        )
        url = f"ws://127.0.0.1:{stack.port}/ws/stream/"
        clients = clients_start(args.client_procs, url, trades=args.trades, deflate=args.deflate)
        print(
            f"clients: {args.client_procs} process(es), bench/wsclient.py on websockets"
            f" {_websockets_version()} (Sans-I/O),"
            f" permessage-deflate {'offered' if args.deflate else 'off'}, channels"
            f" book.{MARKET}{f' + trades.{MARKET}' if args.trades else ''}; steps"
            f" {', '.join(f'{s:,}' for s in steps)}, {args.seconds:g}s each\n",
            flush=True,
        )
        return asyncio.run(_steps(steps, clients, stack, args))
    finally:
        if clients is not None:
            clients_stop(clients)
        if stack is not None:
            stack_stop(stack)
            if args.profile:
                report_profile(profile_out, args.top)
        connection.close()
        bench_database_drop(configured)
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(redis_url).flushdb()


def _websockets_version() -> str:
    import websockets

    return websockets.__version__


async def _steps(steps: list[int], clients: Clients, stack: Stack, args) -> int:
    tap = Tap()
    await tap.start()
    await asyncio.sleep(3)  # the simulator fills the book
    results: list[StepResult] = []
    held = 0
    for n, target in enumerate(steps):
        print(f"step {target:,}: connecting ...", flush=True)
        profile = args.profile and n == 0
        result = await asyncio.to_thread(run_step, target, clients, tap, stack, args, held, profile)
        results.append(result)
        report_step(result)
        held = result.held
        table(results, "so far:")
        reason = broken(result)
        if reason and not args.keep_going:
            print(f"\nstopped after {target:,} subscribers: {reason}")
            break
    met = [
        r
        for r in results
        if r.held >= TARGET_SUBSCRIBERS
        and r.published / r.seconds >= 0.9 * TARGET_UPDATES_PER_SECOND
        and r.p99 < TARGET_P99_MS
    ]
    print(
        f"\ngoal ({TARGET_SUBSCRIBERS:,} subscribers, p99 under {TARGET_P99_MS:g} ms at"
        f" {TARGET_UPDATES_PER_SECOND} deltas/s): "
        + (f"met up to {max(r.target for r in met):,} subscribers" if met else "not met")
        + f" (load average {os.getloadavg()[0]:.2f} at the end)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
