import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE_VARS = ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "SECRET_KEY", "SECRET_KEY_FILE", "DEBUG", "ALLOWED_HOSTS",
                "PORTAL_BASE_URL", "PORTAL_STORE_ROOT", "PORTAL_VAR_DIR")


def clean_env(var_dir, **overrides) -> dict:
    """The environment of a bare machine (none of the portal's variables), plus ``overrides``."""
    env = {key: value for key, value in os.environ.items() if key not in SERVICE_VARS and not key.startswith("PYTEST")}
    env["PORTAL_VAR_DIR"] = str(var_dir)
    env.update({key: str(value) for key, value in overrides.items()})
    return env


def run_django(code: str, env: dict) -> dict:
    """Run ``code`` in a fresh interpreter with Django set up from ``env``; it assigns ``result``."""
    script = (
        "import json, django\n"
        "django.setup()\n"
        "from django.conf import settings\n"
        f"{code}\n"
        "print('RESULT=' + json.dumps(result, default=str))\n"
    )
    env = {**env, "DJANGO_SETTINGS_MODULE": "portal.settings"}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"exit {done.returncode}: {done.stderr[-2000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("RESULT="))
    return json.loads(line.removeprefix("RESULT="))
