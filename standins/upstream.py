"""Stand-in for Microsoft's fwlink endpoint that serves Defender offline signature packages.

A real HTTP server (standard library only, no Django) used by tests, benchmarks and
demos in place of https://go.microsoft.com/fwlink/. It answers the manifest
(``action=info``) and the 302-to-package flow, serves real zip packages with
Range support, and can inject faults through a Python API or an HTTP control API.

    with StandinUpstream(tmp_path) as upstream:
        upstream.base_url   # "http://127.0.0.1:PORT/fwlink/"

CLI: ``python -m standins.upstream --port 8765 --data-dir /tmp/standin --size 200M``
"""

from __future__ import annotations

import argparse
import email.utils
import hashlib
import http.server
import io
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

log = logging.getLogger(__name__)

LINUX_LINK_ID = "2144709"
MAC_LINK_ID = "2120136"
LINK_IDS = {LINUX_LINK_ID: "linux", MAC_LINK_ID: "mac"}
PLATFORMS = ("linux", "mac")
CHANNELS = ("production", "preview")
ARCHES = ("x86_64", "arm64")

FAULT_MODES = ("404", "500", "html", "truncated", "reset", "slow", "429", "503", "corrupt", "garbage")
FAULT_SCOPES = ("manifest", "package", "any")

INITIAL_ENGINE = "1.1.24010.10"
INITIAL_DEFINITION = "1.407.417.0"
INITIAL_DATE = "2024-03-14T12:13:17Z"
PLATFORM_VERSION = "101.24022.0001"

DEFAULT_PACKAGE_SIZE = 256 * 1024
CHUNK = 256 * 1024  # disk -> socket piece; keeps memory flat for 1 GB packages
SLOW_CHUNK = 64 * 1024  # "slow" sleeps `delay` before each of these
DEFAULT_DELAY = 0.05
DEFAULT_RETRY_AFTER = 1
_POOL = 1024 * 1024
# Name and share (percent) of the package payload, like a real updates.zip.
MEMBERS = (
    ("mpavbase.vdm", 40),
    ("mpasbase.vdm", 30),
    ("mpavdlta.vdm", 10),
    ("mpasdlta.vdm", 10),
    ("mpengine.dll", 10),
)

_STATUS_MODES = frozenset({"404", "500", "html", "429", "503"})
_QUIET_ERRORS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)
_LOGGED_HEADERS = ("Range", "If-Range", "If-None-Match", "User-Agent")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)

HTML_ERROR_PAGE = (
    b"<!DOCTYPE html>\n<html><head><title>Service Unavailable</title></head>"
    b"<body><h1>We're sorry</h1><p>The page you requested is temporarily unavailable."
    b"</p></body></html>\n"
)
# Neither <engine> nor <signatures>, and not even well-formed XML.
GARBAGE_MANIFEST = (
    b'<?xml version="1.0" encoding="utf-8"?>\n<versions><status>maintenance</status>'
    b"<payload>\x00\x1b\xff\xfe%#@!</versions"
)


def parse_size(value: int | str) -> int:
    """Parse ``262144``, ``"256K"``, ``"200M"`` or ``"1G"`` (binary units) into bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE_RE.match(str(value))
    if not match:
        raise ValueError(f"bad size: {value!r}")
    number, unit = match.groups()
    factor = 1024 ** "_KMGT".index(unit.upper() or "_")
    return int(float(number) * factor)


def _target_key(target: tuple) -> str:
    return "/".join(target)


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _bump(version: str) -> str:
    # Defender definitions move on in the third part and keep ".0": 1.407.417.0 -> 1.407.418.0.
    parts = version.split(".")
    parts[-2:] = [str(int(parts[-2]) + 1), "0"]
    return ".".join(parts)


def _member_sizes(total: int) -> list[int]:
    # Local header (30) + central entry (46) + name twice per member, plus the EOCD (22),
    # so the zip comes out at `total` bytes for anything below the zip64 limits.
    overhead = 22 + sum(76 + 2 * len(name) for name, _ in MEMBERS)
    payload = max(total - overhead, 64 * len(MEMBERS))
    sizes = [payload * share // 100 for _, share in MEMBERS]
    sizes[0] += payload - sum(sizes)
    return sizes


@dataclass
class _Package:
    path: Path
    size: int
    sha256: str
    last_modified: str
    flips: tuple  # absolute offsets the "corrupt" fault flips (inside mpavbase.vdm data)

    @property
    def etag(self) -> str:
        return f'"{self.sha256}"'


@dataclass
class _TargetState:
    engine: str
    definition: str
    date: str
    history: list  # every definition version handed out; all stay downloadable


@dataclass
class _Fault:
    mode: str
    scope: str
    remaining: int | None
    retry_after: int
    delay: float

    def applies(self, kind: str, has_body: bool) -> bool:
        if self.scope != "any" and self.scope != kind:
            return False
        if self.mode in _STATUS_MODES:
            return True
        if not has_body:  # body faults wait for a request that has a body to spoil
            return False
        if self.mode == "corrupt":
            return kind == "package"
        if self.mode == "garbage":
            return kind == "manifest"
        return True  # truncated, reset, slow

    def as_dict(self) -> dict:
        return {
            "mode": self.mode,
            "scope": self.scope,
            "count": self.remaining,
            "retry_after": self.retry_after,
            "delay": self.delay,
        }


def build_package(path: Path, size: int) -> _Package:
    """Write a fresh zip of about `size` bytes to `path` and describe it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(path.name + ".part")
    rng = random.Random(os.urandom(16))
    # One random pool per package, served at random rotations: fast (no RNG per byte),
    # little memory, and a new pool means every version hashes differently.
    pool = os.urandom(_POOL)
    doubled = memoryview(pool + pool)
    stamp = time.localtime()[:6]
    with open(part, "wb") as raw, zipfile.ZipFile(raw, "w", zipfile.ZIP_STORED) as zf:
        # ZIP_STORED: building a 1 GB package must cost disk bandwidth, not deflate time.
        for (name, _), member_size in zip(MEMBERS, _member_sizes(size), strict=True):
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_STORED
            info.file_size = member_size  # lets zipfile pick zip64 up front if needed
            with zf.open(info, "w") as dst:
                left = member_size
                while left:
                    n = min(left, _POOL)
                    offset = rng.randrange(_POOL)
                    dst.write(doubled[offset : offset + n])
                    left -= n
    os.replace(part, path)
    return _describe(path)


def _describe(path: Path) -> _Package:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(_POOL):
            digest.update(block)
    with zipfile.ZipFile(path) as zf, open(path, "rb") as f:
        first = zf.infolist()[0]
        f.seek(first.header_offset)
        header = f.read(30)
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        start = first.header_offset + 30 + name_len + extra_len
        length = first.file_size
    flips = tuple(sorted({start + length * k // 4 for k in (1, 2, 3)}))
    stat = path.stat()
    return _Package(
        path=path,
        size=stat.st_size,
        sha256=digest.hexdigest(),
        last_modified=email.utils.formatdate(stat.st_mtime, usegmt=True),
        flips=flips,
    )


def _flip(data: bytes, pos: int, flips: tuple) -> bytes:
    hits = [p - pos for p in flips if pos <= p < pos + len(data)]
    if not hits:
        return data
    spoiled = bytearray(data)
    for i in hits:
        spoiled[i] ^= 0xFF
    return bytes(spoiled)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # benchmarks open many connections at once

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS):
            return
        log.exception("standin: error serving %s", client_address)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so clients behave as against a CDN
    server_version = "StandinFwlink/1.0"
    timeout = 60  # idle keep-alive connections must not pin threads forever
    # Headers and body go out in separate writes; with Nagle on, each small response
    # would wait ~40 ms for the client's delayed ACK.
    disable_nagle_algorithm = True

    # -- plumbing ---------------------------------------------------------------

    @property
    def owner(self) -> StandinUpstream:
        return self.server.owner

    def setup(self):
        super().setup()
        self.owner._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.owner._track(self.connection, False)

    def log_message(self, format, *args):  # noqa: A002 - signature from the base class
        pass  # quiet: the request log is the record

    def send_response(self, code, message=None):
        self._status = code
        self._note(status=code)
        super().send_response(code, message)

    def _note(self, **changes):
        if self._entry is not None:
            self.owner._update(self._entry, changes)

    def _write(self, data) -> None:
        # Counted before the write: a client that has read the last byte must find the
        # log entry already final.
        self._sent += len(data)
        self._note(bytes_sent=self._sent)
        try:
            self.wfile.write(data)
        except OSError:
            self._sent -= len(data)
            self._note(bytes_sent=self._sent)
            raise

    def do_GET(self):
        self._dispatch()

    def do_HEAD(self):
        self._dispatch()

    def do_POST(self):
        self._dispatch()

    def _dispatch(self):
        self._status = None
        self._sent = 0
        self._fault = None
        self._entry = None
        url = urlsplit(self.path)
        self._query = dict(parse_qsl(url.query, keep_blank_values=True))
        if not url.path.startswith("/_control/"):  # control calls stay out: client counts stay exact
            # Logged on arrival and updated as the response goes out, so the entry is
            # complete by the time the client has the response.
            self._entry = self.owner._record(
                {
                    "method": self.command,
                    "path": url.path,
                    "query": self._query,
                    "headers": {h: self.headers[h] for h in _LOGGED_HEADERS if h in self.headers},
                    "status": None,
                    "bytes_sent": 0,
                    "fault": None,
                    "time": time.time(),
                }
            )
        try:
            if self._entry is None:
                self._control(url.path)
            elif self.command == "POST":
                self._simple(405, b"Method Not Allowed\n", "text/plain", {"Allow": "GET, HEAD"})
            elif url.path in ("/fwlink/", "/fwlink"):
                self._fwlink()
            elif url.path.startswith("/files/"):
                self._file(url.path)
            else:
                self._simple(404, b"Not Found\n", "text/plain")
        except _QUIET_ERRORS:
            self.close_connection = True
        except Exception:
            log.exception("standin: error handling %s %s", self.command, self.path)
            self.close_connection = True
            if self._status is None:
                try:
                    self._simple(500, b"standin internal error\n", "text/plain")
                except OSError:
                    pass

    def _simple(self, status, body=b"", content_type="text/plain", headers=None):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD" and body:
            self._write(body)

    def _json(self, status, payload):
        self._simple(status, json.dumps(payload).encode() + b"\n", "application/json")

    # -- faults -----------------------------------------------------------------

    def _take_fault(self, kind: str, has_body: bool) -> _Fault | None:
        self._fault = self.owner._take_fault(kind, has_body)
        if self._fault:
            self._note(fault=self._fault.mode)
        return self._fault

    def _status_fault(self, fault: _Fault) -> None:
        retry = {"Retry-After": str(fault.retry_after)}
        if fault.mode == "html":  # captive portal / CDN error page served as 200
            self._simple(200, HTML_ERROR_PAGE, "text/html; charset=utf-8")
        elif fault.mode == "404":
            self._simple(404, b"<html><body><h1>404 Not Found</h1></body></html>\n", "text/html")
        elif fault.mode == "500":
            self._simple(500, b"<html><body><h1>500 Internal Server Error</h1></body></html>\n", "text/html")
        elif fault.mode == "429":
            self._simple(429, b"<html><body><h1>429 Too Many Requests</h1></body></html>\n", "text/html", retry)
        elif fault.mode == "503":
            self._simple(503, b"<html><body><h1>503 Service Unavailable</h1></body></html>\n", "text/html", retry)

    def _stream(self, read, pos: int, length: int, fault: _Fault | None, flips: tuple = ()) -> None:
        """Send `length` body bytes from `read`, spoiled as `fault` says."""
        mode = fault.mode if fault else None
        limit = length // 2 if mode in ("truncated", "reset") else length
        piece = SLOW_CHUNK if mode == "slow" else CHUNK
        flips = flips if mode == "corrupt" else ()
        sent = 0
        while sent < limit:
            if mode == "slow":
                time.sleep(fault.delay)
            data = read(min(piece, limit - sent))
            if not data:
                break
            if flips:
                data = _flip(data, pos + sent, flips)
            self._write(data)
            sent += len(data)
        if mode == "truncated":
            # Content-Length promised the whole body; closing now is the truncation.
            self.close_connection = True
        elif mode == "reset":
            self._reset_connection()

    def _reset_connection(self) -> None:
        # Give the partial body time to reach the client, so a resume has something to resume.
        time.sleep(0.05)
        self.close_connection = True
        sock = self.connection
        # SO_LINGER with a zero timeout turns close() into a TCP RST.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # detach(): rfile holds a reference that would otherwise postpone the real close.
        os.close(sock.detach())

    # -- routes -----------------------------------------------------------------

    def _fwlink(self):
        platform = LINK_IDS.get(self._query.get("linkid", ""))
        arch = self._query.get("arch", "x86_64")
        action = self._query.get("action")
        if platform is None or arch not in ARCHES or action not in (None, "info"):
            self._simple(404, b"Not Found\n", "text/plain")
            return
        preview = "engRing" in self._query and "sigRing" in self._query
        target = (platform, "preview" if preview else "production", arch)
        engine, definition, date = self.owner._versions(target)
        if action == "info":
            fault = self._take_fault("manifest", self.command == "GET")
            if fault and fault.mode in _STATUS_MODES:
                self._status_fault(fault)
                return
            if fault and fault.mode == "garbage":
                body = GARBAGE_MANIFEST
            else:
                body = (
                    '<?xml version="1.0" encoding="utf-8"?>\n'
                    f"<versions><engine>{engine}</engine>"
                    f'<signatures date="{date}">{definition}</signatures>'
                    f"<platform>{PLATFORM_VERSION}</platform></versions>"
                ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/xml")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            if self.command == "GET":
                self._stream(io.BytesIO(body).read, 0, len(body), fault)
            return
        fault = self._take_fault("redirect", False)
        if fault:
            self._status_fault(fault)
            return
        # 302 to a versioned file URL, as fwlink redirects to the CDN: the client learns the
        # version from the URL and a slow download is not disturbed by a later release.
        host = self.headers.get("Host") or "{}:{}".format(*self.server.server_address[:2])
        location = f"http://{host}/files/{_target_key(target)}/{definition}/updates.zip"
        self._simple(302, b"", "text/plain", {"Location": location, "Cache-Control": "no-cache"})

    def _file(self, path: str):
        parts = path.strip("/").split("/")
        target = tuple(parts[1:4])
        if len(parts) != 6 or parts[5] != "updates.zip" or not self.owner._issued(target, parts[4]):
            self._simple(404, b"Not Found\n", "text/plain")
            return
        pkg = self.owner._package(target, parts[4])
        headers = {
            "ETag": pkg.etag,
            "Last-Modified": pkg.last_modified,
            "Accept-Ranges": "bytes",
        }
        status, start, length = self._plan(pkg)
        has_body = self.command == "GET" and status in (200, 206)
        fault = self._take_fault("package", has_body)
        if fault and fault.mode in _STATUS_MODES:
            self._status_fault(fault)
            return
        if status == 304:
            self._simple(304, b"", "application/zip", headers)
            return
        if status == 416:
            headers["Content-Range"] = f"bytes */{pkg.size}"
            self._simple(416, b"", "application/zip", headers)
            return
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{start + length - 1}/{pkg.size}"
        self.send_response(status)
        self.send_header("Content-Type", "application/zip")
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if has_body:
            with open(pkg.path, "rb") as f:
                f.seek(start)
                self._stream(f.read, start, length, fault, pkg.flips)

    def _plan(self, pkg: _Package) -> tuple[int, int, int]:
        """(status, start, length) from the conditional and Range headers."""
        inm = self.headers.get("If-None-Match")
        if inm and (inm.strip() == "*" or pkg.etag in [t.strip() for t in inm.split(",")]):
            return 304, 0, 0
        rng = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if rng and if_range and if_range.strip() not in (pkg.etag, pkg.last_modified):
            rng = None  # the client's partial copy is stale: send the whole new file
        match = _RANGE_RE.match(rng) if rng else None
        if not match or match.groups() == ("", ""):
            return 200, 0, pkg.size  # absent, multi-range or malformed: ignore (RFC 9110)
        first, last = match.groups()
        if first == "":
            suffix = int(last)
            if suffix == 0:
                return 416, 0, 0
            start = max(0, pkg.size - suffix)
            return 206, start, pkg.size - start
        start = int(first)
        end = pkg.size - 1 if last == "" else min(int(last), pkg.size - 1)
        if start >= pkg.size:
            return 416, 0, 0
        if end < start:
            return 200, 0, pkg.size
        return 206, start, end - start + 1

    def _control(self, path: str):
        name = path[len("/_control/") :].strip("/")
        try:
            body = {}
            if self.command == "POST":
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                body = json.loads(raw) if raw.strip() else {}
                if not isinstance(body, dict):
                    raise ValueError("JSON body must be an object")
            owner = self.owner
            if (self.command, name) == ("GET", "state"):
                self._json(200, owner.state())
            elif (self.command, name) == ("GET", "requests"):
                self._json(200, {"requests": owner.requests})
            elif (self.command, name) == ("POST", "release"):
                released = owner.release(body.get("platform"), body.get("channel"), body.get("arch"))
                self._json(
                    200,
                    {
                        "released": [
                            dict(zip(("platform", "channel", "arch"), target, strict=True), definition=version)
                            for target, version in released
                        ]
                    },
                )
            elif (self.command, name) == ("POST", "withdraw"):
                served = owner.withdraw(body.get("platform"), body.get("channel"), body.get("arch"))
                self._json(
                    200,
                    {
                        "served": [
                            dict(zip(("platform", "channel", "arch"), target, strict=True), definition=version)
                            for target, version in served
                        ]
                    },
                )
            elif (self.command, name) == ("POST", "fault"):
                options = {k: body[k] for k in ("retry_after", "delay") if body.get(k) is not None}
                owner.set_fault(body.get("mode"), body.get("scope", "any"), body.get("count"), **options)
                self._json(200, {"faults": owner.faults})
            elif (self.command, name) == ("POST", "clear"):
                owner.clear_faults()
                self._json(200, {"faults": []})
            elif (self.command, name) == ("POST", "clear_requests"):
                owner.clear_requests()
                self._json(200, {"requests": []})
            else:
                self._json(404, {"error": f"no control endpoint {self.command} {path}"})
        except (ValueError, TypeError) as exc:
            self._json(400, {"error": str(exc)})


class StandinUpstream:
    """An fwlink look-alike on a real socket; start() it or use it as a context manager."""

    def __init__(self, data_dir: str | Path, package_size: int = DEFAULT_PACKAGE_SIZE, host="127.0.0.1", port=0):
        self.data_dir = Path(data_dir)
        self.package_size = parse_size(package_size)
        self.host = host
        self.port = port
        self._lock = threading.RLock()
        self._targets = {
            (p, c, a): _TargetState(INITIAL_ENGINE, INITIAL_DEFINITION, INITIAL_DATE, [INITIAL_DEFINITION])
            for p in PLATFORMS
            for c in CHANNELS
            for a in ARCHES
        }
        self._packages: dict[tuple, _Package] = {}
        self._build_locks: dict[tuple, threading.Lock] = {}
        self._faults: list[_Fault] = []
        self._log: list[dict] = []
        self._conns: set = set()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._started = False

    # -- lifecycle --------------------------------------------------------------

    def start(self) -> StandinUpstream:
        """Bind and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            return self
        self.data_dir.mkdir(parents=True, exist_ok=True)
        httpd = _Server((self.host, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._started = True  # URLs stay valid after stop(), for "upstream went away" tests
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="standin-upstream", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop open connections (so pooled clients see the server go away)."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def __enter__(self) -> StandinUpstream:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def root_url(self) -> str:
        if not self._started:  # port 0 means "pick one", known only once bound
            raise RuntimeError("StandinUpstream is not started")
        host = self.host if self.host not in ("", "0.0.0.0", "::") else "127.0.0.1"
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The value to configure as the upstream base URL."""
        return f"{self.root_url}/fwlink/"

    # -- versions ---------------------------------------------------------------

    def release(self, platform=None, channel=None, arch=None) -> list:
        """Bump the definition version of matching targets (None = all); [(target, version)]."""
        for value, allowed in ((platform, PLATFORMS), (channel, CHANNELS), (arch, ARCHES)):
            if value is not None and value not in allowed:
                raise ValueError(f"unknown {value!r}; expected one of {allowed}")
        released = []
        with self._lock:
            date = _now_iso()
            for target, state in self._targets.items():
                if (platform or target[0], channel or target[1], arch or target[2]) != target:
                    continue
                # From the newest ever handed out: after a withdrawal the next release is a new number, not the withdrawn one.
                state.definition = _bump(state.history[-1])
                state.date = date
                state.history.append(state.definition)
                released.append((target, state.definition))
        return released  # packages are built on first request: 8 targets x 1 GB up front would be wrong

    def withdraw(self, platform=None, channel=None, arch=None) -> list:
        """Serve the version before the current one again on matching targets (None = all); [(target, version)].

        What a client sees when Microsoft withdraws a bad definition: fwlink's manifest and package answer with an
        older version than they gave before. Microsoft's download script does not compare versions, it takes what
        the link gives and keeps its previous download as <channel>_back (microsoft/mdatp-xplat,
        linux/definition_downloader/xplat_offline_updates_download.sh). The withdrawn version stays downloadable
        by its own URL, as CDN files do.
        """
        withdrawn = []
        with self._lock:
            for target, state in self._targets.items():
                if (platform or target[0], channel or target[1], arch or target[2]) != target:
                    continue
                index = state.history.index(state.definition)
                if index == 0:
                    raise ValueError(
                        f"{_target_key(target)} serves its first version {state.definition}: nothing older"
                    )
                state.definition = state.history[index - 1]
                state.date = _now_iso()
                withdrawn.append((target, state.definition))
        return withdrawn

    def current(self, platform, channel, arch) -> dict:
        """Versions and package facts of one target (builds its package if needed)."""
        target = (platform, channel, arch)
        engine, definition, date = self._versions(target)
        pkg = self._package(target, definition)
        return {
            "engine": engine,
            "definition": definition,
            "date": date,
            "sha256": pkg.sha256,
            "size": pkg.size,
            "path": str(pkg.path),
            "url": f"/files/{_target_key(target)}/{definition}/updates.zip",
        }

    def state(self) -> dict:
        """JSON-ready versions per target and the fault list (builds nothing)."""
        with self._lock:
            targets = {
                _target_key(t): {
                    "engine": s.engine,
                    "definition": s.definition,
                    "date": s.date,
                    "platform_version": PLATFORM_VERSION,
                    "history": list(s.history),
                }
                for t, s in self._targets.items()
            }
            faults = [f.as_dict() for f in self._faults]
        base = self.base_url if self._started else None
        return {"base_url": base, "package_size": self.package_size, "targets": targets, "faults": faults}

    def _versions(self, target) -> tuple[str, str, str]:
        """(engine, definition, date) read together, so a concurrent release can't mix them."""
        with self._lock:
            state = self._targets.get(tuple(target))
            if state is None:
                raise ValueError(f"unknown target {target!r}")
            return state.engine, state.definition, state.date

    def _issued(self, target, version: str) -> bool:
        with self._lock:
            state = self._targets.get(tuple(target))
            return state is not None and version in state.history

    def _package(self, target, version: str) -> _Package:
        key = (*target, version)
        with self._lock:
            pkg = self._packages.get(key)
            if pkg is not None:
                return pkg
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:  # concurrent first requests build once; other targets build in parallel
            with self._lock:
                pkg = self._packages.get(key)
            if pkg is None:
                pkg = build_package(self.data_dir.joinpath(*target, version, "updates.zip"), self.package_size)
                with self._lock:
                    self._packages[key] = pkg
            return pkg

    # -- faults -----------------------------------------------------------------

    def set_fault(self, mode, scope="any", count=None, **options) -> None:
        """Add a fault for the next `count` matching requests (None: until cleared).

        Faults apply first-added first, so adding ``reset`` count=1 then ``500`` count=1
        spoils two consecutive requests in that order. Options: retry_after (429/503,
        default 1 s), delay (slow: seconds per 64 KiB, default 0.05).
        """
        mode = str(mode)
        if mode not in FAULT_MODES:
            raise ValueError(f"unknown fault mode {mode!r}; expected one of {FAULT_MODES}")
        if scope not in FAULT_SCOPES:
            raise ValueError(f"unknown fault scope {scope!r}; expected one of {FAULT_SCOPES}")
        if count is not None and (isinstance(count, bool) or int(count) != count or count < 1):
            raise ValueError("count must be a positive integer or None")
        unknown = set(options) - {"retry_after", "delay"}
        if unknown:
            raise TypeError(f"unknown fault options: {sorted(unknown)}")
        fault = _Fault(
            mode=mode,
            scope=scope,
            remaining=None if count is None else int(count),
            # Retry-After takes whole seconds (RFC 9110), so round fractions up.
            retry_after=math.ceil(float(options.get("retry_after", DEFAULT_RETRY_AFTER))),
            delay=float(options.get("delay", DEFAULT_DELAY)),
        )
        with self._lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list:
        with self._lock:
            return [f.as_dict() for f in self._faults]

    def _take_fault(self, kind: str, has_body: bool) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.applies(kind, has_body):
                    if fault.remaining is not None:
                        fault.remaining -= 1
                        if fault.remaining <= 0:
                            self._faults.remove(fault)
                    return fault
        return None

    # -- request log ------------------------------------------------------------

    @property
    def requests(self) -> list:
        """A copy of the request log (control API calls are not recorded)."""
        with self._lock:
            return [dict(entry, query=dict(entry["query"]), headers=dict(entry["headers"])) for entry in self._log]

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: dict) -> dict:
        with self._lock:
            self._log.append(entry)
        return entry

    def _update(self, entry: dict, changes: dict) -> None:
        with self._lock:
            entry.update(changes)

    def _track(self, conn, alive: bool) -> None:
        with self._lock:
            (self._conns.add if alive else self._conns.discard)(conn)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m standins.upstream", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--data-dir", help="where packages are written (default: a temporary directory)")
    parser.add_argument("--size", default="256K", help="package size, e.g. 262144, 256K, 200M, 1G")
    args = parser.parse_args(argv)
    try:
        size = parse_size(args.size)
    except ValueError as exc:
        parser.error(str(exc))
    temp_dir = None if args.data_dir else tempfile.mkdtemp(prefix="standin-")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stopping = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.set())
    upstream = StandinUpstream(args.data_dir or temp_dir, package_size=size, host=args.host, port=args.port)
    try:
        upstream.start()
        print(upstream.base_url, flush=True)
        print(f"serving {size} byte packages from {upstream.data_dir}; Ctrl-C stops", file=sys.stderr, flush=True)
        while not stopping.wait(0.5):
            pass
    finally:
        upstream.stop()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
