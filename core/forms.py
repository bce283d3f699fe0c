from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.password_validation import validate_password
from django.db import models
from django.utils.translation import gettext_lazy as _

from core.choices import Role, TokenScope

User = get_user_model()


class ApiTokenForm(forms.Form):
    name = forms.CharField(max_length=100, label=_("Name"), help_text=_("What uses it, e.g. 'ansible-prod'."))
    scope = forms.ChoiceField(choices=TokenScope.choices, initial=TokenScope.READ, label=_("Scope"))
    expires_in_days = forms.IntegerField(
        min_value=1, max_value=3650, required=False, label=_("Expires in (days)"), help_text=_("Empty: never expires.")
    )


class ReauthenticateForm(forms.Form):
    password = forms.CharField(
        label=_("Password"), widget=forms.PasswordInput(attrs={"autocomplete": "current-password"})
    )


class UserCreateForm(forms.Form):
    username = forms.RegexField(
        r"^[\w.@+-]+\Z",
        max_length=150,
        label=_("Username"),
        error_messages={"invalid": _("Letters, digits and @.+-_ only.")},
    )
    email = forms.EmailField(required=False, label=_("E-mail"))
    role = forms.ChoiceField(choices=Role.choices, initial=Role.VIEWER, label=_("Role"))
    password = forms.CharField(
        widget=forms.PasswordInput,
        required=False,
        label=_("Password"),
        help_text=_("Empty: a password is generated, shown to you once, and must be changed at the first sign-in."),
    )
    must_change_password = forms.BooleanField(required=False, label=_("Must change the password at the first sign-in"))

    def clean_username(self):
        username = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError(_("A user with that username already exists."))
        return username

    def clean(self):
        data = super().clean()
        if data.get("password") and data.get("username"):
            try:
                validate_password(data["password"], User(username=data["username"], email=data.get("email", "")))
            except forms.ValidationError as exc:
                self.add_error("password", exc)
        return data


class UserUpdateForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, label=_("Role"))
    is_active = forms.BooleanField(required=False, label=_("Active"))


class ChangesMixin:
    """What a ModelForm's save changes, for the audit log: {field: {"from": …, "to": …}}, or {"fields": {…}} on
    creation. The form calls ``remember()`` at the end of ``__init__``; ``plain(name, value)`` says how a value is
    recorded (another object by its name; a form overrides it to mask a secret or name objects otherwise)."""

    def plain(self, name, value):
        return str(value) if isinstance(value, models.Model) else value

    def remember(self):
        self.before = (
            {name: self.plain(name, getattr(self.instance, name)) for name in self.fields} if self.instance.pk else {}
        )

    def changes(self) -> dict:
        after = {name: self.plain(name, getattr(self.instance, name)) for name in self.fields}
        if not self.before:
            return {"fields": after}
        return {
            name: {"from": self.before[name], "to": value}
            for name, value in after.items()
            if self.before[name] != value
        }
