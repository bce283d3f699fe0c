"""The users page asks which accounts have a second factor, in one query for the whole list."""

from django import template
from django_otp.plugins.otp_totp.models import TOTPDevice

register = template.Library()


@register.simple_tag
def mfa_user_ids() -> set[int]:
    """The ids of the users with a confirmed authenticator (the admin's "reset second factor" button)."""
    return set(TOTPDevice.objects.filter(confirmed=True).values_list("user_id", flat=True))
