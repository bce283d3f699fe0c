"""The simulated fleet enrolls and reports over real HTTP, in every compliance state."""

import pytest
from django.core.management import CommandError, call_command

from fleet.choices import Compliance
from fleet.models import Endpoint, HealthReport
from fleet.services import rings
from standins.fleet import parse_mix

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


def test_bad_arguments_are_one_readable_line(db, make_group):
    with pytest.raises(CommandError, match="no group nope"):
        call_command("simulate_fleet", "--group", "nope")
    with pytest.raises(CommandError, match="unknown profile 'happy'"):
        call_command("simulate_fleet", "--mix", "happy=1")
    with pytest.raises(ValueError, match="whole number"):
        parse_mix("healthy=x")
