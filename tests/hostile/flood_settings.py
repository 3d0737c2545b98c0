"""Settings of the web process the live abuse tests start: the test settings with rate
limits a flood from one test can reach (requests per second, as ``<count>/<seconds>``),
and the limiter's keys under a prefix of the test's own."""

from dex.settings.test import *  # noqa: F403
from dex.settings.test import env

API_RATE_LIMITS = {
    scope: {
        "credential": (env.int("FLOOD_CREDENTIAL_LIMIT"), 1.0),
        "ip": (env.int("FLOOD_IP_LIMIT"), 1.0),
        "global": (1_000_000, 1.0),
    }
    for scope in ("default", "orders")
}
API_RATE_LIMIT_KEY_PREFIX = env.str("FLOOD_KEY_PREFIX")
