"""Signing in with the wallet, and the sessions and API keys traders use afterwards.

Sign-in is EIP-4361: the server issues a message with a single-use nonce and an
expiry; the wallet ``personal_sign``-s it; the server checks the message is the one it
issued and that the wallet's address signed it, then opens a session. A wallet seen
for the first time gets an account (KYC tier 0: it may sign in and deposit, and trades
once its KYC allows).

Sessions and login challenges live in Redis with their expiry: losing Redis signs
traders out and moves no money. API keys live in PostgreSQL, as a SHA-256 of the secret.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from compliance.gates import sign_in_refusal
from dex.redis import redis_client
from exchange.models import Account, AccountStatus, ApiKey, ApiKeyScope
from exchange.notify import api_key_group, credential_revoked, session_group
from exchange.services.accounts import account_register, wallet_address_normalize
from exchange.signing import SignatureError, login_message, recover_message_signer


class SignInError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class LoginChallenge:
    message: str
    nonce: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class Session:
    token: str
    account: Account
    expires_at: datetime


def _challenge_key(nonce: str) -> str:
    return f"dex:login:{nonce}"


def _session_key(token: str) -> str:
    return "dex:session:" + hashlib.sha256(token.encode()).hexdigest()


def login_challenge_issue(*, address: str) -> LoginChallenge:
    """A message for ``address`` to sign, valid for ``LOGIN_CHALLENGE_TTL`` seconds."""
    address = wallet_address_normalize(address)
    nonce = secrets.token_hex(16)
    now = timezone.now().replace(microsecond=0)
    expires_at = now + timedelta(seconds=settings.LOGIN_CHALLENGE_TTL)
    message = login_message(address=address, nonce=nonce, issued_at=now, expires_at=expires_at)
    redis_client().set(
        _challenge_key(nonce),
        json.dumps({"address": address, "message": message}),
        # Gone at the message's own Expiration Time, not a TTL counted from a later now.
        exat=int(expires_at.timestamp()),
    )
    return LoginChallenge(message=message, nonce=nonce, expires_at=expires_at)


_NONCE = re.compile(r"^Nonce: ([0-9a-f]{32})$", re.MULTILINE)


def login_complete(*, message: str, signature: str) -> Session:
    """Open a session for the wallet that signed ``message``, which must be a challenge
    this server issued and nobody has used."""
    match = _NONCE.search(message)
    if match is None:
        raise SignInError("INVALID_LOGIN_MESSAGE", "the message is not a sign-in challenge")
    # GETDEL: a challenge answers once, whether or not this answer is good.
    stored = redis_client().getdel(_challenge_key(match.group(1)))
    if stored is None:
        raise SignInError("LOGIN_CHALLENGE_EXPIRED", "unknown, used or expired challenge")
    challenge = json.loads(stored)
    if message != challenge["message"]:
        raise SignInError("INVALID_LOGIN_MESSAGE", "the message differs from the challenge")
    try:
        signer = recover_message_signer(message, signature)
    except SignatureError as exc:
        raise SignInError("INVALID_SIGNATURE", str(exc)) from None
    if signer != challenge["address"]:
        raise SignInError("SIGNATURE_MISMATCH", "the message was signed by another wallet")
    account = _account_for_wallet(signer)
    if account.status == AccountStatus.CLOSED:
        raise SignInError("ACCOUNT_CLOSED", "this account is closed")
    refusal = sign_in_refusal(account=account)
    if refusal is not None:
        raise SignInError(refusal.code, refusal.message)
    token = secrets.token_urlsafe(32)
    ttl = settings.SESSION_TOKEN_TTL
    redis_client().set(_session_key(token), account.pk, ex=ttl)
    return Session(token, account, timezone.now() + timedelta(seconds=ttl))


def _account_for_wallet(address: str) -> Account:
    account = Account.objects.filter(wallet_address=address).first()
    if account is not None:
        return account
    try:
        with transaction.atomic():
            return account_register(wallet_address=address)
    except IntegrityError:  # the same wallet signed in twice at once
        return Account.objects.get(wallet_address=address)


def session_account_id(token: str) -> int | None:
    value = redis_client().get(_session_key(token))
    return int(value) if value is not None else None


def session_end(*, token: str) -> None:
    """Sign out: the token stops working, and open streams that signed in with it close."""
    redis_client().delete(_session_key(token))
    credential_revoked(session_group(token))


# --- API keys -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    key: ApiKey
    secret: str  # "<prefix>.<secret>": shown once, never stored


MAX_ACTIVE_API_KEYS = 20


@transaction.atomic(durable=True)
def api_key_create(
    *, account: Account, name: str, scopes: list[str], expires_at: datetime | None = None
) -> IssuedApiKey:
    scopes = sorted(set(scopes))
    if not scopes or not set(scopes) <= set(ApiKeyScope.values):
        raise SignInError("INVALID_SCOPES", f"scopes are some of {', '.join(ApiKeyScope.values)}")
    if expires_at is not None and expires_at <= timezone.now():
        raise SignInError("ALREADY_EXPIRED", "the expiry has passed")
    # Serialise key creation per account, so the cap holds under concurrent requests.
    Account.objects.select_for_update().filter(pk=account.pk).first()
    active = ApiKey.objects.filter(account=account, revoked_at__isnull=True).count()
    if active >= MAX_ACTIVE_API_KEYS:
        raise SignInError("TOO_MANY_API_KEYS", f"at most {MAX_ACTIVE_API_KEYS} active keys")
    prefix = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    key = ApiKey.objects.create(
        account=account,
        name=name,
        prefix=prefix,
        key_hash=hashlib.sha256(secret.encode()).hexdigest(),
        scopes=scopes,
        expires_at=expires_at,
    )
    return IssuedApiKey(key, f"{prefix}.{secret}")


@transaction.atomic(durable=True)
def api_key_revoke(*, account: Account, key: ApiKey) -> ApiKey:
    locked = ApiKey.objects.select_for_update().get(pk=key.pk, account=account)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        # Open streams that authenticated with the key close once this commits.
        credential_revoked(api_key_group(locked.pk))
    return locked
