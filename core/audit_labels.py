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
            "user.password_change": _("Password changed"),
            "user.password_set": _("Password set by an admin"),
            "user.password_reset": _("Password reset by e-mail"),
            "token.create": _("API token created"),
            "token.revoke": _("API token revoked"),
            "rolemapping.create": _("Role mapping created"),
            "rolemapping.update": _("Role mapping changed"),
            "rolemapping.delete": _("Role mapping deleted"),
        },
    )

    # An API token's state (core.models.ApiToken.state).
    labels.register("token_state", {"active": _("active"), "expired": _("expired"), "revoked": _("revoked")})

    # The second factor and the security policy (core.mfa).
    labels.register(
        "audit_action",
        {
            "mfa.enable": _("Two-factor authentication set up"),
            "mfa.disable": _("Two-factor authentication removed"),
            "mfa.recovery_regenerate": _("New recovery codes made"),
            "mfa.reset": _("Second factor reset by an admin"),
            "mfa.failure": _("Wrong sign-in code"),
            "security_policy.update": _("Security policy changed"),
        },
    )
    labels.register("audit_object", {"mfa": _("Two-factor authentication"), "security_policy": _("Security policy")})
    labels.register(
        "audit_field",
        {
            "recovery_codes": _("Recovery codes"),
            "locked_out": _("Locked out"),
            "mfa_required_roles": _("Roles that must use two-factor authentication"),
        },
    )

    # Sign-ins and sessions (core.sessions).
    labels.register(
        "audit_action",
        {
            "user.sign_in": _("Signed in"),
            "user.sign_in_failed": _("Sign-in failed"),
            "session.end": _("Session ended"),
        },
    )
    labels.register("audit_object", {"session": _("Sessions")})
    labels.register(
        "audit_field", {"method": _("Sign-in method"), "reason": _("Reason"), "ip_address": _("IP address")}
    )

    # What actions act on: the audit page groups its action menu by these.
    labels.register("audit_object", {"user": _("Users"), "token": _("API tokens"), "rolemapping": _("Role mappings")})

    # Sign-ins from a directory (core.directory: OpenID Connect and LDAP, the same rule).
    labels.register(
        "audit_action",
        {
            "user.directory_create": _("User created from the directory"),
            "user.role_mapped": _("Role changed by a role mapping"),
            "user.sign_in_refused": _("Sign-in refused"),
        },
    )
    labels.register("audit_field", {"source": _("Directory"), "values": _("Groups or claims")})

    # Detail keys people read on the audit page (inc/audit_details.html); a key not listed reads as its words.
    labels.register(
        "audit_field",
        {
            "is_active": _("Active"),
            "tokens_revoked": _("Tokens revoked"),
            "sessions_ended": _("Sessions ended"),
            "expires_at": _("Expires"),
            "first_admin": _("First admin"),
            "must_change_password": _("Must change password"),
            "generated": _("Generated"),
            "sha256": _("SHA-256"),
            "url": _("URL"),
        },
    )
