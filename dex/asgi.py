"""ASGI entry point: Django (API, admin, pages) over HTTP and Channels consumers over
WebSocket, served by one process.

HTTP runs Django's WSGI handler on a pooled thread per request (``dex.wsgi_bridge``,
``dex.request_threads``): one trip from the event loop to the request's thread and
back, where Django's ASGI handler made several."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dex.settings.local")

# Django must be set up before anything imports models (the consumers do).
django_wsgi_app = get_wsgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from dex.api.body_limit import RequestBodyLimit  # noqa: E402
from dex.request_threads import RequestThreads  # noqa: E402
from dex.routing import websocket_urlpatterns  # noqa: E402
from dex.security import browser_origin_validator  # noqa: E402
from dex.wsgi_bridge import WsgiBridge  # noqa: E402

request_threads = RequestThreads(WsgiBridge(django_wsgi_app))
application = ProtocolTypeRouter(
    {
        "http": RequestBodyLimit(request_threads),
        "websocket": browser_origin_validator(URLRouter(websocket_urlpatterns)),
    }
)
