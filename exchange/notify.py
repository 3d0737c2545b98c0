"""Telling open WebSocket connections that something changed outside the matcher.

The matcher publishes order updates itself; these are the other events a trader's
private stream must hear about:

- an account's balances moved (a deposit, a withdrawal request or its outcome, a staff
  adjustment): its ``account`` subscribers are sent fresh ``account.balances``;
- a credential was revoked (an API key) or ended (a wallet session): connections that
  authenticated with it are closed with 4401.

Both are sent after the transaction that made the change commits, and never fail it:
Redis being away costs the stream an update, not the deposit.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

BALANCES_CHANGED = "account.balances_changed"
CREDENTIAL_REVOKED = "credential.revoked"


def account_group(account_id: int) -> str:
    return f"account.{account_id}"


def api_key_group(key_id: int) -> str:
    return f"credential.key.{key_id}"


def session_group(token: str) -> str:
    """A wallet session's group, named by a hash of its token (never the token)."""
    return f"credential.session.{hashlib.sha256(token.encode()).hexdigest()[:40]}"


def _send_on_commit(messages: list[tuple[str, dict]]) -> None:
    def send() -> None:
        layer = get_channel_layer()
        for group, message in messages:
            try:
                async_to_sync(layer.group_send)(group, message)
            except Exception:
                log.warning("stream notification to %s not sent", group, exc_info=True)

    transaction.on_commit(send)


def balances_changed(account_ids: Iterable[int]) -> None:
    """After commit, have each account's private streams send its balances again."""
    _send_on_commit(
        [(account_group(pk), {"type": BALANCES_CHANGED}) for pk in sorted(set(account_ids))]
    )


def credential_revoked(group: str) -> None:
    """After commit, close the connections that authenticated with the credential."""
    _send_on_commit([(group, {"type": CREDENTIAL_REVOKED})])
