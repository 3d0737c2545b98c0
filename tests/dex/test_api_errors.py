"""The API's answer when the database is away: a retryable 503, never a 500."""

import pytest
from django.db import InterfaceError, OperationalError
from rest_framework.test import APIRequestFactory

from dex.api.errors import RETRY_AFTER_SECONDS, exception_handler


@pytest.mark.parametrize(
    "exc",
    [
        OperationalError("connection to server at 127.0.0.1 failed: Connection refused"),
        InterfaceError("connection already closed"),
    ],
)
def test_a_database_that_cannot_be_reached_is_a_retryable_503(exc):
    request = APIRequestFactory().post("/api/v1/orders/")
    response = exception_handler(exc, {"request": request})
    assert response.status_code == 503
    assert response.data["code"] == "SERVICE_UNAVAILABLE"
    assert "retry" in response.data["message"]
    assert response.headers["Retry-After"] == str(RETRY_AFTER_SECONDS)


def test_other_exceptions_are_still_left_to_django():
    assert exception_handler(ZeroDivisionError(), {}) is None
