"""The matcher process: owns markets by PostgreSQL advisory lock and runs their batches.

Each market is owned through a session-level advisory lock held on a dedicated
connection. A second matcher for the same market blocks on nothing: it retries the
lock every poll and takes over — rebuilding the book from the database — the moment
the owner's connection closes (the owner died). Before every round of batches the
matcher proves its lock session is still alive (and so still holds its locks), so a
matcher that lost its locks (a network partition, a restarted database) stops before
writing another batch.

The loop sleeps on LISTEN (woken by the journal's NOTIFY trigger) and polls, so a
lost notification costs at most one poll interval.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import select
import socket
import threading
import time

import psycopg
from django.conf import settings
from django.db import connection

from exchange.matcher.market import BATCH_LIMIT, MarketMatcher
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
        self.stop = threading.Event()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"

    def markets(self) -> list[Market]:
        markets = Market.objects.order_by("pk")
        return list(markets.filter(symbol__in=self.symbols) if self.symbols else markets)

    def run(self) -> None:
        self.publisher = Publisher()
        try:
            self._run()
        finally:
            self.publisher.stop()

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
                publish_snapshot(matcher)
                _freeze_long_lived()

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
                log.error("matcher %s lost its markets; stopping", self.identity)
                raise
        for market_id, matcher in list(self.owned.items()):
            try:
                result = matcher.run_batch(limit=self.batch_limit)
            except Exception:
                # The batch rolled back and the book was rebuilt from the database (or
                # will be, once it answers again): back off and try again, rather than
                # take every market of this process down with it.
                failures = self.failures.get(market_id, 0) + 1
                self.failures[market_id] = failures
                log.exception(
                    "market %s: batch failed (%d in a row)", matcher.market.symbol, failures
                )
                connection.close_if_unusable_or_obsolete()
                time.sleep(min(5.0, 0.05 * 2**failures))
                continue
            self.failures.pop(market_id, None)
            if result.commands or result.orders:
                self.publisher.submit(outbox_build(matcher, result))
                busy = busy or result.commands >= self.batch_limit
                _freeze_long_lived()
        return busy

    def _wait(self, lock_conn: psycopg.Connection) -> None:
        readable, _, _ = select.select([lock_conn.fileno()], [], [], self.poll_interval)
        if readable:
            for _ in lock_conn.notifies(timeout=0, stop_after=10_000):
                pass

    def _heartbeat(self) -> None:
        client = redis_client()
        now = time.time()
        for matcher in self.owned.values():
            client.set(
                heartbeat_key(matcher.market.symbol),
                json.dumps({"owner": self.identity, "at": now, "sequence": matcher.sequence}),
                ex=HEARTBEAT_TTL_SECONDS,
            )


def _freeze_long_lived() -> None:
    """Keep the books out of the cycle collector's full passes (a pass over a book of
    300,000 orders costs ~0.4 s). The young generations are collected first, so the
    batch's own cyclic garbage is freed, not frozen; frozen objects are still freed by
    reference counting when the book lets go of them."""
    gc.collect(1)
    gc.freeze()
