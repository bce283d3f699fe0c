"""The Celery app: broker and schedule come from Django settings (CELERY_*)."""

import os
from pathlib import Path

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "portal.settings")

app = Celery("portal")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_configure.connect
def make_broker_folders(sender, source, **kwargs):
    """The embedded broker (kombu's filesystem transport) reads and writes message files in folders it does not
    create; they are made when a process (web, worker, beat) first uses the Celery app, not when settings load."""
    options = source.broker_transport_options or {}
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        if options.get(key):
            # 0700: the messages carry task arguments, for the portal's user only (issue 14, item 8); each level,
            # since mkdir(parents=True) would make var/broker with the umask's 0755.
            folder = Path(options[key])
            for level in reversed([folder, *folder.parents]):
                if not level.exists():
                    level.mkdir(mode=0o700, exist_ok=True)
