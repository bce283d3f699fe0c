"""What several mirror test modules do: one manual sync run to its end, and a fingerprint of a published tree."""

import hashlib

from mirror.choices import SyncTrigger
from mirror.services.sync import request_sync, run_sync


def sync(mirror):
    run, created = request_sync(mirror, SyncTrigger.MANUAL)
    assert created
    return run_sync(run.pk)


def tree_snapshot(root):
    """Every published path and the sha256 of what it serves."""
    # Explicit pattern: the layout's files only (a ring's tree lives below a mirror's, under groups/).
    files = {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.glob("*/*/arch_*/*"))
        if path.is_file()
    }
    assert files, f"nothing published under {root}"
    return files
