"""Rate limits: the limiter in Redis, the DRF throttle and the headers, through the
full middleware stack of throwaway views (this module is the URLconf)."""

import threading
import time
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, RequestFactory
from django.urls import path
from rest_framework import authentication, permissions
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from dex.api import ratelimit
from dex.api.authentication import ALL_SCOPES, Trader
from dex.redis import redis_client
from dex.settings import base as base_settings
from exchange.models import Account
from tests.factories import AccountFactory

pytestmark = pytest.mark.urls(__name__)


class HeaderAuthentication(authentication.BaseAuthentication):
    """``X-Test-Account: <pk>`` (a wallet session), plus ``X-Test-Key: <id>`` for an API
    key: a Trader without the signing ceremony."""

    def authenticate(self, request):
        account_id = request.META.get("HTTP_X_TEST_ACCOUNT")
        if account_id is None:
            return None
        key_id = request.META.get("HTTP_X_TEST_KEY")
        account = Account.objects.get(pk=account_id)
        return Trader(account, ALL_SCOPES, int(key_id) if key_id else None), None

    def authenticate_header(self, request) -> str:
        return "Test"


class MarketsView(APIView):
    authentication_classes = [HeaderAuthentication]
    permission_classes = [permissions.AllowAny]

    def get(self, request):
        return Response({"markets": []})


class OrdersView(MarketsView):
    rate_limit_scope = "orders"

    def post(self, request):
        return Response({"status": "PENDING"}, status=201)


class BalancesView(MarketsView):
    permission_classes = [permissions.IsAuthenticated]


urlpatterns = [
    path("markets", MarketsView.as_view()),
    path("orders", OrdersView.as_view()),
    path("balances", BalancesView.as_view()),
]

HIGH = (10_000, 60)


@pytest.fixture(autouse=True)
def limiter(settings):
    """Limits of this test's own, under a key prefix no other test shares; each test
    lowers the buckets it is about."""
    prefix = f"test:rl:{uuid.uuid4().hex}"
    settings.API_RATE_LIMIT_ENABLED = True
    settings.API_RATE_LIMIT_KEY_PREFIX = prefix
    settings.API_TRUSTED_PROXIES = 0
    settings.API_RATE_LIMITS = {
        scope: {"credential": HIGH, "ip": HIGH, "global": HIGH} for scope in ("default", "orders")
    }
    ratelimit._redis_down_until = 0.0
    yield settings.API_RATE_LIMITS
    ratelimit._redis_down_until = 0.0
    client = redis_client()
    for key in client.scan_iter(f"{prefix}:*"):
        client.delete(key)


@pytest.fixture
def api():
    return APIClient()


def remaining(response) -> int:
    return int(response["RateLimit-Remaining"])


def test_responses_carry_the_tightest_bucket_counting_down(api, limiter):
    limiter["default"]["ip"] = (5, 60)

    responses = [api.get("/markets") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert [r["RateLimit-Limit"] for r in responses] == ["5", "5", "5"]
    assert [remaining(r) for r in responses] == [4, 3, 2]
    # GCRA: each request holds its share of the window until it drains.
    assert [int(r["RateLimit-Reset"]) for r in responses] == [12, 24, 36]
    for name in ("Limit", "Remaining", "Reset"):
        assert responses[-1][f"X-RateLimit-{name}"] == responses[-1][f"RateLimit-{name}"]
    assert "Retry-After" not in responses[-1]


def test_past_the_limit_is_429_with_retry_after_in_the_error_shape(api, limiter):
    limiter["default"]["ip"] = (2, 60)

    statuses = [api.get("/markets").status_code for _ in range(2)]
    refused = api.get("/markets")

    assert statuses == [200, 200]
    assert refused.status_code == 429
    assert refused.json() == {
        "code": "RATE_LIMITED",
        "message": "Request was throttled. Expected available in 30 seconds.",
    }
    assert refused["Retry-After"] == "30"
    assert refused["RateLimit-Limit"] == "2"
    assert refused["RateLimit-Remaining"] == "0"
    assert refused["RateLimit-Reset"] == "60"


def test_ip_bucket_is_per_address(api, limiter):
    limiter["default"]["ip"] = (1, 60)

    assert api.get("/markets", REMOTE_ADDR="10.0.0.1").status_code == 200
    assert api.get("/markets", REMOTE_ADDR="10.0.0.1").status_code == 429
    assert api.get("/markets", REMOTE_ADDR="10.0.0.2").status_code == 200


@pytest.mark.parametrize(
    ("trusted_proxies", "forwarded_for", "bucketed_as"),
    [
        (0, "10.9.9.9", "127.0.0.1"),  # the header is ignored: anyone can send it
        (1, "10.9.9.9", "10.9.9.9"),
        (1, "6.6.6.6, 10.9.9.9", "10.9.9.9"),  # left of the proxy's entry is the client's say
        (2, "6.6.6.6, 10.9.9.9, 10.0.0.1", "10.9.9.9"),
        (2, "10.0.0.1", "127.0.0.1"),  # fewer hops than proxies: not trusted
        (1, "not-an-address", "127.0.0.1"),
        (1, "2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),  # one host's IPv6 block
    ],
)
def test_client_ip_honours_forwarded_for_only_behind_trusted_proxies(
    settings, trusted_proxies, forwarded_for, bucketed_as
):
    settings.API_TRUSTED_PROXIES = trusted_proxies
    request = RequestFactory().get("/", HTTP_X_FORWARDED_FOR=forwarded_for)

    assert ratelimit.client_ip(request) == bucketed_as


def test_forwarded_for_separates_clients_behind_a_trusted_proxy(api, limiter, settings):
    settings.API_TRUSTED_PROXIES = 1
    limiter["default"]["ip"] = (1, 60)

    assert api.get("/markets", HTTP_X_FORWARDED_FOR="10.0.0.1").status_code == 200
    assert api.get("/markets", HTTP_X_FORWARDED_FOR="10.0.0.1").status_code == 429
    assert api.get("/markets", HTTP_X_FORWARDED_FOR="10.0.0.2").status_code == 200


@pytest.mark.django_db
def test_credential_bucket_is_per_api_key_else_per_account(api, limiter):
    limiter["default"]["credential"] = (2, 60)
    account, other = AccountFactory(), AccountFactory()

    def get(account, key=None):
        headers = {"HTTP_X_TEST_ACCOUNT": str(account.pk)}
        if key is not None:
            headers["HTTP_X_TEST_KEY"] = str(key)
        return api.get("/markets", **headers).status_code

    assert [get(account, key=1) for _ in range(3)] == [200, 200, 429]
    assert get(account, key=2) == 200  # the same account's other key has its own bucket
    assert [get(account) for _ in range(3)] == [200, 200, 429]  # its wallet session too
    assert get(other) == 200


@pytest.mark.django_db
def test_global_ceiling_trips_across_callers(api, limiter):
    limiter["default"]["global"] = (3, 60)
    callers = [AccountFactory() for _ in range(4)]

    statuses = [
        api.get(
            "/markets", REMOTE_ADDR=f"10.0.0.{n}", HTTP_X_TEST_ACCOUNT=str(account.pk)
        ).status_code
        for n, account in enumerate(callers, start=1)
    ]

    assert statuses == [200, 200, 200, 429]


@pytest.mark.django_db
def test_orders_scope_has_its_own_stricter_buckets(api, limiter):
    limiter["default"]["credential"] = (4, 60)
    limiter["orders"]["credential"] = (2, 60)
    trader = {"HTTP_X_TEST_ACCOUNT": str(AccountFactory().pk), "HTTP_X_TEST_KEY": "7"}

    placed = [api.post("/orders", **trader) for _ in range(3)]
    read = api.get("/markets", **trader)

    assert [r.status_code for r in placed] == [201, 201, 429]
    assert placed[0]["RateLimit-Limit"] == "2"
    assert read.status_code == 200  # reads are not spent by orders
    assert read["RateLimit-Limit"] == "4"
    assert remaining(read) == 3


@pytest.mark.parametrize("bucket", ["credential", "ip", "global"])
def test_default_settings_limit_orders_more_strictly_than_reads(bucket):
    limits = base_settings.API_RATE_LIMITS
    orders_count, orders_seconds = limits["orders"][bucket]
    default_count, default_seconds = limits["default"][bucket]

    assert orders_count / orders_seconds < default_count / default_seconds


def test_orders_at_the_default_setting_allow_50_a_second_per_key():
    assert base_settings.API_RATE_LIMITS["orders"]["credential"] == (50, 1.0)


def test_bucket_refills_after_its_window(api, limiter):
    limiter["default"]["ip"] = (2, 0.3)

    assert [api.get("/markets").status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(0.31)
    after = api.get("/markets")

    assert after.status_code == 200
    assert remaining(after) == 1


def test_buckets_expire_from_redis_once_full_again(limiter, settings):
    limiter["default"]["ip"] = (5, 2)

    ratelimit.rate_limit_hit(scope="default", credential=None, ip="10.0.0.1")

    key = f"{settings.API_RATE_LIMIT_KEY_PREFIX}:default:ip:10.0.0.1"
    assert 0 < redis_client().pttl(key) <= 400  # one request's share: 2 s / 5


def test_a_refused_request_spends_no_bucket(limiter):
    limiter["default"]["ip"] = (1, 60)
    limiter["default"]["global"] = (5, 60)

    first = ratelimit.rate_limit_hit(scope="default", credential=None, ip="10.0.0.1")
    refused = [
        ratelimit.rate_limit_hit(scope="default", credential=None, ip="10.0.0.1") for _ in range(3)
    ]

    assert first.allowed
    assert not any(d.allowed for d in refused)
    global_bucket = next(b for b in refused[-1].buckets if b.name == "global")
    assert global_bucket.remaining == 4


def test_concurrent_callers_cannot_overspend_a_bucket(limiter):
    limiter["orders"]["global"] = (25, 60)
    decisions = []
    start = threading.Barrier(10)

    def caller(n):
        start.wait()
        for _ in range(10):
            decision = ratelimit.rate_limit_hit(
                scope="orders", credential=f"key:{n}", ip=f"10.0.0.{n}"
            )
            decisions.append(decision.allowed)

    threads = [threading.Thread(target=caller, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert decisions.count(True) == 25


@pytest.mark.django_db
def test_refused_credentials_still_count_against_the_ip(api, limiter):
    limiter["default"]["ip"] = (2, 60)

    responses = [api.get("/balances") for _ in range(3)]

    assert [r.status_code for r in responses] == [401, 401, 429]
    assert [remaining(r) for r in responses] == [1, 0, 0]
    assert responses[-1].json()["code"] == "RATE_LIMITED"
    assert responses[-1]["Retry-After"] == "30"


def test_unreachable_redis_lets_requests_through_with_a_warning(api, limiter, settings, caplog):
    settings.API_RATE_LIMIT_REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there
    limiter["default"]["ip"] = (1, 60)

    with caplog.at_level("WARNING", logger="dex.api.ratelimit"):
        responses = [api.get("/markets") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit-Limit" not in responses[0]
    # One warning per outage, not one per request.
    assert len(caplog.records) == 1
    assert "rate limits not enforced: Redis is unavailable" in caplog.records[0].getMessage()


def test_headers_and_refusals_under_asgi(limiter):
    limiter["default"]["ip"] = (2, 60)
    client = AsyncClient()

    read = async_to_sync(client.get)("/markets")
    unauthenticated = async_to_sync(client.get)("/balances")
    refused = async_to_sync(client.get)("/markets")

    assert (read.status_code, remaining(read)) == (200, 1)
    assert (unauthenticated.status_code, remaining(unauthenticated)) == (401, 0)
    assert (refused.status_code, refused["Retry-After"]) == (429, "30")


def test_disabled_limiter_neither_counts_nor_refuses(api, limiter, settings):
    settings.API_RATE_LIMIT_ENABLED = False
    limiter["default"]["ip"] = (1, 60)

    responses = [api.get("/markets") for _ in range(3)]

    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "RateLimit-Limit" not in responses[0]
