"""Derive every Redis client's address from the one ``REDIS_URL``.

The channel layer, the cache and the Celery broker each spell a Redis address their
own way, and a Unix socket (the embedded Redis) differently again; operators set one
URL and this module translates it.
"""

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ImproperlyConfigured

# The channel layer waits for messages with a server-side blocking pop of up to 5 s
# (channels_redis' ``brpop_timeout``); redis-py 8 reads with a 5 s socket timeout by
# default, so a channel idle for 5 s raised TimeoutError and took its WebSocket down.
# The socket timeout must outlast the pop.
CHANNEL_LAYER_SOCKET_TIMEOUT = 15.0
# redis-py's asyncio pool refuses (MaxConnectionsError) rather than waits past its cap;
# a web process with thousands of sockets joining and leaving groups needs headroom.
CHANNEL_LAYER_MAX_CONNECTIONS = 1000


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    channels_host: dict
    celery_url: str


def _channels_host(url: str) -> dict:
    return {
        "address": url,
        "socket_timeout": CHANNEL_LAYER_SOCKET_TIMEOUT,
        "max_connections": CHANNEL_LAYER_MAX_CONNECTIONS,
    }


def redis_settings(url: str) -> RedisSettings:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        db = parse_qs(parts.query).get("db", ["0"])[0]
        return RedisSettings(
            url=url,
            channels_host=_channels_host(url),
            celery_url=f"redis+socket://{parts.path}?virtual_host={db}",
        )
    if parts.scheme in ("redis", "rediss"):
        return RedisSettings(
            url=url,
            channels_host=_channels_host(url),
            celery_url=url,
        )
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix:// (got {parts.scheme!r})"
    )
