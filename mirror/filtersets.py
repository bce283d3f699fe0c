import django_filters
from django.utils.translation import gettext_lazy as _

from mirror.choices import Arch, Channel, PackageSource, Platform, SyncState, SyncTrigger
from mirror.models import SignaturePackage, SyncRun


class KnownColumnsField(django_filters.OrderingFilter.field_class):
    """One value of ``ordering`` (the filter splits the comma-separated list): a column it does not know is dropped,
    so an unknown ``ordering`` leaves the default order, on the pages as in the API (where DRF's OrderingFilter did
    the same), instead of emptying the list or answering 400."""

    def clean(self, value):
        if value not in {str(choice) for choice, _label in self.choices}:
            return ""
        return super().clean(value)


class ColumnOrdering(django_filters.OrderingFilter):
    """``?ordering=<column>`` or ``-<column>`` (core.sorting's parameter): the list's sortable columns; ties break by id
    so that pages never repeat or skip a row."""

    field_class = KnownColumnsField

    def filter(self, qs, value):
        ordering = [self.get_ordering_value(param) for param in value or () if param]
        if not ordering:
            return qs
        last = "-id" if ordering[-1].startswith("-") else "id"
        return qs.order_by(*ordering, last)


class SignaturePackageFilterSet(django_filters.FilterSet):
    platform = django_filters.ChoiceFilter(choices=Platform.choices, label=_("Platform"))
    channel = django_filters.ChoiceFilter(choices=Channel.choices, label=_("Channel"))
    arch = django_filters.ChoiceFilter(choices=Arch.choices, label=_("Architecture"))
    definition_version = django_filters.CharFilter(label=_("Definition version"))
    engine_version = django_filters.CharFilter(label=_("Engine version"))
    sha256 = django_filters.CharFilter(label="sha256")
    source = django_filters.ChoiceFilter(choices=PackageSource.choices, label=_("Source"))
    ordering = ColumnOrdering(
        fields=(
            ("downloaded_at", "downloaded_at"),
            ("size", "size"),
            ("definition_version", "definition_version"),
            ("engine_version", "engine_version"),
            ("platform", "platform"),
            ("source", "source"),
        ),
        field_labels={
            "downloaded_at": _("Downloaded"),
            "size": _("Size"),
            "definition_version": _("Definition version"),
            "engine_version": _("Engine version"),
            "platform": _("Platform"),
            "source": _("Source"),
        },
        label=_("Order by"),
    )

    class Meta:
        model = SignaturePackage
        fields = ["platform", "channel", "arch", "definition_version", "engine_version", "sha256", "source"]


class SyncRunFilterSet(django_filters.FilterSet):
    mirror = django_filters.CharFilter(field_name="mirror__slug", label=_("Mirror slug"))
    state = django_filters.ChoiceFilter(choices=SyncState.choices, label=_("State"))
    trigger = django_filters.ChoiceFilter(choices=SyncTrigger.choices, label=_("Trigger"))
    ordering = ColumnOrdering(
        fields=(
            ("created", "created"),
            ("finished_at", "finished_at"),
            ("mirror__name", "mirror"),
            ("state", "state"),
            ("trigger", "trigger"),
            ("bytes_done", "bytes_done"),
        ),
        field_labels={
            "created": _("Queued"),
            "finished_at": _("Finished"),
            "mirror__name": _("Mirror"),
            "state": _("State"),
            "trigger": _("Trigger"),
            "bytes_done": _("Downloaded"),
        },
        label=_("Order by"),
    )

    class Meta:
        model = SyncRun
        fields = ["mirror", "state", "trigger"]
