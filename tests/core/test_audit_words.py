"""The audit log in words: every action an app records has a label, details read as a diff, columns sort."""

import ast
import re
from pathlib import Path

import pytest
from django.utils import translation

from core import labels, services
from core.models import AuditEvent
from core.templatetags.audit import rows_of
from fleet.choices import ApprovalAction
from portal.models import AlertChannel

ROOT = Path(__file__).resolve().parents[2]
APPS = ("core", "mirror", "fleet", "portal")
# f-strings that build an action: their constant prefix and every value the rest can take.
ACTION_FAMILIES = {"approval.": [action.value for action in ApprovalAction]}


def constants_of(tree: ast.Module) -> dict[str, str]:
    """A module's top-level ``NAME = "text"`` assignments (``CONFLICT = "package.conflict"``)."""
    found = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found[target.id] = node.value.value
    return found


def actions_in(node: ast.AST, constants: dict[str, str], where: str) -> set[str]:
    """The action codes an expression can be: literals, either branch of ``a if x else b``, a module constant, or
    an f-string of a known family."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return actions_in(node.body, constants, where) | actions_in(node.orelse, constants, where)
    if isinstance(node, ast.Name) and node.id in constants:
        return {constants[node.id]}
    if isinstance(node, ast.JoinedStr) and isinstance(node.values[0], ast.Constant):
        prefix = node.values[0].value
        if prefix in ACTION_FAMILIES:
            return {prefix + value for value in ACTION_FAMILIES[prefix]}
    raise AssertionError(f"{where}: an audit action this test cannot read ({ast.unparse(node)}); name its codes")


def emitted_actions() -> dict[str, str]:
    """Every action code a ``record_event(actor, action, …)`` call in the apps can record, with where it is."""
    found = {}
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            source = path.read_text()
            if "record_event(" not in source:
                continue
            tree = ast.parse(source)
            constants = constants_of(tree)
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call):
                    continue
                name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
                if name != "record_event":
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                action = next((kw.value for kw in node.keywords if kw.arg == "action"), None)
                if action is None and len(node.args) >= 2:
                    action = node.args[1]
                if action is None:
                    continue
                for code in actions_in(action, constants, where):
                    found.setdefault(code, where)
    return found


def test_the_source_records_actions_this_test_can_find():
    actions = emitted_actions()
    # A sample of each app, so a parser that silently found nothing would fail here.
    sample = {"token.create", "mirror.sync", "upstream.withdrew", "approval.rollback", "alert_rule.delete"}
    assert sample <= set(actions)


def test_every_audit_action_an_app_records_has_a_label():
    registered = labels.registered("audit_action")
    missing = {code: where for code, where in emitted_actions().items() if code not in registered}
    assert not missing, f"audit actions without a label (register them in the app's labels): {missing}"


def test_every_action_code_has_the_object_dot_verb_form_and_its_object_a_group_label():
    objects = labels.registered("audit_object")
    for code in emitted_actions():
        assert re.fullmatch(r"[a-z_]+\.[a-z_]+", code), code
        assert code.split(".")[0] in objects, code


def test_a_label_is_words_in_the_active_language():
    assert labels.label("audit_action", "approval.rollback") == "Version rolled back"
    with translation.override("fr"):
        # Lazy: read in the language of the request that shows it, not the one at start-up.
        assert isinstance(labels.label("audit_action", "approval.rollback"), str)


# --- Details as a diff ------------------------------------------------------------------------------------------


def html(row_value) -> str:
    return row_value.__html__()


def test_a_changed_field_reads_as_old_then_new():
    [row] = rows_of({"role": {"from": "viewer", "to": "admin"}})
    assert row.changed and row.label == "Role"
    assert (html(row.before), html(row.after)) == ("viewer", "admin")


def test_a_change_of_the_whole_leads_and_the_other_details_follow():
    rows = rows_of({"target": "linux/production/x86_64", "from": "1.1", "to": "1.2", "reason": "bad"})
    assert [(row.name, row.changed) for row in rows] == [("change", True), ("target", False), ("reason", False)]
    assert (html(rows[0].before), html(rows[0].after)) == ("1.1", "1.2")


def test_a_new_objects_fields_read_one_a_row():
    rows = rows_of({"fields": {"name": "main", "enabled": True, "mirror": None}})
    assert [(row.label, html(row.value)) for row in rows] == [
        ("Name", "main"),
        ("Enabled", "yes"),
        ("Mirror", '<span class="muted">none</span>'),
    ]


def test_nested_values_read_as_compact_json_escaped():
    [row] = rows_of({"packages": ["linux <b>", {"a": 1}]})
    assert html(row.value) == '<code class="audit-json">[&quot;linux &lt;b&gt;&quot;, {&quot;a&quot;: 1}]</code>'


@pytest.mark.django_db
def test_the_audit_page_shows_labels_and_a_diff_with_secrets_masked(client, admin, viewer):
    channel = AlertChannel.objects.create(name="SOC", url="https://hooks.example.org/T000/B000/XXXX")
    services.record_event(admin, "user.update", viewer, {"role": {"from": "viewer", "to": "operator"}})
    # An old entry written before record_event masked: the page masks it on reading (AuditEvent.shown_details).
    AuditEvent(
        actor_label="alice",
        action="alert_channel.update",
        target_type="portal.alertchannel",
        target_id=str(channel.pk),
        details={"url": {"from": "https://hooks.example.org/T000/B000/OLDSECRET", "to": channel.url}},
    ).save()
    client.force_login(viewer)
    page = client.get("/audit/").content.decode()
    assert '<span class="audit-action" title="user.update">User changed</span>' in page
    assert '<del class="audit-old">viewer</del>' in page and '<ins class="audit-new">operator</ins>' in page
    assert "OLDSECRET" not in page and "XXXX" not in page
    assert "https://hooks.example.org/(hidden)" in page
    assert "{&#x27;role&#x27;" not in page and "{'role'" not in page  # no Python dict any more


@pytest.mark.django_db
def test_the_action_filter_offers_labels_and_still_takes_a_prefix(client, admin, viewer):
    services.record_event(admin, "token.create", None)
    services.record_event(admin, "user.update", viewer, {})
    client.force_login(viewer)
    page = client.get("/audit/").content.decode()
    assert '<option value="token.create">API token created</option>' in page
    assert '<optgroup label="API tokens">' in page
    filtered = client.get("/audit/?action=token").content.decode()
    assert "API token created" in filtered.split("<tbody>")[1] and "User changed" not in filtered.split("<tbody>")[1]


@pytest.mark.django_db
def test_the_audit_log_sorts_by_actor_and_action_and_back(client, make_user, viewer):
    zed, amy = make_user("zed"), make_user("amy")
    services.record_event(zed, "token.create")
    services.record_event(amy, "user.reauthenticate")
    client.force_login(viewer)

    def actors(query):
        # Without the viewer's own sign-in entry.
        events = client.get(f"/audit/{query}").context["object_list"]
        return [event.actor_label for event in events if event.action != "user.sign_in"]

    assert actors("") == ["amy", "zed"]  # newest first by default
    assert actors("?ordering=actor_label") == ["amy", "zed"]
    assert actors("?ordering=-actor_label") == ["zed", "amy"]
    assert actors("?ordering=action") == ["zed", "amy"]  # token.create < user.reauthenticate
    assert actors("?ordering=created") == ["zed", "amy"]
    assert actors("?ordering=ip_address") == ["amy", "zed"]  # not a column: the default
    page = client.get("/audit/?ordering=actor_label").content.decode()
    assert 'aria-sort="ascending"><a class="sort" href="?ordering=-actor_label"' in page


@pytest.mark.django_db
def test_users_and_tokens_sort_by_their_columns(client, admin, make_user):
    make_user("bob"), make_user("carol")
    client.force_login(admin)
    users = [u.username for u, _, _ in client.get("/users/?ordering=-username").context["rows"]]
    assert users == sorted(users, reverse=True)
    response = client.get("/tokens/?ordering=name")
    assert response.status_code == 200 and 'aria-sort="ascending"' in response.content.decode()
