import django_filters
from django.contrib.auth import get_user_model
from django.db.models import Count, Q
from drf_spectacular.utils import extend_schema
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from core.api.schema import error_response
from core.choices import Role
from core.services import audit_value
from portal import alerts
from portal.api.serializers import (
    AlertChannelSerializer,
    AlertDeliverySerializer,
    AlertEventSerializer,
    AlertRuleSerializer,
)
from portal.choices import AlertState
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule

User = get_user_model()


# --- Alerts: read for every role, written by admins; every change goes through portal.alerts ----------


def _audit(data: dict) -> dict:
    """Validated input as audit details: related objects by name."""
    return {name: audit_value(value) for name, value in data.items()}


class AlertChannelViewSet(viewsets.ModelViewSet):
    """Where alerts go: webhooks (a JSON POST signed with the channel's secret) and e-mail lists.

    A new webhook's signing secret is in the creation response only (and in rotate-secret's).
    """

    queryset = AlertChannel.objects.all()
    serializer_class = AlertChannelSerializer
    write_role = Role.ADMIN
    filterset_fields = ["kind", "enabled"]
    ordering_fields = ["name", "created"]

    def _answer(self, channel, secret, status_code=status.HTTP_200_OK):
        channel.shown_secret = secret
        return Response(AlertChannelSerializer(channel).data, status=status_code)

    def create(self, request):
        form = AlertChannelSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        channel = AlertChannel(**form.validated_data)
        secret = alerts.save_channel(channel, request.user, request, _audit(form.validated_data))
        return self._answer(channel, secret, status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        """Change a channel; when it becomes a webhook, the answer holds its new signing secret (shown once)."""
        channel = self.get_object()
        form = AlertChannelSerializer(channel, data=request.data, partial=kwargs.get("partial", False))
        form.is_valid(raise_exception=True)
        for name, value in form.validated_data.items():
            setattr(channel, name, value)
        secret = alerts.save_channel(channel, request.user, request, _audit(form.validated_data))
        return self._answer(channel, secret)

    def perform_destroy(self, instance):
        alerts.delete_channel(instance, self.request.user, self.request)

    @extend_schema(request=None, responses={200: AlertDeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Send a test message now: one attempt, no retry, within this request (at most ALERT_WEBHOOK_TIMEOUT or
        EMAIL_TIMEOUT). The answer is its delivery: ``status`` delivered or failed, with ``error`` and ``response_status``."""
        delivery = alerts.send_test(self.get_object(), request.user, request)
        return Response(AlertDeliverySerializer(delivery).data)

    @extend_schema(
        request=None, responses={200: AlertChannelSerializer, 400: error_response(400, "The channel is not a webhook.")}
    )
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request, pk=None):
        """Replace a webhook's signing secret (the old one is no longer used); the answer is the only time it is shown."""
        channel = self.get_object()
        try:
            secret = alerts.rotate_secret(channel, request.user, request)
        except ValueError as exc:
            raise ValidationError({"kind": [str(exc)]}) from None
        return self._answer(channel, secret)


class AlertRuleViewSet(viewsets.ModelViewSet):
    """Conditions the portal watches (checked every minute) and the channels each alerts when it starts and stops holding."""

    queryset = (
        AlertRule.objects.select_related("mirror", "group")
        .prefetch_related("channels")
        .annotate(firing=Count("events", filter=Q(events__state=AlertState.FIRING)))
        .order_by("name", "id")
    )
    serializer_class = AlertRuleSerializer
    write_role = Role.ADMIN
    filterset_fields = ["kind", "enabled"]
    ordering_fields = ["name", "created"]

    @extend_schema(responses={201: AlertRuleSerializer})
    def create(self, request):
        form = AlertRuleSerializer(data=request.data)
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        channels = data.pop("channels", [])
        rule = alerts.save_rule(AlertRule(**data), channels, request.user, request, _audit(form.validated_data))
        return Response(AlertRuleSerializer(rule).data, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        rule = self.get_object()
        form = AlertRuleSerializer(rule, data=request.data, partial=kwargs.get("partial", False))
        form.is_valid(raise_exception=True)
        data = dict(form.validated_data)
        channels = data.pop("channels", None)
        for name, value in data.items():
            setattr(rule, name, value)
        rule = alerts.save_rule(rule, channels, request.user, request, _audit(form.validated_data))
        return Response(AlertRuleSerializer(self.get_queryset().get(pk=rule.pk)).data)

    def perform_destroy(self, instance):
        alerts.delete_rule(instance, self.request.user, self.request)


class AlertEventViewSet(viewsets.ReadOnlyModelViewSet):
    """Alerts: each stretch of time a rule's condition held for one subject, open (firing) or resolved."""

    queryset = AlertEvent.objects.select_related("rule")
    serializer_class = AlertEventSerializer
    filterset_fields = ["rule", "state", "severity"]
    ordering_fields = ["started_at", "resolved_at"]


class AlertDeliveryFilterSet(django_filters.FilterSet):
    rule = django_filters.NumberFilter(field_name="event__rule", label="Rule id")

    class Meta:
        model = AlertDelivery
        fields = ["channel", "event", "rule", "status", "reason"]


class AlertDeliveryViewSet(viewsets.ReadOnlyModelViewSet):
    """Every message sent (or tried) to a channel, with its attempts and the last answer or error."""

    queryset = AlertDelivery.objects.select_related("event", "requested_by")
    serializer_class = AlertDeliverySerializer
    filterset_class = AlertDeliveryFilterSet
    ordering_fields = ["created", "finished_at"]
