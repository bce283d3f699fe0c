"""Sortable columns on the endpoint list, with keyset (cursor) pages that stay right in every order (issue 15)."""

import csv
import io
import re
from datetime import timedelta

import pytest
from django.utils import timezone

from fleet.choices import Compliance
from fleet.models import Endpoint
from fleet.views import ENDPOINT_SORTS, EndpointListView, sorted_endpoints

pytestmark = pytest.mark.django_db

LIST = "/groups/endpoints/"
ROW = re.compile(r'<a href="/groups/endpoints/(\d+)/">')


@pytest.fixture
def fleet(make_group, settings, monkeypatch):
    """23 endpoints in two groups with many equal values (the cursor's id must break the ties), 4 a page."""
    monkeypatch.setattr(EndpointListView, "page_size", 4)
    pilot, broad = make_group("pilot", 10), make_group("broad", 20)
    now = timezone.now()
    versions = ["1.407.417.0", "1.407.418.0", "1.407.419.0", ""]
    states = [Compliance.UP_TO_DATE, Compliance.FAILING, Compliance.BEHIND]
    Endpoint.objects.bulk_create(
        Endpoint(
            machine_id=f"machine-{i}",
            hostname=f"host-{i % 5}",
            group=pilot if i % 3 else broad,
            platform="linux",
            definitions_version=versions[i % 4],
            compliance=states[i % 3],
            last_seen=None if i % 7 == 0 else now - timedelta(hours=i % 4),
        )
        for i in range(23)
    )
    return pilot, broad


def next_url(page: str, rel="next") -> str | None:
    found = re.search(rf'<a href="(\?[^"]*)" rel="{rel}">', page)
    return LIST + found.group(1).replace("&amp;", "&") if found else None


def walk(client, ordering):
    """Every page's row ids, following the Next links."""
    pages, url = [], f"{LIST}?ordering={ordering}"
    while url:
        page = client.get(url).content.decode()
        pages.append([int(pk) for pk in ROW.findall(page)])
        url = next_url(page)
    return pages


def expected(ordering):
    return list(sorted_endpoints(Endpoint.objects.all(), ordering).values_list("pk", flat=True))


@pytest.mark.parametrize("column", list(ENDPOINT_SORTS))
@pytest.mark.parametrize("descending", [False, True])
def test_walking_every_page_gives_every_endpoint_once_in_order(client, viewer, fleet, column, descending):
    ordering = f"-{column}" if descending else column
    client.force_login(viewer)
    pages = walk(client, ordering)
    seen = [pk for page in pages for pk in page]
    assert seen == expected(ordering)
    assert len(seen) == len(set(seen)) == 23
    assert [len(page) for page in pages] == [4, 4, 4, 4, 4, 3]


@pytest.mark.parametrize("ordering", ["-version", "last_seen", "state"])
def test_the_previous_link_goes_back_to_the_same_rows(client, viewer, fleet, ordering):
    client.force_login(viewer)
    first = client.get(f"{LIST}?ordering={ordering}").content.decode()
    second = client.get(next_url(first)).content.decode()
    third = client.get(next_url(second)).content.decode()
    back = client.get(next_url(third, "prev")).content.decode()
    assert ROW.findall(back) == ROW.findall(second)


def test_sorting_by_version_puts_the_newest_first_when_descending(client, viewer, fleet):
    client.force_login(viewer)
    page = client.get(f"{LIST}?ordering=-version").content.decode()
    first = Endpoint.objects.get(pk=ROW.findall(page)[0])
    assert first.definitions_version == "1.407.419.0"


def test_sorting_by_state_puts_the_worst_first(client, viewer, fleet):
    client.force_login(viewer)
    page = client.get(f"{LIST}?ordering=state").content.decode()
    assert Endpoint.objects.get(pk=ROW.findall(page)[0]).compliance == Compliance.FAILING


def test_the_headers_sort_and_say_which_way(client, viewer, fleet):
    client.force_login(viewer)
    page = client.get(f"{LIST}?ordering=-last_seen&group=pilot").content.decode()
    assert 'aria-sort="descending"><a class="sort" href="?ordering=last_seen&amp;group=pilot"' in page
    assert 'href="?ordering=version&amp;group=pilot"' in page


def test_an_unknown_ordering_or_a_malformed_cursor_falls_back_to_the_first_page(client, viewer, fleet):
    client.force_login(viewer)
    for query in ("ordering=machine_id", "ordering=last_seen&after=yesterday|3", "ordering=state&after=x|1"):
        response = client.get(f"{LIST}?{query}")
        assert response.status_code == 200
        assert len(ROW.findall(response.content.decode())) == 4
        assert 'rel="prev"' not in response.content.decode()


def test_the_csv_export_follows_the_lists_order(client, viewer, fleet):
    client.force_login(viewer)
    body = b"".join(client.get(f"{LIST}export.csv?ordering=-version").streaming_content).decode()
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [row["machine_id"] for row in rows] == list(
        Endpoint.objects.filter(pk__in=expected("-version"))
        .order_by("-definitions_version", "-pk")
        .values_list("machine_id", flat=True)
    )
