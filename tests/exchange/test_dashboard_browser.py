"""The dashboard in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver, opens the page served by ``uvicorn`` while ``run_matcher``
matches, both against the test database. It shows the resting orders; orders placed
through the API trade, and the ladder, the trades tape and the ticker follow. A book
that misses a delta resyncs, a dropped socket reconnects, and the page is still right.
The last view is saved as ``test-artifacts/dashboard.png``.

Without Chromium this test fails, saying how to install it, unless
``DEX_SKIP_BROWSER_TESTS=1`` asks for it to be skipped."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from exchange.services.sessions import api_key_create
from tests.api_support import Wallet
from tests.browser import ARTIFACTS, chromium
from tests.exchange.test_matcher_process import owns, pending
from tests.factories import AccountFactory, place_order
from tests.live import wait_for, web_server
from tests.portfolio import sim

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 15  # seconds for the page to show what the test expects


@pytest.fixture
def browser(tmp_path):
    with chromium(tmp_path, window="1400,900") as driver:
        yield driver


@pytest.fixture
def web(tmp_path):
    """``uvicorn dex.asgi:application`` on a free port, against the test database; its
    base URL."""
    with web_server(tmp_path, WS_TICKER_INTERVAL="0.2", WS_CANDLE_INTERVAL="0.2") as port:
        yield f"http://127.0.0.1:{port}"


# --- what the page shows -------------------------------------------------------------------


def ladder(driver, side: str) -> list[tuple[Decimal, Decimal]]:
    """The ``bids`` or ``asks`` rows as (price, size), best price first."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll(arguments[0])]"
        ".map(r => [r.dataset.price, r.dataset.quantity]);",
        f"#{side} .row",
    )
    levels = [(Decimal(p), Decimal(q)) for p, q in rows]
    return levels[::-1] if side == "asks" else levels  # asks are drawn best-last


def tape(driver) -> list[tuple[Decimal, Decimal, str]]:
    """The trades tape as (price, size, BUY|SELL), newest first."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#trades .row')]"
        ".map(r => [r.dataset.price, r.dataset.quantity, r.classList.contains('buy')]);"
    )
    return [(Decimal(p), Decimal(q), "BUY" if buy else "SELL") for p, q, buy in rows]


def shown(driver, what: str, check) -> None:
    try:
        WebDriverWait(driver, WAIT, poll_frequency=0.05).until(lambda d: check(d))
    except TimeoutException:
        state = driver.execute_script(
            "const s = window.dexDashboard || {}; return JSON.stringify({sequence: s.sequence,"
            " snapshots: s.snapshots, deltas: s.deltas, gaps: s.gaps, connects: s.connects,"
            " closes: s.closes,"
            " status: document.getElementById('status').textContent});"
        )
        raise AssertionError(
            f"the page did not show {what} within {WAIT}s; page state {state}; "
            f"bids {ladder(driver, 'bids')}; asks {ladder(driver, 'asks')}; "
            f"tape {tape(driver)}; console {driver.get_log('browser')}"
        ) from None


def dashboard_state(driver) -> dict:
    return driver.execute_script(
        "const s = window.dexDashboard; return {sequence: s.sequence, snapshots: s.snapshots,"
        " gaps: s.gaps, connects: s.connects, status: document.getElementById('status')"
        ".dataset.state};"
    )


def D(text: str) -> Decimal:
    return Decimal(text)


def test_the_dashboard_follows_the_book_and_trades_live(browser, market, matchers, web):
    maker = AccountFactory()
    sim.deposit(maker, market.base, "100")
    sim.deposit(maker, market.quote, "100000")
    taker = Wallet.create()
    sim.deposit(taker.account, market.base, "100")
    sim.deposit(taker.account, market.quote, "100000")
    issued = api_key_create(account=taker.account, name="browser test", scopes=["read", "trade"])
    api = httpx.Client(base_url=f"{web}/api/v1", headers={"X-API-Key": issued.secret}, timeout=10)

    proc = matchers.start()
    wait_for(lambda: owns(market, proc), 30, "the matcher", matchers)
    for side, quantity, price in [
        ("BUY", "1", "99.00"),
        ("BUY", "2", "98.50"),
        ("BUY", "3", "98.00"),
        ("SELL", "1", "101.00"),
        ("SELL", "2", "101.50"),
        ("SELL", "3", "102.00"),
    ]:
        place_order(maker, market, side, quantity, price)
    wait_for(lambda: not pending(market), 30, "the resting orders", matchers)

    def place(side: str, quantity: str, price: str) -> dict:
        body = taker.order(market, side=side, quantity=quantity, price=price, time_in_force="IOC")
        response = api.post("/orders/", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    ARTIFACTS.mkdir(exist_ok=True)
    try:
        browser.get(f"{web}/dashboard/{market.symbol}/")
        assert browser.title.startswith(market.symbol)

        # The resting orders, once the snapshot has come.
        shown(browser, "a live connection", lambda d: dashboard_state(d)["status"] == "live")
        shown(
            browser,
            "the resting orders",
            lambda d: (
                ladder(d, "bids") == [(D("99"), D("1")), (D("98.5"), D("2")), (D("98"), D("3"))]
                and ladder(d, "asks")
                == [(D("101"), D("1")), (D("101.5"), D("2")), (D("102"), D("3"))]
            ),
        )
        assert tape(browser) == []

        # Orders through the API: a buy takes part of the best ask, a sell sweeps the
        # best bid and part of the next.
        place("BUY", "0.4", "101.00")
        place("SELL", "1.5", "98.50")
        shown(
            browser,
            "the book after the trades",
            lambda d: (
                ladder(d, "bids") == [(D("98.5"), D("1.5")), (D("98"), D("3"))]
                and ladder(d, "asks")[0] == (D("101"), D("0.6"))
            ),
        )
        shown(
            browser,
            "the trades on the tape",
            lambda d: (
                tape(d)
                == [
                    (D("98.5"), D("0.5"), "SELL"),
                    (D("99"), D("1"), "SELL"),
                    (D("101"), D("0.4"), "BUY"),
                ]
            ),
        )
        shown(
            browser,
            "the ticker",
            lambda d: (
                d.find_element(By.CSS_SELECTOR, '#ticker [data-field="last_price"]').text == "98.50"
                and d.find_element(By.CSS_SELECTOR, '#ticker [data-field="trade_count"]').text
                == "3"
            ),
        )

        # A missed delta: the page subscribes again and takes the fresh snapshot.
        before = dashboard_state(browser)
        browser.execute_script("window.dexDashboard.sequence -= 1;")
        place("BUY", "0.1", "101.00")
        shown(
            browser,
            "a resync after a gap",
            lambda d: (
                dashboard_state(d)["gaps"] == 1
                and dashboard_state(d)["snapshots"] == before["snapshots"] + 1
                and ladder(d, "asks")[0] == (D("101"), D("0.5"))
            ),
        )

        # A dropped connection: the page reconnects and is right again.
        assert dashboard_state(browser)["connects"] == 1  # no drop so far
        browser.execute_script("window.dexDashboard.ws.close();")
        shown(
            browser,
            "a reconnection",
            lambda d: (state := dashboard_state(d))["connects"] == 2 and state["status"] == "live",
        )
        place("BUY", "0.5", "101.00")
        place("SELL", "0.25", "98.00")
        shown(
            browser,
            "the book and tape after reconnecting",
            lambda d: (
                ladder(d, "asks") == [(D("101.5"), D("2")), (D("102"), D("3"))]
                and ladder(d, "bids") == [(D("98.5"), D("1.25")), (D("98"), D("3"))]
                and tape(d)[:2] == [(D("98.5"), D("0.25"), "SELL"), (D("101"), D("0.5"), "BUY")]
                and len(tape(d)) == 6
            ),
        )
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        api.close()
