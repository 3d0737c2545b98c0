from django.urls import include, path

urlpatterns = [
    path("", include("exchange.api.auth")),
    path("", include("exchange.api.markets")),
    path("", include("exchange.api.orders")),
]
