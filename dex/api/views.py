"""Base classes of the trader endpoints."""

from __future__ import annotations

from rest_framework.generics import GenericAPIView

from dex.api.authentication import Trader
from dex.api.pagination import NewestFirstCursorPagination
from dex.api.permissions import CanRead
from dex.api.rls import RowLevelSecurityMixin


class TraderView(RowLevelSecurityMixin, GenericAPIView):
    """An endpoint of an authenticated trader. Its reads run under PostgreSQL row-level
    security for the caller's account (``dex.api.rls``), and every queryset it returns
    is narrowed by ``dex.api.scoping.for_account``."""

    permission_classes = [CanRead]
    pagination_class = None  # list endpoints of histories set a cursor pagination

    @property
    def trader(self) -> Trader:
        return self.request.user

    def query_params(self, serializer_class) -> dict:
        """The query string, validated by ``serializer_class`` (a 400 when it is bad)."""
        serializer = serializer_class(data=self.request.query_params)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data

    def paginated(self, queryset, **context):
        page = self.paginate_queryset(queryset)
        serializer = self.get_serializer(
            page, many=True, context=self.get_serializer_context() | context
        )
        return self.get_paginated_response(serializer.data)


class TraderHistoryView(TraderView):
    """A trader's history, newest first, a page at a time (cursor pagination)."""

    pagination_class = NewestFirstCursorPagination
