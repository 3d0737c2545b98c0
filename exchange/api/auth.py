"""Signing in with the wallet, the trader's account and API keys, and what to sign."""

from __future__ import annotations

from datetime import UTC, datetime

from django.urls import path
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from dex.api.errors import ApiError
from dex.api.fields import UnixTimeField
from dex.api.permissions import IsWalletSession
from dex.api.views import TraderView
from exchange.models import Account, ApiKey, ApiKeyScope
from exchange.services.accounts import InvalidWalletAddress
from exchange.services.sessions import (
    SignInError,
    api_key_create,
    api_key_revoke,
    login_challenge_issue,
    login_complete,
    session_end,
)
from exchange.signing import (
    AMEND_PRIMARY_TYPE,
    AMEND_TYPES,
    AMOUNT_DECIMALS,
    ORDER_PRIMARY_TYPE,
    ORDER_TYPES,
    eip712_domain,
)

HEX_ADDRESS = r"^0x[0-9a-fA-F]{40}$"


def _refused(exc: SignInError, http_status: int = status.HTTP_400_BAD_REQUEST) -> ApiError:
    if exc.code in {"SIGNATURE_MISMATCH", "INVALID_SIGNATURE", "LOGIN_CHALLENGE_EXPIRED"}:
        http_status = status.HTTP_401_UNAUTHORIZED
    elif exc.code in {"ACCOUNT_CLOSED", "JURISDICTION_RESTRICTED"}:
        http_status = status.HTTP_403_FORBIDDEN
    return ApiError(exc.code, str(exc), status=http_status)


class ChallengeRequestSerializer(serializers.Serializer):
    address = serializers.RegexField(HEX_ADDRESS)


class ChallengeSerializer(serializers.Serializer):
    message = serializers.CharField(help_text="Sign this text with personal_sign (EIP-191).")
    nonce = serializers.CharField()
    expires_at = serializers.DateTimeField()


class LoginSerializer(serializers.Serializer):
    message = serializers.CharField(max_length=2000)
    signature = serializers.RegexField(r"^0x[0-9a-fA-F]{130}$")


class AccountSerializer(serializers.ModelSerializer):
    class Meta:
        model = Account
        fields = ["id", "wallet_address", "status", "country", "kyc_tier", "created_at"]
        read_only_fields = fields


class SessionSerializer(serializers.Serializer):
    token = serializers.CharField(help_text="Send as 'Authorization: Bearer <token>'.")
    expires_at = serializers.DateTimeField()
    account = AccountSerializer()


class ChallengeView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_challenge",
        request=ChallengeRequestSerializer,
        responses={201: ChallengeSerializer},
        summary="Step 1 of sign-in: a message for the wallet to sign (EIP-4361)",
    )
    def post(self, request):
        serializer = ChallengeRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            challenge = login_challenge_issue(address=serializer.validated_data["address"])
        except InvalidWalletAddress as exc:
            raise ApiError("INVALID_ADDRESS", str(exc)) from None
        return Response(ChallengeSerializer(challenge).data, status=status.HTTP_201_CREATED)


class LoginView(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="auth_login",
        request=LoginSerializer,
        responses={201: SessionSerializer},
        summary="Step 2 of sign-in: the signed challenge opens a session",
    )
    def post(self, request):
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            session = login_complete(**serializer.validated_data)
        except SignInError as exc:
            raise _refused(exc) from None
        return Response(SessionSerializer(session).data, status=status.HTTP_201_CREATED)


class LogoutView(TraderView):
    permission_classes = [IsWalletSession]

    @extend_schema(operation_id="auth_logout", request=None, responses={204: None})
    def post(self, request):
        session_end(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


class AccountView(TraderView):
    @extend_schema(operation_id="account_get", responses=AccountSerializer)
    def get(self, request):
        return Response(AccountSerializer(self.trader.account).data)


class ApiKeySerializer(serializers.ModelSerializer):
    class Meta:
        model = ApiKey
        fields = ["prefix", "name", "scopes", "created_at", "expires_at", "revoked_at"]
        read_only_fields = fields


class ApiKeyCreateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=64)
    scopes = serializers.MultipleChoiceField(choices=ApiKeyScope.choices, allow_empty=False)
    expires_at = UnixTimeField(required=False)


class IssuedApiKeySerializer(ApiKeySerializer):
    secret = serializers.CharField(
        help_text="'<prefix>.<secret>' for the X-API-Key header. Shown once, never again."
    )

    class Meta(ApiKeySerializer.Meta):
        fields = [*ApiKeySerializer.Meta.fields, "secret"]
        read_only_fields = fields


class ApiKeyListView(TraderView):
    permission_classes = [IsWalletSession]
    serializer_class = ApiKeySerializer

    @extend_schema(operation_id="api_keys_list", responses=ApiKeySerializer(many=True))
    def get(self, request):
        keys = ApiKey.objects.filter(account=self.trader.account).order_by("-created_at")
        return Response(ApiKeySerializer(keys, many=True).data)

    @extend_schema(
        operation_id="api_keys_create",
        request=ApiKeyCreateSerializer,
        responses={201: IssuedApiKeySerializer},
        summary="Create an API key (from a wallet session only)",
    )
    def post(self, request):
        serializer = ApiKeyCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        expires = data.get("expires_at")
        try:
            issued = api_key_create(
                account=self.trader.account,
                name=data["name"],
                scopes=list(data["scopes"]),
                expires_at=datetime.fromtimestamp(expires, tz=UTC) if expires else None,
            )
        except SignInError as exc:
            raise _refused(exc) from None
        body = ApiKeySerializer(issued.key).data | {"secret": issued.secret}
        return Response(body, status=status.HTTP_201_CREATED)


class ApiKeyView(TraderView):
    permission_classes = [IsWalletSession]

    @extend_schema(operation_id="api_keys_revoke", request=None, responses=ApiKeySerializer)
    def delete(self, request, prefix: str):
        key = ApiKey.objects.filter(account=self.trader.account, prefix=prefix).first()
        if key is None:
            raise ApiError("UNKNOWN_API_KEY", "no such API key", status=404)
        return Response(ApiKeySerializer(api_key_revoke(account=self.trader.account, key=key)).data)


class Eip712View(APIView):
    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="eip712_get",
        summary="The EIP-712 domain and the types an order and an amend are signed with",
        responses=inline_serializer(
            "Eip712",
            {
                "domain": serializers.DictField(),
                "types": serializers.DictField(),
                "primaryType": serializers.CharField(),
                "amend": serializers.DictField(help_text="types and primaryType of an amend"),
                "amount_decimals": serializers.IntegerField(),
            },
        ),
    )
    def get(self, request):
        return Response(
            {
                "domain": eip712_domain(),
                "types": ORDER_TYPES,
                "primaryType": ORDER_PRIMARY_TYPE,
                "amend": {"types": AMEND_TYPES, "primaryType": AMEND_PRIMARY_TYPE},
                "amount_decimals": AMOUNT_DECIMALS,
            }
        )


urlpatterns = [
    path("auth/challenge/", ChallengeView.as_view(), name="auth-challenge"),
    path("auth/login/", LoginView.as_view(), name="auth-login"),
    path("auth/logout/", LogoutView.as_view(), name="auth-logout"),
    path("account/", AccountView.as_view(), name="account"),
    path("api-keys/", ApiKeyListView.as_view(), name="api-keys"),
    path("api-keys/<str:prefix>/", ApiKeyView.as_view(), name="api-key"),
    path("eip712/", Eip712View.as_view(), name="eip712"),
]
