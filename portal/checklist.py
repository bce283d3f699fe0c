"""The first-run checklist on the dashboard: from an empty portal to a first health report, each step ticked from
what the database holds (never from a flag someone must remember to set).

upstream → mirror → first successful sync → ring → a version approved for it → enrollment secret → agent on a first
machine → first report. The approval is a step of its own: a ring that serves nothing answers 404 to its endpoints,
and the first report would then say "unserved".
"""

from dataclasses import dataclass

from django.db import connection
from django.urls import reverse
from django.utils.translation import gettext_lazy as _

from core.choices import Role
from core.roles import has_role
from fleet.models import Endpoint, EndpointGroup, EnrollmentSecret, GroupTarget
from mirror.choices import SyncState
from mirror.models import Mirror, SyncRun, Upstream


@dataclass
class Step:
    key: str
    title: str
    help: str
    url: str
    role: Role  # who can do it; the others are told who can
    done: bool
    next: bool = False
    allowed: bool = True

    @property
    def who(self) -> str:
        """Who to ask, for someone who may not do it."""
        if self.role == Role.ADMIN:
            return _("Ask an admin to do it.")
        return _("Ask an operator or an admin to do it.")


@dataclass
class Checklist:
    steps: list[Step]

    @property
    def complete(self) -> bool:
        return all(step.done for step in self.steps)

    @property
    def done_count(self) -> int:
        return sum(step.done for step in self.steps)

    @property
    def next(self) -> Step | None:
        return next((step for step in self.steps if not step.done), None)


def _facts() -> dict:
    """Eight EXISTS and two slugs in one query: the dashboard's query count stays what it was, whatever the data."""
    exists = {
        "upstream": Upstream.objects.all(),
        "mirror": Mirror.objects.all(),
        "sync": SyncRun.objects.filter(state=SyncState.SUCCEEDED),
        "group": EndpointGroup.objects.all(),
        "approved": GroupTarget.objects.filter(current__isnull=False),
        "secret": EnrollmentSecret.objects.filter(revoked_at__isnull=True),
        "endpoint": Endpoint.objects.filter(enrolled_at__isnull=False),
        "report": Endpoint.objects.filter(last_seen__isnull=False),
    }
    first = {
        "mirror_slug": Mirror.objects.order_by("pk").values("slug"),
        "group_slug": EndpointGroup.objects.order_by("ring_order", "pk").values("slug"),
    }
    columns, params = [], []
    for queryset in exists.values():
        # No ORDER BY: with one, PostgreSQL may sort every endpoint to find whether one exists.
        sql, more = queryset.order_by().values("pk")[:1].query.sql_with_params()
        columns.append(f"EXISTS ({sql})")
        params.extend(more)
    for queryset in first.values():
        sql, more = queryset[:1].query.sql_with_params()
        columns.append(f"({sql})")
        params.extend(more)
    with connection.cursor() as cursor:
        cursor.execute("SELECT " + ", ".join(columns), params)
        row = cursor.fetchone()
    names = [*exists, *first]
    return {name: (bool(value) if name in exists else value) for name, value in zip(names, row, strict=True)}


def first_run_checklist(user=None) -> Checklist:
    """The steps in order, each done or not, the first not done marked next; links for those who may follow them."""
    facts = _facts()
    mirror_url = (
        reverse("mirror:mirror_detail", args=[facts["mirror_slug"]])
        if facts["mirror_slug"]
        else reverse("mirror:mirror_list")
    )
    group_url = (
        reverse("fleet:group_detail", args=[facts["group_slug"]])
        if facts["group_slug"]
        else reverse("fleet:group_list")
    )
    steps = [
        Step(
            "upstream",
            _("Add an upstream"),
            _("Where the mirror downloads Microsoft's signature packages from (Microsoft, a proxy or another mirror)."),
            reverse("mirror:upstream_create"),
            Role.ADMIN,
            facts["upstream"],
        ),
        Step(
            "mirror",
            _("Add a mirror"),
            _("Which platforms, channels and architectures to keep, and how often to sync them."),
            reverse("mirror:mirror_create"),
            Role.ADMIN,
            facts["mirror"],
        ),
        Step(
            "sync",
            _("Sync the mirror once"),
            _("The first successful sync downloads the packages your endpoints will update from."),
            mirror_url,
            Role.OPERATOR,
            facts["sync"],
        ),
        Step(
            "group",
            _("Create a ring"),
            _("A group of endpoints with its own update URL and managed configuration (pilot first, then broader)."),
            reverse("fleet:group_create"),
            Role.ADMIN,
            facts["group"],
        ),
        Step(
            "approved",
            _("Approve a version for the ring"),
            _(
                "On the ring's page: until a package is approved (or its rollout takes each new version), "
                "the ring's URL serves nothing and its endpoints cannot update."
            ),
            f"{group_url}#approved-versions" if facts["group_slug"] else group_url,
            Role.OPERATOR,
            facts["approved"],
        ),
        Step(
            "secret",
            _("Create an enrollment secret"),
            _("On the ring's page: machines enroll into the ring with it."),
            f"{group_url}#enrollment-secrets" if facts["group_slug"] else group_url,
            Role.OPERATOR,
            facts["secret"],
        ),
        Step(
            "endpoint",
            _("Install the agent on a first machine"),
            _("The ring's page shows how: the agent enrolls with the secret and installs the ring's configuration."),
            f"{group_url}#install-agent" if facts["group_slug"] else group_url,
            Role.VIEWER,
            facts["endpoint"],
        ),
        Step(
            "report",
            _("Receive a first health report"),
            _("The agent reports Defender's health after each run; the endpoint's state then shows here."),
            reverse("fleet:endpoint_list"),
            Role.VIEWER,
            facts["report"],
        ),
    ]
    for step in steps:
        step.allowed = user is None or has_role(user, step.role)
    checklist = Checklist(steps)
    if checklist.next:
        checklist.next.next = True
    return checklist
