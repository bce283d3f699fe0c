"""python -m tests.oidc_provider --port N --data DIR: migrate, seed, serve until killed ("ready" on stdout)."""

import argparse
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


def write_key(path: Path) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)


def seed():
    from django.contrib.auth.models import Group, User
    from oauth2_provider.models import get_application_model

    from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, PASSWORD

    Application = get_application_model()
    Application.objects.create(
        name="Defender portal",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        client_type=Application.CLIENT_CONFIDENTIAL,
        authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        algorithm=Application.RS256_ALGORITHM,
        skip_authorization=True,
        # The Django test client's host, and the live server's (any port on loopback, RFC 8252).
        redirect_uris=" ".join(f"http://{host}/oidc/callback/" for host in ("testserver", "127.0.0.1", "localhost")),
    )
    people = {
        "alice": ["portal-admins", "staff"],
        "oscar": ["portal-operators"],
        "victor": ["portal-viewers"],
        "nobody": ["unmapped-group"],
    }
    for username, groups in people.items():
        user = User.objects.create_user(username, f"{username}@example.test", PASSWORD)
        user.groups.set([Group.objects.get_or_create(name=name)[0] for name in groups])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    for name in ("key.pem", "other_key.pem"):
        write_key(args.data / name)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="tests.oidc_provider.settings",
        OIDC_PROVIDER_DATA=str(args.data),
        OIDC_PROVIDER_PORT=str(args.port),
    )
    import django
    from django.core.management import call_command
    from django.core.servers.basehttp import WSGIServer, run
    from django.core.wsgi import get_wsgi_application

    django.setup()
    call_command("migrate", verbosity=0)
    seed()
    print("ready", flush=True)
    sys.stdout.flush()
    run("127.0.0.1", args.port, get_wsgi_application(), threading=True, server_cls=WSGIServer)


if __name__ == "__main__":
    main()
