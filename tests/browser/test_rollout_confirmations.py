"""Approve, promote and roll back through their confirmation pages in Chromium (issue 15), checking after each what
the ring's URL serves to an endpoint and what the Groups page says."""

import json

import pytest
from playwright.sync_api import expect

from fleet.models import Endpoint
from fleet.services.rings import approve_package

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

MANIFEST = "/mirror/groups/{slug}/linux/production/arch_x86_64/manifest.json"


def served(page, slug):
    """The definitions version the group's URL serves now, as an endpoint would fetch it."""
    response = page.request.get(MANIFEST.format(slug=slug))
    return json.loads(response.body())["DefinitionVersion"] if response.ok else response.status


def test_approve_promote_and_roll_back_each_through_its_confirmation(
    page, login, operator, make_group, make_package, make_endpoints
):
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    first, second = make_package(), make_package()
    approve_package(pilot, first, operator)
    approve_package(broad, first, operator)
    make_endpoints(pilot, 3, first.definition_version)
    make_endpoints(broad, 2, first.definition_version)
    Endpoint.objects.update(compliance="up_to_date")
    login(operator)

    # Approve: the version list leads to a confirmation that changes nothing until confirmed.
    page.goto("/groups/pilot/")
    versions = page.get_by_label("Version to approve").first
    expect(versions).to_have_value(str(second.pk))  # the newer one, never the older
    page.get_by_role("button", name="Approve…").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Approve {second.definition_version} for Pilot")
    expect(page.locator("#endpoints-changing")).to_contain_text("3 of 3")
    assert served(page, "pilot") == first.definition_version
    page.get_by_role("button", name=f"Approve {second.definition_version}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Pilot")
    assert served(page, "pilot") == second.definition_version

    # Promote: the next ring's confirmation, then its URL serves the version.
    page.get_by_role("button", name="Promote to Broad").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        f"Promote {second.definition_version} from Pilot to Broad"
    )
    expect(page.locator("#endpoints-changing")).to_contain_text("2 of 2")
    page.get_by_role("button", name="Promote to Broad").click()
    assert served(page, "broad") == second.definition_version

    # Roll back: broad serves first again, at once, and the Groups page says so without waiting.
    page.goto("/groups/broad/")
    page.get_by_role("button", name=f"Roll back to {first.definition_version}").first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Roll back Broad to {first.definition_version}")
    expect(page.locator("#downgrade")).to_be_visible()
    page.get_by_role("button", name=f"Roll back to {first.definition_version}").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Broad")
    assert served(page, "broad") == first.definition_version
    assert served(page, "pilot") == second.definition_version
    page.goto("/groups/")
    broad_row = page.get_by_role("row").filter(has=page.get_by_role("link", name="Broad"))
    expect(broad_row).to_contain_text(first.definition_version)
    assert page.external_requests == []


def test_a_package_page_leads_to_the_approve_confirmation(page, login, operator, make_group, make_package):
    make_group("pilot", 10)
    package = make_package()
    login(operator)
    page.goto(f"/mirror/packages/{package.pk}/")
    section = page.locator("section", has=page.get_by_role("heading", name="Approve for a ring"))
    section.get_by_role("link", name="Approve…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(f"Approve {package.definition_version} for Pilot")
    page.get_by_role("button", name=f"Approve {package.definition_version}").click()
    assert served(page, "pilot") == package.definition_version
