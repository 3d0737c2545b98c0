"""Change history context for the back office only.

pghistory's middleware attaches the request's user and URL to every history row a
write makes, by prefixing each SQL statement of the request. Staff change the tracked
models (accounts, markets, fee tiers, KYC, rules) in the admin; traders' API requests
do not, and the order path should not pay a prefix on each of its statements. So the
context is set for writes under the admin and nowhere else.
"""

from __future__ import annotations

from django.urls import NoReverseMatch, reverse
from pghistory import config
from pghistory.middleware import HistoryMiddleware


def _admin_prefix() -> str | None:
    try:
        return reverse("admin:index")
    except NoReverseMatch:  # a URL configuration without the admin
        return None


class BackOfficeHistoryMiddleware(HistoryMiddleware):
    def __init__(self, get_response):
        super().__init__(get_response)
        self._prefix: str | None = None  # the admin's URL, looked up on first use

    def _in_back_office(self, request) -> bool:
        if self._prefix is None:
            self._prefix = _admin_prefix() or "\0"  # "\0": no admin, no path matches
        return request.path.startswith(self._prefix)

    def __call__(self, request):
        if request.method in config.middleware_methods() and self._in_back_office(request):
            return super().__call__(request)
        return self.get_response(request)
