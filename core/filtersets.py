from datetime import UTC

import django_filters
from django import forms
from django.db.models import Q
from django.utils.translation import gettext_lazy as _
from django_filters.fields import IsoDateTimeField

from core import labels
from core.models import AuditEvent


class UtcIsoDateTimeField(IsoDateTimeField):
    """ISO 8601, read in UTC: Python takes offsets up to ±23:59, PostgreSQL refuses those over ±15:59."""

    def to_python(self, value):
        value = super().to_python(value)
        try:
            return value.astimezone(UTC) if value else value
        except OverflowError:  # 9999-12-31T23:00-05:00 is past year 9999 in UTC
            raise forms.ValidationError(_("This date and time is out of range."), code="overflow") from None


class UtcIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    field_class = UtcIsoDateTimeField


def action_choices() -> list:
    """The audit page's action menu: every registered action by its label, grouped by what it acts on, each group
    led by "every <object> action" (the filter's prefix form). Built per request: apps register at start-up."""
    groups: dict[str, list] = {}
    for code, label in sorted(labels.registered("audit_action").items(), key=lambda item: item[0]):
        prefix = code.split(".", 1)[0]
        groups.setdefault(prefix, [(prefix, _("Any of these"))]).append((code, label))
    return [("", _("Any action"))] + [(labels.label("audit_object", prefix), rows) for prefix, rows in groups.items()]


class ActionSelect(forms.Select):
    """A menu of the registered actions whose choices are read when drawn; any other value still filters (the API
    and old links send codes the menu may not list)."""

    def optgroups(self, name, value, attrs=None):
        self.choices = action_choices()
        return super().optgroups(name, value, attrs)


class AuditEventFilterSet(django_filters.FilterSet):
    """Shared by the audit page and ``/api/v1/audit-events/``."""

    actor = django_filters.CharFilter(field_name="actor_label", lookup_expr="iexact", label=_("Actor (username)"))
    action = django_filters.CharFilter(
        method="filter_action", label=_("Action (e.g. token.create, or token)"), widget=ActionSelect
    )
    target_type = django_filters.CharFilter(lookup_expr="iexact", label=_("Target type (e.g. auth.user)"))
    target_id = django_filters.CharFilter(label=_("Target ID"))
    since = UtcIsoDateTimeFilter(field_name="created", lookup_expr="gte", label=_("Since (ISO 8601)"))
    until = UtcIsoDateTimeFilter(field_name="created", lookup_expr="lt", label=_("Until (ISO 8601)"))
    q = django_filters.CharFilter(method="filter_q", label=_("Search"))

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
