"""ASGI entry point: Django (API, admin, pages) over HTTP and Channels consumers over
WebSocket, served by one process."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")

# Django must be set up before anything imports models (the consumers do).
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dex.api.body_limit import RequestBodyLimit  # noqa: E402
from dex.request_threads import RequestThreads  # noqa: E402
from dex.routing import websocket_urlpatterns  # noqa: E402
from dex.security import browser_origin_validator  # noqa: E402

request_threads = RequestThreads(django_asgi_app)
application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(request_threads),
        "websocket": browser_origin_validator(URLRouter(websocket_urlpatterns)),
    }
)
