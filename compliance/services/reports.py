"""Recording report exports: every export is an audit event of its own, written when the
export starts (before its first row leaves), whether it then runs to the end or not."""

from __future__ import annotations

from typing import Any

from django.db import transaction

from compliance.models import AuditEvent, BackOffice
from compliance.services.audit import Actor, audit_record
from exchange.models import Account, Market

REPORT_EXPORT = "report.export"

# The target of an export that names neither a market nor an account: the venue, recorded
# as the back office itself (target ``compliance.backoffice`` / ``venue``).
VENUE = BackOffice(pk="venue")


@transaction.atomic(durable=True)
def report_export_start(
    *,
    actor: Actor,
    report: str,
    parameters: dict[str, Any],
    market: Market | None = None,
    account: Account | None = None,
) -> AuditEvent:
    """Record that ``actor`` is exporting ``report`` with ``parameters`` (JSON-safe, as
    the report's form gives them): against the account the report is about, else its
    market, else the venue."""
    return audit_record(
        actor=actor,
        action=REPORT_EXPORT,
        target=account or market or VENUE,
        after={"report": report, **parameters},
    )
