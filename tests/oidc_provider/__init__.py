"""A real OpenID Connect provider for the tests: django-oauth-toolkit's, in its own process (``python -m
tests.oidc_provider --port N --data DIR``), with RS256 keys, PKCE required, one registered client and users whose
Django groups are their "groups" claim.

Test-only switches (never in a real provider) make it hand out the ID tokens a relying party must refuse:
``/test/mode/?mode=`` one of ``MODES`` (signed with another key, another audience, another nonce, expired), and
``/test/groups/?username=…&groups=a,b`` changes someone's groups between two sign-ins.
"""

CLIENT_ID = "defender-portal"
CLIENT_SECRET = "portal-client-secret-for-tests"
PASSWORD = "provider password"
MODES = ("normal", "bad_signature", "wrong_audience", "wrong_nonce", "expired")
