"""Sign-in with OpenID Connect (Microsoft Entra ID, Keycloak, Okta, any compliant provider), on mozilla-django-oidc.

The library runs the authorization code flow with PKCE, a nonce and a state kept in the session; this module adds
what the portal needs on top of it:

- the provider's endpoints from its discovery document (``OIDC_ISSUER``/.well-known/openid-configuration, read when
  first needed and kept an hour), or from the explicit ``OIDC_OP_*`` settings;
- every request to the provider through the outbound policy (core.outbound; the library calls ``requests.get``
  and ``requests.post`` itself, so the three methods that do are overridden here);
- an ID token checked fully: signature, audience (the library skips it), issuer, expiry, nonce;
- the person signed in by core.directory's one rule (the role from the admin's RoleMapping rules, no mapping no
  account), never by the library's e-mail matching;
- every failure a sentence on the sign-in page and a ``user.sign_in_refused`` event, never a 500: a provider that
  is down, a token that is wrong, a person with no mapped role.

The password form stays whatever the state of the provider: a local admin can always sign in (break-glass).
"""

import logging
import re

import jwt
import requests
from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.exceptions import SuspiciousOperation
from django.http import Http404
from django.shortcuts import redirect
from django.utils.encoding import smart_str
from django.utils.translation import gettext as _
from django.views import View
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from core.choices import AccountSource
from core.directory import sign_in_from_directory
from core.errors import Refused
from core.outbound import OutboundRefused, policy_session
from core.services import record_event

logger = logging.getLogger(__name__)

# The discovery document's names for the endpoints, and the settings that give them explicitly.
ENDPOINT_SETTINGS = {
    "authorization_endpoint": "OIDC_OP_AUTHORIZATION_ENDPOINT",
    "token_endpoint": "OIDC_OP_TOKEN_ENDPOINT",
    "userinfo_endpoint": "OIDC_OP_USER_ENDPOINT",
    "jwks_uri": "OIDC_OP_JWKS_ENDPOINT",
}
DISCOVERY_SECONDS = 3600
CLOCK_SKEW_SECONDS = 60


class SignInFailed(Exception):
    """Why a sign-in with the provider did not happen, in words for the person on the sign-in page."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


def oidc_enabled() -> bool:
    """On when a client id and a provider (an issuer, or the endpoints themselves) are set."""
    return bool(
        getattr(settings, "OIDC_RP_CLIENT_ID", "")
        and (getattr(settings, "OIDC_ISSUER", "") or getattr(settings, "OIDC_OP_AUTHORIZATION_ENDPOINT", ""))
    )


def provider_name() -> str:
    return getattr(settings, "OIDC_PROVIDER_NAME", "") or "OpenID Connect"


def provider_session() -> requests.Session:
    """A requests session to the provider: the outbound policy on every hop, the proxy and CA the admin set."""
    session = policy_session()
    if settings.OIDC_PROXY:
        session.proxies = {"http": settings.OIDC_PROXY, "https": settings.OIDC_PROXY}
    if settings.OIDC_CA_BUNDLE:
        session.verify = settings.OIDC_CA_BUNDLE
    return session


def unreachable(exc: Exception) -> SignInFailed:
    """The provider did not answer as it should. Only the kind of failure is told, never what it answered
    (DESIGN §4 invariant 9); the log has the rest."""
    logger.warning("OpenID Connect provider: %s", exc)
    if isinstance(exc, OutboundRefused):
        reason = _("the outbound policy does not allow its address (OUTBOUND_ALLOWED_NETWORKS)")
    elif isinstance(exc, requests.Timeout):
        reason = _("no answer within %(seconds)s seconds") % {"seconds": settings.OIDC_TIMEOUT}
    elif isinstance(exc, requests.HTTPError) and exc.response is not None:
        reason = _("it answered HTTP %(status)s") % {"status": exc.response.status_code}
    elif isinstance(exc, requests.ConnectionError):
        reason = _("it could not be reached")
    else:
        reason = _("its answer could not be read")
    return SignInFailed(
        _("%(provider)s did not answer as it should (%(reason)s). Try again later, or sign in with a portal account.")
        % {"provider": provider_name(), "reason": reason}
    )


def provider_endpoints() -> dict:
    """The provider's endpoints and issuer: the explicit settings, the rest from the issuer's discovery document."""
    explicit = {key: getattr(settings, name, "") or "" for key, name in ENDPOINT_SETTINGS.items()}
    issuer = (settings.OIDC_ISSUER or "").rstrip("/")
    if all(explicit.values()) or not issuer:
        return {**explicit, "issuer": issuer}
    key = f"core.oidc.discovery:{issuer}"
    if (endpoints := cache.get(key)) is not None:
        return endpoints
    try:
        response = provider_session().get(f"{issuer}/.well-known/openid-configuration", timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        document = response.json()
    except (requests.RequestException, OutboundRefused, ValueError) as exc:
        raise unreachable(exc) from None
    if not isinstance(document, dict) or str(document.get("issuer", "")).rstrip("/") != issuer:
        raise SignInFailed(
            _(
                "The discovery document of %(issuer)s names another issuer; check OIDC_ISSUER (it must be exactly "
                "the issuer the provider announces)."
            )
            % {"issuer": issuer}
        )
    endpoints = {name: explicit[name] or str(document.get(name) or "") for name in ENDPOINT_SETTINGS}
    endpoints["issuer"] = str(document["issuer"])
    cache.set(key, endpoints, DISCOVERY_SECONDS)
    return endpoints


def claim_values(claims: dict) -> list[str]:
    """The values the role mappings are matched against: every OIDC_ROLE_CLAIM claim, a list or one string."""
    values = []
    for name in settings.OIDC_ROLE_CLAIM:
        value = claims.get(name)
        if isinstance(value, str):
            values.append(value)
        elif isinstance(value, list | tuple):
            values.extend(str(item) for item in value if isinstance(item, str | int))
    return values


def refuse(request, message: str) -> None:
    record_event(None, "user.sign_in_refused", None, {"source": AccountSource.OIDC, "reason": message}, request)


class OIDCBackend(OIDCAuthenticationBackend):
    """The callback's authentication backend (after django-axes' in AUTHENTICATION_BACKENDS): a password sign-in
    is not its business; a code from the provider is exchanged, the ID token checked, the person signed in by
    core.directory. A failure leaves its sentence on ``request.oidc_error`` and returns None."""

    def __init__(self, *args, **kwargs):
        # The library reads the endpoints from settings here; they come from discovery, when a sign-in needs them.
        self.UserModel = get_user_model()

    def authenticate(self, request, **kwargs):
        if request is None or "nonce" not in kwargs or not oidc_enabled():
            return None  # a password sign-in, or OIDC off
        try:
            self.configure()
            return super().authenticate(request, **kwargs)
        except SignInFailed as failure:
            message = failure.message
            refuse(request, message)
        except Refused as refusal:  # core.directory's rule; it has recorded the refusal itself
            message = refusal.message
        except (requests.RequestException, OutboundRefused, ValueError) as exc:
            message = unreachable(exc).message
            refuse(request, message)
        except SuspiciousOperation as exc:
            message = _("%(provider)s's answer was refused: %(reason)s") % {
                "provider": provider_name(),
                "reason": str(exc),
            }
            refuse(request, message)
        request.oidc_error = message
        return None

    def configure(self) -> None:
        endpoints = provider_endpoints()
        self.issuer = endpoints["issuer"]
        self.OIDC_OP_TOKEN_ENDPOINT = endpoints["token_endpoint"]
        self.OIDC_OP_USER_ENDPOINT = endpoints["userinfo_endpoint"]
        self.OIDC_OP_JWKS_ENDPOINT = endpoints["jwks_uri"]
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        self.OIDC_RP_CLIENT_SECRET = settings.OIDC_RP_CLIENT_SECRET
        self.OIDC_RP_SIGN_ALGO = settings.OIDC_RP_SIGN_ALGO
        self.OIDC_RP_IDP_SIGN_KEY = None

    # --- The provider's three requests, through the outbound policy -----------------------------------------------

    def get_token(self, payload):
        response = provider_session().post(self.OIDC_OP_TOKEN_ENDPOINT, data=payload, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()  # an HTTPError: its status is told, its body (which may echo the code) is not
        return response.json()

    def retrieve_matching_jwk(self, token):
        response = provider_session().get(self.OIDC_OP_JWKS_ENDPOINT, timeout=settings.OIDC_TIMEOUT)
        response.raise_for_status()
        header = jwt.get_unverified_header(token)
        for key in response.json().get("keys", []):
            if key.get("kid") != smart_str(header.get("kid")) or key.get("alg", header.get("alg")) != header.get("alg"):
                continue
            return jwt.PyJWK(key)
        raise SignInFailed(
            _("The identity token was signed with a key %(provider)s does not publish; nothing was signed in.")
            % {"provider": provider_name()}
        )

    def get_userinfo(self, access_token, id_token, payload):
        if not self.OIDC_OP_USER_ENDPOINT:
            return {}
        response = provider_session().get(
            self.OIDC_OP_USER_ENDPOINT,
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=settings.OIDC_TIMEOUT,
        )
        response.raise_for_status()
        if response.headers.get("content-type", "").lower().startswith("application/jwt"):
            return self.verify_token(response.text)
        return response.json()

    # --- The ID token: every check, each with its own sentence ----------------------------------------------------

    def verify_token(self, token, **kwargs):
        if not token:
            raise SignInFailed(_("%(provider)s gave no identity token.") % {"provider": provider_name()})
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise SignInFailed(_("The identity token is not a JSON Web Token; nothing was signed in.")) from None
        if header.get("alg") != self.OIDC_RP_SIGN_ALGO:
            raise SignInFailed(
                _("The identity token is signed with %(alg)s, not %(expected)s (OIDC_RP_SIGN_ALGO).")
                % {"alg": str(header.get("alg"))[:20], "expected": self.OIDC_RP_SIGN_ALGO}
            )
        key = (
            self.OIDC_RP_CLIENT_SECRET if self.OIDC_RP_SIGN_ALGO.startswith("HS") else self.retrieve_matching_jwk(token)
        )
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=[self.OIDC_RP_SIGN_ALGO],
                audience=self.OIDC_RP_CLIENT_ID,
                issuer=self.issuer or None,
                leeway=CLOCK_SKEW_SECONDS,
                options={"require": ["exp", "iat", "sub", "aud"]},
            )
        except jwt.InvalidSignatureError:
            message = _("The identity token's signature is not %(provider)s's; nothing was signed in.")
        except jwt.ExpiredSignatureError:
            message = _(
                "The identity token has expired; check that the clocks of the portal and of %(provider)s agree, "
                "then sign in again."
            )
        except jwt.InvalidAudienceError:
            message = _(
                "The identity token was issued for another application, not this portal (its audience is not "
                "OIDC_RP_CLIENT_ID); nothing was signed in."
            )
        except jwt.InvalidIssuerError:
            message = _("The identity token comes from another issuer than OIDC_ISSUER; nothing was signed in.")
        except jwt.InvalidTokenError as exc:
            message = _("The identity token is not valid (%(reason)s); nothing was signed in.") % {"reason": exc}
        else:
            if "nonce" in kwargs and payload.get("nonce") != kwargs["nonce"]:
                raise SignInFailed(
                    _(
                        "The identity token does not belong to this sign-in (its nonce is another one); nothing "
                        "was signed in. Sign in again."
                    )
                )
            return payload
        raise SignInFailed(message % {"provider": provider_name()} if "%(provider)s" in message else message)

    # --- The person: core.directory's rule ------------------------------------------------------------------------

    def get_or_create_user(self, access_token, id_token, payload):
        userinfo = self.get_userinfo(access_token, id_token, payload)
        if userinfo.get("sub") != payload.get("sub"):
            # OpenID Connect Core 5.3.2: user information about another subject must not be used; the signed
            # token alone still says who signs in (and Entra ID puts groups, names and e-mail in it).
            logger.warning("OpenID Connect: the userinfo answer's sub is not the ID token's; ignored")
            userinfo = {}
        claims = {**userinfo, **payload}  # the signed token wins; the user information adds what it lacks
        issuer = str(payload.get("iss") or self.issuer)
        username = str(claims.get(settings.OIDC_USERNAME_CLAIM) or claims.get("email") or claims["sub"])[:150]
        return sign_in_from_directory(
            AccountSource.OIDC,
            external_id=f"{issuer}#{claims['sub']}",
            username=username,
            values=claim_values(claims),
            email=str(claims.get("email") or "")[:254],
            request=self.request,
        )


class OIDCSignInView(OIDCAuthenticationRequestView):
    """/oidc/authenticate/: to the provider's sign-in page, with state, nonce and PKCE (the library's)."""

    def __init__(self, **kwargs):
        View.__init__(self, **kwargs)  # the library's reads the endpoint from settings; discovery gives it here

    def get(self, request):
        if not oidc_enabled():
            raise Http404
        try:
            self.OIDC_OP_AUTH_ENDPOINT = provider_endpoints()["authorization_endpoint"]
        except SignInFailed as failure:
            refuse(request, failure.message)
            messages.error(request, failure.message)
            return redirect(settings.LOGIN_URL)
        self.OIDC_RP_CLIENT_ID = settings.OIDC_RP_CLIENT_ID
        return super().get(request)


class OIDCCallbackView(OIDCAuthenticationCallbackView):
    """/oidc/callback/: where the provider sends the person back; a failure is a sentence on the sign-in page."""

    def get(self, request):
        if not oidc_enabled():
            raise Http404
        if error := request.GET.get("error"):
            code = error if re.fullmatch(r"[a-z_]{1,40}", error) else "error"
            request.oidc_error = _("%(provider)s did not sign you in (%(code)s).") % {
                "provider": provider_name(),
                "code": code,
            }
            refuse(request, request.oidc_error)
        try:
            return super().get(request)
        except SuspiciousOperation:  # the state is not one this browser's session started
            request.oidc_error = _(
                "This sign-in was not started in this browser, or was already used; start again from the sign-in page."
            )
            refuse(request, request.oidc_error)
            return self.login_failure()

    def login_failure(self):
        messages.error(
            self.request,
            getattr(self.request, "oidc_error", None)
            or _("Sign-in with %(provider)s did not finish; start again.") % {"provider": provider_name()},
        )
        return redirect(settings.LOGIN_URL)
