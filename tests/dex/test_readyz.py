"""/readyz: 200 with every check when PostgreSQL, Redis, a live matcher per trading market
and a Celery worker all answer; 503 naming what fails otherwise."""

import contextlib
import subprocess
import sys

import psycopg
import pytest

from exchange.matcher.runner import LOCK_NAMESPACE
from tests.factories import place_order
from tests.live import REPO, database_url, process_env, stop, wait_for


@contextlib.contextmanager
def market_lock_held(market):
    """A session of our own holding the market's ownership lock, as a matcher's does:
    an owner that never matches anything."""
    with psycopg.connect(database_url(), autocommit=True) as session:
        session.execute("SELECT pg_advisory_lock(%s, %s)", [LOCK_NAMESPACE, market.pk])
        yield session.info.backend_pid


@pytest.fixture
def celery_worker(tmp_path):
    """A real ``celery -A dex worker`` on the test broker, until the test ends."""
    log_path = tmp_path / "worker.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                *(sys.executable, "-m", "celery", "-A", "dex", "worker"),
                *("--pool", "solo", "--without-gossip", "--without-mingle"),
                *("--hostname", f"readyz-{tmp_path.name}@%h"),
            ],
            cwd=REPO,
            env=process_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    yield proc, log_path
    stop(proc)


@pytest.mark.django_db(transaction=True)
def test_readyz_is_ready_with_a_live_matcher_and_a_celery_worker(
    client, settings, market, matchers, celery_worker
):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 1.0
    matcher = matchers.start()

    def ready():
        response = client.get("/readyz")
        return response if response.status_code == 200 else None

    response = wait_for(ready, 60, "/readyz to answer 200", matchers)
    body = response.json()
    assert body["status"] == "ready"
    assert body["failing"] == []
    assert set(body["checks"]) == {"postgres", "redis", "matchers", "celery"}
    assert all(check["ok"] for check in body["checks"].values())
    owner = body["checks"]["matchers"]["detail"][market.symbol]
    assert owner["owner_pid"] is not None
    assert owner["oldest_pending_s"] is None
    assert any(w.startswith("readyz-") for w in body["checks"]["celery"]["detail"]["workers"])
    assert matcher.poll() is None

    matchers.kill(matcher)
    response = wait_for(
        lambda: (r := client.get("/readyz")).status_code == 503 and r,
        30,
        "/readyz to notice the dead matcher",
    )
    assert response.json()["failing"] == ["matchers"]
    assert response.json()["checks"]["matchers"]["error"] == f"{market.symbol} has no matcher"


@pytest.mark.django_db(transaction=True)  # the check reads on a connection of its own
def test_readyz_is_503_naming_a_trading_market_without_a_matcher(client, settings, market):
    settings.READYZ_CHECK_CELERY = False
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["matchers"]
    matchers = body["checks"]["matchers"]
    assert matchers["error"] == f"{market.symbol} has no matcher"
    assert matchers["detail"] == {market.symbol: {"owner_pid": None, "oldest_pending_s": None}}
    assert body["checks"]["postgres"]["ok"] is True
    assert body["checks"]["redis"]["ok"] is True


@pytest.mark.django_db(transaction=True)  # the check reads on a connection of its own
def test_readyz_is_503_when_an_owned_market_leaves_a_command_pending(
    client, settings, market, buyer
):
    settings.READYZ_CHECK_CELERY = False
    with market_lock_held(market) as owner_pid:
        assert client.get("/readyz").status_code == 200  # owned, nothing waiting

        place_order(buyer, market, "BUY", "1", "100")
        settings.READYZ_MAX_COMMAND_AGE_SECONDS = 60
        assert client.get("/readyz").status_code == 200  # waiting, not for long

        settings.READYZ_MAX_COMMAND_AGE_SECONDS = 0
        response = client.get("/readyz")
    assert response.status_code == 503
    matchers = response.json()["checks"]["matchers"]
    assert matchers["detail"][market.symbol]["owner_pid"] == owner_pid
    assert matchers["detail"][market.symbol]["oldest_pending_s"] > 0
    assert matchers["error"].startswith(f"{market.symbol} has a command pending for ")


@pytest.mark.django_db
def test_readyz_is_503_when_no_celery_worker_answers(client, settings):
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.3
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["failing"] == ["celery"]
    assert body["checks"]["celery"]["error"] == "no Celery worker answered within 0.3s"
    assert body["checks"]["celery"]["latency_ms"] < 2000


@pytest.mark.django_db
def test_readyz_is_503_when_redis_is_unreachable(client, settings, tmp_path):
    settings.READYZ_CHECK_CELERY = False
    settings.HEALTH_CHECK_TIMEOUT_SECONDS = 0.5
    settings.REDIS_URL = f"unix://{tmp_path}/no-redis.sock"
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["redis"]


def test_readyz_only_answers_get(client):
    assert client.post("/readyz").status_code == 405
