"""What machines send is shown to people as plain text: no terminal escapes, no bidi overrides, no spreadsheet
formulas (issue 14, item 13; core.text).

A hostname is enrolled through the API as an attacker would send it, then read where people read it: the
endpoint list's CSV export and an alert's e-mail.
"""

import csv
import io
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from core.text import clean_text, csv_cell
from fleet.models import Endpoint
from fleet.services import enrollment
from portal import alerts, tasks
from portal.choices import AlertChannelKind, AlertRuleKind, DeliveryStatus
from portal.models import AlertChannel, AlertDelivery, AlertRule

RLO = "\u202e"  # RIGHT-TO-LEFT OVERRIDE: "web-01\u202etxt.exe" reads "web-01exe.txt"
ANSI_RED, ANSI_CLEAR = "\x1b[31m", "\x1b[2J"

# --- The helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("web-01", "web-01"),
        ("Zürich-Поддержка-東京", "Zürich-Поддержка-東京"),  # letters of every script stay
        (f"web-01{RLO}txt.exe", "web-01txt.exe"),
        ("a\u2066b\u2069c\u200fd\u061ce", "abcde"),  # isolates and marks too
        (f"{ANSI_RED}web-01{ANSI_CLEAR}", "[31mweb-01[2J"),  # ESC gone: the rest is harmless text
        ("web-01\r\nforged: line", "web-01 forged: line"),
        ("a\x00b\x07c\x7fd\x9be", "abcde"),  # NUL, BEL, DEL and the C1 CSI
        ("", ""),
    ],
)
def test_clean_text_takes_out_control_and_bidi_characters_and_keeps_every_letter(raw, shown):
    assert clean_text(raw) == shown


@pytest.mark.parametrize(
    "value",
    [
        '=HYPERLINK("http://evil")',
        "+1+2",
        "-1+2",
        "@SUM(A1)",
        "\t=1",
        "\r=1",
        '＝HYPERLINK("http://evil")',  # the full-width forms: spreadsheets fold them to ASCII
        "＋1",
        "－1",
        "＠SUM(A1)",
        "﹦1",  # the small form of =
        "  =1+1",  # an importer may trim the blanks
    ],
)
def test_a_csv_cell_that_would_start_a_formula_gets_an_apostrophe(value):
    cell = csv_cell(value)
    assert cell.startswith("'") and cell[1:] == clean_text(value)


@pytest.mark.parametrize("value, cell", [("web-01", "web-01"), ("1.407.417.0", "1.407.417.0"), (None, ""), (7, "7")])
def test_a_csv_cell_of_plain_text_is_unchanged(value, cell):
    assert csv_cell(value) == cell


# --- Where people read them ---------------------------------------------------------------------------------


@pytest.fixture
def ring(make_group):
    return make_group("pilot", 10)


def enroll(ring, machine_id, hostname, **extra):
    """POST /api/v1/enroll, as a machine (or whoever holds the ring's secret) sends it."""
    secret = enrollment.create_enrollment_secret(ring, f"lab-{machine_id}")[1]
    response = APIClient().post(
        "/api/v1/enroll",
        {"secret": secret, "machine_id": machine_id, "hostname": hostname, "platform": "linux", "arch": "x86_64"}
        | extra,
        format="json",
    )
    assert response.status_code == 201, response.content
    return Endpoint.objects.get(pk=response.json()["endpoint"])


def test_an_enrolled_hostname_is_stored_without_bidi_overrides_or_terminal_escapes(ring):
    endpoint = enroll(ring, "m-1", f"  {ANSI_RED}web-01{RLO}txt.exe\r\n", app_version=f"101.{RLO}24032.0007")
    assert (endpoint.hostname, endpoint.app_version) == ("[31mweb-01txt.exe", "101.24032.0007")


def test_the_csv_export_neutralises_formulas_full_width_included_and_shows_no_bidi_override(client, viewer, ring):
    enroll(ring, "m-full", '＝HYPERLINK("http://evil","open")')
    enroll(ring, "m-at", "@SUM(1+1)")
    enroll(ring, "m-rlo", f"web-01{RLO}txt.exe")
    # A row written before ingest cleaned hostnames: the export cleans it too.
    Endpoint.objects.create(machine_id="m-old", hostname=f"{RLO}=1+1", group=ring, platform="linux")
    client.force_login(viewer)
    response = client.get("/groups/endpoints/export.csv", {"group": "pilot"})
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    hostnames = {row[1]: row[0] for row in rows[1:]}
    assert hostnames == {
        "m-full": '\'＝HYPERLINK("http://evil","open")',
        "m-at": "'@SUM(1+1)",
        "m-rlo": "web-01txt.exe",
        "m-old": "'=1+1",
    }


def test_an_alert_naming_endpoints_shows_their_hostnames_without_bidi_or_terminal_control(ring, mailoutbox, settings):
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    long_ago = timezone.now() - timedelta(days=30)
    # Rows as an older portal stored them, before enrollment cleaned hostnames.
    Endpoint.objects.create(
        machine_id="m-1", hostname=f"{ANSI_CLEAR}web-01{RLO}txt.exe", group=ring, platform="linux", last_seen=long_ago
    )
    channel = AlertChannel(name="team", kind=AlertChannelKind.EMAIL, recipients=["sec@example.org"])
    alerts.save_channel(channel)
    made = AlertRule(name="silent", kind=AlertRuleKind.ENDPOINTS_SILENT, days=7, min_endpoints=1)
    made.full_clean(exclude=["channels"])
    alerts.save_rule(made, [channel])
    alerts.evaluate_rule(made)
    for pk in AlertDelivery.objects.values_list("pk", flat=True):
        tasks.deliver_alert.apply(args=[pk])
    assert AlertDelivery.objects.get().status == DeliveryStatus.DELIVERED
    [mail] = mailoutbox
    assert "[2Jweb-01txt.exe" in mail.body
    assert not {RLO, "\x1b"} & set(mail.body + mail.subject)


def test_the_raw_report_is_shown_as_received_with_its_control_and_bidi_characters_named(client, viewer, ring):
    secret = enrollment.create_enrollment_secret(ring, "lab")[1]
    enrolled = APIClient().post(
        "/api/v1/enroll",
        {"secret": secret, "machine_id": "m-1", "hostname": "web-01", "platform": "linux", "arch": "x86_64"},
        format="json",
    )
    body = f'definitions_version : "1.407.417.0"\ndefinitions_update_fail_reason : "{ANSI_CLEAR}disk{RLO}full"\n'
    posted = APIClient().generic(
        "POST",
        "/api/v1/reports",
        body.encode(),
        content_type="text/plain",
        HTTP_AUTHORIZATION=f"Bearer {enrolled.json()['token']}",
    )
    assert posted.status_code == 201, posted.content
    client.force_login(viewer)
    page = client.get(f"/groups/endpoints/{enrolled.json()['endpoint']}/").content.decode()
    assert "⟨U+001B⟩[2Jdisk⟨U+202E⟩full" in page
    assert not {RLO, "\x1b"} & set(page)
