from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from dex.health import healthz, readyz
from dex.monitoring import metrics, staff_metrics_data, staff_metrics_page
from exchange.views import dashboard

admin.site.site_header = "DEX operations"
admin.site.site_title = "DEX operations"
admin.site.index_title = "Back office"
# The admin's header links to the live dashboard instead (templates/admin/base_site.html).
admin.site.site_url = None

urlpatterns = [
    # Operations: readiness, Prometheus metrics, the staff metrics page (before admin/).
    path("readyz", readyz, name="readyz"),
    path("metrics", metrics, name="metrics"),
    path("admin/metrics/", admin.site.admin_view(staff_metrics_page), name="admin-metrics"),
    path(
        "admin/metrics/data/",
        admin.site.admin_view(staff_metrics_data),
        name="admin-metrics-data",
    ),
    path("healthz", healthz, name="healthz"),
    path("admin/compliance/reports/", include("compliance.admin.reports")),
    path("admin/", admin.site.urls),
    path("dashboard/", dashboard, name="dashboard"),
    path("dashboard/<str:symbol>/", dashboard, name="dashboard-market"),
    path("api/v1/", include("exchange.api.urls")),
    path("api/v1/", include("portfolio.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
]

handler404 = "dex.api.errors.not_found"
handler500 = "dex.api.errors.server_error"
handler400 = "dex.api.errors.bad_request"
handler403 = "dex.api.errors.permission_denied"
