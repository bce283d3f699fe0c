"""Forms of the second-factor pages (core.mfa_views)."""

from django import forms
from django.utils.translation import gettext_lazy as _

from core.choices import Role


class CodeForm(forms.Form):
    """A code from the authenticator app or, at the sign-in, a recovery code."""

    code = forms.CharField(
        max_length=32,
        label=_("Code"),
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "autocapitalize": "off", "spellcheck": "false", "autofocus": True}
        ),
    )


class SetupCodeForm(CodeForm):
    code = forms.CharField(
        max_length=8,
        label=_("Code from the app"),
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "pattern": "[0-9 ]*", "autofocus": True}
        ),
    )


class CurrentCodeForm(CodeForm):
    """The person proves they still hold the second factor before changing it."""

    code = forms.CharField(
        max_length=32,
        label=_("A current code (or a recovery code)"),
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "autocapitalize": "off"}),
    )


class SecurityPolicyForm(forms.Form):
    mfa_required_roles = forms.MultipleChoiceField(
        choices=Role.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label=_("Roles that must use two-factor authentication"),
    )
