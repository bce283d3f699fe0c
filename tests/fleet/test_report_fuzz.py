"""Whatever an endpoint's token-holder sends as a report is a 201 or a 4xx that names the field, never a 500.

Issue 14, item 9: a NUL escaped in a quoted text value was a 500 on PostgreSQL (and stored as is on
SQLite), an escaped lone surrogate a 500 on both, a huge minutes-ago count an OverflowError. The cases
found are kept as plain tests; hypothesis then generates reports in every form the parser reads (text,
text in sections, JSON, the agent's JSON envelope, raw bytes) and posts them with a real endpoint token.
It runs on the database the suite runs on: SQLite by default, PostgreSQL when DATABASE_URL is set (CI).
The examples are derandomized and few, so CI sees the same few seconds of cases every run.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from core.text import BIDI_CONTROLS
from fleet.health import TYPED_KEYS, Health, HealthParseError, parse_health
from fleet.models import Endpoint, HealthReport
from fleet.services import enrollment
from tests.samples import DESIGN_SAMPLE

FUZZ = settings(
    derandomize=True,  # the same cases every run: a CI failure reproduces locally
    database=None,
    deadline=None,
    max_examples=120,
    print_blob=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- Reports as a token-holder may write them -----------------------------------------------------------

TEXT_KEYS = [*TYPED_KEYS, "some_new_key", "product_expiration"]


def camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(part.title() for part in rest)


JSON_KEYS = [camel(key) for key in TEXT_KEYS] + ["$type"]
# What broke the portal, and what breaks other parsers: JSON escapes of NUL and of lone or paired
# surrogates, terminal escapes, bidi controls, huge or odd numbers, dates at the ends of the calendar.
ESCAPES = ["\\u0000", "\\ud800", "\\udfff", "\\ud83d\\ude00", "\\u202e", "\\u001b[31m", "\\\\", '\\"', "\\x"]
ODD_CHARS = ["\x00", "\x1b[2J", "\u202e", "\u2066", "\r", "\x85", "\u2028", "\ufeff", "\ud800"]
NUMBERS = ["9999999999999999999", "99999999999999999999", "-9999999999999999999", "1e400", "-0", "+7", "0x10"]
DATES = [
    "Mar 14, 2024 at 12:13:17 PM",
    "Jan 1, 0001 at 12:00 AM",
    "Dec 31, 9999 at 11:59:59 PM",
    "Feb 30, 2024 at 13:00 PM",
]

LINE_BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines splits on: a new line, not a value
one_line = st.text(st.characters(exclude_characters=LINE_BREAKS), max_size=12)
odd = st.one_of(st.sampled_from(ESCAPES), st.sampled_from(ODD_CHARS).filter(lambda c: c not in LINE_BREAKS))
text_chunk = st.one_of(one_line, odd)
text_value = st.one_of(
    st.lists(text_chunk, max_size=4).map(lambda parts: '"' + "".join(parts) + '"'),  # quoted: read as a JSON string
    st.sampled_from(NUMBERS + DATES + ["true", "false", "", "[]", '["a", "\\u0000"]', '["\\ud800"]', "[1,"]),
    st.integers().map(str),
    one_line,
)
text_lines = st.fixed_dictionaries(
    {},
    optional={
        key: st.tuples(text_value, st.sampled_from(["", " [managed]", "[managed]", " [\u202e]"])) for key in TEXT_KEYS
    },
).map(lambda facts: "".join(f"{key:<44}: {value}{scope}\n" for key, (value, scope) in facts.items()))
text_body = st.tuples(text_lines, st.sampled_from(["", "garbage\n", "ATTENTION: No license found.\n"])).map(
    lambda two: two[1] + two[0] if two[1].startswith("ATTENTION") else two[0] + two[1]
)
sectioned_body = st.tuples(text_lines, text_lines).map(
    lambda two: "$ mdatp health\n" + two[0] + "$ mdatp health --details definitions\n" + two[1]
)

json_text = st.one_of(st.text(max_size=12), st.one_of(st.sampled_from(ODD_CHARS), st.characters(categories=["Cs"])))
json_scalar = st.one_of(
    json_text, st.integers(), st.floats(), st.sampled_from(NUMBERS + DATES), st.none(), st.booleans()
)
json_value = st.one_of(
    json_scalar,
    st.fixed_dictionaries({"displayValue": json_scalar, "isManaged": st.booleans(), "value": json_scalar}),
    st.fixed_dictionaries({"$type": json_scalar}),
    st.lists(json_scalar, max_size=3),
    st.dictionaries(json_text, json_scalar, max_size=2),
)
json_object = st.tuples(
    st.fixed_dictionaries({}, optional=dict.fromkeys(JSON_KEYS, json_value)),
    st.dictionaries(json_text, json_value, max_size=2),  # what a newer agent may add
).map(lambda two: {**two[1], **two[0]})
json_body = json_object.map(json.dumps)  # allow_nan: Python's json writes and reads NaN and Infinity
envelope_body = st.fixed_dictionaries(
    {"$type": st.just("mdeOfflineAgentReport")},
    optional={"health": st.one_of(json_object, json_scalar), "definitions": json_object, "extra": json_value},
).map(json.dumps)


def as_bytes(body: str) -> bytes:
    return body.encode("utf-8", "surrogatepass")  # a lone surrogate sent raw: invalid UTF-8, as a client may send


report_body = st.one_of(
    text_body.map(as_bytes),
    sectioned_body.map(as_bytes),
    json_body.map(as_bytes),
    envelope_body.map(as_bytes),
    st.one_of(
        st.binary(max_size=200),
        st.tuples(st.binary(max_size=8), st.integers(0, len(DESIGN_SAMPLE))).map(
            lambda t: DESIGN_SAMPLE.encode()[: t[1]] + t[0] + DESIGN_SAMPLE.encode()[t[1] :]  # stray bytes spliced in
        ),
    ),
)

# Reports that are well formed whatever their text and numbers: every one must be stored (201).
# Quoted values carry any character a JSON string can escape but NUL and lone surrogates (terminal
# escapes, bidi controls, emoji as surrogate pairs), numbers any size.
storable_chunk = st.one_of(
    st.text(st.characters(exclude_characters=LINE_BREAKS + '\x00"\\'), max_size=12),
    st.sampled_from(["\\u001b[31m", "\\u202e", "\\u2066", "\\ud83d\\ude00", "\\r\\n", "\\t", "\\\\", '\\"']),
)
storable_value = st.one_of(
    st.lists(storable_chunk, max_size=4).map(lambda parts: '"' + "".join(parts) + '"'),
    st.integers().map(str),
    st.sampled_from(NUMBERS + DATES + ["true", "false[managed]", '["a", "\\u202eb"]']),
)
storable_body = st.fixed_dictionaries(
    {"definitions_version": storable_value},
    optional={key: storable_value for key in TEXT_KEYS if key not in ("definitions_version", "machine_guid")},
).map(lambda facts: "".join(f"{key:<44}: {value}\n" for key, value in facts.items()))

# --- What every accepted report must satisfy -----------------------------------------------------------

UNSHOWABLE = set(BIDI_CONTROLS) | {chr(c) for c in range(32)} | {"\x7f"}


def shown_text(health: Health) -> list[str]:
    """Every typed text of a parsed report: what the portal stores on the endpoint and shows to people."""
    texts = [value for value in vars(health).values() if isinstance(value, str)]
    return texts + list(health.health_issues)


def assert_storable_and_clean(health: Health) -> None:
    for text in shown_text(health):
        assert not set(text) & UNSHOWABLE, f"control or bidi character kept in {text!r}"
        text.encode("utf-8")  # no lone surrogate
    json.dumps(health.to_dict())  # what the API's `parsed` serves


# --- The cases issue 14 found ----------------------------------------------------------------------------


@pytest.fixture
def agent():
    return APIClient()


@pytest.fixture
def token(agent, pilot, settings):
    """A real endpoint token, from POST /api/v1/enroll with a real enrollment secret of the pilot ring (conftest)."""
    settings.FLEET_REPORT_BURST = 100_000  # the fuzz posts hundreds of reports a minute from one endpoint
    secret = enrollment.create_enrollment_secret(pilot, "fuzz")[1]
    response = agent.post(
        "/api/v1/enroll",
        # Not a GUID on purpose: a report's machine_guid is then never "another machine's" (that 403 is tested elsewhere).
        {"secret": secret, "machine_id": "fuzz-box", "hostname": "fuzz-box", "platform": "linux", "arch": "x86_64"},
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()["token"]


def post(agent, token, body: bytes):
    return agent.generic(
        "POST", "/api/v1/reports", body, content_type="text/plain", HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def line(key: str, value: str) -> str:
    return f"{key:<44}: {value}\n"


@pytest.mark.parametrize(
    "body, field",
    [
        (DESIGN_SAMPLE + line("app_version", '"1.2\\u0000.3"'), "line 12"),
        (line("definitions_version", '"1.2\\u0000.3"'), "line 1"),
        (line("definitions_version", '"1.407.\\ud800417.0"'), "line 1"),
        (line("definitions_update_fail_reason", '"\\udfff"'), "line 1"),
        (json.dumps({"definitionsVersion": "1.407.\ud800417.0"}), "definitionsVersion"),
        (json.dumps({"definitionsVersion": "1", "edrDeviceTags": {"value": ["\udc00"]}}), "edrDeviceTags"),
        (
            json.dumps({"$type": "mdeOfflineAgentReport", "definitions": {"definitionsStatus": {"$type": "\ud83d"}}}),
            "definitions.definitionsStatus",
        ),
    ],
)
def test_a_nul_or_lone_surrogate_escaped_in_a_report_is_a_400_naming_its_field_and_stores_nothing(
    agent, token, body, field
):
    response = post(agent, token, body.encode())
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [field]
    assert "NUL" in response.json()["detail"] or "surrogate" in response.json()["detail"]
    assert not HealthReport.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        DESIGN_SAMPLE.replace("minutes_ago             : 2", "minutes_ago             : 9999999999999999999"),
        line("definitions_updated_minutes_ago", "-9999999999999999999"),
        json.dumps({"definitionsVersion": "1.407.417.0", "definitionsUpdatedMinutesAgo": 10**30}),
        json.dumps({"definitionsVersion": "1.407.417.0", "definitionsUpdatedMinutesAgo": 1e300}),
    ],
)
def test_a_minutes_ago_too_large_for_any_date_is_accepted_and_kept_as_reported(agent, token, body):
    response = post(agent, token, body.encode())
    assert response.status_code == 201, response.content
    parsed = HealthReport.objects.get().parsed
    assert parsed["definitions_updated_minutes_ago"] is None
    assert "definitions_updated_minutes_ago" in parsed["extra"]


def test_a_minutes_ago_of_a_thousand_years_is_still_a_date(agent, token):
    response = post(agent, token, line("definitions_updated_minutes_ago", str(1000 * 365 * 24 * 60)).encode())
    assert response.status_code == 201, response.content
    assert Endpoint.objects.get().definitions_updated_at.year < 1100


def test_terminal_escapes_and_bidi_controls_are_taken_out_of_what_a_report_stores_but_kept_in_the_raw(agent, token):
    body = line("definitions_version", '"1.407.\u202e417.0"') + line(
        "definitions_update_fail_reason", '"\\u001b[31mdisk full\\u001b[0m\\r\\nforged: line"'
    )
    response = post(agent, token, body.encode())
    assert response.status_code == 201, response.content
    endpoint = Endpoint.objects.get()
    assert (endpoint.definitions_version, endpoint.fail_reason) == ("1.407.417.0", "[31mdisk full[0m forged: line")
    assert HealthReport.objects.get().raw == body


# --- Generated reports -------------------------------------------------------------------------------------


@FUZZ
@given(body=report_body)
def test_the_parser_reads_any_bytes_into_clean_storable_facts_or_refuses_them_with_their_place(body):
    try:
        health = parse_health(body)
    except HealthParseError as exc:
        assert exc.message
        return
    assert_storable_and_clean(health)


@FUZZ
@given(body=st.one_of(text_body, sectioned_body, json_body, envelope_body))
def test_the_parser_reads_any_text_too(body):
    # Python callers (the report page re-reads `raw`) pass str, which may hold a raw lone surrogate.
    try:
        health = parse_health(body)
    except HealthParseError as exc:
        assert exc.message
        return
    assert_storable_and_clean(health)


@FUZZ
@given(body=storable_body)
def test_a_well_formed_report_is_stored_whatever_its_text_and_numbers(agent, token, body):
    response = post(agent, token, body.encode())
    assert response.status_code == 201, response.json()
    endpoint = Endpoint.objects.get()
    for value in (endpoint.definitions_version, endpoint.fail_reason, endpoint.update_source_uri):
        assert not set(value) & UNSHOWABLE
    assert HealthReport.objects.get(pk=response.json()["report"]).raw == body


@FUZZ
@given(body=report_body)
def test_any_report_posted_with_a_real_token_is_a_201_or_a_400_naming_the_field(agent, token, body):
    before = HealthReport.objects.count()
    response = post(agent, token, body)
    answer = response.json()
    if response.status_code == 201:
        report = HealthReport.objects.get(pk=answer["report"])
        json.dumps(report.parsed)
        endpoint = Endpoint.objects.get()
        for value in (endpoint.definitions_version, endpoint.fail_reason, endpoint.update_source_uri):
            assert not set(value) & UNSHOWABLE
        return
    assert response.status_code == 400, answer
    (field,) = answer["errors"]
    assert field and answer["detail"] and answer["errors"][field] == [answer["detail"]]
    assert HealthReport.objects.count() == before
