"""WebSocket URL routes for the whole platform (apps contribute their own lists)."""

from django.urls import path

from dex.consumers import SystemConsumer
from exchange.routing import websocket_urlpatterns as exchange_websocket_urlpatterns

websocket_urlpatterns = [
    path("ws/system/", SystemConsumer.as_asgi()),
    *exchange_websocket_urlpatterns,
]
