from datetime import timedelta

import pytest
from django.utils import timezone

from core import services
from core.models import AuditEvent, ImmutableRecordError

pytestmark = pytest.mark.django_db


def test_record_event_keeps_who_what_and_which_object(admin, viewer):
    event = services.record_event(admin, "user.update", viewer, {"role": {"from": "viewer", "to": "operator"}})
    event.refresh_from_db()
    assert (event.actor, event.actor_label, event.action) == (admin, "alice", "user.update")
    assert (event.target_type, event.target_id, event.target_label) == ("auth.user", str(viewer.pk), "victor")
    assert event.details["role"]["to"] == "operator"


def test_an_event_without_an_actor_is_recorded_as_the_system():
    assert services.record_event(None, "mirror.sync").actor_label == "system"


def test_the_actor_name_survives_the_user(admin):
    event = services.record_event(admin, "token.create")
    admin.delete()
    event.refresh_from_db()
    assert event.actor is None and event.actor_label == "alice"


def test_audit_entries_cannot_be_changed_or_deleted(admin):
    event = services.record_event(admin, "token.create")
    event.action = "something.else"
    with pytest.raises(ImmutableRecordError):
        event.save()
    with pytest.raises(ImmutableRecordError):
        event.delete()
    with pytest.raises(ImmutableRecordError):
        AuditEvent.objects.filter(pk=event.pk).update(action="x")
    with pytest.raises(ImmutableRecordError):
        AuditEvent.objects.all().delete()
    assert AuditEvent.objects.get(pk=event.pk).action == "token.create"


def test_the_api_offers_no_way_to_change_an_entry(api, admin):
    event = services.record_event(admin, "token.create")
    api.as_user(admin)
    before = AuditEvent.objects.count()  # the entry and the sign-in's
    url = f"/api/v1/audit-events/{event.pk}/"
    assert api.get(url).json()["action"] == "token.create"
    for method in (api.put, api.patch, api.delete):
        assert method(url, {"action": "x"}, format="json").status_code == 405
    assert api.post("/api/v1/audit-events/", {"action": "x"}, format="json").status_code == 405
    assert AuditEvent.objects.count() == before


def test_the_api_filters_by_actor_action_and_time(api, admin, operator):
    services.record_event(admin, "user.create")
    services.record_event(operator, "token.create")
    services.record_event(operator, "token.revoke")
    services.record_event(operator, "token.create")
    api.as_user(admin)
    assert api.get("/api/v1/audit-events/?actor=oscar").json()["count"] == 3
    assert api.get("/api/v1/audit-events/?action=token").json()["count"] == 3
    assert api.get("/api/v1/audit-events/?action=token.revoke").json()["count"] == 1
    future = (timezone.now() + timedelta(hours=1)).isoformat()
    assert api.get("/api/v1/audit-events/", {"since": future}).json()["count"] == 0
    assert api.get("/api/v1/audit-events/", {"until": future}).json()["count"] == 5  # and alice's sign-in


def test_a_malformed_filter_gets_a_400_that_names_the_field(api, admin):
    response = api.as_user(admin).get("/api/v1/audit-events/?since=yesterday")
    assert response.status_code == 400
    assert "since" in response.json()["errors"]


def test_the_audit_page_lists_and_filters_entries(client, viewer, admin):
    services.record_event(admin, "user.create", viewer)
    services.record_event(admin, "token.create")
    client.force_login(viewer)
    page = client.get("/audit/?action=user").content.decode()
    assert 'title="user.create">User created<' in page and 'title="token.create"' not in page
    assert "victor" in page


def test_a_time_filter_is_read_in_utc_whatever_its_offset(api, admin):
    # PostgreSQL refuses offsets over ±15:59 (a 500 there); Python reads up to ±23:59.
    services.record_event(admin, "token.create")
    api.as_user(admin)
    # The entry and alice's sign-in.
    assert api.get("/api/v1/audit-events/", {"since": "2000-01-01T00:00:00-22:22"}).json()["count"] == 2
    assert api.get("/api/v1/audit-events/", {"until": "8513-06-03T00:43:39+23:30"}).json()["count"] == 2
    response = api.get("/api/v1/audit-events/", {"until": "9999-12-31T23:00:00-05:00"})
    assert response.status_code == 400 and response.json()["errors"] == {
        "until": ["This date and time is out of range."]
    }
