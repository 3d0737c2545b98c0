"""The API's request parser: JSON, bounded in size and in depth before it is decoded."""

from __future__ import annotations

import io
import re

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from rest_framework import exceptions, parsers

# How deep a request's JSON may nest. The deepest body the API takes (a batch of orders)
# nests three levels; past this the body is refused before it is decoded.
JSON_MAX_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def json_too_deep(body: bytes, limit: int = JSON_MAX_DEPTH) -> bool:
    """Whether ``body`` opens more than ``limit`` arrays and objects inside each other
    (brackets inside strings do not count)."""
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b"", body)):
        depth += 1 if bracket in b"[{" else -1
        if depth > limit:
            return True
    return False


class JSONParser(parsers.JSONParser):
    """DRF's JSON parser with two bounds. The body is read only up to
    ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (413 past it), and it may nest at most
    ``JSON_MAX_DEPTH`` deep: Python's decoder recurses once per level, and with the
    interpreter's recursion limit raised (``py_ecc``, which signing imports, sets it to
    100,000) a body of ``[[[[…`` overflows the C stack and kills the process."""

    def parse(self, stream, media_type=None, parser_context=None):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        if stream is None:
            body = b""
        elif limit is None:
            body = stream.read()
        elif len(body := stream.read(limit + 1)) > limit:
            raise RequestDataTooBig("the request body is too large")
        if json_too_deep(body):
            raise exceptions.ParseError(f"JSON parse error - nested deeper than {JSON_MAX_DEPTH}")
        return super().parse(io.BytesIO(body), media_type, parser_context)
