"""The words for core's codes: the audit actions core records, the detail keys they use, API token states; registered
by core.apps (register()). tests/core/test_audit_words.py checks every recorded action has a label."""

from django.utils.translation import gettext_lazy as _

from core import labels


def register() -> None:
    labels.register(
        "audit_action",
        {
            "user.create": _("User created"),
            "user.update": _("User changed"),
            "user.reauthenticate": _("Password confirmed"),
            "token.create": _("API token created"),
            "token.revoke": _("API token revoked"),
        },
    )

    # An API token's state (core.models.ApiToken.state).
    labels.register("token_state", {"active": _("active"), "expired": _("expired"), "revoked": _("revoked")})

    # What actions act on: the audit page groups its action menu by these.
    labels.register("audit_object", {"user": _("Users"), "token": _("API tokens")})

    # Detail keys people read on the audit page (inc/audit_details.html); a key not listed reads as its words.
    labels.register(
        "audit_field",
        {
            "is_active": _("Active"),
            "tokens_revoked": _("Tokens revoked"),
            "sessions_ended": _("Sessions ended"),
            "expires_at": _("Expires"),
            "first_admin": _("First admin"),
            "sha256": _("SHA-256"),
            "url": _("URL"),
        },
    )
