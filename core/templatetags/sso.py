"""The sign-in page's single sign-on button (templates/registration/sso_buttons.html)."""

from django import template

from core.oidc import oidc_enabled, provider_name

register = template.Library()


@register.simple_tag
def oidc_provider() -> str:
    """The provider's name for "Sign in with …", or "" when OpenID Connect is off."""
    return provider_name() if oidc_enabled() else ""
