"""Serving files the way an HTTP mirror does (RFC 9110/9111): validators, conditional GET, single byte ranges.

Endpoints and tools (mdatp, curl, wget, another mirror) fetch the published tree
from these responses; large packages are resumed with Range, and re-checked with
If-None-Match / If-Modified-Since. The file is never read into memory: the whole
file goes out through FileResponse (so gunicorn's wsgi.file_wrapper uses
sendfile), a range through a generator over a seeked handle, and behind nginx
through X-Accel-Redirect.
"""

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.http import (
    FileResponse,
    HttpResponse,
    HttpResponseNotAllowed,
    HttpResponseNotModified,
    StreamingHttpResponse,
)
from django.utils.http import http_date, parse_etags, parse_http_date_safe, quote_etag

ALLOWED_METHODS = ["GET", "HEAD"]
CHUNK_SIZE = 256 * 1024
# One range only: multipart/byteranges is not worth its cost to a mirror, and RFC 9110 lets
# a server ignore Range. Digits are bounded so that int() never sees an absurd number.
_RANGE_PATTERN = re.compile(r"\A\s*bytes\s*=\s*(\d{0,19})\s*-\s*(\d{0,19})\s*\Z", re.IGNORECASE)


@dataclass(frozen=True)
class _ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1


_UNSATISFIABLE = object()


def send_file(
    request, path: Path, *, content_type: str, etag: str, last_modified: datetime, accel_path: str | None = None
) -> HttpResponse:
    """Answer GET/HEAD for the file at ``path``, whose identity is ``etag`` (e.g. its sha256)."""
    if request.method not in ALLOWED_METHODS:
        return HttpResponseNotAllowed(ALLOWED_METHODS)
    headers = _validator_headers(content_type, etag, last_modified)
    if _is_not_modified(request, headers):
        return _not_modified(headers)
    prefix = settings.MIRROR_X_ACCEL_PREFIX
    if prefix and accel_path:
        # nginx sends the bytes and answers Range itself; Django only decided what to send.
        # Not our Accept-Ranges: nginx copies it onto the file's answer and adds its own ("bytes, bytes").
        del headers["Accept-Ranges"]
        response = HttpResponse(b"", content_type=content_type)
        response["X-Accel-Redirect"] = f"{prefix.rstrip('/')}/{quote(accel_path.lstrip('/'))}"
        return _with_headers(response, headers)
    try:
        handle = open(path, "rb")
    except FileNotFoundError:
        return not_found("the file is missing on the server")
    size = os.fstat(handle.fileno()).st_size
    wanted = _requested_range(request, size, headers)
    if request.method == "HEAD" or wanted is _UNSATISFIABLE:
        handle.close()
        return _bodiless(request, headers, size, wanted)
    if wanted is None:
        response = FileResponse(handle, content_type=content_type)
        response.block_size = CHUNK_SIZE  # used when the server has no sendfile
        # FileResponse names the download after the blob (its sha256); the URL already has the right name.
        del response["Content-Disposition"]
    else:
        response = StreamingHttpResponse(_FileSlice(handle, wanted), status=206, content_type=content_type)
    return _with_headers(response, headers, size, wanted)


def send_bytes(request, data: bytes, *, content_type: str, etag: str, last_modified: datetime) -> HttpResponse:
    """The same as send_file for a small body built in memory (manifest.json)."""
    if request.method not in ALLOWED_METHODS:
        return HttpResponseNotAllowed(ALLOWED_METHODS)
    headers = _validator_headers(content_type, etag, last_modified)
    if _is_not_modified(request, headers):
        return _not_modified(headers)
    wanted = _requested_range(request, len(data), headers)
    if request.method == "HEAD" or wanted is _UNSATISFIABLE:
        return _bodiless(request, headers, len(data), wanted)
    if wanted is None:
        response = HttpResponse(data, content_type=content_type)
    else:
        response = HttpResponse(data[wanted.start : wanted.end + 1], status=206, content_type=content_type)
    return _with_headers(response, headers, len(data), wanted)


# --- Decisions ----------------------------------------------------------------------------


def _validator_headers(content_type: str, etag: str, last_modified: datetime) -> dict:
    return {
        "Content-Type": content_type,
        "ETag": quote_etag(etag),
        "Last-Modified": http_date(last_modified.timestamp()),
        "Accept-Ranges": "bytes",
        # What a URL serves changes on each publication: caches may keep it but must revalidate.
        "Cache-Control": "no-cache",
    }


def _opaque(tag: str) -> str:
    return tag.removeprefix("W/")


def _is_not_modified(request, headers: dict) -> bool:
    if_none_match = request.headers.get("If-None-Match")
    if if_none_match is not None:
        # RFC 9110 §13.1.2: weak comparison; when present, If-Modified-Since is not looked at.
        tags = parse_etags(if_none_match)
        return tags == ["*"] or _opaque(headers["ETag"]) in map(_opaque, tags)
    since = parse_http_date_safe(request.headers.get("If-Modified-Since", ""))
    return since is not None and parse_http_date_safe(headers["Last-Modified"]) <= since


def _requested_range(request, size: int, headers: dict):
    """The single byte range to send: a _ByteRange, None (send everything) or _UNSATISFIABLE."""
    header = request.headers.get("Range")
    if header is None:
        return None
    if_range = request.headers.get("If-Range")
    if if_range is not None and not _if_range_matches(if_range.strip(), headers):
        return None  # the client's partial copy is of another version: it needs the whole file
    match = _RANGE_PATTERN.match(header)
    if match is None:
        return None  # malformed, another unit, or several ranges
    first, last = match.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return _UNSATISFIABLE
        return _ByteRange(max(0, size - suffix), size - 1)
    start = int(first)
    if last and int(last) < start:
        return None  # syntactically invalid (RFC 9110 §14.1.1): ignored
    if start >= size:
        return _UNSATISFIABLE
    return _ByteRange(start, min(int(last), size - 1) if last else size - 1)


def _if_range_matches(value: str, headers: dict) -> bool:
    # Strong comparison only (RFC 9110 §13.1.5): a weak tag never allows a partial response.
    if value.startswith(('"', "W/")):
        return value == headers["ETag"]
    date = parse_http_date_safe(value)
    return date is not None and date == parse_http_date_safe(headers["Last-Modified"])


# --- Responses ----------------------------------------------------------------------------


def _with_headers(response: HttpResponse, headers: dict, size: int | None = None, wanted=None) -> HttpResponse:
    for name, value in headers.items():
        response[name] = value
    if isinstance(wanted, _ByteRange):
        response["Content-Range"] = f"bytes {wanted.start}-{wanted.end}/{size}"
        response["Content-Length"] = str(wanted.length)
    elif size is not None:
        response["Content-Length"] = str(size)
    return response


def _not_modified(headers: dict) -> HttpResponse:
    # RFC 9110 §15.4.5: the validators and Cache-Control of the 200, no representation headers.
    response = HttpResponseNotModified()
    for name in ("ETag", "Last-Modified", "Cache-Control"):
        response[name] = headers[name]
    return response


def _bodiless(request, headers: dict, size: int, wanted) -> HttpResponse:
    """A HEAD answer (the headers a GET would get) or a 416."""
    if wanted is _UNSATISFIABLE:
        body = b"" if request.method == "HEAD" else f"range not satisfiable: the file has {size} bytes\n".encode()
        response = HttpResponse(body, status=416, content_type="text/plain; charset=utf-8")
        for name in ("ETag", "Last-Modified", "Accept-Ranges", "Cache-Control"):
            response[name] = headers[name]
        response["Content-Range"] = f"bytes */{size}"
        return response
    response = HttpResponse(b"", status=206 if isinstance(wanted, _ByteRange) else 200)
    # Content-Length of the body a GET would carry (RFC 9110 §9.3.2), not of this empty one.
    return _with_headers(response, headers, size, wanted)


def not_found(reason: str) -> HttpResponse:
    response = HttpResponse(reason.rstrip("\n") + "\n", status=404, content_type="text/plain; charset=utf-8")
    # A 404 is heuristically cacheable, but the URL may start serving at the next publication.
    response["Cache-Control"] = "no-cache"
    return response


class _FileSlice:
    """The bytes of one range, read in CHUNK_SIZE pieces from an open handle.

    close() is also given to the response, so the handle is released even when the
    body is never iterated (client gone before the first byte).
    """

    def __init__(self, handle, wanted: _ByteRange):
        self.handle = handle
        self.wanted = wanted

    def __iter__(self):
        try:
            self.handle.seek(self.wanted.start)
            remaining = self.wanted.length
            while remaining > 0:
                piece = self.handle.read(min(CHUNK_SIZE, remaining))
                if not piece:
                    break  # the file shrank: blobs never do, but never loop forever
                remaining -= len(piece)
                yield piece
        finally:
            self.handle.close()

    def close(self):
        self.handle.close()


def send_package_file(request, package, filename: str, last_modified: datetime) -> HttpResponse:
    """``updates.zip`` or ``manifest.json`` of a package, as every tree of the layout serves them (mirrors and rings)."""
    import hashlib

    if filename == "manifest.json":
        data = package.manifest_bytes()
        return send_bytes(
            request,
            data,
            content_type="application/json",
            etag=hashlib.sha256(data).hexdigest(),
            last_modified=last_modified,
        )
    if filename == "updates.zip":
        path = package.path
        return send_file(
            request,
            path,
            content_type="application/zip",
            etag=package.sha256,
            last_modified=last_modified,
            accel_path=path.relative_to(settings.PORTAL_STORE_ROOT).as_posix(),
        )
    return not_found(f"no file named {filename} in the layout")
