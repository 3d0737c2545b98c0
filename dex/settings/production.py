"""Production: refuses to start with the development secret key, the development KYC
document salt or with DEBUG on, and turns on the transport-security settings."""

from django.core.exceptions import ImproperlyConfigured

from dex.settings.base import *  # noqa: F403
from dex.settings.base import (
    DEBUG,
    INSECURE_DEFAULT_KYC_DOCUMENT_SALT,
    INSECURE_DEFAULT_SECRET_KEY,
    KYC_DOCUMENT_SALT,
    SECRET_KEY,
    env,
)

if DEBUG:
    raise ImproperlyConfigured("DEBUG must be off in production (unset DEBUG or set DEBUG=0).")
if (
    SECRET_KEY == INSECURE_DEFAULT_SECRET_KEY
    or SECRET_KEY.startswith("django-insecure")
    or len(SECRET_KEY) < 50
    or len(set(SECRET_KEY)) < 5
):
    raise ImproperlyConfigured(
        "SECRET_KEY must be set to a long random value in production "
        "(at least 50 characters; generate one with "
        "`python -c 'import secrets; print(secrets.token_urlsafe(64))'`)."
    )

if KYC_DOCUMENT_SALT == INSECURE_DEFAULT_KYC_DOCUMENT_SALT or len(KYC_DOCUMENT_SALT) < 32:
    raise ImproperlyConfigured(
        "KYC_DOCUMENT_SALT must be set to a long random value in production (at least 32 "
        "characters), and never changed: stored document-number hashes depend on it."
    )

SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=True)
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]
SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=False)
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
# /metrics is closed unless the operator names the scrapers' addresses or sets a token.
METRICS_ALLOWED_IPS = env.list("METRICS_ALLOWED_IPS", default=[])
