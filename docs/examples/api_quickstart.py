"""Mirror Microsoft's Linux signatures, sync, approve the newest package for a ring, and
download the ring's mdatp_managed.json, through the portal's REST API.

    PORTAL_URL=https://portal.example.org PORTAL_TOKEN=mdo_... python api_quickstart.py

PORTAL_TOKEN: a read-write API token of an admin (created on the portal's "API tokens" page).
UPSTREAM_URL: where packages come from; Microsoft's download service unless set.
Running it again reuses the upstream, mirror and ring it created. Needs `requests`.
"""

import os
import sys
import time

import requests

PORTAL = os.environ.get("PORTAL_URL", "http://localhost:8000").rstrip("/")
UPSTREAM = os.environ.get("UPSTREAM_URL", "https://go.microsoft.com/fwlink/")
api = requests.Session()
api.headers["Authorization"] = f"Bearer {os.environ['PORTAL_TOKEN']}"


def call(method, path, **kwargs):
    response = api.request(method, f"{PORTAL}/api/v1/{path}", timeout=60, **kwargs)
    if response.status_code >= 400:
        # Every error has the same body: {"status", "code", "detail", "errors" (invalid input only)}.
        sys.exit(f"{method} /api/v1/{path}: {response.json()['detail']}")
    return response


def get_or_create(collection, lookup, fields):
    """The object of ``collection`` matching ``lookup`` (a filter), created with ``fields`` when there is none."""
    found = call("GET", f"{collection}/", params=lookup).json()["results"]
    return found[0] if found else call("POST", f"{collection}/", json={**lookup, **fields}).json()


# 1. An upstream (where packages come from) and a mirror of it.
upstream = get_or_create("upstreams", {"name": "microsoft"}, {"base_url": UPSTREAM})
mirror = get_or_create(
    "mirrors",
    {"slug": "main"},
    {
        "name": "Main",
        "upstream": upstream["id"],
        "platforms": ["linux"],
        "channels": ["production"],
        "archs": ["x86_64"],
    },
)

# 2. Sync now (202 with the run) and poll the run until it is finished.
run = call("POST", f"mirrors/{mirror['id']}/sync/").json()
while run["state"] in ("queued", "running"):
    time.sleep(2)
    run = call("GET", f"sync-runs/{run['id']}/").json()
if run["state"] != "succeeded":
    sys.exit(f"sync {run['id']} {run['state']}: {run['error']}")
print(f"sync {run['id']} succeeded: {[result['outcome'] for result in run['results']]}")

# 3. A ring that takes only what is approved, and the package the mirror now publishes approved for it.
group = get_or_create(
    "groups", {"slug": "pilot"}, {"name": "Pilot", "mirror": "main", "platforms": ["linux"], "rollout": "manual"}
)
published = call("GET", f"mirrors/{mirror['id']}/").json()["publications"][0]
package = call(
    "GET",
    "packages/",
    params={"platform": "linux", "channel": "production", "arch": "x86_64", "definition_version": published["current"]},
).json()["results"][0]
target = next(t for t in call("GET", f"groups/{group['id']}/status/").json() if t["arch"] == "x86_64")
current = target["current"]["id"] if target["current"] else None
if current != package["id"]:
    # expected_current: refused with 409 if someone changed the ring since we looked.
    call("POST", f"groups/{group['id']}/approve/", json={"package": package["id"], "expected_current": current})
print(f"ring {group['slug']} serves {package['definition_version']} at {target['url']}")

# 4. The managed configuration the ring's Linux endpoints install.
config = call("GET", f"groups/{group['id']}/managed-config/", params={"platform": "linux"})
with open("mdatp_managed.json", "wb") as file:
    file.write(config.content)
print("wrote mdatp_managed.json")
