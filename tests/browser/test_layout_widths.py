"""Issue 15: no page is wider than the window from 360 to 2,560 px, the top bar folds behind a menu button on narrow
screens, and screenshots of the main pages at 390 and 1,440 px for people to look at.

Every page of the UI is found in the URL resolver, so a new page is checked without anyone adding it here: its
arguments are filled from a realistic portal (long machine ids and hostnames, versions, findings, failed syncs with
long errors, audit events with details, alerts, tokens, users). What is not a page is skipped, each with its reason.
"""

import re
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from playwright.sync_api import expect

from core import services
from core.choices import AccountSource, Role, TokenScope
from core.models import RoleMapping
from fleet.models import Endpoint, EndpointGroup
from fleet.services import enrollment
from fleet.services.rings import approve_package
from mirror.choices import SyncState, SyncTrigger
from mirror.models import SyncRun, Upstream
from mirror.services.bundles import add_trusted_key, public_key_text
from portal import alerts
from portal.choices import AlertChannelKind, AlertRuleKind
from portal.models import AlertChannel, AlertRule
from tests.browser.conftest import SCREENSHOTS

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

WIDTHS = (390, 1024, 1440)
# The extremes, on the pages with the most to hold.
EXTREME_WIDTHS = (360, 2560)
EXTREME_PAGES = {"dashboard", "fleet:group_detail", "fleet:endpoint_detail", "fleet:endpoint_list", "auditevent_list"}

# URL names that are not pages a person looks at, and why.
SKIPPED = {
    "logout": "POST only (the sign-out button)",
    "set_language": "POST only (the language menu)",
    "healthz": "a probe for load balancers, plain text",
    "readyz": "a probe for load balancers, plain text",
    "metrics": "Prometheus text for a scraper",
    "schema": "the OpenAPI document (YAML)",
    "fleet:endpoint_export": "a CSV download",
    "fleet:group_managed_config": "a file download (mdatp_managed.json or a profile)",
    "mirror:mirror_bundle": "a bundle download (tar)",
    "fleet:agent_file": "a download (the agent or one of its units)",
    "mirror:run_progress": "an htmx fragment inside the sync run's page (checked there)",
    "mirror:published_file": "the published tree endpoints fetch (files, not pages)",
    "groups:group_file": "a group's tree endpoints fetch (files, not pages)",
    # Reset by e-mail: 404 unless EMAIL_HOST is set; narrow cards like the sign-in page (tests/core/test_passwords.py).
    "password_reset": "only where mail is configured",
    "password_reset_done": "only where mail is configured",
    "password_reset_confirm": "only where mail is configured, by the link mailed for a reset",
    "password_reset_complete": "only where mail is configured",
    "oidc_authentication_init": "a redirect to the OpenID provider (404 while OpenID Connect is not configured)",
    "oidc_authentication_callback": "where the OpenID provider sends the browser back (tests/core/test_oidc.py)",
    # An admin's actions on a person's sessions post to the list's own view; its page is user_sessions.
    "user_session_end": "the POST of a user's session list (visited as user_sessions)",
    "user_sessions_end_all": "the POST of a user's session list (visited as user_sessions)",
}
# Pages whose route is a regular expression, and how to reach them.
REGEX_PAGES = {
    "groups:group_folder": lambda objects: f"/mirror/groups/{objects['group'].slug}/",
}
# Under /api/ only the docs page is for people; the rest answers JSON to programs and endpoints.
API_PAGES = {"swagger-ui"}

LONG_ID = "3f2a9c1e7b5d4e8fa0c6b2d9e4f1a7c3"
LONG_HOST = "build-agent-westeurope-0042.corp.contoso-holdings.example"  # 56 of the 64 allowed
LONG_ERROR = (
    "HTTPSConnectionPool(host='go.microsoft.com', port=443): Max retries exceeded with url: "
    "/fwlink/?linkid=2144709&platform=linux&arch=x86_64&channel=production (Caused by NewConnectionError("
    "'<urllib3.connection.HTTPSConnection object at 0x7f3a2b1c4d90>: Failed to establish a new connection: "
    "[Errno 111] Connection refused'))"
)


def ui_patterns(patterns=None, prefix="", namespace=None):
    """(route, URL name, view) of every URL the portal answers, namespaces joined ("fleet:group_detail")."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(entry, URLResolver):
            inner = ":".join(n for n in (namespace, entry.namespace) if n) or None
            yield from ui_patterns(entry.url_patterns, prefix + str(entry.pattern), inner)
        elif isinstance(entry, URLPattern):
            name = ":".join(n for n in (namespace, entry.name) if n)
            yield prefix + str(entry.pattern), name, entry.callback


def answers_get(view) -> bool:
    view_class = getattr(view, "view_class", None)
    if view_class is None:
        return True  # a function view: listed in SKIPPED or visited
    allowed = getattr(view_class, "http_method_names", ())
    return hasattr(view_class, "get") and "get" in allowed


# Which object a URL's pk names, by the start of its name (the longest start wins).
PK_OWNERS = {
    "apitoken": "token",
    "user": "user",
    "alertrule": "rule",
    "alertchannel": "channel",
    "alertevent": "alert",
    "fleet:endpoint": "endpoint",
    "fleet:identityconflict": "conflict",
    "fleet:enrollmentsecret": "secret",
    "mirror:upstream": "upstream",
    "mirror:run": "run",
    "mirror:package": "package",
    "mirror:bundle_key": "key",
    "rolemapping": "mapping",
}


def path_of(route: str, name: str, objects: dict) -> str:
    """The route with its arguments filled from the portal's objects; fails on an argument nobody taught it."""
    values = {
        "platform": "linux",
        "arch": "x86_64",
        "slug": objects["group"].slug if name.startswith("fleet:") else objects["mirror"].slug,
    }
    owners = [start for start in PK_OWNERS if name.startswith(start)]
    if owners and objects.get(PK_OWNERS[max(owners, key=len)]) is not None:
        values["pk"] = objects[PK_OWNERS[max(owners, key=len)]].pk

    def fill(match):
        argument = match.group("name")
        assert argument in values, f"{name} ({route}): teach test_layout_widths how to fill <{argument}>"
        return str(values[argument])

    return "/" + re.sub(r"<(?:\w+:)?(?P<name>\w+)>", fill, route)


def pages_to_visit(objects: dict) -> list[tuple[str, str]]:
    pages, skipped = [], {}
    for route, name, view in ui_patterns():
        if name in SKIPPED:
            skipped[name] = SKIPPED[name]
        elif route.startswith("api/") and name not in API_PAGES:
            skipped[name] = "the API (JSON)"
        elif not answers_get(view):
            skipped[name] = "POST only (a button's action)"
        elif name in REGEX_PAGES:
            pages.append((name, REGEX_PAGES[name](objects)))
        else:
            assert "^" not in route, f"{name} ({route}): a pattern; add it to REGEX_PAGES or SKIPPED"
            pages.append((name, path_of(route, name, objects)))
    return pages


# The width of the document, and when it is wider than the window the offending elements outside any scrolling box
# (a table scrolling in its .table-scroll is fine), widest first.
MEASURE = """() => {
  const width = window.innerWidth;
  const result = {width, scrollWidth: document.documentElement.scrollWidth, offenders: []};
  if (result.scrollWidth <= width) return result;
  const scrolls = (el) => {
    if (["absolute", "fixed"].includes(getComputedStyle(el).position)) return false;  // escapes unpositioned scrollers
    for (let up = el.parentElement; up && up !== document.body; up = up.parentElement) {
      if (getComputedStyle(up).overflowX !== "visible") return true;
    }
    return false;
  };
  const describe = (el) => {
    const id = el.id ? "#" + el.id : "";
    const classes = typeof el.className === "string" && el.className.trim() ? "." + el.className.trim().split(/\\s+/).join(".") : "";
    return `${el.tagName.toLowerCase()}${id}${classes} "${(el.textContent || "").trim().replace(/\\s+/g, " ").slice(0, 60)}"`;
  };
  const found = [];
  for (const el of document.body.querySelectorAll("*")) {
    const right = el.getBoundingClientRect().right;
    if (right > width + 0.5 && !scrolls(el)) {
      const parentRight = el.parentElement.getBoundingClientRect().right;
      found.push({right: Math.round(right), outermost: parentRight <= width + 0.5, what: describe(el)});
    }
  }
  found.sort((a, b) => (b.outermost - a.outermost) || (b.right - a.right));
  result.offenders = found.slice(0, 4).map((o) => `${o.what} (right edge ${o.right} px${o.outermost ? ", its parent fits" : ""})`);
  return result;
}"""


def overflow(page) -> str | None:
    """None when the page fits its window, else a sentence naming the widest elements."""
    measured = page.evaluate(MEASURE)
    if measured["scrollWidth"] <= measured["width"]:
        return None
    return f"{measured['scrollWidth']} px wide in {measured['width']} px: " + "; ".join(measured["offenders"])


@pytest.fixture
def portal(mirror, make_group, make_package, make_endpoints, reporting_endpoint, make_user, admin):
    """A portal in use: rings with current and n-1 versions, a few hundred endpoints with long names and findings,
    failed syncs with urllib3's long errors, alerts firing, tokens, users, audit events with details."""
    Upstream.objects.filter(pk=mirror.upstream_id).update(
        base_url="https://go.microsoft.com/fwlink/?linkid=2144709&clcid=0x409&platform=linux&arch=x86_64"
    )
    pilot = make_group("pilot", 10, platforms=("linux", "mac"))
    broad = make_group("datacenter-servers-western-europe", 20)
    EndpointGroup.objects.filter(pk=broad.pk).update(name="Datacenter servers — Western Europe production")
    broad.refresh_from_db()
    packages = {}
    for platform, arch in (("linux", "x86_64"), ("linux", "arm64"), ("mac", "x86_64"), ("mac", "arm64")):
        older, newer = make_package(platform, arch=arch), make_package(platform, arch=arch)
        packages[platform, arch] = newer
        for group in (pilot, broad):
            if platform in group.platforms:
                approve_package(group, older, admin)
                approve_package(group, newer, admin)
    current = packages["linux", "x86_64"].definition_version
    make_endpoints(pilot, 40, current, prefix=LONG_ID)
    make_endpoints(broad, 60, "1.405.999.0", prefix=LONG_HOST, failed_at=timezone.now() - timedelta(hours=3))
    make_endpoints(broad, 20, current, seen=timezone.now() - timedelta(days=21), prefix=f"silent-{LONG_HOST[:50]}")
    endpoint = reporting_endpoint(pilot, f"{LONG_HOST}-07", "1.403.100.0")
    secret, _ = enrollment.create_enrollment_secret(broad, "imaging pipeline of the western europe datacenters")

    runs = [
        SyncRun.objects.create(
            mirror=mirror,
            trigger=SyncTrigger.SCHEDULE,
            state=SyncState.FAILED,
            started_at=timezone.now() - timedelta(hours=hours, minutes=1),
            finished_at=timezone.now() - timedelta(hours=hours),
            error=LONG_ERROR,
        )
        for hours in (30, 6, 1)
    ]
    channel = AlertChannel(
        name="security operations centre webhook",
        kind=AlertChannelKind.WEBHOOK,
        url=f"https://{LONG_HOST}/hooks/defender",
    )
    alerts.save_channel(channel, admin)
    rule = AlertRule(name="a mirror's last sync failed (every mirror)", kind=AlertRuleKind.SYNC_FAILED)
    alerts.save_rule(rule, [channel], admin)
    alerts.save_rule(
        AlertRule(
            name="pilot compliance below 90 %",
            kind=AlertRuleKind.GROUP_COMPLIANCE_BELOW,
            group=pilot,
            threshold_percent=90,
        ),
        [],
        admin,
    )
    alerts.evaluate()
    alert = rule.events.first()

    token, _ = services.create_api_token(admin, "ansible playbook of the western europe datacenters", TokenScope.WRITE)
    for name, role in (("victor.lastname-of-some-length", Role.VIEWER), ("oscar", Role.OPERATOR)):
        make_user(name, role)
    user = make_user("someone.with.a.rather.long.username@corp.contoso-holdings.example", Role.VIEWER)
    services.update_user(admin, user, role=Role.OPERATOR)

    other_portal = public_key_text(Ed25519PrivateKey.generate().public_key())
    key = add_trusted_key("exporting portal in the connected zone", other_portal, "carried over on a USB key", admin)
    conflict = None
    mapping = RoleMapping.objects.create(
        source=AccountSource.OIDC,
        value="CN=Defender-Portal-Operators,OU=Security Groups,DC=corp,DC=contoso-holdings,DC=example",
        role=Role.OPERATOR,
        description="the SOC's operators, from Entra ID",
    )
    return {
        "mirror": mirror,
        "upstream": mirror.upstream,
        "group": broad,
        "pilot": pilot,
        "package": packages["linux", "x86_64"],
        "endpoint": endpoint,
        "secret": secret,
        "run": runs[-1],
        "channel": channel,
        "rule": rule,
        "alert": alert,
        "token": token,
        "user": user,
        "key": key,
        "conflict": conflict,
        "mapping": mapping,
        "endpoints": Endpoint.objects.count(),
    }


def test_no_page_is_wider_than_the_window(page, login, admin, portal):
    login(admin)
    failures, visited, post_only = [], [], []
    for name, path in pages_to_visit(portal):
        answer = page.request.get(path, headers={"Accept": "text/html"})  # first without drawing it: a page at all?
        if answer.status == 405:
            post_only.append(name)  # a view whose GET is refused (a delete without a confirmation page)
            continue
        if answer.status >= 400:
            failures.append(f"{name} {path}: HTTP {answer.status}")
            continue
        if "text/html" not in answer.headers.get("content-type", ""):
            failures.append(f"{name} {path}: not a page ({answer.headers.get('content-type')}): list it in SKIPPED")
            continue
        for width in WIDTHS + (EXTREME_WIDTHS if name in EXTREME_PAGES else ()):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(path)
            problem = overflow(page)
            if problem:
                failures.append(f"{name} {path} at {width} px: {problem}")
        visited.append(name)
    assert len(visited) >= 30, visited
    assert failures == [], "\n".join(["pages wider than the window:", *failures])


def test_narrow_screens_fold_the_menu_behind_a_button_that_works_with_the_keyboard(page, login, admin, portal):
    page.set_viewport_size({"width": 390, "height": 800})
    login(admin)
    button = page.get_by_role("button", name="Menu")
    nav = page.get_by_role("navigation", name="Main")
    expect(button).to_be_visible()
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(nav).to_be_hidden()
    button.focus()
    page.keyboard.press("Enter")
    expect(button).to_have_attribute("aria-expanded", "true")
    expect(nav.get_by_role("link", name="Groups")).to_be_visible()
    expect(page.get_by_role("link", name="API tokens")).to_be_visible()  # the user menu folds in too
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.keyboard.press("Tab")
    page.keyboard.press("Escape")
    expect(button).to_have_attribute("aria-expanded", "false")
    expect(button).to_be_focused()
    expect(nav).to_be_hidden()
    # Wide screens show the menu and no button.
    page.set_viewport_size({"width": 1024, "height": 800})
    expect(button).to_be_hidden()
    expect(nav).to_be_visible()


def test_without_javascript_the_menu_is_shown_open(browser, live_server, admin, portal):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 390, "height": 800}, java_script_enabled=False
    )
    try:
        page = context.new_page()
        page.goto("/login/")
        page.fill("#id_username", admin.username)
        page.fill("#id_password", "correct horse battery")
        with page.expect_navigation():
            page.click("button[type=submit]")
        expect(page.get_by_role("navigation", name="Main").get_by_role("link", name="Groups")).to_be_visible()
        expect(page.get_by_role("button", name="Menu")).to_be_hidden()
    finally:
        context.close()


def shoot(page, name: str, path: str):
    for width in (390, 1440):
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(path)
        page.wait_for_load_state("networkidle")
        assert overflow(page) is None, f"{name} at {width} px: {overflow(page)}"
        page.screenshot(path=str(SCREENSHOTS / f"{name}-{width}.png"), full_page=True)


def test_screenshots_of_the_main_pages_at_390_and_1440_px(page, login, admin, portal):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    login(admin)
    shoot(page, "dashboard", "/")
    shoot(page, "group", f"/groups/{portal['pilot'].slug}/")
    shoot(page, "endpoint", f"/groups/endpoints/{portal['endpoint'].pk}/")
    shoot(page, "endpoints", "/groups/endpoints/")


@pytest.mark.django_db(transaction=True)
def test_screenshots_of_the_first_run_checklist_at_390_and_1440_px(page, login, admin):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    login(admin)
    shoot(page, "checklist", "/")
