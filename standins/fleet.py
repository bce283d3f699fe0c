"""A simulated fleet: endpoints that enroll and report over HTTP like real agents, in a realistic mix
of states. Used by ``manage.py simulate_fleet``, the demo and the tests.

Each report is what agent/mde-offline-agent.sh posts: the outputs of `mdatp health` and
`mdatp health --details definitions`, printed by the stand-in mdatp (agent/testing/mdatp, which
follows Microsoft's output; its sources are in its docstring) for the endpoint's state, in the JSON
envelope or, for some endpoints, as text sections. A share of the fleet runs an agent from
101.26062.0005, which prints "DEPRECATED" for the verify-sig setting and reports
engine_signature_verification.
"""

import importlib.machinery
import importlib.util
import json
import os
import random
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import requests

# Share of endpoints per profile (a typical fleet: mostly fine, a tail of every kind of trouble).
DEFAULT_MIX = {"healthy": 70, "behind": 10, "failing": 5, "misconfigured": 5, "stale": 5, "silent": 5}
PROFILES = tuple(DEFAULT_MIX)
FAIL_REASONS = (
    "Network error: could not reach the update source",
    "Signature verification failed",
    "Not enough disk space",
)


def parse_mix(text: str) -> dict:
    """ "healthy=80,failing=20" -> {"healthy": 80, "failing": 20}; ValueError saying what is wrong."""
    mix = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, share = part.partition("=")
        if name not in PROFILES:
            raise ValueError(f"unknown profile {name!r}; use {', '.join(PROFILES)}")
        if not share.isdigit():
            raise ValueError(f"{name}: give a whole number share, e.g. {name}=10")
        mix[name] = int(share)
    if not mix or not sum(mix.values()):
        raise ValueError("the mix is empty")
    return mix


MDATP = Path(__file__).resolve().parent.parent / "agent" / "testing" / "mdatp"
APP_VERSIONS = ("101.24032.0007", "101.26062.0005")  # before and after engine signature verification (Linux)
CLOUD = "https://go.microsoft.com/fwlink/?linkid=2144709"


@lru_cache(maxsize=1)
def mdatp_standin():
    """The stand-in mdatp as a module: its ``Agent`` prints what the CLI prints without a process per report."""
    loader = importlib.machinery.SourceFileLoader("mdatp_standin", str(MDATP))
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(module)
    return module


def agent_report(agent, form: str = "json") -> tuple[str, str]:
    """(body, content type) of the report agent/mde-offline-agent.sh posts for this stand-in agent."""
    if form == "json":
        health = agent.health(["--output", "json"])
        definitions = agent.health(["--details", "definitions", "--output", "json"])
        body = '{"$type":"mdeOfflineAgentReport","health":' + health + ',"definitions":' + definitions + "}\n"
        return body, "application/json"
    body = (
        "$ mdatp health\n"
        + agent.health([])
        + "$ mdatp health --details definitions\n"
        + agent.health(["--details", "definitions"])
    )
    return body, "text/plain; charset=utf-8"


def older(version: str, steps: int) -> str:
    parts = version.split(".")
    if len(parts) == 4 and parts[2].isdigit():
        parts[2] = str(max(0, int(parts[2]) - steps))
    return ".".join(parts)


@dataclass
class SimulatedEndpoint:
    machine_id: str
    hostname: str
    group: str
    profile: str
    token: str = ""
    definition_url: str = ""
    form: str = ""  # "json" (the agent's envelope) or "text" (its sections); drawn from the machine id when empty

    @property
    def _draw(self) -> int:
        return zlib.crc32(self.machine_id.encode())  # the same endpoint keeps its agent and its form

    @property
    def app_version(self) -> str:
        return APP_VERSIONS[1] if self._draw % 5 == 0 else APP_VERSIONS[0]

    def __post_init__(self):
        if not self.form:  # a quarter of the fleet sends text, as agents whose mdatp lacks --output json
            self.form = "text" if self._draw % 4 == 1 else "json"

    def state(self, approved: str | None, rng: random.Random) -> dict:
        """This endpoint's Defender state as its profile dictates (the stand-in mdatp's keys)."""
        url = self.definition_url
        version = approved or "1.407.417.0"
        state = {
            "machine_guid": self.machine_id,
            "app_version": self.app_version,
            "definitions_updated_minutes_ago": rng.randint(1, 240),
            "definitions_version": version,
            "definitions_update_source_uri": url,
            "offline_definition_url_configured": url,
        }
        if self.profile == "behind":
            state["definitions_version"] = older(version, rng.randint(1, 3))
        elif self.profile == "failing":
            state["definitions_update_fail_reason"] = rng.choice(FAIL_REASONS)
            state["definitions_version"] = older(version, 1)
        elif self.profile == "misconfigured":
            wrong = url.replace("/mirror/groups/", "/mirror/old-groups/") if "/mirror/groups/" in url else url + "old/"
            state["offline_definition_url_configured"] = wrong
            state["definitions_update_source_uri"] = CLOUD
        elif self.profile == "stale":
            state["definitions_status"] = "outdated"
            state["definitions_updated_minutes_ago"] = rng.randint(3 * 24 * 60, 9 * 24 * 60)
            state["definitions_version"] = older(version, 5)
        return state

    def report(self, approved: str | None, rng: random.Random) -> tuple[str, str]:
        """(body, content type): what this endpoint's agent posts, printed by the stand-in mdatp."""
        agent = mdatp_standin().Agent("linux", self.state(approved, rng))
        return agent_report(agent, self.form)


class FleetSimulator:
    """Enroll ``count`` endpoints spread over ``groups`` (name -> enrollment secret) and post their reports."""

    def __init__(
        self,
        base_url: str,
        secrets: dict,
        count: int,
        mix: dict | None = None,
        seed: int = 1,
        workers: int = 8,
        tokens_file: Path | None = None,
    ):
        self.base_url = base_url.rstrip("/")
        # Like each real agent's token file (STATE_DIR/token): an endpoint that has its token keeps it and does
        # not enroll again. Without it, a second run of the same seed would claim machines that already exist,
        # which the portal holds as identity conflicts (an enrollment secret never re-keys an endpoint).
        self.tokens_file = Path(tokens_file) if tokens_file else None
        self.secrets = secrets
        self.rng = random.Random(seed)
        self.workers = workers
        mix = mix or DEFAULT_MIX
        names = list(secrets)
        profiles = self.rng.choices(list(mix), weights=list(mix.values()), k=count)
        self.endpoints = [
            SimulatedEndpoint(
                str(uuid.uuid5(uuid.NAMESPACE_DNS, f"sim-{seed}-{i}")),
                f"sim-{names[i % len(names)]}-{i:05d}",
                names[i % len(names)],
                profiles[i],
            )
            for i in range(count)
        ]
        self.session = requests.Session()

    def close(self) -> None:
        """Close the kept-alive HTTP connections (a portal thread, and its database session, waits on each)."""
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _post(self, path, **kwargs):
        return self.session.post(f"{self.base_url}/api/v1/{path}", timeout=30, **kwargs)

    def _load_tokens(self) -> dict:
        if self.tokens_file is None or not self.tokens_file.exists():
            return {}
        try:
            saved = json.loads(self.tokens_file.read_text())
        except (OSError, ValueError) as exc:
            raise RuntimeError(f"cannot read the simulated fleet's tokens {self.tokens_file}: {exc}") from None
        return saved if isinstance(saved, dict) else {}

    def _save_tokens(self) -> None:
        if self.tokens_file is None:
            return
        saved = {e.machine_id: [e.token, e.definition_url] for e in self.endpoints if e.token}
        temporary = self.tokens_file.with_name(f".{self.tokens_file.name}.{os.getpid()}.tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # tokens: the owner's only
        with os.fdopen(descriptor, "w") as handle:
            json.dump(saved, handle)
        os.replace(temporary, self.tokens_file)

    def enroll(self) -> int:
        """Enroll the endpoints that have no token yet (all of them without a tokens file); returns how many."""
        saved = self._load_tokens()
        for endpoint in self.endpoints:
            if isinstance(saved.get(endpoint.machine_id), list) and len(saved[endpoint.machine_id]) == 2:
                endpoint.token, endpoint.definition_url = saved[endpoint.machine_id]
        missing = [e for e in self.endpoints if not e.token]

        def one(endpoint):
            response = self._post(
                "enroll",
                json={
                    "secret": self.secrets[endpoint.group],
                    "machine_id": endpoint.machine_id,
                    "hostname": endpoint.hostname,
                    "platform": "linux",
                    "arch": "x86_64",
                    "app_version": endpoint.app_version,
                },
            )
            if response.status_code != 201:
                try:
                    why = response.json().get("detail") or ""  # never the body as is: a 202 carries a token
                except (ValueError, AttributeError):
                    why = ""
                raise RuntimeError(
                    f"enrolling {endpoint.hostname} failed: HTTP {response.status_code}"
                    + (f": {why}" if why else f" ({len(response.content)} bytes)")
                )
            data = response.json()
            endpoint.token, endpoint.definition_url = data["token"], data["definition_url"]

        try:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(one, missing))
        finally:
            self._save_tokens()  # what did enroll is kept even when another endpoint failed
        return len(missing)

    def report_round(self, approved: dict) -> dict:
        """One report from every endpoint that is not silent; ``approved`` maps group -> approved version. Returns status counts."""
        counts: dict = {}

        def one(endpoint):
            if endpoint.profile == "silent":
                return "silent"
            rng = random.Random(f"{endpoint.machine_id}-{self.rng.random()}")
            body, content_type = endpoint.report(approved.get(endpoint.group), rng)
            response = self._post(
                "reports",
                data=body.encode(),
                headers={"Authorization": f"Bearer {endpoint.token}", "Content-Type": content_type},
            )
            return response.status_code

        with ThreadPoolExecutor(self.workers) as pool:
            for status in pool.map(one, self.endpoints):
                counts[status] = counts.get(status, 0) + 1
        return counts
