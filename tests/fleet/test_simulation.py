"""The simulated fleet enrolls and reports over real HTTP, in every compliance state, sending what the agent sends."""

import json
import random

import pytest
from django.core.management import CommandError, call_command

from fleet.choices import Compliance
from fleet.health import parse_health
from fleet.models import Endpoint, HealthReport, IdentityConflict
from fleet.services import rings
from standins.fleet import SimulatedEndpoint, parse_mix

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_simulate_fleet_enrolls_and_reports_a_realistic_mix(live_server, make_group, make_package, operator, settings):
    settings.ALLOWED_HOSTS = ["*"]
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    rings.approve_package(pilot, make_package(definition="1.407.450.0"), operator)
    rings.approve_package(broad, make_package(definition="1.407.440.0"), operator)
    call_command("simulate_fleet", "--endpoints", "60", "--url", live_server.url, "--rounds", "1", "--seed", "3")
    assert Endpoint.objects.count() == 60
    states = set(Endpoint.objects.values_list("compliance", flat=True))
    assert {
        Compliance.UP_TO_DATE,
        Compliance.BEHIND,
        Compliance.FAILING,
        Compliance.MISCONFIGURED,
        Compliance.STALE,
        Compliance.NEW,
    } <= states
    assert HealthReport.objects.count() == Endpoint.objects.exclude(compliance=Compliance.NEW).count()
    assert (
        Endpoint.objects.filter(group=pilot, compliance=Compliance.UP_TO_DATE).first().definitions_version
        == "1.407.450.0"
    )
    # What the agent sends: both outputs of mdatp, as the JSON envelope or as text sections.
    raws = list(HealthReport.objects.values_list("raw", flat=True))
    envelopes = [json.loads(raw) for raw in raws if raw.startswith("{")]
    sectioned = [raw for raw in raws if raw.startswith("$ mdatp health\n")]
    assert envelopes and sectioned and len(envelopes) + len(sectioned) == len(raws)
    assert all(e["$type"] == "mdeOfflineAgentReport" and e["health"] and e["definitions"] for e in envelopes)
    assert all("\n$ mdatp health --details definitions\n" in raw for raw in sectioned)
    assert not Endpoint.objects.filter(finding_codes__contains="definitions_details_missing").exists()
    # Agents from 101.26062.0005 print DEPRECATED and are not misconfigured for it.
    new = Endpoint.objects.filter(app_version="101.26062.0005", compliance=Compliance.UP_TO_DATE)
    assert new.exists() and {e.verify_sig for e in new} == {"DEPRECATED"}


def test_a_second_run_of_the_same_fleet_keeps_its_tokens_and_enrolls_nothing_again(
    live_server, make_group, tmp_path, settings, capsys
):
    """As real agents keep their token file: an enrollment secret never re-keys a machine (it would be a claim)."""
    settings.ALLOWED_HOSTS = ["*"]
    make_group("pilot", 10)
    tokens = tmp_path / "tokens.json"
    arguments = ("simulate_fleet", "--endpoints", "12", "--url", live_server.url, "--rounds", "1", "--seed", "5")
    call_command(*arguments, "--tokens", str(tokens))
    assert "enrolled 12 endpoints" in capsys.readouterr().out
    assert tokens.stat().st_mode & 0o777 == 0o600
    reports = HealthReport.objects.count()

    call_command(*arguments, "--tokens", str(tokens))
    assert "enrolled 0 endpoints in pilot" in capsys.readouterr().out
    assert Endpoint.objects.count() == 12 and HealthReport.objects.count() > reports
    assert not IdentityConflict.objects.exists()

    # Without the tokens the same machines are claims an operator must decide, and the run says so.
    with pytest.raises(CommandError, match="HTTP 202: .*identity conflict") as refused:
        call_command(*arguments)
    assert "mde_ep_" not in str(refused.value)  # the claim's token is not printed


@pytest.mark.parametrize("form", ["json", "text"])
def test_a_simulated_endpoints_report_is_what_the_real_cli_prints_for_its_profile(form):
    url = "http://portal.lan/mirror/groups/pilot/linux/production/"
    endpoint = SimulatedEndpoint(
        "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59", "web-1", "pilot", "misconfigured", "t", url, form=form
    )

    body, content_type = endpoint.report("1.407.450.0", random.Random(1))
    health = parse_health(body)

    assert content_type.startswith("application/json" if form == "json" else "text/plain")
    assert health.sections == ["health", "definitions"] and health.definitions_details
    assert health.machine_guid == endpoint.machine_id and health.definitions_version == "1.407.450.0"
    assert "/old-groups/" in health.offline_url_configured and "go.microsoft.com" in health.update_source_uri
    assert "offline_definition_url_configured" in health.managed_keys


def test_bad_arguments_are_one_readable_line(db, make_group):
    with pytest.raises(CommandError, match="no group nope"):
        call_command("simulate_fleet", "--group", "nope")
    with pytest.raises(CommandError, match="unknown profile 'happy'"):
        call_command("simulate_fleet", "--mix", "happy=1")
    with pytest.raises(ValueError, match="whole number"):
        parse_mix("healthy=x")
