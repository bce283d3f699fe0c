import django_filters

from mirror.choices import Arch, Channel, Platform, SyncState
from mirror.models import SignaturePackage, SyncRun


class SignaturePackageFilterSet(django_filters.FilterSet):
    platform = django_filters.ChoiceFilter(choices=Platform.choices)
    channel = django_filters.ChoiceFilter(choices=Channel.choices)
    arch = django_filters.ChoiceFilter(choices=Arch.choices)
    definition_version = django_filters.CharFilter()
    engine_version = django_filters.CharFilter()
    sha256 = django_filters.CharFilter()

    class Meta:
        model = SignaturePackage
        fields = ["platform", "channel", "arch", "definition_version", "engine_version", "sha256", "source"]


class SyncRunFilterSet(django_filters.FilterSet):
    mirror = django_filters.CharFilter(field_name="mirror__slug", label="Mirror slug")
    state = django_filters.ChoiceFilter(choices=SyncState.choices)

    class Meta:
        model = SyncRun
        fields = ["mirror", "state", "trigger"]
