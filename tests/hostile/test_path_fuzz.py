"""Path segments and query strings the API looks things up by, under arbitrary text
(NUL characters, other scripts, huge numbers, percent-encoding): every answer is a 4xx
in the error shape or a 2xx, never a 5xx, and nothing is written."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.hostile.conftest import FUZZ, assert_error_shape, ledger_state

pytestmark = pytest.mark.django_db

LOOKUPS = [
    ("GET", "/api/v1/orders/by-client-id/{}/"),
    ("DELETE", "/api/v1/orders/by-client-id/{}/"),
    ("GET", "/api/v1/orders/{}/"),
    ("GET", "/api/v1/markets/{}/"),
    ("GET", "/api/v1/markets/{}/depth/"),
    ("GET", "/api/v1/markets/{}/candles/"),
    ("DELETE", "/api/v1/api-keys/{}/"),
    ("GET", "/api/v1/orders/?market={}"),
    ("GET", "/api/v1/fills/?order_id={}"),
    ("GET", "/api/v1/markets/ETH-USDC/candles/?interval={}&limit={}"),
]
segments = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["\x00", "A\x00B", "١٢", "9" * 40, "-1", "..", "%2F", " ", "ETH-USDC\x00"]),
)


def answer(api, method: str, template: str, segment: str):
    path = template.replace("{}", quote(segment, safe=""))
    return api.generic(method, path)


@pytest.mark.parametrize(("method", "template"), LOOKUPS)
def test_a_nul_in_a_lookup_is_refused_not_a_500(funded, market, method, template):
    before = ledger_state()
    response = answer(funded.api, method, template, "A\x00B")
    assert_error_shape(response)
    assert ledger_state() == before


@given(lookup=st.sampled_from(LOOKUPS), segment=segments)
@FUZZ
def test_any_lookup_text_is_answered_without_a_5xx(funded, market, lookup, segment):
    before = ledger_state()
    response = answer(funded.api, *lookup, segment)
    assert response.status_code < 500, (lookup, segment, response.content[:300])
    if response.status_code >= 400:
        assert_error_shape(response)
        assert ledger_state() == before
