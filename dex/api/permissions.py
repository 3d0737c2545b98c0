"""What an authenticated trader's credential allows."""

from __future__ import annotations

from rest_framework import permissions

from dex.api.authentication import Trader
from exchange.models import ApiKeyScope


class IsTrader(permissions.BasePermission):
    message = "sign in with your wallet or give an API key"

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, Trader)


class _Scope(IsTrader):
    scope: str
    safe_methods_scope: str | None = None

    def has_permission(self, request, view) -> bool:
        if not super().has_permission(request, view):
            return False
        needed = (
            self.safe_methods_scope
            if self.safe_methods_scope and request.method in permissions.SAFE_METHODS
            else self.scope
        )
        if request.user.has_scope(needed):
            return True
        self.message = f"this API key lacks the '{needed}' scope"
        return False


class CanRead(_Scope):
    scope = ApiKeyScope.READ


class CanTrade(_Scope):
    """Reads need ``read``; placing, amending and cancelling need ``trade``."""

    scope = ApiKeyScope.TRADE
    safe_methods_scope = ApiKeyScope.READ


class CanWithdraw(_Scope):
    scope = ApiKeyScope.WITHDRAW
    safe_methods_scope = ApiKeyScope.READ


class IsWalletSession(IsTrader):
    """Managing API keys takes the wallet itself, not a key."""

    message = "API keys are managed from a wallet session, not with an API key"

    def has_permission(self, request, view) -> bool:
        return super().has_permission(request, view) and request.user.api_key_id is None
