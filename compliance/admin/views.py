"""The back office's own admin pages: a staff control confirmed with a reason, a
market's rules form, an account's 360° page and the venue overview. Each checks its
permission, calls a service or a selector, and renders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import quote
from django.core.exceptions import PermissionDenied
from django.db.models import Model, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.http import urlencode

from compliance.selectors import ACCOUNT_360_SECTIONS, account_360, venue_overview
from compliance.services.accounts import ControlError
from compliance.services.audit import Actor
from compliance.services.markets import market_rules_change
from exchange.models import MARKET_RULE_FIELDS, Account, Market

# One confirmation page names its objects in its address: a bulk action takes at most
# this many at a time.
MAX_SELECTED = 200


def require_permission(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def admin_url(opts, view: str, *args) -> str:
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_{view}", args=args)


# --------------------------------------------------------------------------------------
# Controls: a confirmation page with a reason, then the service for each object
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Control:
    """A staff action on one or more objects, taken only once confirmed with a reason."""

    name: str  # in the URL: <model>/control/<name>/?ids=…
    verb: str  # "Freeze"
    done: str  # "frozen"
    permission: str  # "compliance.freeze_account"
    explanation: str  # what happens, on the confirmation page
    service: Callable[..., Any]  # service(actor=, <target>=, reason=)
    target: str  # the service's keyword for the object: "account", "market", "order"

    @property
    def codename(self) -> str:
        return self.permission.split(".", 1)[1]

    def run(self, request: HttpRequest, obj: Model, reason: str) -> Any:
        return self.service(actor=Actor.from_request(request), reason=reason, **{self.target: obj})


class ReasonForm(forms.Form):
    reason = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="Why: kept in the audit trail with the action.",
    )

    def clean_reason(self) -> str:
        reason = self.cleaned_data["reason"].strip()
        if not reason:
            raise forms.ValidationError("Give a reason.")
        return reason


def control_action(control: Control, url_name: str):
    """A changelist action for ``control``: it changes nothing itself, it sends staff
    to the confirmation page for the selected objects."""

    def action(modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet):
        ids = list(queryset.values_list("pk", flat=True)[: MAX_SELECTED + 1])
        if len(ids) > MAX_SELECTED:
            modeladmin.message_user(
                request,
                f"Select at most {MAX_SELECTED} at a time for “{control.verb}”.",
                messages.ERROR,
            )
            return None
        url = reverse(f"admin:{url_name}", args=[control.name])
        return HttpResponseRedirect(f"{url}?{urlencode({'ids': ','.join(map(str, ids))})}")

    action.__name__ = f"{control.name}_selected"
    return admin.action(
        description=f"{control.verb} selected %(verbose_name_plural)s…",
        permissions=[control.codename],
    )(action)


def _selected_ids(request: HttpRequest) -> list[int]:
    try:
        ids = [int(part) for part in request.GET.get("ids", "").split(",") if part]
    except ValueError:
        return []
    return ids[:MAX_SELECTED]


def control_view(
    request: HttpRequest,
    *,
    model_admin: admin.ModelAdmin,
    controls: dict[str, Control],
    name: str,
) -> HttpResponse:
    """GET: the confirmation page for the objects in ``?ids=``. POST with a reason:
    the control, object by object (each in its own transaction: one refusal does not
    undo the others), then back to the list with what was done and what was refused.
    A POST without a reason shows the page again and changes nothing."""
    control = controls.get(name)
    if control is None:
        raise Http404("No such action.")
    require_permission(request, control.permission)
    opts = model_admin.opts
    objects = list(model_admin.get_queryset(request).filter(pk__in=_selected_ids(request)))
    changelist = admin_url(opts, "changelist")
    if not objects:
        messages.error(request, f"Select the {opts.verbose_name_plural} to {control.verb.lower()}.")
        return redirect(changelist)

    form = ReasonForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        reason = form.cleaned_data["reason"]
        done, refused = [], []
        for obj in objects:
            try:
                control.run(request, obj, reason)
            except ControlError as exc:
                refused.append(f"{obj}: {exc}")
            else:
                done.append(str(obj))
        if done:
            messages.success(
                request,
                f"{control.done.capitalize()} {len(done)} {_noun(opts, len(done))}: "
                + ", ".join(done),
            )
        for message in refused:
            messages.error(request, f"{control.verb} refused for {message}")
        if len(objects) == 1:
            return redirect(admin_url(opts, "change", quote(objects[0].pk)))
        return redirect(changelist)

    context = {
        **model_admin.admin_site.each_context(request),
        "opts": opts,
        "title": f"{control.verb} {_noun(opts, len(objects))}",
        "control": control,
        "objects": [(obj, admin_url(opts, "change", quote(obj.pk))) for obj in objects],
        "form": form,
        "changelist_url": changelist,
    }
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(
        request, "admin/compliance/control_confirm.html", context, status=status
    )


def _noun(opts, count: int) -> str:
    return str(opts.verbose_name if count == 1 else opts.verbose_name_plural)


# --------------------------------------------------------------------------------------
# A market's fees and limits
# --------------------------------------------------------------------------------------


def _rule_field(name: str) -> forms.DecimalField:
    model_field = Market._meta.get_field(name)
    return forms.DecimalField(
        max_digits=model_field.max_digits,
        decimal_places=model_field.decimal_places,
        help_text=model_field.help_text,
    )


class MarketRulesForm(forms.Form):
    maker_fee_rate = _rule_field("maker_fee_rate")
    taker_fee_rate = _rule_field("taker_fee_rate")
    min_quantity = _rule_field("min_quantity")
    min_notional = _rule_field("min_notional")
    price_band = _rule_field("price_band")
    reason = ReasonForm.base_fields["reason"]

    clean_reason = ReasonForm.clean_reason


def market_rules_view(
    request: HttpRequest, *, model_admin: admin.ModelAdmin, market: Market
) -> HttpResponse:
    """The market's fees and limits, changed through ``market_rules_change`` (a
    SET_RULES command the matcher applies in journal order)."""
    require_permission(request, "compliance.control_market")
    current = {name: getattr(market, name) for name in MARKET_RULE_FIELDS}
    form = MarketRulesForm(request.POST or None, initial=current)
    if request.method == "POST" and form.is_valid():
        changes = {
            name: form.cleaned_data[name]
            for name in MARKET_RULE_FIELDS
            if form.cleaned_data[name] != current[name]
        }
        try:
            command = market_rules_change(
                actor=Actor.from_request(request),
                market=market,
                reason=form.cleaned_data["reason"],
                **changes,
            )
        except ControlError as exc:
            form.add_error(None, str(exc))
        else:
            messages.success(
                request,
                f"New rules for {market.symbol} sent to the matcher (command #{command.pk}): "
                + ", ".join(f"{name} {value}" for name, value in changes.items()),
            )
            return redirect(admin_url(model_admin.opts, "change", quote(market.pk)))
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": market,
        "title": f"Fees and limits of {market.symbol}",
        "form": form,
        "current": current,
    }
    status = 400 if request.method == "POST" else 200
    return TemplateResponse(request, "admin/compliance/market_rules.html", context, status=status)


# --------------------------------------------------------------------------------------
# Read-only pages
# --------------------------------------------------------------------------------------


def account_360_view(
    request: HttpRequest, *, model_admin: admin.ModelAdmin, account: Account
) -> HttpResponse:
    require_permission(request, "compliance.view_venue")
    sections = [
        section
        for section, permission in ACCOUNT_360_SECTIONS.items()
        if request.user.has_perm(permission)
    ]
    picture = account_360(account=account, sections=sections)
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "original": account,
        "title": f"360° of {account}",
        "picture": picture,
    }
    return TemplateResponse(request, "admin/compliance/account_360.html", context)


def venue_overview_view(request: HttpRequest, *, model_admin: admin.ModelAdmin) -> HttpResponse:
    require_permission(request, "compliance.view_venue")
    context = {
        **model_admin.admin_site.each_context(request),
        "opts": model_admin.opts,
        "title": "Venue overview",
        "venue": venue_overview(),
    }
    return TemplateResponse(request, "admin/compliance/venue_overview.html", context)
