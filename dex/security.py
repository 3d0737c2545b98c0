"""WebSocket origin policy.

Browsers always send ``Origin``: a page from another site must not open a socket
that rides on our session cookie, so a browser origin must be one of
``ALLOWED_HOSTS``. Trading bots send no ``Origin`` at all and authenticate with a
token or API key, so a missing header is allowed (Channels' stock validator refuses
it, which would lock out every non-browser client).
"""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin) -> bool:
        return parsed_origin is None or super().valid_origin(parsed_origin)


def browser_origin_validator(application):
    allowed = list(settings.ALLOWED_HOSTS)
    if settings.DEBUG and not allowed:
        allowed = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed)
