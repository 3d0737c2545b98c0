"""Prometheus metrics: who may read /metrics, what the web process counts (orders accepted
and refused, rate-limit refusals, WebSocket connections and sends), what it reads at
scrape time (broker queues, the last ledger check), what a live matcher serves on its
own port (batches, latency, trades, book depth), and the staff page's summary of them."""

import time
import urllib.request
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.core.management import call_command
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from dex.metrics import LEDGER_CHECK_KEY, ledger_check_record, metrics_summary
from dex.redis import redis_client
from exchange.services.orders import OrderRejected
from tests.api_support import Wallet, key_client
from tests.exchange.ws.conftest import connect, request
from tests.factories import place_order
from tests.live import free_port, wait_for
from tests.portfolio import sim

D = Decimal


def sample(name: str, **labels) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics", **headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    return parse(response.content.decode())


def parse(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
def ledger_check_key():
    redis_client().delete(LEDGER_CHECK_KEY)
    yield
    redis_client().delete(LEDGER_CHECK_KEY)


# --- who may read /metrics -------------------------------------------------------------


@pytest.mark.django_db
def test_metrics_answer_localhost_by_default_and_refuse_other_addresses(client):
    assert client.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    refused = client.get("/metrics", REMOTE_ADDR="203.0.113.9")
    assert refused.status_code == 403
    assert refused.json()["code"] == "FORBIDDEN"
    assert b"dex_" not in refused.content


@pytest.mark.django_db
def test_metrics_allow_list_takes_networks_and_ignores_forwarded_for_unless_trusted(
    client, settings
):
    settings.METRICS_ALLOWED_IPS = ["10.0.0.0/8", "2001:db8::/32"]
    assert client.get("/metrics", REMOTE_ADDR="10.20.30.40").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="2001:db8::5").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 403
    forged = {"REMOTE_ADDR": "203.0.113.9", "HTTP_X_FORWARDED_FOR": "10.1.1.1"}
    assert client.get("/metrics", **forged).status_code == 403

    settings.API_TRUSTED_PROXIES = 1
    assert client.get("/metrics", **forged).status_code == 200
    outside = {"REMOTE_ADDR": "10.0.0.2", "HTTP_X_FORWARDED_FOR": "203.0.113.9"}
    assert client.get("/metrics", **outside).status_code == 403  # the proxy is not the caller


@pytest.mark.django_db
def test_metrics_bearer_token_admits_any_address_and_a_wrong_one_does_not(client, settings):
    settings.METRICS_ALLOWED_IPS = []
    assert client.get("/metrics").status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="Bearer anything").status_code == 403

    settings.METRICS_BEARER_TOKEN = "s3cret-scrape-token"
    outside = {"REMOTE_ADDR": "203.0.113.9"}
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-token", **outside)
    assert ok.status_code == 200
    wrong = client.get("/metrics", HTTP_AUTHORIZATION="Bearer s3cret-scrape-tokem", **outside)
    assert wrong.status_code == 403
    assert client.get("/metrics", HTTP_AUTHORIZATION="s3cret-scrape-token").status_code == 403


def test_metrics_only_answer_get(client):
    assert client.post("/metrics").status_code == 405


def test_production_allows_no_address_by_default():
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "dex.settings.production",
        "SECRET_KEY": "x" * 20 + "abcdefghijklmnopqrstuvwxyz0123456789",
        "KYC_DOCUMENT_SALT": "salt-" * 8,
    }
    env.pop("METRICS_ALLOWED_IPS", None)
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from django.conf import settings as s; print(s.METRICS_ALLOWED_IPS)",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "[]"


# --- what the web process counts -------------------------------------------------------


@pytest.mark.django_db
def test_accepted_and_refused_orders_are_counted_by_market_and_code(client, market, buyer):
    symbol = market.symbol
    accepted = sample("dex_orders_accepted_total", market=symbol)
    funds = sample("dex_orders_rejected_total", market=symbol, code="INSUFFICIENT_FUNDS")
    tick = sample("dex_orders_rejected_total", market=symbol, code="PRICE_OFF_TICK")

    order = place_order(buyer, market, "BUY", "1", "100")
    place_order(buyer, market, "BUY", "1", "100", client_order_id=order.client_order_id)
    with pytest.raises(OrderRejected):
        place_order(buyer, market, "BUY", "1000", "100")
    with pytest.raises(OrderRejected):
        place_order(buyer, market, "BUY", "1", "100.000001")

    # the repeated client_order_id is the same order, not a second acceptance
    assert sample("dex_orders_accepted_total", market=symbol) == accepted + 1
    assert sample("dex_orders_rejected_total", market=symbol, code="INSUFFICIENT_FUNDS") == (
        funds + 1
    )
    assert sample("dex_orders_rejected_total", market=symbol, code="PRICE_OFF_TICK") == tick + 1
    exposed = scrape(client)
    assert exposed[("dex_orders_accepted_total", (("market", symbol),))] == accepted + 1


@pytest.mark.django_db
def test_signed_orders_refused_for_their_signature_are_counted(settings, market, quote):
    settings.ORDER_REPLY_TIMEOUT = 0.01
    wallet = Wallet.create(kyc_tier=1, country="GB")
    sim.deposit(wallet.account, quote, "10000")
    api = key_client(wallet.account)
    code = "SIGNATURE_MISMATCH"
    before = sample("dex_orders_rejected_total", market=market.symbol, code=code)
    accepted = sample("dex_orders_accepted_total", market=market.symbol)

    body = wallet.order(market, price="100", quantity="1")
    assert api.post("/api/v1/orders/", body | {"quantity": "2"}, format="json").status_code == 401
    assert api.post("/api/v1/orders/", body, format="json").status_code == 201

    assert sample("dex_orders_rejected_total", market=market.symbol, code=code) == before + 1
    assert sample("dex_orders_accepted_total", market=market.symbol) == accepted + 1


@pytest.mark.django_db
def test_rate_limit_refusals_are_counted_by_scope_and_bucket(client, settings):
    settings.API_RATE_LIMIT_ENABLED = True
    settings.API_RATE_LIMIT_KEY_PREFIX = f"test:rl:{uuid.uuid4().hex}"
    high = (10_000, 60)
    settings.API_RATE_LIMITS = {
        "default": {"credential": high, "ip": (1, 60), "global": high},
        "orders": {"credential": high, "ip": high, "global": high},
    }
    before = sample("dex_rate_limited_total", scope="default", bucket="ip")
    before_global = sample("dex_rate_limited_total", scope="default", bucket="global")

    assert client.get("/api/v1/markets/").status_code == 200
    assert client.get("/api/v1/markets/").status_code == 429
    assert client.get("/api/v1/markets/").status_code == 429

    assert sample("dex_rate_limited_total", scope="default", bucket="ip") == before + 2
    # The process's counters outlive a test: unchanged, not zero, whatever ran before.
    assert sample("dex_rate_limited_total", scope="default", bucket="global") == before_global
    for key in redis_client().scan_iter(f"{settings.API_RATE_LIMIT_KEY_PREFIX}:*"):
        redis_client().delete(key)


@pytest.mark.django_db(transaction=True)
def test_websocket_connections_are_a_gauge_and_sends_are_timed_one_in_sixteen(settings):
    settings.WS_MAX_MESSAGES_PER_SECOND = 100
    before_open = sample("dex_ws_connections")
    before_timed = sample("dex_ws_send_latency_seconds_count")

    async def scenario():
        first, second = await connect(), await connect()
        opened = sample("dex_ws_connections")
        replies = [await request(first, {"type": "ping", "id": 1})]
        timed_first = sample("dex_ws_send_latency_seconds_count")
        replies += [await request(first, {"type": "ping", "id": n}) for n in range(2, 18)]
        await first.disconnect()
        await second.disconnect()
        return opened, timed_first, replies

    opened, timed_first, replies = async_to_sync(scenario)()
    assert [r["type"] for r in replies] == ["pong"] * 17
    assert opened == before_open + 2
    assert sample("dex_ws_connections") == before_open
    assert timed_first == before_timed + 1  # a socket's first send is timed
    # sends 1 and 17 of the socket (and none of the 15 between)
    assert sample("dex_ws_send_latency_seconds_count") == before_timed + 2
    assert sample("dex_ws_send_latency_seconds_bucket", le="1.0") == before_timed + 2


# --- read at scrape time ----------------------------------------------------------------


@pytest.mark.django_db
def test_celery_queue_lengths_are_read_from_the_broker_at_scrape_time(client, settings):
    queue = f"dex-test-queue-{uuid.uuid4().hex[:8]}"
    settings.METRICS_CELERY_QUEUES = [queue]
    redis = redis_client()
    try:
        assert scrape(client)[("dex_celery_queue_length", (("queue", queue),))] == 0
        redis.rpush(queue, "a", "b", "c")
        exposed = scrape(client)
        assert exposed[("dex_celery_queue_length", (("queue", queue),))] == 3
        assert exposed[("dex_scrape_error", (("source", "celery_queues"),))] == 0
    finally:
        redis.delete(queue)


@pytest.mark.django_db
def test_a_scrape_without_redis_reports_the_error_and_still_answers(client, settings, tmp_path):
    from dex import redis as dex_redis

    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    saved, dex_redis._client = dex_redis._client, None
    try:
        exposed = scrape(client)
    finally:
        dex_redis._client = saved
    assert exposed[("dex_scrape_error", (("source", "celery_queues"),))] == 1
    assert exposed[("dex_scrape_error", (("source", "ledger_check"),))] == 1
    assert not any(name == "dex_celery_queue_length" for name, _ in exposed)


@pytest.mark.django_db
def test_a_scrape_answers_in_time_while_redis_stalls(
    client, settings, monkeypatch, stalled_port, within
):
    # Prometheus drops a scrape that takes over 10 s, and with it every metric.
    from dex import redis as dex_redis

    settings.REDIS_URL = f"redis://127.0.0.1:{stalled_port}/0"
    monkeypatch.setattr(dex_redis, "_client", None)
    started = time.monotonic()
    response = within(9, lambda: client.get("/metrics"))
    assert response is not None, "GET /metrics did not answer while Redis stalls"
    # Two reads of 1 s at most: well inside Prometheus' 10 s, on a busy machine too.
    assert time.monotonic() - started < 8
    assert response.status_code == 200
    exposed = parse(response.content.decode())
    assert exposed[("dex_scrape_error", (("source", "celery_queues"),))] == 1
    assert exposed[("dex_scrape_error", (("source", "ledger_check"),))] == 1
    assert ("dex_ws_connections", ()) in exposed


@pytest.mark.django_db
def test_the_last_ledger_check_run_is_exposed_with_its_age(client, ledger_check_key):
    assert not any(name.startswith("dex_ledger_check") for name, _ in scrape(client))

    call_command("ledger_check")
    exposed = scrape(client)
    assert exposed[("dex_ledger_check_ok", ())] == 1
    assert exposed[("dex_ledger_check_problems", ())] == 0
    assert 0 <= exposed[("dex_ledger_check_age_seconds", ())] < 60

    ledger_check_record(problems=3, at=1_000_000_000.0)
    exposed = scrape(client)
    assert exposed[("dex_ledger_check_ok", ())] == 0
    assert exposed[("dex_ledger_check_problems", ())] == 3
    assert exposed[("dex_ledger_check_age_seconds", ())] > 3600


# --- the matcher's own endpoint, and the staff page ----------------------------------------


@pytest.mark.django_db(transaction=True)
def test_a_live_matcher_serves_its_batches_latency_trades_and_book_depth(
    client, settings, market, matchers, buyer, seller, staff
):
    port = free_port()
    matchers.env["MATCHER_METRICS_PORT"] = str(port)
    matchers.start()
    url = f"http://127.0.0.1:{port}/metrics"

    def served():
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return parse(response.read().decode())
        except OSError:
            return None

    wait_for(served, 30, "the matcher's metrics endpoint", matchers)
    place_order(buyer, market, "BUY", "2", "100")
    place_order(seller, market, "SELL", "1", "100")
    symbol = (("market", market.symbol),)

    def traded():
        m = served() or {}
        # latencies are observed once the batch is published, just after its commit
        observed = m.get(("dex_matcher_command_latency_seconds_count", symbol))
        return m if m.get(("dex_trades_total", symbol)) == 1 and observed == 2 else None

    metrics = wait_for(traded, 30, "the trade in the matcher's metrics", matchers)
    assert metrics[("dex_matcher_batch_commands_sum", symbol)] == 2
    assert metrics[("dex_matcher_command_latency_seconds_count", symbol)] == 2
    assert metrics[("dex_matcher_command_latency_seconds_bucket", (("le", "+Inf"), *symbol))] == 2
    assert 0 < metrics[("dex_matcher_command_latency_seconds_sum", symbol)] < 60

    def depth():  # refreshed once a second: wait for the book after the trade
        m = served() or {}
        bids = m.get(("dex_book_quantity", (*symbol, ("side", "bids"))))
        return m if bids == 1.0 else None

    metrics = wait_for(depth, 10, "the book depth gauges", matchers)
    assert metrics[("dex_book_levels", (*symbol, ("side", "bids")))] == 1
    assert metrics[("dex_book_levels", (*symbol, ("side", "asks")))] == 0
    assert metrics[("dex_book_quantity", (*symbol, ("side", "asks")))] == 0

    # A standby on the same host cannot take the port: it runs on, without metrics.
    standby = matchers.start()
    wait_for(
        lambda: "matcher metrics not served" in matchers.log_tail(), 30, "the standby's warning"
    )
    assert standby.poll() is None

    # The staff page's summary reads the web process and the matcher.
    settings.MATCHER_METRICS_TARGETS = [f"127.0.0.1:{port}", "127.0.0.1:9"]
    client.force_login(staff)
    # "web" is this process, where earlier tests may have published batches in-process.
    here: dict[str, float] = defaultdict(float)
    for family in REGISTRY.collect():
        for sample in family.samples:
            here[sample.name] += sample.value
    data = client.get("/admin/metrics/data/").json()
    assert data["sources"] == {"web": True, f"127.0.0.1:{port}": True, "127.0.0.1:9": False}
    assert data["counters"]["trades"] == 1 + here["dex_trades_total"]
    assert data["counters"]["orders_accepted"] >= 2
    assert data["histograms"]["batch_size"]["sum"] == 2 + here["dex_matcher_batch_commands_sum"]
    latency = 2 + here["dex_matcher_command_latency_seconds_count"]
    assert data["histograms"]["command_latency"]["count"] == latency
    assert data["histograms"]["command_latency"]["buckets"][-1] == [None, latency]


def test_the_summary_adds_up_every_process_exposition():
    web = """
# TYPE dex_orders_accepted_total counter
dex_orders_accepted_total{market="A-B"} 3
dex_orders_accepted_total{market="C-D"} 4
# TYPE dex_orders_rejected_total counter
dex_orders_rejected_total{code="INSUFFICIENT_FUNDS",market="A-B"} 2
dex_orders_rejected_total{code="PRICE_OFF_TICK",market="C-D"} 1
# TYPE dex_ws_connections gauge
dex_ws_connections 5
# TYPE dex_celery_queue_length gauge
dex_celery_queue_length{queue="celery"} 7
"""
    matcher = """
# TYPE dex_trades_total counter
dex_trades_total{market="A-B"} 9
# TYPE dex_matcher_batch_commands histogram
dex_matcher_batch_commands_bucket{le="1.0",market="A-B"} 1
dex_matcher_batch_commands_bucket{le="10.0",market="A-B"} 3
dex_matcher_batch_commands_bucket{le="+Inf",market="A-B"} 4
dex_matcher_batch_commands_count{market="A-B"} 4
dex_matcher_batch_commands_sum{market="A-B"} 30
dex_matcher_batch_commands_bucket{le="1.0",market="C-D"} 0
dex_matcher_batch_commands_bucket{le="10.0",market="C-D"} 2
dex_matcher_batch_commands_bucket{le="+Inf",market="C-D"} 2
dex_matcher_batch_commands_count{market="C-D"} 2
dex_matcher_batch_commands_sum{market="C-D"} 8
"""
    summary = metrics_summary([web, matcher])
    assert summary["counters"] == {
        "orders_accepted": 7,
        "orders_rejected": 3,
        "trades": 9,
        "rate_limited": 0,
    }
    assert summary["rejected_by_code"] == {"INSUFFICIENT_FUNDS": 2, "PRICE_OFF_TICK": 1}
    assert summary["gauges"] == {"ws_connections": 5, "celery_queue_length": 7}
    assert summary["queues"] == {"celery": 7}
    batch = summary["histograms"]["batch_size"]
    assert batch == {"buckets": [[1.0, 1], [10.0, 5], [None, 6]], "count": 6, "sum": 38}


@pytest.mark.django_db
def test_the_staff_metrics_page_is_for_staff_only(client, staff, trader, django_user_model):
    anonymous = client.get("/admin/metrics/")
    assert anonymous.status_code == 302
    assert "/admin/login/" in anonymous["Location"]
    assert client.get("/admin/metrics/data/").status_code == 302

    outsider = django_user_model.objects.create_user("not-staff", password="x")
    client.force_login(outsider)
    assert client.get("/admin/metrics/").status_code == 302

    client.force_login(staff)
    page = client.get("/admin/metrics/")
    assert page.status_code == 200
    html = page.content.decode()
    for chart in ("orders", "batch", "latency", "trades", "ws", "queue", "ratelimit"):
        assert f'id="chart-{chart}"' in html
    assert "/admin/metrics/data/" in html
    data = client.get("/admin/metrics/data/").json()
    assert data["sources"] == {"web": True}
    assert set(data["counters"]) == {"orders_accepted", "orders_rejected", "trades", "rate_limited"}


@pytest.mark.django_db
def test_the_admin_header_links_to_the_metrics_page(client, staff):
    client.force_login(staff)
    assert 'href="/admin/metrics/"' in client.get("/admin/").content.decode()


@pytest.fixture
def browser(tmp_path):
    from tests.browser import chromium

    with chromium(tmp_path) as driver:
        yield driver


@pytest.mark.django_db(transaction=True)
def test_the_staff_metrics_page_draws_its_charts_in_a_browser(browser, tmp_path, django_user_model):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    from websockets.sync.client import connect as ws_connect

    from tests.live import REPO, web_server

    django_user_model.objects.create_user("ops-browser", is_staff=True, password="pw-12345")
    with web_server(tmp_path) as port:
        base = f"http://127.0.0.1:{port}"
        browser.get(f"{base}/admin/login/?next=/admin/metrics/%3Fevery%3D500")
        browser.find_element(By.NAME, "username").send_keys("ops-browser")
        browser.find_element(By.NAME, "password").send_keys("pw-12345")
        browser.find_element(By.CSS_SELECTOR, "input[type=submit]").click()

        def legend(chart: str) -> str:
            return browser.find_element(By.CSS_SELECTOR, f'[data-for="chart-{chart}"]').text

        wait = WebDriverWait(browser, 20)
        wait.until(lambda _: "accepted: 0" in legend("orders"))
        # no command reached a matcher: no latency to draw, but the series are there
        wait.until(lambda _: "p50: –" in legend("latency") and "open: 0" in legend("ws"))
        with ws_connect(f"ws://127.0.0.1:{port}/ws/stream/"):
            wait.until(lambda _: "open: 1" in legend("ws"))
        wait.until(lambda _: "open: 0" in legend("ws"))
        assert "rejected: 0" in legend("orders")
        assert "429s: 0" in legend("ratelimit")
        assert "Sources: web ✓" in browser.find_element(By.ID, "metrics-sources").text
        samples = browser.execute_script("return window.dexMetrics.series['chart-ws'].open.length")
        assert samples >= 2
        errors = [
            e
            for e in browser.get_log("browser")
            if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]
        ]
        assert errors == []
        (REPO / "test-artifacts").mkdir(exist_ok=True)
        browser.save_screenshot(str(REPO / "test-artifacts" / "metrics.png"))
