"""A real Celery worker process (``celery -A dex worker``, as the Procfile starts it)
takes market-data tasks from Redis and writes to PostgreSQL; the same tasks sent again
are taken, succeed and change nothing."""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from dex.logging import request_id_bound
from dex.redis import redis_client
from exchange import tasks
from exchange.matcher.publish import book_key
from exchange.models import Candle, OrderBookSnapshot
from exchange.services.market_data import period_start
from tests.factories import AssetFactory, MarketFactory
from tests.live import REPO, process_env, stop
from tests.trades import trade_at

pytestmark = pytest.mark.django_db(transaction=True)


@contextlib.contextmanager
def _worker(tmp_path, **env: str):
    queue = f"dex-test-{secrets.token_hex(4)}"
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "dex", "worker", "-Q", queue,
             "--loglevel", "INFO", "--concurrency", "1", "--pool", "solo",
             "--without-gossip", "--without-mingle", "--without-heartbeat"],
            cwd=REPO,
            env=process_env(**env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    try:
        yield queue, log.read_text
    finally:
        stop(proc)
        redis_client().delete(queue)


@pytest.fixture
def worker(tmp_path):
    """A worker consuming a queue of its own, so nothing another test left in Redis
    reaches it; yields (queue, log reader)."""
    with _worker(tmp_path) as running:
        yield running


@pytest.fixture
def json_worker(tmp_path):
    """The same, writing the JSON log lines production writes."""
    with _worker(tmp_path, LOG_FORMAT="json") as running:
        yield running


def outcome(read_log, task_id: str, timeout: float = 30) -> str:
    """What the worker logged the task returned (``succeeded in …s: <value>``)."""
    deadline = time.monotonic() + timeout
    pattern = re.compile(rf"\[{task_id}\] succeeded in [0-9.e-]+s: (.*)")
    while time.monotonic() < deadline:
        text = read_log()
        if found := pattern.search(text):
            return found.group(1).strip()
        if f"[{task_id}] raised" in text or f"[{task_id}] retry" in text.lower():
            raise AssertionError(text[-3000:])
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} did not finish:\n{read_log()[-3000:]}")


def test_a_worker_runs_the_market_data_tasks_from_redis_and_a_rerun_changes_nothing(worker):
    queue, read_log = worker
    base = AssetFactory(symbol="B" + secrets.token_hex(3).upper())
    quote = AssetFactory(symbol="Q" + secrets.token_hex(3).upper(), decimals=6)
    market = MarketFactory(base=base, quote=quote)
    minute = datetime(2024, 3, 5, 10, 0, tzinfo=UTC)
    trade_at(market, "100", "1", minute + timedelta(seconds=5))
    trade_at(market, "104", "2", minute + timedelta(seconds=50))
    redis_client().set(
        book_key(market.symbol),
        json.dumps({"symbol": market.symbol, "sequence": 12, "bids": [["99", "1"]], "asks": []}),
    )
    taken_at = period_start(timezone.now(), 60).isoformat()
    try:
        sent = [
            tasks.orderbook_snapshot_take.apply_async((market.pk, taken_at), queue=queue),
            tasks.candles_roll.apply_async((market.pk, "1m"), queue=queue),
        ]
        assert [outcome(read_log, s.id) for s in sent] == ["True", "1"]
        snapshot = list(OrderBookSnapshot.objects.filter(market=market).values_list())
        candles = list(Candle.objects.filter(market=market).values_list())
        assert len(snapshot) == 1
        assert snapshot[0][3] == 99
        assert [(c[5], c[6], c[7], c[8]) for c in candles] == [(100, 104, 100, 104)]

        again = [
            tasks.orderbook_snapshot_take.apply_async((market.pk, taken_at), queue=queue),
            tasks.candles_roll.apply_async((market.pk, "1m"), queue=queue),
        ]
        assert [outcome(read_log, s.id) for s in again] == ["False", "0"]
        assert list(OrderBookSnapshot.objects.filter(market=market).values_list()) == snapshot
        assert list(Candle.objects.filter(market=market).values_list()) == candles
    finally:
        redis_client().delete(book_key(market.symbol))


def test_a_tasks_log_lines_carry_the_id_of_the_request_that_sent_it(json_worker):
    queue, read_log = json_worker
    market = MarketFactory()
    taken_at = period_start(timezone.now(), 60).isoformat()
    with request_id_bound("req-sent-it-1"):
        from_request = tasks.candles_roll.apply_async((market.pk, "1m"), queue=queue)
    unprompted = tasks.orderbook_snapshot_take.apply_async((market.pk, taken_at), queue=queue)
    outcome(read_log, from_request.id)
    outcome(read_log, unprompted.id)

    lines = [json.loads(line) for line in read_log().splitlines() if line.startswith("{")]
    succeeded = {
        task_id: line["request_id"]
        for line in lines
        for task_id in (from_request.id, unprompted.id)
        if f"[{task_id}] succeeded" in line["message"]
    }
    assert succeeded == {
        from_request.id: "req-sent-it-1",
        unprompted.id: f"task-{unprompted.id}",
    }
