import django_filters

from fleet.choices import ApprovalAction, RolloutMode
from fleet.models import ApprovalEvent, EndpointGroup
from mirror.choices import Arch, Channel, Platform


class EndpointGroupFilterSet(django_filters.FilterSet):
    mirror = django_filters.CharFilter(field_name="mirror__slug", label="Mirror slug")
    rollout = django_filters.ChoiceFilter(choices=RolloutMode.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)

    class Meta:
        model = EndpointGroup
        fields = ["mirror", "rollout", "channel"]


class ApprovalEventFilterSet(django_filters.FilterSet):
    group = django_filters.CharFilter(field_name="group__slug", label="Group slug")
    platform = django_filters.ChoiceFilter(choices=Platform.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    arch = django_filters.ChoiceFilter(choices=Arch.choices)
    action = django_filters.ChoiceFilter(choices=ApprovalAction.choices)

    class Meta:
        model = ApprovalEvent
        fields = ["group", "platform", "channel", "arch", "action"]
