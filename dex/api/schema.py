"""OpenAPI additions drf-spectacular cannot infer: the one error shape, on every
operation, and the rate-limit headers."""

from __future__ import annotations

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class WalletSessionScheme(OpenApiAuthenticationExtension):
    target_class = "dex.api.authentication.WalletSessionAuthentication"
    name = "WalletSession"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The token from POST /api/v1/auth/login/ (signing in with the wallet).",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "dex.api.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "'<prefix>.<secret>' of a key created at POST /api/v1/api-keys/.",
        }


ERROR_SCHEMA = {
    "type": "object",
    "required": ["code", "message"],
    "properties": {
        "code": {"type": "string", "description": "Stable, machine-readable, e.g. NONCE_REUSED"},
        "message": {"type": "string"},
        "details": {
            "type": "object",
            "description": "What is wrong with each named field.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}

ERRORS = {
    "400": "Malformed or refused by the market's rules",
    "401": "No valid credential, or an order signature that does not match",
    "403": "The credential may not do this, or a compliance gate refuses it",
    "404": "No such thing (others' orders do not exist for you)",
    "405": "Method not allowed",
    "409": "Conflicts with the current state (nonce reused, order closed…)",
    "413": "Body too large",
    "415": "Not JSON",
    "422": "Insufficient funds",
    "429": "Rate limited: see Retry-After",
}

RATE_LIMIT_HEADERS = {
    name: {"schema": {"type": "integer"}, "description": description}
    for name, description in [
        ("RateLimit-Limit", "Requests allowed in the tightest bucket's window"),
        ("RateLimit-Remaining", "Requests left in it now"),
        ("RateLimit-Reset", "Seconds until it is full again"),
    ]
}


def add_error_responses(result, generator, request, public):
    """``POSTPROCESSING_HOOKS`` entry: document the error shape on every operation."""
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    reference = {"$ref": "#/components/schemas/Error"}
    for path_item in result.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            for status, description in ERRORS.items():
                responses.setdefault(
                    status,
                    {
                        "description": description,
                        "content": {"application/json": {"schema": reference}},
                    },
                )
            if "429" in responses:
                responses["429"].setdefault("headers", {})["Retry-After"] = {
                    "schema": {"type": "integer"},
                    "description": "Seconds to wait",
                }
    return result
