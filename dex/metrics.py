"""Every Prometheus metric of the platform, defined in one place.

Each long-running process exposes what it owns (no multiprocess mode, nothing shared
between processes):

- **web** (``uvicorn``): ``GET /metrics`` — order acceptance, rate-limit refusals and
  WebSocket connections counted in the process, plus values read when Prometheus scrapes
  (``ScrapeCollector``): the Celery broker's queue lengths in Redis and the last ledger
  check. Run one web process per port (as the Procfile does) and scrape each.
- **matcher** (``run_matcher``): its own HTTP endpoint on ``MATCHER_METRICS_PORT``
  (``matcher_metrics_serve``) — batch sizes, command-to-commit latency, trades and book
  depth of the markets it owns.

Only counters, gauges and histograms are touched on the hot paths (a few hundred
nanoseconds each, no I/O): what needs PostgreSQL or Redis is read at scrape time.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Iterator

import redis
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)

# A ``*_created`` series beside every counter and histogram only doubles what is scraped.
disable_created_metrics()

# --- web: the order path ---------------------------------------------------------------

ORDERS_ACCEPTED = Counter(
    "dex_orders_accepted",
    "Orders accepted by the order service (written with their PLACE command).",
    ["market"],
)
ORDERS_REJECTED = Counter(
    "dex_orders_rejected",
    "Orders the order service refused, by market and refusal code.",
    ["market", "code"],
)
RATE_LIMITED = Counter(
    "dex_rate_limited",
    "API requests refused with 429, by rate-limit scope and the bucket that refused.",
    ["scope", "bucket"],
)

# --- web: WebSocket streams -----------------------------------------------------------

WS_CONNECTIONS = Gauge("dex_ws_connections", "WebSocket connections open in this process.")
# Every socket times one send in this many (its first, then every 16th): the fan-out of a
# delta to thousands of sockets is the stream's hot path.
WS_SEND_SAMPLE_EVERY = 16
WS_SEND_LATENCY = Histogram(
    "dex_ws_send_latency_seconds",
    "From a message queued for a socket to its hand-over to the server (queue wait "
    "included: a slow reader shows here first); one send in 16 per socket is timed.",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

WS_DELTAS_COALESCED = Counter(
    "dex_ws_deltas_coalesced",
    "Messages (book deltas, and trades messages between them) merged into the one "
    "before them by a web process's market hub, which hands on a run of a market's "
    "messages read in one go as one delta and one trades message (exchange.streams_hub).",
)

# --- matcher ---------------------------------------------------------------------------

MATCHER_BATCH_SIZE = Histogram(
    "dex_matcher_batch_commands",
    "Commands applied per committed matcher batch.",
    ["market"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
MATCHER_COMMAND_LATENCY = Histogram(
    "dex_matcher_command_latency_seconds",
    "From a command's created_at (the placing transaction) to the commit of the matcher "
    "batch that applied it.",
    ["market"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
MATCHER_BATCH_FAILURES = Counter(
    "dex_matcher_batch_failures", "Matcher batches that rolled back.", ["market"]
)
MATCHER_COMMANDS_REFUSED = Counter(
    "dex_matcher_commands_refused",
    "Commands the matcher marked done unapplied (UNPROCESSABLE): each failed every batch "
    "of its own. Alert on any.",
    ["market", "kind"],
)
TRADES = Counter("dex_trades", "Trades executed and committed by the matcher.", ["market"])
MATCHER_SEQUENCE = Gauge(
    "dex_matcher_sequence", "The market's journal sequence the matcher has reached.", ["market"]
)
BOOK_LEVELS = Gauge("dex_book_levels", "Price levels in the book.", ["market", "side"])
BOOK_QUANTITY = Gauge(
    "dex_book_quantity", "Visible quantity resting in the book, in base units.", ["market", "side"]
)

# Summaries the staff metrics page draws (``metrics_summary``), by metric family name.
PAGE_COUNTERS = {
    "orders_accepted": "dex_orders_accepted",
    "orders_rejected": "dex_orders_rejected",
    "trades": "dex_trades",
    "rate_limited": "dex_rate_limited",
}
PAGE_HISTOGRAMS = {
    "batch_size": "dex_matcher_batch_commands",
    "command_latency": "dex_matcher_command_latency_seconds",
    "ws_send_latency": "dex_ws_send_latency_seconds",
}
PAGE_GAUGES = {
    "ws_connections": "dex_ws_connections",
    "celery_queue_length": "dex_celery_queue_length",
}


# --- read at scrape time (web) ---------------------------------------------------------

LEDGER_CHECK_KEY = "dex:ledger-check:last"


def ledger_check_record(*, problems: int, at: float | None = None) -> None:
    """Remember the outcome of a ``ledger_check`` run for ``/metrics`` (best effort: the
    check's own exit status is what counts)."""
    from dex.redis import redis_client

    try:
        redis_client().set(
            LEDGER_CHECK_KEY, json.dumps({"problems": problems, "at": at or time.time()})
        )
    except Exception:  # a lost metric must not fail the check that produced it
        log.warning("could not record the ledger check's result", exc_info=True)


# Prometheus gives up on a scrape after 10 s by default, and with it every metric of the
# process: a Redis that hangs may cost the scrape's two reads a short timeout each.
SCRAPE_REDIS_TIMEOUT_SECONDS = 1.0
_scrape_clients: dict[str, redis.Redis] = {}


def _scrape_redis() -> redis.Redis:
    """The scrape's Redis client: short timeouts and no retries."""
    from django.conf import settings

    url = settings.REDIS_URL
    client = _scrape_clients.get(url)
    if client is None:
        client = _scrape_clients[url] = redis.Redis.from_url(
            url,
            socket_timeout=SCRAPE_REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=SCRAPE_REDIS_TIMEOUT_SECONDS,
            retry=None,
        )
    return client


class ScrapeCollector(Collector):
    """Values read from Redis when Prometheus scrapes the web process: the broker's queue
    lengths and the last ledger check. A value that cannot be read is left out (and
    ``dex_scrape_error`` says which), never a failed scrape."""

    def describe(self) -> list:
        # Nothing to declare up front, so registering does not read Redis.
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from django.conf import settings

        errors = GaugeMetricFamily(
            "dex_scrape_error", "1 when the source could not be read.", labels=["source"]
        )
        client = _scrape_redis()
        queues = GaugeMetricFamily(
            "dex_celery_queue_length",
            "Messages waiting in the Celery broker queue.",
            labels=["queue"],
        )
        try:
            pipe = client.pipeline(transaction=False)
            for queue in settings.METRICS_CELERY_QUEUES:
                pipe.llen(queue)
            for queue, length in zip(settings.METRICS_CELERY_QUEUES, pipe.execute(), strict=True):
                queues.add_metric([queue], length)
            errors.add_metric(["celery_queues"], 0)
            yield queues
        except Exception:
            errors.add_metric(["celery_queues"], 1)
        try:
            raw = client.get(LEDGER_CHECK_KEY)
            errors.add_metric(["ledger_check"], 0)
            if raw is not None:
                last = json.loads(raw)
                yield GaugeMetricFamily(
                    "dex_ledger_check_ok",
                    "1 when the last ledger_check run found no difference.",
                    value=1 if last["problems"] == 0 else 0,
                )
                yield GaugeMetricFamily(
                    "dex_ledger_check_problems",
                    "Differences the last ledger_check run found.",
                    value=last["problems"],
                )
                yield GaugeMetricFamily(
                    "dex_ledger_check_age_seconds",
                    "Seconds since the last ledger_check run.",
                    value=max(0.0, time.time() - last["at"]),
                )
        except Exception:
            errors.add_metric(["ledger_check"], 1)
        yield errors


_scrape_collector: ScrapeCollector | None = None


def web_registry() -> CollectorRegistry:
    """The web process's registry, with the scrape-time collector registered once."""
    global _scrape_collector
    if _scrape_collector is None:
        _scrape_collector = ScrapeCollector()
        REGISTRY.register(_scrape_collector)
    return REGISTRY


# --- the matcher's endpoint ------------------------------------------------------------


def matcher_metrics_serve(port: int, addr: str = "127.0.0.1") -> bool:
    """Serve this process's metrics on ``addr:port`` from a daemon thread; False (and a
    warning) when the port is taken: trading goes on without metrics."""
    if not port:
        return False
    try:
        start_http_server(port, addr=addr)
    except OSError as exc:
        log.warning("matcher metrics not served on %s:%s: %s", addr, port, exc)
        return False
    log.info("matcher metrics on http://%s:%s/metrics", addr, port)
    return True


def book_depth_set(symbol: str, side: str, levels: Iterable[tuple[object, object]]) -> None:
    """The book depth gauges of one side from (price, quantity) levels."""
    count, total = 0, 0.0
    for _, quantity in levels:
        count += 1
        total += float(quantity)
    BOOK_LEVELS.labels(symbol, side).set(count)
    BOOK_QUANTITY.labels(symbol, side).set(total)


# --- the staff metrics page ------------------------------------------------------------


def metrics_summary(expositions: Iterable[str]) -> dict:
    """The page's figures, summed over every process's exposition (text format):
    counter totals, histogram buckets (cumulative, by upper bound) and gauges. The page
    turns two summaries into rates and quantiles, as Prometheus' ``rate`` and
    ``histogram_quantile`` would."""
    counter_of = {f"{family}_total": key for key, family in PAGE_COUNTERS.items()}
    histogram_of = {
        f"{family}{suffix}": (key, suffix)
        for key, family in PAGE_HISTOGRAMS.items()
        for suffix in ("_bucket", "_count", "_sum")
    }
    gauge_of = {family: key for key, family in PAGE_GAUGES.items()}
    counters = dict.fromkeys(PAGE_COUNTERS, 0.0)
    rejected: dict[str, float] = {}
    gauges = dict.fromkeys(PAGE_GAUGES, 0.0)
    queues: dict[str, float] = {}
    histograms = {key: {"buckets": {}, "count": 0.0, "sum": 0.0} for key in PAGE_HISTOGRAMS}
    samples = (
        sample
        for text in expositions
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    )
    for sample in samples:
        name, labels, value = sample.name, sample.labels, sample.value
        if name in counter_of:
            key = counter_of[name]
            counters[key] += value
            if key == "orders_rejected":
                code = labels.get("code", "")
                rejected[code] = rejected.get(code, 0.0) + value
        elif name in histogram_of:
            key, suffix = histogram_of[name]
            histogram = histograms[key]
            if suffix == "_bucket":
                bound = float(labels["le"])
                histogram["buckets"][bound] = histogram["buckets"].get(bound, 0.0) + value
            else:
                histogram[suffix[1:]] += value
        elif name in gauge_of:
            key = gauge_of[name]
            gauges[key] += value
            if key == "celery_queue_length":
                queue = labels.get("queue", "")
                queues[queue] = queues.get(queue, 0.0) + value
    for histogram in histograms.values():
        # JSON has no infinity: the last bucket's bound is written as null.
        histogram["buckets"] = [
            [None if bound == float("inf") else bound, count]
            for bound, count in sorted(histogram["buckets"].items())
        ]
    return {
        "counters": counters,
        "rejected_by_code": rejected,
        "histograms": histograms,
        "gauges": gauges,
        "queues": queues,
    }
