"""The matcher process: owns markets by PostgreSQL advisory lock and runs their batches.

Each market is owned through a session-level advisory lock held on a dedicated
connection. A second matcher for the same market blocks on nothing: it retries the
lock every poll and takes over — rebuilding the book from the database — the moment
the owner's connection closes (the owner died). Before every round of batches the
matcher proves its lock session is still alive (and so still holds its locks), so a
matcher that lost its locks (a network partition, a restarted database) stops before
writing another batch, drops its books and stands by until the database answers again.
Redis is not needed to match: without it the matcher goes on committing batches and
publishes again (a whole snapshot with every batch) once it is back.

The loop sleeps on LISTEN (woken by the journal's NOTIFY trigger) and polls, so a
lost notification costs at most one poll interval.

Metrics (``dex.metrics``) are served on ``MATCHER_METRICS_PORT``: each committed batch
observes its size, each command (from the publishing thread) its latency from creation
to the batch's commit; the book depth gauges follow the heartbeat, once a second. Each
commit is one log line naming the request ids of the commands it applied.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import socket
import sys
import threading
import time

import psycopg
import redis
from django.conf import settings
from django.db import DatabaseError, connection

from dex.metrics import (
    BOOK_LEVELS,
    BOOK_QUANTITY,
    MATCHER_BATCH_FAILURES,
    MATCHER_BATCH_SIZE,
    MATCHER_SEQUENCE,
    TRADES,
    matcher_metrics_serve,
)
from exchange.matcher.market import BATCH_LIMIT, BatchResult, MarketMatcher
from exchange.matcher.publish import Publisher, outbox_build, publish_snapshot, redis_client
from exchange.models import MATCHER_CHANNEL, Market

log = logging.getLogger("exchange.matcher")

LOCK_NAMESPACE = 0x4D41  # "MA": the advisory-lock class of market ownership
HEARTBEAT_TTL_SECONDS = 10


class LostLock(RuntimeError):
    pass


def _conninfo() -> dict:
    db = settings.DATABASES["default"]
    info = {"dbname": db["NAME"], "user": db["USER"], "autocommit": True}
    host = db.get("HOST") or db.get("OPTIONS", {}).get("host")
    if host:
        info["host"] = host
    if db.get("PORT"):
        info["port"] = db["PORT"]
    if db.get("PASSWORD"):
        info["password"] = db["PASSWORD"]
    info["application_name"] = "dex-matcher-lock"
    return info


def heartbeat_key(symbol: str) -> str:
    return f"dex:matcher:{symbol}"


class Runner:
    def __init__(
        self,
        symbols: list[str] | None = None,
        *,
        poll_interval: float = 0.2,
        batch_limit: int = BATCH_LIMIT,
    ) -> None:
        self.symbols = symbols
        self.poll_interval = poll_interval
        self.batch_limit = batch_limit
        self.owned: dict[int, MarketMatcher] = {}
        self.failures: dict[int, int] = {}
        # A market whose batch failed for a reason that retrying at once would repeat (a
        # lost or busy database, a sweep that cannot be persisted) waits until then; the
        # other markets of the process do not wait with it.
        self.not_before: dict[int, float] = {}
        self.stalls: dict[int, int] = {}
        self.stop = threading.Event()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def markets(self) -> list[Market]:
        markets = Market.objects.order_by("pk")
        return list(markets.filter(symbol__in=self.symbols) if self.symbols else markets)

    def run(self) -> None:
        matcher_metrics_serve(settings.MATCHER_METRICS_PORT, settings.MATCHER_METRICS_ADDR)
        self.publisher = Publisher()
        try:
            self._run_until_stopped()
        finally:
            self.publisher.stop()

    def _run_until_stopped(self) -> None:
        """Run; when the database goes away (the lock session with it, and so every
        market lock), drop the books and stand by again until it answers: the books
        are rebuilt from PostgreSQL by whichever matcher takes each market next."""
        outages = 0
        while not self.stop.is_set():
            try:
                self._run()
                return
            except (LostLock, psycopg.OperationalError, DatabaseError) as exc:
                outages += 1
                released = ", ".join(m.market.symbol for m in self.owned.values()) or "none"
                log.error(
                    "matcher %s lost its database session (%s); markets released: %s; standing by",
                    self.identity,
                    exc,
                    released,
                )
                self.owned.clear()
                self.failures.clear()
                self.not_before.clear()
                self.stalls.clear()
                connection.close()
                self.stop.wait(min(5.0, 0.25 * 2**outages))

    def _run(self) -> None:
        with psycopg.connect(**_conninfo()) as lock_conn:
            lock_conn.execute(f"LISTEN {MATCHER_CHANNEL}")
            self.lock_conn = lock_conn
            self.lock_pid = lock_conn.info.backend_pid
            log.info("matcher %s started (lock session %s)", self.identity, self.lock_pid)
            wanted = self.markets()
            last_beat = 0.0
            while not self.stop.is_set():
                self._acquire(lock_conn, wanted)
                busy = self._run_owned()
                if time.monotonic() - last_beat > 1:
                    self._heartbeat()
                    self._book_gauges()
                    last_beat = time.monotonic()
                if not busy:
                    self._wait(lock_conn)
            log.info("matcher %s stopping", self.identity)

    def _acquire(self, lock_conn: psycopg.Connection, wanted: list[Market]) -> None:
        for market in wanted:
            if market.pk in self.owned:
                continue
            got = lock_conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", [LOCK_NAMESPACE, market.pk]
            ).fetchone()[0]
            if got:
                log.info(
                    "matcher %s now owns %s; rebuilding its book", self.identity, market.symbol
                )
                matcher = MarketMatcher(market)
                self.owned[market.pk] = matcher
                try:
                    publish_snapshot(matcher)
                except redis.RedisError as exc:
                    # Every batch publishes the whole book again once Redis is back.
                    log.warning("market %s: snapshot not published: %s", market.symbol, exc)
                freeze_long_lived()

    def _fence(self) -> None:
        """While the lock session lives it holds every market lock it took (a session's
        advisory locks end with it), so a round trip on that session proves them all.
        Asking pg_locks instead cost milliseconds a batch on a busy server."""
        try:
            self.lock_conn.execute("SELECT 1")
        except psycopg.Error as exc:
            raise LostLock(f"lock session {self.lock_pid} is gone: {exc}") from exc

    def _run_owned(self) -> bool:
        busy = False
        if self.owned:
            try:
                self._fence()
            except LostLock:
                log.error("matcher %s lost its lock session; releasing its markets", self.identity)
                raise
        for market_id, matcher in list(self.owned.items()):
            if self.not_before.get(market_id, 0.0) > time.monotonic():
                continue
            try:
                result = matcher.run_batch(limit=self.batch_limit)
            except Exception:
                # The batch rolled back and the book was rebuilt from the database (or
                # will be, once it answers again). The market tries again — at once when
                # its next batch differs (its commands one at a time), else after a
                # growing pause — rather than take every market of this process down
                # with it.
                failures = self.failures.get(market_id, 0) + 1
                self.failures[market_id] = failures
                MATCHER_BATCH_FAILURES.labels(matcher.market.symbol).inc()
                log.exception(
                    "market %s: batch failed (%d in a row)", matcher.market.symbol, failures
                )
                connection.close_if_unusable_or_obsolete()
                if matcher.retry_now:
                    busy = True
                else:
                    stalls = self.stalls.get(market_id, 0) + 1
                    self.stalls[market_id] = stalls
                    self.not_before[market_id] = time.monotonic() + min(5.0, 0.05 * 2**stalls)
                continue
            self.failures.pop(market_id, None)
            self.stalls.pop(market_id, None)
            self.not_before.pop(market_id, None)
            if result.commands or result.orders:
                _committed(matcher, result)
                self.publisher.submit(outbox_build(matcher, result))
                busy = busy or result.commands >= self.batch_limit
                freeze_long_lived()
        return busy

    def _wait(self, lock_conn: psycopg.Connection) -> None:
        timeout = self.poll_interval
        if self.not_before:  # wake for the first market due to try again
            timeout = max(0.0, min(timeout, min(self.not_before.values()) - time.monotonic()))
        readable, _, _ = select.select([lock_conn.fileno()], [], [], timeout)
        if readable:
            for _ in lock_conn.notifies(timeout=0, stop_after=10_000):
                pass

    def _heartbeat(self) -> None:
        """Tell readers (health checks, the admin) who owns each market. Ownership itself
        is the advisory lock: without Redis the matcher goes on matching."""
        client = redis_client()
        now = time.time()
        try:
            for matcher in self.owned.values():
                client.set(
                    heartbeat_key(matcher.market.symbol),
                    json.dumps({"owner": self.identity, "at": now, "sequence": matcher.sequence}),
                    ex=HEARTBEAT_TTL_SECONDS,
                )
        except redis.RedisError as exc:
            log.warning("matcher %s: heartbeat not written: %s", self.identity, exc)

    def _book_gauges(self) -> None:
        for matcher in self.owned.values():
            symbol, units = matcher.market.symbol, matcher.units
            # Every level: sizes summed in lots, converted once.
            for side, levels in zip(("bids", "asks"), matcher.book.depth(sys.maxsize), strict=True):
                BOOK_LEVELS.labels(symbol, side).set(len(levels))
                BOOK_QUANTITY.labels(symbol, side).set(
                    float(units.lots_to_qty(sum(quantity for _, quantity in levels)))
                )


def _committed(matcher: MarketMatcher, result: BatchResult) -> None:
    """A batch has committed: its metrics and its log line. (Its commands' latencies are
    observed by the publishing thread: see ``publish.outbox_send``.)"""
    symbol = matcher.market.symbol
    MATCHER_SEQUENCE.labels(symbol).set(matcher.sequence)
    if result.trades:
        TRADES.labels(symbol).inc(len(result.trades))
    if not result.commands:
        return
    MATCHER_BATCH_SIZE.labels(symbol).observe(result.commands)
    log.info(
        "market %s: committed sequences %d-%d: %d commands, %d trades",
        symbol,
        result.first_sequence,
        result.sequence,
        result.commands,
        len(result.trades),
        extra={
            "market": symbol,
            "first_sequence": result.first_sequence,
            "sequence": result.sequence,
            "request_ids": [c.request_id for c in result.applied if c.request_id],
        },
    )


def freeze_long_lived() -> None:
    """Keep the books out of the cycle collector's full passes (a pass over a book of
    300,000 orders costs ~0.4 s). The young generations are collected first, so the
    batch's own cyclic garbage is freed, not frozen; frozen objects are still freed by
    reference counting when the book lets go of them."""
    gc.collect(1)
    gc.freeze()
