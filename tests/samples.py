"""Reports as endpoints print them, shared by the parser, diagnostics, report, metrics and API tests,
and the output of a healthy endpoint of a group (``health_text``)."""

from pathlib import Path

MDATP = Path(__file__).resolve().parents[1] / "agent" / "testing" / "mdatp"

# DESIGN §2.4, as printed by `mdatp health --details definitions`.
DESIGN_SAMPLE = """\
automatic_definition_update_enabled         : true [managed]
definitions_updated                         : Mar 14, 2024 at 12:13:17 PM
definitions_updated_minutes_ago             : 2
definitions_version                         : "1.407.417.0"
definitions_status                          : "up_to_date"
definitions_update_source_uri               : "https://go.microsoft.com/fwlink/?linkid=2144709"
definitions_update_fail_reason              : ""
offline_definition_url_configured           : "http://172.XX.XXX.XX:8000/linux/production/" [managed]
offline_definition_update                   : "enabled" [managed]
offline_definition_update_verify_sig        : "enabled"
offline_definition_update_fallback_to_cloud : false[managed]
"""

# The seed document's sample, with the prompt line an operator pastes along.
SEED_SAMPLE = "user@vm:~$ mdatp health --details definitions\n" + DESIGN_SAMPLE


def health_text(group, version="1.407.417.0", **overrides) -> str:
    """A healthy endpoint of ``group`` updated from its mirror URL, as `mdatp health --details definitions` prints it."""
    url = group.definition_url("linux")
    values = {
        "automatic_definition_update_enabled": "true [managed]",
        "definitions_updated_minutes_ago": "5",
        "definitions_version": f'"{version}"',
        "definitions_status": '"up_to_date"',
        "definitions_update_source_uri": f'"{url}"',
        "definitions_update_fail_reason": '""',
        "offline_definition_url_configured": f'"{url}" [managed]',
        "offline_definition_update": '"enabled" [managed]',
        "offline_definition_update_verify_sig": '"enabled" [managed]',
        "offline_definition_update_fallback_to_cloud": "false[managed]",
        "app_version": '"101.24032.0007"',
        "real_time_protection_enabled": "true [managed]",
        "passive_mode_enabled": "false",
    }
    values.update(overrides)
    return "".join(f"{key:<44}: {value}\n" for key, value in values.items())


# --- What the real `mdatp` prints (fixtures/mdatp/, sources in its README) and what the agent sends -------

MDATP_FIXTURES = Path(__file__).resolve().parent / "fleet" / "fixtures" / "mdatp"


def mdatp_fixture(name: str) -> str:
    return (MDATP_FIXTURES / name).read_text()


def mdatp_fixtures() -> list[str]:
    return sorted(p.name for p in MDATP_FIXTURES.iterdir() if p.suffix in (".txt", ".json"))


def report_of(health: str, definitions: str | None = None) -> str:
    """The body agent/mde-offline-agent.sh posts for these two outputs of mdatp (fixture names or outputs).

    Both JSON: the envelope, built as the agent's printf builds it; otherwise text sections, each after
    its echoed command line; no definitions: the plain health alone (an agent too old for --details).
    """
    health, definitions = (
        mdatp_fixture(x) if x and "\n" not in x and x.endswith((".txt", ".json")) else x for x in (health, definitions)
    )
    if definitions is None:
        return health
    if health.lstrip().startswith("{") and definitions.lstrip().startswith("{"):
        return '{"$type":"mdeOfflineAgentReport","health":' + health + ',"definitions":' + definitions + "}\n"
    return "$ mdatp health\n" + health + "$ mdatp health --details definitions\n" + definitions
