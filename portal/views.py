from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import Count, Prefetch, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import urlencode
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.generic import TemplateView, View

from core.choices import Role
from core.generic import ObjectDeleteView, ObjectFormView
from core.models import AuditEvent, Heartbeat
from core.roles import RoleRequiredMixin
from core.sorting import ordered
from fleet import tallies
from fleet.choices import Compliance, FindingCode
from fleet.models import ComplianceSnapshot, EndpointGroup
from fleet.services import rings
from mirror.models import Mirror, SyncRun
from mirror.views import FAILURES_LOOKED_AT, HEAVY_RUN_FIELDS, failures_in_a_row, next_run_context
from portal import alerts
from portal.checklist import first_run_checklist
from portal.choices import AlertChannelKind, AlertState, DeliveryStatus
from portal.forms import AlertChannelForm, AlertRuleForm
from portal.models import AlertChannel, AlertDelivery, AlertEvent, AlertRule

User = get_user_model()


# The dashboard: every section is one query (or two) whatever the size of the fleet.
TREND_DAYS = 14
TOP_VERSIONS = 10


def _short(label: str) -> str:
    """ "Failing (the last update failed)" → "Failing": for column headers."""
    return label.split(" (", 1)[0]


def _list_url(**filters) -> str:
    """The endpoint list, filtered."""
    base = reverse("fleet:endpoint_list")
    return f"{base}?{urlencode(filters)}" if filters else base


def _percent(n: int, total: int) -> float:
    return round(100 * n / total, 1) if total else 0.0


class DashboardView(RoleRequiredMixin, TemplateView):
    template_name = "portal/dashboard.html"

    def get_context_data(self, **kwargs):
        heartbeat = Heartbeat.objects.filter(name="worker").first()
        stale_after = 3 * settings.PORTAL_HEARTBEAT_SECONDS
        groups = list(EndpointGroup.objects.only("pk", "name", "slug", "ring_order"))
        compliance = self._compliance(groups)
        versions = self._versions(groups)
        trend = self._trend(groups)
        findings = self._findings()
        mirrors = self._mirrors()
        unserved = self._unserved(compliance)
        data = {
            "states": [{"value": s["value"], "label": s["label"]} for s in compliance["states"]],
            "overall": [cell["n"] for cell in compliance["overall"]["cells"]],
            "versions": {
                "labels": [row["version"] for row in versions["rows"]],
                "series": [
                    {"label": g.name, "data": [row["cells"][i]["n"] for row in versions["rows"]]}
                    for i, g in enumerate(versions["groups"])
                ],
            },
            "trend": {
                "labels": [row["day"].isoformat() for row in trend["rows"]],
                "series": {
                    s["value"]: [row["counts"][i] for row in trend["rows"]] for i, s in enumerate(compliance["states"])
                },
            },
        }
        return super().get_context_data(
            heartbeat=heartbeat,
            heartbeat_stale=heartbeat is None or (timezone.now() - heartbeat.seen_at).total_seconds() > stale_after,
            database_vendor=connection.vendor,
            broker=settings.CELERY_BROKER_URL.split("://", 1)[0],
            cache_backend="redis" if settings.REDIS_URL else _("local memory"),
            store_root=settings.PORTAL_STORE_ROOT,
            base_url=settings.PORTAL_BASE_URL,
            checklist=first_run_checklist(self.request.user),
            snapshot_every=settings.CELERY_BEAT_SCHEDULE["fleet-snapshot-compliance"]["schedule"],
            recent_events=AuditEvent.objects.all()[:10],
            groups=groups,
            compliance=compliance,
            versions=versions,
            trend=trend,
            findings=findings,
            mirrors=mirrors,
            unserved=unserved,
            data=data,
            **kwargs,
        )

    @staticmethod
    def _compliance(groups) -> dict:
        """Active endpoints per compliance state, overall and per group, each count with its link (one query, on
        the tallies: the same at a million endpoints)."""
        counts = tallies.by_group_state()
        states = [{"value": value, "label": _short(label), "title": label} for value, label in Compliance.choices]

        def row(group, by_state):
            total = sum(by_state.values())
            where = {"group": group.slug} if group else {}
            return {
                "group": group,
                "total": total,
                "url": _list_url(**where),
                "cells": [
                    {
                        "n": by_state.get(s["value"], 0),
                        "percent": _percent(by_state.get(s["value"], 0), total),
                        "url": _list_url(**where, compliance=s["value"]),
                    }
                    for s in states
                ],
            }

        overall: dict[str, int] = {}
        for by_state in counts.values():
            for state, n in by_state.items():
                overall[state] = overall.get(state, 0) + n
        total = sum(overall.values())
        return {
            "states": states,
            "overall": row(None, overall),
            "groups": [row(g, counts.get(g.pk, {})) for g in groups],
            "total": total,
            "reported": total - overall.get(Compliance.NEW, 0),
        }

    @staticmethod
    def _versions(groups) -> dict:
        """The TOP_VERSIONS most run definitions versions × the groups running them (one query, on the tallies)."""
        counts = tallies.by_version_group()
        ranked = sorted(counts, key=lambda v: (-sum(counts[v].values()), v))
        top = ranked[:TOP_VERSIONS]
        shown = [g for g in groups if any(g.pk in counts[v] for v in top)]
        rows = [
            {
                "version": v,
                "total": sum(counts[v].values()),
                "url": _list_url(version=v),
                "cells": [{"n": counts[v].get(g.pk, 0), "url": _list_url(group=g.slug, version=v)} for g in shown],
            }
            for v in top
        ]
        others = ranked[TOP_VERSIONS:]
        return {
            "groups": shown,
            "rows": rows,
            "other_versions": len(others),
            "other_endpoints": sum(sum(counts[v].values()) for v in others),
        }

    def _trend(self, groups) -> dict:
        """Per day of the last TREND_DAYS, the day's last snapshot of each group summed (one query); ?group= narrows it."""
        selected = next((g for g in groups if g.slug == self.request.GET.get("group")), None)
        since = timezone.localtime().replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=TREND_DAYS - 1)
        snapshots = ComplianceSnapshot.objects.filter(taken_at__gte=since).order_by("taken_at")
        if selected:
            snapshots = snapshots.filter(group=selected)
        last: dict[tuple, dict] = {}  # (day, group) → counts of its latest snapshot that day
        for taken_at, group_id, counts in snapshots.values_list("taken_at", "group_id", "counts"):
            last[(timezone.localdate(taken_at), group_id)] = counts or {}
        days: dict = {}
        for (day, _group), counts in last.items():
            total = days.setdefault(day, {})
            for state, n in counts.items():
                total[state] = total.get(state, 0) + n
        rows = [
            {
                "day": day,
                "counts": [days[day].get(value, 0) for value in Compliance.values],
                "total": sum(days[day].values()),
            }
            for day in sorted(days)
        ]
        return {"selected": selected, "rows": rows, "days": TREND_DAYS}

    @staticmethod
    def _unserved(compliance) -> list[dict]:
        """Rings that serve nothing for some of their targets, each with its page and its unserved endpoints (two queries)."""
        column = next(i for i, s in enumerate(compliance["states"]) if s["value"] == Compliance.UNSERVED)
        cells = {row["group"].pk: row["cells"][column] for row in compliance["groups"]}
        return [
            {
                "group": group,
                "targets": [
                    {"name": str(target), "anchor": f"target-{target.platform}-{target.arch}"} for target in targets
                ],
                "url": reverse("fleet:group_detail", args=[group.slug]),
                "endpoints": cells.get(group.pk, {"n": 0, "url": ""}),
            }
            for group, targets in rings.unserved_targets()
        ]

    @staticmethod
    def _findings() -> list[dict]:
        """Active endpoints per finding code, most common first (one query, on the tallies)."""
        totals = tallies.by_finding()
        rows = [{"code": code, "n": totals.get(code, 0), "url": _list_url(finding=code)} for code in FindingCode.values]
        return sorted((row for row in rows if row["n"]), key=lambda row: -row["n"])

    @staticmethod
    def _mirrors() -> list[dict]:
        """Every mirror with its last run, next run and failed runs in a row (two queries: mirrors, their recent runs)."""
        recent = SyncRun.objects.defer(*HEAVY_RUN_FIELDS).order_by("-created", "-id")[:FAILURES_LOOKED_AT]
        rows = []
        for mirror in Mirror.objects.prefetch_related(Prefetch("sync_runs", queryset=recent, to_attr="recent_runs")):
            last = mirror.recent_runs[0] if mirror.recent_runs else None
            rows.append(
                {
                    "mirror": mirror,
                    "last": last,
                    "failures": failures_in_a_row(mirror.recent_runs),
                    "url": reverse("mirror:mirror_detail", args=[mirror.slug]),
                    "run_url": reverse("mirror:run_detail", args=[last.pk]) if last else None,
                    **next_run_context(mirror, last),
                }
            )
        return rows


# --- Alerts: rules, channels, deliveries (admins change them; everyone with a role reads) ------------

RECENT_ALERTS = 20
RECENT_DELIVERIES = 20


class AlertListView(RoleRequiredMixin, TemplateView):
    template_name = "portal/alert_list.html"
    # The rules table's sortable columns (?ordering=, as the API's lists).
    RULE_SORTING = {"name": "name", "kind": "kind", "firing": "firing", "created": "created"}

    def get_context_data(self, **kwargs):
        rules = ordered(
            AlertRule.objects.select_related("mirror", "group")
            .prefetch_related("channels")
            .annotate(firing=Count("events", filter=Q(events__state=AlertState.FIRING))),
            self.request,
            self.RULE_SORTING,
            "name",
        )
        channels = AlertChannel.objects.annotate(rule_count=Count("rules")).order_by("name")
        firing = AlertEvent.objects.filter(state=AlertState.FIRING).select_related("rule")
        resolved = (
            AlertEvent.objects.filter(state=AlertState.RESOLVED)
            .select_related("rule")
            .order_by("-resolved_at", "-id")[:RECENT_ALERTS]
        )
        deliveries = AlertDelivery.objects.select_related("event__rule")[:RECENT_DELIVERIES]
        return super().get_context_data(
            rules=rules, channels=channels, firing=firing, resolved=resolved, deliveries=deliveries, **kwargs
        )


class AlertRuleDetailView(RoleRequiredMixin, TemplateView):
    """A rule: what it watches and when it alerts, where it sends, its recent alerts and messages; admins edit or
    delete it."""

    template_name = "portal/alertrule_detail.html"

    def get(self, request, pk):
        rule = get_object_or_404(AlertRule.objects.select_related("mirror", "group"), pk=pk)
        events = rule.events.all()
        return self.render_to_response(
            self.get_context_data(
                rule=rule,
                used=set(AlertRule.FIELDS_BY_KIND.get(rule.kind, ())),
                channels=rule.channels.order_by("name"),
                firing=events.filter(state=AlertState.FIRING).count(),
                events=events[:RECENT_ALERTS],
                deliveries=AlertDelivery.objects.filter(event__rule=rule).select_related("requested_by")[
                    :RECENT_DELIVERIES
                ],
            )
        )


class AlertRuleFormView(ObjectFormView):
    """Create (no pk) or edit an alert rule."""

    template_name = "portal/alertrule_form.html"
    form_class = AlertRuleForm
    noun = gettext_lazy("Alert rule")
    context_name = "rule"

    def get_object(self):
        return get_object_or_404(AlertRule, pk=self.kwargs["pk"]) if "pk" in self.kwargs else None

    def initial_for_new(self):
        return {"channels": list(AlertChannel.objects.filter(enabled=True))}

    def save(self, form, changes):
        return alerts.save_rule(
            form.save(commit=False), form.cleaned_data["channels"], self.request.user, self.request, changes
        )

    def success_url(self, rule):
        return reverse("alertrule_detail", args=[rule.pk])


class AlertRuleDeleteView(ObjectDeleteView):
    noun = gettext_lazy("Alert rule")
    deleted_message = gettext_lazy("{noun} {name} deleted; its deliveries stay in the log.")

    def get_object(self):
        return get_object_or_404(AlertRule, pk=self.kwargs["pk"])

    def delete(self, rule):
        alerts.delete_rule(rule, self.request.user, self.request)

    def success_url(self, rule):
        return reverse("alert_list")


def channel_url(channel: AlertChannel) -> str:
    return reverse("alertchannel_detail", args=[channel.pk])


class AlertChannelFormView(ObjectFormView):
    """Create (no pk) or edit a channel. A new webhook's secret is shown once, on the page that follows."""

    template_name = "portal/alertchannel_form.html"
    form_class = AlertChannelForm
    noun = gettext_lazy("Alert channel")
    context_name = "channel"

    def get_object(self):
        return get_object_or_404(AlertChannel, pk=self.kwargs["pk"]) if "pk" in self.kwargs else None

    def save(self, form, changes):
        channel = form.save(commit=False)
        created = channel.pk is None
        secret = alerts.save_channel(channel, self.request.user, self.request, changes)
        # The secret is rendered in this one response and never again.
        return render_secret(self.request, channel, secret, created=created) if secret else channel

    def success_url(self, channel):
        return channel_url(channel)


def render_secret(request, channel: AlertChannel, secret: str, created: bool):
    return render(
        request,
        "portal/alertchannel_secret.html",
        {
            "channel": channel,
            "secret": secret,
            "created": created,
            "signature_header": alerts.SIGNATURE_HEADER,
            "timestamp_header": alerts.TIMESTAMP_HEADER,
        },
    )


class AlertChannelDetailView(RoleRequiredMixin, TemplateView):
    """A channel: where it sends, the rules using it, its deliveries; admins test it, rotate its secret, delete it."""

    template_name = "portal/alertchannel_detail.html"
    paginate_by = 50

    def get(self, request, pk):
        channel = get_object_or_404(AlertChannel, pk=pk)
        page = Paginator(channel.deliveries.select_related("event__rule", "requested_by"), self.paginate_by).get_page(
            request.GET.get("page")
        )
        return self.render_to_response(
            self.get_context_data(
                channel=channel,
                rules=channel.rules.all(),
                page_obj=page,
                deliveries=page.object_list,
                is_webhook=channel.kind == AlertChannelKind.WEBHOOK,
            )
        )


class AlertChannelTestView(RoleRequiredMixin, View):
    """ "Send a test message": one attempt, now, and its outcome on the channel's page."""

    required_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request, pk):
        channel = get_object_or_404(AlertChannel, pk=pk)
        delivery = alerts.send_test(channel, request.user, request)
        if delivery.status == DeliveryStatus.DELIVERED:
            if delivery.response_status:
                message = _("Test message delivered to %(name)s (HTTP %(status)s).")
            else:
                message = _("Test message delivered to %(name)s.")
            messages.success(request, message % {"name": channel.name, "status": delivery.response_status})
        else:
            messages.error(
                request,
                _("Test message to %(name)s failed: %(error)s") % {"name": channel.name, "error": delivery.error},
            )
        return redirect(channel_url(channel))


class AlertChannelRotateView(RoleRequiredMixin, View):
    required_role = Role.ADMIN
    write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request, pk):
        channel = get_object_or_404(AlertChannel, pk=pk, kind=AlertChannelKind.WEBHOOK)
        return render_secret(request, channel, alerts.rotate_secret(channel, request.user, request), created=False)


class AlertChannelDeleteView(ObjectDeleteView):
    noun = gettext_lazy("Alert channel")
    deleted_message = gettext_lazy("{noun} {name} deleted; its deliveries stay in the log.")

    def get_object(self):
        return get_object_or_404(AlertChannel, pk=self.kwargs["pk"])

    def delete(self, channel):
        alerts.delete_channel(channel, self.request.user, self.request)

    def success_url(self, channel):
        return reverse("alert_list")
