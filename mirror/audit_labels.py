"""The audit log's words for what mirror records (upstreams, mirrors, syncs, packages, bundles); registered from
mirror.apps. tests/core/test_audit_words.py checks every action mirror emits has one."""

from django.utils.translation import gettext_lazy as _

from core import labels


def register() -> None:
    labels.register(
        "audit_action",
        {
            "upstream.create": _("Upstream created"),
            "upstream.update": _("Upstream changed"),
            "upstream.delete": _("Upstream deleted"),
            "upstream.withdrew": _("Upstream withdrew a version"),
            "mirror.create": _("Mirror created"),
            "mirror.update": _("Mirror changed"),
            "mirror.delete": _("Mirror deleted"),
            "mirror.sync": _("Sync started"),
            "mirror.bundle_export": _("Bundle exported"),
            "mirror.bundle_import": _("Bundle imported"),
            "mirror.bundle_import_refused": _("Bundle import refused"),
            "mirror.tree_import": _("Folder imported"),
            "mirror.tree_import_refused": _("Folder import refused"),
            "package.import": _("Package imported"),
            "package.conflict": _("Package conflicts with the upstream's"),
            "package.prune": _("Old packages pruned"),
            "bundle_key.add": _("Bundle signing key trusted"),
            "bundle_key.remove": _("Bundle signing key removed"),
        },
    )

    labels.register(
        "audit_object",
        {
            "upstream": _("Upstreams"),
            "mirror": _("Mirrors"),
            "package": _("Packages"),
            "bundle_key": _("Bundle signing keys"),
        },
    )

    labels.register(
        "audit_field",
        {
            "base_url": _("Base URL"),
            "proxy_url": _("Proxy URL"),
            "public_base_url": _("Public base URL"),
            "bytes_freed": _("Bytes freed"),
            "imported_sha256": _("Imported SHA-256"),
            "upstream_sha256": _("Upstream's SHA-256"),
            "key_id": _("Key ID"),
        },
    )
