"""The embedded broker (no CELERY_BROKER_URL): a consumer polling the message folder never reads a message being written.

kombu's own filesystem channel creates the ``.msg`` file before writing it, and a worker that picks it up in
between dies on "Unrecoverable error: JSONDecodeError" (seen in this suite). portal.broker writes aside and
renames; here a producer and a polling consumer race on one folder with large messages (a wide window).
"""

import threading

import pytest
from kombu import Connection
from kombu.transport import filesystem

from portal.broker import Transport

MESSAGES = 60
PAYLOAD = "x" * 2_000_000  # ~2 MB: each write takes long enough for the consumer to look in the middle of it


def options(tmp_path):
    folder, control = tmp_path / "messages", tmp_path / "control"
    folder.mkdir(exist_ok=True)
    control.mkdir(exist_ok=True)
    return {"data_folder_in": str(folder), "data_folder_out": str(folder), "control_folder": str(control)}


def race(tmp_path, transport) -> tuple[list, list]:
    """Put MESSAGES while another connection polls for them; what it got, and what went wrong."""
    got, errors, done = [], [], threading.Event()

    def consume():
        with Connection(transport=transport, transport_options=options(tmp_path)) as connection:
            queue = connection.SimpleQueue("race")
            while len(got) < MESSAGES and not done.is_set():
                try:
                    message = queue.get(block=True, timeout=0.001)
                except queue.Empty:
                    continue
                except Exception as exc:  # what kills a worker: the test reports it
                    errors.append(repr(exc))
                    continue
                got.append(message.payload)
                message.ack()

    with Connection(transport=transport, transport_options=options(tmp_path)) as connection:
        connection.SimpleQueue("race")  # declared before the consumer polls
        consumer = threading.Thread(target=consume)
        consumer.start()
        queue = connection.SimpleQueue("race")
        try:
            for i in range(MESSAGES):
                queue.put({"i": i, "body": PAYLOAD})
            consumer.join(60)
        finally:
            done.set()
            consumer.join(5)
    return got, errors


def test_every_message_arrives_whole_while_a_consumer_polls(tmp_path):
    got, errors = race(tmp_path, Transport)
    assert errors == []
    assert sorted(m["i"] for m in got) == list(range(MESSAGES))
    assert all(m["body"] == PAYLOAD for m in got)
    assert not list((tmp_path / "messages").iterdir())  # nothing left aside, nothing half-written


def test_the_portal_uses_it_when_no_broker_is_configured(settings):
    if not settings.CELERY_BROKER_URL.startswith("filesystem://"):
        pytest.skip("a broker is configured (CELERY_BROKER_URL)")
    from portal.celery import app

    with app.connection_for_write() as connection:
        assert isinstance(connection.transport, Transport)


def test_kombus_own_channel_is_what_it_replaces():
    # What portal.broker overrides is kombu's _put alone: reading stays kombu's.
    assert issubclass(Transport.Channel, filesystem.Channel)
    assert set(vars(Transport.Channel)) - {
        "__module__",
        "__doc__",
        "__qualname__",
        "__firstlineno__",
        "__static_attributes__",
    } == {"_put"}
