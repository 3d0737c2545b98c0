"""Settings shared by every profile. Every value that differs between machines comes
from the environment (twelve-factor); nothing here holds a secret."""

from pathlib import Path

import environ
from celery.schedules import crontab

from dex.logging import logging_config
from dex.settings.services import redis_settings

BASE_DIR = Path(__file__).resolve().parent.parent.parent

env = environ.Env()

# The one value production refuses to run with (see dex.settings.production).
INSECURE_DEFAULT_SECRET_KEY = "django-insecure-dex-local-development-only-never-in-production"

SECRET_KEY = env.str("SECRET_KEY", default=INSECURE_DEFAULT_SECRET_KEY)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "pgtrigger",
    "pghistory",
    "exchange",
    "portfolio",
    "compliance",
]

MIDDLEWARE = [
    "dex.logging.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "dex.api.ratelimit.RateLimitMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Attaches the staff user and URL of a back-office write to the change-history
    # rows it makes (the API's writes skip it).
    "compliance.middleware.BackOfficeHistoryMiddleware",
]
# Reads change nothing, so only writes carry the history context.
PGHISTORY_MIDDLEWARE_METHODS = ("POST", "PUT", "PATCH", "DELETE")

ROOT_URLCONF = "dex.urls"
ASGI_APPLICATION = "dex.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- PostgreSQL: the system of record -------------------------------------------------
# Services own their transactions (@transaction.atomic(durable=True)), so requests are
# not wrapped in one.
DATABASES = {"default": env.db_url("DATABASE_URL")}
DATABASES["default"].update(
    ATOMIC_REQUESTS=False,
    CONN_MAX_AGE=env.int("DB_CONN_MAX_AGE", default=60),
    CONN_HEALTH_CHECKS=True,
)
DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
    "application_name", env.str("DB_APPLICATION_NAME", default="dex")
)
# The web process runs each request's sync code on a thread of the request's own
# (pooled, dex.request_threads, and more made under a burst): persistent connections,
# one per thread, would pile up towards max_connections. So web processes use a
# psycopg connection pool instead
# (DB_POOL_MAX_SIZE > 0, as the Procfile sets it); long-lived single-threaded processes
# (the matcher, commands, tests) keep one persistent connection.
DB_POOL_MAX_SIZE = env.int("DB_POOL_MAX_SIZE", default=0)
if DB_POOL_MAX_SIZE > 0:
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"]["pool"] = {
        "min_size": min(2, DB_POOL_MAX_SIZE),
        "max_size": DB_POOL_MAX_SIZE,
        "timeout": env.float("DB_POOL_TIMEOUT", default=10.0),
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: channel layer, Celery broker, cache --------------------------------------
REDIS_URL = env.str("REDIS_URL")
_redis = redis_settings(REDIS_URL)
CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {"hosts": [_redis.channels_host], "prefix": "dex:asgi"},
    }
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": _redis.url,
        "KEY_PREFIX": "dex:cache",
    }
}

CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=_redis.celery_url)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# A task taken by a worker that then died (kill -9, lost host) is handed out again
# after this many seconds; longer than any task runs.
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": env.int("CELERY_VISIBILITY_TIMEOUT", default=3600)
}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TIMEZONE = "UTC"
# Tasks retry a failure that may pass (a lost connection, a serialization failure) with
# exponential backoff up to this many times; see dex.tasks.RETRYING.
CELERY_TASK_MAX_RETRIES = env.int("CELERY_TASK_MAX_RETRIES", default=8)
CELERY_TASK_RETRY_BACKOFF_MAX = env.int("CELERY_TASK_RETRY_BACKOFF_MAX", default=600)

# --- Periodic work: the beat schedule (`beat` in the Procfile) ------------------------
# Intervals in seconds. Every periodic task stamps its work with the period it runs for,
# so a late, retried or repeated run of a period changes nothing.
ORDERBOOK_SNAPSHOT_INTERVAL = env.int("ORDERBOOK_SNAPSHOT_INTERVAL", default=60)
ORDERBOOK_SNAPSHOT_LEVELS = env.int("ORDERBOOK_SNAPSHOT_LEVELS", default=20)
CANDLE_ROLL_INTERVAL = env.int("CANDLE_ROLL_INTERVAL", default=15)
# Buckets younger than this are recomputed on every roll (see exchange.services.market_data).
CANDLE_SETTLE_SECONDS = env.int("CANDLE_SETTLE_SECONDS", default=120)
PORTFOLIO_SNAPSHOT_INTERVAL = env.int("PORTFOLIO_SNAPSHOT_INTERVAL", default=3600)
# The daily portfolio snapshot, for the previous UTC day, at this UTC hour and minute.
PORTFOLIO_DAILY_SNAPSHOT_AT = env.str("PORTFOLIO_DAILY_SNAPSHOT_AT", default="00:05")
# Portfolios are valued in this asset (its own price is 1), each other asset at the last
# trade price of its market against it.
PORTFOLIO_QUOTE_ASSET = env.str("PORTFOLIO_QUOTE_ASSET", default="USDC")
ORDER_ARCHIVE_INTERVAL = env.int("ORDER_ARCHIVE_INTERVAL", default=3600)
ORDER_ARCHIVE_AFTER_DAYS = env.int("ORDER_ARCHIVE_AFTER_DAYS", default=90)
ORDER_ARCHIVE_BATCH = env.int("ORDER_ARCHIVE_BATCH", default=10_000)

# --- Market surveillance (compliance.surveillance) ------------------------------------
# The detectors scan windows of WINDOW_SECONDS aligned on the Unix epoch; the scheduled
# scan runs every SCAN_INTERVAL seconds over the last CATCHUP_WINDOWS complete windows
# that ended at least SETTLE_SECONDS ago (so late cancels and trades are in). Each
# threshold is described in its detector's module docstring. Ratios and multiples are
# decimal strings.
SURVEILLANCE_SCAN_INTERVAL = env.int("SURVEILLANCE_SCAN_INTERVAL", default=60)
SURVEILLANCE = {
    "WINDOW_SECONDS": env.int("SURVEILLANCE_WINDOW_SECONDS", default=300),
    "SETTLE_SECONDS": env.int("SURVEILLANCE_SETTLE_SECONDS", default=60),
    "CATCHUP_WINDOWS": env.int("SURVEILLANCE_CATCHUP_WINDOWS", default=3),
    "MAX_RUN_WINDOWS": env.int("SURVEILLANCE_MAX_RUN_WINDOWS", default=2016),
    # Wash trading: trades between one account or accounts of one beneficial owner.
    "WASH_MIN_TRADES": env.int("SURVEILLANCE_WASH_MIN_TRADES", default=2),
    "WASH_MIN_NOTIONAL": env.str("SURVEILLANCE_WASH_MIN_NOTIONAL", default="0"),
    "WASH_HIGH_VOLUME_SHARE": env.str("SURVEILLANCE_WASH_HIGH_VOLUME_SHARE", default="0.25"),
    # Spoofing / layering: large orders cancelled quickly, (nearly) unfilled.
    "SPOOF_SIZE_MULTIPLE": env.str("SURVEILLANCE_SPOOF_SIZE_MULTIPLE", default="10"),
    "SPOOF_BASELINE_SECONDS": env.int("SURVEILLANCE_SPOOF_BASELINE_SECONDS", default=3600),
    "SPOOF_MIN_BASELINE_ORDERS": env.int("SURVEILLANCE_SPOOF_MIN_BASELINE_ORDERS", default=20),
    "SPOOF_CANCEL_SECONDS": env.int("SURVEILLANCE_SPOOF_CANCEL_SECONDS", default=5),
    "SPOOF_MAX_FILL_RATIO": env.str("SURVEILLANCE_SPOOF_MAX_FILL_RATIO", default="0.1"),
    "SPOOF_LAYER_ORDERS": env.int("SURVEILLANCE_SPOOF_LAYER_ORDERS", default=3),
    # Unusual volume and price moves against the market's own previous windows.
    "ACTIVITY_LOOKBACK_WINDOWS": env.int("SURVEILLANCE_ACTIVITY_LOOKBACK_WINDOWS", default=24),
    "ACTIVITY_MIN_HISTORY_WINDOWS": env.int(
        "SURVEILLANCE_ACTIVITY_MIN_HISTORY_WINDOWS", default=12
    ),
    "VOLUME_STDEVS": env.str("SURVEILLANCE_VOLUME_STDEVS", default="4"),
    "VOLUME_MIN_RATIO": env.str("SURVEILLANCE_VOLUME_MIN_RATIO", default="5"),
    "PRICE_STDEVS": env.str("SURVEILLANCE_PRICE_STDEVS", default="4"),
    "PRICE_MIN_MOVE_BPS": env.str("SURVEILLANCE_PRICE_MIN_MOVE_BPS", default="100"),
    # Order/cancel bursts: many orders placed and cancelled within seconds.
    "BURST_SECONDS": env.int("SURVEILLANCE_BURST_SECONDS", default=10),
    "BURST_MIN_ORDERS": env.int("SURVEILLANCE_BURST_MIN_ORDERS", default=50),
    "BURST_MIN_CANCEL_RATIO": env.str("SURVEILLANCE_BURST_MIN_CANCEL_RATIO", default="0.9"),
}

_daily_hour, _, _daily_minute = PORTFOLIO_DAILY_SNAPSHOT_AT.partition(":")
CELERY_BEAT_SCHEDULE = {
    "orderbook-snapshots": {
        "task": "exchange.orderbook_snapshots_take",
        "schedule": float(ORDERBOOK_SNAPSHOT_INTERVAL),
    },
    "candles-roll": {"task": "exchange.candles_roll_all", "schedule": float(CANDLE_ROLL_INTERVAL)},
    "orders-archive": {
        "task": "exchange.orders_archive",
        "schedule": float(ORDER_ARCHIVE_INTERVAL),
    },
    "portfolio-snapshots": {
        "task": "portfolio.snapshots_take",
        "schedule": float(PORTFOLIO_SNAPSHOT_INTERVAL),
        "kwargs": {"kind": "INTERVAL"},
    },
    "portfolio-snapshots-daily": {
        "task": "portfolio.snapshots_take",
        "schedule": crontab(hour=int(_daily_hour), minute=int(_daily_minute or 0)),
        "kwargs": {"kind": "DAILY"},
    },
    "surveillance-scan": {
        "task": "compliance.surveillance_scan_all",
        "schedule": float(SURVEILLANCE_SCAN_INTERVAL),
    },
}

# --- Django REST framework ------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["dex.api.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "dex.api.authentication.WalletSessionAuthentication",
        "dex.api.authentication.ApiKeyAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["dex.api.permissions.CanRead"],
    "DEFAULT_THROTTLE_CLASSES": ["dex.api.ratelimit.ApiRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "dex.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
    "COERCE_DECIMAL_TO_STRING": True,
}
# A JSON body larger than this is refused with 413 before it is parsed (and, under /api/,
# before it is read: dex.api.body_limit).
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("API_MAX_BODY_BYTES", default=256 * 1024)

# --- API rate limits (dex.api.ratelimit) ---------------------------------------------
# Each limit is "<requests>/<seconds>": a burst of that many, refilled evenly over the
# seconds. Orders (place, amend, cancel) have their own, stricter buckets.
API_RATE_LIMIT_ENABLED = env.bool("API_RATE_LIMIT_ENABLED", default=True)
API_RATE_LIMIT_REDIS_URL = env.str("API_RATE_LIMIT_REDIS_URL", default=REDIS_URL)
# Past this the limiter gives up on Redis and lets the request through.
API_RATE_LIMIT_REDIS_TIMEOUT = env.float("API_RATE_LIMIT_REDIS_TIMEOUT", default=0.2)
API_RATE_LIMIT_KEY_PREFIX = env.str("API_RATE_LIMIT_KEY_PREFIX", default="dex:rl")
# How many reverse proxies in front of the web process append to X-Forwarded-For; with
# 0 the header is ignored, since any client can send it.
API_TRUSTED_PROXIES = env.int("API_TRUSTED_PROXIES", default=0)


def _rate(var: str, default: str) -> tuple[int, float]:
    count, _, seconds = env.str(var, default=default).partition("/")
    return int(count), float(seconds or 1)


API_RATE_LIMITS = {
    "default": {
        "credential": _rate("API_RATE_LIMIT_CREDENTIAL", "100/1"),
        "ip": _rate("API_RATE_LIMIT_IP", "200/1"),
        "global": _rate("API_RATE_LIMIT_GLOBAL", "20000/1"),
    },
    "orders": {
        "credential": _rate("API_RATE_LIMIT_ORDERS_CREDENTIAL", "50/1"),
        "ip": _rate("API_RATE_LIMIT_ORDERS_IP", "100/1"),
        "global": _rate("API_RATE_LIMIT_ORDERS_GLOBAL", "3000/1"),
    },
}

SPECTACULAR_SETTINGS = {
    "TITLE": "DEX trading API",
    "DESCRIPTION": (
        "Wallet-signed (EIP-712) orders on an off-chain order book. Sign in with the "
        "wallet (`/api/v1/auth/challenge`, `/api/v1/auth/login`) or use an API key "
        "(`X-API-Key: <prefix>.<secret>`). Errors are always "
        '`{"code", "message", "details"}`. The typed struct an order signs is served at '
        "`/api/v1/eip712/`."
    ),
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "dex.api.schema.add_error_responses",
    ],
}

# --- Auth, i18n, static ---------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

# --- Logs, metrics, health (dex.logging, dex.metrics, dex.health) ---------------------
# One JSON object a line (json) or the same fields as text (plain: dex.settings.local's
# default), each with the request id of the request it was written for.
LOG_FORMAT = env.str("LOG_FORMAT", default="json")
LOG_LEVEL = env.str("LOG_LEVEL", default="INFO")
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
# With json, Celery workers log through LOGGING too rather than replace the root logger's
# handlers with their own text format (which plain keeps).
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"

# Health checks must answer quickly even when a dependency hangs.
HEALTH_CHECK_TIMEOUT_SECONDS = env.float("HEALTH_CHECK_TIMEOUT_SECONDS", default=2.0)
# /readyz: a market whose oldest pending command is older than this is not being matched.
READYZ_MAX_COMMAND_AGE_SECONDS = env.float("READYZ_MAX_COMMAND_AGE_SECONDS", default=10.0)
# /readyz asks the Celery workers for a ping unless this is off (no workers expected).
READYZ_CHECK_CELERY = env.bool("READYZ_CHECK_CELERY", default=True)

# /metrics answers callers from these addresses or networks, or with
# ``Authorization: Bearer <METRICS_BEARER_TOKEN>`` (when the token is set); everyone else
# gets 403. dex.settings.production allows no address by default.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=["127.0.0.1", "::1"])
METRICS_BEARER_TOKEN = env.str("METRICS_BEARER_TOKEN", default="")
# Each matcher serves its own metrics over HTTP here (0: off). Run one matcher per port.
MATCHER_METRICS_PORT = env.int("MATCHER_METRICS_PORT", default=9101)
MATCHER_METRICS_ADDR = env.str("MATCHER_METRICS_ADDR", default="127.0.0.1")
# Where the staff metrics page reads the matchers' metrics: host:port each.
MATCHER_METRICS_TARGETS = env.list(
    "MATCHER_METRICS_TARGETS",
    default=[f"127.0.0.1:{MATCHER_METRICS_PORT}"] if MATCHER_METRICS_PORT else [],
)
# The broker queues whose length /metrics reports (Celery's default queue is "celery").
METRICS_CELERY_QUEUES = env.list("METRICS_CELERY_QUEUES", default=["celery"])

# ``manage.py seed_demo`` only where demo data belongs.
DEMO_DATA_ALLOWED = env.bool("DEMO_DATA_ALLOWED", default=False)

# --- What traders sign ------------------------------------------------------------------
# The EIP-712 domain of signed orders: clients read it from /api/v1/eip712/. The
# verifying contract is the venue's on-chain vault.
EIP712_DOMAIN_NAME = env.str("EIP712_DOMAIN_NAME", default="DEX")
EIP712_DOMAIN_VERSION = env.str("EIP712_DOMAIN_VERSION", default="1")
EIP712_CHAIN_ID = env.int("EIP712_CHAIN_ID", default=1)
EIP712_VERIFYING_CONTRACT = env.str(
    "EIP712_VERIFYING_CONTRACT", default="0x5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e5a1e"
)
# Sign-in with Ethereum (EIP-4361): the site a login message names.
SIWE_DOMAIN = env.str("SIWE_DOMAIN", default="localhost:8000")
SIWE_URI = env.str("SIWE_URI", default="http://localhost:8000")
LOGIN_CHALLENGE_TTL = env.int("LOGIN_CHALLENGE_TTL", default=300)
SESSION_TOKEN_TTL = env.int("SESSION_TOKEN_TTL", default=24 * 3600)

# --- KYC ------------------------------------------------------------------------------
# Document numbers are kept only as SHA-256 of this salt and the number: set a secret
# value in production, and never change it (the hashes of stored documents would no
# longer match new submissions of the same document).
INSECURE_DEFAULT_KYC_DOCUMENT_SALT = "dex-development-kyc-document-salt"
KYC_DOCUMENT_SALT = env.str("KYC_DOCUMENT_SALT", default=INSECURE_DEFAULT_KYC_DOCUMENT_SALT)

# --- Row-level security -----------------------------------------------------------------
# The PostgreSQL role trader reads run under (``dex.api.rls``); the migration
# ``compliance.0002_row_level_security`` creates it and its policies. The app's own user
# must be able to ``SET ROLE`` to it (the migration grants that when it can).
API_DB_ROLE = env.str("API_DB_ROLE", default="dex_api")
# How long an order request waits for the matcher's reply before answering PENDING.
ORDER_REPLY_TIMEOUT = env.float("ORDER_REPLY_TIMEOUT", default=0.5)

# --- WebSocket streams (exchange.consumers) ---------------------------------------------
WS_MAX_SUBSCRIPTIONS = env.int("WS_MAX_SUBSCRIPTIONS", default=50)
# Client messages per second (a burst of as many), past which the socket is closed.
WS_MAX_MESSAGES_PER_SECOND = env.float("WS_MAX_MESSAGES_PER_SECOND", default=20)
# Messages queued for a client that is not reading them before it is disconnected.
WS_SEND_QUEUE_LIMIT = env.int("WS_SEND_QUEUE_LIMIT", default=1000)
# Seconds without any message from the client (send pings) before the server closes.
WS_IDLE_TIMEOUT = env.float("WS_IDLE_TIMEOUT", default=60)
# The range a cancel-on-disconnect heartbeat timeout may be set to, in seconds.
WS_DEAD_MAN_MIN_TIMEOUT = env.float("WS_DEAD_MAN_MIN_TIMEOUT", default=1)
WS_DEAD_MAN_MAX_TIMEOUT = env.float("WS_DEAD_MAN_MAX_TIMEOUT", default=300)
# How often each web process recomputes a watched ticker / current candle.
WS_TICKER_INTERVAL = env.float("WS_TICKER_INTERVAL", default=1.0)
WS_CANDLE_INTERVAL = env.float("WS_CANDLE_INTERVAL", default=1.0)
# Order updates within this many seconds share one balances message.
WS_BALANCE_DEBOUNCE = env.float("WS_BALANCE_DEBOUNCE", default=0.05)
# How often an open connection's monitoring row is brought up to date (when changed).
WS_CONNECTION_FLUSH_SECONDS = env.float("WS_CONNECTION_FLUSH_SECONDS", default=30)
# How often an authenticated connection's credential is checked again, as a request's
# would be: a key or session that expired, or an account closed, ends the connection.
WS_CREDENTIAL_RECHECK_SECONDS = env.float("WS_CREDENTIAL_RECHECK_SECONDS", default=30)
