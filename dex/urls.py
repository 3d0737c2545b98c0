from django.contrib import admin
from django.urls import path

from dex.health import healthz

admin.site.site_header = "DEX operations"
admin.site.site_title = "DEX operations"
admin.site.index_title = "Back office"

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
]
