"""The README's run command, end to end: bin/run starts web, worker and beat; Ctrl-C stops them."""

import os
import re
import signal

import pytest

from tests.processes import alive, output, start_portal, wait_for
from tests.web import change_password, get_or_none, sign_in

pytestmark = pytest.mark.e2e


FRAME = re.compile(r"^={72}\nThe portal is running: (\S+)\n(.*?)\n={72}$", re.MULTILINE | re.DOTALL)
# What starting prints before the credentials: the migrations (quiet now), gunicorn's and Celery's banners.
STARTUP_LINES = ("Applying ", "Booting worker", "-------------- ", "[tasks]", " ready.", "beat: Starting")


def credentials_frame(text: str) -> re.Match:
    """The framed credentials, printed once, after everything starting prints (later lines are the run's logs)."""
    frames = list(FRAME.finditer(text))
    assert len(frames) == 1, text
    after = text[frames[0].end() :]
    assert not [line for line in after.splitlines() if any(mark in line for mark in STARTUP_LINES)], after
    before = text[: frames[0].start()]
    assert [mark for mark in ("Booting worker", " ready.", "beat: Starting") if mark not in before] == [], text
    assert "Applying " not in text, "the migrations are quiet"
    return frames[0]


def scenario(tmp_path, expect_generated_password, **env):
    process, base, log = start_portal(tmp_path, **env)
    try:
        wait_for(lambda: get_or_none(f"{base}/healthz"), 120, lambda: f"the portal on {base}\n{output(log)}")
        wait_for(lambda: FRAME.search(output(log)), 60, lambda: f"the credentials\n{output(log)}")
        text = output(log)
        pids = {name: int(pid) for name, pid in re.findall(r"started (\w+) \(pid (\d+)\)", text)}
        assert set(pids) == {"web", "worker", "beat"}
        frame = credentials_frame(text)
        # The URL to sign in at is the one the portal listens on (bin/run --port N), not localhost:8000.
        assert frame.group(1) == base.replace("127.0.0.1", "localhost") + "/"

        if expect_generated_password:
            password = re.search(r"password: (\S+)", frame.group(2)).group(1)
            assert "username: admin" in frame.group(2) and "Change it after signing in." in frame.group(2)
        else:
            password = env["PORTAL_ADMIN_PASSWORD"]
            assert password not in text
        assert get_or_none(f"{base}/login/").status_code == 200
        if expect_generated_password:
            # The banner's "change it after signing in" is enforced: nothing else opens until it is changed.
            session = sign_in(base, "admin", password, lands_on="/account/password/?next=%2F")
            assert session.get(f"{base}/", timeout=5).url == f"{base}/account/password/?next=%2F"
            change_password(session, base, password, "a-new-admin-passphrase")
        else:
            session = sign_in(base, "admin", password)

        # Beat schedules the heartbeat, the worker runs it, the web shows it.
        wait_for(
            lambda: "worker last seen" in session.get(f"{base}/", timeout=5).text,
            60,
            lambda: f"a worker heartbeat\n{output(log)}",
        )
        ready = session.get(f"{base}/readyz", timeout=10)
        assert ready.status_code == 200, ready.text
        # Static files are served by the portal itself (whitenoise), not a CDN.
        css = re.search(
            r'href="(/static/portal/portal\.[0-9a-f]+\.css)"', session.get(f"{base}/", timeout=5).text
        ).group(1)
        assert session.get(f"{base}{css}", timeout=5).status_code == 200

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=40) == 0, output(log)
        wait_for(lambda: not any(alive(pid) for pid in pids.values()), 10, "web, worker and beat to exit")
        assert get_or_none(f"{base}/healthz") is None
        return password
    finally:
        if process.poll() is None:
            process.kill()
        log.close()


def test_the_run_command_starts_a_working_portal_on_a_bare_machine(tmp_path):
    password = scenario(tmp_path, expect_generated_password=True)
    # The generated password is printed once and stored only as a hash.
    assert password.encode() not in (tmp_path / "var" / "portal.sqlite3").read_bytes()


def test_a_second_start_keeps_the_admin_and_prints_no_password(tmp_path):
    scenario(tmp_path, expect_generated_password=False, PORTAL_ADMIN_PASSWORD="a-chosen-admin-passphrase")
    first_start = len((tmp_path / "run.log").read_text())
    process, base, log = start_portal(tmp_path)

    def second_start():
        return output(log)[first_start:]

    try:
        wait_for(lambda: get_or_none(f"{base}/healthz"), 120, "the second start")
        wait_for(lambda: FRAME.search(second_start()), 60, lambda: f"the closing frame\n{second_start()}")
        assert "An admin account exists" in credentials_frame(second_start()).group(2)
        assert "password:" not in output(log)
        sign_in(base, "admin", "a-chosen-admin-passphrase")
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=40)
        log.close()


@pytest.mark.skipif(
    not os.environ.get("DATABASE_URL", "").startswith("postgres"), reason="needs DATABASE_URL (set by .ci/run)"
)
def test_the_run_command_uses_postgresql_and_redis_when_configured(tmp_path):
    # The same command, pointed at the services: a fresh database of its own.
    import psycopg
    from django.conf import settings

    name = f"portal_run_{os.getpid()}"
    db = settings.DATABASES["default"]
    admin_url = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/postgres"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        scenario(
            tmp_path,
            expect_generated_password=False,
            PORTAL_ADMIN_PASSWORD="a-chosen-admin-passphrase",
            DATABASE_URL=f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{name}",
            CELERY_BROKER_URL=os.environ["CELERY_BROKER_URL"],
            REDIS_URL=os.environ["REDIS_URL"],
        )
        assert not (tmp_path / "var" / "portal.sqlite3").exists()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
