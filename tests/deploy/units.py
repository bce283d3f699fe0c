"""deploy/systemd/*.service read the way systemd reads them, so that tests run exactly their commands."""

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "deploy" / "systemd"
INSTALLED_AT = "/opt/defender-portal"  # WorkingDirectory= of the units: the checkout, with its .venv


def service_settings(name: str) -> dict[str, list[str]]:
    """The [Service] section of deploy/systemd/<name>: each setting's values in order (continuations joined)."""
    text = re.sub(r"\\\n[ \t]*", " ", (UNITS / name).read_text())
    section, found = None, {}
    for line in map(str.strip, text.splitlines()):
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def service_environment(service: dict, environment_file: dict) -> dict[str, str]:
    """Environment= assignments, then the EnvironmentFile='s, which override them (systemd.exec(5))."""
    env = {}
    for line in service.get("Environment", []):
        for assignment in shlex.split(line):
            key, _, value = assignment.partition("=")
            env[key] = value
    env.update(environment_file)
    return env


def exec_start(service: dict, env: dict, python: str) -> list[str]:
    """ExecStart= as systemd runs it: ${NAME} from env, %% unescaped, the venv's python replaced by ``python``."""
    (line,) = service["ExecStart"]
    words = [re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word).replace("%%", "%") for word in shlex.split(line)]
    assert words[0] == f"{INSTALLED_AT}/.venv/bin/python", words[0]
    return [python, *words[1:]]
