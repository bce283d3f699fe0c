"""deploy/nginx/defender-portal.conf for real: Debian's nginx runs the site deploy/nginx/render.sh prints,
over TLS with a throw-away certificate, in front of gunicorn started with the command line of
deploy/systemd/defender-portal-web.service, on the test's database.

nginx must send the ring downloads the portal answers with X-Accel-Redirect, serve the mirrors'
published trees from disk (both with Range), pass the proxy headers (the portal then sees the
client's address), serve collectstatic's files and refuse floods of health reports."""

import http.client
import json
import os
import pwd
import re
import shutil
import signal
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests
from axes.models import AccessAttempt

from core.models import AuditEvent
from fleet.models import EndpointGroup
from fleet.services import enrollment
from fleet.services.rings import approve_package, save_group
from mirror.models import Mirror, Upstream
from mirror.services.imports import import_package
from mirror.services.mirrors import save_mirror
from standins.upstream import build_package
from tests.deploy.units import ROOT, exec_start, service_environment, service_settings
from tests.processes import child_env, free_port, wait_for
from tests.samples import health_text

NGINX = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
OPENSSL = shutil.which("openssl")
RENDER = ROOT / "deploy" / "nginx" / "render.sh"
ACCEL_PREFIX = "/_store"  # deploy/portal.env.example's MIRROR_X_ACCEL_PREFIX, the site's internal location

TARGET = ("linux", "production", "x86_64")
ENGINE, DEFINITION = "1.1.24010.10", "1.407.417.0"
RING_ZIP = "/mirror/groups/pilot/linux/production/arch_x86_64/updates.zip"
MIRROR_ZIP = "/mirror/defender/linux/production/arch_x86_64/updates.zip"
MIRROR_MANIFEST = "/mirror/defender/linux/production/arch_x86_64/manifest.json"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        NGINX is None, reason="nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)"
    ),
    pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed: it makes the test's TLS certificate"),
    pytest.mark.django_db(transaction=True),  # gunicorn must see what the tests commit
]

# What Debian's /etc/nginx/nginx.conf gives the sites it includes, in a prefix of the test's own.
NGINX_CONF = """\
daemon off;
master_process on;
worker_processes 1;
{user}
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log warn;
events {{
    worker_connections 256;
}}
http {{
    sendfile on;
    tcp_nopush on;
    {mime_types}
    default_type application/octet-stream;
    access_log {prefix}/logs/access.log;
    client_body_temp_path {prefix}/temp/client_body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    include {site};
}}
"""


@dataclass
class Site:
    https_port: int
    http_port: int
    portal_port: int
    certificate: Path
    store: Path
    static: Path
    gunicorn_log: Path
    gunicorn_home: Path

    @property
    def https(self) -> str:
        return f"https://localhost:{self.https_port}"

    def get(self, path: str, **kwargs) -> requests.Response:
        """GET through nginx, over TLS."""
        return requests.get(
            self.https + path, verify=str(self.certificate), timeout=30, allow_redirects=False, **kwargs
        )

    def post(self, path: str, **kwargs) -> requests.Response:
        return requests.post(
            self.https + path, verify=str(self.certificate), timeout=30, allow_redirects=False, **kwargs
        )

    def session_from(self, address: str) -> requests.Session:
        """A session whose connections to nginx come from ``address`` (any of 127.0.0.0/8)."""
        session = requests.Session()
        session.trust_env = (
            False  # else REQUESTS_CA_BUNDLE, if set, replaces the site's certificate (and proxies apply)
        )
        session.verify = str(self.certificate)
        session.mount("https://", FromAddress(address))
        return session

    def get_from_gunicorn(self, path: str, **kwargs) -> requests.Response:
        """GET straight from gunicorn, as nginx asks it (same host and proxy headers)."""
        headers = {"Host": f"localhost:{self.https_port}", "X-Forwarded-Proto": "https", **kwargs.pop("headers", {})}
        return requests.get(
            f"http://127.0.0.1:{self.portal_port}{path}", headers=headers, timeout=30, allow_redirects=False, **kwargs
        )


class FromAddress(requests.adapters.HTTPAdapter):
    """Connections from a given local address: the site knows clients by address."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, source_address=(self.address, 0), **kwargs)


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    certificate, key = folder / "portal.pem", folder / "portal.key"
    subprocess.run(
        [
            OPENSSL,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return certificate, key


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def answers(url: str, verify=True) -> bool:
    try:
        return requests.get(url, timeout=5, verify=verify).status_code == 200
    except requests.RequestException:
        return False


def start_gunicorn(work: Path, portal_env: dict, log_path: Path) -> subprocess.Popen:
    """gunicorn with defender-portal-web.service's Environment= and ExecStart=, portal_env as its EnvironmentFile=."""
    service = service_settings("defender-portal-web.service")
    env = service_environment(service, portal_env)
    for name in service.get("RuntimeDirectory", []):  # systemd creates /run/<name> for the service
        runtime = work / "run" / name
        runtime.mkdir(parents=True)
        env = {key: value.replace(f"/run/{name}", str(runtime)) for key, value in env.items()}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            exec_start(service, env, sys.executable),
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def start_nginx(prefix: Path, site_variables: dict) -> subprocess.Popen:
    """nginx with the site render.sh prints from these variables, as a child with its own prefix."""
    for sub in ("logs", "temp"):
        (prefix / sub).mkdir(parents=True)
    rendered = subprocess.run(
        ["sh", str(RENDER)],
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **site_variables},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert rendered.returncode == 0, rendered.stderr
    site = prefix / "defender-portal.conf"
    site.write_text(rendered.stdout)
    mime_types = Path("/etc/nginx/mime.types")
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(
            prefix=prefix,
            site=site,
            mime_types=f"include {mime_types};" if mime_types.exists() else "",
            # As root, workers would run as nobody, who cannot enter the test's 0700 temporary folders.
            user=f"user {pwd.getpwuid(0).pw_name};" if os.geteuid() == 0 else "",
        )
    )
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    with open(prefix / "logs" / "stderr.log", "wb") as log:
        return subprocess.Popen(
            [NGINX, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "logs" / "error.log")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(process: subprocess.Popen | None, signum: int) -> None:
    """``signum`` to the master, which stops its workers; then whatever is left of its session, killed."""
    if process is None:
        return
    if process.poll() is None:
        process.send_signal(signum)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # its own session (start_new_session): only its processes
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture(scope="module")
def site(django_db_setup, tmp_path_factory):
    """gunicorn and nginx for the whole module (each test makes its own data): the deployment of deploy/README.md."""
    work = tmp_path_factory.mktemp("deploy")
    var_dir, store = work / "var", work / "store"
    https_port, http_port, portal_port = free_port(), free_port(), free_port()
    certificate, key = self_signed_certificate(work)
    # The EnvironmentFile: deploy/portal.env.example's choices behind nginx, on the test's database.
    # A home of its own, where gunicorn's default control socket would go (test_gunicorn_opens_no_control_socket).
    home = work / "home"
    home.mkdir()
    portal_env = child_env(
        PORTAL_VAR_DIR=var_dir,
        PORTAL_STORE_ROOT=store,
        PORTAL_BASE_URL=f"https://localhost:{https_port}",
        DEBUG="false",
        BEHIND_TLS_PROXY="true",
        MIRROR_X_ACCEL_PREFIX=ACCEL_PREFIX,
        TRUSTED_PROXIES="127.0.0.1",
        PORTAL_HOST="127.0.0.1",
        PORTAL_PORT=portal_port,
        WEB_CONCURRENCY=2,
        HOME=home,
    )
    portal_env.pop("XDG_RUNTIME_DIR", None)  # else gunicorn's default control socket would go there
    # As deploy/README.md installs it: static files collected into <PORTAL_VAR_DIR>/static for nginx.
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
        cwd=ROOT,
        env=portal_env,
        check=True,
        timeout=300,
    )
    site = Site(https_port, http_port, portal_port, certificate, store, var_dir / "static", work / "gunicorn.log", home)
    gunicorn = nginx = None
    try:
        gunicorn = start_gunicorn(work, portal_env, site.gunicorn_log)
        wait_for(
            lambda: gunicorn.poll() is not None or answers(f"http://127.0.0.1:{portal_port}/healthz"),
            90,
            "gunicorn to answer",
        )
        assert gunicorn.poll() is None, f"gunicorn exited {gunicorn.returncode}:\n{tail(site.gunicorn_log)}"
        nginx = start_nginx(
            work / "nginx",
            {
                "SERVER_NAME": "localhost",
                "HTTPS_LISTEN": f"127.0.0.1:{https_port}",
                "HTTP_LISTEN": f"127.0.0.1:{http_port}",
                "TLS_CERTIFICATE": str(certificate),
                "TLS_CERTIFICATE_KEY": str(key),
                "PORTAL_UPSTREAM": f"127.0.0.1:{portal_port}",
                "STORE_ROOT": str(store),
                "STATIC_ROOT": str(site.static),
            },
        )
        wait_for(
            lambda: nginx.poll() is not None or answers(f"{site.https}/healthz", verify=str(certificate)),
            30,
            "nginx to answer",
        )
        assert nginx.poll() is None, f"nginx exited {nginx.returncode}:\n{tail(work / 'nginx' / 'logs' / 'error.log')}"
        yield site
    finally:
        stop(nginx, signal.SIGQUIT)  # graceful: the master stops its workers
        stop(gunicorn, signal.SIGTERM)  # as systemd stops the unit (KillMode=mixed): the master stops its workers


@pytest.fixture
def ring(site, settings, tmp_path):
    """The mirror "defender" with a published package, and its ring "pilot" with that package approved."""
    # Publish where gunicorn and nginx read; group URLs as gunicorn builds them.
    settings.PORTAL_STORE_ROOT, settings.PORTAL_BASE_URL = site.store, site.https
    # Never contacted: nothing here syncs.
    upstream = Upstream.objects.create(name="unused", base_url="http://127.0.0.1:9/fwlink/")
    mirror = save_mirror(
        Mirror(
            name="Defender",
            slug="defender",
            upstream=upstream,
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )
    )
    upload = tmp_path / "updates.zip"
    build_package(upload, 512 * 1024)
    package = import_package(mirror, TARGET, upload, engine=ENGINE, definition=DEFINITION)
    group = EndpointGroup(name="Pilot", slug="pilot", mirror=mirror, platforms=["linux"], channel="production")
    group.full_clean()
    group = save_group(group)
    approve_package(group, package)
    return SimpleNamespace(mirror=mirror, group=group, package=package, data=package.path.read_bytes())


# --- Ring downloads: the portal decides, nginx sends (X-Accel-Redirect) ---------------------------


def test_gunicorn_alone_answers_a_ring_download_with_an_empty_body_and_x_accel_redirect(site, ring):
    response = site.get_from_gunicorn(RING_ZIP)
    assert response.status_code == 200
    assert response.content == b""
    assert (
        response.headers["X-Accel-Redirect"] == f"{ACCEL_PREFIX}/{ring.package.path.relative_to(site.store).as_posix()}"
    )
    assert "Accept-Ranges" not in response.headers  # nginx's own goes on the file it sends


def test_through_nginx_a_ring_download_is_the_whole_file_with_the_portals_validators(site, ring):
    portal = site.get_from_gunicorn(RING_ZIP)
    response = site.get(RING_ZIP)
    assert response.status_code == 200
    assert len(response.content) == len(ring.data) and response.content == ring.data
    assert "X-Accel-Redirect" not in response.headers
    assert response.headers["ETag"] == f'"{ring.package.sha256}"' == portal.headers["ETag"]
    assert response.headers["Last-Modified"] == portal.headers["Last-Modified"]
    assert response.headers["Content-Type"] == "application/zip"
    assert response.headers["Content-Length"] == str(len(ring.data))
    assert response.raw.headers.getlist("Accept-Ranges") == ["bytes"]  # once: nginx's, not the portal's as well
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    # Revalidation is the portal's own 304, never nginx's idea of the file.
    again = site.get(RING_ZIP, headers={"If-None-Match": response.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert site.get(RING_ZIP, headers={"If-Modified-Since": response.headers["Last-Modified"]}).status_code == 304


def test_through_nginx_a_ring_download_resumes_with_a_range(site, ring):
    size, etag = len(ring.data), f'"{ring.package.sha256}"'
    part = site.get(RING_ZIP, headers={"Range": "bytes=1000-65535"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 1000-65535/{size}"
    assert part.content == ring.data[1000:65536]
    assert part.headers["ETag"] == etag
    assert part.raw.headers.getlist("Accept-Ranges") in ([], ["bytes"])
    end = site.get(RING_ZIP, headers={"Range": "bytes=-300"})
    assert (end.status_code, end.content) == (206, ring.data[-300:])
    # If-Range: the rest only while the URL still serves the version the client has part of...
    resumed = site.get(RING_ZIP, headers={"Range": f"bytes={size - 1000}-", "If-Range": etag})
    assert (resumed.status_code, resumed.content) == (206, ring.data[size - 1000 :])
    # ...the whole file once it serves another one.
    other = site.get(RING_ZIP, headers={"Range": "bytes=0-9", "If-Range": f'"{"0" * 64}"'})
    assert (other.status_code, other.content) == (200, ring.data)
    # One range per request, as the portal serves: several get the whole file.
    several = site.get(RING_ZIP, headers={"Range": "bytes=0-9,100-109"})
    assert (several.status_code, several.content) == (200, ring.data)


def test_through_nginx_a_rings_manifest_is_the_portals_with_one_accept_ranges(site, ring):
    response = site.get(RING_ZIP.replace("updates.zip", "manifest.json"))
    assert response.status_code == 200
    assert response.json() == {"EngineVersion": ENGINE, "DefinitionVersion": DEFINITION}
    assert response.raw.headers.getlist("Accept-Ranges") == ["bytes"]  # the portal's, which answers its Range itself
    part = site.get(RING_ZIP.replace("updates.zip", "manifest.json"), headers={"Range": "bytes=0-9"})
    assert (part.status_code, part.content) == (206, response.content[:10])


def test_through_nginx_a_ring_without_the_file_gets_the_portals_404(site, ring):
    response = site.get("/mirror/groups/pilot/linux/production_back/arch_x86_64/updates.zip")
    assert response.status_code == 404
    assert "no previous version (n-1) is approved" in response.text


# --- Mirror downloads: nginx serves the published tree from disk ---------------------------------


def test_a_mirror_download_is_sent_by_nginx_from_the_published_tree(site, ring):
    on_disk = ring.mirror.publish_path / "linux" / "production" / "arch_x86_64" / "updates.zip"
    stat = on_disk.stat()
    response = site.get(MIRROR_ZIP)
    assert response.status_code == 200
    assert len(response.content) == len(ring.data) and response.content == ring.data
    # nginx's validators for the file (mtime-size), not the portal's sha256: the portal never saw the request.
    assert response.headers["ETag"] == f'"{int(stat.st_mtime):x}-{stat.st_size:x}"'
    site.get(RING_ZIP)  # which the portal does see, and logs
    wait_for(lambda: RING_ZIP in site.gunicorn_log.read_text(), 10, "gunicorn to log the ring download")
    assert MIRROR_ZIP not in site.gunicorn_log.read_text()
    assert response.headers["Content-Type"] == "application/zip"
    assert response.raw.headers.getlist("Accept-Ranges") == ["bytes"]
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"
    assert site.get(MIRROR_ZIP, headers={"If-None-Match": response.headers["ETag"]}).status_code == 304

    manifest = site.get(MIRROR_MANIFEST)
    assert manifest.status_code == 200
    assert manifest.headers["Content-Type"] == "application/json"
    assert manifest.json() == {"EngineVersion": ENGINE, "DefinitionVersion": DEFINITION}


def test_a_mirror_download_resumes_with_a_range(site, ring):
    size = len(ring.data)
    part = site.get(MIRROR_ZIP, headers={"Range": "bytes=4096-8191"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 4096-8191/{size}"
    assert part.content == ring.data[4096:8192]
    etag = site.get(MIRROR_ZIP).headers["ETag"]
    resumed = site.get(MIRROR_ZIP, headers={"Range": f"bytes={size - 10}-", "If-Range": etag})
    assert (resumed.status_code, resumed.content) == (206, ring.data[-10:])


def test_what_the_tree_lacks_and_the_mirror_pages_are_the_portals(site, ring):
    missing = site.get("/mirror/defender/linux/production_back/arch_x86_64/updates.zip")
    assert missing.status_code == 404
    assert "no previous package (n-1) is published" in missing.text  # the portal's reason
    page = site.get("/mirror/defender/")
    assert page.status_code == 302 and page.headers["Location"].startswith("/login/")
    # A hidden staging folder of the tree (mirror.tree) is not served: only the layout's names are.
    (staging := ring.mirror.publish_path / "linux/production/.arch_x86_64.tmp-node-1-0123abcd").mkdir()
    os.link(ring.package.path, staging / "updates.zip")
    hidden = site.get("/mirror/defender/linux/production/.arch_x86_64.tmp-node-1-0123abcd/updates.zip")
    assert hidden.status_code == 404 and hidden.content != ring.data


def test_a_deleted_mirrors_tree_is_no_longer_served_by_nginx(site, ring, settings, tmp_path):
    """Issue 14, item 10: a deleted mirror's tree stayed on disk, and nginx (which serves the published trees from
    disk, without asking the portal) went on serving it."""
    from mirror.services.mirrors import delete_mirror

    mirror = save_mirror(
        Mirror(
            name="Gone",
            slug="gone",
            upstream=ring.mirror.upstream,
            platforms=["linux"],
            channels=["production"],
            archs=["x86_64"],
            sync_interval_minutes=0,
        )
    )
    upload = tmp_path / "updates.zip"
    upload.write_bytes(ring.data)  # import_package takes the file into the store
    import_package(mirror, TARGET, upload, engine=ENGINE, definition=DEFINITION)
    zip_url = "/mirror/gone/linux/production/arch_x86_64/updates.zip"
    assert site.get(zip_url).content == ring.data

    delete_mirror(mirror)

    assert site.get(zip_url).status_code == 404
    assert site.get("/mirror/gone/linux/production/arch_x86_64/manifest.json").status_code == 404
    assert not mirror.publish_path.exists()
    assert site.get(MIRROR_ZIP).content == ring.data  # the other mirror's tree is untouched


# --- The portal behind the proxy -----------------------------------------------------------------


def test_endpoints_enroll_and_report_through_nginx_and_the_portal_sees_https_and_the_host(site, ring):
    secret = enrollment.create_enrollment_secret(ring.group, "lab")[1]
    enrolled = site.post(
        "/api/v1/enroll",
        json={
            "secret": secret,
            "machine_id": "0b8c5a4e-7d21-4c3f-8e9a-6f1d2c3b4a59",
            "hostname": "web-1",
            "platform": "linux",
            "arch": "x86_64",
        },
    )
    assert enrolled.status_code == 201, enrolled.text
    # Built from the request: the scheme nginx was reached with (X-Forwarded-Proto) and the Host, port included.
    assert enrolled.json()["report_url"] == f"{site.https}/api/v1/reports"
    report = site.post(
        "/api/v1/reports",
        data=health_text(ring.group).encode(),
        headers={"Authorization": f"Bearer {enrolled.json()['token']}", "Content-Type": "text/plain"},
    )
    assert report.status_code == 201, report.text
    assert report.json()["compliance"] == "up_to_date", report.json()
    for answer in (enrolled, report):  # the security headers once each, though Django and nginx both set them
        assert answer.raw.headers.getlist("X-Content-Type-Options") == ["nosniff"]
        assert answer.raw.headers.getlist("Strict-Transport-Security") == ["max-age=31536000"]


def test_the_audit_log_records_the_clients_address_not_nginxs(site, ring):
    # Each test that counts on its address has one of its own (127.0.0.0/8 is all this host's).
    secret = enrollment.create_enrollment_secret(ring.group, "lab")[1]
    client = site.session_from("127.0.0.3")
    enrolled = client.post(
        f"{site.https}/api/v1/enroll",
        timeout=30,
        headers={"X-Real-IP": "192.0.2.1"},  # nginx overwrites it
        json={"secret": secret, "machine_id": "5e1f0a2b-3c4d-4e5f-8a9b-0c1d2e3f4a5b", "platform": "linux"},
    )
    assert enrolled.status_code == 201, enrolled.text
    assert (
        AuditEvent.objects.get(action="endpoint.enroll", target_id=str(enrolled.json()["endpoint"])).ip_address
        == "127.0.0.3"
    )


def sign_in(session: requests.Session, site: Site, username: str, password: str) -> requests.Response:
    form = session.get(f"{site.https}/login/", timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    return session.post(
        f"{site.https}/login/",
        data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        headers={"Referer": f"{site.https}/login/"},
        timeout=30,
        allow_redirects=False,
    )


def test_a_sign_in_lock_out_through_nginx_is_for_the_clients_address_only(site, django_user_model):
    django_user_model.objects.create_user("lockme", password="correct horse battery")
    attacker, colleague = site.session_from("127.0.0.4"), site.session_from("127.0.0.5")
    statuses = [
        sign_in(attacker, site, "lockme", "wrong").status_code for _ in range(5)
    ]  # LOGIN_FAILURE_LIMIT's default
    assert statuses == [200, 200, 200, 200, 429], statuses
    assert sign_in(attacker, site, "lockme", "correct horse battery").status_code == 429
    assert list(AccessAttempt.objects.filter(username="lockme").values_list("ip_address", flat=True)) == ["127.0.0.4"]
    signed_in = sign_in(colleague, site, "lockme", "correct horse battery")
    assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/"


def test_a_flood_of_reports_from_one_address_is_refused_by_nginx_with_429(site):
    context = ssl.create_default_context(cafile=str(site.certificate))
    # An address of its own: the limit counts per client address, and no other test posts from this one.
    connection = http.client.HTTPSConnection(
        "127.0.0.1", site.https_port, context=context, timeout=30, source_address=("127.0.0.2", 0)
    )
    statuses, last = [], b""
    try:
        # As large as a report may be (FLEET_REPORT_MAX_BYTES): nginx hands it to the portal, whose answer it is.
        connection.request("POST", "/api/v1/reports", body=b"x" * 65536, headers={"Content-Type": "text/plain"})
        first = connection.getresponse()
        assert (first.status, json.loads(first.read())["code"]) == (401, "not_authenticated")
        while len(statuses) < 2000 and 429 not in statuses:
            connection.request("POST", "/api/v1/reports", body=b"mdatp health", headers={"Content-Type": "text/plain"})
            response = connection.getresponse()
            statuses.append(response.status)
            last = response.read()
        # Reads are not counted: the limit keys POSTs only.
        connection.request("GET", "/api/v1/reports")
        read = connection.getresponse()
        read.read()
    finally:
        connection.close()
    assert statuses[-1] == 429, statuses[-5:]
    assert b"429 Too Many Requests" in last  # nginx's page: the portal never saw it
    assert set(statuses[:-1]) == {401} and len(statuses) > 100  # the burst went through first
    assert read.status == 405


def test_gunicorn_opens_no_control_socket(site):
    # Its default, ~/.gunicorn/gunicorn.ctl, is one path for every gunicorn of the user: a second
    # portal (or a test run beside one) would take it over.
    assert answers(f"http://127.0.0.1:{site.portal_port}/healthz")
    assert not (site.gunicorn_home / ".gunicorn").exists()
    assert "control socket" not in site.gunicorn_log.read_text().lower()


# --- Static files and plain HTTP -----------------------------------------------------------------


def test_collected_static_files_are_served_by_nginx_and_hashed_ones_cached_for_good(site):
    login = site.get("/login/")
    assert login.status_code == 200
    stylesheet = re.search(r'href="/static/([^"]+\.css)"', login.text).group(1)
    hashed = site.get(f"/static/{stylesheet}", headers={"Accept-Encoding": "gzip"})
    assert hashed.status_code == 200
    assert hashed.content == (site.static / stylesheet).read_bytes()
    assert hashed.headers["Content-Encoding"] == "gzip"  # collectstatic's .gz, sent as is
    assert hashed.headers["Content-Type"].startswith("text/css")
    assert hashed.headers["Cache-Control"] == "public, max-age=315360000, immutable"
    original = {
        hashed_name: name
        for name, hashed_name in json.loads((site.static / "staticfiles.json").read_text())["paths"].items()
    }
    plain = site.get(f"/static/{original[stylesheet]}")
    assert plain.status_code == 200 and plain.headers["Cache-Control"] == "public, max-age=60"


def test_plain_http_is_redirected_to_https(site):
    response = requests.get(f"http://localhost:{site.http_port}{RING_ZIP}", timeout=30, allow_redirects=False)
    assert response.status_code == 301
    assert response.headers["Location"] == f"https://localhost{RING_ZIP}"
