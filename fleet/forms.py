from django import forms

from core.errors import Refused
from core.forms import ChangesMixin
from fleet.choices import EnforcementLevel
from fleet.models import MAX_INTERVAL, MIN_INTERVAL, EndpointGroup
from fleet.services.enrollment import check_expiry
from fleet.services.rings import group_audit_value
from mirror.choices import Platform
from mirror.models import SignaturePackage

IMPORT_MAX_BYTES = 256 * 1024  # an mdatp_managed.json is a few hundred bytes; refuse anything absurd


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
            "staleness_hours": "Staleness threshold (hours)",
            "source_group": "Source ring",
            "delay_hours": "Delay (hours)",
            "gate_percent": "Health gate (%)",
            "gate_min_enrollment_hours": "Gate: endpoints enrolled at least (hours)",
            "automatic_updates": "Automatic definition updates",
            "update_interval": "Update interval (seconds)",
            "offline_update": "Offline definition update",
            "fallback_to_cloud": "Fall back to Microsoft's cloud",
            "verify_signature": "Verify the package signature",
        }
        widgets = {"description": forms.Textarea(attrs={"rows": 2})}

    # Sections of the form page: (legend, field names).
    SECTIONS = (
        ("Ring", ("name", "slug", "description", "mirror", "platforms", "channel", "ring_order", "staleness_hours")),
        (
            "How new versions arrive",
            ("rollout", "source_group", "delay_hours", "gate_percent", "gate_min_enrollment_hours"),
        ),
        (
            "Managed configuration (mdatp_managed.json)",
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
        self.fields["source_group"].empty_label = "None (only for 'after')"
        self.fields["enforcement_level"].choices = [("", "Not managed"), *EnforcementLevel.choices]
        # The model's ranges, for the browser too (the server checks them anyway).
        self.fields["update_interval"].widget.attrs.update(min=MIN_INTERVAL, max=MAX_INTERVAL)
        self.fields["gate_percent"].widget.attrs.update(max=100)
        # Optional in the form as in the API: a form from before the setting existed means 0 (no minimum age).
        self.fields["gate_min_enrollment_hours"].required = False
        self.fields["slug"].help_text = "In the group's URLs: /mirror/groups/<slug>/…"
        self.remember()

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
        queryset=SignaturePackage.objects.none(), empty_label=None, label="Version to approve"
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
            # Preselect the newest version not served yet: approving what is served is refused anyway.
            field.initial = next((p.pk for p in packages if current is None or p.pk != current.pk), None)

    @staticmethod
    def label(package, current) -> str:
        label = f"{package.definition_version} (engine {package.engine_version}, {package.downloaded_at:%Y-%m-%d})"
        return f"{label} — served now" if current is not None and package.pk == current.pk else label


class ConfirmForm(forms.Form):
    """A promote or roll-back confirmation: what the person saw, so that a stale page changes nothing."""

    expected_current = forms.IntegerField(required=False, widget=forms.HiddenInput)
    package = forms.IntegerField(widget=forms.HiddenInput)


class ImportPolicyForm(forms.Form):
    """An existing mdatp_managed.json, uploaded or pasted, whose policy the group takes."""

    file = forms.FileField(required=False, label="mdatp_managed.json file")
    text = forms.CharField(
        required=False,
        label="…or paste its content",
        strip=False,
        widget=forms.Textarea(attrs={"rows": 8, "spellcheck": "false"}),
    )

    def clean(self):
        data = super().clean()
        upload, text = data.get("file"), data.get("text") or ""
        if upload and text.strip():
            raise forms.ValidationError("Give a file or paste its content, not both.")
        if upload:
            if upload.size > IMPORT_MAX_BYTES:
                self.add_error(
                    "file", f"{upload.size} bytes is too large for an mdatp_managed.json (at most {IMPORT_MAX_BYTES})."
                )
                return data
            try:
                data["content"] = upload.read().decode("utf-8-sig")
            except UnicodeDecodeError:
                self.add_error("file", "The file is not UTF-8 text; is it really mdatp_managed.json?")
        elif text.strip():
            if len(text.encode()) > IMPORT_MAX_BYTES:
                self.add_error("text", f"Too long for an mdatp_managed.json (at most {IMPORT_MAX_BYTES} bytes).")
            data["content"] = text
        else:
            raise forms.ValidationError("Choose the mdatp_managed.json file or paste its content.")
        return data


# --- Endpoints and enrollment secrets --------------------------------------------------------------


class EndpointMoveForm(forms.Form):
    """Move an endpoint to another group; only groups with its platform are offered (the server checks again)."""

    group = forms.ModelChoiceField(
        queryset=EndpointGroup.objects.all(), to_field_name="slug", empty_label=None, label="Move to group"
    )

    def __init__(self, *args, endpoint=None, groups=None, **kwargs):
        super().__init__(*args, **kwargs)
        if endpoint is not None and groups is not None:  # rendering: the groups it can join, by name
            self.fields["group"].choices = [
                (g.slug, g.name) for g in groups if g.pk != endpoint.group_id and endpoint.platform in g.platforms
            ]


class EnrollmentSecretForm(forms.Form):
    """A new enrollment secret for a group: a name people recognise and an optional expiry."""

    name = forms.CharField(max_length=100, help_text="Where it is used, e.g. “pilot servers (Ansible)”.")
    expires_at = forms.DateTimeField(
        required=False,
        label="Expires (optional)",
        help_text="After this moment it enrolls nothing; empty: until revoked.",
        input_formats=["%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M", "%Y-%m-%d"],
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
    )
    max_enrollments = forms.IntegerField(
        required=False,
        min_value=1,
        label="Enrolls at most (optional)",
        help_text="Endpoints it may create in all; empty: no cap.",
    )

    def __init__(self, *args, **kwargs):
        from django.utils import timezone

        kwargs.setdefault("auto_id", "id_secret_%s")  # on the group page beside its other forms
        super().__init__(*args, **kwargs)
        self.fields["expires_at"].label = f"Expires (optional, {timezone.get_current_timezone_name()})"

    def clean_expires_at(self):
        # The service's rule, shown beside the other fields' errors (it checks again when it creates the secret).
        value = self.cleaned_data["expires_at"]
        try:
            check_expiry(value)
        except Refused as exc:
            raise forms.ValidationError(exc.message) from None
        return value
