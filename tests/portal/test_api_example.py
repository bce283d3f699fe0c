"""docs/examples/api_quickstart.py, run as it is against a real portal: bin/run (web, worker and
beat) on a bare machine, a stand-in for Microsoft, and a read-write token made as a person would."""

import json
import subprocess
import sys

import pytest
import requests

from standins.upstream import StandinUpstream
from tests.processes import ROOT, output, start_portal, wait_for
from tests.web import get_or_none, sign_in

SCRIPT = ROOT / "docs" / "examples" / "api_quickstart.py"
PASSWORD = "a-chosen-admin-passphrase"


def test_the_api_docs_show_the_script_that_is_tested():
    assert f"```python\n{SCRIPT.read_text()}```" in (ROOT / "docs" / "api.md").read_text()


@pytest.mark.e2e
def test_the_quickstart_mirrors_syncs_approves_and_downloads_the_managed_config(tmp_path):
    with StandinUpstream(tmp_path / "upstream", package_size=64 * 1024) as standin:
        process, base, log = start_portal(tmp_path, PORTAL_ADMIN_PASSWORD=PASSWORD)
        try:
            wait_for(lambda: get_or_none(f"{base}/healthz"), 120, lambda: f"the portal on {base}\n{output(log)}")
            session = sign_in(base, "admin", PASSWORD)
            created = session.post(
                f"{base}/api/v1/tokens/",
                json={"name": "quickstart", "scope": "write"},
                headers={"X-CSRFToken": session.cookies["csrftoken"]},
                timeout=10,
            )
            assert created.status_code == 201, created.text
            env = {
                "PORTAL_URL": base,
                "PORTAL_TOKEN": created.json()["token"],
                "UPSTREAM_URL": standin.base_url,
                "PATH": "",
            }
            run = [sys.executable, str(SCRIPT)]

            first = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
            assert first.returncode == 0, f"{first.stdout}\n{first.stderr}\n{output(log)[-3000:]}"
            version = standin.current("linux", "production", "x86_64")["definition"]
            assert f"ring pilot serves {version}" in first.stdout
            config = json.loads((tmp_path / "mdatp_managed.json").read_text())
            assert config["antivirusEngine"]["offlineDefinitionUpdateUrl"].endswith(
                "/mirror/groups/pilot/linux/production/"
            )

            # Run again after Microsoft released a new version: same mirror and ring, the new package approved.
            standin.release("linux", "production", "x86_64")
            second = subprocess.run(run, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
            assert second.returncode == 0, f"{second.stdout}\n{second.stderr}\n{output(log)[-3000:]}"
            newer = standin.current("linux", "production", "x86_64")["definition"]
            assert f"ring pilot serves {newer}" in second.stdout
            served = requests.get(f"{base}/mirror/groups/pilot/linux/production/arch_x86_64/manifest.json", timeout=10)
            assert json.loads(served.content)["DefinitionVersion"] == newer
            assert len(session.get(f"{base}/api/v1/mirrors/", timeout=10).json()["results"]) == 1
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait(timeout=40)
            log.close()
