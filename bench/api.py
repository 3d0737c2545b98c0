"""Signed orders over HTTP, end to end: accepted orders per second and request-to-response
latency of ``POST /api/v1/orders/`` on a running stack (uvicorn + matcher + PostgreSQL +
Redis on this machine).

    python bench/api.py                           # 2 runs of each phase, ~3 minutes
    python bench/api.py --orders 5000 --seconds 5 --runs 1      # quick look
    python bench/api.py --web-workers 1 --client-procs 2
    python bench/api.py --profile                 # cProfile the web server in phase A

It needs what the platform needs: ``DATABASE_URL``, ``REDIS_URL`` and
``DJANGO_SETTINGS_MODULE`` (default ``dex.settings.local``). Without servers of your own:

    .venv/bin/python -m dex.devstack exec -- .venv/bin/python bench/api.py

The configured database is never written to: the bench creates ``<name>_bench_api``
beside it (replacing a stale one), migrates it, and drops it at the end. Redis: the
bench's processes use database ``--redis-db`` of the configured server (default 13, it
must not be the configured one), which the bench flushes before and after; it refuses
a database holding keys that are not the platform's (``dex:*``).

Untimed, in this process through the services: one market (ETH-USDC, tick 0.01, lot
0.001, opened), ``--traders`` accounts (KYC tier 1) funded by ``deposit_credit`` and
each given an API key (``api_key_create``, scope trade). Then every order of every run
is signed (EIP-712, as ``tests/api_support.py`` signs) in a process pool before
anything is timed: signing is the client's cost. The mix: 90% GTC limit orders around a
mid of 100, half priced through it by 1-30 bps (they trade when the other side rests)
and half resting 1-100 bps away; 10% market orders (sells by quantity, buys by quote
amount). Each order is a random trader's, with that trader's next nonce and a fresh
client order id.

The stack, started as subprocesses against the bench's database and Redis database:
``uvicorn dex.asgi:application --workers N --loop uvloop --http httptools
--no-access-log`` on a free port and ``manage.py run_matcher --market ETH-USDC``; the
bench waits for ``/healthz`` to answer 200 (database, Redis, a live matcher). The
API's rate limits are raised through their environment variables (the output says
so and prints the limits in force), so that the order path is what is measured.
The web processes run as the Procfile runs them: connections from a psycopg pool
(``DB_POOL_MAX_SIZE``, ``--db-pool``, default 16) and ``ASGI_THREADS=32``. With
``--db-pool 0`` they run without a pool and with ``DB_CONN_MAX_AGE=0``: each request
opens its own connection (a request thread made beyond the ones kept,
``dex.request_threads``, would otherwise leave its connection open when it ends).
The output counts the connections opened per request. ``--server-env NAME=VALUE``
passes more settings to the stack (``ORDER_REPLY_TIMEOUT``, another
``DJANGO_SETTINGS_MODULE`` ...) to try changes.

1. Throughput (phase A): ``--clients`` connections (HTTP/1.1 keep-alive,
   ``bench/http1.py`` on asyncio; spread over ``--client-procs`` processes) each send
   their next order as soon as the last one is answered, until ``--orders`` are sent. Accepted (201)
   orders per second, refusals by HTTP status and error code, latency p50/p99/max.
2. Latency (phase B): open loop at ``--rate`` orders per second for ``--seconds``:
   order i is due at start + i/rate and is sent then whatever came back before, and
   its latency runs from when it was due (so a stalled server is not hidden by the
   client waiting on it). p50/p90/p99/max, and how many answers came back already
   matched (status no longer PENDING) and how many still PENDING (the API answers
   PENDING when the matcher's reply takes longer than ``ORDER_REPLY_TIMEOUT``).

Phases run ``--runs`` times, alternating (A, B, A, B ...); each run has its own orders.
A few hundred untimed orders warm the server first (imports, connections, caches).
After each phase, CPU seconds used by the web processes, the matcher, PostgreSQL
(every process of the server, including backends that exited), Redis and the bench's
clients, against the machine's total: the clients share the machine's two cores with
the server, which the figures show.

``--profile``: the web server runs as one process under cProfile (the event-loop
thread, and one request thread in ``--profile-every``: each request's synchronous part
runs on a pooled thread, ``dex.request_threads``) for the warm-up and one phase A, and the
bench prints where a request's time goes and the top functions by cumulative time.
cProfile slows pure-Python code more than C (signature recovery, psycopg), so read the
shares as an upper bound for Python-heavy parts.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import itertools
import json
import logging
import multiprocessing
import os
import pstats
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.http1 import Client

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_SUFFIX = "_bench_api"
MARKET = "ETH-USDC"
MID = Decimal("100")
D = Decimal
TARGET_PER_SECOND = 1_000
TARGET_P99_MS = 10.0
WARMUP_ORDERS = 300

# The API's limits, raised for the server processes (dex/settings/base.py reads them).
RATE_LIMIT_ENV = {
    f"API_RATE_LIMIT_{name}": "1000000/1"
    for name in (
        "CREDENTIAL",
        "IP",
        "GLOBAL",
        "ORDERS_CREDENTIAL",
        "ORDERS_IP",
        "ORDERS_GLOBAL",
    )
}


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else 0.0


# --- the bench's database and Redis -----------------------------------------------------


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")
    os.environ.update(RATE_LIMIT_ENV)  # so that this process sees the servers' limits
    import django
    from django.conf import settings

    django.setup()
    settings.DEBUG = False  # the debug cursor would log every query the bench makes
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise


def bench_database_create(suffix: str = DATABASE_SUFFIX) -> tuple[str, str]:
    """Create, migrate and switch to the bench's own database, ``<configured><suffix>``;
    return the configured database's name (to switch back to) and the bench's."""
    from django.db import connection

    configured = connection.settings_dict["NAME"]
    name = f"{configured}{suffix}"
    connection.settings_dict.setdefault("TEST", {})["NAME"] = name
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    return configured, name


def bench_database_drop(configured: str) -> None:
    from django.db import connection

    connection.creation.destroy_test_db(configured, verbosity=0)


def with_database(url: str, name: str) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def with_redis_db(url: str, db: int) -> str:
    """``url`` naming Redis database ``db`` (in the path, or ``?db=`` for a socket)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        query = parse_qs(parts.query)
        query["db"] = [str(db)]
        return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    return urlunsplit(parts._replace(path=f"/{db}"))


def redis_db_of(url: str) -> int:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return int(parse_qs(parts.query).get("db", ["0"])[0])
    return int(parts.path.strip("/") or 0)


def redis_claim(url: str) -> None:
    """Flush the bench's Redis database, unless it holds something not the platform's."""
    import redis

    client = redis.Redis.from_url(url)
    keys = itertools.islice(client.scan_iter(count=1000), 1000)
    foreign = [k for k in keys if not k.startswith(b"dex:")]
    if foreign:
        raise SystemExit(f"Redis database of {url} holds keys that are not dex:* ({foreign[:3]})")
    client.flushdb()
    client.close()


# --- the workload ------------------------------------------------------------------------


@dataclass
class Trader:
    key: bytes
    address: str
    api_key: str
    nonces: itertools.count = field(default_factory=lambda: itertools.count(1))


def seed(*, traders: int, seed_: int) -> list[Trader]:
    from eth_account import Account as EthAccount

    from exchange.models import Account, ApiKeyScope
    from exchange.services.markets import asset_create, market_create, market_open
    from exchange.services.sessions import api_key_create
    from portfolio.services.vault import deposit_credit

    rng = random.Random(seed_)
    base = asset_create(symbol="ETH", name="Ether", decimals=18)
    quote = asset_create(symbol="USDC", name="USD Coin", decimals=6)
    market = market_create(
        base=base,
        quote=quote,
        tick_size=D("0.01"),
        lot_size=D("0.001"),
        min_quantity=D("0.001"),
        min_notional=D("1"),
        maker_fee_rate=D("0.0002"),
        taker_fee_rate=D("0.0005"),
    )
    market_open(market=market)
    keys = [rng.randbytes(32) for _ in range(traders)]
    addresses = [EthAccount.from_key(k).address.lower() for k in keys]
    accounts = Account.objects.bulk_create(
        [Account(wallet_address=a, kyc_tier=1, country="GB") for a in addresses]
    )
    result = []
    for n, (account, key, address) in enumerate(zip(accounts, keys, addresses, strict=True)):
        for asset in (base, quote):
            deposit_credit(
                account=account,
                asset=asset,
                amount=D("1000000000"),
                tx_hash="0x" + f"{n:x}{asset.pk:x}".rjust(64, "0"),
                log_index=asset.pk,
                block_number=1,
            )
        issued = api_key_create(account=account, name="bench", scopes=[ApiKeyScope.TRADE])
        result.append(Trader(key=key, address=address, api_key=issued.secret))
    return result


def order_bodies(rng: random.Random, traders: list[Trader], count: int, tag: str) -> list:
    """``count`` unsigned order bodies, each with the index of the trader who sends it."""
    out = []
    for n in range(count):
        t = rng.randrange(len(traders))
        side = rng.choice(("BUY", "SELL"))
        body: dict = {
            "market": MARKET,
            "client_order_id": f"{tag}-{n}",
            "side": side,
            "nonce": str(next(traders[t].nonces)),
        }
        quantity = D(rng.randint(20, 2_000)) * D("0.001")
        if rng.random() < 0.10:
            body["type"] = "MARKET"
            if side == "BUY":
                body["quote_quantity"] = str(D(rng.randint(5, 200)))
            else:
                body["quantity"] = str(quantity)
        else:
            sign = 1 if side == "BUY" else -1
            # Half through the mid (they trade), half resting up to 1% away.
            bps = rng.uniform(1, 30) if rng.random() < 0.5 else -rng.uniform(1, 100)
            price = (MID * (1 + D(repr(sign * bps)) / 10_000)).quantize(D("0.01"))
            body |= {"type": "LIMIT", "price": str(price), "quantity": str(quantity)}
        out.append((t, body))
    return out


def _sign_chunk(args: tuple[dict, list[tuple[bytes, str, dict]]]) -> list[str]:
    """Signatures of bodies, as a client signs them (see tests/api_support.Wallet.sign)."""
    from exchange.signing import OrderFields, sign_order

    domain, chunk = args
    signatures = []
    for key, address, body in chunk:

        def dec(name, body=body):
            return D(body[name]) if name in body else None

        fields = OrderFields(
            account=address,
            market=body["market"],
            client_order_id=body["client_order_id"],
            side=body["side"],
            order_type=body["type"],
            time_in_force="GTC" if body["type"] == "LIMIT" else "IOC",
            nonce=int(body["nonce"]),
            price=dec("price"),
            quantity=dec("quantity"),
            quote_quantity=dec("quote_quantity"),
        )
        signatures.append(sign_order(key, fields, domain)[1])
    return signatures


@dataclass(frozen=True, slots=True)
class Request:
    api_key: str
    body: bytes


def sign_all(traders: list[Trader], bodies: list, processes: int) -> list[Request]:
    from exchange.signing import eip712_domain

    domain = eip712_domain()
    work = [(traders[t].key, traders[t].address, body) for t, body in bodies]
    size = 500
    chunks = [(domain, work[i : i + size]) for i in range(0, len(work), size)]
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(processes, mp_context=ctx) as pool:
        signatures = [s for chunk in pool.map(_sign_chunk, chunks) for s in chunk]
    return [
        Request(traders[t].api_key, json.dumps(body | {"signature": sig}).encode())
        for (t, body), sig in zip(bodies, signatures, strict=True)
    ]


# --- the clients -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    code: str | None  # the error's code, for a refusal
    order_status: str | None  # the order's status, for an accepted order
    due: float
    sent: float
    done: float


async def _send(client, request: Request, due: float) -> Answer:
    sent = time.perf_counter()
    try:
        status, body = await client.post(
            "/api/v1/orders/",
            request.body,
            {"X-API-Key": request.api_key, "Content-Type": "application/json"},
        )
    except Exception as exc:  # a transport error is an outcome to count, not to die of
        return Answer(0, type(exc).__name__, None, due, sent, time.perf_counter())
    done = time.perf_counter()
    try:
        payload = json.loads(body)
    except ValueError:
        payload = {}
    if not isinstance(payload, dict):
        payload = {}
    if status in (200, 201):
        return Answer(status, None, payload.get("status"), due, sent, done)
    return Answer(status, payload.get("code", "?"), None, due, sent, done)


def _client(base_url: str, connections: int) -> Client:
    return Client(base_url, connections, timeout=30)


async def _closed_loop(client, requests: Sequence[Request], connections: int) -> list[Answer]:
    feed = iter(requests)
    answers: list[Answer] = []

    async def worker() -> None:
        for request in feed:
            answers.append(await _send(client, request, time.perf_counter()))

    await asyncio.gather(*(worker() for _ in range(connections)))
    return answers


async def _open_loop(client, requests: Sequence[Request], rate: float) -> list[Answer]:
    start = time.perf_counter() + 0.05
    tasks = []
    for i, request in enumerate(requests):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_send(client, request, due)))
    return list(await asyncio.gather(*tasks))


@dataclass
class Drive:
    answers: list[Answer]
    client_cpu: float  # seconds of CPU the client process(es) used while measuring
    started: float = 0.0  # wall clock (time.time) of the first send
    ended: float = 0.0


def drive(
    base_url: str,
    warmup: Sequence[Request],
    requests: Sequence[Request],
    *,
    connections: int,
    rate: float | None = None,
    start_at: float | None = None,
) -> Drive:
    """Send ``warmup`` (untimed) then ``requests`` (closed loop over ``connections``, or
    open loop at ``rate``), in one event loop on this process's keep-alive connections."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> Drive:
        async with _client(base_url, connections) as client:
            await _closed_loop(client, warmup, connections)
            if start_at is not None:
                await asyncio.sleep(max(0.0, start_at - time.time()))
            cpu, wall, clock = time.process_time(), time.perf_counter(), time.time()
            if rate is None:
                answers = await _closed_loop(client, requests, connections)
            else:
                answers = await _open_loop(client, requests, rate)
            used = time.process_time() - cpu
            return Drive(answers, used, clock, clock + time.perf_counter() - wall)

    return asyncio.run(main())


def _drive_star(args: tuple) -> Drive:
    base_url, warmup, requests, connections, start_at = args
    return drive(base_url, warmup, requests, connections=connections, start_at=start_at)


def drive_closed(
    base_url: str, warmup: list, requests: list, *, connections: int, procs: int
) -> Drive:
    if procs == 1:
        return drive(base_url, warmup, requests, connections=connections)
    per = max(1, connections // procs)
    start_at = time.time() + 1.0 + len(warmup) / 200  # after every process's warm-up
    jobs = [(base_url, warmup[i::procs], requests[i::procs], per, start_at) for i in range(procs)]
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(procs, mp_context=ctx) as pool:
        parts = list(pool.map(_drive_star, jobs))
    return Drive(
        [a for p in parts for a in p.answers],
        sum(p.client_cpu for p in parts),
        min(p.started for p in parts),
        max(p.ended for p in parts),
    )


# --- the stack -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Stack:
    web: subprocess.Popen
    matcher: subprocess.Popen
    base_url: str
    log: Path
    database: str
    profile_out: Path | None = None

    def processes(self) -> list[subprocess.Popen]:
        return [self.web, self.matcher]


def stack_start(
    env: dict,
    web_env: dict,
    *,
    database: str,
    workers: int,
    log: Path,
    profile_out: Path | None = None,
    profile_every: int = 10,
    profile_clock: str = "cpu",
) -> Stack:
    port = free_port()
    out = log.open("ab")
    if profile_out is None:
        web_cmd = [
            sys.executable,
            "-m",
            "uvicorn",
            "dex.asgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--loop",
            "uvloop",
            "--http",
            "httptools",
            "--no-access-log",
            "--no-server-header",
            "--log-level",
            "warning",
        ]
    else:
        web_cmd = [sys.executable, __file__, "--serve-profiled", str(port), str(profile_out)]
        web_cmd += ["--profile-every", str(profile_every), "--profile-clock", profile_clock]
    web = subprocess.Popen(web_cmd, env=web_env, cwd=BASE_DIR, stdout=out, stderr=out)
    matcher = subprocess.Popen(
        [sys.executable, "manage.py", "run_matcher", "--market", MARKET],
        env=env,
        cwd=BASE_DIR,
        stdout=out,
        stderr=out,
    )
    return Stack(web, matcher, f"http://127.0.0.1:{port}", log, database, profile_out)


def wait_until_ok(
    url: str, processes: Sequence[subprocess.Popen], log: Path, timeout: float = 90
) -> None:
    """Until ``url`` answers 200; fails at once if one of ``processes`` exits."""
    import httpx

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        for proc in processes:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[:6]} exited ({proc.returncode}); see {log}")
        try:
            response = httpx.get(url, timeout=5)
            if response.status_code == 200:
                return
            last = response.text[:300]
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.25)
    raise RuntimeError(f"{url} did not answer 200 in {timeout:g}s: {last}")


def stack_wait_healthy(stack: Stack, timeout: float = 90) -> None:
    wait_until_ok(f"{stack.base_url}/healthz", stack.processes(), stack.log, timeout)


def processes_stop(procs: Sequence[subprocess.Popen], *, timeout: float) -> None:
    """SIGTERM each of ``procs``, SIGKILL what has not exited after ``timeout`` seconds,
    then stop the children they leave behind: a uvicorn worker still waiting for its
    connections to close when its supervisor is killed carries on alone, holding
    connections to the bench's database. SIGINT is uvicorn's forced exit."""
    import psutil

    children = []
    for proc in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            children += psutil.Process(proc.pid).children(recursive=True)
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    alive = [child for child in children if child.is_running()]
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.send_signal(signal.SIGINT)
    _, alive = psutil.wait_procs(alive, timeout=10)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()


def stack_stop(stack: Stack) -> None:
    processes_stop(stack.processes(), timeout=60 if stack.profile_out else 15)


# --- CPU accounting ----------------------------------------------------------------------


def _cpu(proc) -> float:
    """CPU seconds of ``proc`` and of its children it has waited for."""
    t = proc.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _tree_cpu(root) -> float:
    import psutil

    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        total += _cpu(root)
        for child in root.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += _cpu(child)
    return total


def _named(name: str) -> list:
    import psutil

    found = []
    for proc in psutil.process_iter(["name", "ppid"]):
        if proc.info["name"] and proc.info["name"].startswith(name):
            found.append(proc)
    return found


def _postmasters() -> list:
    """PostgreSQL's postmaster(s): the postgres processes whose parent is not one."""
    import psutil

    found = _named("postgres")
    pids = {p.pid for p in found}
    return [p for p in found if p.info["ppid"] not in pids and p.pid != psutil.Process().pid]


def _machine_busy(times) -> float:
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def sessions_opened(database: str) -> int:
    """Connections ever opened to ``database`` (PostgreSQL 14+), from a connection of
    its own so that the bench's own stays closed."""
    import psycopg
    from django.db import connection

    params = connection.get_connection_params() | {"dbname": "postgres", "autocommit": True}
    with psycopg.connect(**params) as conn:
        row = conn.execute(
            "SELECT sessions FROM pg_stat_database WHERE datname = %s", [database]
        ).fetchone()
    return int(row[0]) if row else 0


class CpuMeter:
    """CPU seconds per part of the stack between ``start`` and ``stop``, and the
    connections opened to the bench's database meanwhile."""

    def __init__(self, stack: Stack) -> None:
        import psutil

        self.parts = {
            "web": [psutil.Process(stack.web.pid)],
            "matcher": [psutil.Process(stack.matcher.pid)],
            # The postmaster's waited-for children include backends that have exited.
            "postgresql": _postmasters(),
            "redis": _named("redis-server"),
        }
        self.database = stack.database

    def _sample(self) -> dict[str, float]:
        import psutil

        return {name: sum(_tree_cpu(p) for p in procs) for name, procs in self.parts.items()} | {
            "machine": _machine_busy(psutil.cpu_times())
        }

    def start(self) -> None:
        self.sessions = sessions_opened(self.database)
        self.before = self._sample()
        self.t0 = time.perf_counter()

    def stop(self, client_cpu: float) -> None:
        after = self._sample()
        self.sessions = sessions_opened(self.database) - self.sessions
        self.seconds = time.perf_counter() - self.t0
        self.used = {k: after[k] - self.before[k] for k in after}
        self.used["bench clients"] = client_cpu

    def lines(self, requests: int) -> list[str]:
        cores = os.cpu_count() or 1
        machine = self.used["machine"]
        known = sum(v for k, v in self.used.items() if k != "machine")
        rows = [(k, v) for k, v in self.used.items() if k != "machine"]
        rows.append(("other (rest of the machine)", max(0.0, machine - known)))
        out = [
            f"  CPU over {self.seconds:.1f}s ({cores} cores = {cores * self.seconds:.1f} CPU-s):"
        ]
        for name, used in rows:
            out.append(
                f"    {name:<28} {used:7.2f} CPU-s  {used / self.seconds:5.2f} cores"
                f"  {100 * used / machine if machine else 0:5.1f}% of busy"
            )
        out.append(
            f"    {'machine busy':<28} {machine:7.2f} CPU-s  {machine / self.seconds:5.2f} cores"
        )
        out.append(
            f"  PostgreSQL connections opened to the bench database: {self.sessions:,}"
            f" ({self.sessions / max(1, requests):.2f} per request)"
        )
        return out


# --- reports -------------------------------------------------------------------------------


def latency_line(label: str, values_ms: Sequence[float], quantiles: Sequence[float]) -> str:
    cells = " / ".join(f"{percentile(values_ms, q):.1f}" for q in quantiles)
    names = "/".join(f"p{int(q * 100)}" for q in quantiles)
    return f"  {label} {names}/max (ms): {cells} / {max(values_ms, default=0):.1f}"


def outcome_lines(answers: Sequence[Answer]) -> list[str]:
    accepted = [a for a in answers if a.status == 201]
    refused = Counter(f"{a.status} {a.code}" for a in answers if a.status != 201)
    matched = sum(1 for a in accepted if a.order_status not in (None, "PENDING"))
    out = [
        f"  answers: {len(answers):,}; 201 accepted {len(accepted):,} "
        f"(matched {matched:,}, still PENDING {len(accepted) - matched:,}); "
        f"refused {sum(refused.values()):,}"
    ]
    for key, count in refused.most_common():
        out.append(f"    refused {key}: {count:,}")
    return out


def report_throughput(run: int, result: Drive, meter: CpuMeter, procs: int, conns: int) -> float:
    answers = result.answers
    wall = result.ended - result.started
    accepted = sum(1 for a in answers if a.status == 201)
    per_second = accepted / wall if wall else 0.0
    latencies = [(a.done - a.sent) * 1000 for a in answers]
    print(f"phase A (throughput) run {run}: {conns} connections in {procs} client process(es)")
    print(f"  accepted: {per_second:,.0f} orders/s ({accepted:,} in {wall:.2f}s)")
    print("\n".join(outcome_lines(answers)))
    print(latency_line("latency", latencies, (0.5, 0.99)))
    print(
        f"  client CPU: {result.client_cpu:.2f}s = {result.client_cpu / wall:.2f} cores "
        f"({1000 * result.client_cpu / max(1, len(answers)):.3f} ms per request)"
    )
    print("\n".join(meter.lines(len(answers))), flush=True)
    return per_second


def report_latency(run: int, result: Drive, meter: CpuMeter, rate: float) -> float:
    answers = result.answers
    wall = result.ended - result.started
    from_due = [(a.done - a.due) * 1000 for a in answers]
    from_sent = [(a.done - a.sent) * 1000 for a in answers]
    print(f"phase B (latency) run {run}: open loop at {rate:g}/s offered")
    print(f"  offered {len(answers):,} in {wall:.2f}s = {len(answers) / wall:,.0f}/s achieved")
    print("\n".join(outcome_lines(answers)))
    print(latency_line("due -> response ", from_due, (0.5, 0.9, 0.99)))
    print(latency_line("sent -> response", from_sent, (0.5, 0.9, 0.99)))
    print(f"  client CPU: {result.client_cpu:.2f}s")
    print("\n".join(meter.lines(len(answers))), flush=True)
    return percentile(from_due, 0.99)


# --- the profiled web server ---------------------------------------------------------------


def serve_profiled(port: int, out: Path, every: int, clock: str) -> None:
    """uvicorn in this process, under cProfile: the event-loop thread, and one in
    ``every`` of the threads Django runs a request's synchronous code in (one profile
    per thread, merged as each thread ends)."""
    import cProfile

    import uvicorn

    import dex.asgi  # imported before profiling: startup is not the subject

    # "cpu": each thread's own CPU time, so waiting (on PostgreSQL, on the matcher's
    # reply, on the GIL) costs nothing; "wall": elapsed time, waits included.
    timer = time.thread_time if clock == "cpu" else time.perf_counter
    merged: list[pstats.Stats] = []
    lock = threading.Lock()
    threads = itertools.count()
    profiled = [0]
    original_run = threading.Thread.run

    def run(self) -> None:
        if next(threads) % every:
            return original_run(self)
        profiler = cProfile.Profile(timer)
        profiler.enable()
        try:
            original_run(self)
        finally:
            profiler.disable()
            with lock:
                profiled[0] += 1
                if merged:
                    merged[0].add(profiler)
                else:
                    merged.append(pstats.Stats(profiler))

    threading.Thread.run = run
    # uvicorn re-raises the signal that stopped it once it has shut down; with this
    # handler in place that returns here instead of ending the process unsaved.
    signal.signal(signal.SIGTERM, lambda *_: None)
    main = cProfile.Profile(timer)
    main.enable()
    uvicorn.run(
        "dex.asgi:application",
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        server_header=False,
        log_level="warning",
    )
    main.disable()
    dex.asgi.request_threads.close()  # the pooled request threads end: their profiles merge
    main.dump_stats(str(out) + ".loop")
    with lock:
        if merged:
            merged[0].dump_stats(str(out) + ".threads")
        Path(str(out) + ".count").write_text(str(profiled[0]))


# Where an order request's time goes: (label, path suffix, function), request threads.
BREAKDOWN = [
    ("new DB connection (Django connect)", "django/db/backends/base/base.py", "connect"),
    ("rate limit (Redis script)", "dex/api/ratelimit.py", "rate_limit_hit"),
    ("authentication (API key lookup)", "dex/api/authentication.py", "authenticate"),
    ("view: OrderListView.post", "exchange/api/orders.py", "post"),
    ("  OrderPlaceSerializer.is_valid", "rest_framework/serializers.py", "is_valid"),
    ("  market lookup (_market)", "exchange/api/orders.py", "_market"),
    ("  EIP-712 hash (order_digest)", "exchange/signing.py", "order_digest"),
    ("  signer recovery (recover_signer)", "exchange/signing.py", "recover_signer"),
    ("  order_place transaction (_order_place)", "exchange/services/orders.py", "_order_place"),
    ("    order_request_validate", "exchange/services/orders.py", "order_request_validate"),
    ("    placement gates", "compliance/gates.py", "placement_refusal"),
    ("    fee_rates_for", "portfolio/selectors.py", "fee_rates_for"),
    ("    hold_place", "portfolio/services/ledger.py", "hold_place"),
    (
        "  wait for the matcher (order_reply_wait)",
        "exchange/matcher/replies.py",
        "order_reply_wait",
    ),
    ("  re-read the order (order_reload)", "exchange/selectors.py", "order_reload"),
    ("  OrderSerializer(...).data", "rest_framework/serializers.py", "data"),
    ("SQL statements (Django CursorWrapper.execute)", "django/db/backends/utils.py", "execute"),
    ("commits", "django/db/backends/base/base.py", "commit"),
]


def _cumulative(stats: pstats.Stats, suffix: str, name: str) -> tuple[int, float]:
    calls, cum = 0, 0.0
    for (path, _, func), (_, nc, _, ct, _) in stats.stats.items():
        if func == name and path.endswith(suffix):
            calls, cum = calls + nc, cum + ct
    return calls, cum


def report_profile(out: Path, top: int, clock: str, served: int) -> None:
    """``served``: the requests the server answered while profiled, all threads."""
    if not Path(str(out) + ".threads").exists():
        print("(the profiled server left no profile)")
        return
    threads = int(Path(str(out) + ".count").read_text())
    stats = pstats.Stats(str(out) + ".threads")
    loop = pstats.Stats(str(out) + ".loop")
    requests, _ = _cumulative(stats, "exchange/api/orders.py", "post")
    requests = max(1, requests)
    unit = "CPU ms" if clock == "cpu" else "wall ms"
    print(
        f"\nprofile ({clock} clock): {threads:,} worker threads profiled, {requests:,} of them"
        f" order requests; figures are per order request, under cProfile"
    )
    print(f"  {'part':<50} {'calls':>6} {unit:>8}")
    print(f"  {'request threads, everything':<50} {'':>6} {1000 * stats.total_tt / requests:8.2f}")
    loop_ms = 1000 * loop.total_tt / max(1, served)
    for label, suffix, name in BREAKDOWN:
        calls, cum = _cumulative(stats, suffix, name)
        print(f"  {label:<50} {calls / requests:6.2f} {1000 * cum / requests:8.2f}")
    print(
        f"  {'event-loop thread (all of it, per request)':<50} {'':>6} {loop_ms:8.2f}"
        "  (its total over every request served)"
    )
    for sort, title in (("cumulative", "cumulative"), ("tottime", "own time")):
        print(f"\nrequest threads, top {top} by {title}:")
        stats.sort_stats(sort).print_stats(top)
    print(f"\nevent-loop thread (uvicorn, dex.wsgi_bridge), top {top} by own time:")
    loop.sort_stats("tottime").print_stats(top)


def sql_of_one_order(request: Request) -> None:
    """The SQL one order placement runs: in this process, through Django's test client,
    against the bench's database while the matcher runs."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(SERVER_NAME="127.0.0.1")
    with CaptureQueriesContext(connection) as captured:
        response = client.post(
            "/api/v1/orders/",
            data=request.body,
            content_type="application/json",
            headers={"X-API-Key": request.api_key},
        )
    print(
        f"\nSQL of one order placement (in-process test client, answered {response.status_code}"
        f" {response.json().get('status', response.json().get('code'))}):"
        f" {len(captured.captured_queries)} statements"
    )
    for n, query in enumerate(captured.captured_queries, start=1):
        sql = " ".join(query["sql"].split())
        print(f"  {n:2}. {query['time']:>6}s  {sql[:150]}")


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="concurrent connections, phase A")
    parser.add_argument("--orders", type=int, default=20_000, help="orders per phase A run")
    parser.add_argument("--rate", type=float, default=300, help="offered orders/s, phase B")
    parser.add_argument("--seconds", type=float, default=20, help="phase B run length")
    parser.add_argument("--runs", type=int, default=2, help="runs of each phase")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn --workers")
    parser.add_argument("--client-procs", type=int, default=1, help="client processes, phase A")
    parser.add_argument("--traders", type=int, default=64)
    parser.add_argument("--redis-db", type=int, default=13)
    parser.add_argument(
        "--db-pool",
        type=int,
        default=16,
        help="DB_POOL_MAX_SIZE of each web process (0: no pool, a connection per request)",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more environment for the web and matcher processes (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="cProfile the web server")
    parser.add_argument("--profile-every", type=int, default=10, help="profile 1 request in N")
    parser.add_argument(
        "--profile-clock",
        choices=("cpu", "wall"),
        default="cpu",
        help="profile each thread's CPU time (default) or elapsed time",
    )
    parser.add_argument("--top", type=int, default=30, help="profile rows to print")
    parser.add_argument("--serve-profiled", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.serve_profiled:
        port, out = args.serve_profiled
        serve_profiled(int(port), Path(out), args.profile_every, args.profile_clock)
        return 0

    redis_url = with_redis_db(os.environ["REDIS_URL"], args.redis_db)
    if args.redis_db == redis_db_of(os.environ["REDIS_URL"]):
        raise SystemExit(f"--redis-db {args.redis_db} is the configured Redis database")
    redis_claim(redis_url)
    os.environ["REDIS_URL"] = redis_url  # this process too: the configured one is not touched
    setup_django()
    from django.conf import settings
    from django.db import connection

    configured, database = bench_database_create()
    stack = None
    workdir = Path(tempfile.mkdtemp(prefix="dex-bench-api-"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        runs = 1 if args.profile else args.runs
        workers = 1 if args.profile else args.web_workers
        print(
            f"PostgreSQL {version}, database {database} (created for this run), Redis "
            f"{redis_url}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}",
            flush=True,
        )
        trader_list = seed(traders=args.traders, seed_=args.seed)
        rng = random.Random(args.seed)
        per_run_b = int(args.rate * args.seconds)
        warm = order_bodies(rng, trader_list, WARMUP_ORDERS * 2 + 1, "warm")
        plan = [
            (
                order_bodies(rng, trader_list, args.orders, f"a{r}"),
                order_bodies(rng, trader_list, 0 if args.profile else per_run_b, f"b{r}"),
            )
            for r in range(runs)
        ]
        total = len(warm) + sum(len(a) + len(b) for a, b in plan)
        print(f"signing {total:,} orders (EIP-712) in {os.cpu_count()} processes ...", flush=True)
        connection.close()  # the pool forks: no child may share this connection
        t0 = time.perf_counter()
        cpus = os.cpu_count() or 2
        signed_warm = sign_all(trader_list, warm, cpus)
        signed = [
            (
                sign_all(trader_list, a, os.cpu_count() or 2),
                sign_all(trader_list, b, os.cpu_count() or 2),
            )
            for a, b in plan
        ]
        print(f"  signed in {time.perf_counter() - t0:.1f}s", flush=True)

        env = dict(
            os.environ,
            DATABASE_URL=with_database(os.environ["DATABASE_URL"], database),
            REDIS_URL=redis_url,
            DEBUG="0",
            PYTHONUNBUFFERED="1",
            **RATE_LIMIT_ENV,
        )
        env.update(item.split("=", 1) for item in args.server_env)
        # The web processes as the Procfile runs them; the matcher keeps its one
        # persistent connection.
        web_env = dict(env, ASGI_THREADS="32", DB_POOL_MAX_SIZE=str(args.db_pool))
        if args.db_pool == 0:
            web_env["DB_CONN_MAX_AGE"] = "0"
        env.pop("API_RATE_LIMIT_REDIS_URL", None)  # follows REDIS_URL: the bench's database
        limits = settings.API_RATE_LIMITS["orders"]
        print(
            "rate limits raised for the server (environment "
            + ", ".join(f"{k}={v}" for k, v in RATE_LIMIT_ENV.items())
            + f"); in force with {settings.SETTINGS_MODULE}: orders "
            + ", ".join(f"{b} {n:,}/{s:g}s" for b, (n, s) in limits.items())
        )
        print(
            f"server: uvicorn dex.asgi:application --workers {workers} --loop uvloop --http "
            f"httptools --no-access-log{' under cProfile' if args.profile else ''}; "
            f"run_matcher --market {MARKET}; ORDER_REPLY_TIMEOUT="
            f"{env.get('ORDER_REPLY_TIMEOUT', settings.ORDER_REPLY_TIMEOUT)}s, "
            + (
                f"web DB_POOL_MAX_SIZE={args.db_pool}, ASGI_THREADS=32"
                if args.db_pool
                else "web without a DB pool, DB_CONN_MAX_AGE=0"
            )
            + "".join(f", {item}" for item in args.server_env),
            flush=True,
        )
        log = workdir / "stack.log"
        profile_out = workdir / "web.prof" if args.profile else None
        stack = stack_start(
            env,
            web_env,
            database=database,
            workers=workers,
            log=log,
            profile_out=profile_out,
            profile_every=args.profile_every,
            profile_clock=args.profile_clock,
        )
        stack_wait_healthy(stack)
        print(f"stack is up at {stack.base_url} (log: {log})\n", flush=True)

        throughput, p99s = [], []
        warm_a, warm_b = signed_warm[:WARMUP_ORDERS], signed_warm[WARMUP_ORDERS:-1]
        for run, (requests_a, requests_b) in enumerate(signed, start=1):
            meter = CpuMeter(stack)
            meter.start()
            result = drive_closed(
                stack.base_url,
                warm_a if run == 1 else [],
                requests_a,
                connections=args.clients,
                procs=args.client_procs,
            )
            meter.stop(result.client_cpu)
            throughput.append(
                report_throughput(run, result, meter, args.client_procs, args.clients)
            )
            if args.profile:
                break
            time.sleep(2)  # let the matcher finish the backlog
            meter = CpuMeter(stack)
            meter.start()
            result = drive(
                stack.base_url,
                warm_b if run == 1 else [],
                requests_b,
                connections=args.clients,
                rate=args.rate,
            )
            meter.stop(result.client_cpu)
            p99s.append(report_latency(run, result, meter, args.rate))
            time.sleep(2)

        print(f"\n(load average {os.getloadavg()[0]:.2f} at the end)")
        if throughput and max(throughput) < TARGET_PER_SECOND:
            print(f"throughput is under {TARGET_PER_SECOND:,}/s in every run")
        if p99s and min(p99s) >= TARGET_P99_MS:
            print(f"p99 latency at {args.rate:g}/s is not under {TARGET_P99_MS:g} ms in any run")
        if args.profile:
            sql_of_one_order(signed_warm[-1])
            stack_stop(stack)
            report_profile(
                profile_out, args.top, args.profile_clock, WARMUP_ORDERS + 1 + args.orders
            )
        return 0
    finally:
        if stack is not None:
            stack_stop(stack)
        connection.close()
        bench_database_drop(configured)
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(redis_url).flushdb()


if __name__ == "__main__":
    sys.exit(main())
