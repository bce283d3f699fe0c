"""A simulated fleet: endpoints that enroll and report over HTTP like real agents, in a realistic mix
of states. Used by ``manage.py simulate_fleet``, the demo and the tests."""

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

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

    def health(self, approved: str | None, rng: random.Random) -> str:
        """This endpoint's `mdatp health` text as its profile dictates."""
        url = self.definition_url
        version = approved or "1.407.417.0"
        values = {
            "healthy": "true",
            "health_issues": "[]",
            "licensed": "true",
            "engine_version": '"1.1.24020.4"',
            "app_version": '"101.24032.0007"',
            "machine_guid": f'"{self.machine_id}"',
            "real_time_protection_enabled": "true [managed]",
            "passive_mode_enabled": "false",
            "automatic_definition_update_enabled": "true [managed]",
            "definitions_updated_minutes_ago": str(rng.randint(1, 240)),
            "definitions_version": f'"{version}"',
            "definitions_status": '"up_to_date"',
            "definitions_update_source_uri": f'"{url}"',
            "definitions_update_fail_reason": '""',
            "offline_definition_url_configured": f'"{url}" [managed]',
            "offline_definition_update": '"enabled" [managed]',
            "offline_definition_update_verify_sig": '"enabled" [managed]',
            "offline_definition_update_fallback_to_cloud": "false[managed]",
        }
        if self.profile == "behind":
            values["definitions_version"] = f'"{older(version, rng.randint(1, 3))}"'
        elif self.profile == "failing":
            values["definitions_update_fail_reason"] = f'"{rng.choice(FAIL_REASONS)}"'
            values["definitions_version"] = f'"{older(version, 1)}"'
        elif self.profile == "misconfigured":
            wrong = url.replace("/mirror/groups/", "/mirror/old-groups/") if "/mirror/groups/" in url else url + "old/"
            values["offline_definition_url_configured"] = f'"{wrong}" [managed]'
            values["definitions_update_source_uri"] = '"https://go.microsoft.com/fwlink/?linkid=2144709"'
        elif self.profile == "stale":
            values["definitions_status"] = '"outdated"'
            values["definitions_updated_minutes_ago"] = str(rng.randint(3 * 24 * 60, 9 * 24 * 60))
            values["definitions_version"] = f'"{older(version, 5)}"'
        return "".join(f"{key:<44}: {value}\n" for key, value in values.items())


class FleetSimulator:
    """Enroll ``count`` endpoints spread over ``groups`` (name -> enrollment secret) and post their reports."""

    def __init__(
        self, base_url: str, secrets: dict, count: int, mix: dict | None = None, seed: int = 1, workers: int = 8
    ):
        self.base_url = base_url.rstrip("/")
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

    def _post(self, path, **kwargs):
        return self.session.post(f"{self.base_url}/api/v1/{path}", timeout=30, **kwargs)

    def enroll(self) -> int:
        def one(endpoint):
            response = self._post(
                "enroll",
                json={
                    "secret": self.secrets[endpoint.group],
                    "machine_id": endpoint.machine_id,
                    "hostname": endpoint.hostname,
                    "platform": "linux",
                    "arch": "x86_64",
                    "app_version": "101.24032.0007",
                },
            )
            if response.status_code != 201:
                raise RuntimeError(
                    f"enrolling {endpoint.hostname} failed: HTTP {response.status_code} {response.text[:200]}"
                )
            data = response.json()
            endpoint.token, endpoint.definition_url = data["token"], data["definition_url"]

        with ThreadPoolExecutor(self.workers) as pool:
            list(pool.map(one, self.endpoints))
        return len(self.endpoints)

    def report_round(self, approved: dict) -> dict:
        """One report from every endpoint that is not silent; ``approved`` maps group -> approved version. Returns status counts."""
        counts: dict = {}

        def one(endpoint):
            if endpoint.profile == "silent":
                return "silent"
            rng = random.Random(f"{endpoint.machine_id}-{self.rng.random()}")
            response = self._post(
                "reports",
                data=endpoint.health(approved.get(endpoint.group), rng),
                headers={"Authorization": f"Bearer {endpoint.token}", "Content-Type": "text/plain"},
            )
            return response.status_code

        with ThreadPoolExecutor(self.workers) as pool:
            for status in pool.map(one, self.endpoints):
                counts[status] = counts.get(status, 0) + 1
        return counts
