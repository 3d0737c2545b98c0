"""The back office's staff roles: Django groups, each with exactly the permissions its
work needs. This module is the one place the mapping is written down: the migration
``compliance.0006_roles`` creates the groups with :func:`roles_sync`, and every
``migrate`` runs it again (``ComplianceConfig.ready``), so a new model's permissions
reach the roles that cover it and a permission granted by hand to a group does not
outlive the next deployment. Change a role here, not in the admin.

Compliance officer
    Reviews and decides KYC cases (``compliance.review_kyc``), freezes and unfreezes
    accounts, force-cancels orders, triages surveillance alerts and runs the
    detectors, exports reports, sees the venue overview, and keeps the jurisdiction
    rules and KYC-tier limits. Sees accounts, orders, trades, balances, withdrawals,
    freezes, owners, alerts, the audit trail and the change history of what it sees.

Operations (support)
    Runs the markets: halts and resumes them and changes their fees and limits
    (``compliance.control_market``), force-cancels orders, approves and rejects
    withdrawals (``portfolio.change_vaultoperation``), sees the venue overview. Sees
    accounts, orders, trades, markets and withdrawals. No KYC decisions, freezes or
    alert triage.

Auditor
    Sees every record of the exchange, portfolio and compliance apps, exports reports
    and sees the venue overview. Changes nothing.

Administrator
    Every permission there is.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.apps import apps as global_apps
from django.apps.registry import Apps
from django.db.models import Q

COMPLIANCE_OFFICER = "Compliance officer"
OPERATIONS = "Operations"
AUDITOR = "Auditor"
ADMINISTRATOR = "Administrator"

# The apps whose records make up the venue.
VENUE_APPS = ("exchange", "portfolio", "compliance")


@dataclass(frozen=True, slots=True)
class Role:
    name: str
    # "app_label.codename" of each permission the role holds.
    permissions: tuple[str, ...] = ()
    # Apps every model of which the role may view (each model's view_<model>).
    views_all_of: tuple[str, ...] = ()
    # Every permission there is.
    everything: bool = False


def _view(*labels: str) -> tuple[str, ...]:
    """``view_<model>`` of each "app_label.model"."""
    return tuple(f"{app}.view_{model}" for app, model in (label.split(".") for label in labels))


def _manage(*labels: str) -> tuple[str, ...]:
    """Add, change, delete and view of each "app_label.model"."""
    return tuple(
        f"{app}.{action}_{model}"
        for app, model in (label.split(".") for label in labels)
        for action in ("add", "change", "delete", "view")
    )


ROLES = (
    Role(
        COMPLIANCE_OFFICER,
        permissions=(
            "compliance.review_kyc",
            "compliance.change_kyccase",
            "compliance.freeze_account",
            "compliance.cancel_orders",
            "compliance.triage_alert",
            "compliance.run_surveillance",
            "compliance.export_reports",
            "compliance.view_venue",
            *_manage(
                "compliance.jurisdictionrule",
                "compliance.kyctierlimit",
                "compliance.kycfundinglimit",
            ),
            *_view(
                "exchange.account",
                "exchange.market",
                "exchange.order",
                "exchange.orderarchive",
                "exchange.orderstatushistory",
                "exchange.trade",
                "portfolio.balance",
                "portfolio.vaultoperation",
                "compliance.kyccase",
                "compliance.kycdocument",
                "compliance.accountfreeze",
                "compliance.beneficialowner",
                "compliance.beneficialownership",
                "compliance.surveillancealert",
                "compliance.alertnote",
                "compliance.auditevent",
                "compliance.accounthistory",
                "compliance.markethistory",
                "compliance.kyccasehistory",
                "compliance.jurisdictionrulehistory",
                "compliance.kyctierlimithistory",
                "compliance.kycfundinglimithistory",
            ),
        ),
    ),
    Role(
        OPERATIONS,
        permissions=(
            "compliance.control_market",
            "compliance.cancel_orders",
            "compliance.view_venue",
            "portfolio.change_vaultoperation",
            *_view(
                "exchange.account",
                "exchange.market",
                "exchange.order",
                "exchange.orderarchive",
                "exchange.orderstatushistory",
                "exchange.trade",
                "portfolio.vaultoperation",
            ),
        ),
    ),
    Role(
        AUDITOR,
        permissions=("compliance.export_reports", "compliance.view_venue"),
        views_all_of=VENUE_APPS,
    ),
    Role(ADMINISTRATOR, everything=True),
)


class UnknownPermission(LookupError):
    pass


def role_permissions(role: Role, *, apps: Apps = global_apps):
    """The Permission rows ``role`` holds. Every permission it names must exist."""
    Permission = apps.get_model("auth", "Permission")
    permissions = Permission.objects.all()
    if role.everything:
        return permissions
    wanted = Q(pk__in=[])
    for label in role.permissions:
        app_label, codename = label.split(".")
        wanted |= Q(content_type__app_label=app_label, codename=codename)
    if role.views_all_of:
        wanted |= Q(content_type__app_label__in=role.views_all_of, codename__startswith="view_")
    held = permissions.filter(wanted).select_related("content_type")
    found = {f"{p.content_type.app_label}.{p.codename}" for p in held}
    missing = sorted(set(role.permissions) - found)
    if missing:
        raise UnknownPermission(f"{role.name}: no permission {', '.join(missing)}")
    return held


def roles_sync(*, apps: Apps = global_apps) -> None:
    """Create each role's group if missing and give it exactly its permissions (taking
    away any others). Call after the permissions exist (``create_permissions``)."""
    Group = apps.get_model("auth", "Group")
    for role in ROLES:
        group, _ = Group.objects.get_or_create(name=role.name)
        group.permissions.set(role_permissions(role, apps=apps))
