"""The exchange's WebSocket routes (included by ``dex.routing``)."""

from django.urls import path

from exchange.consumers import StreamConsumer

websocket_urlpatterns = [
    path("ws/stream/", StreamConsumer.as_asgi()),
]
