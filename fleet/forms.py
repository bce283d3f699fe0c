from django import forms
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from core.errors import Refused
from core.forms import ChangesMixin
from fleet.choices import EnforcementLevel
from fleet.models import MAX_INTERVAL, MIN_INTERVAL, EndpointGroup
from fleet.services.enrollment import check_expiry
from fleet.services.rings import group_audit_value, is_newer
from mirror.choices import Platform
from mirror.models import SignaturePackage

IMPORT_MAX_BYTES = 256 * 1024  # an mdatp_managed.json is a few hundred bytes; refuse anything absurd

# Microsoft's pages behind the group form's inline help (each found on learn.microsoft.com).
MS_PREFERENCES = "https://learn.microsoft.com/en-us/defender-endpoint/linux-preferences"
MS_OFFLINE_UPDATES = (
    "https://learn.microsoft.com/en-us/defender-endpoint/linux-support-offline-security-intelligence-update"
)
MS_UPDATE_CHANNELS = "https://docs.microsoft.com/en-us/microsoft-365/security/defender-endpoint/updates"


def _help(sentence: str, url: str = "", key: str = ""):
    """A help text: the mdatp_managed.json key it sets, one sentence, then a link to the Microsoft page that says more."""
    text = format_html("<code>{}</code>: {}", key, sentence) if key else sentence
    if not url:
        return text
    return format_html('{} <a href="{}" rel="noopener">{}</a>', text, url, gettext("Microsoft’s documentation"))


class EndpointGroupForm(ChangesMixin, forms.ModelForm):
    """A ring: where its endpoints fetch, how new versions arrive, and the managed configuration they get."""

    # A JSON list on the model; checkboxes here. Not required at form level so that the
    # model's own sentence ("Choose at least one of linux, mac.") is the one shown.
    platforms = forms.MultipleChoiceField(
        choices=Platform.choices,
        widget=forms.CheckboxSelectMultiple,
        required=False,
        help_text=EndpointGroup._meta.get_field("platforms").help_text,
    )

    class Meta:
        model = EndpointGroup
        fields = EndpointGroup.EDITABLE_FIELDS
        labels = {
            "name": _("Name"),
            "slug": _("Slug"),
            "description": _("Description"),
            "mirror": _("Mirror"),
            "channel": _("Channel"),
            "ring_order": _("Ring order"),
            "staleness_hours": _("Staleness threshold (hours)"),
            "rollout": _("Rollout"),
            "source_group": _("Source ring"),
            "delay_hours": _("Delay (hours)"),
            "gate_percent": _("Health gate (%)"),
            "gate_min_enrollment_hours": _("Gate: endpoints enrolled at least (hours)"),
            "automatic_updates": _("Automatic definition updates"),
            "update_interval": _("Update check interval (seconds)"),
            "offline_update": _("Offline definition update"),
            "fallback_to_cloud": _("Fall back to Microsoft's cloud"),
            "verify_signature": _("Verify the package signature"),
            "enforcement_level": _("Enforcement level"),
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    # Sections of the form page: (legend, field names).
    SECTIONS = (
        (
            _("Ring"),
            ("name", "slug", "description", "mirror", "platforms", "channel", "ring_order", "staleness_hours"),
        ),
        (
            _("How new versions arrive"),
            ("rollout", "source_group", "delay_hours", "gate_percent", "gate_min_enrollment_hours"),
        ),
        (
            _("Managed configuration (mdatp_managed.json)"),
            (
                "automatic_updates",
                "update_interval",
                "offline_update",
                "fallback_to_cloud",
                "verify_signature",
                "enforcement_level",
            ),
        ),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        rings = EndpointGroup.objects.select_related("mirror").order_by("ring_order", "name")
        if self.instance.pk:
            rings = rings.exclude(pk=self.instance.pk)
        self.fields["source_group"].queryset = rings
        self.fields["source_group"].empty_label = _("None (only for 'after')")
        self.fields["enforcement_level"].choices = [("", _("Not managed")), *EnforcementLevel.choices]
        # The model's ranges, for the browser too (the server checks them anyway).
        self.fields["update_interval"].widget.attrs.update(min=MIN_INTERVAL, max=MAX_INTERVAL)
        self.fields["gate_percent"].widget.attrs.update(max=100)
        # Optional in the form as in the API: a form from before the setting existed means 0 (no minimum age).
        self.fields["gate_min_enrollment_hours"].required = False
        self.fields["slug"].help_text = _("In the group's URLs: /mirror/groups/<slug>/…")
        self.fields["slug"].widget.attrs["data-slug-from"] = self["name"].auto_id  # portal/static/portal/slug.js
        self.fields["platforms"].label = _("Platforms")
        self.explain_defender()
        self.remember()

    def explain_defender(self) -> None:
        """Inline help where a Defender choice is made: what it does on the endpoint, and Microsoft's page."""
        fields = self.fields
        fields["enforcement_level"].help_text = _help(
            gettext(
                "Real time scans files as they are opened and blocks threats; on demand scans only when asked; "
                "passive reports threats but blocks nothing. Automatic definition updates run only in real time: "
                "on demand or passive, only “mdatp definitions update” (cron, your tooling) updates."
            ),
            MS_PREFERENCES,
            "antivirusEngine.enforcementLevel",
        )
        fields["channel"].help_text = _help(
            gettext(
                "Production is what Microsoft releases to everyone. Preview receives definitions and engines "
                "earlier, for test machines: Microsoft's preview channels (Beta or “Insider”, Preview) come "
                "before its production release."
            ),
            MS_UPDATE_CHANNELS,
        )
        fields["fallback_to_cloud"].help_text = _help(
            gettext(
                "When the mirror cannot serve an update, the endpoint retries from Microsoft's cloud. On an "
                "offline network it cannot reach the cloud: leave this off there, so a failure shows as a failure."
            ),
            MS_OFFLINE_UPDATES,
            "antivirusEngine.offlineDefinitionUpdateFallbackToCloud",
        )
        fields["update_interval"].help_text = _help(
            gettext(
                "How often the endpoint checks the mirror for new definitions, in seconds (60 to 86400): "
                "28800 is every 8 h, 3600 every hour."
            ),
            MS_PREFERENCES,
            "cloudService.definitionUpdatesInterval",
        )
        fields["offline_update"].help_text = _help(
            gettext(
                "Endpoints fetch definitions from this ring's URL. Microsoft's layout keeps the previous package "
                "(n-1) beside it, so that a bad version can be rolled back at once: the ring's page does that."
            ),
            MS_OFFLINE_UPDATES,
            "antivirusEngine.offlineDefinitionUpdate",
        )
        fields["automatic_updates"].help_text = _help(
            gettext("Off: the endpoint updates only when “mdatp definitions update” runs."),
            key="cloudService.automaticDefinitionUpdateEnabled",
        )
        fields["verify_signature"].help_text = _help(
            gettext("The endpoint checks Microsoft's signature on the package before it installs it."),
            key="features.offlineDefinitionUpdateVerifySig",
        )

    def clean_gate_min_enrollment_hours(self):
        value = self.cleaned_data.get("gate_min_enrollment_hours")
        return 0 if value is None else value

    def sections(self):
        return [(legend, [self[name] for name in names]) for legend, names in self.SECTIONS]

    def _post_clean(self):
        super()._post_clean()
        # The model states the interval's range twice (its validators and clean()):
        # show clean()'s sentence, which also gives the default, and not both.
        for errors in self.errors.values():
            if len(errors.data) > 1:
                kept = [e for e in errors.data if getattr(e, "code", None) not in ("min_value", "max_value")]
                errors.data[:] = kept or errors.data

    def plain(self, name, value):
        return group_audit_value(value)


class ApproveForm(forms.Form):
    """Serve one package to a group's target; ``expected_current`` is what the operator saw approved."""

    package = forms.ModelChoiceField(
        queryset=SignaturePackage.objects.none(), empty_label=None, label=_("Version to approve")
    )
    expected_current = forms.IntegerField(required=False, widget=forms.HiddenInput)

    def __init__(self, *args, group, target, packages=None, current=None, **kwargs):
        platform, channel, arch = target
        kwargs.setdefault("auto_id", f"id_{platform}_{arch}_%s")  # one form per target on the page
        kwargs.setdefault("initial", {"expected_current": current.pk if current else None})
        super().__init__(*args, **kwargs)
        field = self.fields["package"]
        field.queryset = SignaturePackage.objects.filter(platform=platform, channel=channel, arch=arch)
        if packages is not None:  # rendering: the list rings.packages_for gave, labelled for a person
            field.choices = [(p.pk, self.label(p, current)) for p in packages]
            field.initial = self.default(packages, current)
            if field.initial is None:  # nothing newer to offer: no version is chosen for the person
                field.choices = [("", gettext("Choose a version")), *field.choices]

    @staticmethod
    def default(packages, current):
        """The newest package newer than the one served; None when there is none. Never an older one: once an
        n-1 exists, preselecting it made one click a downgrade."""
        return next((p.pk for p in packages if is_newer(p, current)), None)

    @staticmethod
    def label(package, current) -> str:
        label = gettext("%(version)s (engine %(engine)s, %(date)s)") % {
            "version": package.definition_version,
            "engine": package.engine_version,
            "date": f"{package.downloaded_at:%Y-%m-%d}",
        }
        if current is not None and package.pk == current.pk:
            return gettext("%(label)s — served now") % {"label": label}
        if current is not None and is_newer(current, package):
            return gettext("%(label)s — older: a downgrade") % {"label": label}
        return label


class ConfirmForm(forms.Form):
    """A promote or roll-back confirmation: what the person saw, so that a stale page changes nothing."""

    expected_current = forms.IntegerField(required=False, widget=forms.HiddenInput)
    package = forms.IntegerField(widget=forms.HiddenInput)


class ImportPolicyForm(forms.Form):
    """An existing mdatp_managed.json, uploaded or pasted, whose policy the group takes."""

    file = forms.FileField(required=False, label=_("mdatp_managed.json file"))
    text = forms.CharField(
        required=False,
        label=_("…or paste its content"),
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
    )

    def clean(self):
        data = super().clean()
        upload, text = data.get("file"), data.get("text") or ""
        if upload and text.strip():
            raise forms.ValidationError(_("Give a file or paste its content, not both."))
        if upload:
            if upload.size > IMPORT_MAX_BYTES:
                self.add_error(
                    "file",
                    gettext("%(size)s bytes is too large for an mdatp_managed.json (at most %(max)s).")
                    % {"size": upload.size, "max": IMPORT_MAX_BYTES},
                )
                return data
            try:
                data["content"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                self.add_error("file", gettext("The file is not UTF-8 text; is it really mdatp_managed.json?"))
        elif text.strip():
            if len(text.encode()) > IMPORT_MAX_BYTES:
                self.add_error(
                    "text",
                    gettext("Too long for an mdatp_managed.json (at most %(max)s bytes).") % {"max": IMPORT_MAX_BYTES},
                )
            data["content"] = text
        else:
            raise forms.ValidationError(_("Choose the mdatp_managed.json file or paste its content."))
        return data


# --- Endpoints and enrollment secrets --------------------------------------------------------------


class EndpointMoveForm(forms.Form):
    """Move an endpoint to another group; only groups with its platform are offered (the server checks again)."""

    group = forms.ModelChoiceField(
        queryset=EndpointGroup.objects.all(), to_field_name="slug", empty_label=None, label=_("Move to group")
    )

    def __init__(self, *args, endpoint=None, groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        if endpoint is not None and groups is not None:  # rendering: the groups it can join, by name
            self.fields["group"].choices = [
                (g.slug, g.name) for g in groups if g.pk != endpoint.group_id and endpoint.platform in g.platforms
            ]


class EnrollmentSecretForm(forms.Form):
    """A new enrollment secret for a group: a name people recognise and an optional expiry."""

    name = forms.CharField(
        max_length=100, label=_("Name"), help_text=_("Where it is used, e.g. “pilot servers (Ansible)”.")
    )
    expires_at = forms.DateTimeField(
        required=False,
        label=_("Expires (optional)"),
        help_text=_("After this moment it enrolls nothing; empty: until revoked."),
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    max_enrollments = forms.IntegerField(
        required=False,
        min_value=1,
        label=_("Enrolls at most (optional)"),
        help_text=_("Endpoints it may create in all; empty: no cap."),
    )

    def __init__(self, *args, **kwargs):
        from django.utils import timezone

        kwargs.setdefault("auto_id", "id_secret_%s")  # on the group page beside its other forms
        super().__init__(*args, **kwargs)
        self.fields["expires_at"].label = gettext("Expires (optional, %(zone)s)") % {
            "zone": timezone.get_current_timezone_name()
        }

    def clean_expires_at(self):
        # The service's rule, shown beside the other fields' errors (it checks again when it creates the secret).
        value = self.cleaned_data["expires_at"]
        try:
            check_expiry(value)
        except Refused as exc:
            raise forms.ValidationError(exc.message) from None
        return value
