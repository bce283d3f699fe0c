"""Talking to an upstream: Microsoft's fwlink endpoint (DESIGN §2.1) or another mirror's tree (§2.2).

Every failure becomes an ``UpstreamError`` whose message a person can act on, with its kind (mirror.errors) for
the one-line summary. Transient failures (a cut transfer, 5xx, 429) are retried with exponential backoff and jitter,
honouring Retry-After; an interrupted download resumes with Range + If-Range from what it already has. A host that
cannot be reached at all (refused, unknown name, no answer within MIRROR_CONNECT_TIMEOUT, TLS, outbound policy) is
not retried: waiting seconds does not mend it, and the sync says so at once.
"""

import json
import os
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import requests
import urllib3
from django.conf import settings

from core.outbound import OutboundRefused, policy_session
from core.secrets import mask_text
from mirror.choices import Channel, UpstreamKind
from mirror.choices import SyncErrorKind as Kind
from mirror.errors import NOT_RETRIED, Failure, classify, hostport
from mirror.store import human_size
from mirror.streamcheck import StreamCheck, ZipStreamVerifier

USER_AGENT = "mde-offline-portal/1"
# Largest piece read at once. Reads return what has arrived (read1), so what came before a
# connection reset is on disk for the resume; at 64 KiB the per-piece Python overhead halved
# loopback throughput (bench/sync.py), and memory stays a few MiB either way.
CHUNK = 1024 * 1024
TRANSIENT_STATUS = {429, 500, 502, 503, 504}
MAX_RETRY_AFTER = 300


class UpstreamError(Exception):
    """The upstream failed in a way that a person can read and act on; ``failure`` says which way, for the summary."""

    def __init__(self, message: str, failure: Failure | None = None):
        super().__init__(message)
        self.failure = failure or Failure(Kind.OTHER)


def host_of_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        return hostport(parts.hostname or "", parts.port)
    except ValueError:
        return ""


def connect_timeouts(read_timeout) -> tuple:
    """(connect, read): a host that does not accept the connection within seconds is not there; a slow body is."""
    return (settings.MIRROR_CONNECT_TIMEOUT, read_timeout)


@dataclass(frozen=True)
class RemoteVersion:
    engine: str
    definition: str
    date: str = ""


@dataclass
class Download:
    path: Path
    sha256: str
    size: int
    url: str
    resumed_from: int = 0
    zip_check: ZipStreamVerifier | None = None  # what was verified of the zip on the way


def target_path(target) -> str:
    platform, channel, arch = target
    return f"{platform}/{channel}/arch_{arch}"


def fwlink_url(upstream, target, info: bool = False) -> str:
    platform, channel, arch = target
    query = {"linkid": upstream.link_id(platform)}
    if arch != "x86_64":
        query["arch"] = arch
    if channel == Channel.PREVIEW:
        query.update(engRing="3", sigRing="1")
    if info:
        query["action"] = "info"
    base = upstream.base_url
    return f"{base}{'&' if '?' in base else '?'}{urlencode(query)}"


def manifest_url(upstream, target) -> str:
    if upstream.kind == UpstreamKind.MIRROR:
        return f"{upstream.base_url.rstrip('/')}/{target_path(target)}/manifest.json"
    return fwlink_url(upstream, target, info=True)


def package_url(upstream, target) -> str:
    if upstream.kind == UpstreamKind.MIRROR:
        return f"{upstream.base_url.rstrip('/')}/{target_path(target)}/updates.zip"
    return fwlink_url(upstream, target)


_ENGINE_RE = re.compile(r"<\s*(?:[\w.-]+:)?engine\b[^>]*>\s*([^<\s]+)\s*<", re.I)
_SIGNATURES_RE = re.compile(r"<\s*(?:[\w.-]+:)?signatures\b([^>]*)>\s*([^<\s]+)\s*<", re.I)
_DATE_RE = re.compile(r"""date\s*=\s*["']([^"']*)["']""", re.I)
_VERSION_RE = re.compile(r"^\d+(\.\d+){1,3}$")


def parse_manifest_xml(text: str, quote: bool = True) -> RemoteVersion:
    """Read engine and definition versions from Microsoft's ``action=info`` XML, tolerantly.

    Regular expressions rather than an XML parser: the answer has been seen with
    stray whitespace, namespaces and attributes, and all we need are two values.
    """
    engine = _ENGINE_RE.search(text)
    signatures = _SIGNATURES_RE.search(text)
    if not engine and not signatures:
        raise UpstreamError(
            f"the upstream manifest has neither <engine> nor <signatures> ({describe_body(text)})", MANIFEST
        )
    if not engine or not signatures:
        missing = "<engine>" if not engine else "<signatures>"
        raise UpstreamError(f"the upstream manifest has no {missing} version", MANIFEST)
    date = (_DATE_RE.search(signatures.group(1)) or [None, ""])[1]
    return check_versions(engine.group(1), signatures.group(2), date, quote)


def parse_manifest_json(text: str, quote: bool = True) -> RemoteVersion:
    try:
        data = json.loads(text)
        return check_versions(str(data["EngineVersion"]), str(data["DefinitionVersion"]), quote=quote)
    except (ValueError, KeyError, TypeError):
        raise UpstreamError(
            f"the upstream manifest.json has no EngineVersion and DefinitionVersion ({describe_body(text)})", MANIFEST
        ) from None


MANIFEST = Failure(Kind.MANIFEST)


def check_versions(engine: str, definition: str, date: str = "", quote: bool = True) -> RemoteVersion:
    """``quote``: the bad value is named in the error (a person's own input); never what a remote answered."""
    for name, value in (("engine", engine), ("definition", definition)):
        if not _VERSION_RE.match(value):
            shown = f" {value[:40]!r}" if quote else ""
            raise UpstreamError(f"the upstream manifest's {name} version{shown} is not a version number", MANIFEST)
    return RemoteVersion(engine, definition, date)


def describe_body(text: str) -> str:
    # Never what the body says (DESIGN §4 invariant 9): a run's error is read by every role, and an upstream
    # pointed at an internal service would otherwise show people that service's answer.
    size = len(text.encode("utf-8", "replace"))
    return f"got {human_size(size)} that is not a manifest" if text.strip() else "got an empty answer"


def describe_response(response) -> str:
    kind = response.headers.get("Content-Type", "no content type").split(";")[0]
    size = response.headers.get("Content-Length")
    return f"{response.status_code}, {kind}" + (f", {human_size(int(size))}" if size and size.isdigit() else "")


def make_session(upstream) -> requests.Session:
    # Every connection and every redirect's obeys the outbound policy (OUTBOUND_ALLOWED_NETWORKS), after DNS.
    session = policy_session()
    session.headers["User-Agent"] = USER_AGENT
    # trust_env is off: the proxy is the upstream's setting, not the worker's environment
    if upstream.proxy_url:
        session.proxies = {"http": upstream.proxy_url, "https": upstream.proxy_url}
    session.verify = upstream.ca_bundle or upstream.verify_tls
    return session


class Retrier:
    """Exponential backoff with full jitter; 429/503 wait what Retry-After says."""

    def __init__(self, attempts=None, base=None):
        self.attempts = attempts or settings.MIRROR_RETRY_ATTEMPTS
        self.base = settings.MIRROR_RETRY_BACKOFF if base is None else base
        self.failures = 0

    def wait(self, retry_after: str | None = None) -> bool:
        """Sleep before the next attempt; False when attempts are exhausted."""
        self.failures += 1
        if self.failures >= self.attempts:
            return False
        delay = random.uniform(0, self.base * 2 ** (self.failures - 1))
        if retry_after and retry_after.strip().isdigit():
            delay = min(int(retry_after), MAX_RETRY_AFTER)
        time.sleep(delay)
        return True


def _status_error(response, what: str) -> UpstreamError:
    return UpstreamError(
        f"upstream returned HTTP {response.status_code} for the {what} ({describe_response(response)})",
        Failure(Kind.HTTP, host_of_url(response.url), response.status_code),
    )


def _unreachable(exc: Exception, url: str, retrier: "Retrier") -> Failure | None:
    """The failure to raise now, or None to try again (after the retrier's wait)."""
    failure = classify(exc, host_of_url(url))
    if failure.kind in NOT_RETRIED:
        retrier.failures += 1  # this attempt counts; no other is made
        return failure
    return None if retrier.wait() else failure


def fetch_version(session, upstream, target) -> RemoteVersion:
    url = manifest_url(upstream, target)
    retrier = Retrier()
    while True:
        try:
            response = session.get(url, timeout=connect_timeouts(upstream.timeout))
        except OutboundRefused as exc:
            raise UpstreamError(f"cannot reach the upstream for the manifest: {exc}", classify(exc)) from None
        except requests.RequestException as exc:
            if (failure := _unreachable(exc, url, retrier)) is None:
                continue
            raise UpstreamError(f"cannot reach the upstream for the manifest: {short_error(exc)}", failure) from None
        if response.status_code in TRANSIENT_STATUS and retrier.wait(response.headers.get("Retry-After")):
            continue
        if response.status_code != 200:
            raise _status_error(response, "manifest")
        # quote=False: what a remote answered is not echoed to people (DESIGN §4 invariant 9).
        if upstream.kind == UpstreamKind.MIRROR:
            return parse_manifest_json(response.text, quote=False)
        return parse_manifest_xml(response.text, quote=False)


def short_error(exc: Exception) -> str:
    text = str(exc)
    if isinstance(exc, (requests.Timeout, urllib3.exceptions.TimeoutError)):
        return "the upstream stopped sending data (timed out)"
    if "reset by peer" in text or "aborted" in text.lower():
        return "the connection was reset"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "the connection closed before the whole body arrived"
    # The whole text (the page shows it behind the summary), masked: requests quotes the URL, whose query may hold a
    # token. Bounded, at a word: a chain of wrapped errors can be long, and never ends mid-word.
    text = mask_text(re.sub(r"<[^>]+>", "", text))
    if len(text) > MAX_ERROR_TEXT:
        text = text[:MAX_ERROR_TEXT].rsplit(" ", 1)[0] + " …"
    return text


MAX_ERROR_TEXT = 2000


class ResumableFile:
    """A download in progress under tmp/, with what is needed to resume it: the validator it came with."""

    def __init__(self, path: Path):
        self.path = path
        self.meta_path = path.with_suffix(".json")

    def load(self) -> tuple[int, str | None]:
        try:
            meta = json.loads(self.meta_path.read_text())
            return self.path.stat().st_size, meta.get("validator")
        except (OSError, ValueError):
            return 0, None

    def save_validator(self, validator: str | None) -> None:
        self.meta_path.write_text(json.dumps({"validator": validator}))

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)
        self.meta_path.unlink(missing_ok=True)


def _body(response):
    """The body as it arrives: read1 returns what the socket has, up to CHUNK, so bytes received
    before a reset are written (and resumed from) instead of lost in a half-filled read."""
    while block := response.raw.read1(CHUNK, decode_content=True):
        yield block


def download(session, url: str, dest: Path, timeout: int, progress=None) -> Download:
    """Stream ``url`` into ``dest`` (resuming what is already there), hashing as it goes.

    ``progress(bytes_so_far, bytes_expected)`` is called as data arrives.
    """
    partial = ResumableFile(dest)
    retrier = Retrier()
    resumed_from = 0
    while True:
        have, validator = partial.load()
        headers = {}
        if have and validator:
            # If-Range: the server sends the rest only if the file is still the one we began.
            headers = {"Range": f"bytes={have}-", "If-Range": validator}
        try:
            with session.get(url, headers=headers, stream=True, timeout=connect_timeouts(timeout)) as response:
                if response.status_code in TRANSIENT_STATUS:
                    if retrier.wait(response.headers.get("Retry-After")):
                        continue
                    raise _status_error(response, "package")
                if response.status_code not in (200, 206):
                    raise _status_error(response, "package")
                content_type = response.headers.get("Content-Type", "").lower()
                if "text/html" in content_type:
                    raise UpstreamError(
                        f"upstream returned an HTML page instead of a zip ({describe_response(response)})",
                        Failure(Kind.HTML, host_of_url(response.url)),
                    )
                appending = response.status_code == 206 and have > 0
                if appending:
                    resumed_from = resumed_from or have
                else:
                    have = 0
                length = response.headers.get("Content-Length")
                expected = (have + int(length)) if length and length.isdigit() else None
                partial.save_validator(response.headers.get("ETag") or response.headers.get("Last-Modified"))
                size = have
                with open(dest, "ab" if appending else "wb") as out:
                    check = StreamCheck(out.fileno())
                    try:
                        if appending:
                            with open(dest, "rb") as existing:
                                while block := existing.read(CHUNK):
                                    check.put(block)
                        for block in _body(response):
                            out.write(block)
                            check.put(block)
                            size += len(block)
                            if progress:
                                progress(size, expected)
                        out.flush()
                        sha256 = check.finish()
                    finally:
                        check.stop()
                    os.fsync(out.fileno())
                if expected is not None and size != expected:
                    # Not a cut-off transfer to resume: the bytes themselves are wrong.
                    partial.discard()
                    raise UpstreamError(
                        f"the package download is {'longer' if size > expected else 'shorter'} than announced: got {size} of {expected} bytes",
                        Failure(Kind.INCOMPLETE, host_of_url(response.url)),
                    )
                return Download(dest, sha256, size, response.url, resumed_from, check.zip)
        except OutboundRefused as exc:
            raise UpstreamError(f"the package download failed: {exc}", classify(exc)) from None
        except (
            requests.ConnectionError,
            requests.Timeout,
            requests.exceptions.ChunkedEncodingError,
            urllib3.exceptions.HTTPError,
        ) as exc:
            if (failure := _unreachable(exc, url, retrier)) is None:
                continue
            got = dest.stat().st_size if dest.exists() else 0
            tries = f"after {retrier.failures} attempts " if retrier.failures > 1 else ""
            raise UpstreamError(
                f"the package download failed {tries}({got} bytes received): {short_error(exc)}", failure
            ) from None
