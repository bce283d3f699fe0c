"""What people read instead of codes: one label per code, per kind (finding, audit action, state…).

Each app registers its own codes where it defines them (``labels.register("finding", {...})`` with lazy
translations), so a code and its words live together; templates write ``{{ code|label:"finding" }}``
(core.templatetags.words). A code nobody registered still reads as words ("not_updated_from_mirror" →
"Not updated from mirror"), never as the raw code; tests/core/test_labels.py checks that every code an app
can emit is registered.
"""

from collections.abc import Mapping

_LABELS: dict[str, dict[str, str]] = {}


def register(kind: str, labels: Mapping[str, str]) -> None:
    _LABELS.setdefault(kind, {}).update(labels)


def registered(kind: str) -> dict[str, str]:
    return dict(_LABELS.get(kind, {}))


def label(kind: str, code) -> str:
    code = "" if code is None else str(code)
    found = _LABELS.get(kind, {}).get(code)
    if found is not None:
        return str(found)
    words = code.replace("_", " ").replace(".", " ").strip()
    return words[:1].upper() + words[1:]
