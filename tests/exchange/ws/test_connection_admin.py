"""Staff see the stream connections in the admin, read-only."""

import uuid

import pytest
from django.urls import reverse
from django.utils import timezone

from exchange.models import WebSocketConnection

pytestmark = pytest.mark.django_db


def test_staff_list_open_and_closed_connections_read_only(admin_client, trader):
    now = timezone.now()
    for closed in (None, now):
        WebSocketConnection.objects.create(
            connection_id=uuid.uuid4(),
            account=trader,
            client_address="192.0.2.1",
            connected_at=now,
            last_seen_at=now,
            disconnected_at=closed,
            subscriptions=["account"],
        )
    changelist = reverse("admin:exchange_websocketconnection_changelist")
    response = admin_client.get(changelist, {"disconnected_at__isnull": "True"})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 1
    assert admin_client.get(changelist, {"q": trader.wallet_address}).status_code == 200
    add = reverse("admin:exchange_websocketconnection_add")
    assert admin_client.get(add).status_code == 403
