import re

from django import forms
from django.utils.translation import gettext_lazy as _

from core.services import audit_value
from mirror.forms import formfield
from portal.models import AlertChannel, AlertRule

# --- Alerts -----------------------------------------------------------------------------------------


class AuditedChangesMixin:
    def changes(self) -> dict:
        """What the form sets, for the audit log: every field on creation, the changed ones otherwise."""
        names = self.fields if self.instance.pk is None else self.changed_data
        return {name: audit_value(self.cleaned_data.get(name)) for name in names}


class RecipientsField(forms.CharField):
    """E-mail addresses, one a line or separated by commas; AlertChannel.clean() checks each, as for the API."""

    widget = forms.Textarea(attrs={"rows": 3})

    def prepare_value(self, value):
        return "\n".join(value) if isinstance(value, list) else value

    def to_python(self, value):
        return [item for item in re.split(r"[\s,;]+", super().to_python(value)) if item]


class AlertChannelForm(AuditedChangesMixin, forms.ModelForm):
    recipients = RecipientsField(
        required=False, label=_("Recipients"), help_text=_("E-mail: one address a line (or comma-separated).")
    )

    class Meta:
        model = AlertChannel
        fields = ["name", "kind", "url", "recipients", "enabled"]
        formfield_callback = formfield  # a URL typed without a scheme is taken as https
        labels = {"name": _("Name"), "kind": _("Kind"), "url": _("Webhook URL"), "enabled": _("Send alerts here")}
        widgets = {"url": forms.URLInput(attrs={"placeholder": "https://hooks.example.org/portal"})}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["name"].help_text = _("e.g. 'SOC webhook' or 'Security team mail'.")


class AlertRuleForm(AuditedChangesMixin, forms.ModelForm):
    class Meta:
        model = AlertRule
        fields = AlertRule.EDITABLE_FIELDS
        labels = {
            "name": _("Name"),
            "kind": _("Alert when"),
            "enabled": _("Enabled"),
            "mirror": _("Mirror"),
            "group": _("Group"),
            "hours": _("Hours"),
            "days": _("Days"),
            "threshold_percent": _("Threshold (%)"),
            "min_endpoints": _("At least this many endpoints"),
            "channels": _("Channels"),
            "renotify_hours": _("Remind every (hours)"),
            "notify_resolved": _("Send a message when it is resolved"),
        }
        widgets = {"channels": forms.CheckboxSelectMultiple}

    SECTIONS = (
        (_("Rule"), ("name", "kind", "enabled")),
        (
            _("Condition (each kind uses only its own fields)"),
            ("mirror", "group", "hours", "days", "threshold_percent", "min_endpoints"),
        ),
        (_("Notify"), ("channels", "renotify_hours", "notify_resolved")),
    )

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["mirror"].empty_label = _("Every mirror")
        self.fields["group"].empty_label = _("Every group")
        self.fields["channels"].help_text = (
            "" if AlertChannel.objects.exists() else _("No channel yet: add one first, or alerts are only listed here.")
        )

    def sections(self):
        return [(legend, [self[name] for name in names]) for legend, names in self.SECTIONS]
