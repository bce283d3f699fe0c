"""Issue 17: raw reports are stored deflated against a dictionary of mdatp's output (fleet.fields), and read back exactly."""

import hashlib
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from fleet import fields
from fleet.models import Endpoint, HealthReport
from fleet.services import ingest
from tests.samples import health_text

FIXTURES = Path(__file__).parent / "fixtures" / "mdatp"


def stored_bytes(pk) -> bytes:
    with connection.cursor() as cursor:
        cursor.execute("SELECT raw FROM fleet_healthreport WHERE id = %s", [pk])
        return bytes(cursor.fetchone()[0])


def another_machine(text: str) -> str:
    """A body as a different machine of a different site sends it: ids and URLs the dictionary has never seen."""
    for old in ("4f6c1d2e-8a9b-4c3d-9e8f-1a2b3c4d5e6f", "d1e2f3a4-0000-4000-8000-00000000a11c"):
        text = text.replace(old, str(uuid.uuid4()))
    return text.replace("anonymized-edr-machine-id", uuid.uuid4().hex + "0a1b2c3d").replace(
        "mirror.example.lan", "defender.site-42.corp.example"
    )


@pytest.mark.parametrize(
    "name", sorted(p.name for p in FIXTURES.iterdir() if p.suffix in (".txt", ".json") and "features" not in p.name)
)
def test_every_form_round_trips_and_stores_in_a_fraction_of_its_size(name):
    text = another_machine((FIXTURES / name).read_text())
    packed = fields.pack(text)
    assert packed[:1] == fields.DEFLATE_V1
    assert fields.unpack(packed) == text
    assert len(packed) < len(text) / 4, (len(packed), len(text))


def test_text_the_dictionary_never_saw_still_round_trips():
    text = "héllo ⟨U+202E⟩ \x00 binary-ish\n" * 50 + "".join(chr(c) for c in range(32, 2000))
    assert fields.unpack(fields.pack(text)) == text


def test_plain_tagged_bodies_read_as_they_are_and_bad_bytes_say_what_is_wrong():
    assert fields.unpack(b"Phealthy : true\n") == "healthy : true\n"
    with pytest.raises(fields.ReportFormatError, match="not a format this version reads"):
        fields.unpack(b"9abc")
    with pytest.raises(fields.ReportFormatError, match="cannot be inflated"):
        fields.unpack(fields.DEFLATE_V1 + b"\xff\xff\xff\xff")
    with pytest.raises(fields.ReportFormatError, match="cut short"):
        fields.unpack(fields.pack("healthy : true\n" * 100)[:-5])


def test_the_dictionary_is_the_one_stored_reports_were_packed_with():
    # Editing it would make every stored report unreadable: a better dictionary is a new tag.
    name, sha256 = fields.DICTIONARIES[fields.DEFLATE_V1]
    assert hashlib.sha256((Path(fields.__file__).parent / name).read_bytes()).hexdigest() == sha256


@pytest.mark.django_db
def test_the_report_path_stores_the_body_packed_and_the_api_and_page_show_it_as_sent(
    endpoint, pilot, api, viewer, client
):
    machine_guid = str(uuid.uuid4())
    body = health_text(pilot, machine_guid=f'"{machine_guid}"')
    accepted = ingest.ingest_report(Endpoint.objects.get(pk=endpoint.pk), body.encode(), minute=0)
    stored = stored_bytes(accepted.report.pk)
    assert stored[:1] == fields.DEFLATE_V1 and len(stored) < len(body) / 4
    assert HealthReport.objects.get(pk=accepted.report.pk).raw == body
    answer = api.as_user(viewer).get(f"/api/v1/endpoints/{endpoint.pk}/reports/")
    assert answer.status_code == 200, answer.content
    assert answer.json()["results"][0]["raw"] == body
    assert answer.json()["results"][0]["parsed"]["definitions_version"]
    client.force_login(viewer)
    assert machine_guid in client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()


@pytest.mark.django_db(transaction=True)
def test_the_migration_keeps_existing_reports_readable(endpoint, pilot):
    """Reports stored as text before 0011 read back exactly after it (tagged plain, not rewritten)."""
    body = health_text(pilot) + "\nnon-ASCII: é ü ⟨U+202E⟩\n"
    executor = MigrationExecutor(connection)
    target = [("fleet", "0011_packed_reports")]
    before = executor.loader.graph.node_map[target[0]].parents
    (previous,) = [p.key for p in before if p.key[0] == "fleet"]
    executor.migrate([previous])
    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO fleet_healthreport (endpoint_id, received_at, form, raw, definitions_version, compliance, "
                "finding_codes) VALUES (%s, %s, 'text', %s, '1.407.417.0', 'up_to_date', '')",
                [
                    endpoint.pk,
                    "2026-12-01 10:00:00+00:00" if connection.vendor == "postgresql" else "2026-12-01 10:00:00",
                    body,
                ],
            )
    finally:
        executor = MigrationExecutor(connection)
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes("fleet"))
    report = HealthReport.objects.get(endpoint=endpoint)
    assert report.raw == body
    assert stored_bytes(report.pk)[:1] == fields.PLAIN
    assert report.parsed["definitions_version"] == "1.407.417.0"


@pytest.mark.django_db
def test_a_damaged_stored_report_shows_what_is_wrong_instead_of_failing_the_page_and_the_api(
    endpoint, pilot, api, viewer, client
):
    accepted = ingest.ingest_report(Endpoint.objects.get(pk=endpoint.pk), health_text(pilot).encode(), minute=0)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE fleet_healthreport SET raw = %s WHERE id = %s", [b"1\xff\xff\xff", accepted.report.pk])
    report = HealthReport.objects.get(pk=accepted.report.pk)
    assert report.raw.startswith("(this stored report cannot be read: a stored report cannot be inflated")
    assert "error" in report.parsed
    answer = api.as_user(viewer).get(f"/api/v1/endpoints/{endpoint.pk}/reports/")
    assert answer.status_code == 200, answer.content
    assert answer.json()["results"][0]["raw"].startswith("(this stored report cannot be read")
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/")
    assert page.status_code == 200 and "this stored report cannot be read" in page.content.decode()
