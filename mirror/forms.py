"""The forms of the mirror pages: mirrors, upstreams, and the package list's filters."""

import django_filters
from django import forms
from django.db import models
from django.db.models import Q
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _

from core.forms import ChangesMixin
from core.secrets import MASK, mask_url
from mirror.choices import Arch, Channel, Platform
from mirror.filtersets import SignaturePackageFilterSet
from mirror.models import Mirror, Upstream

# Microsoft's page on offline updates: its channels (downloadPreviewUpdates) and the n-1 backup folder (_back).
OFFLINE_UPDATES_DOC = (
    "https://learn.microsoft.com/en-us/defender-endpoint/linux-support-offline-security-intelligence-update"
)


def doc_help(text):
    """A help text ending with a link to Microsoft's page (opened in a new tab: the form keeps what was typed)."""
    return format_html(
        '{} <a href="{}" target="_blank" rel="noopener noreferrer">{}</a>',
        text,
        OFFLINE_UPDATES_DOC,
        _("Microsoft's page on offline updates"),
    )


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
    platforms = AnyChoices(
        choices=Platform.choices, widget=forms.CheckboxSelectMultiple, required=False, label=_("Platforms")
    )
    channels = AnyChoices(
        choices=Channel.choices, widget=forms.CheckboxSelectMultiple, required=False, label=_("Channels")
    )
    archs = AnyChoices(
        choices=Arch.choices, widget=forms.CheckboxSelectMultiple, required=False, label=_("Architectures")
    )

    class Meta:
        model = Mirror
        formfield_callback = formfield
        fields = Mirror.EDITABLE_FIELDS
        labels = {
            "name": _("Name"),
            "slug": _("Slug"),
            "upstream": _("Upstream"),
            "keep_previous": _("Publish the previous version (n-1)"),
            "enabled": _("Sync on schedule"),
            "sync_interval_minutes": _("Sync interval (minutes)"),
            "retention": _("Packages kept per target"),
            "publish_root": _("Published tree directory"),
            "public_base_url": _("Public base URL"),
        }
        # The name's letters fill the slug as it is typed (portal/static/portal/slug.js).
        widgets = {"slug": forms.TextInput(attrs={"data-slug-from": "id_name"})}

    SECTIONS = (
        (_("Mirror"), ("name", "slug", "upstream")),
        (_("What it syncs"), ("platforms", "channels", "archs", "keep_previous")),
        (
            _("Schedule and storage"),
            ("enabled", "sync_interval_minutes", "retention", "publish_root", "public_base_url"),
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["upstream"].empty_label = None if Upstream.objects.exists() else _("No upstream yet: add one first")
        self.fields["slug"].help_text = _("In the mirror's URLs: /mirror/<slug>/<platform>/<channel>/…")
        self.fields["channels"].help_text = doc_help(
            _(
                "Production is what Microsoft releases to everyone; Preview gets signatures and engines earlier "
                "(Microsoft's downloadPreviewUpdates), for a few test machines first."
            )
        )
        self.fields["keep_previous"].help_text = doc_help(
            _(
                "The version before the current one stays under <channel>_back/, as Microsoft's script keeps it: "
                "if the latest signatures cause trouble, endpoints or a ring can go back to it at once, without a "
                "download."
            )
        )
        self.fields["sync_interval_minutes"].help_text = _(
            "0: sync only when asked. Microsoft publishes new signatures several times a day."
        )
        if self.instance.pk:
            # The published tree's directory and every endpoint's URL are named after it.
            self.fields["slug"].disabled = True
            self.fields["slug"].help_text = _("Fixed once created: the published tree and the endpoints' URLs use it.")
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
            "name": _("Name"),
            "kind": _("Kind"),
            "base_url": _("Base URL"),
            "linux_link_id": _("Linux fwlink id"),
            "mac_link_id": _("macOS fwlink id"),
            "proxy_url": _("Proxy URL"),
            "verify_tls": _("Verify TLS certificates"),
            "ca_bundle": _("CA bundle"),
            "timeout": _("Timeout (seconds)"),
        }
        widgets = {"base_url": MaskedUrlInput, "proxy_url": MaskedUrlInput}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["proxy_url"].help_text = _(
            "e.g. http://user:password@proxy:3128. Credentials are kept but never shown again: "
            "leave %(mask)s in place to keep them."
        ) % {"mask": MASK}
        self.fields["base_url"].help_text = _(
            "Microsoft: the fwlink URL. Mirror: the URL above <platform>/<channel>/arch_<arch>/. A user, password or "
            "query token in it is kept but never shown again: leave %(mask)s in place to keep it."
        ) % {"mask": MASK}
        self.fields["kind"].help_text = doc_help(
            _(
                "Microsoft: its fwlink service, production or preview channel as each mirror asks. Another mirror: a "
                "portal or a tree written by Microsoft's script, for a site without internet access."
            )
        )
        self.remember()


class PackageFilterSet(SignaturePackageFilterSet):
    """The API's package filters, and one box for a version: engine or definition, any part of it."""

    version = django_filters.CharFilter(method="version_contains", label=_("Version contains"))

    def version_contains(self, queryset, name, value):
        return queryset.filter(Q(definition_version__icontains=value) | Q(engine_version__icontains=value))

    # The fields the page shows; the others still work in the URL, as in the API.
    SHOWN = ("platform", "channel", "arch", "version", "ordering")

    def shown_fields(self):
        return [self.form[name] for name in self.SHOWN]


class BundleImportForm(forms.Form):
    """A bundle exported by another portal, and the mirror to publish it on."""

    file = forms.FileField(label=_("Bundle file"), help_text=_("The .bundle.tar file exported by the other portal."))
    mirror = forms.ModelChoiceField(
        Mirror.objects.all(),
        to_field_name="slug",
        required=False,
        label=_("Mirror"),
        empty_label=_("The mirror of the same slug as the exporting one"),
        help_text=_("Where the packages are published (current and n-1 per target)."),
    )


class TrustedBundleKeyForm(forms.Form):
    """Another portal's public key, as its Bundles page shows it."""

    name = forms.CharField(label=_("Name"), max_length=100, help_text=_("e.g. the exporting portal's name."))
    public_key = forms.CharField(
        label=_("Public key"),
        max_length=1000,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("The 44-character key (or its PEM block) from the exporting portal's Mirrors › Bundles page."),
    )
    note = forms.CharField(
        label=_("Note"), max_length=300, required=False, help_text=_("Where it came from, who carried it.")
    )


class TreeImportForm(forms.Form):
    """A folder on the portal's server holding a tree written by Microsoft's download script."""

    path = forms.CharField(
        label=_("Folder"),
        max_length=4096,
        help_text=_("Absolute path of the folder holding linux/ or mac/, e.g. /media/usb/wdav-update."),
    )
    mirror = forms.ModelChoiceField(Mirror.objects.all(), to_field_name="slug", label=_("Mirror"))
