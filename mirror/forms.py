"""The forms of the mirror pages: mirrors, upstreams, and the package list's filters."""

import django_filters
from django import forms
from django.db import models
from django.db.models import Q

from core.forms import ChangesMixin
from core.secrets import MASK, mask_url
from mirror.choices import Arch, Channel, Platform
from mirror.filtersets import SignaturePackageFilterSet
from mirror.models import Mirror, Upstream


def formfield(db_field, **kwargs):
    # Endpoints and the portal's own links are https; a URL typed without a scheme is taken as https too.
    if isinstance(db_field, models.URLField):
        kwargs.setdefault("assume_scheme", "https")
    return db_field.formfield(**kwargs)


class AnyChoices(forms.MultipleChoiceField):
    """Checkboxes whose values the model checks: Mirror.clean() says "Unknown platform windows; choose from …"
    and "Choose at least one of …", so the page shows the API's sentences and only those."""

    def valid_value(self, value):
        return True


class MaskedUrlInput(forms.TextInput):
    """A URL shown masked (core.secrets): its credentials are kept by save_upstream when sent back unchanged."""

    def format_value(self, value):
        return mask_url(super().format_value(value) or "") or None


class MirrorForm(ChangesMixin, forms.ModelForm):
    platforms = AnyChoices(choices=Platform.choices, widget=forms.CheckboxSelectMultiple, required=False)
    channels = AnyChoices(choices=Channel.choices, widget=forms.CheckboxSelectMultiple, required=False)
    archs = AnyChoices(choices=Arch.choices, widget=forms.CheckboxSelectMultiple, required=False, label="Architectures")

    class Meta:
        model = Mirror
        formfield_callback = formfield
        fields = Mirror.EDITABLE_FIELDS
        labels = {
            "keep_previous": "Publish the previous version (n-1)",
            "enabled": "Sync on schedule",
            "sync_interval_minutes": "Sync interval (minutes)",
            "retention": "Packages kept per target",
            "publish_root": "Published tree directory",
            "public_base_url": "Public base URL",
        }

    SECTIONS = (
        ("Mirror", ("name", "slug", "upstream")),
        ("What it syncs", ("platforms", "channels", "archs", "keep_previous")),
        ("Schedule and storage", ("enabled", "sync_interval_minutes", "retention", "publish_root", "public_base_url")),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["upstream"].empty_label = None if Upstream.objects.exists() else "No upstream yet: add one first"
        self.fields["slug"].help_text = "In the mirror's URLs: /mirror/<slug>/<platform>/<channel>/…"
        if self.instance.pk:
            # The published tree's directory and every endpoint's URL are named after it.
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = "Fixed once created: the published tree and the endpoints' URLs use it."
        self.remember()

    def sections(self):
        return [(legend, [self[name] for name in names]) for legend, names in self.SECTIONS]


class UpstreamForm(ChangesMixin, forms.ModelForm):
    def plain(self, name, value):
        # Compared masked: credentials kept as they were are no change (the audit log masks them anyway).
        return mask_url(value) if name in ("base_url", "proxy_url") else super().plain(name, value)

    class Meta:
        model = Upstream
        formfield_callback = formfield
        fields = Upstream.EDITABLE_FIELDS
        labels = {
            "base_url": "Base URL",
            "linux_link_id": "Linux fwlink id",
            "mac_link_id": "macOS fwlink id",
            "proxy_url": "Proxy URL",
            "verify_tls": "Verify TLS certificates",
            "ca_bundle": "CA bundle",
            "timeout": "Timeout (seconds)",
        }
        widgets = {"base_url": MaskedUrlInput, "proxy_url": MaskedUrlInput}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["proxy_url"].help_text = (
            "e.g. http://user:password@proxy:3128. Credentials are kept but never shown again: "
            f"leave {MASK} in place to keep them."
        )
        self.fields[
            "base_url"
        ].help_text += (
            f" A user, password or query token in it is kept but never shown again: leave {MASK} in place to keep it."
        )
        self.remember()


class PackageFilterSet(SignaturePackageFilterSet):
    """The API's package filters, and one box for a version: engine or definition, any part of it."""

    version = django_filters.CharFilter(method="version_contains", label="Version contains")

    def version_contains(self, queryset, name, value):
        return queryset.filter(Q(definition_version__icontains=value) | Q(engine_version__icontains=value))

    # The fields the page shows; the others still work in the URL, as in the API.
    SHOWN = ("platform", "channel", "arch", "version")

    def shown_fields(self):
        return [self.form[name] for name in self.SHOWN]


class BundleImportForm(forms.Form):
    """A bundle exported by another portal, and the mirror to publish it on."""

    file = forms.FileField(label="Bundle file", help_text="The .bundle.tar file exported by the other portal.")
    mirror = forms.ModelChoiceField(
        Mirror.objects.all(),
        to_field_name="slug",
        required=False,
        empty_label="The mirror of the same slug as the exporting one",
        help_text="Where the packages are published (current and n-1 per target).",
    )


class TrustedBundleKeyForm(forms.Form):
    """Another portal's public key, as its Bundles page shows it."""

    name = forms.CharField(max_length=100, help_text="e.g. the exporting portal's name.")
    public_key = forms.CharField(
        label="Public key",
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="The 44-character key (or its PEM block) from the exporting portal's Mirrors › Bundles page.",
    )
    note = forms.CharField(max_length=300, required=False, help_text="Where it came from, who carried it.")


class TreeImportForm(forms.Form):
    """A folder on the portal's server holding a tree written by Microsoft's download script."""

    path = forms.CharField(
        label="Folder",
        max_length=4096,
        help_text="Absolute path of the folder holding linux/ or mac/, e.g. /media/usb/wdav-update.",
    )
    mirror = forms.ModelChoiceField(Mirror.objects.all(), to_field_name="slug")
