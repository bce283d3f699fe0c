"""Every finding code and compliance state people can see has words (issue 15: no raw `not_updated_from_mirror`)."""

import ast
from pathlib import Path

import pytest
from django.template import Context, Template
from django.utils import translation

from core import labels
from fleet.choices import Compliance, FindingCode

FLEET = Path(__file__).resolve().parents[2] / "fleet"
# Where findings are made: the diagnostics' rules, and the findings about the ring, the settings and the config.
EMITTERS = ["diagnostics.py", "compliance.py", "services/ingest.py", "services/config.py"]


def emitted_codes(path: Path) -> set[str]:
    """The FindingCode members a module names (FindingCode.X), read from its source."""
    tree = ast.parse(path.read_text())
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "FindingCode"
    }


def test_the_diagnostics_emit_findings_this_test_can_see():
    assert {"UPDATE_FAILED", "NOT_UPDATED_FROM_MIRROR", "STALE"} <= emitted_codes(FLEET / "diagnostics.py")


@pytest.mark.parametrize("module", EMITTERS)
def test_every_finding_code_a_module_emits_has_a_registered_label(module):
    registered = labels.registered("finding")
    for name in emitted_codes(FLEET / module):
        code = FindingCode[name].value
        assert code in registered, f"{module}: {code} has no label"
        assert str(registered[code]) != code


def test_every_compliance_state_has_a_short_label():
    registered = labels.registered("compliance")
    assert set(registered) == set(Compliance.values)
    assert str(registered[Compliance.MISCONFIGURED]) == "Misconfigured"


def test_templates_show_the_words_not_the_code():
    rendered = Template('{% load words %}{{ code|label:"finding" }}').render(
        Context({"code": "not_updated_from_mirror"})
    )
    assert rendered == "Not updated from the mirror"


def test_labels_follow_the_language():
    with translation.override("fr"):
        french = str(labels.registered("compliance")[Compliance.UP_TO_DATE])
    with translation.override("en"):
        assert str(labels.registered("compliance")[Compliance.UP_TO_DATE]) == "Up to date"
    # The French catalogue is written at the end of issue 15: until then French falls back to English.
    assert french


@pytest.mark.django_db
def test_the_endpoint_list_shows_findings_in_words(client, viewer, make_group, make_endpoints):
    from fleet.models import Endpoint

    make_endpoints(make_group("pilot", 10), 1, "1.407.417.0", prefix="p")
    Endpoint.objects.update(finding_codes=",not_updated_from_mirror,", compliance=Compliance.MISCONFIGURED)
    client.force_login(viewer)
    page = client.get("/groups/endpoints/").content.decode()
    assert "Not updated from the mirror" in page
    assert ">not_updated_from_mirror<" not in page
