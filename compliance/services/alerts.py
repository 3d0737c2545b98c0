"""Surveillance alerts: raising them (the scheduled scan and the on-demand run) and their
triage by compliance staff (assign, note, escalate, close).

Every triage service takes an :class:`~compliance.services.audit.Actor`, runs in one
transaction, locks the alert row first (two officers acting on one alert queue up
behind each other and the second sees what the first did) and writes one AuditEvent.
What the alert's state machine refuses is refused here with an :class:`AlertRefused`
saying why, before the database's trigger would refuse it (and the trigger's refusal,
should a path get past the check, becomes the same error).
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from django.contrib.auth.models import AbstractBaseUser
from django.db import InternalError, transaction
from django.utils import timezone

from compliance.models import (
    ALERT_OPEN_STATUSES,
    AlertNote,
    AlertStatus,
    SurveillanceAlert,
)
from compliance.services.audit import Actor, audit_record, model_state
from compliance.surveillance import runner
from compliance.surveillance.config import SurveillanceConfig
from compliance.surveillance.findings import Window, iso
from exchange.models import Market

log = logging.getLogger(__name__)

TRIAGE_PERMISSION = "compliance.triage_alert"
CLOSING_STATUSES = (AlertStatus.FALSE_POSITIVE, AlertStatus.REPORTED)
AUDITED_FIELDS = ["status", "assignee", "closed_at"]


class AlertRefused(Exception):
    """A triage step the alert's state (or the input) does not allow; nothing changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _refusals_mapped(service):
    """Turn the status trigger's refusal into an AlertRefused (after the rollback)."""

    @functools.wraps(service)
    def wrapper(*args, **kwargs):
        try:
            return service(*args, **kwargs)
        except InternalError as exc:
            if "Invalid transition" not in str(exc):
                raise
            raise AlertRefused(
                "INVALID_TRANSITION", f"the alert cannot make that status change: {exc}"
            ) from exc

    return wrapper


def _locked(alert: SurveillanceAlert) -> SurveillanceAlert:
    """The alert's row, locked until the transaction ends, as it is now."""
    return (
        SurveillanceAlert.objects.select_for_update(of=("self",))
        .select_related("assignee")
        .get(pk=alert.pk)
    )


def _require_open(alert: SurveillanceAlert, doing: str) -> None:
    if alert.status not in ALERT_OPEN_STATUSES:
        raise AlertRefused(
            "ALERT_CLOSED",
            f"alert #{alert.pk} is already closed ({alert.get_status_display()}); "
            f"it cannot be {doing}",
        )


def _require_person(actor: Actor) -> AbstractBaseUser:
    if actor.user is None:
        raise AlertRefused("NO_AUTHOR", "alert triage is done by a staff member, not the platform")
    return actor.user


def _note_text(note: str, *, required_for: str) -> str:
    text = (note or "").strip()
    if not text:
        raise AlertRefused("NOTE_REQUIRED", f"a note is required to {required_for}")
    return text


def can_triage(user: AbstractBaseUser | None) -> bool:
    return bool(user and user.is_active and user.is_staff and user.has_perm(TRIAGE_PERMISSION))


# --------------------------------------------------------------------------------------
# Triage
# --------------------------------------------------------------------------------------


@transaction.atomic(durable=True)
def alert_assign(
    *, actor: Actor, alert: SurveillanceAlert, assignee: AbstractBaseUser
) -> SurveillanceAlert:
    """Give the alert to ``assignee``, a staff member who may triage alerts."""
    _require_person(actor)
    locked = _locked(alert)
    _require_open(locked, "assigned")
    if not can_triage(assignee):
        raise AlertRefused(
            "NOT_A_TRIAGER",
            f"{assignee.get_username()} is not an active staff member allowed to triage alerts",
        )
    if locked.assignee_id == assignee.pk:
        raise AlertRefused(
            "ALREADY_ASSIGNED", f"alert #{locked.pk} is already assigned to {assignee}"
        )
    before = model_state(locked, AUDITED_FIELDS)
    locked.assignee = assignee
    locked.save(update_fields=["assignee", "updated_at"])
    audit_record(
        actor=actor,
        action="alert.assign",
        target=locked,
        before=before,
        after=model_state(locked, AUDITED_FIELDS),
    )
    return locked


@transaction.atomic(durable=True)
def alert_note(*, actor: Actor, alert: SurveillanceAlert, body: str) -> AlertNote:
    """Add a note to the alert. A closed alert still takes notes (a report's reference,
    a later finding): notes are append-only and change nothing of its state."""
    author = _require_person(actor)
    text = _note_text(body, required_for="add a note")
    locked = _locked(alert)
    note = AlertNote.objects.create(alert=locked, author=author, body=text)
    audit_record(
        actor=actor,
        action="alert.note",
        target=locked,
        after={"note_id": note.pk, "body": text},
    )
    return note


@_refusals_mapped
@transaction.atomic(durable=True)
def alert_escalate(*, actor: Actor, alert: SurveillanceAlert, note: str) -> SurveillanceAlert:
    """OPEN → ESCALATED, with a note saying why."""
    author = _require_person(actor)
    text = _note_text(note, required_for="escalate an alert")
    locked = _locked(alert)
    _require_open(locked, "escalated")
    if locked.status == AlertStatus.ESCALATED:
        raise AlertRefused("ALREADY_ESCALATED", f"alert #{locked.pk} is already escalated")
    return _transition(actor, locked, AlertStatus.ESCALATED, author, text, "alert.escalate")


@_refusals_mapped
@transaction.atomic(durable=True)
def alert_close(
    *, actor: Actor, alert: SurveillanceAlert, resolution: str, note: str
) -> SurveillanceAlert:
    """Close the alert as FALSE_POSITIVE or REPORTED (to the regulator), with a note."""
    author = _require_person(actor)
    if resolution not in CLOSING_STATUSES:
        raise AlertRefused(
            "INVALID_RESOLUTION",
            f"an alert is closed as {' or '.join(CLOSING_STATUSES)}, not {resolution!r}",
        )
    text = _note_text(note, required_for="close an alert")
    locked = _locked(alert)
    _require_open(locked, "closed again")
    return _transition(
        actor, locked, resolution, author, text, "alert.close", closed_at=timezone.now()
    )


def _transition(
    actor: Actor,
    alert: SurveillanceAlert,
    status: str,
    author: AbstractBaseUser,
    text: str,
    action: str,
    *,
    closed_at: datetime | None = None,
) -> SurveillanceAlert:
    before = model_state(alert, AUDITED_FIELDS)
    alert.status, alert.closed_at = status, closed_at
    alert.save(update_fields=["status", "closed_at", "updated_at"])
    note = AlertNote.objects.create(alert=alert, author=author, body=text)
    audit_record(
        actor=actor,
        action=action,
        target=alert,
        before=before,
        after=model_state(alert, AUDITED_FIELDS) | {"note_id": note.pk},
        reason=text,
    )
    return alert


# --------------------------------------------------------------------------------------
# Raising alerts
# --------------------------------------------------------------------------------------


@dataclass
class SurveillanceRun:
    """What a run scanned and raised."""

    windows: list[Window] = field(default_factory=list)
    markets: list[Market] = field(default_factory=list)
    raised: list[SurveillanceAlert] = field(default_factory=list)
    findings: int = 0

    def raised_by_kind(self) -> dict[str, int]:
        return dict(Counter(alert.kind for alert in self.raised))


@transaction.atomic(durable=True)
def surveillance_scan(*, market: Market, window: Window) -> list[SurveillanceAlert]:
    """The platform's scheduled scan of one market and window: raise what the detectors
    find and was not raised before. Safe to repeat; not audited (nobody acted)."""
    config = SurveillanceConfig.from_settings()
    raised = runner.alerts_raise(runner.scan(market=market, window=window, config=config))
    if raised:
        log.info(
            "surveillance %s %s: raised %s",
            market.symbol,
            window,
            ", ".join(f"#{a.pk} {a.kind}" for a in raised),
        )
    return raised


def surveillance_windows(
    *, since: datetime, until: datetime, config: SurveillanceConfig | None = None
) -> list[Window]:
    """The scan windows an on-demand run over ``[since, until)`` covers: the complete
    ones that have already ended. Raises AlertRefused for a period that covers none or
    too many."""
    config = config or SurveillanceConfig.from_settings()
    if since.tzinfo is None or until.tzinfo is None:
        raise AlertRefused("NAIVE_TIME", "give the period's times with a time zone")
    if until <= since:
        raise AlertRefused("EMPTY_PERIOD", "the period must end after it starts")
    windows = runner.windows_between(since, min(until, timezone.now()), config.window_seconds)
    if not windows:
        raise AlertRefused(
            "NO_COMPLETE_WINDOW",
            f"{iso(since)} – {iso(until)} covers no complete {config.window_seconds}-second "
            "window that has already ended",
        )
    if len(windows) > config.max_run_windows:
        raise AlertRefused(
            "PERIOD_TOO_LONG",
            f"the period spans {len(windows)} windows; a run may scan at most "
            f"{config.max_run_windows} (split it)",
        )
    return windows


@transaction.atomic(durable=True)
def surveillance_run(
    *,
    actor: Actor,
    since: datetime,
    until: datetime,
    markets: list[Market] | None = None,
) -> SurveillanceRun:
    """Run every detector on demand over the complete windows of ``[since, until)`` in
    ``markets`` (every watched market when None). Windows are the scan's own (aligned
    on the epoch), so a pattern the scheduled scan already raised is not raised again.
    One AuditEvent per market scanned records who ran it, over what, and what it
    raised."""
    config = SurveillanceConfig.from_settings()
    windows = surveillance_windows(since=since, until=until, config=config)
    scanned = list(runner.watched_markets() if markets is None else markets)
    if not scanned:
        raise AlertRefused("NO_MARKET", "there is no market to scan")
    result = SurveillanceRun(windows=windows, markets=scanned)
    for market in scanned:
        found = []
        for window in windows:
            found.extend(runner.scan(market=market, window=window, config=config))
        raised = runner.alerts_raise(found)
        result.findings += len(found)
        result.raised.extend(raised)
        audit_record(
            actor=actor,
            action="surveillance.run",
            target=market,
            after={
                "since": iso(windows[0].start),
                "until": iso(windows[-1].end),
                "windows": len(windows),
                "findings": len(found),
                "raised": [alert.pk for alert in raised],
            },
        )
    return result
