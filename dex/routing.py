"""WebSocket URL routes for the whole platform (apps contribute their own lists)."""

from django.urls import path

from dex.consumers import SystemConsumer

websocket_urlpatterns = [
    path("ws/system/", SystemConsumer.as_asgi()),
]
