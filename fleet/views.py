"""Each group's own mirror URL (DESIGN §3, "Rings work through URLs") and the admin pages for groups."""

import csv
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS
from django.db.models import Case, Count, DateTimeField, F, IntegerField, Max, Prefetch, Q, Value, When
from django.db.models.functions import Coalesce
from django.http import Http404, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.http import content_disposition_header, quote_etag
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from django.views.generic import TemplateView, View

from core import labels
from core.choices import Role
from core.errors import Refused
from core.generic import ObjectDeleteView, ObjectFormView
from core.roles import RoleRequiredMixin, has_role
from core.sorting import ordering_of
from core.text import csv_cell
from fleet import tallies
from fleet.agent_files import SUMS_NAME, agent_file, agent_files, sha256sums
from fleet.choices import Compliance, ConflictState, FindingCode, RolloutMode
from fleet.diagnostics import same_url
from fleet.filtersets import EndpointFilterSet
from fleet.forms import (
    ApproveForm,
    ConfirmForm,
    EndpointGroupForm,
    EndpointMoveForm,
    EnrollmentSecretForm,
    ImportPolicyForm,
)
from fleet.models import Endpoint, EndpointGroup, EnrollmentSecret, GroupTarget, IdentityConflict
from fleet.services import endpoints as endpoints_service
from fleet.services import enrollment, ingest, rings
from fleet.services.config import (
    IMPORTED,
    ConfigImportError,
    config_file,
    import_policy,
    managed_json,
    managed_settings,
)
from mirror.choices import Arch, Platform
from mirror.models import Mirror, SignaturePackage
from mirror.serving import not_found, send_package_file
from mirror.targets import Target
from mirror.views import BACK


# Public like any HTTP mirror: endpoints fetch anonymously (as from Microsoft's own script's tree).
@csrf_exempt
@require_http_methods(["GET", "HEAD"])
def group_file(request, slug, platform, channel, arch, filename):
    """/mirror/groups/<slug>/<platform>/<channel>[_back]/arch_<arch>/(updates.zip|manifest.json)"""
    base_channel = channel.removesuffix(BACK)
    back = channel.endswith(BACK)
    # One narrow query on the path that matters (endpoints fetching and revalidating): a row
    # exists only for a target the group serves. Building it with select_related of the five
    # models cost more CPU than the whole rest of a 304 (bench/serve.py).
    which = "previous" if back else "current"
    found = (
        GroupTarget.objects.order_by()
        .filter(group__slug=slug, platform=platform, channel=base_channel, arch=arch, **{f"{which}__isnull": False})
        .values_list("approved_at", f"{which}__sha256", f"{which}__engine_version", f"{which}__definition_version")[:1]
    )
    if found:
        approved_at, sha256, engine, definition = found[0]
        package = SignaturePackage(
            platform=platform,
            channel=base_channel,
            arch=arch,
            sha256=sha256,
            engine_version=engine,
            definition_version=definition,
        )
        # The URL's content changes when the approval does, even back to an older package.
        return send_package_file(request, package, filename, approved_at)
    group = EndpointGroup.objects.select_related("mirror").filter(slug=slug).first()
    if group is None:
        return not_found(f"no group named {slug}")
    if not group.serves((platform, base_channel, arch)):
        return not_found(f"group {slug} does not serve {platform}/{base_channel}/arch_{arch}")
    what = "no previous version (n-1)" if back else "no version"
    return not_found(f"{what} is approved for {platform}/{base_channel}/arch_{arch} in group {slug}")


def wants_html(request) -> bool:
    """A browser asking (its Accept names text/html); endpoints' and curl's */* does not."""
    return "text/html" in request.headers.get("Accept", "")


@require_http_methods(["GET", "HEAD"])
def group_folder(request, slug, rest=""):
    """/mirror/groups/<slug>/ and the folders under it: a page saying what this URL is, for a browser only.

    Endpoints and scripts (no text/html in Accept) get the 404 they always got there; only the group files
    (group_file) answer them. Public like the files: the group's name and the versions it serves, nothing else.
    """
    if not wants_html(request) or (rest and not rest.endswith("/")):
        raise Http404(f"no file at {request.path}")
    group = get_object_or_404(EndpointGroup.objects.select_related("mirror"), slug=slug)
    approvals = {row.target: row for row in group.approvals.select_related("current", "previous")}
    targets = []
    for target in group.targets():
        row = approvals.get(tuple(target))
        platform, channel, arch = target
        targets.append(
            {
                "platform": Platform(platform).label,
                "code": platform,
                "channel": channel,
                "arch": arch,
                "current": row.current if row else None,
                "previous": row.previous if row else None,
            }
        )
    response = render(
        request,
        "fleet/ring_url.html",
        {
            "group": group,
            "targets": targets,
            "urls": [(Platform(p).label, group.definition_url(p)) for p in group.platforms],
            "asked": request.path,
        },
    )
    response["Vary"] = "Accept"  # the same URL answers a 404 to endpoints
    response["Cache-Control"] = "no-cache"
    return response


# --- The admin pages for groups ------------------------------------------------------------------
# Thin: every change goes through fleet.services.rings (the API and the rollout rules use the same calls).

# A JSON path of mdatp_managed.json for each policy field: import errors name what is in the file.
JSON_PATHS = {field: f"{section}.{key}" for (section, key), (field, _) in IMPORTED.items()}


def rollout_words(group: EndpointGroup) -> str:
    """The rollout rule as a person says it: "after pilot + 24 h, gate 90 %"."""
    if group.rollout == RolloutMode.AFTER:
        source = group.source_group.slug if group.source_group else _("(no source ring)")
        return _("after %(source)s + %(hours)s h, gate %(percent)s %%") % {
            "source": source,
            "hours": group.delay_hours,
            "percent": group.gate_percent,
        }
    if group.rollout == RolloutMode.LATEST:
        return _("latest from mirror %(mirror)s, at once") % {"mirror": group.mirror.slug}
    return _("manual approvals only")


def get_group(slug: str) -> EndpointGroup:
    return get_object_or_404(EndpointGroup.objects.select_related("mirror", "source_group"), slug=slug)


def group_url(group: EndpointGroup) -> str:
    return reverse("fleet:group_detail", args=[group.slug])


def group_target(group: EndpointGroup, platform: str, arch: str) -> Target:
    """The target a group page's URL names (a group has one channel); 404 when the group does not serve it."""
    target = Target(platform, group.channel, arch)
    if not group.serves(target):
        raise Http404(f"group {group.slug} does not serve {target}")
    return target


class GroupListView(RoleRequiredMixin, TemplateView):
    template_name = "fleet/endpointgroup_list.html"

    def get_context_data(self, **kwargs):
        # Two queries whatever the number of groups: the groups, then all their approvals.
        groups = (
            EndpointGroup.objects.select_related("mirror", "source_group")
            .prefetch_related(Prefetch("approvals", queryset=GroupTarget.objects.select_related("current")))
            .order_by("ring_order", "name")
        )
        rows = []
        for group in groups:
            approvals = {row.target: row for row in group.approvals.all()}
            rows.append(
                {
                    "group": group,
                    "rollout": rollout_words(group),
                    "platforms": [Platform(p).label for p in group.platforms],
                    "targets": [
                        {"name": f"{p}/arch_{a}", "row": approvals.get((p, c, a))} for p, c, a in group.targets()
                    ],
                }
            )
        return super().get_context_data(rows=rows, has_mirror=bool(rows) or Mirror.objects.exists(), **kwargs)


class GroupDetailView(RoleRequiredMixin, TemplateView):
    template_name = "fleet/endpointgroup_detail.html"

    def get(self, request, slug):
        return self.render_to_response(self.get_context_data(group=get_group(slug)))

    def get_context_data(self, group, import_form=None, **kwargs):
        user = self.request.user
        can_approve = has_role(user, Role.OPERATOR)
        targets = []
        for status in rings.group_status(group):
            target = (status["platform"], status["channel"], status["arch"])
            item = {**status, "name": Target(*target), "platform_label": Platform(status["platform"]).label}
            if can_approve:
                item["approve_form"] = ApproveForm(
                    group=group, target=target, packages=rings.packages_for(group, target), current=status["current"]
                )
                item["next_ring"] = rings.next_ring(group, target) if status["current"] else None
            targets.append(item)
        if import_form is None and has_role(user, Role.ADMIN):
            import_form = ImportPolicyForm()
        return super().get_context_data(
            group=group,
            rollout=rollout_words(group),
            targets=targets,
            urls=[(Platform(p).label, group.definition_url(p)) for p in group.platforms],
            managed_json=self.preview(group),
            downloads=[(p, config_file(group, p).filename) for p in group.platforms],
            events=group.approval_events.all()[:20],
            import_form=import_form,
            # "Install the agent": the public URL endpoints reach, as in the group's mirror URLs.
            portal_url=settings.PORTAL_BASE_URL,
            **kwargs,
        )

    @staticmethod
    def preview(group) -> str:
        if Platform.LINUX in group.platforms:
            return managed_json(group).decode()
        # A macOS-only group: the profile carries the same keys, shown as JSON with the macOS URL.
        return json.dumps(managed_settings(group, Platform.MAC), indent=2)


class GroupFormView(ObjectFormView):
    """Create (no slug) or edit a group."""

    template_name = "fleet/endpointgroup_form.html"
    form_class = EndpointGroupForm
    noun = _("Group")
    context_name = "group"
    saved_fields = ("name", "slug")

    def get_object(self):
        return get_group(self.kwargs["slug"]) if "slug" in self.kwargs else None

    def initial_for_new(self):
        initial = {}
        mirrors = list(Mirror.objects.all()[:2])
        if len(mirrors) == 1:  # the usual single mirror: preselect it and what it syncs
            initial = {
                "mirror": mirrors[0],
                "platforms": mirrors[0].platforms,
                "channel": next(iter(mirrors[0].channels), None),
            }
        highest = EndpointGroup.objects.aggregate(highest=Max("ring_order"))["highest"]
        initial["ring_order"] = (highest or 0) + 10
        return initial

    def page_context(self, group):
        # A ring needs a mirror to serve from: the form says so, with the way to add one, when there is none.
        return {"has_mirror": Mirror.objects.exists()}

    def save(self, form, changes):
        return rings.save_group(form.save(commit=False), self.request.user, self.request, changes)

    def success_url(self, group):
        return group_url(group)


class GroupDeleteView(ObjectDeleteView):
    """GET: what deleting removes, or what must change first; POST: delete (admins, as mirrors)."""

    template_name = "fleet/endpointgroup_confirm_delete.html"
    noun = _("Group")
    deleted_message = _("{noun} {name} deleted. Its URLs answer 404 from now on; the audit log keeps its history.")

    def get_object(self):
        return get_group(self.kwargs["slug"])

    def confirm_context(self, group):
        return {
            "group": group,
            "blockers": rings.deletion_blockers(group),
            "retired": group.endpoints.count(),
            "served": group.approvals.filter(current__isnull=False).count(),
        }

    def delete(self, group):
        rings.delete_group(group, self.request.user, self.request)

    def success_url(self, group):
        return reverse("fleet:group_list")

    def protected_url(self, group):
        return group_url(group)


class TargetActionView(RoleRequiredMixin, TemplateView):
    """GET: a confirmation page (per target: from → to, the endpoints it changes, the rule it overrides);
    POST: do it, unless the page was stale.

    The service plans what the page shows and refuses alike on both (fleet.services.rings): the plan is
    computed again on POST, and the change checks that what was confirmed is still what would happen.
    """

    template_name = "fleet/endpointgroup_confirm.html"
    http_method_names = ["get", "head", "post"]
    required_role = Role.OPERATOR  # the confirmation page is itself a control
    verb = ""  # approve, promote, rollback: what the template shows
    cannot = ""  # the message when the service refuses to plan it: "Cannot promote: %(error)s"

    def plan(self, group, target) -> rings.Plan:
        raise NotImplementedError

    def apply(self, group, target, plan: rings.Plan, confirmed: dict) -> str:
        """Do it; ``confirmed`` holds what the page showed (expected_current, package)."""
        raise NotImplementedError

    def refused(self, target, error) -> str:
        return _("Nothing changed: %(error)s") % {"error": error}

    def get(self, request, slug, platform, arch):
        group = get_group(slug)
        target = group_target(group, platform, arch)
        try:
            plan = self.plan(group, target)
        except rings.ApprovalError as exc:
            messages.error(request, self.cannot % {"error": exc})
            return redirect(group_url(group))
        form = ConfirmForm(
            initial={"expected_current": plan.before.pk if plan.before else None, "package": plan.after.pk}
        )
        return self.render_to_response(
            self.get_context_data(group=group, plan=plan, form=form, verb=self.verb, rollout=rollout_words(plan.group))
        )

    def post(self, request, slug, platform, arch):
        group = get_group(slug)
        target = group_target(group, platform, arch)
        form = ConfirmForm(request.POST)
        if not form.is_valid():
            messages.error(request, _("Nothing changed: this confirmation is incomplete; start again from this page."))
            return redirect(group_url(group))
        try:
            done = self.apply(group, target, self.plan(group, target), form.cleaned_data)
        except rings.ApprovalError as exc:
            messages.error(request, self.refused(target, exc))
        else:
            messages.success(request, done)
        return redirect(group_url(group))


class GroupApproveView(TargetActionView):
    """Approve one package (``?package=<id>``: the version list of the group page, or a package's page)."""

    verb = "approve"
    cannot = _("Cannot approve: %(error)s")

    def refused(self, target, error) -> str:
        return _("Nothing approved for %(target)s: %(error)s") % {"target": target, "error": error}

    def chosen_package(self, target) -> SignaturePackage:
        data = self.request.POST if self.request.method == "POST" else self.request.GET
        try:
            package = SignaturePackage.objects.filter(pk=int(data.get("package", ""))).first()
        except ValueError:
            package = None
        if package is None:
            raise rings.ApprovalError(_("choose one of the versions offered"), "package")
        if tuple(package.target) != tuple(target):
            raise rings.ApprovalError(
                _("package %(version)s is for %(package_target)s, not %(target)s")
                % {"version": package.definition_version, "package_target": package.target, "target": target},
                "package",
            )
        return package

    def plan(self, group, target) -> rings.Plan:
        return rings.plan_approval(group, self.chosen_package(target))

    def apply(self, group, target, plan, confirmed) -> str:
        row = rings.approve_package(
            group, plan.after, self.request.user, self.request, expected_current=confirmed["expected_current"]
        )
        words = {"group": group.name, "version": plan.after.definition_version, "target": target}
        if row.previous:
            words["previous"] = row.previous.definition_version
            return _("%(group)s now serves %(version)s for %(target)s; %(previous)s stays available as n-1.") % words
        return _("%(group)s now serves %(version)s for %(target)s.") % words


class GroupPromoteView(TargetActionView):
    verb = "promote"
    cannot = _("Cannot promote: %(error)s")

    def plan(self, group, target) -> rings.Plan:
        return rings.plan_promotion(group, target)

    def apply(self, group, target, plan, confirmed) -> str:
        row = rings.promote(
            group,
            target,
            self.request.user,
            self.request,
            expected_current=confirmed["expected_current"],
            expected_package=confirmed["package"],
        )
        return _("%(group)s now serves %(version)s for %(target)s (promoted from %(source)s).") % {
            "group": row.group.name,
            "version": row.current.definition_version,
            "target": target,
            "source": group.name,
        }


class GroupRollbackView(TargetActionView):
    verb = "rollback"
    cannot = _("Cannot roll back: %(error)s")

    def plan(self, group, target) -> rings.Plan:
        return rings.plan_rollback(group, target)

    def apply(self, group, target, plan, confirmed) -> str:
        row = rings.rollback(
            group,
            target,
            self.request.user,
            self.request,
            expected_current=confirmed["expected_current"],
            expected_package=confirmed["package"],
        )
        return _(
            "%(group)s rolled back to %(version)s for %(target)s; %(previous)s is not approved again automatically."
        ) % {
            "group": group.name,
            "version": row.current.definition_version,
            "target": target,
            "previous": plan.before.definition_version,
        }


class GroupImportView(GroupDetailView):
    """Take the policy of an existing mdatp_managed.json (admins); errors come back on the group page."""

    http_method_names = ["post"]
    write_role = Role.ADMIN

    def post(self, request, slug):
        group = get_group(slug)
        form = ImportPolicyForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                warnings = import_policy(group, form.cleaned_data["content"], request.user, request)
            except ConfigImportError as exc:
                for path, message in exc.errors.items():
                    path = JSON_PATHS.get(path, path)
                    form.add_error(None, message if path in ("file", NON_FIELD_ERRORS) else f"{path}: {message}")
            else:
                messages.success(
                    request, _("Policy of %(group)s imported from mdatp_managed.json.") % {"group": group.name}
                )
                for warning in warnings:
                    messages.warning(request, warning)
                return redirect(group_url(group))
            group = get_group(slug)  # import_policy set the refused values on the instance
        return self.render_to_response(self.get_context_data(group=group, import_form=form), status=400)


class GroupManagedConfigView(RoleRequiredMixin, View):
    """The group's managed configuration as a file to install: mdatp_managed.json (Linux) or a profile (macOS)."""

    http_method_names = ["get", "head"]

    def get(self, request, slug, platform):
        group = get_group(slug)
        try:
            file = config_file(group, platform)
        except ValueError as exc:
            return render(request, "fleet/not_found.html", {"group": group, "message": str(exc)}, status=404)
        response = HttpResponse(file.body, content_type=file.content_type)
        response["Content-Disposition"] = content_disposition_header(True, file.filename)
        response["ETag"] = quote_etag(file.etag)
        return response


# --- Endpoints ---------------------------------------------------------------------------------------
# Under /groups/endpoints/. Every change goes through fleet.services.enrollment (the API's calls); a refusal becomes a message.

ENDPOINT_PAGE_SIZE = 50
# How a state or a finding reads at a glance (the .state classes of portal.css).
COMPLIANCE_TONE = {
    Compliance.UP_TO_DATE: "ok",
    Compliance.BEHIND: "warn",
    Compliance.STALE: "warn",
    Compliance.SILENT: "warn",
    Compliance.NEW: "muted",
    Compliance.FAILING: "bad",
    Compliance.MISCONFIGURED: "bad",
    Compliance.ROLLED_BACK: "bad",
    Compliance.UNSERVED: "bad",
}
SEVERITY_TONE = {"critical": "bad", "warning": "warn", "info": "muted"}
SEVERITY_WORDS = {"critical": _("critical"), "warning": _("warning"), "info": _("info")}
FILTER_ORDER = ["q", "group", "compliance", "version", "finding", "platform", "arch", "decommissioned"]
CURSOR_KEYS = ("after", "before", "format")
CSV_COLUMNS = [
    "hostname",
    "machine_id",
    "group",
    "platform",
    "arch",
    "compliance",
    "definitions_version",
    "last_seen",
    "findings",
    "app_version",
]
# Before any report: sorts first ascending, last descending, and always has a cursor value.
NEVER = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SortColumn:
    """A sortable column of the endpoint list: the value it sorts on, and how that value travels in a cursor."""

    expression: object
    parse: Callable[[str], object] = str
    text: Callable[[object], str] = str


# Keyset pages need a total order: each column sorts on its value, then on the primary key (the cursor holds both).
ENDPOINT_SORTS = {
    "hostname": SortColumn(F("hostname")),
    "group": SortColumn(F("group__name")),
    # Worst first, in Compliance's order, rather than alphabetically.
    "state": SortColumn(
        Case(
            *[When(compliance=value, then=Value(rank)) for rank, value in enumerate(Compliance.values)],
            default=Value(len(Compliance.values)),
            output_field=IntegerField(),
        ),
        int,
    ),
    # Text order, which is version order while the parts keep their width (1.407.417.0 … 1.409.12.0 is not:
    # a definitions version's third part grows from 1 to 3 digits within one release).
    "version": SortColumn(F("definitions_version")),
    "last_seen": SortColumn(
        Coalesce("last_seen", Value(NEVER), output_field=DateTimeField()), datetime.fromisoformat, datetime.isoformat
    ),
}
DEFAULT_ORDERING = "hostname"


def short_label(compliance) -> str:
    """The state in one or two words ("Misconfigured"), for counters and tables (fleet.labels)."""
    return labels.label("compliance", compliance)


def finding_codes(value: str) -> list[str]:
    return [code for code in (value or "").split(",") if code]


def endpoint_filter(request) -> EndpointFilterSet:
    """The API's filters on the list's query string; active endpoints unless the page asks otherwise."""
    data = request.GET.copy()
    data.setdefault("decommissioned", "false")
    filterset = EndpointFilterSet(data, queryset=Endpoint.objects.all(), request=request)
    fields = filterset.form.fields
    groups = EndpointGroup.objects.order_by("ring_order", "name").values_list("slug", "name")
    fields["group"].widget = forms.Select(choices=[("", _("All groups")), *groups])
    fields["group"].label = _("Group")
    # django-filter's choice fields put their empty_label first themselves.
    for name, empty in (("compliance", _("Any state")), ("platform", _("Any platform")), ("arch", _("Any arch"))):
        fields[name].empty_label = empty
    fields["compliance"].label = _("Compliance")
    fields["compliance"].choices = [(value, short_label(value)) for value in Compliance.values]
    fields["platform"].label = _("Platform")
    fields["platform"].choices = Platform.choices
    fields["arch"].label = _("Arch")
    fields["arch"].choices = Arch.choices
    fields["version"].label = _("Definitions version")
    fields["version"].widget.attrs["placeholder"] = "1.407.417.0"
    fields["finding"].label = _("Finding")
    fields["finding"].widget = forms.Select(
        choices=[("", _("Any finding")), *((code, labels.label("finding", code)) for code in FindingCode.values)]
    )
    fields["q"].label = _("Hostname or machine id")
    fields["decommissioned"].label = _("Show")
    fields["decommissioned"].widget = forms.Select(
        choices=[
            ("false", _("Active endpoints")),
            ("true", _("Decommissioned only")),
            ("unknown", _("Active and decommissioned")),
        ]
    )
    filterset.form.order_fields(FILTER_ORDER)
    return filterset


def filtered_endpoints(filterset: EndpointFilterSet):
    # Invalid filters (an unknown state, say) match nothing rather than everything.
    return filterset.qs.order_by() if filterset.is_valid() else Endpoint.objects.none()


def endpoint_ordering(request) -> str:
    """The list's ``ordering`` parameter ("version", "-last_seen"…) if it names a sortable column, else by hostname."""
    return ordering_of(request, ENDPOINT_SORTS, DEFAULT_ORDERING)


def sort_column(ordering: str) -> tuple[SortColumn, bool]:
    return ENDPOINT_SORTS[ordering.lstrip("-")], ordering.startswith("-")


def sorted_endpoints(queryset, ordering: str = DEFAULT_ORDERING):
    """The list's rows in the list's order (the CSV export follows the page), each with its ``sort_key``."""
    column, descending = sort_column(ordering)
    keys = ("-sort_key", "-pk") if descending else ("sort_key", "pk")
    return queryset.annotate(sort_key=column.expression).order_by(*keys)


def parse_cursor(value: str | None, ordering: str = DEFAULT_ORDERING):
    """``<sort value>|<id>`` (a hostname may itself contain '|'); None when absent or malformed."""
    text, sep, pk = (value or "").rpartition("|")
    if not sep or not pk.isdigit():
        return None
    column, _descending = sort_column(ordering)
    try:
        return column.parse(text), int(pk)
    except ValueError:
        return None


def cursor_of(endpoint, ordering: str = DEFAULT_ORDERING) -> str:
    column, _descending = sort_column(ordering)
    return f"{column.text(endpoint.sort_key)}|{endpoint.pk}"


def keyset_page(queryset, after=None, before=None, size=ENDPOINT_PAGE_SIZE, ordering=DEFAULT_ORDERING):
    """One page in (sort value, id) order from a cursor: no COUNT and no OFFSET, the same cost on any page.

    Returns (rows, has_previous, has_next). Rows carry ``sort_key`` for cursor_of().
    """
    column, descending = sort_column(ordering)
    queryset = queryset.annotate(sort_key=column.expression)

    def beyond(cursor, upwards: bool):
        rows = queryset
        if cursor:
            value, pk = cursor
            op = "gt" if upwards else "lt"
            rows = rows.filter(Q(**{f"sort_key__{op}": value}) | Q(sort_key=value, **{f"pk__{op}": pk}))
        keys = ("sort_key", "pk") if upwards else ("-sort_key", "-pk")
        return list(rows.order_by(*keys)[: size + 1])

    if before:
        # Walk back from the cursor, then show the rows in the page's order.
        rows = beyond(before, upwards=descending)
        return rows[:size][::-1], len(rows) > size, True
    rows = beyond(after, upwards=not descending)
    return rows[:size], after is not None, len(rows) > size


class EndpointListView(RoleRequiredMixin, TemplateView):
    """The fleet, filtered: a count per compliance state and one page of endpoints (constant queries at any size)."""

    template_name = "fleet/endpoint_list.html"
    page_size = ENDPOINT_PAGE_SIZE

    def get(self, request):
        if request.GET.get("format") == "csv":
            return export_endpoints(request)
        return super().get(request)

    def get_context_data(self, **kwargs):
        request = self.request
        filterset = endpoint_filter(request)
        queryset = filtered_endpoints(filterset)
        ordering = endpoint_ordering(request)

        # The summary: one query for the current filter, on the tallies when their keys can say it.
        counts = tallies.list_summary(filterset.form.cleaned_data) if filterset.is_valid() else {}
        if counts is None:  # a hostname search, say: counted exactly
            counts = dict(queryset.values("compliance").annotate(n=Count("pk")).values_list("compliance", "n"))
        total = sum(counts.values())
        params = request.GET.copy()
        for key in CURSOR_KEYS:
            params.pop(key, None)
        summary = []
        for value in Compliance.values:
            if counts.get(value):
                link = params.copy()
                link["compliance"] = value
                summary.append(
                    {
                        "value": value,
                        "label": short_label(value),
                        "count": counts[value],
                        "tone": COMPLIANCE_TONE[value],
                        "url": f"?{link.urlencode()}",
                        "current": params.get("compliance") == value,
                    }
                )

        after = parse_cursor(request.GET.get("after"), ordering)
        before = parse_cursor(request.GET.get("before"), ordering)
        page = queryset.select_related("group").only(
            "hostname",
            "machine_id",
            "group__name",
            "group__slug",
            "platform",
            "arch",
            "compliance",
            "definitions_version",
            "last_seen",
            "finding_codes",
            "app_version",
            "decommissioned_at",
        )
        rows, has_previous, has_next = (
            keyset_page(page, after, before, self.page_size, ordering) if total else ([], False, False)
        )
        for endpoint in rows:
            endpoint.tone = COMPLIANCE_TONE.get(endpoint.compliance, "muted")
            endpoint.state_label = short_label(endpoint.compliance)
            endpoint.codes = finding_codes(endpoint.finding_codes)

        def page_url(key, endpoint):
            link = params.copy()
            link[key] = cursor_of(endpoint, ordering)
            return f"?{link.urlencode()}"

        filtered = any(params.get(name) for name in FILTER_ORDER if name != "decommissioned") or params.get(
            "decommissioned"
        ) not in (None, "", "false")
        bulk_groups = None
        if rows and has_role(request.user, Role.OPERATOR):
            # The group filter's menu already holds them, in ring order: no second query.
            bulk_groups = [choice for choice in filterset.form.fields["group"].widget.choices if choice[0]]
        return super().get_context_data(
            filter=filterset,
            summary=summary,
            total=total,
            rows=rows,
            next_url=page_url("after", rows[-1]) if has_next else None,
            previous_url=page_url("before", rows[0]) if has_previous and rows else None,
            first_url=f"?{params.urlencode()}" if (after or before) else None,
            query=params.urlencode(),
            filtered=filtered,
            ordering=ordering,
            default_ordering=DEFAULT_ORDERING,
            bulk_groups=bulk_groups,
            # An empty fleet gets the next step instead of an empty table (one more query, only then).
            fleet_empty=not total and not Endpoint.objects.exists(),
            pending_conflicts=IdentityConflict.objects.filter(state=ConflictState.PENDING).count(),
            **kwargs,
        )


class Echo:
    """A file-like object whose write() hands the CSV line back, for streaming."""

    def write(self, value):
        return value


def export_endpoints(request):
    """The filtered list as CSV in the list's order, streamed in chunks: memory stays flat at any fleet size."""
    filterset = endpoint_filter(request)
    rows = (
        sorted_endpoints(filtered_endpoints(filterset), endpoint_ordering(request))
        .values_list(
            "hostname",
            "machine_id",
            "group__slug",
            "platform",
            "arch",
            "compliance",
            "definitions_version",
            "last_seen",
            "finding_codes",
            "app_version",
        )
        .iterator(chunk_size=2000)
    )
    writer = csv.writer(Echo())

    def lines():
        yield writer.writerow(CSV_COLUMNS)
        for row in rows:
            row = list(row)
            row[8] = " ".join(finding_codes(row[8]))
            yield writer.writerow([csv_cell(value) for value in row])

    group = filterset.form.cleaned_data.get("group") if filterset.is_valid() else ""
    name = "-".join(part for part in ("endpoints", group, timezone.now().strftime("%Y%m%d-%H%M")) if part)
    filename = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100] + ".csv"
    response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = content_disposition_header(True, filename)
    return response


class EndpointExportView(RoleRequiredMixin, View):
    http_method_names = ["get", "head"]

    def get(self, request):
        return export_endpoints(request)


# --- Several endpoints at once (the list's checkboxes) ------------------------------------------------
# How many names the confirmation page lists; the count is always whole.
BULK_NAMES_SHOWN = 50


def bulk_rows(plan) -> list[dict]:
    """The confirmation page's rows: what cannot be done first (it blocks the action), then what changes."""
    return [
        *({"endpoint": e, "outcome": "refused", "tone": "bad", "why": why} for e, why in plan.refused),
        *({"endpoint": e, "outcome": "change", "tone": "ok"} for e in plan.change),
        *({"endpoint": e, "outcome": "unchanged", "tone": "muted"} for e in plan.unchanged),
    ]


class EndpointBulkView(RoleRequiredMixin, TemplateView):
    """GET (from the list's checkboxes): a confirmation page of what moving or decommissioning the selection does;
    POST: do it through fleet.services.endpoints (all or nothing). Operators, as the single actions."""

    template_name = "fleet/endpoint_bulk.html"
    http_method_names = ["get", "head", "post"]
    required_role = Role.OPERATOR  # the confirmation page is itself a control

    def selection(self, data):
        """(action, ids, group) from the list's form or the confirmation page; Refused when it is not usable."""
        action = data.get("action", "")
        if action not in ("move", "decommission"):
            raise Refused(_("Choose what to do with the selected endpoints: move or decommission."), "action")
        ids = endpoints_service.parse_selection(data.getlist("endpoint"))
        group = None
        if action == "move":
            group = EndpointGroup.objects.filter(slug=data.get("group", "")).first()
            if group is None:
                raise Refused(_("Choose the group to move the selected endpoints to."), "group")
        return action, ids, group

    def back(self, data):
        """Back to the list the selection was made on (its filters and page), never to another site."""
        query = data.get("back", "")
        return reverse("fleet:endpoint_list") + (f"?{query}" if query and not query.startswith(("/", "?")) else "")

    def get(self, request):
        try:
            action, ids, group = self.selection(request.GET)
            plan = endpoints_service.plan_bulk(action, ids, group)
        except Refused as exc:
            messages.error(request, _("Nothing selected to change: %(why)s") % {"why": exc.message})
            return redirect(self.back(request.GET))
        return self.render_to_response(
            self.get_context_data(
                plan=plan,
                shown=bulk_rows(plan)[:BULK_NAMES_SHOWN],
                more=max(len(plan.endpoints) - BULK_NAMES_SHOWN, 0),
                ids=ids,
                back_query=request.GET.get("back", ""),
                back_url=self.back(request.GET),
            )
        )

    def post(self, request):
        try:
            action, ids, group = self.selection(request.POST)
            plan = endpoints_service.apply_bulk(action, ids, request.user, request, group=group)
        except Refused as exc:
            messages.error(request, exc.message)
            return redirect(self.back(request.POST))
        changed, unchanged = len(plan.change), len(plan.unchanged)
        if action == "move":
            messages.success(
                request,
                ngettext(
                    "%(count)d endpoint moved to %(group)s: it gets the group's URL and policy with its next managed "
                    "configuration.",
                    "%(count)d endpoints moved to %(group)s: they get the group's URL and policy with their next managed "
                    "configuration.",
                    changed,
                )
                % {"count": changed, "group": group.name},
            )
        else:
            messages.success(
                request,
                ngettext(
                    "%(count)d endpoint decommissioned: its token no longer works; its history stays.",
                    "%(count)d endpoints decommissioned: their tokens no longer work; their history stays.",
                    changed,
                )
                % {"count": changed},
            )
        if unchanged:
            messages.info(
                request,
                ngettext(
                    "%(count)d selected endpoint needed no change.",
                    "%(count)d selected endpoints needed no change.",
                    unchanged,
                )
                % {"count": unchanged},
            )
        return redirect(self.back(request.POST))


def get_endpoint(pk: int) -> Endpoint:
    return get_object_or_404(Endpoint.objects.select_related("group__mirror"), pk=pk)


def endpoint_url(endpoint: Endpoint) -> str:
    return reverse("fleet:endpoint_detail", args=[endpoint.pk])


def _switch(value) -> str | None:
    """A reported switch as one spelling ("enabled"), None when not reported (or "DEPRECATED", which says nothing)."""
    value = (value or "").strip().lower()
    return None if value in ("", "deprecated") else value


def _flag(value) -> str | None:
    return None if value is None else str(bool(value)).lower()


DRIFT_STATES = {"not reported": _("not reported"), "matches": _("matches"), "differs": _("differs")}


def config_drift(endpoint: Endpoint) -> list[dict]:
    """What the endpoint reported against its group's managed settings, setting by setting."""
    wanted = managed_settings(endpoint.group, endpoint.platform)
    engine, cloud, features = wanted["antivirusEngine"], wanted["cloudService"], wanted["features"]
    rows = [
        (
            _("Mirror URL"),
            "antivirusEngine.offlineDefinitionUpdateUrl",
            endpoint.offline_url_configured or None,
            engine["offlineDefinitionUpdateUrl"],
            same_url,
        ),
        (
            _("Offline update"),
            "antivirusEngine.offlineDefinitionUpdate",
            _switch(endpoint.offline_update),
            engine["offlineDefinitionUpdate"],
            None,
        ),
        (
            _("Verify the signature"),
            "features.offlineDefinitionUpdateVerifySig",
            _switch(endpoint.verify_sig),
            features["offlineDefinitionUpdateVerifySig"],
            None,
        ),
        (
            _("Fall back to Microsoft's cloud"),
            "antivirusEngine.offlineDefinitionUpdateFallbackToCloud",
            _flag(endpoint.fallback_to_cloud),
            _flag(engine["offlineDefinitionUpdateFallbackToCloud"]),
            None,
        ),
        (
            _("Automatic updates"),
            "cloudService.automaticDefinitionUpdateEnabled",
            _flag(endpoint.automatic_updates),
            _flag(cloud["automaticDefinitionUpdateEnabled"]),
            None,
        ),
    ]
    if "enforcementLevel" in engine:
        rows.append(
            (
                _("Enforcement level"),
                "antivirusEngine.enforcementLevel",
                (endpoint.enforcement_level or "").lower() or None,
                engine["enforcementLevel"],
                None,
            )
        )
    drift = []
    for label, key, reported, expected, same in rows:
        if reported is None:
            state, tone = "not reported", "muted"
        elif (same or (lambda a, b: a == b))(reported, expected):
            state, tone = "matches", "ok"
        else:
            state, tone = "differs", "bad"
        drift.append(
            {
                "label": label,
                "key": key,
                "key_parts": key.split("."),  # broken at the dot on a narrow screen, not mid-word
                "reported": reported,
                "wanted": expected,
                "state": state,
                "state_label": DRIFT_STATES[state],
                "tone": tone,
            }
        )
    return drift


CHANGES_SHOWN = 500  # the endpoint page's change history; the API pages through all of it
CHANGE_WORDS = {
    "definitions_version": _("Definitions"),
    "engine_version": _("Engine"),
    "app_version": _("Agent"),
    "compliance": _("Compliance"),
    "finding_codes": _("Findings"),
    "fail_reason": _("Update failure"),
    "update_source_uri": _("Update source"),
    "offline_update": _("Offline updates"),
    "verify_sig": _("Signature check"),
    "fallback_to_cloud": _("Fallback to the cloud"),
    "automatic_updates": _("Automatic updates"),
    "enforcement_level": _("Enforcement level"),
}


def change_row(name: str, before, after) -> dict:
    """One line of a change record as the endpoint page shows it: what, before, after."""

    def shown(value):
        if name == "finding_codes":
            return ", ".join(str(labels.label("finding", code)) for code in value or []) or None
        if name == "compliance" and value:
            return short_label(value)
        if isinstance(value, bool):
            return str(value).lower()
        return value if value not in (None, "") else None

    return {"name": name, "label": CHANGE_WORDS.get(name, name), "before": shown(before), "after": shown(after)}


class EndpointDetailView(RoleRequiredMixin, TemplateView):
    template_name = "fleet/endpoint_detail.html"

    def get(self, request, pk):
        return self.render_to_response(self.get_context_data(endpoint=get_endpoint(pk)))

    def get_context_data(self, endpoint, **kwargs):
        stored_findings = list(endpoint.findings or [])
        if translation.get_language() != settings.LANGUAGE_CODE:
            stored_findings = ingest.findings_reworded(endpoint, stored_findings)
        # What its ring serves now comes first: judged live, so it is never older than the last approval change.
        findings = [
            {
                **finding,
                "tone": SEVERITY_TONE.get(finding.get("severity"), "muted"),
                "severity_label": SEVERITY_WORDS.get(finding.get("severity"), finding.get("severity")),
            }
            for finding in [f.to_dict() for f in rings.ring_findings(endpoint)] + stored_findings
            if isinstance(finding, dict)
        ]
        history = list(endpoint.reports.all()[: settings.FLEET_RAW_REPORTS_KEPT])
        since = timezone.now() - timedelta(days=settings.FLEET_CHANGE_RETENTION_DAYS)
        changes = list(endpoint.changes.filter(at__gte=since)[: CHANGES_SHOWN + 1])
        for change in changes:
            change.rows = [change_row(name, before, after) for name, before, after in change.changed]
        for report in history:
            report.tone = COMPLIANCE_TONE.get(report.compliance, "muted")
            report.state_label = short_label(report.compliance)
            report.codes = finding_codes(report.finding_codes)
        move_form = None
        if has_role(self.request.user, Role.OPERATOR):
            move_form = EndpointMoveForm(
                endpoint=endpoint, groups=EndpointGroup.objects.select_related("mirror").order_by("ring_order", "name")
            )
        return super().get_context_data(
            endpoint=endpoint,
            state_label=short_label(endpoint.compliance),
            tone=COMPLIANCE_TONE.get(endpoint.compliance, "muted"),
            findings=findings,
            drift=config_drift(endpoint),
            history=history,
            changes=changes[:CHANGES_SHOWN],
            more_changes=len(changes) > CHANGES_SHOWN,
            settings_change_days=settings.FLEET_CHANGE_RETENTION_DAYS,
            settings_raw_kept=settings.FLEET_RAW_REPORTS_KEPT,
            move_form=move_form,
            **kwargs,
        )


class EndpointMoveView(RoleRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request, pk):
        endpoint = get_endpoint(pk)
        form = EndpointMoveForm(request.POST)
        if not form.is_valid():
            messages.error(
                request, _("%(endpoint)s not moved: choose one of the groups offered.") % {"endpoint": endpoint}
            )
            return redirect(endpoint_url(endpoint))
        group, before = form.cleaned_data["group"], endpoint.group
        try:
            enrollment.move_endpoint(endpoint, group, request.user, request)
        except Refused as exc:
            messages.error(request, _("%(endpoint)s not moved: %(why)s.") % {"endpoint": endpoint, "why": exc})
        else:
            if group.pk == before.pk:
                messages.info(
                    request, _("%(endpoint)s is already in %(group)s.") % {"endpoint": endpoint, "group": group.name}
                )
                return redirect(endpoint_url(endpoint))
            messages.success(
                request,
                _(
                    "%(endpoint)s moved from %(before)s to %(group)s: it gets %(group)s's URL and policy with its next "
                    "managed configuration, and is judged against them from its next report."
                )
                % {"endpoint": endpoint, "before": before.name, "group": group.name},
            )
        return redirect(endpoint_url(endpoint))


class EndpointDecommissionView(RoleRequiredMixin, TemplateView):
    """GET: what decommissioning does (the page is itself a control: operators only); POST: do it."""

    template_name = "fleet/endpoint_decommission.html"
    http_method_names = ["get", "head", "post"]
    required_role = Role.OPERATOR

    def get(self, request, pk):
        endpoint = get_endpoint(pk)
        if endpoint.decommissioned_at:
            messages.info(
                request,
                _("%(endpoint)s was already decommissioned on %(when)s.")
                % {"endpoint": endpoint, "when": f"{endpoint.decommissioned_at:%Y-%m-%d %H:%M}"},
            )
            return redirect(endpoint_url(endpoint))
        return self.render_to_response(self.get_context_data(endpoint=endpoint))

    def post(self, request, pk):
        endpoint = get_endpoint(pk)
        if endpoint.decommissioned_at:
            messages.info(request, _("%(endpoint)s was already decommissioned.") % {"endpoint": endpoint})
            return redirect(endpoint_url(endpoint))
        try:
            enrollment.decommission_endpoint(endpoint, request.user, request)
        except Refused as exc:
            messages.error(request, _("%(endpoint)s not decommissioned: %(why)s.") % {"endpoint": endpoint, "why": exc})
        else:
            messages.success(
                request,
                _(
                    "%(endpoint)s decommissioned: its token no longer works; its history stays. It comes back only if "
                    "you accept its enrollment claim under Endpoints › Enrollment claims."
                )
                % {"endpoint": endpoint},
            )
        return redirect(endpoint_url(endpoint))


# --- Identity conflicts: known machine ids enrolling again without their token ---------------------------


class IdentityConflictListView(RoleRequiredMixin, TemplateView):
    """The claims waiting for an operator (accept or reject each), and the last ones decided."""

    template_name = "fleet/identityconflict_list.html"

    def get_context_data(self, **kwargs):
        conflicts = IdentityConflict.objects.select_related("endpoint__group", "group", "decided_by")
        return super().get_context_data(
            pending=list(conflicts.filter(state=ConflictState.PENDING).order_by("created", "id")),
            decided=list(conflicts.exclude(state=ConflictState.PENDING).order_by("-decided_at", "-id")[:50]),
            **kwargs,
        )


class IdentityConflictDecideView(RoleRequiredMixin, View):
    """POST: accept or reject one claim through fleet.services.enrollment; a refusal becomes a message."""

    http_method_names = ["post"]
    accept = True

    def post(self, request, pk):
        conflict = get_object_or_404(IdentityConflict.objects.select_related("endpoint", "group"), pk=pk)
        try:
            if self.accept:
                endpoint = enrollment.accept_conflict(conflict, request.user, request)
            else:
                enrollment.reject_conflict(conflict, request.user, request)
        except Refused as exc:
            messages.error(
                request,
                _("Claim %(pk)s on %(endpoint)s not decided: %(why)s.")
                % {"pk": conflict.pk, "endpoint": conflict.endpoint, "why": exc},
            )
            return redirect("fleet:identityconflict_list")
        if self.accept:
            messages.success(
                request,
                _("Claim %(pk)s accepted: %(endpoint)s now uses the claimant's token, in group %(group)s.")
                % {"pk": conflict.pk, "endpoint": endpoint, "group": endpoint.group.name},
            )
        else:
            messages.success(
                request,
                _("Claim %(pk)s rejected: %(endpoint)s keeps its identity.")
                % {"pk": conflict.pk, "endpoint": conflict.endpoint},
            )
        return redirect("fleet:identityconflict_list")


# --- The agent's files, for sites with no other copy -------------------------------------------------


class AgentDownloadListView(RoleRequiredMixin, TemplateView):
    """Every file of the agent with its size and sha256, and how to check them (any signed-in user)."""

    template_name = "fleet/agent_downloads.html"

    def get_context_data(self, **kwargs):
        files = agent_files()
        return super().get_context_data(files=files, sums=sha256sums(files), sums_name=SUMS_NAME, **kwargs)


class AgentFileView(RoleRequiredMixin, View):
    """One file of the fixed list (fleet.agent_files), as an attachment; any other name is a 404."""

    http_method_names = ["get", "head"]

    def get(self, request, name):
        if name == SUMS_NAME:
            body, content_type = sha256sums(agent_files()).encode(), "text/plain"
        else:
            file = agent_file(name)
            if file is None:
                raise Http404(f"the agent has no file named {name}")
            body, content_type = file.body, file.content_type
        response = HttpResponse(body, content_type=f"{content_type}; charset=utf-8")
        response["Content-Disposition"] = content_disposition_header(True, name)
        response["X-Content-Type-Options"] = "nosniff"
        return response


# --- Enrollment secrets (on the group page) ------------------------------------------------------------


def secrets_url(group: EndpointGroup) -> str:
    return f"{group_url(group)}#enrollment-secrets"


class GroupPageView(GroupDetailView):
    """The group page with its enrollment secrets: the list for everyone, the controls for operators."""

    def get_context_data(self, group, secret_form=None, **kwargs):
        if secret_form is None and has_role(self.request.user, Role.OPERATOR):
            secret_form = EnrollmentSecretForm(initial={"name": _("%(group)s endpoints") % {"group": group.slug}})
        return super().get_context_data(
            group=group,
            secret_form=secret_form,
            enrollment_secrets=list(group.enrollment_secrets.select_related("created_by")),
            **kwargs,
        )


def secret_shown_once(request, group, secret, plaintext, replaced=None):
    """The page that shows a new secret's plaintext, rendered from the POST itself: never in a URL, a message or a cache."""
    response = render(
        request,
        "fleet/enrollmentsecret_created.html",
        {
            "group": group,
            "secret": secret,
            "plaintext": plaintext,
            "replaced": replaced,
            "portal_url": settings.PORTAL_BASE_URL,
        },
    )
    response["Cache-Control"] = "no-store"
    return response


class EnrollmentSecretCreateView(GroupPageView):
    http_method_names = ["post"]

    def post(self, request, slug):
        group = get_group(slug)
        form = EnrollmentSecretForm(request.POST)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(group=group, secret_form=form), status=400)
        try:
            secret, plaintext = enrollment.create_enrollment_secret(
                group,
                form.cleaned_data["name"],
                request.user,
                request,
                form.cleaned_data["expires_at"],
                form.cleaned_data["max_enrollments"],
            )
        except Refused as exc:
            form.add_error(exc.field, exc.message)
            return self.render_to_response(self.get_context_data(group=group, secret_form=form), status=400)
        return secret_shown_once(request, group, secret, plaintext)


def get_secret(group: EndpointGroup, pk: int) -> EnrollmentSecret:
    return get_object_or_404(EnrollmentSecret.objects.select_related("group"), pk=pk, group=group)


class EnrollmentSecretRotateView(RoleRequiredMixin, View):
    """Revoke a secret and show its replacement (same name and expiry) once."""

    http_method_names = ["post"]

    def post(self, request, slug, pk):
        group = get_group(slug)
        secret = get_secret(group, pk)
        try:
            new, plaintext = enrollment.rotate_enrollment_secret(secret, request.user, request)
        except Refused as exc:
            messages.error(request, exc.message)
            return redirect(secrets_url(group))
        return secret_shown_once(request, group, new, plaintext, replaced=secret)


class EnrollmentSecretRevokeView(RoleRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request, slug, pk):
        group = get_group(slug)
        secret = get_secret(group, pk)
        if secret.revoked_at:
            messages.info(
                request,
                _("Enrollment secret %(name)s (%(hint)s…) was already revoked.")
                % {"name": secret.name, "hint": secret.hint},
            )
        else:
            enrollment.revoke_enrollment_secret(secret, request.user, request)
            messages.success(
                request,
                _(
                    "Enrollment secret %(name)s (%(hint)s…) revoked: new enrollments with it are refused; "
                    "endpoints it enrolled keep their own tokens."
                )
                % {"name": secret.name, "hint": secret.hint},
            )
        return redirect(secrets_url(group))
