"""The audit trail: every staff action is recorded in the transaction that makes it.

Services take an :class:`Actor` (the staff user and the address they acted from, or
:data:`SYSTEM` for the platform's own jobs) and call :func:`audit_record` before they
return, inside their own ``transaction.atomic`` block: if the change rolls back, so
does its record, and a change can never commit without one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, models
from django.http import HttpRequest

from compliance.models import AuditEvent
from dex.api.ratelimit import caller_address


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts: a staff user (``user``) from ``ip_address``, or the platform itself."""

    user: AbstractBaseUser | None
    ip_address: str | None = None

    @classmethod
    def from_request(cls, request: HttpRequest) -> Actor:
        """The request's user, from the address it came from (none when that is not an
        IP address, e.g. a unix-socket peer: the audit row must still be written)."""
        address = caller_address(request)
        try:
            address = str(ipaddress.ip_address(address or ""))
        except ValueError:
            address = None
        return cls(user=request.user, ip_address=address)

    @property
    def label(self) -> str:
        return self.user.get_username() if self.user is not None else "system"


SYSTEM = Actor(user=None)


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, models.Model):
        return value.pk
    return value


def model_state(obj: models.Model, fields: list[str]) -> dict[str, Any]:
    """``obj``'s ``fields`` as JSON-safe values (decimals as strings, foreign keys as
    their ids) for an audit record's before/after."""
    state = {}
    for name in fields:
        field = obj._meta.get_field(name)
        attname = getattr(field, "attname", name)
        state[name] = _json_value(getattr(obj, attname))
    return state


def audit_record(
    *,
    actor: Actor,
    action: str,
    target: models.Model,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    reason: str = "",
) -> AuditEvent:
    """Record ``action`` on ``target``. Must run inside the transaction that makes the
    change it records."""
    if not connection.in_atomic_block:
        raise RuntimeError("audit_record must run in the transaction of the change it records")
    return AuditEvent.objects.create(
        actor=actor.user,
        actor_label=actor.label,
        action=action,
        target_type=target._meta.label_lower,
        target_id=str(target.pk),
        target_repr=str(target)[:255],
        reason=reason,
        before=before,
        after=after,
        ip_address=actor.ip_address,
    )
