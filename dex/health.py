"""Health of the platform, as JSON for load balancers, orchestrators and operators.

``GET /healthz`` checks PostgreSQL, Redis and the matchers — every open or halted
market must have a matcher whose heartbeat is fresh — and answers 200 when every
check passes, 503 otherwise, with each check's result, latency and details.

``GET /readyz`` is the whole platform's readiness, in the same shape:

- **postgres**, **redis**: they answer (each check bounded by
  ``HEALTH_CHECK_TIMEOUT_SECONDS``);
- **matchers**: every open or halted market has a live owner — a session holding the
  market's advisory lock, read from ``pg_locks`` — and its oldest pending command is
  younger than ``READYZ_MAX_COMMAND_AGE_SECONDS`` (a live owner that does not match is
  not ready either);
- **celery**: a worker answers a broadcast ping within the timeout (skipped with
  ``READYZ_CHECK_CELERY=0``).

Every check that reads PostgreSQL does so on a connection of its own, bounded by
``HEALTH_CHECK_TIMEOUT_SECONDS`` from connect to last row (``postgres_read``), never on
the ORM's: that one has no client-side timeout, and a stalled or cut-off server never
applies its ``statement_timeout``, so a probe would hold its request thread for good.
"""

import concurrent.futures
import contextlib
import json
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import psycopg
import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    error: str | None = None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 2)}
        if self.error:
            result["error"] = self.error
        if self.detail:
            result["detail"] = self.detail
        return result


class CheckFailed(Exception):
    def __init__(self, message: str, detail: dict) -> None:
        super().__init__(message)
        self.detail = detail


def _timed(check: Callable[[], dict | None]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = check() or {}
    except CheckFailed as exc:
        return CheckResult(False, (time.perf_counter() - started) * 1000, str(exc), exc.detail)
    except Exception as exc:  # a health check reports every failure, whatever its kind
        return CheckResult(False, (time.perf_counter() - started) * 1000, type(exc).__name__)
    return CheckResult(True, (time.perf_counter() - started) * 1000, detail=detail)


# --- PostgreSQL, bounded -------------------------------------------------------------

# The reads run here while the request waits at most the timeout. A read still waiting
# then has its socket shut, which ends it at once; one still connecting ends with its
# connect_timeout, which libpq will not make shorter than 2 s. The pool caps how many
# such threads a stalled server can hold, and a read that never started is dropped.
_postgres_readers = concurrent.futures.ThreadPoolExecutor(
    max_workers=4, thread_name_prefix="health-pg"
)


class _PostgresRead:
    """One query on a connection of its own, which the waiting thread can cut."""

    def __init__(self, conn_params: dict, timeout: float) -> None:
        # The ORM's connection parameters, without its adapters and cursor class.
        params = {
            key: value
            for key, value in conn_params.items()
            if key not in ("context", "cursor_factory", "prepare_threshold")
        }
        statement_timeout = f"-c statement_timeout={max(1, int(timeout * 1000))}"
        params["options"] = f"{params.get('options', '')} {statement_timeout}".strip()
        params["connect_timeout"] = max(1, math.ceil(timeout))
        params["application_name"] = "dex-health"
        self.params = params
        self.lock = threading.Lock()
        self.conn: psycopg.Connection | None = None
        self.abandoned = False

    def run(self, sql: str, args: Sequence | dict | None) -> list[tuple]:
        conn = psycopg.connect(**self.params, autocommit=True)
        try:
            with self.lock:
                if self.abandoned:
                    return []
                self.conn = conn
            return conn.execute(sql, args).fetchall()
        finally:
            with self.lock:  # so abandon() never shuts a descriptor reused since
                self.conn = None
                conn.close()

    def abandon(self) -> None:
        """Cut the connection of a read nobody waits for any more: its thread's wait
        for the server ends now."""
        with self.lock:
            self.abandoned = True
            if self.conn is not None:
                with (
                    contextlib.suppress(OSError),
                    socket.socket(fileno=os.dup(self.conn.fileno())) as sock,
                ):
                    sock.shutdown(socket.SHUT_RDWR)


def postgres_read(sql: str, args: Sequence | dict | None = None) -> list[tuple]:
    """The rows of one query, or ``CheckFailed`` once ``HEALTH_CHECK_TIMEOUT_SECONDS``
    have passed without them (connecting included)."""
    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    read = _PostgresRead(connection.get_connection_params(), timeout)
    future = _postgres_readers.submit(read.run, sql, args)
    try:
        return future.result(timeout=timeout)
    except concurrent.futures.TimeoutError:
        future.cancel()
        read.abandon()
        raise CheckFailed(f"PostgreSQL did not answer within {timeout:g}s", {}) from None


def check_postgres() -> None:
    postgres_read("SELECT 1")


_redis_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _redis_clients.get(url)
    if client is None:
        timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        _redis_clients[url] = client
    return client


def check_redis() -> None:
    _redis().ping()


def check_matchers() -> dict:
    """Each trading market's matcher: who owns it and how long since its heartbeat
    (it beats every second and the key lapses after ten)."""
    from exchange.matcher.runner import heartbeat_key
    from exchange.models import MarketStatus

    rows = postgres_read(
        "SELECT symbol FROM exchange_market WHERE status = ANY(%s) ORDER BY symbol",
        [[MarketStatus.OPEN.value, MarketStatus.HALTED.value]],
    )
    symbols = [symbol for (symbol,) in rows]
    beats = _redis().mget([heartbeat_key(s) for s in symbols]) if symbols else []
    now = time.time()
    detail, missing = {}, []
    for symbol, beat in zip(symbols, beats, strict=True):
        if beat is None:
            missing.append(symbol)
            detail[symbol] = {"owner": None}
            continue
        beat = json.loads(beat)
        detail[symbol] = {"owner": beat["owner"], "heartbeat_age_s": round(now - beat["at"], 2)}
    if missing:
        raise CheckFailed(f"no live matcher for {', '.join(missing)}", detail)
    return detail


CHECKS: dict[str, Callable[[], dict | None]] = {
    "postgres": check_postgres,
    "redis": check_redis,
    "matchers": check_matchers,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results = {name: _timed(check) for name, check in CHECKS.items()}
    healthy = all(result.ok for result in results.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "checks": {name: result.as_dict() for name, result in results.items()},
        },
        status=200 if healthy else 503,
    )


# --- readiness -------------------------------------------------------------------------


# Each trading market with the backend that holds its advisory lock (the matcher's lock
# session, see exchange.matcher.runner) and the age of its oldest pending command.
_MATCHER_OWNERS = """
SELECT m.symbol,
       l.pid,
       extract(epoch FROM clock_timestamp() - (
           SELECT c.created_at FROM exchange_ordercommand c
            WHERE c.market_id = m.id AND c.status = %(pending)s
            ORDER BY c.id LIMIT 1))
  FROM exchange_market m
  LEFT JOIN pg_locks l
         ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
        AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
        AND l.classid = %(namespace)s::oid AND l.objid = m.id::oid
 WHERE m.status = ANY(%(statuses)s)
 ORDER BY m.symbol
"""


def check_matchers_owned() -> dict:
    """Each trading market's owner (the lock session's backend pid) and how long its
    oldest pending command has waited."""
    from exchange.matcher.runner import LOCK_NAMESPACE
    from exchange.models import CommandStatus, MarketStatus

    rows = postgres_read(
        _MATCHER_OWNERS,
        {
            "pending": CommandStatus.PENDING.value,
            "namespace": LOCK_NAMESPACE,
            "statuses": [MarketStatus.OPEN.value, MarketStatus.HALTED.value],
        },
    )
    limit = settings.READYZ_MAX_COMMAND_AGE_SECONDS
    detail, problems = {}, []
    for symbol, owner_pid, oldest in rows:
        oldest = None if oldest is None else round(float(oldest), 3)
        detail[symbol] = {"owner_pid": owner_pid, "oldest_pending_s": oldest}
        if owner_pid is None:
            problems.append(f"{symbol} has no matcher")
        elif oldest is not None and oldest > limit:
            problems.append(f"{symbol} has a command pending for {oldest:g}s")
    if problems:
        raise CheckFailed("; ".join(problems), detail)
    return detail


# One thread pings Celery, so a broker that hangs costs the request only the timeout.
_celery_pinger = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="readyz")


def check_celery() -> dict:
    """A worker answers a broadcast ping (the first answer ends the wait)."""
    from dex.celery import app

    timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
    future = _celery_pinger.submit(app.control.ping, timeout=timeout, limit=1)
    try:
        replies = future.result(timeout=timeout + 0.5)
    except concurrent.futures.TimeoutError:
        raise CheckFailed("the Celery broker did not answer", {}) from None
    workers = sorted(name for reply in replies for name in reply)
    if not workers:
        raise CheckFailed(f"no Celery worker answered within {timeout:g}s", {})
    return {"workers": workers}


def readiness_checks() -> dict[str, Callable[[], dict | None]]:
    checks: dict[str, Callable[[], dict | None]] = {
        "postgres": check_postgres,
        "redis": check_redis,
        "matchers": check_matchers_owned,
    }
    if settings.READYZ_CHECK_CELERY:
        checks["celery"] = check_celery
    return checks


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    results = {name: _timed(check) for name, check in readiness_checks().items()}
    ready = all(result.ok for result in results.values())
    return JsonResponse(
        {
            "status": "ready" if ready else "unavailable",
            "checks": {name: result.as_dict() for name, result in results.items()},
            "failing": sorted(name for name, result in results.items() if not result.ok),
        },
        status=200 if ready else 503,
    )
