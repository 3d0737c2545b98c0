"""Cursor pagination for histories: stable under inserts, no page counting."""

from rest_framework.exceptions import NotFound
from rest_framework.pagination import CursorPagination

BIGINT_MAX = 2**63 - 1


class NewestFirstCursorPagination(CursorPagination):
    ordering = "-id"
    page_size = 100
    page_size_query_param = "limit"
    max_page_size = 500

    def decode_cursor(self, request):
        """DRF's cursor, whose position must be an id: a cursor a client changed is
        refused as DRF refuses one it cannot decode (404), never a query error."""
        cursor = super().decode_cursor(request)
        if cursor is not None and cursor.position is not None:
            position = cursor.position
            if not (
                position.isascii()
                and position.isdigit()
                and len(position) <= len(str(BIGINT_MAX))  # int() refuses 4,300 digits
                and int(position) <= BIGINT_MAX
            ):
                raise NotFound(self.invalid_cursor_message)
        return cursor
