"""The audit log's words for what fleet records (rings and their approvals, enrollment, endpoints); registered from
fleet.apps. tests/core/test_audit_words.py checks every action fleet emits has one."""

from django.utils.translation import gettext_lazy as _

from core import labels


def register() -> None:
    labels.register(
        "audit_action",
        {
            # f"approval.{action}" for each fleet.choices.ApprovalAction
            "approval.approve": _("Version approved"),
            "approval.promote": _("Version promoted"),
            "approval.rollback": _("Version rolled back"),
            "approval.auto": _("Version approved by the rollout rule"),
            "group.create": _("Group created"),
            "group.update": _("Group changed"),
            "group.delete": _("Group deleted"),
            "enrollment_secret.create": _("Enrollment secret created"),
            "enrollment_secret.revoke": _("Enrollment secret revoked"),
            "endpoint.enroll": _("Endpoint enrolled"),
            "endpoint.rekey": _("Endpoint given a new token"),
            "endpoint.conflict": _("Identity conflict"),
            "endpoint.conflict_accept": _("Identity conflict accepted"),
            "endpoint.conflict_reject": _("Identity conflict rejected"),
            "endpoint.move": _("Endpoint moved"),
            "endpoint.decommission": _("Endpoint decommissioned"),
        },
    )
    labels.register(
        "audit_object",
        {
            "approval": _("Approvals"),
            "group": _("Groups"),
            "enrollment_secret": _("Enrollment secrets"),
            "endpoint": _("Endpoints"),
        },
    )
