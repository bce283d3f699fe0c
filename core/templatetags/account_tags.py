"""``{% load account_tags %}``: what the sign-in page offers about passwords (core.account_views)."""

from django import template

from core.accounts import mail_configured

register = template.Library()


@register.simple_tag
def password_reset_enabled() -> bool:
    """Whether "Forgot your password?" is offered: only where the portal can send mail (EMAIL_HOST)."""
    return mail_configured()
