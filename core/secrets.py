"""The one masking rule for secrets (DESIGN §4 invariant 10): what a person or a log may read of a value that can
carry a credential. The API, the pages, the audit log, alert texts and error messages all mask through here.

A URL keeps its scheme, host and port: they say where the portal connects. What can carry a credential is masked:
the user and password (``https://***@host/``), every query-string value (``?sig=***``: presigned URLs and tokens),
the fragment, and, for a URL whose path *is* the credential (Slack-, Teams- or Discord-style webhooks), the whole
path (``https://hooks.slack.com/(hidden)``). Passwords, tokens and signing secrets are never shown at all.
"""

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

MASK = "***"
HIDDEN = "(hidden)"

# How each secret-bearing field of the portal's models is masked, by model label: every such field is listed here
# (tests/core/test_secrets.py checks that no URL, password, token or secret field of a model is missing).
URL = "url"  # userinfo, query values and fragment masked
URL_SECRET_PATH = "url_secret_path"  # the same, and the path hidden: the path is the credential
SECRET = "secret"  # never shown: a password, a token, a signing secret
NOT_SECRET = "not_secret"  # a URL, token-like or hashed field that holds nothing to hide (said why in a comment)
SECRET_FIELDS = {
    "mirror.upstream": {"base_url": URL, "proxy_url": URL},
    "mirror.mirror": {"public_base_url": NOT_SECRET},  # handed to every endpoint in its managed configuration
    "mirror.signaturepackage": {"source_url": URL},  # built from the upstream's base_url
    # target: the URL or the e-mail addresses, in the audit log of a deleted channel
    "portal.alertchannel": {
        "url": URL_SECRET_PATH,
        "target": URL_SECRET_PATH,
        "secret": SECRET,
        "secret_hint": NOT_SECRET,
    },
    "portal.alertevent": {"url": NOT_SECRET},  # a page of the portal
    "core.apitoken": {"key_hash": SECRET, "hint": NOT_SECRET},
    "core.usersession": {"session_key": SECRET},  # the session cookie's value: whoever reads it is signed in
    "fleet.enrollmentsecret": {"secret_hash": SECRET, "hint": NOT_SECRET},
    # offline_url_configured: what the endpoint reports, the mirror URL the portal hands to every endpoint
    "fleet.endpoint": {"token_hash": SECRET, "token_hint": NOT_SECRET, "offline_url_configured": NOT_SECRET},
    "fleet.identityconflict": {"token_hash": SECRET, "token_hint": NOT_SECRET, "secret_hint": NOT_SECRET},
    "mirror.trustedbundlekey": {"public_key": NOT_SECRET},  # a public key: what it is for is being known
}

_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@?#]+@")
_QUERY_VALUE_RE = re.compile(r"(?P<key>[?&][^=\s&#'\"?]+=)[^&\s#'\")]+")


def mask_url(url: str, secret_path: bool = False) -> str:
    """``url`` with its credentials masked (see the module's docstring); text that is no URL comes back as it is."""
    if not url or "://" not in url:
        return url or ""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:  # not parseable as a URL (a bad port, say): mask what looks like userinfo, keep the rest
        return _USERINFO_RE.sub(rf"\g<scheme>{MASK}@", url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = (f"{MASK}@" if "@" in parts.netloc else "") + host + (f":{port}" if port is not None else "")
    if secret_path:
        return (
            f"{parts.scheme}://{netloc}/{HIDDEN}"
            if parts.path.strip("/") or parts.query
            else f"{parts.scheme}://{netloc}/"
        )
    query = urlencode([(key, MASK) for key, _ in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def is_masked(value: str) -> bool:
    return MASK in (value or "") or HIDDEN in (value or "")


def mask_field(model_label: str, field: str, value):
    """``value`` of ``model_label``'s ``field`` as people may read it (strings only; anything else is kept)."""
    rule = SECRET_FIELDS.get(model_label, {}).get(field)
    if not isinstance(value, str) or rule in (None, NOT_SECRET):
        return mask_text(value) if isinstance(value, str) else value
    if rule == SECRET:
        return MASK if value else ""
    return mask_url(value, secret_path=rule == URL_SECRET_PATH)


def mask_details(model_label: str, details: dict) -> dict:
    """Audit details about an object of ``model_label``: its secret fields masked, whether recorded as a value,
    as {"from": …, "to": …}, or inside {"fields": {…}}; any other text loses URL credentials (``mask_text``)."""

    def masked(name, value):
        if isinstance(value, dict):
            return {key: masked(name if key in ("from", "to") else key, item) for key, item in value.items()}
        if isinstance(value, list):
            return [masked(name, item) for item in value]
        return mask_field(model_label, name, value)

    return {name: masked(name, value) for name, value in (details or {}).items()}


def mask_text(text: str, *urls: str, secret_path: bool = False) -> str:
    """A message (an error, an alert's text) with URL credentials masked: any ``user:password@`` and query-string
    value in it, and the secret parts of each of ``urls`` (their query, and their path when ``secret_path``)
    wherever they are quoted."""
    if not text:
        return text or ""
    text = _USERINFO_RE.sub(rf"\g<scheme>{MASK}@", text)
    text = _QUERY_VALUE_RE.sub(rf"\g<key>{MASK}", text)
    for url in urls:
        if not url or "://" not in url:
            continue
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        if parts.username or parts.password:
            userinfo = parts.netloc.rsplit("@", 1)[0]
            text = text.replace(userinfo + "@", f"{MASK}@")
        secrets = [parts.query] + ([parts.path] if secret_path and parts.path.strip("/") else [])
        for secret in sorted({item for item in secrets if item}, key=len, reverse=True):
            text = text.replace(secret, HIDDEN)
    return text


def restore_masked(given: str, stored: str, secret_path: bool = False) -> str | None:
    """An edited URL sent back as shown (masked): the stored one when the rest is unchanged, else None (the
    caller asks for the credentials again). A value without a mask is the new value itself."""
    if not is_masked(given):
        return given
    if stored and mask_url(stored, secret_path) == given:
        return stored
    return None
