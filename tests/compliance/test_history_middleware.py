"""The change-history context is set for the back office's writes, not the API's."""

import pytest
from django.test import RequestFactory
from pghistory import runtime

from compliance.middleware import BackOfficeHistoryMiddleware


def _context_during(method: str, path: str, user) -> dict | None:
    seen = {}

    def view(request):
        tracked = getattr(runtime._tracker, "value", None)
        seen["context"] = dict(tracked.metadata) if tracked else None
        return None

    request = getattr(RequestFactory(), method.lower())(path)
    request.user = user
    BackOfficeHistoryMiddleware(view)(request)
    return seen["context"]


@pytest.mark.django_db
def test_an_admin_write_carries_the_staff_user_and_url(staff):
    context = _context_during("POST", "/admin/exchange/account/1/change/", staff)
    assert context == {"user": staff.pk, "url": "/admin/exchange/account/1/change/"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("method", "path"),
    [("POST", "/api/v1/orders/"), ("DELETE", "/api/v1/orders/7/"), ("GET", "/admin/")],
)
def test_api_writes_and_reads_run_without_it(staff, method, path):
    assert _context_during(method, path, staff) is None
