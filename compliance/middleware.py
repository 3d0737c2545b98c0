"""Change history context for the back office only.

pghistory's middleware attaches the request's user and URL to every history row a
write makes, by prefixing each SQL statement of the request. Staff change the tracked
models (accounts, markets, fee tiers, KYC, rules) in the admin; traders' API requests
do not, and the order path should not pay a prefix on each of its statements. So the
context is set for writes under the admin and nowhere else.
"""

from __future__ import annotations

from functools import cached_property

from django.urls import reverse
from pghistory.middleware import HistoryMiddleware


class BackOfficeHistoryMiddleware(HistoryMiddleware):
    @cached_property
    def admin_prefix(self) -> str:
        return reverse("admin:index")

    def __call__(self, request):
        if not request.path.startswith(self.admin_prefix):
            return self.get_response(request)
        return super().__call__(request)
