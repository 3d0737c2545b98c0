"""/healthz reports each dependency and answers 503 when one is down, or does not
answer within the timeout."""

import time

import pytest
from django.db import connections

from dex import health

pytestmark = pytest.mark.django_db


def test_healthz_is_ok_when_postgres_and_redis_answer(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["postgres"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True
    assert response["Cache-Control"].startswith("max-age=0")


def test_healthz_is_503_when_redis_is_unreachable(client, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis-here.sock"
    response = client.get("/healthz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["checks"]["redis"] == {
        "ok": False,
        "latency_ms": body["checks"]["redis"]["latency_ms"],
        "error": "ConnectionError",
    }
    assert body["checks"]["postgres"]["ok"] is True


def test_healthz_is_503_when_postgres_is_unreachable(client, monkeypatch):
    default = connections["default"]
    unreachable = default.__class__(
        {**default.settings_dict, "HOST": "127.0.0.1", "PORT": 1, "OPTIONS": {}},
        alias="unreachable",
    )
    monkeypatch.setattr(health, "connection", unreachable)
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["postgres"]["ok"] is False
    assert response.json()["checks"]["redis"]["ok"] is True


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_health_answers_503_within_the_timeout_when_postgres_stalls(
    client, settings, monkeypatch, stalled_port, within, path
):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    settings.READYZ_CHECK_CELERY = False
    default = connections["default"]
    stalled = default.__class__(
        {**default.settings_dict, "HOST": "127.0.0.1", "PORT": stalled_port, "OPTIONS": {}},
        alias="stalled",
    )
    monkeypatch.setattr(health, "connection", stalled)
    started = time.monotonic()
    response = within(5, lambda: client.get(path))
    assert response is not None, f"{path} did not answer while PostgreSQL stalls"
    # Each of the two PostgreSQL checks waits out the timeout (1 s in all), and no
    # longer: the margin is for a busy machine.
    assert time.monotonic() - started < 3
    assert response.status_code == 503
    checks = response.json()["checks"]
    assert checks["postgres"]["ok"] is False
    assert checks["postgres"]["error"] == "PostgreSQL did not answer within 0.5s"
    assert checks["matchers"]["error"] == "PostgreSQL did not answer within 0.5s"
    assert checks["redis"]["ok"] is True


def test_healthz_only_answers_get(client):
    assert client.post("/healthz").status_code == 405


@pytest.mark.django_db(transaction=True)  # the check reads on a connection of its own
def test_healthz_is_503_while_a_trading_market_has_no_live_matcher(client, market):
    import redis as redis_lib
    from django.conf import settings

    from exchange.matcher.runner import heartbeat_key

    beats = redis_lib.Redis.from_url(settings.REDIS_URL)
    beats.delete(heartbeat_key(market.symbol))
    response = client.get("/healthz")
    assert response.status_code == 503
    matchers = response.json()["checks"]["matchers"]
    assert matchers["error"] == f"no live matcher for {market.symbol}"
    assert matchers["detail"] == {market.symbol: {"owner": None}}

    beats.set(heartbeat_key(market.symbol), '{"owner": "host:42", "at": 1}', ex=10)
    try:
        response = client.get("/healthz")
        assert response.status_code == 200
        detail = response.json()["checks"]["matchers"]["detail"][market.symbol]
        assert detail["owner"] == "host:42"
    finally:
        beats.delete(heartbeat_key(market.symbol))
