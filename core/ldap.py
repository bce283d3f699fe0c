"""Sign-in with LDAP / Active Directory: an authentication backend on ldap3 that asks the directory, and
core.directory that decides.

The backend binds as the service account (LDAP_BIND_DN), finds the person with LDAP_USER_FILTER (the username
escaped as RFC 4515 says, so ``*)(uid=*`` matches nobody), binds as them with the password given, and reads their
groups: the LDAP_GROUP_ATTRIBUTE of their entry (``memberOf`` on Active Directory) and, when LDAP_GROUP_SEARCH_BASE
is set, the groups whose LDAP_GROUP_FILTER names them (OpenLDAP's groupOfNames). Those group DNs go to
``core.directory.sign_in_from_directory``, which alone decides whether the person gets an account and which role.

Why not django-python3-ldap's own backend (installed; our settings follow its names): it creates or updates the
Django user itself (``update_or_create`` by username, before any hook may refuse), which would take over a local
account of the same name and leave a user behind for someone no mapping admits; and it logs and swallows a server
that is down or refuses TLS, which here must be a clear error on the sign-in page.

TLS: ldaps:// or LDAP_START_TLS, the server's certificate always verified (against LDAP_CA_FILE, or the system's
CAs) and its name checked; a failure is an error, never a fallback to clear text.
"""

import logging
import ssl
import uuid
from dataclasses import dataclass

import ldap3
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.core.checks import Warning, register
from django.core.exceptions import PermissionDenied
from django.utils.translation import gettext as _
from ldap3.core.exceptions import LDAPException, LDAPStartTLSError
from ldap3.utils.conv import escape_filter_chars

from core.choices import AccountSource
from core.directory import sign_in_from_directory
from core.errors import Refused

logger = logging.getLogger(__name__)

# The entry's stable id, whichever the server has: a renamed or moved person keeps it (their DN changes).
ID_ATTRIBUTES = ("objectGUID", "entryUUID")


class DirectoryUnavailable(Exception):
    """The directory could not be asked: down, too slow, or its TLS could not be verified."""

    def __init__(self, message: str, detail: str):
        super().__init__(detail)
        self.message = message  # for the person signing in
        self.detail = detail  # for the log


@dataclass(frozen=True)
class LdapSettings:
    """The LDAP_* settings (portal/settings.py, from the environment)."""

    url: str
    start_tls: bool
    ca_file: str
    bind_dn: str
    bind_password: str
    user_search_base: str
    user_filter: str
    group_attribute: str
    group_search_base: str
    group_filter: str
    timeout: int

    @classmethod
    def current(cls) -> "LdapSettings":
        return cls(
            url=settings.LDAP_URL or "",
            start_tls=settings.LDAP_START_TLS,
            ca_file=settings.LDAP_CA_FILE or "",
            bind_dn=settings.LDAP_BIND_DN or "",
            bind_password=settings.LDAP_BIND_PASSWORD or "",
            user_search_base=settings.LDAP_USER_SEARCH_BASE or "",
            user_filter=settings.LDAP_USER_FILTER,
            group_attribute=settings.LDAP_GROUP_ATTRIBUTE or "",
            group_search_base=settings.LDAP_GROUP_SEARCH_BASE or "",
            group_filter=settings.LDAP_GROUP_FILTER,
            timeout=settings.LDAP_TIMEOUT,
        )

    @property
    def ldaps(self) -> bool:
        return self.url.lower().startswith("ldaps://")

    def problems(self) -> list[str]:
        """What keeps this configuration from working, or from being safe (the system check's words)."""
        if not self.url:
            return []
        found = []
        if not self.url.lower().startswith(("ldap://", "ldaps://")):
            found.append(f"LDAP_URL={self.url!r} is neither ldap:// nor ldaps://.")
        if not self.user_search_base:
            found.append("LDAP_USER_SEARCH_BASE is not set: nobody can be found.")
        if "%(user)s" not in self.user_filter:
            found.append(f"LDAP_USER_FILTER={self.user_filter!r} does not contain %(user)s.")
        if bool(self.bind_dn) != bool(self.bind_password):
            found.append("LDAP_BIND_DN and LDAP_BIND_PASSWORD (or LDAP_BIND_PASSWORD_FILE) go together.")
        if not self.group_attribute and not self.group_search_base:
            found.append("Neither LDAP_GROUP_ATTRIBUTE nor LDAP_GROUP_SEARCH_BASE is set: nobody gets a role.")
        if self.group_search_base and "%(dn)s" not in self.group_filter:
            found.append(f"LDAP_GROUP_FILTER={self.group_filter!r} does not contain %(dn)s.")
        if self.ldaps and self.start_tls:
            found.append("LDAP_START_TLS is for ldap:// URLs; an ldaps:// URL is already encrypted.")
        if not self.ldaps and not self.start_tls:
            found.append("LDAP_URL is ldap:// without LDAP_START_TLS: passwords cross the network in clear text.")
        if self.ca_file:
            try:
                ssl.create_default_context(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                found.append(f"LDAP_CA_FILE={self.ca_file} cannot be read as PEM certificates: {exc}.")
        if self.timeout <= 0:
            found.append("LDAP_TIMEOUT must be a positive number of seconds.")
        return found


@register()
def check_ldap_settings(app_configs, **kwargs):
    return [
        Warning(problem, hint="See README.md, Sign-in › LDAP / Active Directory.", id="portal.W020")
        for problem in LdapSettings.current().problems()
    ]


@dataclass(frozen=True)
class DirectoryPerson:
    """Who the directory says signed in."""

    dn: str
    external_id: str
    email: str
    groups: list[str]


def user_filter(template: str, username: str) -> str:
    """The search filter for ``username``, escaped as RFC 4515 says: ``*``, ``(``, ``)``, ``\\`` and NUL lose their
    meaning, so a typed ``*)(uid=*`` looks for someone literally named that."""
    return template % {"user": escape_filter_chars(username)}


def _server(config: LdapSettings) -> ldap3.Server:
    # Verified always: against LDAP_CA_FILE, or the system's CAs when it is not set; ldap3 checks the name too.
    tls = ldap3.Tls(validate=ssl.CERT_REQUIRED, ca_certs_file=config.ca_file or None)
    return ldap3.Server(config.url, use_ssl=config.ldaps, tls=tls, get_info=ldap3.NONE, connect_timeout=config.timeout)


def _connect(server: ldap3.Server, config: LdapSettings, dn: str | None, password: str | None) -> ldap3.Connection:
    """An open (and, with LDAP_START_TLS, encrypted) connection, bound as ``dn`` if the directory accepts the
    password (``connection.bound`` says). DirectoryUnavailable when the server cannot be reached or trusted."""
    connection = ldap3.Connection(
        server,
        user=dn,
        password=password,
        auto_bind=ldap3.AUTO_BIND_NONE,
        read_only=True,
        receive_timeout=config.timeout,
        raise_exceptions=False,
    )
    try:
        connection.open(read_server_info=False)
        if config.start_tls:
            # Raises when the server refuses or its certificate fails: there is no going on in clear text.
            connection.start_tls(read_server_info=False)
        connection.bind(read_server_info=False)
    except LDAPStartTLSError as exc:
        _close(connection)
        raise DirectoryUnavailable(_tls_failure(), f"StartTLS with {config.url} failed: {exc}") from exc
    except LDAPException as exc:
        _close(connection)
        if "certificate" in str(exc).lower() or isinstance(exc.__cause__, ssl.SSLError):
            raise DirectoryUnavailable(_tls_failure(), f"TLS with {config.url} failed: {exc}") from exc
        raise DirectoryUnavailable(_unreachable(), f"{config.url} could not be reached: {exc}") from exc
    return connection


def _close(connection: ldap3.Connection) -> None:
    try:
        connection.unbind()
    except LDAPException:
        pass  # a connection that failed half-way has no socket left to say goodbye on


def _tls_failure() -> str:
    return _(
        "The directory server's identity could not be verified over TLS, so no password was sent to it. Directory "
        "accounts cannot sign in until an admin fixes the LDAP TLS settings; local accounts still can."
    )


def _unreachable() -> str:
    return _(
        "The directory server could not be reached, so directory accounts cannot sign in right now; local "
        "accounts still can. Try again in a few minutes, or tell an admin."
    )


def _values(attributes: dict, name: str) -> list:
    for key, value in attributes.items():  # attribute names compare without case
        if key.lower() == name.lower():
            return list(value) if isinstance(value, list | tuple) else [value]
    return []


def _external_id(entry: dict) -> str:
    raw = entry.get("raw_attributes") or {}
    for name in ID_ATTRIBUTES:
        for value in _values(raw, name):
            if name == "objectGUID" and len(value) == 16:
                return str(uuid.UUID(bytes_le=bytes(value)))  # AD's GUID: 16 bytes, little-endian
            if value:
                return value.decode() if isinstance(value, bytes) else str(value)
    return entry["dn"]  # a server with neither: the DN, which changes when the entry moves


def find_person(config: LdapSettings, username: str, password: str) -> DirectoryPerson | None:
    """The person ``username`` if the directory knows them and ``password`` is theirs, else None.
    DirectoryUnavailable when the directory cannot be asked."""
    if not username or not password:
        return None  # an empty password is an "unauthenticated bind", which many servers accept: never a sign-in
    server = _server(config)
    service = _connect(server, config, config.bind_dn or None, config.bind_password or None)
    try:
        if not service.bound:
            raise DirectoryUnavailable(
                _unreachable(), f"{config.url} refused the service account {config.bind_dn!r}: {service.result}"
            )
        attributes = [*ID_ATTRIBUTES, "mail"] + ([config.group_attribute] if config.group_attribute else [])
        service.search(
            config.user_search_base,
            user_filter(config.user_filter, username),
            search_scope=ldap3.SUBTREE,
            attributes=attributes,
            size_limit=2,
            time_limit=config.timeout,
        )
        entries = [entry for entry in service.response or [] if entry.get("type") == "searchResEntry"]
        if len(entries) != 1:
            return None  # nobody, or two people answering to the name: neither is a sign-in
        entry = entries[0]
        person = _connect(server, config, entry["dn"], password)
        try:
            if not person.bound:
                return None  # wrong password (or the account is disabled in the directory)
        finally:
            _close(person)
        groups = [str(group) for group in _values(entry.get("attributes") or {}, config.group_attribute)]
        if config.group_search_base:
            service.search(
                config.group_search_base,
                config.group_filter % {"dn": escape_filter_chars(entry["dn"])},
                search_scope=ldap3.SUBTREE,
                attributes=[],
                time_limit=config.timeout,
            )
            groups += [found["dn"] for found in service.response or [] if found.get("type") == "searchResEntry"]
        email = next(iter(_values(entry.get("attributes") or {}, "mail")), "")
        return DirectoryPerson(entry["dn"], _external_id(entry), str(email or ""), groups)
    except LDAPException as exc:
        raise DirectoryUnavailable(_unreachable(), f"{config.url} failed during the search: {exc}") from exc
    finally:
        _close(service)


def _signs_in_elsewhere(username: str) -> bool:
    """Whether ``username`` is a portal account that is not LDAP's (a local one, the break-glass admin among them,
    or OpenID Connect's): the directory is not asked, so it signs in at once even when the directory is down, and
    is never taken over."""
    user = get_user_model().objects.filter(username__iexact=username).select_related("account").first()
    if user is None:
        return False
    account = getattr(user, "account", None)
    return account is None or account.source != AccountSource.LDAP


class LdapBackend(ModelBackend):
    """Listed after axes and before ModelBackend when LDAP_URL is set (portal/settings.py). A wrong password is
    None, an ordinary failed sign-in that axes counts; an unreachable or untrusted directory and a refusal by
    core.directory add their message to the sign-in page."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        config = LdapSettings.current()
        if not config.url or not username or not password or _signs_in_elsewhere(username):
            return None
        try:
            person = find_person(config, username, password)
        except DirectoryUnavailable as exc:
            logger.warning("LDAP sign-in of %r: %s", username, exc.detail)
            _tell(request, exc.message)
            return None  # the next backend (local accounts) still has its say
        if person is None:
            return None
        try:
            user = sign_in_from_directory(
                AccountSource.LDAP, person.external_id, username, person.groups, person.email, request
            )
        except Refused as refusal:
            _tell(request, refusal.message)
            raise PermissionDenied(refusal.message) from None  # no other backend may sign this person in
        return user if self.user_can_authenticate(user) else None


def _tell(request, message: str) -> None:
    if request is not None:
        messages.error(request, message, fail_silently=True)
