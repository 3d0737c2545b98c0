from django.urls import include, path

urlpatterns = [path("", include("portfolio.api.views"))]
