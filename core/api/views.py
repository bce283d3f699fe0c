from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from core import accounts, services
from core.api.serializers import (
    ApiTokenCreatedSerializer,
    ApiTokenCreateSerializer,
    ApiTokenSerializer,
    AuditEventSerializer,
    MeSerializer,
    SetPasswordSerializer,
    UserCreatedSerializer,
    UserCreateSerializer,
    UserSerializer,
    UserUpdateSerializer,
)
from core.choices import Role
from core.filtersets import AuditEventFilterSet
from core.models import ApiToken, AuditEvent
from core.roles import has_role

User = get_user_model()


class AuditEventViewSet(viewsets.ReadOnlyModelViewSet):
    """The audit log: read-only for everyone with a role; there is no way to change it."""

    queryset = AuditEvent.objects.all()
    serializer_class = AuditEventSerializer
    filterset_class = AuditEventFilterSet
    ordering_fields = ["created", "action", "actor_label"]


class ApiTokenViewSet(
    mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Personal API tokens. Everyone manages their own; admins see and revoke all."""

    serializer_class = ApiTokenSerializer
    write_role = Role.VIEWER
    filterset_fields = ["scope"]
    ordering_fields = ["created", "last_used_at", "name"]

    def get_queryset(self):
        tokens = ApiToken.objects.select_related("user")
        if has_role(self.request.user, Role.ADMIN):
            return tokens
        return tokens.filter(user=self.request.user)

    @extend_schema(
        request=ApiTokenCreateSerializer,
        responses={201: ApiTokenCreatedSerializer},
        examples=[
            OpenApiExample(
                "A read-write token for 90 days",
                request_only=True,
                value={"name": "ansible", "scope": "write", "expires_in_days": 90},
            )
        ],
    )
    def create(self, request):
        # Tokens never mint tokens, and a session needs its password confirmed lately: core.services says so.
        form = ApiTokenCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        token, raw = services.create_api_token(request.user, request=request, **form.validated_data)
        token.token = raw
        return Response(ApiTokenCreatedSerializer(token).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=ApiTokenSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        token = services.revoke_api_token(request.user, self.get_object(), request=request)
        return Response(ApiTokenSerializer(token).data)


class UserViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Accounts and their roles (admin only). Accounts are deactivated, never deleted, so the audit log keeps its actors."""

    queryset = User.objects.select_related("account").prefetch_related("groups").order_by("username")
    serializer_class = UserSerializer
    read_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["get", "post", "patch", "head", "options"]
    filterset_fields = ["is_active"]
    ordering_fields = ["username", "date_joined", "last_login"]

    @extend_schema(
        request=UserCreateSerializer,
        responses={201: UserCreatedSerializer},
        examples=[
            OpenApiExample(
                "An operator",
                request_only=True,
                value={"username": "oscar", "email": "oscar@example.org", "role": "operator"},
            )
        ],
    )
    def create(self, request):
        form = UserCreateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        # Without a password, one is generated, returned once here, and must be changed at the first sign-in.
        user, user.generated_password = accounts.create_local_user(request.user, request=request, **form.validated_data)
        return Response(UserCreatedSerializer(user).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=UserUpdateSerializer, responses=UserSerializer)
    def partial_update(self, request, pk=None):
        user = self.get_object()
        form = UserUpdateSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        services.update_user(request.user, user, request=request, **form.validated_data)
        return Response(UserSerializer(user).data)

    @extend_schema(
        request=SetPasswordSerializer,
        responses=UserCreatedSerializer,
        examples=[
            OpenApiExample("A generated password, to be changed at the next sign-in", request_only=True, value={}),
            OpenApiExample(
                "A chosen password, to be changed at the next sign-in",
                request_only=True,
                value={"password": "a-long-enough-passphrase", "must_change_password": True},
            ),
        ],
    )
    @action(detail=True, methods=["post"], url_path="set-password")
    def set_password(self, request, pk=None):
        """Set or reset a local account's password; without one, a password is generated and returned once (in
        ``password``), to be changed at the next sign-in. The user's browser sessions end."""
        user = self.get_object()
        form = SetPasswordSerializer(data=request.data, context={"user": user})
        form.is_valid(raise_exception=True)
        user.generated_password = accounts.set_password(
            request.user,
            user,
            password=form.validated_data.get("password"),
            must_change_password=form.validated_data["must_change_password"],
            request=request,
        )
        return Response(UserCreatedSerializer(user).data)


class MeView(APIView):
    """Who the caller is: user, role, and the token's scope when a token is used."""

    @extend_schema(responses=MeSerializer)
    def get(self, request):
        request.user.token_scope = getattr(request.auth, "scope", None)
        return Response(MeSerializer(request.user).data)
