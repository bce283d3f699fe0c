"""English and French: every word people read is marked for translation, the French catalogue translates all of
it with the same placeholders, and the pages an admin uses render in French with nothing left in English.

The template checks read each template as Django's lexer does (tests/i18n.py): text outside translate tags fails,
and so does a marked message the French catalogue lacks. The Python check reads every gettext call's literal with
the ast module. The page check renders the pages in French and looks for English sentences the first two missed
(a label built in Python without gettext, say).
"""

import ast
import html
import re
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.template import engines
from django.utils import translation
from django.utils.translation import trans_real

from core.models import UserPreference
from tests.i18n import missing_translations, untranslated_text

ROOT = Path(settings.BASE_DIR)
CATALOGUE = ROOT / "locale" / "fr" / "LC_MESSAGES" / "django.po"
COMPILED = CATALOGUE.with_suffix(".mo")
TEMPLATES = sorted((ROOT / "templates").rglob("*.html"))
APPS = ("core", "mirror", "fleet", "portal")
GETTEXT_CALLS = {"_", "gettext", "gettext_lazy", "ngettext", "ngettext_lazy", "pgettext", "pgettext_lazy"}
PLACEHOLDER = re.compile(r"%\(\w+\)[sdfr]|%[sdfr]|\{\w*\}")


def catalogue():
    return polib.pofile(str(CATALOGUE))


def test_every_message_of_the_french_catalogue_is_translated():
    po = catalogue()
    assert len(po) > 500, f"only {len(po)} messages: is the catalogue the real one?"
    untranslated = [entry.msgid for entry in po.untranslated_entries()]
    fuzzy = [entry.msgid for entry in po.fuzzy_entries()]
    assert untranslated == [], f"{len(untranslated)} French translations missing: {untranslated[:10]}"
    assert fuzzy == [], f"{len(fuzzy)} French translations marked fuzzy (unchecked): {fuzzy[:10]}"


def test_translations_keep_every_placeholder():
    wrong = []
    for entry in catalogue().translated_entries():
        if entry.msgid_plural:
            for index, text in entry.msgstr_plural.items():
                source = entry.msgid if index == 0 else entry.msgid_plural
                # French uses the singular for 0 and 1: the singular may drop the count ("une heure").
                expected = sorted(set(PLACEHOLDER.findall(entry.msgid_plural)))
                got = sorted(set(PLACEHOLDER.findall(text)))
                if not set(got) <= set(expected) or (index > 0 and got != expected):
                    wrong.append((source, text))
        elif sorted(PLACEHOLDER.findall(entry.msgid)) != sorted(PLACEHOLDER.findall(entry.msgstr)):
            wrong.append((entry.msgid, entry.msgstr))
    assert wrong == [], f"placeholders differ between English and French: {wrong[:5]}"


def test_the_compiled_catalogue_is_the_po_file():
    """django.mo is committed (a bare machine has no msgfmt); it must say what django.po says (bin/messages)."""
    source = {
        (entry.msgctxt, entry.msgid): entry.msgstr or entry.msgstr_plural for entry in catalogue().translated_entries()
    }
    compiled = {
        (entry.msgctxt, entry.msgid): entry.msgstr or entry.msgstr_plural
        for entry in polib.mofile(str(COMPILED))
        if entry.msgid
    }
    stale = sorted(key[1] for key in source.keys() ^ compiled.keys()) + sorted(
        key[1] for key in source.keys() & compiled.keys() if source[key] != compiled[key]
    )
    assert stale == [], f"django.mo is not django.po compiled (run bin/messages --compile): {stale[:5]}"


@pytest.mark.parametrize("path", TEMPLATES, ids=lambda path: str(path.relative_to(ROOT / "templates")))
def test_every_template_marks_its_words_and_french_translates_them(path):
    name = str(path.relative_to(ROOT / "templates"))
    assert untranslated_text(path.read_text()) == [], f"{name} has words outside translate tags"
    template = engines["django"].engine.get_template(name)
    assert missing_translations(template, "fr") == [], f"{name}: messages the French catalogue lacks (bin/messages)"


def marked_messages(path: Path):
    """(message, is_plural, context) of each gettext call with literal arguments in a Python file."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
        if name not in GETTEXT_CALLS:
            continue
        literals = [arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
        if name.startswith("p") and len(literals) >= 2:
            yield literals[1], "ngettext" in name, literals[0]
        elif literals:
            yield literals[0], name.startswith("n"), None


def gettext_misuses(path: Path):
    """What would leave a marked message in English: gettext imported under a name makemessages does not extract
    (``gettext as _t``), and a non-lazy gettext called at import time (a module constant or a class attribute is
    translated once, in the language of the process that imported it)."""
    tree = ast.parse(path.read_text(), str(path))
    eager = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "django.utils.translation":
            for alias in node.names:
                local = alias.asname or alias.name
                if alias.name in GETTEXT_CALLS and local not in GETTEXT_CALLS:
                    yield f"{path.relative_to(ROOT)}:{node.lineno}: {alias.name} imported as {local}"
                if alias.name in GETTEXT_CALLS and "lazy" not in alias.name:
                    eager.add(local)

    def at_import_time(body):
        for statement in body:
            if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(statement, ast.ClassDef):
                yield from at_import_time(statement.body)
                continue
            for node in ast.walk(statement):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                    break
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in eager:
                    yield f"{path.relative_to(ROOT)}:{node.lineno}: {node.func.id}() at import time (use gettext_lazy)"

    yield from at_import_time(tree.body)


def test_no_message_is_left_in_english_by_how_gettext_is_called():
    misuses = [
        misuse
        for app in APPS
        for path in sorted((ROOT / app).rglob("*.py"))
        if "migrations" not in path.parts
        for misuse in gettext_misuses(path)
    ]
    assert misuses == []


def test_every_message_marked_in_python_is_in_the_french_catalogue():
    catalog = trans_real.translation("fr")._catalog
    missing = []
    for app in APPS:
        for path in sorted((ROOT / app).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            for message, plural, context in marked_messages(path):
                key = f"{context}\x04{message}" if context else message
                if ((key, 0) if plural else key) not in catalog:
                    missing.append(f"{path.relative_to(ROOT)}: {message!r}")
    assert missing == [], f"{len(missing)} messages the French catalogue lacks (bin/messages): {missing[:10]}"


# --- Pages rendered in French ----------------------------------------------------------------------------

# Words that are English and never French: two of them in one piece of text is an English sentence.
ENGLISH = {
    "the", "and", "of", "to", "is", "not", "this", "that", "with", "from", "for", "are", "has", "have",
    "will", "yet", "your", "you", "been", "was", "were", "be", "its", "it", "no", "an", "or", "by", "at",
    "which", "when", "only", "all", "every", "each", "new", "last", "never", "ago", "here",
}  # fmt: skip
IGNORED_ELEMENTS = re.compile(r"<(script|style|code|pre|kbd|samp|textarea|option)\b[^>]*>.*?</\1\s*>", re.S | re.I)
WORD = re.compile(r"[A-Za-z]+")


def english_sentences(page: str) -> list[str]:
    body = IGNORED_ELEMENTS.sub(" ", page.split("<body", 1)[-1])
    found = []
    for piece in re.split(r"<[^>]*>", body):
        text = " ".join(html.unescape(piece).split())
        words = {word.lower() for word in WORD.findall(text)}
        if len(words & ENGLISH) >= 2:
            found.append(text)
    return found


@pytest.fixture
def french_admin(admin):
    UserPreference.objects.create(user=admin, language="fr")
    return admin


@pytest.fixture
def fleet_with_history(make_group, make_package, make_endpoints, reporting_endpoint, admin):
    """Names that are neither English nor French sentences, so that only the portal's own words are judged."""
    from fleet.services.rings import approve_package

    pilot = make_group("pilote", 10)
    broad = make_group("parc", 20)
    first, second = make_package(), make_package()
    approve_package(pilot, first, admin)
    approve_package(pilot, second, admin)
    approve_package(broad, first, admin)
    make_endpoints(broad, 3, first.definition_version, prefix="srv-lyon")
    endpoint = reporting_endpoint(pilot, "poste-42", version="1.407.400.0")
    return pilot, broad, first, endpoint


def key_pages(pilot, package, endpoint):
    return [
        "/",
        "/groups/",
        f"/groups/{pilot.slug}/",
        f"/groups/{pilot.slug}/edit/",
        "/groups/new/",
        "/groups/endpoints/",
        f"/groups/endpoints/{endpoint.pk}/",
        "/groups/endpoints/claims/",
        "/mirror/",
        f"/mirror/{pilot.mirror.slug}/",
        f"/mirror/{pilot.mirror.slug}/edit/",
        "/mirror/packages/",
        f"/mirror/packages/{package.pk}/",
        "/mirror/runs/",
        "/mirror/bundles/",
        "/alerts/",
        "/alerts/rules/new/",
        "/audit/",
        "/users/",
        "/tokens/",
    ]


def test_the_pages_an_admin_uses_speak_french(client, french_admin, fleet_with_history):
    pilot, _broad, package, endpoint = fleet_with_history
    client.force_login(french_admin)
    english = {}
    for path in key_pages(pilot, package, endpoint):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response["Content-Language"] == "fr", path
        page = response.content.decode()
        assert '<html lang="fr">' in page, path
        for template in response.templates:
            origin = getattr(template.origin, "name", "") or ""
            if origin.startswith(str(ROOT / "templates")):
                assert untranslated_text(Path(origin).read_text()) == [], f"{path}: {template.name}"
        if found := english_sentences(page):
            english[path] = found
    assert english == {}, f"English left on French pages: {english}"


def test_the_sign_in_page_follows_the_browser(client):
    page = client.get("/login/", HTTP_ACCEPT_LANGUAGE="fr-FR,fr;q=0.9,en;q=0.5").content.decode()
    assert '<html lang="fr">' in page
    assert english_sentences(page) == []
    assert '<html lang="en">' in client.get("/login/", HTTP_ACCEPT_LANGUAGE="en-GB").content.decode()


def test_dates_and_numbers_are_french_on_a_french_page(client, french_admin, fleet_with_history):
    client.force_login(french_admin)
    with translation.override("fr"):
        from django.utils import formats

        assert formats.number_format(12.5, 1) == "12,5"
    page = client.get("/audit/").content.decode()
    months = ("janv", "févr", "mars", "avr", "mai", "juin", "juil", "août", "sept", "oct", "nov", "déc")
    assert any(month in page for month in months) or re.search(r"\b\d{2}/\d{2}/\d{4}\b", page), (
        "the audit log shows no French date"
    )


def test_an_endpoint_s_findings_read_in_french_though_judged_in_english(
    client, french_admin, make_group, reporting_endpoint
):
    """Findings are written when the report arrives (no reader, the portal's language); a French page words them
    again from the last report, and shows the same findings."""
    group = make_group("pilote", 10)
    endpoint = reporting_endpoint(group, "poste-7", definitions_update_fail_reason='"0x8024402c"')
    stored = [finding["code"] for finding in endpoint.findings]
    assert "update_failed" in stored and endpoint.findings[0]["title"] == "The last signature update failed"
    client.force_login(french_admin)
    page = client.get(f"/groups/endpoints/{endpoint.pk}/").content.decode()
    with translation.override("fr"):
        french_title = translation.gettext("The last signature update failed")
    assert french_title != "The last signature update failed" and html.escape(french_title) in page
    assert "The agent reports definitions_update_fail_reason" not in page
    assert english_sentences(page) == []


def test_a_report_is_judged_in_the_portal_s_language_whatever_the_thread_served_before(make_group, reporting_endpoint):
    """Reports skip LocaleMiddleware: a worker thread that last served a French page must not store French findings."""
    group = make_group("pilote", 10)
    with translation.override("fr"):
        endpoint = reporting_endpoint(group, "poste-8", definitions_update_fail_reason='"0x8024402c"')
    assert endpoint.findings[0]["title"] == "The last signature update failed"
