"""Request ids and structured logs: each request's id (the client's when well formed) in
the response and on its log lines, as one JSON object a line or as text; the id stored on
the order's command and named by the matcher when it commits and publishes the order, so
one grep follows the order from the API to its reply."""

import io
import json
import logging
import re
import urllib.request

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction

from dex.logging import (
    JsonFormatter,
    PlainFormatter,
    RequestIdFilter,
    logging_config,
    request_id_bound,
)
from exchange.models import CommandKind, OrderCommand
from tests.api_support import Wallet, key_client
from tests.factories import place_order
from tests.live import wait_for, web_server
from tests.portfolio import sim

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def json_lines():
    """Every log record written meanwhile, through the JSON formatter, as dicts."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


# --- the request id ------------------------------------------------------------------------


def test_a_well_formed_client_request_id_is_kept(client):
    response = client.get("/healthz", HTTP_X_REQUEST_ID="client-42_a.B")
    assert response["X-Request-ID"] == "client-42_a.B"


@pytest.mark.parametrize(
    "given",
    [
        "",
        "has space",
        "line\nbreak",
        "x" * 65,
        '{"json": 1}',
        "ümlaut",
    ],
)
def test_a_malformed_request_id_is_replaced_by_a_new_one(client, given):
    response = client.get("/healthz", HTTP_X_REQUEST_ID=given)
    assert HEX_ID.fullmatch(response["X-Request-ID"])


def test_each_request_without_an_id_gets_its_own(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert HEX_ID.fullmatch(first)
    assert HEX_ID.fullmatch(second)
    assert first != second


def test_error_responses_carry_the_request_id_too(client):
    response = client.get("/no/such/page", HTTP_X_REQUEST_ID="lost-1")
    assert response.status_code == 404
    assert response["X-Request-ID"] == "lost-1"


# --- log lines -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_the_request_line_is_json_with_the_request_id_and_its_context(client, json_lines):
    client.get("/readyz", HTTP_X_REQUEST_ID="trace-me-1")
    lines = [line for line in json_lines() if line.get("request_id") == "trace-me-1"]
    request_line = next(line for line in lines if line["logger"] == "dex.request")
    assert {"timestamp", "level", "logger", "process", "message", "request_id"} <= set(request_line)
    assert request_line["level"] == "INFO"
    assert request_line["message"].startswith("GET /readyz ")
    assert request_line["method"] == "GET"
    assert request_line["path"] == "/readyz"
    assert request_line["status"] in (200, 503)
    assert request_line["duration_ms"] >= 0
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d", request_line["timestamp"])


def test_lines_written_outside_a_request_say_so_and_a_bound_id_is_used():
    record = logging.LogRecord("dex.test", logging.WARNING, __file__, 1, "hello %s", ("you",), None)
    RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "-"

    record = logging.LogRecord("dex.test", logging.WARNING, __file__, 1, "again", (), None)
    with request_id_bound("bound-7"):
        RequestIdFilter().filter(record)
    assert json.loads(JsonFormatter().format(record))["request_id"] == "bound-7"


def test_plain_lines_carry_the_same_fields_and_context_as_text():
    logger = logging.getLogger("dex.test.plain")
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "market %s: committed",
        ("ETH-USDC",),
        None,
        extra={"sequence": 12, "request_ids": ["a1", "b2"]},
    )
    with request_id_bound("req-9"):
        RequestIdFilter().filter(record)
    line = PlainFormatter().format(record)
    assert re.fullmatch(
        r"\S+ \S+ INFO dex\.test\.plain \d+ \[req-9\] market ETH-USDC: committed "
        r"sequence=12 request_ids=\['a1', 'b2'\]",
        line,
    )


def test_logging_config_refuses_an_unknown_format(settings):
    assert settings.LOGGING["handlers"]["console"]["formatter"] == settings.LOG_FORMAT
    assert settings.LOGGING["handlers"]["console"]["filters"] == ["request_id"]
    plain = logging_config(log_format="plain", level="INFO")
    assert plain["handlers"]["console"]["formatter"] == "plain"
    with pytest.raises(ValueError, match="LOG_FORMAT must be json or plain"):
        logging_config(log_format="xml", level="INFO")


def test_a_web_process_writes_json_lines_with_the_request_id(tmp_path, db):
    with web_server(tmp_path, LOG_FORMAT="json") as port:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "live-web-1"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                header = response.headers["X-Request-ID"]
        except urllib.error.HTTPError as refused:  # 503 without a matcher: still answered
            header = refused.headers["X-Request-ID"]
        assert header == "live-web-1"

        def logged():
            for raw in (tmp_path / "uvicorn.log").read_text().splitlines():
                if raw.startswith("{") and '"live-web-1"' in raw:
                    return json.loads(raw)
            return None

        line = wait_for(logged, 10, "the request's log line")
    assert line["logger"] == "dex.request"
    assert line["path"] == "/healthz"
    assert isinstance(line["process"], int)


# --- the id travels with the order ---------------------------------------------------------


@pytest.mark.django_db
def test_the_request_id_is_stored_on_the_commands_the_request_writes(settings, market, quote):
    settings.ORDER_REPLY_TIMEOUT = 0.01
    wallet = Wallet.create(kyc_tier=1, country="GB")
    sim.deposit(wallet.account, quote, "10000")
    api = key_client(wallet.account)

    placed = api.post(
        "/api/v1/orders/",
        wallet.order(market, price="100", quantity="1"),
        format="json",
        HTTP_X_REQUEST_ID="place-1",
    )
    assert placed.status_code == 201
    order_id = placed.json()["id"]
    cancelled = api.delete(f"/api/v1/orders/{order_id}/", HTTP_X_REQUEST_ID="cancel-1")
    assert cancelled.status_code in (200, 202)
    api.post("/api/v1/orders/cancel-all/", {}, format="json", HTTP_X_REQUEST_ID="all-1")

    commands = OrderCommand.objects.filter(account=wallet.account).order_by("id")
    assert [(c.kind, c.request_id) for c in commands] == [
        (CommandKind.PLACE, "place-1"),
        (CommandKind.CANCEL, "cancel-1"),
        (CommandKind.CANCEL_ALL, "all-1"),
    ]


@pytest.mark.django_db
def test_commands_written_outside_a_request_have_no_request_id(market, buyer):
    order = place_order(buyer, market, "BUY", "1", "100")
    assert order.commands.get().request_id is None


@pytest.mark.django_db
def test_the_database_refuses_a_malformed_request_id(market, buyer):
    order = place_order(buyer, market, "BUY", "1", "100")
    with pytest.raises(IntegrityError), transaction.atomic():
        OrderCommand.objects.create(
            market=market,
            kind=CommandKind.CANCEL,
            account=buyer,
            order=order,
            request_id="bad id\n",
        )


@pytest.mark.django_db
def test_a_commands_request_id_cannot_be_rewritten(market, buyer):
    with request_id_bound("original-1"):
        order = place_order(buyer, market, "BUY", "1", "100")
    command = order.commands.get()
    assert command.request_id == "original-1"
    with (
        pytest.raises(DatabaseError, match="Cannot update"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            "UPDATE exchange_ordercommand SET request_id = 'forged-1' WHERE id = %s",
            [command.pk],
        )


@pytest.mark.django_db(transaction=True)
def test_the_matcher_names_the_request_id_when_it_commits_and_publishes(
    client, market, matchers, buyer, seller, tmp_path
):
    matchers.env["LOG_FORMAT"] = "json"
    matchers.start()
    with request_id_bound("order-trace-77"):
        order = place_order(buyer, market, "BUY", "1", "100")
    with request_id_bound("order-trace-78"):
        place_order(seller, market, "SELL", "1", "100")

    def lines_naming(request_id):
        found = []
        for path in tmp_path.glob("matcher-*.log"):
            for raw in path.read_text().splitlines():
                if raw.startswith("{") and request_id in raw:
                    found.append(json.loads(raw))
        return found

    def committed_and_published():
        lines = lines_naming("order-trace-77")
        messages = " | ".join(line["message"] for line in lines)
        return lines if "committed" in messages and "published" in messages else None

    lines = wait_for(committed_and_published, 30, "the matcher's lines", matchers)
    committed = next(line for line in lines if "committed" in line["message"])
    published = next(line for line in lines if "published" in line["message"])
    assert committed["logger"] == "exchange.matcher"
    assert committed["market"] == market.symbol
    assert "order-trace-77" in committed["request_ids"]
    assert published["market"] == market.symbol
    assert "order-trace-77" in published["request_ids"]
    assert published["sequence"] >= committed["sequence"] >= 1
    order.refresh_from_db()
    assert order.status == "FILLED"
