"""The back office's reports: a page with a form per report, CSV downloads streamed
straight from the database, and the surveillance summary as a page.

Mounted at ``/admin/compliance/reports/`` by ``dex/urls.py`` (namespace
``compliance_reports``); every view needs an active staff login (the admin's) and the
``compliance.export_reports`` permission.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import path
from django.views.decorators.http import require_GET, require_POST

from compliance.reports import REPORTS, ReportForm, csv_chunks, surveillance_summary
from compliance.services.audit import Actor
from compliance.services.reports import report_export_start

EXPORT_PERMISSION = "compliance.export_reports"

app_name = "compliance_reports"


def _reports_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """An admin view (staff login, CSRF, no caching) that also needs the export
    permission: 403 without it."""

    @wraps(view)
    def checked(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if not request.user.has_perm(EXPORT_PERMISSION):
            raise PermissionDenied
        return view(request, *args, **kwargs)

    return admin.site.admin_view(checked)


def _forms(bound: ReportForm | None = None) -> list[tuple[str, str, ReportForm]]:
    """(name, title, form) of every report, ``bound`` in place of its blank form."""
    return [
        (
            name,
            spec.title,
            bound if bound is not None and bound.prefix == name else spec.form(prefix=name),
        )
        for name, spec in REPORTS.items()
    ]


def _index(request: HttpRequest, bound: ReportForm | None = None) -> TemplateResponse:
    context = {
        **admin.site.each_context(request),
        "title": "Reports",
        "reports": _forms(bound),
    }
    return TemplateResponse(
        request,
        "admin/compliance/report_index.html",
        context,
        status=400 if bound is not None else 200,
    )


@_reports_view
@require_GET
def reports_index(request: HttpRequest) -> HttpResponse:
    return _index(request)


@_reports_view
@require_POST
def report_export(request: HttpRequest, name: str) -> HttpResponse:
    """Validate the report's form; on errors, the reports page showing them. Otherwise
    record the export and stream the CSV."""
    spec = REPORTS.get(name)
    if spec is None:
        raise Http404("No such report.")
    form = spec.form(request.POST, prefix=name)
    if not form.is_valid():
        return _index(request, bound=form)
    data = form.cleaned_data
    report_export_start(
        actor=Actor.from_request(request),
        report=name,
        parameters=form.parameters(),
        market=data.get("market"),
        account=data.get("account"),
    )
    chunks = csv_chunks(spec.rows(data))
    # Produced as it is sent, on the request's thread (``dex.wsgi_bridge``), where the
    # report's database connection and server-side cursor live.
    response = StreamingHttpResponse(chunks, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{spec.filename(data)}"'
    return response


@_reports_view
@require_GET
def surveillance_summary_view(request: HttpRequest) -> HttpResponse:
    """The surveillance summary of a period as a page (the period in the query string),
    with the same figures as its CSV."""
    form = REPORTS["surveillance"].form(request.GET or None, prefix="surveillance")
    summary = surveillance_summary(period=form.cleaned_data["period"]) if form.is_valid() else None
    context = {
        **admin.site.each_context(request),
        "title": "Surveillance summary",
        "form": form,
        "summary": summary,
    }
    return TemplateResponse(
        request,
        "admin/compliance/report_summary.html",
        context,
        status=400 if form.is_bound and not form.is_valid() else 200,
    )


urlpatterns = [
    path("", reports_index, name="index"),
    path("surveillance/", surveillance_summary_view, name="surveillance"),
    path("<slug:name>.csv", report_export, name="export"),
]
