"""Why a sync failed, in one line a person reads: the one home of that rule (issue 15).

A failure is recorded as a kind (mirror.choices.SyncErrorKind) with the host it concerns and, for an HTTP answer,
its status, next to the full text (``error``). The kind comes from the exception's type where the failure happens
(``classify``: requests and urllib3 wrap the socket's error several times); a run recorded before kinds existed,
or a run-level error (a lost worker, a shutdown), is read from its text (``classify_text``). The sentence itself
is written at display time (``Failure.summary``), in the reader's language: the run page, the mirror page, the run
list, the API's ``error_summary`` and the portal's alerts all read ``SyncRun.error_summary``.
"""

import re
import socket
import ssl
from dataclasses import dataclass
from http import HTTPStatus

import requests
import urllib3
from django.utils.translation import gettext, ngettext

from core.outbound import OutboundRefused
from mirror.choices import SyncErrorKind as Kind
from mirror.choices import TargetOutcome

# Failures a retry seconds later does not mend: the next scheduled sync tries again. Retrying them is what made a
# refused connection take 37 s to fail.
NOT_RETRIED = frozenset(
    {
        Kind.REFUSED,
        Kind.UNREACHABLE,
        Kind.DNS,
        Kind.CONNECT_TIMEOUT,
        Kind.TLS,
        Kind.CERTIFICATE,
        Kind.POLICY,
        Kind.PROXY,
    }
)
# Failures to reach the host at all: the other targets of the run, on the same upstream, are not tried after one.
UNREACHABLE = frozenset({Kind.REFUSED, Kind.UNREACHABLE, Kind.DNS, Kind.CONNECT_TIMEOUT, Kind.POLICY, Kind.PROXY})


@dataclass(frozen=True)
class Failure:
    """A classified failure: its kind, the host it concerns (host or host:port), and an HTTP status if any."""

    kind: str
    host: str = ""
    status: int | None = None

    def fields(self) -> dict:
        """What a sync result records beside its full ``error`` text."""
        found = {"error_kind": str(self.kind), "error_host": self.host}
        if self.status is not None:
            found["error_status"] = self.status
        return found

    @classmethod
    def of_result(cls, result: dict) -> "Failure":
        if result.get("error_kind") in Kind.values:
            return cls(result["error_kind"], result.get("error_host") or "", result.get("error_status"))
        return classify_text(result.get("error") or "")

    def summary(self) -> str:
        """One sentence, in the active language, without the remote's words or the URL's secrets."""
        host = party(self.host)
        kind = self.kind
        if kind == Kind.REFUSED:
            return (
                gettext("%(host)s refused the connection") % {"host": host} if host else gettext("Connection refused")
            )
        if kind == Kind.DNS:
            return (
                gettext("The name %(host)s does not resolve") % {"host": host}
                if host
                else gettext("A name does not resolve (DNS)")
            )
        if kind == Kind.UNREACHABLE:
            return gettext("%(host)s cannot be reached (no route to it)") % {"host": host or gettext("The upstream")}
        if kind == Kind.CONNECT_TIMEOUT:
            return gettext("No answer from %(host)s (connection timed out)") % {"host": host or "?"}
        if kind == Kind.TIMEOUT:
            return gettext("%(host)s stopped sending data (timed out)") % {"host": host or gettext("The upstream")}
        if kind == Kind.RESET:
            return gettext("The connection to %(host)s was cut") % {"host": host or gettext("the upstream")}
        if kind == Kind.CERTIFICATE:
            return gettext("The TLS certificate of %(host)s is not trusted") % {"host": host or gettext("the upstream")}
        if kind == Kind.TLS:
            return gettext("The TLS handshake with %(host)s failed") % {"host": host or gettext("the upstream")}
        if kind == Kind.POLICY:
            return gettext("Refused by the outbound policy: %(host)s is not an allowed address") % {"host": host or "?"}
        if kind == Kind.PROXY:
            if self.status:
                return gettext("The proxy %(host)s answered %(status)s") % {"host": host, "status": status(self.status)}
            return gettext("The proxy %(host)s cannot be used") % {"host": host or "?"}
        if kind == Kind.HTTP:
            return gettext("%(host)s answered %(status)s") % {
                "host": host or gettext("The upstream"),
                "status": status(self.status),
            }
        if kind == Kind.HTML:
            return gettext("%(host)s answered a web page instead of a package") % {
                "host": host or gettext("The upstream")
            }
        if kind == Kind.MANIFEST:
            return gettext("The upstream's version manifest cannot be read")
        if kind == Kind.INCOMPLETE:
            return gettext("The download was cut short")
        if kind == Kind.CHECKSUM:
            return gettext("The package is corrupt (checksum mismatch)")
        if kind == Kind.ZIP:
            return gettext("The package is not a valid signature zip")
        if kind == Kind.STORE:
            return gettext("The portal cannot write its store or the published tree")
        if kind == Kind.STOPPED:
            return gettext("Stopped by the worker's shutdown; the next sync resumes")
        if kind == Kind.LOST:
            return gettext("The worker running it stopped; a new sync was started")
        if kind == Kind.NOT_TAKEN:
            return gettext("No worker took it; a new sync was started")
        if kind == Kind.INTERNAL:
            return gettext("Internal error in the portal (see the worker's log)")
        return gettext("The sync failed")


def status(code) -> str:
    """``503 Service Unavailable``: the status and its standard phrase (not what the remote wrote)."""
    try:
        return f"{int(code)} {HTTPStatus(int(code)).phrase}"
    except (TypeError, ValueError):
        return str(code or "")


def party(host: str) -> str:
    """Who a person reads as having failed: Microsoft for its hosts, else the host as configured."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    if name == "microsoft.com" or name.endswith(".microsoft.com"):
        return "Microsoft"
    return host


# --- From an exception (where the failure happens) -------------------------------------------------------------


def causes(exc: BaseException):
    """The exception and every one it wraps: requests' error holds urllib3's MaxRetryError, whose reason is the
    NewConnectionError, whose cause is the socket's ConnectionRefusedError."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        reason = getattr(exc, "reason", None)
        if isinstance(reason, BaseException):
            exc = reason
        elif exc.__cause__ is not None:
            exc = exc.__cause__
        elif exc.args and isinstance(exc.args[0], BaseException):
            exc = exc.args[0]
        else:
            exc = exc.__context__


def host_of(exc: BaseException) -> str:
    """host[:port] of the connection that failed (a redirect's hop or the proxy, not always the URL's host)."""
    for cause in causes(exc):
        # MaxRetryError's own pool (NewConnectionError's ``pool`` is a deprecated alias of its ``conn``).
        for holder in (vars(cause).get("pool"), getattr(cause, "conn", None)):
            if holder is not None and getattr(holder, "host", None):
                return hostport(holder.host, getattr(holder, "port", None))
    return ""


def hostport(host: str, port) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}" if port and port not in (80, 443) else host


def classify(exc: BaseException, host: str = "") -> Failure:
    """The kind of a connection's failure, from the types it wraps."""
    chain = list(causes(exc))
    host = host_of(exc) or host

    def has(*types):
        return any(isinstance(cause, types) for cause in chain)

    if has(OutboundRefused):
        refused = next(c for c in chain if isinstance(c, OutboundRefused))
        named = re.match(r"refused by the outbound policy: (\S+) resolves to (\S+),", str(refused))
        return Failure(Kind.POLICY, named.group(1) if named else host)
    if has(urllib3.exceptions.ProxyError, requests.exceptions.ProxyError):
        proxy = next((c for c in chain if isinstance(c, urllib3.exceptions.ProxyError)), None)
        tunnel = re.search(r"Tunnel connection failed: (\d{3})", " ".join(map(str, chain)))
        return Failure(Kind.PROXY, host_of(proxy) if proxy else host, int(tunnel.group(1)) if tunnel else None)
    if has(urllib3.exceptions.NameResolutionError, socket.gaierror):
        return Failure(Kind.DNS, host)
    if has(ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc):
        return Failure(Kind.CERTIFICATE, host)
    if has(ssl.SSLError, urllib3.exceptions.SSLError, requests.exceptions.SSLError):
        return Failure(Kind.TLS, host)
    if has(ConnectionRefusedError):
        return Failure(Kind.REFUSED, host)
    if has(urllib3.exceptions.NewConnectionError) and not has(TimeoutError, socket.timeout):
        # urllib3's NewConnectionError is a ConnectTimeoutError, whatever the socket said: no route, host down…
        return Failure(Kind.UNREACHABLE, host)
    if has(urllib3.exceptions.ConnectTimeoutError, requests.exceptions.ConnectTimeout):
        return Failure(Kind.CONNECT_TIMEOUT, host)
    if has(requests.Timeout, urllib3.exceptions.TimeoutError, TimeoutError):
        return Failure(Kind.TIMEOUT, host)
    if has(urllib3.exceptions.IncompleteRead, requests.exceptions.ChunkedEncodingError):
        return Failure(Kind.INCOMPLETE, host)
    if has(ConnectionResetError, ConnectionAbortedError, urllib3.exceptions.ProtocolError, BrokenPipeError):
        return Failure(Kind.RESET, host)
    return Failure(Kind.OTHER, host)


# --- From a recorded text (runs recorded before kinds, and run-level errors) ------------------------------------

_HOST_IN_TEXT = re.compile(r"host='([^']+)', port=(\d+)")
_STATUS_IN_TEXT = re.compile(r"\bHTTP (\d{3})\b")
TEXT_KINDS = (
    # The first pattern found wins: the most specific first. Our own sentences, then urllib3's and the OS's.
    (Kind.POLICY, r"refused by the outbound policy"),
    (Kind.LOST, r"worker running this sync stopped"),
    (Kind.NOT_TAKEN, r"no worker took this sync"),
    (Kind.STOPPED, r"stopped by the worker's shutdown"),
    (Kind.INTERNAL, r"^internal error"),
    (Kind.STORE, r"cannot write the store"),
    (Kind.PROXY, r"ProxyError|Tunnel connection failed|Unable to connect to proxy"),
    (Kind.HTML, r"HTML page instead of a zip"),
    (Kind.HTTP, r"\bHTTP \d{3}\b|answered \d{3}\b"),
    (
        Kind.DNS,
        r"Name or service not known|Failed to resolve|Temporary failure in name resolution|nodename nor servname",
    ),
    (Kind.CERTIFICATE, r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"),
    (Kind.TLS, r"SSLError|SSL:|TLS"),
    (Kind.CONNECT_TIMEOUT, r"ConnectTimeout|Connection to \S+ timed out"),
    (Kind.REFUSED, r"Connection refused|connection refused"),
    (Kind.UNREACHABLE, r"No route to host|Network is unreachable"),
    (Kind.TIMEOUT, r"timed out|Read timed out"),
    (Kind.CHECKSUM, r"CRC check|checksum|sha256 mismatch"),
    (Kind.INCOMPLETE, r"shorter than announced|longer than announced|IncompleteRead|closed before the whole body"),
    (Kind.RESET, r"reset by peer|connection was reset|Connection aborted"),
    (Kind.MANIFEST, r"manifest"),
    (Kind.ZIP, r"\bzip\b|not a valid zip|zip bomb"),
)


def classify_text(text: str) -> Failure:
    for kind, pattern in TEXT_KINDS:
        if re.search(pattern, text):
            named = _HOST_IN_TEXT.search(text)
            host = hostport(named.group(1), int(named.group(2))) if named else ""
            found = _STATUS_IN_TEXT.search(text) or re.search(r"answered (\d{3})\b", text)
            code = int(found.group(1)) if found and kind in (Kind.HTTP, Kind.PROXY) else None
            return Failure(kind, host, code)
    return Failure(Kind.OTHER)


# --- A run's one line -------------------------------------------------------------------------------------------


def run_summary(run) -> str:
    """One line for a finished run that failed in part or whole; "" for one without an error."""
    if not run.error:
        return ""
    results = run.results or []
    failed = [result for result in results if result.get("outcome") == TargetOutcome.FAILED]
    if not failed:
        return classify_text(run.error).summary()
    lines = list(dict.fromkeys(Failure.of_result(result).summary() for result in failed))
    text = "; ".join(lines)
    if len(failed) < len(results):
        return ngettext(
            "%(failed)d of %(total)d target failed: %(why)s",
            "%(failed)d of %(total)d targets failed: %(why)s",
            len(results),
        ) % {"failed": len(failed), "total": len(results), "why": text}
    return text
