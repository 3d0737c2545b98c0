"""Derive every Redis client's address from the one ``REDIS_URL``.

The channel layer, the cache and the Celery broker each spell a Redis address their
own way, and a Unix socket (the embedded Redis) differently again; operators set one
URL and this module translates it.
"""

from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    channels_host: dict[str, str]
    celery_url: str


def redis_settings(url: str) -> RedisSettings:
    parts = urlsplit(url)
    if parts.scheme == "unix":
        db = parse_qs(parts.query).get("db", ["0"])[0]
        return RedisSettings(
            url=url,
            channels_host={"address": url},
            celery_url=f"redis+socket://{parts.path}?virtual_host={db}",
        )
    if parts.scheme in ("redis", "rediss"):
        return RedisSettings(url=url, channels_host={"address": url}, celery_url=url)
    raise ImproperlyConfigured(
        f"REDIS_URL must start with redis://, rediss:// or unix:// (got {parts.scheme!r})"
    )
