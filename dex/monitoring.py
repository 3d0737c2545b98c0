"""The operator's pages: ``/metrics`` for Prometheus and the staff metrics page.

``GET /metrics`` answers only callers from ``METRICS_ALLOWED_IPS`` (addresses or
networks; behind reverse proxies the address ``API_TRUSTED_PROXIES`` says to believe)
or with ``Authorization: Bearer <METRICS_BEARER_TOKEN>``; anyone else gets 403.

``/admin/metrics/`` (staff) draws the key figures from the same metrics: the page polls
``/admin/metrics/data/``, a JSON summary of this web process's registry and of each
matcher's endpoint (``MATCHER_METRICS_TARGETS``).
"""

from __future__ import annotations

import hmac
import ipaddress
import time
import urllib.error
import urllib.request
from functools import cache

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dex.api.ratelimit import caller_address
from dex.metrics import metrics_summary, web_registry

# A matcher that does not answer within this is shown as unreachable on the page.
MATCHER_SCRAPE_TIMEOUT_SECONDS = 1.0


@cache
def _allowed_networks(
    allowed: tuple[str, ...],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(entry.strip(), strict=False) for entry in allowed)


def metrics_allowed(request: HttpRequest) -> bool:
    token = settings.METRICS_BEARER_TOKEN
    if token:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return True
    try:
        address = ipaddress.ip_address(caller_address(request) or "")
    except ValueError:
        return False
    if address.version == 6 and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(
        address in network for network in _allowed_networks(tuple(settings.METRICS_ALLOWED_IPS))
    )


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        return JsonResponse(
            {"code": "FORBIDDEN", "message": "metrics are for the monitoring system"}, status=403
        )
    return HttpResponse(generate_latest(web_registry()), content_type=CONTENT_TYPE_LATEST)


def _matcher_exposition(target: str) -> str:
    url = target if "://" in target else f"http://{target}/metrics"
    with urllib.request.urlopen(url, timeout=MATCHER_SCRAPE_TIMEOUT_SECONDS) as response:
        return response.read().decode()


def metrics_page_data() -> dict:
    """The summary the staff page draws, with which sources answered."""
    expositions = [generate_latest(web_registry()).decode()]
    sources = {"web": True}
    for target in settings.MATCHER_METRICS_TARGETS:
        try:
            expositions.append(_matcher_exposition(target))
            sources[target] = True
        except (OSError, urllib.error.URLError, ValueError):
            sources[target] = False
    return {"at": time.time(), "sources": sources, **metrics_summary(expositions)}


@never_cache
@require_GET
def staff_metrics_data(request: HttpRequest) -> JsonResponse:
    return JsonResponse(metrics_page_data())


@require_GET
def staff_metrics_page(request: HttpRequest) -> TemplateResponse:
    return TemplateResponse(
        request,
        "admin/metrics.html",
        {
            **admin.site.each_context(request),
            "title": "Platform metrics",
            "is_nav_sidebar_enabled": False,  # the charts take the page's width
        },
    )
