"""Several endpoints at once from the list: move to a group or decommission, through a confirmation page (issue 15)."""

import pytest
from django.contrib.messages import get_messages

from core.errors import Refused
from core.models import AuditEvent
from fleet.models import Endpoint
from fleet.services import endpoints as bulk

pytestmark = pytest.mark.django_db

LIST = "/groups/endpoints/"
BULK = "/groups/endpoints/bulk/"


def messages_of(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


@pytest.fixture
def fleet(make_group, make_endpoints):
    """pilot: 3 linux endpoints; broad: 2 linux; macs: 1 mac (a group without linux)."""
    pilot, broad, macs = make_group("pilot", 10), make_group("broad", 20), make_group("macs", 30, platforms=("mac",))
    make_endpoints(pilot, 3, "1.407.418.0", prefix="pilot")
    make_endpoints(broad, 2, "1.407.418.0", prefix="broad")
    make_endpoints(macs, 1, "", platform="mac", prefix="mac")
    return pilot, broad, macs


def ids(prefix) -> list[str]:
    return [str(pk) for pk in Endpoint.objects.filter(hostname__startswith=prefix).values_list("pk", flat=True)]


# --- The service ---------------------------------------------------------------------------------


def test_a_bulk_move_moves_each_endpoint_and_audits_each_one(fleet, operator):
    pilot, broad, _macs = fleet
    plan = bulk.apply_bulk("move", bulk.parse_selection(ids("pilot")), operator, group=broad)
    assert len(plan.change) == 3
    assert Endpoint.objects.filter(group=broad).count() == 5
    events = AuditEvent.objects.filter(action="endpoint.move")
    assert events.count() == 3
    assert {event.details["to"] for event in events} == {"broad"}


def test_endpoints_already_in_the_group_are_left_as_they_are(fleet, operator):
    pilot, broad, _macs = fleet
    plan = bulk.apply_bulk("move", bulk.parse_selection(ids("pilot") + ids("broad")), operator, group=broad)
    assert (len(plan.change), len(plan.unchanged)) == (3, 2)
    assert AuditEvent.objects.filter(action="endpoint.move").count() == 3


def test_a_move_the_group_cannot_take_changes_nothing_at_all(fleet, operator):
    pilot, _broad, macs = fleet
    with pytest.raises(Refused, match="cannot be moved"):
        bulk.apply_bulk("move", bulk.parse_selection(ids("pilot") + ids("mac")), operator, group=pilot)
    # The mac endpoint refuses the whole selection: the linux ones did not move either (one transaction).
    assert Endpoint.objects.get(hostname__startswith="mac").group == macs
    assert not AuditEvent.objects.filter(action="endpoint.move").exists()


def test_a_bulk_decommission_revokes_every_token_and_skips_the_decommissioned(fleet, operator):
    first = Endpoint.objects.filter(hostname__startswith="pilot").first()
    bulk.apply_bulk("decommission", [first.pk], operator)
    plan = bulk.apply_bulk("decommission", bulk.parse_selection(ids("pilot")), operator)
    assert (len(plan.change), len(plan.unchanged)) == (2, 1)
    assert not Endpoint.objects.filter(hostname__startswith="pilot", decommissioned_at__isnull=True).exists()
    assert AuditEvent.objects.filter(action="endpoint.decommission").count() == 3


def test_a_selection_with_a_vanished_endpoint_is_refused(fleet, operator):
    selection = ids("pilot")
    Endpoint.objects.filter(pk=selection[0]).delete()
    with pytest.raises(Refused, match="no longer exists"):
        bulk.apply_bulk("decommission", bulk.parse_selection(selection), operator)
    assert not Endpoint.objects.filter(decommissioned_at__isnull=False).exists()


@pytest.mark.parametrize("selection", [[], ["12", "x"], ["-3"], [str(n) for n in range(1, bulk.MAX_SELECTION + 2)]])
def test_an_empty_malformed_or_oversized_selection_is_refused(selection):
    with pytest.raises(Refused):
        bulk.parse_selection(selection)


# --- The pages ------------------------------------------------------------------------------------


def test_the_list_offers_checkboxes_and_the_actions_to_operators_only(client, fleet, operator, viewer):
    client.force_login(operator)
    page = client.get(LIST).content.decode()
    assert page.count('name="endpoint"') == 6
    assert "data-select-all" in page and f'action="{BULK}"' in page
    client.force_login(viewer)
    page = client.get(LIST).content.decode()
    assert 'name="endpoint"' not in page and BULK not in page


def test_the_confirmation_page_lists_the_selection_and_what_happens(client, fleet, operator):
    _pilot, broad, _macs = fleet
    client.force_login(operator)
    response = client.get(BULK, {"action": "move", "group": "broad", "endpoint": ids("pilot"), "back": "group=pilot"})
    page = response.content.decode()
    assert response.status_code == 200
    assert "Move 3 endpoints to Broad" in page
    for hostname in Endpoint.objects.filter(hostname__startswith="pilot").values_list("hostname", flat=True):
        assert hostname in page
    assert "mirror URL and policy" in page
    # Nothing moved by looking at the page.
    assert Endpoint.objects.filter(group=broad).count() == 2


def test_confirming_moves_the_selection_and_goes_back_to_the_list(client, fleet, operator):
    _pilot, broad, _macs = fleet
    client.force_login(operator)
    response = client.post(BULK, {"action": "move", "group": "broad", "endpoint": ids("pilot"), "back": "group=pilot"})
    assert response.status_code == 302 and response["Location"] == f"{LIST}?group=pilot"
    assert Endpoint.objects.filter(group=broad).count() == 5
    assert "3 endpoints moved to Broad" in messages_of(response)[0]


def test_the_confirmation_page_says_which_endpoints_cannot_be_moved_and_offers_no_button(client, fleet, operator):
    client.force_login(operator)
    page = client.get(BULK, {"action": "move", "group": "pilot", "endpoint": ids("pilot") + ids("mac")}).content
    page = page.decode()
    assert "cannot be moved: Pilot has no mac endpoints" in page
    assert 'type="submit"' not in page.split('action="/groups/endpoints/bulk/"')[1]


def test_confirming_a_decommission(client, fleet, operator):
    client.force_login(operator)
    page = client.get(BULK, {"action": "decommission", "endpoint": ids("broad")}).content.decode()
    assert "Decommission 2 endpoints" in page and "tokens stop working" in page
    response = client.post(BULK, {"action": "decommission", "endpoint": ids("broad")})
    assert response.status_code == 302
    assert Endpoint.objects.filter(decommissioned_at__isnull=False).count() == 2


def test_a_vanished_endpoint_or_a_missing_group_is_refused_with_a_message(client, fleet, operator):
    client.force_login(operator)
    response = client.post(BULK, {"action": "decommission", "endpoint": ["999999"]})
    assert response.status_code == 302 and response["Location"] == LIST
    assert "no longer exists" in messages_of(response)[0]
    response = client.get(BULK, {"action": "move", "group": "nowhere", "endpoint": ids("pilot")})
    assert "Choose the group" in messages_of(response)[-1]
    assert not AuditEvent.objects.filter(action__startswith="endpoint.").exists()


def test_the_back_link_never_leaves_the_list(client, fleet, operator):
    client.force_login(operator)
    response = client.post(BULK, {"action": "decommission", "endpoint": ids("broad"), "back": "//evil.example/"})
    assert response["Location"] == LIST


def test_viewers_can_neither_see_nor_post_the_bulk_actions(client, fleet, viewer):
    client.force_login(viewer)
    assert client.get(BULK, {"action": "decommission", "endpoint": ids("broad")}).status_code == 403
    assert client.post(BULK, {"action": "decommission", "endpoint": ids("broad")}).status_code == 403
    assert not Endpoint.objects.filter(decommissioned_at__isnull=False).exists()


# --- The API (the same service) -------------------------------------------------------------------


def test_the_api_moves_several_endpoints_at_once(api, fleet, operator):
    _pilot, broad, _macs = fleet
    selection = [int(pk) for pk in ids("pilot")]
    response = api.as_user(operator).post(
        "/api/v1/endpoints/bulk/", {"action": "move", "endpoints": selection, "group": "broad"}, format="json"
    )
    assert response.status_code == 200, response.content
    assert sorted(response.json()["changed"]) == sorted(selection)
    assert Endpoint.objects.filter(group=broad).count() == 5


def test_the_api_refuses_a_selection_the_group_cannot_take_and_changes_nothing(api, fleet, operator):
    selection = [int(pk) for pk in ids("pilot") + ids("mac")]
    response = api.as_user(operator).post(
        "/api/v1/endpoints/bulk/", {"action": "move", "endpoints": selection, "group": "pilot"}, format="json"
    )
    assert response.status_code == 400
    assert "cannot be moved" in response.content.decode()
    assert not AuditEvent.objects.filter(action="endpoint.move").exists()


def test_viewers_cannot_use_the_bulk_api(api, fleet, viewer):
    response = api.as_user(viewer).post(
        "/api/v1/endpoints/bulk/",
        {"action": "decommission", "endpoints": [int(pk) for pk in ids("pilot")]},
        format="json",
    )
    assert response.status_code == 403
    assert not Endpoint.objects.filter(decommissioned_at__isnull=False).exists()
