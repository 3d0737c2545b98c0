"""Liveness of the platform's dependencies, as JSON for load balancers and operators.

``GET /healthz`` checks PostgreSQL, Redis and the matchers — every open or halted
market must have a matcher whose heartbeat is fresh — and answers 200 when every
check passes, 503 otherwise, with each check's result, latency and details.
"""

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    latency_ms: float
    error: str | None = None
    detail: dict = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        result: dict[str, object] = {"ok": self.ok, "latency_ms": round(self.latency_ms, 2)}
        if self.error:
            result["error"] = self.error
        if self.detail:
            result["detail"] = self.detail
        return result


class CheckFailed(Exception):
    def __init__(self, message: str, detail: dict) -> None:
        super().__init__(message)
        self.detail = detail


def _timed(check: Callable[[], dict | None]) -> CheckResult:
    started = time.perf_counter()
    try:
        detail = check() or {}
    except CheckFailed as exc:
        return CheckResult(False, (time.perf_counter() - started) * 1000, str(exc), exc.detail)
    except Exception as exc:  # a health check reports every failure, whatever its kind
        return CheckResult(False, (time.perf_counter() - started) * 1000, type(exc).__name__)
    return CheckResult(True, (time.perf_counter() - started) * 1000, detail=detail)


def check_postgres() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        cursor.fetchone()


_redis_clients: dict[str, redis.Redis] = {}


def _redis() -> redis.Redis:
    url = settings.REDIS_URL
    client = _redis_clients.get(url)
    if client is None:
        timeout = settings.HEALTH_CHECK_TIMEOUT_SECONDS
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        _redis_clients[url] = client
    return client


def check_redis() -> None:
    _redis().ping()


def check_matchers() -> dict:
    """Each trading market's matcher: who owns it and how long since its heartbeat
    (it beats every second and the key lapses after ten)."""
    from exchange.matcher.runner import heartbeat_key
    from exchange.models import Market, MarketStatus

    symbols = list(
        Market.objects.filter(status__in=[MarketStatus.OPEN, MarketStatus.HALTED])
        .order_by("symbol")
        .values_list("symbol", flat=True)
    )
    beats = _redis().mget([heartbeat_key(s) for s in symbols]) if symbols else []
    now = time.time()
    detail, missing = {}, []
    for symbol, beat in zip(symbols, beats, strict=True):
        if beat is None:
            missing.append(symbol)
            detail[symbol] = {"owner": None}
            continue
        beat = json.loads(beat)
        detail[symbol] = {"owner": beat["owner"], "heartbeat_age_s": round(now - beat["at"], 2)}
    if missing:
        raise CheckFailed(f"no live matcher for {', '.join(missing)}", detail)
    return detail


CHECKS: dict[str, Callable[[], dict | None]] = {
    "postgres": check_postgres,
    "redis": check_redis,
    "matchers": check_matchers,
}


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    results = {name: _timed(check) for name, check in CHECKS.items()}
    healthy = all(result.ok for result in results.values())
    return JsonResponse(
        {
            "status": "ok" if healthy else "unavailable",
            "checks": {name: result.as_dict() for name, result in results.items()},
        },
        status=200 if healthy else 503,
    )
