"""The portal's words for its codes: audit actions of alert channels and rules, alert kinds, states and
severities (from portal.choices); registered from portal.apps. tests/core/test_audit_words.py checks every audit
action has one."""

from django.utils.translation import gettext_lazy as _

from core import labels
from portal.choices import AlertChannelKind, AlertRuleKind, AlertSeverity, AlertState, DeliveryReason, DeliveryStatus


def register() -> None:
    labels.register(
        "audit_action",
        {
            "alert_channel.create": _("Alert channel created"),
            "alert_channel.update": _("Alert channel changed"),
            "alert_channel.delete": _("Alert channel deleted"),
            "alert_channel.test": _("Alert channel tested"),
            "alert_channel.rotate_secret": _("Alert channel's signing secret rotated"),
            "alert_rule.create": _("Alert rule created"),
            "alert_rule.update": _("Alert rule changed"),
            "alert_rule.delete": _("Alert rule deleted"),
        },
    )

    labels.register("audit_object", {"alert_channel": _("Alert channels"), "alert_rule": _("Alert rules")})

    labels.register(
        "audit_field",
        {
            "renotify_hours": _("Remind every (hours)"),
            "notify_resolved": _("Message when resolved"),
            "threshold_percent": _("Threshold (%)"),
            "min_endpoints": _("At least this many endpoints"),
            "secret_hint": _("Secret starts with"),
        },
    )

    labels.register("alert_kind", dict(AlertRuleKind.choices))
    labels.register("alert_state", dict(AlertState.choices))
    labels.register("alert_severity", dict(AlertSeverity.choices))
    labels.register("alert_channel_kind", dict(AlertChannelKind.choices))
    labels.register("delivery_reason", dict(DeliveryReason.choices))
    # Short, for a table cell: the choices' labels are the long form (the cell's title).
    labels.register(
        "delivery_status",
        {
            DeliveryStatus.PENDING: _("pending"),
            DeliveryStatus.SENDING: _("sending"),
            DeliveryStatus.DELIVERED: _("delivered"),
            DeliveryStatus.FAILED: _("failed"),
        },
    )
