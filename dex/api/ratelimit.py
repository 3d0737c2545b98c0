"""Rate limits for the trading API, counted in Redis.

Every request to a DRF view is charged to three buckets of its *scope*: the caller's
credential (the API key, or the account for a wallet session), the client's IP address,
and a global ceiling shared by every caller. Views that place, amend or cancel orders
set ``rate_limit_scope = "orders"`` and get the stricter limits of that scope; every
other view is ``"default"``. A view whose requests weigh more than one (a batch of
orders) says how much with ``rate_limit_cost(request)``. The limits are
``settings.API_RATE_LIMITS``.

The algorithm is GCRA (the generic cell rate algorithm, a leaky bucket kept as one
timestamp per bucket): a limit of N per T seconds admits a burst of N and then one
request every T/N seconds. Unlike a fixed window it never lets a client send 2N at a
window's edge (N at the end of one window and N at the start of the next), which
matters when the limit guards the matcher; unlike a sliding log it stores one number
per bucket. One Lua script checks all of a request's buckets against Redis's own clock
and charges them only if every one admits the request, so a refused request costs no
bucket anything and concurrent web processes cannot both take the last unit.

Responses carry the tightest bucket as ``RateLimit-Limit`` / ``RateLimit-Remaining`` /
``RateLimit-Reset`` (seconds until the bucket is full again), mirrored as
``X-RateLimit-*``; a refusal is a 429 in the API's error shape with ``Retry-After``.
If Redis cannot be reached the limiter lets requests through and logs a warning: a
broken limiter must not take the API down with it.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from dataclasses import dataclass

import redis
from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpRequest, HttpResponse, JsonResponse
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from dex.metrics import RATE_LIMITED

logger = logging.getLogger(__name__)

DEFAULT_SCOPE = "default"
BUCKETS = ("credential", "ip", "global")

# KEYS: one per bucket. ARGV: limit and period (µs) per bucket, in the order of KEYS,
# then the request's cost in units (a batch of N orders costs N; never more than a
# bucket's whole burst, or a bucket could never admit it).
# Returns {allowed, then remaining, reset_us, retry_us for each bucket}. All arithmetic
# is on whole microseconds, which doubles hold exactly, and numbers are written with
# string.format because Redis would turn a Lua number into a string with 14 digits.
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local n = #KEYS
local cost = tonumber(ARGV[2 * n + 1])
local tats, intervals, bursts, free, costs = {}, {}, {}, {}, {}
local allowed = 1
for i = 1, n do
  local limit = tonumber(ARGV[2 * i - 1])
  local interval = math.max(1, math.floor(tonumber(ARGV[2 * i]) / limit))
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i], intervals[i], bursts[i] = tat, interval, interval * limit
  costs[i] = math.min(cost, limit)
  free[i] = math.floor((now + bursts[i] - tat) / interval)
  if free[i] < costs[i] then allowed = 0 end
end
local out = {allowed}
for i = 1, n do
  local remaining, reset, retry = free[i], tats[i] - now, 0
  if allowed == 1 then
    local tat = tats[i] + intervals[i] * costs[i]
    redis.call('SET', KEYS[i], string.format('%.0f', tat),
               'PX', string.format('%.0f', math.ceil((tat - now) / 1000)))
    remaining, reset = free[i] - costs[i], tat - now
  elseif free[i] < costs[i] then
    remaining, retry = free[i], tats[i] + intervals[i] * costs[i] - bursts[i] - now
  end
  out[#out + 1] = remaining
  out[#out + 1] = reset
  out[#out + 1] = retry
end
return out
"""

# After Redis fails, requests pass unchecked for this long before the limiter tries
# Redis again, so a hung server costs one timeout a second per process, not one a
# request, and the log gets one warning per outage rather than one per request.
_REDIS_RETRY_SECONDS = 1.0
_redis_down_until = 0.0
_scripts: dict[tuple[str, float], redis.commands.core.Script] = {}


@dataclass(frozen=True, slots=True)
class BucketState:
    name: str
    limit: int
    remaining: int
    reset: float
    """Seconds until the bucket is full again."""
    retry_after: float
    """Seconds until the bucket admits a request (0 when it admits one now)."""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    buckets: tuple[BucketState, ...]

    @property
    def tightest(self) -> BucketState:
        """The bucket the caller should watch: the one that refused (the longest wait
        if several did), else the one with the fewest requests left."""
        if not self.allowed:
            return max(self.buckets, key=lambda b: b.retry_after)
        return min(self.buckets, key=lambda b: (b.remaining, -b.reset))

    @property
    def retry_after(self) -> int:
        """Whole seconds to wait, as ``Retry-After`` says it (never 0 for a refusal)."""
        return max(1, math.ceil(self.tightest.retry_after)) if not self.allowed else 0


def _script() -> redis.commands.core.Script:
    url = settings.API_RATE_LIMIT_REDIS_URL
    timeout = settings.API_RATE_LIMIT_REDIS_TIMEOUT
    script = _scripts.get((url, timeout))
    if script is None:
        client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        script = _scripts[(url, timeout)] = client.register_script(_GCRA)
    return script


def _limits(scope: str) -> dict[str, tuple[int, float]]:
    try:
        return settings.API_RATE_LIMITS[scope]
    except KeyError:
        raise ImproperlyConfigured(f"no API_RATE_LIMITS for scope {scope!r}") from None


def rate_limit_hit(
    *, scope: str, credential: str | None, ip: str | None, cost: int = 1
) -> Decision | None:
    """Charge a request of ``cost`` units (one, or a batch's orders) to the buckets of
    ``scope`` that apply to this caller (no credential bucket for an anonymous caller).
    ``None`` when limiting is off or Redis is unreachable: the caller lets the request
    through."""
    global _redis_down_until
    if not settings.API_RATE_LIMIT_ENABLED:
        return None
    limits = _limits(scope)
    prefix = f"{settings.API_RATE_LIMIT_KEY_PREFIX}:{scope}"
    idents = {"credential": credential, "ip": ip, "global": "all"}
    names = [name for name in BUCKETS if name in limits and idents[name] is not None]
    keys = [f"{prefix}:{name}:{idents[name]}" for name in names]
    args: list[int] = []
    for name in names:
        count, seconds = limits[name]
        args += [int(count), round(seconds * 1_000_000)]
    args.append(max(1, int(cost)))
    if not names or time.monotonic() < _redis_down_until:
        return None
    try:
        allowed, *values = _script()(keys=keys, args=args)
    except redis.RedisError as exc:
        _redis_down_until = time.monotonic() + _REDIS_RETRY_SECONDS
        logger.warning("rate limits not enforced: Redis is unavailable (%s)", exc)
        return None
    buckets = tuple(
        BucketState(
            name=name,
            limit=int(limits[name][0]),
            remaining=int(values[3 * i]),
            reset=values[3 * i + 1] / 1_000_000,
            retry_after=values[3 * i + 2] / 1_000_000,
        )
        for i, name in enumerate(names)
    )
    decision = Decision(allowed=bool(allowed), buckets=buckets)
    if not decision.allowed:
        RATE_LIMITED.labels(scope, decision.tightest.name).inc()
    return decision


def caller_address(request: HttpRequest) -> str | None:
    """The caller's address: ``REMOTE_ADDR``, or with ``API_TRUSTED_PROXIES`` = N the
    address the outermost of those N proxies saw (``X-Forwarded-For``'s Nth entry from
    the right; entries further left are whatever the client chose to send)."""
    address = request.META.get("REMOTE_ADDR")
    proxies = settings.API_TRUSTED_PROXIES
    if proxies > 0:
        hops = [h.strip() for h in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",")]
        hops = [h for h in hops if h]
        if len(hops) >= proxies:
            address = hops[-proxies]
    return address


def client_ip(request: HttpRequest) -> str | None:
    """The caller's address (:func:`caller_address`) as a rate-limit bucket: IPv6
    callers are grouped by /64, the block one host is normally given."""
    address = caller_address(request)
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return request.META.get("REMOTE_ADDR") or None
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def credential_ident(user) -> str | None:
    """The credential bucket of an authenticated caller: the API key when one was used,
    else the account (a wallet session)."""
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    if getattr(user, "api_key_id", None) is not None:
        return f"key:{user.api_key_id}"
    account = getattr(user, "account", None)
    return f"account:{account.pk}" if account is not None else f"user:{user.pk}"


class ApiRateThrottle(BaseThrottle):
    """DRF's hook: runs after authentication, so it can charge the credential bucket.

    The decision is kept on the Django request, where :class:`RateLimitMiddleware`
    reads it to write the headers."""

    decision: Decision | None = None

    def allow_request(self, request, view) -> bool:
        cost = getattr(view, "rate_limit_cost", None)
        self.decision = rate_limit_hit(
            scope=getattr(view, "rate_limit_scope", DEFAULT_SCOPE),
            credential=credential_ident(request.user),
            ip=client_ip(request),
            cost=cost(request) if cost is not None else 1,
        )
        request._request.rate_limit = self.decision
        return self.decision is None or self.decision.allowed

    def wait(self) -> float | None:
        return self.decision.retry_after if self.decision else None


def _limited_view(request: HttpRequest) -> type | None:
    """The DRF view class that answered, when its throttles include ours. (DRF's
    ``as_view`` leaves the class and its overrides on the view function; this module
    cannot import ``APIView``, which imports it through DEFAULT_THROTTLE_CLASSES.)"""
    match = getattr(request, "resolver_match", None)
    view_class = getattr(match.func, "cls", None) if match else None
    if view_class is None:
        return None
    initkwargs = getattr(match.func, "initkwargs", {})
    throttles = initkwargs.get("throttle_classes", getattr(view_class, "throttle_classes", ()))
    if any(issubclass(t, ApiRateThrottle) for t in throttles):
        return view_class
    return None


def _charge_unthrottled(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    """A request DRF refused before throttling (bad credentials, no permission) still
    counts against its IP and the global ceiling, so guessing keys is limited too; it
    is answered 429 instead when those buckets are spent."""
    view_class = _limited_view(request)
    if view_class is None or not settings.API_RATE_LIMIT_ENABLED:
        return response
    decision = rate_limit_hit(
        scope=getattr(view_class, "rate_limit_scope", DEFAULT_SCOPE),
        credential=None,
        ip=client_ip(request),
    )
    request.rate_limit = decision
    if decision is None or decision.allowed:
        return response
    from dex.api.errors import error_body  # it imports DRF's views, which import us

    detail = exceptions.Throttled(decision.retry_after).detail
    return JsonResponse(error_body("RATE_LIMITED", str(detail)), status=429)


def _with_headers(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    decision: Decision | None = getattr(request, "rate_limit", None)
    if decision is None:
        return response
    bucket = decision.tightest
    values = {
        "Limit": str(bucket.limit),
        "Remaining": str(bucket.remaining),
        "Reset": str(math.ceil(bucket.reset)),
    }
    for name, value in values.items():
        response[f"RateLimit-{name}"] = value
        response[f"X-RateLimit-{name}"] = value
    if not decision.allowed:
        response["Retry-After"] = str(decision.retry_after)
    return response


class RateLimitMiddleware:
    """Writes the rate-limit headers on every response of a rate-limited DRF view, and
    charges the requests DRF refused before its throttles ran.

    Sync and async capable, so under ASGI it adds no thread hop to a request."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        if not hasattr(request, "rate_limit"):
            response = _charge_unthrottled(request, response)
        return _with_headers(request, response)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = await self.get_response(request)
        if not hasattr(request, "rate_limit") and _limited_view(request) is not None:
            response = await sync_to_async(_charge_unthrottled)(request, response)
        return _with_headers(request, response)
