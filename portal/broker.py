"""The embedded broker (no CELERY_BROKER_URL: one machine, no Redis): kombu's filesystem transport, made safe to read
while a message is being written.

kombu 5.7's filesystem channel creates a message file under its final ``*.msg`` name, then locks and writes it;
a consumer polling the folder does not take the lock: it moves the file away and reads it, and a file caught
between its creation and its last byte is read empty or cut (``JSONDecodeError`` in the worker, the task lost and
the worker's consumer stopped: seen in the test suite with a sync requested while a worker polled). Here a
message is written under a name the consumer ignores (a leading dot: its queue part does not match) and renamed
to its ``.msg`` name once whole; a rename within one folder is atomic on POSIX, so a consumer sees the whole
message or nothing.
"""

import os
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.part")
        try:
            with open(partial, "wb") as out:
                out.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            try:
                os.unlink(partial)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
