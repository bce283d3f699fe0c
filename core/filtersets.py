from datetime import UTC

import django_filters
from django import forms
from django.db.models import Q
from django_filters.fields import IsoDateTimeField

from core.models import AuditEvent


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, read in UTC: Python takes offsets up to ±23:59, PostgreSQL refuses those over ±15:59."""

    def to_python(self, value):
        value = super().to_python(value)
        try:
            return value.astimezone(UTC) if value else value
        except OverflowError:  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            raise forms.ValidationError("This date and time is out of range.", code="overflow") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


class AuditEventFilterSet(django_filters.FilterSet):
    """Shared by the audit page and ``/api/v1/audit-events/``."""

    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="iexact", label="Actor (username)")
    action = django_filters.CharFilter(method="filter_action", label="Action (e.g. token.create, or token)")
    target_type = django_filters.CharFilter(lookup_expr="iexact", label="Target type (e.g. auth.user)")
    target_id = django_filters.CharFilter()
    since = UtcIsoDateTimeFilter(field_name="created", lookup_expr="gte", label="Since (ISO 8601)")
    until = UtcIsoDateTimeFilter(field_name="created", lookup_expr="lt", label="Until (ISO 8601)")
    q = django_filters.CharFilter(method="filter_q", label="Search")

    class Meta:
        model = AuditEvent
        fields = ["actor", "action", "target_type", "target_id", "since", "until", "q"]

    def filter_action(self, queryset, name, value):
        # "token" matches every token.* action; "token.create" exactly that one.
        if "." in value:
            return queryset.filter(action=value)
        return queryset.filter(action__startswith=f"{value}.")

    def filter_q(self, queryset, name, value):
        return queryset.filter(
            Q(target_label__icontains=value) | Q(action__icontains=value) | Q(actor_label__icontains=value)
        )
