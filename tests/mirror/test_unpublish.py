"""Issue 14, item 10: a deleted mirror's tree, or the tree at a publish root it left, must not stay served.

nginx serves the published trees from disk without asking the portal (tests/deploy/test_nginx.py shows it for a
deleted mirror), so what is not to be served must not be on disk.
"""

from core.models import AuditEvent
from fleet.models import EndpointGroup
from fleet.services.rings import approve_package, save_group
from mirror.models import Mirror, SignaturePackage
from tests.mirror.helpers import sync, tree_snapshot

ZIP = "linux/production/arch_x86_64/updates.zip"


def test_deleting_a_mirror_through_the_api_removes_its_published_tree(
    api, admin, make_mirror, standin, django_capture_on_commit_callbacks
):
    mirror = make_mirror("gone")
    other = make_mirror("kept")
    sync(mirror), sync(other)
    root = mirror.publish_path
    assert (root / ZIP).is_file()

    with django_capture_on_commit_callbacks(execute=True):  # the tree goes once the delete is committed
        assert api.as_user(admin).delete(f"/api/v1/mirrors/{mirror.pk}/").status_code == 204

    assert not root.exists()
    assert tree_snapshot(other.publish_path)[ZIP]  # another mirror's tree stays
    assert AuditEvent.objects.get(action="mirror.delete").details["unpublished"] == str(root)
    assert SignaturePackage.objects.get().path.is_file()  # the store keeps the package (retention decides)


def test_deleting_a_mirror_keeps_what_else_its_publish_root_holds(
    client, admin, make_mirror, standin, tmp_path, django_capture_on_commit_callbacks
):
    shared = tmp_path / "www"
    mirror = make_mirror("gone", publish_root=str(shared))
    sync(mirror)
    (shared / "index.html").write_text("another site's page")

    client.force_login(admin)
    with django_capture_on_commit_callbacks(execute=True):
        client.post("/mirror/gone/delete/")

    assert not Mirror.objects.exists()
    assert sorted(p.name for p in shared.iterdir()) == ["index.html"]


def test_a_mirror_in_use_is_not_deleted_and_keeps_its_tree(api, admin, make_mirror, standin):
    mirror = make_mirror()
    sync(mirror)
    save_group(EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"]))

    assert api.as_user(admin).delete(f"/api/v1/mirrors/{mirror.pk}/").status_code == 409

    assert (mirror.publish_path / ZIP).is_file()


def test_a_new_publish_root_takes_the_mirrors_and_its_rings_trees_and_the_old_root_serves_nothing(
    api, admin, make_mirror, standin, tmp_path
):
    mirror = make_mirror(publish_root=str(tmp_path / "old"))
    sync(mirror)
    pilot = save_group(EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"]))
    approve_package(pilot, SignaturePackage.objects.get())
    before = tree_snapshot(mirror.publish_path)
    ring_before = tree_snapshot(pilot.tree_path)

    response = api.as_user(admin).patch(
        f"/api/v1/mirrors/{mirror.pk}/", {"publish_root": str(tmp_path / "new")}, format="json"
    )

    assert response.status_code == 200, response.json()
    mirror.refresh_from_db()
    pilot.refresh_from_db()
    assert mirror.publish_path == tmp_path / "new"
    assert tree_snapshot(mirror.publish_path) == before
    assert tree_snapshot(pilot.tree_path) == ring_before and pilot.tree_path.is_relative_to(tmp_path / "new")
    assert not (tmp_path / "old").exists()
    assert api.get(f"/mirror/{mirror.slug}/{ZIP}").status_code == 200


def test_a_publish_root_inside_the_old_one_is_refused_and_nothing_moves(api, admin, make_mirror, standin, tmp_path):
    mirror = make_mirror(publish_root=str(tmp_path / "old"))
    sync(mirror)

    response = api.as_user(admin).patch(
        f"/api/v1/mirrors/{mirror.pk}/", {"publish_root": str(tmp_path / "old" / "inner")}, format="json"
    )

    assert response.status_code == 400
    assert "outside" in response.json()["errors"]["publish_root"][0]
    mirror.refresh_from_db()
    assert mirror.publish_root == str(tmp_path / "old") and (mirror.publish_path / ZIP).is_file()
