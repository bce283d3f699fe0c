"""django-oauth-toolkit's validator with the claims the portal reads, and the test modes' wrong tokens."""

import json
import time
from pathlib import Path

from django.conf import settings
from jwcrypto import jwk, jwt
from oauth2_provider.oauth2_validators import OAuth2Validator

from tests.oidc_provider import state


class Validator(OAuth2Validator):
    oidc_claim_scope = None  # every claim below goes into the ID token and the userinfo answer, whatever the scope

    def get_additional_claims(self, request):
        user = request.user
        return {
            "preferred_username": user.username,
            "email": user.email,
            "name": user.get_full_name() or user.username,
            "groups": sorted(user.groups.values_list("name", flat=True)),
        }

    def finalize_id_token(self, id_token, token, token_handler, request):
        if state.mode == "normal":
            return super().finalize_id_token(id_token, token, token_handler, request)
        claims, _ = self.get_id_token_dictionary(token, token_handler, request)
        id_token.update(**claims)
        if "nonce" not in id_token and request.nonce:
            id_token["nonce"] = request.nonce
        key = request.client.jwk_key
        header = {"typ": "JWT", "alg": "RS256", "kid": key.thumbprint()}
        if state.mode == "bad_signature":
            # Same kid as the real key, so the portal finds "its" key and must notice the signature is not by it.
            key = jwk.JWK.from_pem((Path(settings.DATA) / "other_key.pem").read_bytes())
        elif state.mode == "wrong_audience":
            id_token["aud"] = "some-other-application"
        elif state.mode == "wrong_nonce":
            id_token["nonce"] = "not-the-nonce-the-portal-sent"
        elif state.mode == "expired":
            id_token["iat"] = int(time.time()) - 3600
            id_token["exp"] = int(time.time()) - 1800
        signed = jwt.JWT(header=json.dumps(header), claims=json.dumps(id_token, default=str))
        signed.make_signed_token(key)
        return signed.serialize()
