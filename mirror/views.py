"""The published tree over HTTP, in Microsoft's layout, for endpoints that fetch from the portal itself; and the mirror pages."""

from datetime import timedelta

from django.contrib import messages
from django.db.models import Count, Max, Prefetch, Q
from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.urls import reverse
from django.utils import timezone
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from django.views.generic import DetailView, TemplateView, View
from django_filters.views import FilterView

from core import labels
from core.choices import Role
from core.errors import Refused
from core.generic import ObjectDeleteView, ObjectFormView
from core.roles import RoleRequiredMixin
from core.sorting import ordered
from core.templatetags.words import human_duration
from mirror.choices import Platform, SyncState, SyncTrigger, TargetOutcome
from mirror.errors import Failure
from mirror.filtersets import SyncRunFilterSet
from mirror.forms import (
    BundleImportForm,
    MirrorForm,
    PackageFilterSet,
    TreeImportForm,
    TrustedBundleKeyForm,
    UpstreamForm,
)
from mirror.models import Mirror, Publication, SignaturePackage, SyncRun, TrustedBundleKey, Upstream
from mirror.services.bundles import (
    add_trusted_key,
    export_bundle,
    import_bundle,
    import_tree,
    own_public_key,
    remove_trusted_key,
)
from mirror.services.mirrors import delete_mirror, delete_upstream, save_mirror, save_upstream
from mirror.services.sync import request_sync
from mirror.serving import not_found, send_package_file
from mirror.signals import PackageUsage, UsageRow, package_usage
from mirror.targets import Target

BACK = "_back"


# Public like any HTTP mirror: endpoints fetch anonymously. csrf_exempt so that a POST
# is told 405 (what the URL allows), not a CSRF 403.
@csrf_exempt
@require_http_methods(["GET", "HEAD"])
def published_file(request, slug, platform, channel, arch, filename):
    """/mirror/<slug>/<platform>/<channel>[_back]/arch_<arch>/(updates.zip|manifest.json)"""
    mirror = Mirror.objects.filter(slug=slug).first()
    if mirror is None:
        return not_found(f"no mirror named {slug}")
    base_channel = channel.removesuffix(BACK)
    publication = (
        Publication.objects.select_related("current", "previous")
        .filter(mirror=mirror, platform=platform, channel=base_channel, arch=arch)
        .first()
    )
    if publication is None:
        return not_found(f"nothing is published for {platform}/{base_channel}/arch_{arch} on mirror {slug}")
    package = publication.previous if channel.endswith(BACK) else publication.current
    if package is None:
        return not_found(
            f"no previous package (n-1) is published for {platform}/{base_channel}/arch_{arch} on mirror {slug}"
        )
    # The URL's content changed when the publication did, even for an old package.
    return send_package_file(request, package, filename, publication.published_at or package.downloaded_at)


# --- The mirror pages ----------------------------------------------------------------------------
# Thin: every change goes through mirror.services.* (the API and the scheduled tasks use the same calls).

RECENT_RUNS = 20
FAILURES_LOOKED_AT = 10  # the list counts failed runs in a row among the last ten
FAILED_STATES = (SyncState.FAILED, SyncState.PARTIAL)
# The run's big field, not needed to list runs (its results are: the error's summary reads them).
HEAVY_RUN_FIELDS = ("log",)


def get_mirror(slug: str) -> Mirror:
    return get_object_or_404(Mirror.objects.select_related("upstream"), slug=slug)


def mirror_url(mirror: Mirror) -> str:
    return reverse("mirror:mirror_detail", args=[mirror.slug])


def run_url(run: SyncRun) -> str:
    return reverse("mirror:run_detail", args=[run.pk])


def schedule_words(mirror: Mirror) -> str:
    if not mirror.enabled:
        return gettext("disabled: syncs only when asked")
    if not mirror.sync_interval_minutes:
        return gettext("only when asked")
    return gettext("every %(duration)s") % {"duration": human_duration(mirror.sync_interval_minutes * 60)}


def next_run(mirror: Mirror, last: SyncRun | None):
    """When the schedule syncs next: from the interval and the last run's start; None when it never does."""
    if not mirror.enabled or not mirror.sync_interval_minutes:
        return None
    if last is None:
        return gettext("at the scheduler's next tick")
    if last.is_active:
        return gettext("after the running sync")
    start = last.started_at or last.created
    return start + timedelta(minutes=mirror.sync_interval_minutes)


def next_run_context(mirror: Mirror, last: SyncRun | None) -> dict:
    """{"next_at": a time, or "next_words": why there is none}, for a page."""
    when = next_run(mirror, last)
    if isinstance(when, str):
        return {"next_at": None, "next_words": when}
    if when is None:
        return {"next_at": None, "next_words": gettext("not scheduled")}
    # In whole minutes, rounded up: "in 8 h", "in 1 h 5 min"; 0 once due (the scheduler's next tick takes it).
    left = max(0, (when - timezone.now()).total_seconds())
    return {"next_at": when, "next_words": "", "next_in": -(-left // 60) * 60}


def failures_in_a_row(runs) -> int:
    count = 0
    for run in runs:
        if run.is_active:
            continue
        if run.state not in FAILED_STATES:
            break
        count += 1
    return count


def result_rows(run: SyncRun) -> list[dict]:
    """The per-target results as a page shows them, with the outcome in words and a failure in one line."""
    rows = []
    for result in run.results or []:
        outcome = result.get("outcome", "")
        failed = outcome == TargetOutcome.FAILED
        rows.append(
            {
                **result,
                "outcome_label": labels.label("sync_outcome", outcome),
                "failed": failed,
                "summary": Failure.of_result(result).summary() if failed and result.get("error") else "",
            }
        )
    return rows


# The mirror list's sortable columns (core.sorting): public name → field.
MIRROR_COLUMNS = {
    "name": "name",
    "upstream": "upstream__name",
    "schedule": "sync_interval_minutes",
    "last_run": "last_run",
}
MIRROR_DEFAULT_ORDERING = "name"


class MirrorListView(RoleRequiredMixin, TemplateView):
    template_name = "mirror/mirror_list.html"

    def get_context_data(self, **kwargs):
        # Three queries whatever the number of mirrors: the mirrors, their last runs, the upstreams.
        recent = SyncRun.objects.defer(*HEAVY_RUN_FIELDS).order_by("-created", "-id")[:FAILURES_LOOKED_AT]
        mirrors = ordered(
            Mirror.objects.select_related("upstream")
            .annotate(last_run=Max("sync_runs__created"))
            .prefetch_related(Prefetch("sync_runs", queryset=recent, to_attr="recent_runs")),
            self.request,
            MIRROR_COLUMNS,
            MIRROR_DEFAULT_ORDERING,
        )
        rows = []
        for mirror in mirrors:
            last = mirror.recent_runs[0] if mirror.recent_runs else None
            failures = failures_in_a_row(mirror.recent_runs)
            rows.append(
                {
                    "mirror": mirror,
                    "targets": mirror.targets(),
                    "schedule": schedule_words(mirror),
                    "last": last,
                    **next_run_context(mirror, last),
                    "failures": failures,
                    "failures_capped": failures == FAILURES_LOOKED_AT,
                }
            )
        upstreams = Upstream.objects.annotate(mirror_count=Count("mirrors"))
        return super().get_context_data(
            rows=rows, upstreams=upstreams, default_ordering=MIRROR_DEFAULT_ORDERING, **kwargs
        )


class MirrorDetailView(RoleRequiredMixin, TemplateView):
    template_name = "mirror/mirror_detail.html"

    def get(self, request, slug):
        return self.render_to_response(self.get_context_data(mirror=get_mirror(slug)))

    def get_context_data(self, mirror, **kwargs):
        publications = {
            (p.platform, p.channel, p.arch): p for p in mirror.publications.select_related("current", "previous")
        }
        targets = []
        for target in mirror.targets():
            publication = publications.pop(target, None)
            targets.append({"name": Target(*target), "publication": publication})
        # A target the mirror no longer syncs still serves what was published for it.
        for target, publication in sorted(publications.items()):
            targets.append({"name": Target(*target), "publication": publication, "dropped": True})
        runs = list(mirror.sync_runs.select_related("requested_by").defer(*HEAVY_RUN_FIELDS)[:RECENT_RUNS])
        active = next((run for run in runs if run.is_active), None)
        return super().get_context_data(
            mirror=mirror,
            schedule=schedule_words(mirror),
            **next_run_context(mirror, runs[0] if runs else None),
            targets=targets,
            urls=[
                (Platform(p).label if p in Platform.values else p, c, mirror.definition_url(p, c))
                for p in mirror.platforms
                for c in mirror.channels
            ],
            runs=runs,
            active_run=active,
            proxy=mirror.upstream.masked_proxy_url,
            **kwargs,
        )


class MirrorSyncView(RoleRequiredMixin, View):
    """ "Sync now" (operators): queue a sync, or show the one already queued or running."""

    http_method_names = ["post"]

    def post(self, request, slug):
        mirror = get_mirror(slug)
        run, created = request_sync(mirror, SyncTrigger.MANUAL, request.user, request)
        if created:
            messages.success(
                request, gettext("Sync #%(run)s of %(mirror)s queued.") % {"run": run.pk, "mirror": mirror.name}
            )
        else:
            messages.info(
                request,
                gettext("A sync of %(mirror)s is already %(state)s (#%(run)s): here it is; no other was started.")
                % {"mirror": mirror.name, "state": run.get_state_display().lower(), "run": run.pk},
            )
        return redirect(run_url(run))


class MirrorFormView(ObjectFormView):
    """Create (no slug) or edit a mirror."""

    template_name = "mirror/mirror_form.html"
    form_class = MirrorForm
    noun = _("Mirror")
    context_name = "mirror"
    saved_fields = ("name", "slug")

    def get_object(self):
        return get_mirror(self.kwargs["slug"]) if "slug" in self.kwargs else None

    def initial_for_new(self):
        initial = {"platforms": Platform.values, "channels": ["production"], "archs": ["x86_64"]}
        upstreams = list(Upstream.objects.all()[:2])
        if len(upstreams) == 1:
            initial["upstream"] = upstreams[0]
        return initial

    def save(self, form, changes):
        return save_mirror(form.save(commit=False), self.request.user, self.request, changes)

    def success_url(self, mirror):
        return mirror_url(mirror)

    def page_context(self, mirror):
        return {"has_upstream": Upstream.objects.exists()}


class MirrorDeleteView(ObjectDeleteView):
    """GET: what deleting removes; POST: delete (admins)."""

    template_name = "mirror/mirror_confirm_delete.html"
    noun = _("Mirror")
    deleted_message = _("{noun} {name} deleted. Its packages stay in the store until retention prunes them.")

    def get_object(self):
        return get_mirror(self.kwargs["slug"])

    def confirm_context(self, mirror):
        return {"mirror": mirror, "publications": mirror.publications.count(), "runs": mirror.sync_runs.count()}

    def delete(self, mirror):
        delete_mirror(mirror, self.request.user, self.request)

    def success_url(self, mirror):
        return reverse("mirror:mirror_list")

    def protected_url(self, mirror):
        return mirror_url(mirror)


class UpstreamFormView(ObjectFormView):
    template_name = "mirror/upstream_form.html"
    form_class = UpstreamForm
    noun = _("Upstream")
    context_name = "upstream"

    def get_object(self):
        return get_object_or_404(Upstream, pk=self.kwargs["pk"]) if "pk" in self.kwargs else None

    def save(self, form, changes):
        return save_upstream(form.save(commit=False), self.request.user, self.request, changes)

    def success_url(self, upstream):
        return reverse("mirror:mirror_list")

    def page_context(self, upstream):
        return {"used_by": list(upstream.mirrors.all()) if upstream else []}


class UpstreamDeleteView(ObjectDeleteView):
    noun = _("Upstream")
    protected_message = _("{noun} {name} is still used by a mirror; change that mirror's upstream first.")

    def get_object(self):
        return get_object_or_404(Upstream, pk=self.kwargs["pk"])

    def delete(self, upstream):
        delete_upstream(upstream, self.request.user, self.request)

    def success_url(self, upstream):
        return reverse("mirror:mirror_list")

    def protected_url(self, upstream):
        return reverse("mirror:upstream_update", args=[upstream.pk])


class RunListView(RoleRequiredMixin, FilterView):
    filterset_class = SyncRunFilterSet
    template_name = "mirror/syncrun_list.html"
    paginate_by = 50

    def get_queryset(self):
        return SyncRun.objects.select_related("mirror", "requested_by").defer(*HEAVY_RUN_FIELDS)


def run_context(run: SyncRun) -> dict:
    percent = None
    if run.bytes_expected:
        percent = min(100, round(100 * run.bytes_done / run.bytes_expected))
    return {
        "run": run,
        "results": result_rows(run),
        "percent": percent,
    }


def get_run(pk: int) -> SyncRun:
    return get_object_or_404(SyncRun.objects.select_related("mirror", "requested_by"), pk=pk)


class RunDetailView(RoleRequiredMixin, TemplateView):
    template_name = "mirror/syncrun_detail.html"

    def get(self, request, pk):
        return self.render_to_response(self.get_context_data(**run_context(get_run(pk))))


class RunProgressView(RunDetailView):
    """Just the run's progress block, for htmx to swap in every 2 s while the run is active."""

    template_name = "mirror/syncrun_progress.html"


class PackageListView(RoleRequiredMixin, FilterView):
    filterset_class = PackageFilterSet
    template_name = "mirror/package_list.html"
    paginate_by = 50
    queryset = SignaturePackage.objects.all()


class PackageDetailView(RoleRequiredMixin, DetailView):
    template_name = "mirror/package_detail.html"
    model = SignaturePackage
    context_object_name = "package"

    def get_context_data(self, **kwargs):
        package = self.object
        publications = (
            Publication.objects.select_related("mirror")
            .filter(Q(current=package) | Q(previous=package))
            .order_by("mirror__name")
        )
        published = PackageUsage(
            key="published-on",
            title=gettext("Published on mirrors"),
            holder=gettext("Mirror"),
            since=gettext("Published at (UTC)"),
            empty=gettext("No mirror publishes it now."),
            rows=[
                UsageRow(
                    p.mirror.name,
                    mirror_url(p.mirror),
                    gettext("current") if p.current_id == package.pk else "n-1",
                    p.published_at,
                )
                for p in publications
            ],
        )
        # The apps above mirror add who else serves it (fleet: the groups that approve it), each as a table.
        others = [usage for _receiver, usage in package_usage.send(sender=SignaturePackage, package=package) if usage]
        return super().get_context_data(usages=[published, *others], **kwargs)


# --- Air-gapped transfer: bundles (mirror.services.bundles) ---------------------------------------


KEY_COLUMNS = {"name": "name", "fingerprint": "fingerprint", "added_by": "added_by__username", "created": "created"}
KEY_DEFAULT_ORDERING = "name"


def bundle_page_context(request, import_form=None, key_form=None, tree_form=None) -> dict:
    return {
        "own_key": own_public_key(),
        "trusted_keys": ordered(
            TrustedBundleKey.objects.select_related("added_by"), request, KEY_COLUMNS, KEY_DEFAULT_ORDERING
        ),
        "default_ordering": KEY_DEFAULT_ORDERING,
        "import_form": import_form or BundleImportForm(),
        "key_form": key_form or TrustedBundleKeyForm(),
        "tree_form": tree_form or TreeImportForm(),
    }


class BundleListView(RoleRequiredMixin, TemplateView):
    """This portal's public key, the keys it trusts, and the import form."""

    template_name = "mirror/bundle_list.html"

    def get_context_data(self, **kwargs):
        return super().get_context_data(**bundle_page_context(self.request), **kwargs)


class BundleImportView(RoleRequiredMixin, TemplateView):
    """POST a bundle (operators): verified completely, then stored and published; a refusal shows on the form."""

    template_name = "mirror/bundle_list.html"
    http_method_names = ["post"]

    def post(self, request):
        form = BundleImportForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                result = import_bundle(form.cleaned_data["file"], form.cleaned_data["mirror"], request.user, request)
            except Refused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, result.summary())
                return redirect(mirror_url(result.mirror))
        return self.render_to_response(
            self.get_context_data(**bundle_page_context(request, import_form=form)), status=400
        )


class TreeImportView(RoleRequiredMixin, TemplateView):
    """POST a folder of the server holding a tree written by Microsoft's script (admins: it reads the server's disk)."""

    template_name = "mirror/bundle_list.html"
    required_role = write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request):
        form = TreeImportForm(request.POST)
        if form.is_valid():
            try:
                result = import_tree(form.cleaned_data["path"], form.cleaned_data["mirror"], request.user, request)
            except Refused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(request, result.summary())
                return redirect(mirror_url(result.mirror))
        return self.render_to_response(
            self.get_context_data(**bundle_page_context(request, tree_form=form)), status=400
        )


class BundleKeyCreateView(RoleRequiredMixin, TemplateView):
    """Trust another portal's key (admins)."""

    template_name = "mirror/bundle_list.html"
    required_role = write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request):
        form = TrustedBundleKeyForm(request.POST)
        if form.is_valid():
            data = form.cleaned_data
            try:
                key = add_trusted_key(data["name"], data["public_key"], data["note"], request.user, request)
            except Refused as exc:
                form.add_error(exc.field if exc.field in form.fields else None, exc.message)
            else:
                messages.success(
                    request,
                    gettext("Bundles signed by %(name)s (%(fingerprint)s…) may be imported now.")
                    % {"name": key.name, "fingerprint": key.fingerprint[:16]},
                )
                return redirect(reverse("mirror:bundle_list"))
        return self.render_to_response(self.get_context_data(**bundle_page_context(request, key_form=form)), status=400)


class BundleKeyDeleteView(RoleRequiredMixin, View):
    """Stop trusting a key (admins); what was imported with it stays."""

    required_role = write_role = Role.ADMIN
    http_method_names = ["post"]

    def post(self, request, pk):
        key = get_object_or_404(TrustedBundleKey, pk=pk)
        remove_trusted_key(key, request.user, request)
        messages.success(
            request,
            gettext("Key %(name)s is no longer trusted: its bundles are refused from now on.") % {"name": key.name},
        )
        return redirect(reverse("mirror:bundle_list"))


class MirrorBundleView(RoleRequiredMixin, View):
    """GET streams a signed bundle of the mirror (operators): every target's current and n-1 package."""

    required_role = Role.OPERATOR

    def get(self, request, slug):
        mirror = get_mirror(slug)
        try:
            bundle = export_bundle(mirror, request.GET.getlist("package") or None, request.user, request)
        except (Refused, ValueError) as exc:
            messages.error(request, getattr(exc, "message", gettext("Give package ids as whole numbers.")))
            return redirect(mirror_url(mirror))
        response = StreamingHttpResponse(bundle.chunks(), content_type="application/x-tar")
        response["Content-Length"] = str(bundle.size)
        response["Content-Disposition"] = f'attachment; filename="{bundle.filename}"'
        return response
