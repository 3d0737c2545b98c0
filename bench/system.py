"""The whole exchange under load, as an operator would prove it: signed orders over HTTP
at a fixed rate while WebSocket subscribers follow the market, on a running stack (web,
matcher, Celery worker and beat, PostgreSQL, Redis), then the books proved.

    python bench/system.py                                   # 180 s, 100 orders/s, 1,000 subs
    python bench/system.py --seconds 30 --rate 30 --subscribers 200      # quick look
    python bench/system.py --rate 200 --web-workers 3 --client-procs 3

It needs what the platform needs: ``DATABASE_URL``, ``REDIS_URL`` and
``DJANGO_SETTINGS_MODULE`` (default ``dex.settings.local``). Without servers of your own:

    .venv/bin/python -m dex.devstack exec -- .venv/bin/python bench/system.py

The configured database is never written to: the bench creates ``<name>_bench_system``
beside it (replacing a stale one), migrates it, and drops it at the end. Redis: database
``--redis-db`` of the configured server (default 15, never the configured one), flushed
before and after; the bench refuses one that holds keys that are not the platform's.

Untimed, as ``bench/api.py`` does it: one market (ETH-USDC), ``--traders`` funded
accounts with API keys, and every order of the run EIP-712-signed in a process pool
(signing is the client's cost); the same mix of limit orders through and away from the
mid and market orders.

The stack, as subprocesses against those databases: ``uvicorn dex.asgi:application
--workers N`` (HTTP and WebSocket, a DB pool as the Procfile runs it, the API's rate
limits raised), ``manage.py run_matcher`` and ``celery -A dex worker --beat`` (the
periodic tasks an operator runs: candles, book snapshots, surveillance scans ...). The
bench waits for ``/healthz`` and ``/readyz`` (a Celery worker answers) to say 200.

The load, for ``--seconds``:

- ``--subscribers`` WebSocket connections to ``/ws/stream/`` from ``--ws-procs``
  processes, each subscribed to ``book.ETH-USDC`` and ``trades.ETH-USDC`` (the
  clients of ``bench/ws.py``), all opened before the clock starts;
- ``--rate`` signed orders a second, open loop, over ``--clients`` keep-alive
  connections spread over ``--client-procs`` processes (after a few hundred untimed
  orders through ``bench/api.py``'s closed loop to warm the stack up): order i is due
  at start + i/rate and queued then, whatever came back before, sent by the first
  connection free, and its latency counts from when it was due. Orders still
  unanswered ``--grace`` seconds after the run are given up and counted: a saturated
  stack cannot hold the bench for ever.

It prints one table: orders offered and accepted a second, trades a second (trades the
database holds with ``executed_at`` from the first order sent, over the time from the
first order sent to the last answer), order latency from due p50/p99, WebSocket
delivery latency (a tap on the market's pub/sub channel notes when each delta is
published, as ``bench/ws.py`` measures; a subscriber's latency is its receipt minus the
tap's), refusals by HTTP status and error code, transport errors and orders given up,
connections held and dropped, the Celery tasks run, error lines in the stack's log, and
the CPU each part of the stack used. It counts trades once the web processes have
written no command for 2 s and the matcher's journal is empty, then runs
``manage.py ledger_check`` and ``manage.py verify_books`` on the bench's database, with
the stack's environment and the stack still running. The exit status is 1 if either
check fails or any answer was a 5xx.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import ws
from bench.api import (
    MARKET,
    RATE_LIMIT_ENV,
    WARMUP_ORDERS,
    Answer,
    Drive,
    Request,
    _client,
    _send,
    bench_database_create,
    bench_database_drop,
    drive,
    order_bodies,
    percentile,
    redis_claim,
    redis_db_of,
    seed,
    setup_django,
    sign_all,
    wait_until_ok,
    with_database,
    with_redis_db,
)

BASE_DIR = Path(__file__).resolve().parent.parent
DATABASE_SUFFIX = "_bench_system"
CHECKS = (("ledger_check",), ("verify_books", "--market", MARKET))
DRAIN_TIMEOUT = 120.0  # seconds for the matcher to apply what the run left pending
UNANSWERED = "Unanswered"  # the code of an order given up on, unanswered at the end


# --- the Celery worker ------------------------------------------------------------------------


def worker_start(env: dict, log: Path, *, concurrency: int, beat: bool, workdir: Path):
    out = log.open("ab")
    cmd = [sys.executable, "-m", "celery", "-A", "dex", "worker", "--loglevel", "WARNING"]
    cmd += ["--concurrency", str(concurrency)]
    if beat:
        cmd += ["--beat", "--schedule", str(workdir / "celerybeat-schedule")]
    return subprocess.Popen(cmd, env=env, cwd=BASE_DIR, stdout=out, stderr=out)


def worker_stop(worker: subprocess.Popen) -> None:
    if worker.poll() is None:
        worker.send_signal(signal.SIGTERM)  # warm shutdown: running tasks finish
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def worker_tasks() -> Counter:
    """Tasks the Celery worker has run since it started, by name (its ``stats``)."""
    from dex.celery import app

    replies = app.control.inspect(timeout=5).stats() or {}
    return sum((Counter(reply.get("total", {})) for reply in replies.values()), Counter())


LOG_PROBLEMS = (" ERROR ", " CRITICAL ", "Traceback")


def log_problems(log: Path, offset: int) -> list[str]:
    """Lines of the stack's log written after ``offset`` that report an error."""
    with log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    return [line for line in text.splitlines() if any(p in line for p in LOG_PROBLEMS)]


# --- the HTTP clients: open loop, one process each ------------------------------------------


async def _offer(
    client, requests: Sequence[Request], rate: float, connections: int, give_up_at: float
) -> list[Answer]:
    """Open loop through a queue: order i is queued when it is due (start + i/rate) and
    sent by the first of ``connections`` senders free, its latency counting from when it
    was due. At ``give_up_at`` (wall clock) what has no answer is given up.

    A request waits in this queue, not for a connection of the client's: at give-up the
    queue holds what was never sent, and only ``connections`` requests are in flight."""
    queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    answers: list[Answer | None] = [None] * len(requests)
    start = time.perf_counter() + 0.05

    async def sender() -> None:
        while True:
            i, due = await queue.get()
            answers[i] = await _send(client, requests[i], due)
            queue.task_done()

    async def schedule() -> None:
        for i in range(len(requests)):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.put_nowait((i, due))
        await queue.join()

    senders = [asyncio.create_task(sender()) for _ in range(connections)]
    scheduler = asyncio.create_task(schedule())
    await asyncio.wait([scheduler], timeout=max(0.0, give_up_at - time.time()))
    for task in (scheduler, *senders):
        task.cancel()
    await asyncio.gather(scheduler, *senders, return_exceptions=True)
    now = time.perf_counter()
    return [
        answer or Answer(0, UNANSWERED, None, start + i / rate, start + i / rate, now)
        for i, answer in enumerate(answers)
    ]


def offer(
    base_url: str,
    requests: Sequence[Request],
    *,
    connections: int,
    rate: float,
    start_at: float,
    give_up_at: float,
) -> Drive:
    """``_offer`` from ``start_at`` (wall clock), on this process's keep-alive
    connections, with the CPU this process used meanwhile."""
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()

    async def main() -> Drive:
        async with _client(base_url, connections) as client:
            await asyncio.sleep(max(0.0, start_at - time.time()))
            cpu, wall, clock = time.process_time(), time.perf_counter(), time.time()
            answers = await _offer(client, requests, rate, connections, give_up_at)
            used = time.process_time() - cpu
            return Drive(answers, used, clock, clock + time.perf_counter() - wall)

    return asyncio.run(main())


def _http_client(conn, base_url: str, warmup, requests, connections: int, rate: float) -> None:
    """Warm up (``bench/api.py``'s closed loop) when told, then offer ``requests`` from the
    start time the parent sends, and send back what came of them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    if conn.recv() is None:
        return
    drive(base_url, warmup, [], connections=connections)
    conn.send("warm")
    times = conn.recv()
    if times is None:
        return
    start_at, give_up_at = times
    conn.send(
        offer(
            base_url,
            requests,
            connections=connections,
            rate=rate,
            start_at=start_at,
            give_up_at=give_up_at,
        )
    )


@dataclass
class HttpClients:
    procs: list[multiprocessing.Process]
    conns: list
    rate: float

    def warm_up(self) -> None:
        """Every process sends its share of the warm-up orders (imports, connections and
        caches of the web processes, the matcher's first batches), untimed."""
        for conn in self.conns:
            conn.send("warm up")
        for conn in self.conns:
            conn.recv()

    def stop(self) -> None:
        for conn in self.conns:
            with contextlib.suppress(Exception):
                conn.send(None)
        for proc in self.procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()


def http_clients_start(
    base_url: str,
    warmup: Sequence[Request],
    requests: Sequence[Request],
    *,
    connections: int,
    procs: int,
    rate: float,
) -> HttpClients:
    """Fork the client processes (before this process starts any thread), each holding
    every ``procs``-th order from its own offset, waiting for the start."""
    ctx = multiprocessing.get_context("fork")
    started, conns = [], []
    per = max(1, connections // procs)
    for n in range(procs):
        parent, child = ctx.Pipe()
        args = (child, base_url, warmup[n::procs], requests[n::procs], per, rate / procs)
        proc = ctx.Process(target=_http_client, args=args, daemon=True)
        proc.start()
        started.append(proc)
        conns.append(parent)
    return HttpClients(started, conns, rate)


# --- CPU accounting ---------------------------------------------------------------------------


class SystemCpuMeter(ws.CpuMeter):
    """``bench/ws.py``'s meter, with the Celery worker and both kinds of client."""

    def __init__(self, stack: ws.Stack, subscribers: ws.Clients, worker, http: HttpClients):
        import psutil

        super().__init__(stack, subscribers)
        parts = self.parts
        self.parts = {
            "web": parts["web"],
            "matcher": parts["matcher"],
            "celery worker + beat": [psutil.Process(worker.pid)],
            "postgresql": parts["postgresql"],
            "redis": parts["redis"],
            "bench http clients": [psutil.Process(p.pid) for p in http.procs],
            "bench ws clients": parts["bench clients"],
        }


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Run:
    start: float
    end: float
    grace: float
    http: Drive
    windows: list[ws.Window]
    latencies_ms: list[float]
    unmatched: int
    published: int
    meter: SystemCpuMeter


def measure(
    tap: ws.Tap,
    http: HttpClients,
    subscribers: ws.Clients,
    meter: SystemCpuMeter,
    *,
    seconds: float,
    grace: float,
) -> Run:
    """The HTTP clients offer orders from ``start`` while every subscriber records what it
    receives from ``start`` to ``start + seconds``; orders still unanswered ``grace``
    seconds after that are given up."""
    start = time.time() + 1.0
    end = start + seconds
    for conn in subscribers.conns:
        conn.send(("measure", start, end))
    for n, conn in enumerate(http.conns):  # each its share, offset: together one schedule
        conn.send((start + n / http.rate, end + grace))
    time.sleep(max(0.0, start - time.time()))
    meter.start()
    windows = [conn.recv() for conn in subscribers.conns]
    meter.stop()
    parts = [conn.recv() for conn in http.conns]
    time.sleep(0.5)  # deltas the tap gets late still count for the ones received in time
    latencies, unmatched = ws.delta_latencies(windows, tap)
    return Run(
        start=start,
        end=end,
        grace=grace,
        http=Drive(
            [a for p in parts for a in p.answers],
            sum(p.client_cpu for p in parts),
            min(p.started for p in parts),
            max(p.ended for p in parts),
        ),
        windows=windows,
        latencies_ms=latencies,
        unmatched=unmatched,
        published=tap.published(start, end),
        meter=meter,
    )


async def measure_with_tap(http, subscribers, meter, *, seconds: float, grace: float) -> Run:
    tap = ws.Tap()
    await tap.start()
    return await asyncio.to_thread(
        measure, tap, http, subscribers, meter, seconds=seconds, grace=grace
    )


def drain(timeout: float = DRAIN_TIMEOUT, quiet: float = 2.0) -> float:
    """Seconds until the run's work is done: the web processes have written no command
    for ``quiet`` seconds (requests the clients gave up on may still be running) and the
    matcher's journal holds no pending one."""
    from django.db.models import Count, Q

    from exchange.models import CommandStatus, OrderCommand

    t0 = time.perf_counter()
    last, quiet_since = None, t0
    while True:
        now = time.perf_counter()
        counts = OrderCommand.objects.aggregate(
            total=Count("pk"), pending=Count("pk", filter=Q(status=CommandStatus.PENDING))
        )
        if counts["total"] != last:
            last, quiet_since = counts["total"], now
        elif not counts["pending"] and now - quiet_since >= quiet:
            return now - t0
        if now - t0 > timeout:
            raise RuntimeError(f"the stack was still writing or matching after {timeout:g}s")
        time.sleep(0.25)


def trades_between(start: float, end: float) -> int:
    from exchange.models import Trade

    return Trade.objects.filter(
        market__symbol=MARKET,
        executed_at__gte=datetime.fromtimestamp(start, UTC),
        executed_at__lt=datetime.fromtimestamp(end, UTC),
    ).count()


@dataclass
class Check:
    command: str
    returncode: int
    output: str

    @property
    def passed(self) -> bool:
        return self.returncode == 0


# A check that could not connect proved nothing either way: on a shared PostgreSQL the
# server may be at max_connections for a moment. It is run again, a few times.
NO_CONNECTION = "OperationalError: connection failed"
CHECK_ATTEMPTS = 5


def run_check(command: Sequence[str], env: dict) -> Check:
    for attempt in range(1, CHECK_ATTEMPTS + 1):
        done = subprocess.run(
            [sys.executable, "manage.py", *command],
            env=env,
            cwd=BASE_DIR,
            capture_output=True,
            text=True,
            timeout=600,
        )
        output = (done.stdout + done.stderr).strip()
        if done.returncode == 0 or NO_CONNECTION not in output or attempt == CHECK_ATTEMPTS:
            break
        time.sleep(2 * attempt)
    if attempt > 1:
        output += f"\n(attempt {attempt} of {CHECK_ATTEMPTS}: the earlier ones could not connect)"
    return Check(" ".join(command), done.returncode, output)


def run_checks(env: dict) -> list[Check]:
    return [run_check(command, env) for command in CHECKS]


# --- the report ------------------------------------------------------------------------------


def _ms(values: Sequence[float], quantiles: Sequence[float]) -> str:
    cells = [percentile(values, q) for q in quantiles] + [max(values, default=0.0)]
    return " / ".join(f"{v:,.1f}" for v in cells) + " ms"


def refusals(answers, grace: float) -> Counter:
    """Answers other than 201, by HTTP status and error code; no answer, by the transport
    error's name, or given up ``grace`` seconds after the run."""

    def key(a) -> str:
        if a.code == UNANSWERED:
            return f"no answer {grace:g}s after the run (given up)"
        return f"transport {a.code}" if a.status == 0 else f"HTTP {a.status} {a.code}"

    return Counter(key(a) for a in answers if a.status != 201)


def _by_code(counts: Counter) -> str:
    total = sum(counts.values())
    return f"{total:,} {dict(counts)}" if total else "0"


def report(
    run: Run,
    *,
    trades: int,
    drained: float,
    subscribers: int,
    failed: Counter,
    tasks: Counter,
    problems: list[str],
) -> None:
    answers = run.http.answers
    wall = run.http.ended - run.http.started
    accepted = [a for a in answers if a.status == 201]
    matched = sum(1 for a in accepted if a.order_status not in (None, "PENDING"))
    from_due = [(a.done - a.due) * 1000 for a in answers]
    seconds = run.end - run.start
    held = sum(w.held for w in run.windows)
    closed = sum((w.closed for w in run.windows), Counter())
    delivered = sum((w.messages for w in run.windows), Counter())
    deltas = delivered["book.delta"]
    trade_lags = [lag * 1000 for w in run.windows for lag in w.trade_lag]
    errors = refusals(answers, run.grace)
    given_up = sum(1 for a in answers if a.code == UNANSWERED)
    rows = [
        (
            "orders offered (open loop)",
            f"{len(answers):,} over {seconds:.0f} s = {len(answers) / seconds:,.1f}/s",
        ),
        (
            "orders accepted (201)",
            f"{len(accepted):,} = {len(accepted) / wall:,.1f}/s over {wall:.1f} s, first send"
            f" to last answer (already matched in the answer {matched:,}, still PENDING"
            f" {len(accepted) - matched:,})",
        ),
        ("trades (database, executed in the run)", f"{trades:,} = {trades / wall:,.1f}/s"),
        (
            "order latency from due, p50 / p99 / max",
            _ms(from_due, (0.5, 0.99))
            + (f" (the {given_up:,} given up count to then: a floor)" if given_up else ""),
        ),
        (
            "  sent -> answer (answered ones), p50 / p99 / max",
            _ms([(a.done - a.sent) * 1000 for a in answers if a.code != UNANSWERED], (0.5, 0.99)),
        ),
        ("book deltas published (tap)", f"{run.published:,} = {run.published / seconds:,.1f}/s"),
        (
            "WS delivery latency tap -> client, p50 / p99 / max",
            _ms(run.latencies_ms, (0.5, 0.99))
            + f" ({len(run.latencies_ms):,} deltas"
            + (f", {run.unmatched:,} not seen by the tap)" if run.unmatched else ")"),
        ),
        ("WS trades: batch start -> client, p50 / p99 / max", _ms(trade_lags, (0.5, 0.99))),
        (
            "WS messages delivered",
            f"{sum(delivered.values()) / seconds:,.0f}/s ("
            + ", ".join(f"{k} {v:,}" for k, v in delivered.most_common())
            + ")",
        ),
        (
            "WS deltas delivered / held x published",
            f"{100 * deltas / max(1, held * run.published):.1f}%;"
            f" gaps {sum(w.gaps for w in run.windows):,},"
            f" resyncs {sum(w.resyncs for w in run.windows):,}",
        ),
        (
            "WS connections held / dropped",
            f"{held:,} of {subscribers:,} held at the end / dropped: {_by_code(closed)} closed"
            f" in the run, {_by_code(failed)} failed to open",
        ),
        (
            "errors (answers not 201)",
            f"{sum(errors.values()):,}"
            f" (5xx: {sum(v for k, v in errors.items() if k.startswith('HTTP 5')):,})",
        ),
    ]
    rows += [(f"  {key}", f"{count:,}") for key, count in errors.most_common()]
    rows += [
        ("stack quiet and journal drained, after the answers", f"{drained:.1f} s"),
        (
            "celery tasks run (since the worker started)",
            ", ".join(f"{name} {n:,}" for name, n in sorted(tasks.items())) or "none",
        ),
        ("errors in the stack's log during the run", f"{len(problems):,}"),
    ]
    rows += [("", line[:160]) for line in problems[:10]]
    width = max(len(label) for label, _ in rows)
    print(f"\n  {'figure':<{width}}  value")
    for label, value in rows:
        print(f"  {label:<{width}}  {value}")
    print("\n".join(run.meter.lines()), flush=True)


def report_checks(checks: Sequence[Check]) -> None:
    print("\nbooks proved on the bench database after the run:")
    for check in checks:
        print(f"  manage.py {check.command}: {'passed' if check.passed else 'FAILED'}")
        lines = check.output.splitlines()
        if len(lines) > 30:  # a traceback: its end says what went wrong
            lines = ["...", *lines[-30:]]
        for line in lines:
            print(f"    {line}")


# --- main ------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180, help="length of the run")
    parser.add_argument("--rate", type=float, default=100, help="signed orders/s offered")
    parser.add_argument(
        "--grace",
        type=float,
        default=30,
        help="seconds after the run before orders still unanswered are given up",
    )
    parser.add_argument("--clients", type=int, default=32, help="HTTP keep-alive connections")
    parser.add_argument("--client-procs", type=int, default=2, help="HTTP client processes")
    parser.add_argument("--subscribers", type=int, default=1_000, help="WebSocket subscribers")
    parser.add_argument("--ws-procs", type=int, default=2, help="WebSocket client processes")
    parser.add_argument("--web-workers", type=int, default=2, help="uvicorn --workers")
    parser.add_argument("--celery-concurrency", type=int, default=2)
    parser.add_argument(
        "--beat",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run Celery beat in the worker (the periodic tasks)",
    )
    parser.add_argument("--traders", type=int, default=64)
    parser.add_argument("--redis-db", type=int, default=15)
    parser.add_argument("--db-pool", type=int, default=16, help="DB_POOL_MAX_SIZE per web process")
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="more environment for the web, matcher and worker processes (repeatable)",
    )
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    redis_url = with_redis_db(os.environ["REDIS_URL"], args.redis_db)
    if args.redis_db == redis_db_of(os.environ["REDIS_URL"]):
        raise SystemExit(f"--redis-db {args.redis_db} is the configured Redis database")
    redis_claim(redis_url)
    os.environ["REDIS_URL"] = redis_url  # this process too: the configured one is not touched
    setup_django()
    from django.db import connection

    configured, database = bench_database_create(DATABASE_SUFFIX)
    stack = worker = subscribers = http = None
    workdir = Path(tempfile.mkdtemp(prefix="dex-bench-system-"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            version = cursor.fetchone()[0]
        print(
            f"PostgreSQL {version}, database {database} (created for this run), Redis"
            f" {redis_url}; {os.cpu_count()} CPUs, load average"
            f" {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            flush=True,
        )
        traders = seed(traders=args.traders, seed_=args.seed)
        rng = random.Random(args.seed)
        warm = order_bodies(rng, traders, WARMUP_ORDERS, "warm")
        bodies = order_bodies(rng, traders, int(args.rate * args.seconds), "sys")
        print(f"signing {len(warm) + len(bodies):,} orders (EIP-712) ...", flush=True)
        connection.close()  # the pool forks: no child may share this connection
        t0 = time.perf_counter()
        signed_warm = sign_all(traders, warm, os.cpu_count() or 2)
        signed = sign_all(traders, bodies, os.cpu_count() or 2)
        print(f"  signed in {time.perf_counter() - t0:.1f}s", flush=True)

        env = dict(
            os.environ,
            DATABASE_URL=with_database(os.environ["DATABASE_URL"], database),
            REDIS_URL=redis_url,
            DEBUG="0",
            PYTHONUNBUFFERED="1",
            **RATE_LIMIT_ENV,
        )
        for follows_redis_url in ("API_RATE_LIMIT_REDIS_URL", "CELERY_BROKER_URL"):
            env.pop(follows_redis_url, None)  # the bench's Redis database, not another
        env.update(item.split("=", 1) for item in args.server_env)
        web_env = dict(env, ASGI_THREADS="32", DB_POOL_MAX_SIZE=str(args.db_pool))
        log = workdir / "stack.log"
        stack_args = SimpleNamespace(ws="websockets-sansio", web_workers=args.web_workers)
        stack = ws.stack_start(env, web_env, stack_args, log, None)
        worker = worker_start(
            env, log, concurrency=args.celery_concurrency, beat=args.beat, workdir=workdir
        )
        ws.stack_wait_healthy(stack)
        # /readyz: PostgreSQL, Redis, the matcher and a Celery worker.
        wait_until_ok(f"http://127.0.0.1:{stack.port}/readyz", [*stack.processes(), worker], log)
        print(
            f"stack: uvicorn dex.asgi:application --workers {args.web_workers} (HTTP and"
            f" WebSocket, DB_POOL_MAX_SIZE={args.db_pool}, ASGI_THREADS=32, API rate limits"
            f" raised); run_matcher; celery worker --concurrency {args.celery_concurrency}"
            f"{' --beat' if args.beat else ''}"
            + "".join(f", {item}" for item in args.server_env)
            + f"; ready at http://127.0.0.1:{stack.port} (log {log})",
            flush=True,
        )

        base_url = f"http://127.0.0.1:{stack.port}"
        subscribers = ws.clients_start(
            args.ws_procs, f"ws://127.0.0.1:{stack.port}/ws/stream/", trades=True, deflate=False
        )
        http = http_clients_start(
            base_url,
            signed_warm,
            signed,
            connections=args.clients,
            procs=args.client_procs,
            rate=args.rate,
        )
        t0 = time.perf_counter()
        held, failed, closed = ws.subscribers_add(subscribers, args.subscribers)
        print(
            f"{held:,} WebSocket subscribers (book.{MARKET} + trades.{MARKET}) in"
            f" {args.ws_procs} process(es), opened in {time.perf_counter() - t0:.1f}s"
            f" (failed to open: {dict(failed) or 0}; closed: {dict(closed) or 0})",
            flush=True,
        )
        print(
            f"load: {args.rate:g} signed orders/s offered open loop over {args.clients}"
            f" connections in {args.client_procs} process(es), for {args.seconds:g}s ...",
            flush=True,
        )
        t0 = time.perf_counter()
        http.warm_up()
        print(
            f"  warmed up with {len(warm):,} orders in {time.perf_counter() - t0:.1f}s", flush=True
        )
        meter = SystemCpuMeter(stack, subscribers, worker, http)
        log_offset = log.stat().st_size
        run = asyncio.run(
            measure_with_tap(http, subscribers, meter, seconds=args.seconds, grace=args.grace)
        )
        drained = drain()
        trades = trades_between(run.http.started, time.time())
        print(
            f"\nsystem under load: {args.seconds:g}s, {args.rate:g} orders/s offered,"
            f" {args.subscribers:,} WebSocket subscribers; {args.web_workers} web workers;"
            f" load average {' '.join(f'{x:.2f}' for x in os.getloadavg())} at the end"
        )
        report(
            run,
            trades=trades,
            drained=drained,
            subscribers=args.subscribers,
            failed=failed,
            tasks=worker_tasks(),
            problems=log_problems(log, log_offset),
        )
        checks = run_checks(env)
        report_checks(checks)
        server_errors = sum(1 for a in run.http.answers if a.status >= 500)
        verdict = [f"{c.command} failed" for c in checks if not c.passed]
        if server_errors:
            verdict.append(f"{server_errors:,} answers were 5xx")
        print(
            "\n" + ("FAILED: " + "; ".join(verdict) if verdict else "passed: no 5xx, books proved")
        )
        return 1 if verdict else 0
    finally:
        if http is not None:
            http.stop()
        if subscribers is not None:
            ws.clients_stop(subscribers)
        if worker is not None:
            worker_stop(worker)
        if stack is not None:
            ws.stack_stop(stack)
        connection.close()
        bench_database_drop(configured)
        with contextlib.suppress(Exception):
            import redis

            redis.Redis.from_url(redis_url).flushdb()


if __name__ == "__main__":
    sys.exit(main())
