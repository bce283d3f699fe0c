import django_filters
from django.db.models import Q
from django.utils.translation import gettext_lazy as _

from fleet.choices import ApprovalAction, Compliance, ConflictState, FindingCode, RolloutMode
from fleet.models import ApprovalEvent, Endpoint, EndpointGroup, EnrollmentSecret, IdentityConflict
from mirror.choices import Arch, Channel, Platform


class EndpointGroupFilterSet(django_filters.FilterSet):
    mirror = django_filters.CharFilter(field_name="mirror__slug", label=_("Mirror slug"))
    rollout = django_filters.ChoiceFilter(choices=RolloutMode.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)

    class Meta:
        model = EndpointGroup
        fields = ["slug", "mirror", "rollout", "channel"]


class ApprovalEventFilterSet(django_filters.FilterSet):
    group = django_filters.CharFilter(field_name="group__slug", label=_("Group slug"))
    platform = django_filters.ChoiceFilter(choices=Platform.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    arch = django_filters.ChoiceFilter(choices=Arch.choices)
    action = django_filters.ChoiceFilter(choices=ApprovalAction.choices)

    class Meta:
        model = ApprovalEvent
        fields = ["group", "platform", "channel", "arch", "action"]


# The findings about what an endpoint's ring serves, and the state each one goes with.
RING_FINDINGS = {
    FindingCode.RING_SERVES_NOTHING: Compliance.UNSERVED,
    FindingCode.ROLLED_BACK_VERSION: Compliance.ROLLED_BACK,
}


class EndpointFilterSet(django_filters.FilterSet):
    """Shared by the API and the endpoint list in the UI; every filter uses an indexed column or a bounded LIKE."""

    group = django_filters.CharFilter(field_name="group__slug", label=_("Group slug"))
    compliance = django_filters.ChoiceFilter(choices=Compliance.choices)
    platform = django_filters.ChoiceFilter(choices=Platform.choices)
    arch = django_filters.ChoiceFilter(choices=Arch.choices)
    version = django_filters.CharFilter(field_name="definitions_version", label=_("Definitions version"))
    finding = django_filters.CharFilter(method="filter_finding", label=_("Finding code (e.g. update_failed)"))
    q = django_filters.CharFilter(method="filter_q", label=_("Hostname or machine id contains"))
    decommissioned = django_filters.BooleanFilter(field_name="decommissioned_at", lookup_expr="isnull", exclude=True)

    class Meta:
        model = Endpoint
        fields = ["group", "compliance", "platform", "arch", "version", "finding", "q", "decommissioned"]

    def filter_finding(self, queryset, name, value):
        code = value.strip()
        if code in RING_FINDINGS:
            # Not stored with the report (they follow the ring's approvals, see rings.ring_findings): the state
            # says it. An endpoint that is also failing or misconfigured is listed under that worse state.
            return queryset.filter(compliance=RING_FINDINGS[code])
        return queryset.filter(finding_codes__contains=f",{code},")

    def filter_q(self, queryset, name, value):
        return queryset.filter(Q(hostname__icontains=value) | Q(machine_id__icontains=value))


class EnrollmentSecretFilterSet(django_filters.FilterSet):
    group = django_filters.CharFilter(field_name="group__slug", label=_("Group slug"))

    class Meta:
        model = EnrollmentSecret
        fields = ["group"]


class IdentityConflictFilterSet(django_filters.FilterSet):
    state = django_filters.ChoiceFilter(choices=ConflictState.choices)
    group = django_filters.CharFilter(field_name="group__slug", label=_("Group slug (of the secret used)"))

    class Meta:
        model = IdentityConflict
        fields = ["state", "group", "endpoint"]
