"""Who is calling: a trader's wallet session (``Authorization: Bearer <token>``, from
signing in with the wallet) or one of their API keys (``X-API-Key: <prefix>.<secret>``).

Either way ``request.user`` is a :class:`Trader`: the account and the scopes the
credential carries. A wallet session carries every scope; a key only those it was
created with. Staff do not use the API (they use the admin).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from django.db import connection
from django.utils import timezone
from rest_framework import authentication, exceptions

from dex.db import ModelRows
from exchange.models import Account, AccountStatus, ApiKey, ApiKeyScope
from exchange.services.sessions import session_account_id

ALL_SCOPES = frozenset(ApiKeyScope.values)


@dataclass(frozen=True, slots=True)
class Trader:
    """The authenticated caller of a trader endpoint."""

    account: Account
    scopes: frozenset[str]
    api_key_id: int | None = None

    is_authenticated = True
    is_anonymous = False
    is_staff = False

    @property
    def pk(self) -> int:
        return self.account.pk

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


_KEY = ModelRows(ApiKey, "k")
_ACCOUNT = ModelRows(Account, "a")
# Read on every request that carries a key: written once, not compiled per request.
_KEY_BY_PREFIX = (
    f"SELECT {_KEY.columns}, {_ACCOUNT.columns} FROM {ApiKey._meta.db_table} AS k"
    f" JOIN {Account._meta.db_table} AS a ON a.id = k.account_id"
    " WHERE k.prefix = %s ORDER BY k.id LIMIT 1"
)


def _api_key(prefix: str) -> ApiKey | None:
    """The key with ``prefix``, its account loaded with it."""
    return _KEY.fetch_one(connection, _KEY_BY_PREFIX, [prefix], related=(("account", _ACCOUNT),))


def _usable(account: Account) -> Account:
    if account.status == AccountStatus.CLOSED:
        raise exceptions.AuthenticationFailed("this account is closed")
    return account


class WalletSessionAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("give the token as 'Bearer <token>'")
        try:
            token = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("malformed token") from None
        account_id = session_account_id(token)
        account = Account.objects.filter(pk=account_id).first() if account_id else None
        if account is None:
            raise exceptions.AuthenticationFailed("the session is unknown or has expired")
        return Trader(_usable(account), ALL_SCOPES), token

    def authenticate_header(self, request) -> str:
        return self.keyword


class ApiKeyAuthentication(authentication.BaseAuthentication):
    header = "HTTP_X_API_KEY"

    def authenticate(self, request):
        raw = request.META.get(self.header)
        if raw is None:
            return None
        prefix, _, secret = raw.partition(".")
        if not prefix or not secret:
            raise exceptions.AuthenticationFailed("give the key as '<prefix>.<secret>'")
        key = _api_key(prefix)
        digest = hashlib.sha256(secret.encode()).hexdigest()
        if key is None or not hmac.compare_digest(key.key_hash, digest):
            raise exceptions.AuthenticationFailed("unknown API key")
        now = timezone.now()
        if key.revoked_at is not None:
            raise exceptions.AuthenticationFailed("this API key was revoked")
        if key.expires_at is not None and key.expires_at <= now:
            raise exceptions.AuthenticationFailed("this API key has expired")
        return Trader(_usable(key.account), frozenset(key.scopes), key.pk), key

    def authenticate_header(self, request) -> str:
        return "X-API-Key"


# Registers the schemes above with the OpenAPI generator.
from dex.api import schema as _schema  # noqa: E402, F401
