"""A compliance officer's day in the back office, in a real browser: Debian's headless
Chromium, driven by Selenium through Debian's chromedriver, uses the admin served by
``uvicorn`` while ``run_matcher`` runs the market, both against the test database.

The officer, a staff user in the "Compliance officer" group (the roles migration's),
signs in; reviews and approves a KYC case; freezes an account and sees the matcher
cancel its open orders; triages a surveillance alert (assigns it to themself, adds a
note, closes it as reported) and finds it in the surveillance summary; and downloads
the day's trade report and finds the day's trade in it. Each step's page is saved as
``test-artifacts/back_office_<n>_<step>.png``.

Without Chromium this test fails, saying how to install it, unless
``DEX_SKIP_BROWSER_TESTS=1`` asks for it to be skipped."""

from __future__ import annotations

import contextlib
import csv
import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth.models import Group
from selenium.common.exceptions import (
    NoSuchElementException,
    StaleElementReferenceException,
    TimeoutException,
    WebDriverException,
)
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from compliance.models import (
    AccountFreeze,
    AlertKind,
    AlertNote,
    AlertSeverity,
    AlertStatus,
    AuditEvent,
    KycDocumentType,
    KycStatus,
    SurveillanceAlert,
)
from compliance.roles import COMPLIANCE_OFFICER
from compliance.services.kyc import KycDocumentInput, kyc_case_submit
from exchange.models import AccountStatus, Order, OrderStatus, Trade
from tests.browser import ARTIFACTS, chromium
from tests.exchange.test_matcher_process import owns, pending
from tests.factories import AccountFactory, place_order
from tests.live import wait_for, web_server
from tests.portfolio import sim

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 15  # seconds for a page, or the matcher, to show what the test expects
PASSWORD = "correct horse battery staple"


@pytest.fixture
def downloads(tmp_path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(tmp_path, downloads):
    with chromium(tmp_path, window="1800,1000", downloads=downloads) as driver:
        yield driver


@pytest.fixture
def web(tmp_path):
    """``uvicorn dex.asgi:application`` on a free port, against the test database, with a
    connection pool as the Procfile runs it (so a streamed export keeps its pooled
    connection to the end); its base URL."""
    with web_server(tmp_path, DB_POOL_MAX_SIZE="4") as port:
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def officer(django_user_model):
    """A staff user in the "Compliance officer" group, and nothing else."""
    user = django_user_model.objects.create_user(
        "officer", email="officer@example.com", password=PASSWORD, is_staff=True
    )
    user.groups.add(Group.objects.get(name=COMPLIANCE_OFFICER))
    return user


# --- the browser ---------------------------------------------------------------------------


@contextlib.contextmanager
def _page_reading():
    """An element read while the next page replaces this one is stale; Chromium may say
    so as "Node ... does not belong to the document" instead."""
    try:
        yield
    except WebDriverException as exc:
        if "does not belong to the document" in str(exc):
            raise StaleElementReferenceException(str(exc)) from exc
        raise


class Officer:
    """The officer's browser: pages by path, forms by field name, what the page says."""

    def __init__(self, driver, web: str) -> None:
        self.driver = driver
        self.web = web
        self.step = 0
        ARTIFACTS.mkdir(exist_ok=True)
        for old in ARTIFACTS.glob("back_office_*.png"):
            old.unlink()

    def open(self, path: str) -> None:
        self.driver.get(f"{self.web}{path}")

    def fill(self, name: str, value: str) -> None:
        field = self.driver.find_element(By.NAME, name)
        if field.tag_name == "select":
            Select(field).select_by_value(value)
        else:
            field.clear()
            field.send_keys(value)

    def click(self, css: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, css).click()

    def text(self, css: str = "body") -> str:
        with _page_reading():
            return self.driver.find_element(By.CSS_SELECTOR, css).text

    def has(self, css: str) -> bool:
        return bool(self.driver.find_elements(By.CSS_SELECTOR, css))

    def messages(self) -> list[str]:
        with _page_reading():
            return [e.text for e in self.driver.find_elements(By.CSS_SELECTOR, ".messagelist li")]

    def sees(self, what: str, check) -> None:
        try:
            WebDriverWait(
                self.driver,
                WAIT,
                poll_frequency=0.1,
                # A check may read the page while the next one replaces it.
                ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
            ).until(lambda d: check())
        except TimeoutException:
            raise AssertionError(
                f"the page did not show {what} within {WAIT}s: {self.driver.current_url}\n"
                f"{self.text()[:2000]}"
            ) from None

    def snapshot(self, name: str) -> None:
        self.step += 1
        self.driver.save_screenshot(str(ARTIFACTS / f"back_office_{self.step}_{name}.png"))


def downloaded(folder: Path) -> Path | None:
    """The one finished download in ``folder``, if there is one yet."""
    done = [p for p in folder.iterdir() if not p.name.endswith((".crdownload", ".tmp"))]
    return done[0] if len(done) == 1 else None


def page_errors(driver) -> list[dict]:
    """The console's errors, but for the favicon the admin does not have."""
    return [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "/favicon.ico" not in entry["message"]
    ]


# --- the day -------------------------------------------------------------------------------


def test_a_compliance_officers_day(browser, web, downloads, officer, market, matchers):
    # The venue: an applicant waiting for KYC review; a suspect with two orders on the
    # book and an alert about them; and a trade of the day between two others.
    applicant = AccountFactory(kyc_tier=0, country="")
    case = kyc_case_submit(
        account=applicant,
        requested_tier=2,
        country="FR",
        documents=[
            KycDocumentInput(
                document_type=KycDocumentType.PASSPORT,
                number="19FR84521",
                issuing_country="FR",
                expires_on=dt.datetime.now(dt.UTC).date() + dt.timedelta(days=900),
            )
        ],
    )
    suspect = AccountFactory()
    sim.deposit(suspect, market.base, "10")
    sim.deposit(suspect, market.quote, "10000")
    maker, taker = AccountFactory(), AccountFactory()
    sim.deposit(maker, market.base, "10")
    sim.deposit(taker, market.quote, "10000")

    proc = matchers.start()
    wait_for(lambda: owns(market, proc), 30, "the matcher", matchers)
    resting = [
        place_order(suspect, market, "BUY", "1", "95.00"),
        place_order(suspect, market, "SELL", "2", "120.00"),
    ]
    place_order(maker, market, "SELL", "1.5", "101.25")
    place_order(taker, market, "BUY", "1.5", "101.25")
    wait_for(lambda: not pending(market), WAIT, "the orders to be matched", matchers)
    trade = Trade.objects.get(market=market)
    resting_ids = [order.pk for order in resting]
    assert Order.objects.filter(pk__in=resting_ids, status=OrderStatus.OPEN).count() == 2
    alert = SurveillanceAlert.objects.create(
        kind=AlertKind.SPOOFING,
        severity=AlertSeverity.HIGH,
        market=market,
        account=suspect,
        summary="Large orders away from the touch, cancelled within seconds",
        evidence={
            "detector": "spoofing",
            "orders": [{"id": order.pk, "side": order.side} for order in resting],
        },
        window_start=trade.executed_at - dt.timedelta(minutes=5),
        window_end=trade.executed_at,
        dedupe_key=f"SPOOFING:{market.symbol}:{suspect.pk}:browser-test",
    )

    me = Officer(browser, web)
    try:
        # Sign in.
        me.open("/admin/")
        me.fill("username", officer.username)
        me.fill("password", PASSWORD)
        me.click("input[type=submit]")
        me.sees("the back office", lambda: "Reports" in me.text("#back-office-module"))
        me.snapshot("index")

        # Review the KYC case from the queue and approve it.
        me.open("/admin/compliance/kyccase/")
        me.click(f'#result_list a[href*="/kyccase/{case.pk}/"]')
        me.sees("the case's review", lambda: me.has("#kyc-review"))
        assert applicant.wallet_address in me.text("#content-main")
        me.click('#kyc-review input[type="submit"]')
        me.sees("the review started", lambda: "In Review" in " ".join(me.messages()))
        me.fill("notes", "Passport checked against the selfie; address matches.")
        me.snapshot("kyc_review")
        me.click('#kyc-review button[value="approve"]')
        me.sees("the case approved", lambda: "Approved" in " ".join(me.messages()))
        me.snapshot("kyc_approved")
        case.refresh_from_db()
        applicant.refresh_from_db()
        assert (case.status, case.approved_tier, case.reviewer) == (
            KycStatus.APPROVED,
            2,
            officer,
        )
        assert (applicant.kyc_tier, applicant.country) == (2, "FR")

        # Freeze the suspect: the matcher cancels its open orders.
        me.open(f"/admin/exchange/account/{suspect.pk}/change/")
        me.click('.object-tools a[href*="/control/freeze/"]')
        me.sees("the freeze confirmation", lambda: me.has('[name="reason"]'))
        me.fill("reason", f"Spoofing on {market.symbol}: alert #{alert.pk}")
        me.snapshot("freeze_confirm")
        me.click("input[name=confirm]")
        me.sees(
            "the freeze done", lambda: any(m.startswith("Frozen 1 account") for m in me.messages())
        )
        wait_for(
            lambda: (
                Order.objects.filter(pk__in=resting_ids, status=OrderStatus.CANCELLED).count() == 2
            ),
            WAIT,
            "the matcher to cancel the frozen account's orders",
            matchers,
        )
        suspect.refresh_from_db()
        assert suspect.status == AccountStatus.FROZEN
        assert AccountFreeze.objects.get(account=suspect, lifted_at=None).frozen_by == officer
        me.open(f"/admin/exchange/order/?account__id__exact={suspect.pk}&status__exact=CANCELLED")
        me.sees("the suspect's orders cancelled", lambda: me.text(".paginator") == "2 orders")
        me.snapshot("orders_cancelled")

        # Triage the alert: take it, note what was done, close it as reported.
        me.open("/admin/compliance/surveillancealert/")
        me.click(f'#result_list a[href*="/surveillancealert/{alert.pk}/"]')
        me.sees("the alert's triage", lambda: me.has('input[value="Assign to me"]'))
        assert alert.summary in me.text("#content-main")
        me.click('input[type="submit"][value="Assign to me"]')
        me.sees("the alert assigned", lambda: "assigned to you" in " ".join(me.messages()))
        me.fill("note", "Account frozen; its resting orders were cancelled.")
        me.click('button[value="note"]')
        me.sees("the note added", lambda: "Note added" in " ".join(me.messages()))
        me.fill("note", "Reported to the regulator.")
        me.snapshot("alert_triage")
        me.click('button[value="close_reported"]')
        me.sees("the alert closed", lambda: "is closed" in " ".join(me.messages()))
        me.snapshot("alert_closed")
        alert.refresh_from_db()
        assert (alert.status, alert.assignee) == (AlertStatus.REPORTED, officer)
        assert alert.closed_at is not None
        assert [n.body for n in AlertNote.objects.filter(alert=alert).order_by("id")] == [
            "Account frozen; its resting orders were cancelled.",
            "Reported to the regulator.",
        ]

        # The day's trade report, and the surveillance summary, from the reports page.
        me.open("/admin/")
        me.click('#back-office-module a[href$="/reports/"]')
        me.sees("the reports page", lambda: "Trade report" in me.text("#content-main"))
        today = trade.executed_at.astimezone(dt.UTC).date()
        tomorrow = today + dt.timedelta(days=1)
        me.fill("surveillance-start", today.isoformat())
        me.fill("surveillance-end", tomorrow.isoformat())
        me.click('#report-surveillance input[name="view"]')
        me.sees("the summary", lambda: "Top accounts" in me.text("#content-main"))
        assert "SPOOFING HIGH REPORTED 1" in me.text("#summary-kind-severity-status")
        assert suspect.wallet_address in me.text("#summary-accounts")
        me.snapshot("surveillance_summary")

        me.driver.back()
        me.sees("the reports page", lambda: "Trade report" in me.text("#content-main"))
        me.fill("trades-start", today.isoformat())
        me.fill("trades-end", tomorrow.isoformat())
        me.fill("trades-market", market.symbol)
        me.snapshot("reports")
        me.click('#report-trades input[name="download"]')
        path = wait_for(lambda: downloaded(downloads), WAIT, "the trade report download")
        assert path.name == (
            f"trades_{market.symbol}_{today:%Y%m%d}T000000Z_{tomorrow:%Y%m%d}T000000Z.csv"
        )
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert [row["trade_id"] for row in rows] == [str(trade.pk)]
        row = rows[0]
        assert (Decimal(row["price"]), Decimal(row["quantity"]), Decimal(row["notional"])) == (
            Decimal("101.25"),
            Decimal("1.5"),
            Decimal("151.875"),
        )
        assert (row["maker_account"], row["taker_account"]) == (
            maker.wallet_address,
            taker.wallet_address,
        )
        assert (row["aggressor_side"], row["settlement_status"]) == ("BUY", "SETTLED")
        export = AuditEvent.objects.get(action="report.export")
        assert (export.actor, export.target_id, export.after["market"]) == (
            officer,
            str(market.pk),
            market.symbol,
        )

        # Every step is in the audit trail, as the officer's, in the order taken.
        assert list(
            AuditEvent.objects.filter(actor=officer).order_by("id").values_list("action", flat=True)
        ) == [
            "kyc.start_review",
            "kyc.approve",
            "account.freeze",
            "alert.assign",
            "alert.note",
            "alert.close",
            "report.export",
        ]
        assert page_errors(browser) == []
    finally:
        me.snapshot("last")
