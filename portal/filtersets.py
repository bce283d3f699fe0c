import django_filters
from django.db.models import Q

from portal.models import AuditEvent


class AuditEventFilterSet(django_filters.FilterSet):
    """Shared by the audit page and ``/api/v1/audit-events/``."""

    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="iexact", label="Actor (username)")
    action = django_filters.CharFilter(method="filter_action", label="Action (e.g. token.create, or token)")
    target_type = django_filters.CharFilter(lookup_expr="iexact", label="Target type (e.g. auth.user)")
    target_id = django_filters.CharFilter()
    since = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="gte", label="Since (ISO 8601)")
    until = django_filters.IsoDateTimeFilter(field_name="created", lookup_expr="lt", label="Until (ISO 8601)")
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
        return queryset.filter(Q(target_label__icontains=value) | Q(action__icontains=value) | Q(actor_label__icontains=value))
