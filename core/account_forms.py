"""Forms for passwords: one's own change, and an admin's set or reset (core.account_views)."""

from django import forms
from django.contrib.auth.password_validation import password_validators_help_texts, validate_password
from django.utils.functional import lazy
from django.utils.translation import gettext_lazy as _

# Plain words, translated when shown (the form's help text is escaped, so not Django's HTML list).
_rules = lazy(lambda: " ".join(password_validators_help_texts()), str)


def _password_field(label, autocomplete, required=True, help_text=""):
    return forms.CharField(
        label=label,
        required=required,
        strip=False,
        help_text=help_text,
        widget=forms.PasswordInput(attrs={"autocomplete": autocomplete}),
    )


class NewPasswordMixin:
    """Two fields with the same new password, checked by settings.AUTH_PASSWORD_VALIDATORS for ``self.user``."""

    first, second = "new_password1", "new_password2"

    def clean(self):
        data = super().clean()
        one, two = data.get(self.first), data.get(self.second)
        if one and two and one != two:
            self.add_error(self.second, _("The two passwords differ."))
        elif one:
            try:
                validate_password(one, self.user)
            except forms.ValidationError as exc:
                self.add_error(self.first, exc)
        elif two:
            self.add_error(self.second, _("The two passwords differ."))
        return data


class PasswordChangeForm(NewPasswordMixin, forms.Form):
    old_password = _password_field(_("Current password"), "current-password")
    new_password1 = _password_field(_("New password"), "new-password", help_text=_rules())
    new_password2 = _password_field(_("New password again"), "new-password")

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)


class SetPasswordForm(NewPasswordMixin, forms.Form):
    """An admin sets another user's password. Both fields empty: one is generated and shown once."""

    new_password1 = _password_field(
        _("New password"),
        "new-password",
        required=False,
        help_text=_("Empty: a password is generated, shown to you once, and must be changed at the next sign-in."),
    )
    new_password2 = _password_field(_("New password again"), "new-password", required=False)
    must_change_password = forms.BooleanField(
        required=False, initial=True, label=_("Must change it at the next sign-in")
    )

    def __init__(self, user, *args, **kwargs):
        self.user = user
        super().__init__(*args, **kwargs)
