"""The compliance reports: what each contains on a known scenario, that they stream from
a server-side cursor, and the admin's and the command's ways to them (permission, form
errors, the audit record of each export)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
from decimal import Decimal
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.contrib.auth.models import Permission
from django.core.management import CommandError, call_command
from django.db import connection
from django.http import StreamingHttpResponse
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from compliance.models import AlertKind, AlertSeverity, AlertStatus, AuditEvent, SurveillanceAlert
from compliance.reports import (
    STATEMENT_HEADER,
    SURVEILLANCE_HEADER,
    TRADE_HEADER,
    Period,
    account_statement,
    order_report,
    surveillance_summary,
    surveillance_summary_rows,
    text,
    trade_report,
)
from dex.asgi import application
from exchange.models import Order, Side
from exchange.services.archiving import orders_archive
from portfolio.models import Balance
from portfolio.services.vault import withdrawal_request
from tests.factories import AccountFactory, MarketFactory, OrderFactory
from tests.portfolio import sim
from tests.serve import http_scope, serve_once
from tests.trades import trade_at

D = Decimal
T0 = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)
DAY = Period(start=T0, end=T0 + dt.timedelta(days=1))


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def as_dicts(rows) -> list[dict[str, str]]:
    rows = list(rows)
    return [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]


def parse_csv(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode())))


def db_now() -> dt.datetime:
    """The database's clock, which stamps postings and orders."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT clock_timestamp()")
        return cursor.fetchone()[0]


@pytest.fixture
def officer(django_user_model):
    """Staff who may export reports."""
    user = django_user_model.objects.create_user("compliance-1", is_staff=True, password="x")
    user.user_permissions.add(
        Permission.objects.get(content_type__app_label="compliance", codename="export_reports")
    )
    return user


# --- trades --------------------------------------------------------------------------------


def test_trade_report_lists_the_periods_trades_oldest_first_with_both_parties(market):
    other = MarketFactory(symbol="BTC-USDC", quote=market.quote)
    maker, taker = AccountFactory(), AccountFactory()
    trade_at(market, "100.00", "1", T0 - dt.timedelta(seconds=1))  # before the period
    second = trade_at(market, "101.50", "0.5", minutes(2))
    first = trade_at(
        market,
        "100.25",
        "2",
        minutes(1),
        buyer=maker,
        seller=taker,
        taker_side=Side.SELL,
        maker_fee="-0.01",
        taker_fee="0.10",
    )
    elsewhere = trade_at(other, "30000.00", "0.01", minutes(3))
    trade_at(market, "99.00", "1", DAY.end)  # the end is not in the period

    rows = list(trade_report(period=DAY, market=market))

    assert rows[0] == TRADE_HEADER
    assert [int(r[0]) for r in rows[1:]] == [first.pk, second.pk]
    assert as_dicts(rows)[0] == {
        "trade_id": str(first.pk),
        "executed_at": "2026-03-02T09:01:00.000000Z",
        "market": "ETH-USDC",
        "sequence": str(first.sequence),
        "price": "100.25000000",
        "quantity": "2.00000000",
        "notional": "200.50000000",
        "fee_asset": "USDC",
        "aggressor_side": "SELL",
        "maker_order_id": str(first.maker_order_id),
        "maker_account": maker.wallet_address,
        "maker_side": "BUY",
        "maker_fee": "-0.01000000",
        "taker_order_id": str(first.taker_order_id),
        "taker_account": taker.wallet_address,
        "taker_side": "SELL",
        "taker_fee": "0.10000000",
        "settlement_status": "PENDING",
        "settled_at": "",
    }
    every_market = [int(r[0]) for r in list(trade_report(period=DAY))[1:]]
    assert every_market == [first.pk, second.pk, elsewhere.pk]


def test_trade_report_keeps_trades_whose_orders_are_archived(market):
    """Orders are archived (moved out of ``exchange_order``) once long finished; their
    trades stay in the report, parties and all."""
    maker, taker = AccountFactory(), AccountFactory()
    trade = trade_at(
        market, "100.00", "1", minutes(1), buyer=maker, seller=taker, taker_side=Side.SELL
    )
    bought = trade_at(
        market, "100.00", "1", minutes(2), buyer=taker, seller=maker, taker_side=Side.BUY
    )
    for order in (trade.maker_order, trade.taker_order, bought.maker_order, bought.taker_order):
        sim.backdate(order, T0)
    assert orders_archive(done_before=minutes(3), limit=100) == 4

    rows = as_dicts(trade_report(period=DAY, market=market))

    assert [r["trade_id"] for r in rows] == [str(trade.pk), str(bought.pk)]
    assert [(r["maker_account"], r["taker_account"]) for r in rows] == [
        (maker.wallet_address, taker.wallet_address),
        (maker.wallet_address, taker.wallet_address),
    ]
    assert rows[0]["maker_order_id"] == str(trade.maker_order_id)


# --- orders --------------------------------------------------------------------------------


def test_a_traders_text_that_a_spreadsheet_would_run_is_quoted(market):
    # A client order id may start with "-" (and "=" reaches other text columns): a
    # spreadsheet opening the report would take the cell for a formula.
    OrderFactory(market=market, client_order_id="-1-1", side=Side.SELL, price=D("105.00"))
    now = Order.objects.get().created_at
    period = Period(start=now - dt.timedelta(minutes=1), end=now + dt.timedelta(minutes=1))
    [row] = as_dicts(order_report(period=period, market=market))
    assert row["client_order_id"] == "'-1-1"
    assert row["price"] == "105.00000000"  # numbers are not text: never quoted
    assert [text(v) for v in ("=HYPERLINK(1)", "@x", "+1", "a-b", D("-1.5"), -2)] == [
        "'=HYPERLINK(1)",
        "'@x",
        "'+1",
        "a-b",
        "-1.5",
        "-2",
    ]


def test_order_report_lists_each_order_of_the_market_once_archived_or_not(market):
    trade = trade_at(market, "100.00", "1", T0)  # two filled orders, done at T0
    for order in (trade.maker_order, trade.taker_order):
        sim.backdate(order, T0)  # placed then too
    resting = OrderFactory(market=market, side=Side.SELL, price=D("105.00"))
    OrderFactory(market=MarketFactory())  # another market's
    now = Order.objects.get(pk=resting.pk).created_at
    period = Period(start=T0 - dt.timedelta(minutes=1), end=now + dt.timedelta(minutes=1))
    assert orders_archive(done_before=T0 + dt.timedelta(seconds=1), limit=100) == 2

    rows = as_dicts(order_report(period=period, market=market))

    assert [(int(r["order_id"]), r["source"]) for r in rows] == [
        (trade.maker_order_id, "archive"),
        (trade.taker_order_id, "archive"),
        (resting.pk, "live"),
    ]
    maker = rows[0]
    assert maker == {
        "order_id": str(trade.maker_order_id),
        "created_at": "2026-03-02T09:00:00.000000Z",
        "market": "ETH-USDC",
        "account": trade.seller.wallet_address,
        "client_order_id": trade.maker_order.client_order_id,
        "side": "SELL",
        "type": "LIMIT",
        "time_in_force": "GTC",
        "post_only": "False",
        "price": "100.00000000",
        "stop_price": "",
        "quantity": "1.00000000",
        "quote_quantity": "",
        "filled": "1.00000000",
        "filled_quote": "100.00000000",
        "average_price": "100.00000000",
        "maker_fee_rate": "0.00000000",
        "taker_fee_rate": "0.00000000",
        "status": "FILLED",
        "reason": "",
        "accepted_at": "2026-03-02T09:00:00.000000Z",
        "done_at": "2026-03-02T09:00:00.000000Z",
        "source": "archive",
    }


# --- account statement ---------------------------------------------------------------------


def _balance(account, asset) -> tuple[str, str, str]:
    row = Balance.objects.get(account=account, asset=asset)
    return (format(row.available, "f"), format(row.held, "f"), format(row.total, "f"))


def _closing(rows: list[dict[str, str]], symbol: str) -> tuple[str, str, str]:
    (line,) = [r for r in rows if r["line"] == "CLOSING" and r["asset"] == symbol]
    return (line["available"], line["held"], line["balance"])


@pytest.mark.django_db(transaction=True)
def test_account_statement_runs_from_opening_to_the_ledgers_closing_balance(market, buyer, seller):
    """Each service call commits on its own, so each ledger transaction has its own time."""
    ask = sim.place(seller, market, Side.SELL, "2", "100.00")
    bid = sim.place(buyer, market, Side.BUY, "1", "100.00")
    trade = sim.fill_and_settle(ask, bid, "1")
    middle = db_now()
    at_middle = {asset.symbol: _balance(buyer, asset) for asset in (market.base, market.quote)}
    withdrawal_request(
        account=buyer,
        asset=market.quote,
        amount=D("500"),
        destination_address="0x" + "ab" * 20,
        idempotency_key="statement-test",
    )
    later = sim.place(buyer, market, Side.BUY, "1", "90.00")
    sim.cancel(later)
    whole = Period(start=dt.datetime(2020, 1, 1, tzinfo=dt.UTC), end=db_now())

    rows = list(account_statement(account=buyer, period=whole))

    assert rows[0] == STATEMENT_HEADER
    lines = as_dicts(rows)
    assert [(r["line"], r["asset"], r["kind"]) for r in lines] == [
        ("OPENING", "ETH", ""),
        ("ENTRY", "ETH", "TRADE"),
        ("CLOSING", "ETH", ""),
        ("OPENING", "USDC", ""),
        ("ENTRY", "USDC", "DEPOSIT"),
        ("ENTRY", "USDC", "HOLD"),
        ("ENTRY", "USDC", "TRADE"),
        ("ENTRY", "USDC", "WITHDRAWAL_HOLD"),
        ("ENTRY", "USDC", "HOLD"),
        ("ENTRY", "USDC", "RELEASE"),
        ("CLOSING", "USDC", ""),
    ]
    assert lines[0] | {"time": "?"} == {
        "line": "OPENING",
        "time": "?",
        "asset": "ETH",
        **dict.fromkeys(STATEMENT_HEADER[3:11], ""),
        "available": "0",
        "held": "0",
        "balance": "0",
    }
    # The buyer took 1 ETH at 100 and paid the taker fee (5 bps) on it.
    usdc_trade = lines[6]
    assert (usdc_trade["reference"], usdc_trade["fee"]) == (f"trade:{trade.pk}", "0.05000000")
    assert D(usdc_trade["change"]) == D("-100.05")
    assert (D(lines[1]["change"]), lines[1]["fee"]) == (D("1"), "")
    hold = lines[5]
    assert D(hold["available_change"]) == -D(hold["held_change"])
    assert D(hold["change"]) == 0
    # Each entry's running balance is the one before it plus its change.
    for before, entry in itertools.pairwise(lines):
        if entry["line"] == "ENTRY":
            assert D(entry["balance"]) == D(before["balance"]) + D(entry["change"])
            assert D(entry["available"]) == D(before["available"]) + D(entry["available_change"])
    for asset in (market.base, market.quote):
        assert _closing(lines, asset.symbol) == _balance(buyer, asset)

    # A statement to a moment in the past closes on the balance the ledger had then, and
    # the next one opens on it.
    before = as_dicts(account_statement(account=buyer, period=Period(whole.start, middle)))
    after = as_dicts(account_statement(account=buyer, period=Period(middle, whole.end)))
    for symbol, balance in at_middle.items():
        assert tuple(D(v) for v in _closing(before, symbol)) == tuple(D(v) for v in balance)
        (opening,) = [r for r in after if r["line"] == "OPENING" and r["asset"] == symbol]
        assert (opening["available"], opening["held"], opening["balance"]) == _closing(
            before, symbol
        )
    assert [r["kind"] for r in after if r["line"] == "ENTRY"] == [
        "WITHDRAWAL_HOLD",
        "HOLD",
        "RELEASE",
    ]


# --- surveillance summary ------------------------------------------------------------------


def _alert(n: int, kind, severity, *, market=None, account=None) -> SurveillanceAlert:
    return SurveillanceAlert.objects.create(
        kind=kind,
        severity=severity,
        market=market,
        account=account,
        summary=f"finding {n}",
        window_start=T0,
        window_end=T0,
        dedupe_key=f"test:{n}",
    )


def _close(alert: SurveillanceAlert, status: str, after: dt.timedelta) -> None:
    alert.refresh_from_db()
    alert.status, alert.closed_at = status, alert.created_at + after
    alert.save(update_fields=["status", "closed_at"])


def test_surveillance_summary_counts_alerts_and_times_to_close(market):
    spoofer, washer = AccountFactory(), AccountFactory()
    hours = dt.timedelta(hours=1)
    wash = [_alert(0, AlertKind.WASH_TRADING, AlertSeverity.HIGH, market=market, account=washer)]
    wash += [_alert(i, AlertKind.WASH_TRADING, AlertSeverity.HIGH, account=washer) for i in (1, 2)]
    spoof = _alert(3, AlertKind.SPOOFING, AlertSeverity.MEDIUM, market=market, account=spoofer)
    _alert(4, AlertKind.PRICE_MOVE, AlertSeverity.LOW, market=market)
    _close(wash[0], AlertStatus.REPORTED, 1 * hours)
    _close(wash[1], AlertStatus.FALSE_POSITIVE, 2 * hours)
    _close(wash[2], AlertStatus.FALSE_POSITIVE, 6 * hours)
    _close(spoof, AlertStatus.FALSE_POSITIVE, dt.timedelta(minutes=30))
    now = SurveillanceAlert.objects.first().created_at
    period = Period(start=now - hours, end=now + hours)

    summary = surveillance_summary(period=period)

    assert summary.total | {} == {
        "alerts": 5,
        "open": 1,
        "high": 3,
        "closed": 4,
        "mean_to_close": dt.timedelta(minutes=(60 + 120 + 360 + 30) / 4),
        "median_to_close": dt.timedelta(minutes=90),
        "max_to_close": 6 * hours,
    }
    rows = as_dicts(surveillance_summary_rows(summary))
    assert list(rows[0]) == SURVEILLANCE_HEADER
    table = {
        (r["section"], r["kind"], r["severity"], r["status"], r["market"], r["account"]): (
            r["alerts"],
            r["open"],
            r["high"],
            r["closed"],
            r["median_seconds_to_close"],
        )
        for r in rows
    }
    assert table == {
        ("total", "", "", "", "", ""): ("5", "1", "3", "4", "5400"),
        ("kind_severity_status", "PRICE_MOVE", "LOW", "OPEN", "", ""): ("1", "", "", "", ""),
        ("kind_severity_status", "SPOOFING", "MEDIUM", "FALSE_POSITIVE", "", ""): (
            *("1", "", "", "", ""),
        ),
        ("kind_severity_status", "WASH_TRADING", "HIGH", "FALSE_POSITIVE", "", ""): (
            *("2", "", "", "", ""),
        ),
        ("kind_severity_status", "WASH_TRADING", "HIGH", "REPORTED", "", ""): ("1", "", "", "", ""),
        ("kind", "PRICE_MOVE", "", "", "", ""): ("1", "1", "0", "0", ""),
        ("kind", "SPOOFING", "", "", "", ""): ("1", "0", "0", "1", "1800"),
        ("kind", "WASH_TRADING", "", "", "", ""): ("3", "0", "3", "3", "7200"),
        ("market", "", "", "", "(none)", ""): ("2", "0", "2", "2", "14400"),
        ("market", "", "", "", "ETH-USDC", ""): ("3", "1", "1", "2", "2700"),
        ("top_account", "", "", "", "", washer.wallet_address): ("3", "0", "3", "", ""),
        ("top_account", "", "", "", "", spoofer.wallet_address): ("1", "0", "0", "", ""),
    }
    assert [r["account"] for r in rows if r["section"] == "top_account"] == [
        washer.wallet_address,
        spoofer.wallet_address,
    ]
    later = Period(start=now + hours, end=now + 2 * hours)
    assert surveillance_summary(period=later).total["alerts"] == 0


# --- streaming -----------------------------------------------------------------------------


def _open_cursors() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_cursors WHERE name LIKE '_django_curs_%%'")
        return [statement for (statement,) in cursor.fetchall()]


def test_reports_read_rows_a_chunk_at_a_time_from_a_server_side_cursor(market):
    for n in range(7):
        trade_at(market, "100.00", "1", minutes(n))

    rows = trade_report(period=DAY, market=market, chunk_size=3)
    with CaptureQueriesContext(connection) as queries:
        assert next(rows) == TRADE_HEADER
        next(rows)
        # Suspended after the first row: the query waits in a cursor on the server, and
        # only the first chunk has come over.
        (statement,) = _open_cursors()
        assert "exchange_trade" in statement
        rest = list(rows)
    assert len(rest) == 6
    assert len(queries) == 2  # the cursor's declaration, and the look at pg_cursors
    assert _open_cursors() == []


# --- the admin -----------------------------------------------------------------------------


def test_reports_need_the_export_permission(client, staff, officer, market):
    index = reverse("compliance_reports:index")
    export = reverse("compliance_reports:export", args=["trades"])
    summary = reverse("compliance_reports:surveillance")
    period = {"trades-start": "2026-03-02", "trades-end": "2026-03-03"}

    client.force_login(staff)
    assert client.get(index).status_code == 403
    assert client.post(export, period).status_code == 403
    assert client.get(summary).status_code == 403
    assert "compliance_reports" not in client.get(reverse("admin:index")).text
    assert not AuditEvent.objects.exists()

    client.force_login(officer)
    page = client.get(reverse("admin:index"))
    assert f'href="{index}"' in page.text
    assert client.get(index).status_code == 200
    assert client.get(summary).status_code == 200
    assert client.post(export, period).status_code == 200

    client.logout()
    assert client.get(index).status_code == 302  # to the admin's login


def test_trade_export_streams_the_csv_and_records_who_exported_what(client, officer, market):
    trades = [trade_at(market, "100.00", "1", minutes(n)) for n in (1, 2)]
    client.force_login(officer)

    response = client.post(
        reverse("compliance_reports:export", args=["trades"]),
        {
            "trades-start": "2026-03-02T09:00",
            "trades-end": "2026-03-03",
            "trades-market": "ETH-USDC",
        },
        REMOTE_ADDR="10.1.2.3",
    )

    assert response.status_code == 200
    assert isinstance(response, StreamingHttpResponse)
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert response["Content-Disposition"] == (
        'attachment; filename="trades_ETH-USDC_20260302T090000Z_20260303T000000Z.csv"'
    )
    rows = parse_csv(b"".join(response.streaming_content))
    assert rows == list(trade_report(period=DAY, market=market))
    assert [int(r[0]) for r in rows[1:]] == [t.pk for t in trades]
    (event,) = AuditEvent.objects.all()
    assert (event.actor, event.action, event.target_type, event.target_id) == (
        officer,
        "report.export",
        "exchange.market",
        str(market.pk),
    )
    assert event.after == {
        "report": "trades",
        "start": "2026-03-02T09:00:00.000000Z",
        "end": "2026-03-03T00:00:00.000000Z",
        "market": "ETH-USDC",
    }
    assert event.ip_address == "10.1.2.3"


def test_statement_and_venue_exports_are_recorded_against_their_subject(client, officer, buyer):
    client.force_login(officer)
    statement = client.post(
        reverse("compliance_reports:export", args=["statement"]),
        {
            "statement-start": "2026-03-02",
            "statement-end": "2026-03-03",
            "statement-account": buyer.wallet_address.upper().replace("0X", "0x"),
        },
    )
    venue = client.post(
        reverse("compliance_reports:export", args=["surveillance"]),
        {"surveillance-start": "2026-03-02", "surveillance-end": "2026-03-03"},
    )

    assert statement.status_code == venue.status_code == 200
    assert parse_csv(b"".join(statement.streaming_content))[0] == STATEMENT_HEADER
    assert parse_csv(b"".join(venue.streaming_content))[0] == SURVEILLANCE_HEADER
    events = AuditEvent.objects.order_by("id")
    assert [(e.target_type, e.target_id, e.after["report"]) for e in events] == [
        ("exchange.account", str(buyer.pk), "statement"),
        ("compliance.backoffice", "venue", "surveillance"),
    ]
    assert events[0].after["account"] == buyer.wallet_address


@pytest.mark.parametrize(
    ("report", "fields", "error"),
    [
        ("trades", {"start": "2026-03-03", "end": "2026-03-02"}, "must end after it starts"),
        ("trades", {"start": "2026-03-02", "end": "2026-03-02"}, "must end after it starts"),
        ("trades", {"start": "yesterday", "end": "2026-03-02"}, "Enter a valid date/time."),
        ("trades", {"start": "2026-03-02"}, "This field is required."),
        ("trades", {"start": "2026-03-02", "end": "2026-03-03", "market": "NOPE"}, "No market"),
        ("orders", {"start": "2026-03-02", "end": "2026-03-03"}, "This field is required."),
        ("statement", {"start": "2026-03-02", "end": "2026-03-03"}, "This field is required."),
        (
            "statement",
            {"start": "2026-03-02", "end": "2026-03-03", "account": "0x" + "0" * 40},
            "No account",
        ),
        (
            "statement",
            {"start": "2026-03-02", "end": "2026-03-03", "account": "alice"},
            "Give a wallet address",
        ),
        (
            "statement",
            {"start": "2026-03-02", "end": "2026-03-03", "account": "9" * 20},
            "Give a wallet address",
        ),
        ("surveillance", {"start": "2026-02-30", "end": "2026-03-03"}, "Enter a valid date/time."),
    ],
)
def test_bad_report_parameters_show_the_form_with_its_error(
    client, officer, market, report, fields, error
):
    client.force_login(officer)

    response = client.post(
        reverse("compliance_reports:export", args=[report]),
        {f"{report}-{name}": value for name, value in fields.items()},
    )

    assert response.status_code == 400
    assert not isinstance(response, StreamingHttpResponse)
    assert error in response.text
    assert not AuditEvent.objects.exists()


def test_an_unknown_report_is_not_found(client, officer):
    client.force_login(officer)
    assert client.post(reverse("compliance_reports:export", args=["balances"])).status_code == 404


def test_the_surveillance_summary_page_shows_the_periods_alerts(client, officer, market):
    alert = _alert(1, AlertKind.SPOOFING, AlertSeverity.HIGH, market=market)
    _alert(2, AlertKind.ORDER_BURST, AlertSeverity.LOW)
    client.force_login(officer)
    day = alert.created_at.date()
    url = reverse("compliance_reports:surveillance")

    page = client.get(
        url,
        {"surveillance-start": day.isoformat(), "surveillance-end": str(day + dt.timedelta(1))},
    )
    bad = client.get(url, {"surveillance-start": "2026-03-02", "surveillance-end": "2026-03-01"})

    assert page.status_code == 200
    summary = page.context["summary"]
    assert (summary.total["alerts"], summary.total["high"]) == (2, 1)
    assert "<td>SPOOFING</td><td>HIGH</td><td>OPEN</td>" in page.text
    assert "<td>ETH-USDC</td>" in page.text
    assert bad.status_code == 400
    assert bad.context["summary"] is None
    assert "must end after it starts" in bad.text
    assert not AuditEvent.objects.exists()  # reading the page is not an export


@pytest.mark.django_db(transaction=True)
def test_an_export_served_by_the_web_process_streams_from_the_request_thread(officer, market):
    """Through ``dex.asgi.application``, as uvicorn serves it: the CSV is produced on the
    request's thread (its server-side cursor lives there) and sent as it is produced."""
    trades = [trade_at(market, "100.00", "1", minutes(n)) for n in range(3)]
    client = Client()
    client.force_login(officer)
    csrf = "c" * 32
    cookie = f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
    body = urlencode({"trades-start": "2026-03-02", "trades-end": "2026-03-03"}).encode()
    path = reverse("compliance_reports:export", args=["trades"])
    scope = http_scope(
        "POST",
        path,
        headers=[
            (b"cookie", f"{cookie}; csrftoken={csrf}".encode()),
            (b"x-csrftoken", csrf.encode()),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
    )
    sent = serve_once(application, scope, body)

    start, *chunks = sent
    assert start["status"] == 200
    assert (b"content-type", b"text/csv; charset=utf-8") in start["headers"]
    assert [c.get("more_body", False) for c in chunks] == [True] * (len(chunks) - 1) + [False]
    rows = parse_csv(b"".join(c["body"] for c in chunks))
    assert [int(r[0]) for r in rows[1:]] == [t.pk for t in trades]
    assert AuditEvent.objects.filter(action="report.export").count() == 1


# --- the command ---------------------------------------------------------------------------


def test_the_command_writes_the_report_and_records_the_export(tmp_path, market, buyer):
    trade = trade_at(market, "100.00", "1", minutes(5))
    out = tmp_path / "trades.csv"

    call_command(
        "compliance_report",
        "trades",
        "--from",
        "2026-03-02",
        "--to",
        "2026-03-03",
        "--market",
        "ETH-USDC",
        "-o",
        str(out),
        stderr=io.StringIO(),
    )
    stdout = io.StringIO()
    call_command(
        "compliance_report",
        "statement",
        "--from",
        "2020-01-01",
        "--to",
        "2030-01-01",
        "--account",
        str(buyer.pk),
        stdout=stdout,
    )

    assert parse_csv(out.read_bytes()) == list(trade_report(period=DAY, market=market))
    assert parse_csv(out.read_bytes())[1][0] == str(trade.pk)
    statement = as_dicts(parse_csv(stdout.getvalue().encode()))
    assert [(r["line"], r["kind"], r["balance"]) for r in statement] == [
        ("OPENING", "", "0"),
        ("ENTRY", "DEPOSIT", "10000.00000000"),
        ("CLOSING", "", "10000.00000000"),
    ]
    events = AuditEvent.objects.order_by("id")
    assert [(e.actor_label, e.target_type, e.after["report"]) for e in events] == [
        ("system", "exchange.market", "trades"),
        ("system", "exchange.account", "statement"),
    ]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (
            ["orders", "--from", "2026-03-02", "--to", "2026-03-03"],
            "--market: This field is required",
        ),
        (["trades", "--from", "2026-03-03", "--to", "2026-03-02"], "must end after it starts"),
        (["trades", "--from", "soon", "--to", "2026-03-02"], "--from: Enter a valid date/time"),
        (
            ["trades", "--from", "2026-03-02", "--to", "2026-03-03", "--account", "1"],
            "the trades report takes no --account",
        ),
    ],
)
def test_the_command_refuses_bad_parameters_and_records_nothing(market, arguments, error):
    with pytest.raises(CommandError, match=error):
        call_command("compliance_report", *arguments, stdout=io.StringIO())
    assert not AuditEvent.objects.exists()
