"""The requirement files install reproducibly: every package pinned with its hashes, production without test tools."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEST_TOOLS = {"pytest", "pytest-django", "schemathesis", "playwright", "ruff", "import-linter", "hypothesis"}


def requirements(name: str) -> list[str]:
    """The requirement lines of a pip-compile output, each with its continuation lines joined."""
    text = (ROOT / name).read_text()
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.split(" #", 1)[0].strip() for line in joined.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def package(line: str) -> str:
    return re.split(r"[\s\[=<>!~;]", line, maxsplit=1)[0].lower().replace("_", "-")


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-dev.txt"])
def test_every_requirement_is_pinned_with_a_hash(name):
    lines = requirements(name)
    assert lines, f"{name} names no package"
    for line in lines:
        assert not line.startswith("-"), f"{name}: an option line, not a pinned package: {line!r}"
        assert re.match(r"^[A-Za-z0-9._\[\],-]+==[^\s=]+\s", line + " "), f"{name}: not pinned with ==: {line!r}"
        assert re.search(r"--hash=sha256:[0-9a-f]{64}\b", line), f"{name}: no sha256 hash: {line!r}"


def test_production_requirements_name_no_test_tool():
    assert not TEST_TOOLS & {package(line) for line in requirements("requirements.txt")}


def test_the_dev_requirements_are_constrained_to_the_production_pins():
    assert "-c requirements.txt" in (ROOT / "requirements-dev.in").read_text().splitlines()
    production = {package(line): line.split()[0] for line in requirements("requirements.txt")}
    for line in requirements("requirements-dev.txt"):
        name = package(line)
        if name in production:
            assert line.split()[0] == production[name], f"requirements-dev.txt pins {name} unlike requirements.txt"


def test_kombu_is_not_pinned_in_requirements_in():
    # Celery pins the kombu it needs; a pin of our own only repeats it, or contradicts it after an upgrade.
    names = {package(line) for line in requirements("requirements.in")}
    assert "kombu" not in names
