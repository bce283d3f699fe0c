"""Each group's own mirror URL (DESIGN §3, "Rings work through URLs") and the admin pages for groups."""

import json
from dataclasses import dataclass

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import NON_FIELD_ERRORS
from django.db.models import Max, Prefetch
from django.http import Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import content_disposition_header, quote_etag
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from django.views.generic import TemplateView, View

from fleet import services
from fleet.choices import RolloutMode
from fleet.config import IMPORTED, ConfigImportError, config_file, managed_json, managed_settings
from fleet.forms import ApproveForm, ConfirmForm, EndpointGroupForm, ImportPolicyForm
from fleet.models import Endpoint, EndpointGroup, GroupTarget
from mirror.choices import Platform
from mirror.models import Mirror, SignaturePackage
from mirror.serving import not_found, send_package_file
from mirror.views import BACK
from portal.choices import Role
from portal.roles import RoleRequiredMixin, has_role


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
    found = (GroupTarget.objects.order_by().filter(group__slug=slug, platform=platform, channel=base_channel, arch=arch, **{f"{which}__isnull": False})
             .values_list("approved_at", f"{which}__sha256", f"{which}__engine_version", f"{which}__definition_version")[:1])
    if found:
        approved_at, sha256, engine, definition = found[0]
        package = SignaturePackage(platform=platform, channel=base_channel, arch=arch, sha256=sha256, engine_version=engine,
                                   definition_version=definition)
        # The URL's content changes when the approval does, even back to an older package.
        return send_package_file(request, package, filename, approved_at)
    group = EndpointGroup.objects.select_related("mirror").filter(slug=slug).first()
    if group is None:
        return not_found(f"no group named {slug}")
    if not group.serves((platform, base_channel, arch)):
        return not_found(f"group {slug} does not serve {platform}/{base_channel}/arch_{arch}")
    what = "no previous version (n-1)" if back else "no version"
    return not_found(f"{what} is approved for {platform}/{base_channel}/arch_{arch} in group {slug}")


# --- The admin pages for groups ------------------------------------------------------------------
# Thin: every change goes through fleet.services (the API and the rollout rules use the same calls).

# A JSON path of mdatp_managed.json for each policy field: import errors name what is in the file.
JSON_PATHS = {field: f"{section}.{key}" for (section, key), (field, _) in IMPORTED.items()}


def rollout_words(group: EndpointGroup) -> str:
    """The rollout rule as a person says it: "after pilot + 24 h, gate 90 %"."""
    if group.rollout == RolloutMode.AFTER:
        source = group.source_group.slug if group.source_group else "(no source ring)"
        return f"after {source} + {group.delay_hours} h, gate {group.gate_percent} %"
    if group.rollout == RolloutMode.LATEST:
        return f"latest from mirror {group.mirror.slug}, at once"
    return "manual approvals only"


def get_group(slug: str) -> EndpointGroup:
    return get_object_or_404(EndpointGroup.objects.select_related("mirror", "source_group"), slug=slug)


def group_url(group: EndpointGroup) -> str:
    return reverse("fleet:group_detail", args=[group.slug])


def group_target(group: EndpointGroup, platform: str, arch: str) -> tuple[str, str, str]:
    """The target a group page's URL names (a group has one channel); 404 when the group does not serve it."""
    target = (platform, group.channel, arch)
    if not group.serves(target):
        raise Http404(f"group {group.slug} does not serve {services.target_name(target)}")
    return target


class GroupListView(RoleRequiredMixin, TemplateView):
    template_name = "fleet/endpointgroup_list.html"

    def get_context_data(self, **kwargs):
        # Two queries whatever the number of groups: the groups, then all their approvals.
        groups = (EndpointGroup.objects.select_related("mirror", "source_group")
                  .prefetch_related(Prefetch("approvals", queryset=GroupTarget.objects.select_related("current")))
                  .order_by("ring_order", "name"))
        rows = []
        for group in groups:
            approvals = {row.target: row for row in group.approvals.all()}
            rows.append({
                "group": group,
                "rollout": rollout_words(group),
                "platforms": [Platform(p).label for p in group.platforms],
                "targets": [{"name": f"{p}/arch_{a}", "row": approvals.get((p, c, a))} for p, c, a in group.targets()],
            })
        return super().get_context_data(rows=rows, **kwargs)


class GroupDetailView(RoleRequiredMixin, TemplateView):
    template_name = "fleet/endpointgroup_detail.html"

    def get(self, request, slug):
        return self.render_to_response(self.get_context_data(group=get_group(slug)))

    def get_context_data(self, group, import_form=None, **kwargs):
        user = self.request.user
        can_approve = has_role(user, Role.OPERATOR)
        targets = []
        for status in services.group_status(group):
            target = (status["platform"], status["channel"], status["arch"])
            item = {**status, "name": services.target_name(target), "platform_label": Platform(status["platform"]).label}
            if can_approve:
                item["approve_form"] = ApproveForm(group=group, target=target, packages=services.packages_for(group, target),
                                                   current=status["current"])
                item["next_ring"] = services.next_ring(group, target) if status["current"] else None
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


class GroupFormView(RoleRequiredMixin, TemplateView):
    """Create (no slug) or edit a group; admins only, reading the form included."""

    template_name = "fleet/endpointgroup_form.html"
    required_role = Role.ADMIN
    write_role = Role.ADMIN

    def get(self, request, slug=None):
        group = get_group(slug) if slug else None
        initial = {}
        if group is None:
            mirrors = list(Mirror.objects.all()[:2])
            if len(mirrors) == 1:  # the usual single mirror: preselect it and what it syncs
                initial = {"mirror": mirrors[0], "platforms": mirrors[0].platforms, "channel": next(iter(mirrors[0].channels), None)}
            highest = EndpointGroup.objects.aggregate(highest=Max("ring_order"))["highest"]
            initial["ring_order"] = (highest or 0) + 10
        return self.render_to_response(self.get_context_data(form=EndpointGroupForm(instance=group, initial=initial), group=group))

    def post(self, request, slug=None):
        group = get_group(slug) if slug else None
        # The form writes what was typed onto the instance while validating: keep the saved name and slug for the page.
        saved = {"saved_name": group.name, "saved_slug": group.slug} if group else {}
        form = EndpointGroupForm(request.POST, instance=group)
        if not form.is_valid():
            return self.render_to_response(self.get_context_data(form=form, group=group, **saved), status=400)
        group = services.save_group(form.save(commit=False), request.user, request, form.changes())
        messages.success(request, f"Group {group.name} {'updated' if saved else 'created'}.")
        return redirect(group_url(group))

    def get_context_data(self, group=None, **kwargs):
        kwargs.setdefault("saved_name", group.name if group else None)
        kwargs.setdefault("saved_slug", group.slug if group else None)
        return super().get_context_data(group=group, **kwargs)


class GroupApproveView(RoleRequiredMixin, View):
    http_method_names = ["post"]

    def post(self, request, slug, platform, arch):
        group = get_group(slug)
        target = group_target(group, platform, arch)
        form = ApproveForm(request.POST, group=group, target=target)
        if not form.is_valid():
            errors = " ".join(error for errors in form.errors.values() for error in errors)
            messages.error(request, f"Nothing approved for {services.target_name(target)}: {errors}")
            return redirect(group_url(group))
        package = form.cleaned_data["package"]
        try:
            row = services.approve_package(group, package, request.user, request, expected_current=form.cleaned_data["expected_current"])
        except services.ApprovalError as exc:
            messages.error(request, f"Nothing approved: {exc}")
        else:
            kept = f"; {row.previous.definition_version} stays available as n-1" if row.previous else ""
            messages.success(request, f"{group.name} now serves {package.definition_version} for {services.target_name(target)}{kept}.")
        return redirect(group_url(group))


@dataclass(frozen=True)
class Plan:
    """What a confirmed promote or roll back does: which group's URL changes, from what to what."""

    group: EndpointGroup  # the group whose endpoints receive the change
    target: tuple
    before: SignaturePackage | None
    after: SignaturePackage
    endpoints: int

    @property
    def target_name(self) -> str:
        return services.target_name(self.target)

    @property
    def url(self) -> str:
        return self.group.definition_url(self.target[0])


class TargetActionView(RoleRequiredMixin, TemplateView):
    """GET: a confirmation page (from → to, who receives it); POST: do it, unless the page was stale."""

    template_name = "fleet/endpointgroup_confirm.html"
    http_method_names = ["get", "head", "post"]
    required_role = Role.OPERATOR  # the confirmation page is itself a control
    verb = ""

    def plan(self, group, target) -> Plan:
        raise NotImplementedError

    def apply(self, group, target, plan: Plan, expected_current) -> str:
        raise NotImplementedError

    @staticmethod
    def row(group, target):
        platform, channel, arch = target
        return (GroupTarget.objects.select_related("current", "previous")
                .filter(group=group, platform=platform, channel=channel, arch=arch).first())

    @staticmethod
    def endpoints(group, target) -> int:
        platform, _, arch = target
        return Endpoint.objects.filter(group=group, platform=platform, arch=arch, decommissioned_at__isnull=True).count()

    def get(self, request, slug, platform, arch):
        group = get_group(slug)
        target = group_target(group, platform, arch)
        try:
            plan = self.plan(group, target)
        except services.ApprovalError as exc:
            messages.error(request, f"Cannot {self.verb}: {exc}")
            return redirect(group_url(group))
        form = ConfirmForm(initial={"expected_current": plan.before.pk if plan.before else None, "package": plan.after.pk})
        return self.render_to_response(self.get_context_data(group=group, plan=plan, form=form, verb=self.verb))

    def post(self, request, slug, platform, arch):
        group = get_group(slug)
        target = group_target(group, platform, arch)
        form = ConfirmForm(request.POST)
        if not form.is_valid():
            messages.error(request, f"Nothing changed: this {self.verb} confirmation is incomplete; start again from this page.")
            return redirect(group_url(group))
        try:
            plan = self.plan(group, target)
            if plan.after.pk != form.cleaned_data["package"]:
                # The page showed another version than the one that would now be served.
                raise services.ApprovalError(f"{plan.group.slug} {plan.target_name} changed meanwhile: it would now receive "
                                             f"{plan.after.definition_version}; reload and confirm again", status=409)
            done = self.apply(group, target, plan, form.cleaned_data["expected_current"])
        except services.ApprovalError as exc:
            messages.error(request, f"Nothing changed: {exc}")
        else:
            messages.success(request, done)
        return redirect(group_url(group))


class GroupPromoteView(TargetActionView):
    verb = "promote"

    def plan(self, group, target) -> Plan:
        following = services.next_ring(group, target)
        if following is None:
            raise services.ApprovalError(f"no ring after {group.slug} serves {services.target_name(target)} from mirror {group.mirror.slug}")
        row = self.row(group, target)
        if row is None or row.current is None:
            raise services.ApprovalError(f"nothing is approved in {group.slug} for {services.target_name(target)} to promote")
        there = self.row(following, target)
        if there is not None and there.current_id == row.current_id:
            raise services.ApprovalError(f"{following.slug} already serves {row.current.definition_version} for {services.target_name(target)}", status=409)
        return Plan(following, target, there.current if there else None, row.current, self.endpoints(following, target))

    def apply(self, group, target, plan, expected_current) -> str:
        row = services.promote(group, target, self.request.user, self.request, expected_current=expected_current,
                               expected_package=plan.after.pk)
        return (f"{row.group.name} now serves {row.current.definition_version} for {services.target_name(target)} "
                f"(promoted from {group.name}).")


class GroupRollbackView(TargetActionView):
    verb = "roll back"

    def plan(self, group, target) -> Plan:
        row = self.row(group, target)
        if row is None or row.previous is None:
            raise services.ApprovalError(f"{group.slug} has no previous version for {services.target_name(target)} to roll back to")
        return Plan(group, target, row.current, row.previous, self.endpoints(group, target))

    def apply(self, group, target, plan, expected_current) -> str:
        row = services.rollback(group, target, self.request.user, self.request, expected_current=expected_current)
        return (f"{group.name} rolled back to {row.current.definition_version} for {services.target_name(target)}; "
                f"{plan.before.definition_version} is not approved again automatically.")


class GroupImportView(GroupDetailView):
    """Take the policy of an existing mdatp_managed.json (admins); errors come back on the group page."""

    http_method_names = ["post"]
    write_role = Role.ADMIN

    def post(self, request, slug):
        group = get_group(slug)
        form = ImportPolicyForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                warnings = services.import_policy(group, form.cleaned_data["content"], request.user, request)
            except ConfigImportError as exc:
                for path, message in exc.errors.items():
                    path = JSON_PATHS.get(path, path)
                    form.add_error(None, message if path in ("file", NON_FIELD_ERRORS) else f"{path}: {message}")
            else:
                messages.success(request, f"Policy of {group.name} imported from mdatp_managed.json.")
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
