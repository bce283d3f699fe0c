"""Finding words in a template that are not marked for translation, and marked ones the French catalogue lacks.

Two checks, both on the template's source as Django's own lexer and parser read it:

- ``untranslated_text(source)``: human text outside ``{% translate %}`` / ``{% blocktranslate %}`` (text
  between tags, and the attributes people read: title, placeholder, aria-label, alt) and string literals
  with a space in tag arguments (``with text="No endpoints"``, which should be ``text=_("No endpoints")``).
  Text in <code>, <pre>, <kbd>, <samp>, <script> and <style> is code, not words.
- ``missing_translations(template, language)``: every message the template marks (translate and
  blocktranslate, singular and plural) that the language's catalogue does not translate.

Run on files: ``python -m tests.i18n templates/fleet/*.html`` prints what each lacks (no Django setup needed
for the first check).
"""

import html
import re
import sys
from pathlib import Path

from django.template.base import Lexer, TokenType

# Words that are the same in every language the portal speaks: names, units, protocols, formats.
NOT_WORDS = re.compile(
    r"\b(?:API|URL|URLs|JSON|CSV|HTTP|HTTPS|TLS|SHA-?256|sha256|mdatp|Defender|Microsoft|Linux|macOS|"
    r"x86_64|arm64|n-1|ID|OK|UTC|PEM|Ed25519|IP|Celery|Redis|PostgreSQL|SQLite|Prometheus|OpenAPI|Swagger|"
    r"htmx|Chart\.js|English|Français)\b"
)
CODE_ELEMENTS = re.compile(r"<(code|pre|kbd|samp|script|style)\b[^>]*>.*?</\1\s*>", re.S | re.I)
HTML_COMMENT = re.compile(r"<!--.*?-->", re.S)
HUMAN_ATTRIBUTE = re.compile(r"""\b(title|placeholder|aria-label|alt)\s*=\s*(["'])(.*?)\2""", re.S | re.I)
TAG = re.compile(r"<[^>]*>", re.S)
WORD = re.compile(r"[^\W\d_]{2,}")
LITERAL = re.compile(r"""(_\(\s*)?(["'])((?:(?!\2).)*\s(?:(?!\2).)*)\2""")
TRANSLATE_TAGS = {"translate", "trans"}
BLOCK_TAGS = {"blocktranslate": "endblocktranslate", "blocktrans": "endblocktrans", "comment": "endcomment"}
# Tags whose string arguments are names, not words.
NAME_TAGS = {"load", "url", "static", "extends", "include", "block", "endblock", "csrf_token", "now", "cycle"}
PLACEHOLDER = "\x00"


def _has_words(text: str) -> bool:
    text = NOT_WORDS.sub(" ", html.unescape(text).replace(PLACEHOLDER, " "))
    return bool(WORD.search(text))


def untranslated_text(source: str) -> list[str]:
    """The pieces of human text in a template's source that no translate tag covers, in order."""
    found: list[str] = []
    flat: list[str] = []
    closing = None
    for token in Lexer(source).tokenize():
        if closing is not None:
            if token.token_type == TokenType.BLOCK and token.contents.split()[0] == closing:
                closing = None
            continue
        if token.token_type == TokenType.TEXT:
            flat.append(token.contents)
            continue
        flat.append(PLACEHOLDER)
        if token.token_type == TokenType.COMMENT:
            continue
        bits = token.contents.split()
        name = bits[0] if bits else ""
        if token.token_type == TokenType.BLOCK and name in BLOCK_TAGS:
            closing = BLOCK_TAGS[name]
            continue
        if name in TRANSLATE_TAGS or name in NAME_TAGS:
            continue
        for match in LITERAL.finditer(token.contents):
            if not match.group(1) and _has_words(match.group(3)):
                found.append(f"literal {match.group(0)!r} in {{% {token.contents} %}}")
    page = HTML_COMMENT.sub(" ", "".join(flat))
    page = CODE_ELEMENTS.sub(" ", page)
    for match in HUMAN_ATTRIBUTE.finditer(page):
        if _has_words(match.group(3)):
            found.append(f"attribute {match.group(1)}={match.group(3).strip()!r}")
    for piece in TAG.split(page):
        if _has_words(piece):
            found.append(" ".join(piece.replace(PLACEHOLDER, "…").split()))
    return found


def missing_translations(template, language: str) -> list[str]:
    """Messages marked in ``template`` (a django.template.base.Template) that ``language``'s catalogue lacks."""
    from django.templatetags.i18n import BlockTranslateNode, TranslateNode
    from django.utils import translation
    from django.utils.translation import trans_real

    catalog = trans_real.translation(language)._catalog
    missing = []

    def check(message: str, context: str | None, plural: bool):
        if not message.strip():
            return
        key = f"{context}\x04{message}" if context else message
        present = (key, 0) in catalog if plural else key in catalog
        if not present:
            missing.append(message)

    for node in template.nodelist.get_nodes_by_type(TranslateNode):
        if node.noop:
            continue
        literal = node.filter_expression.var
        if isinstance(getattr(literal, "literal", None), str):
            context = node.message_context.var.literal if node.message_context else None
            check(literal.literal, context, plural=False)
    for node in template.nodelist.get_nodes_by_type(BlockTranslateNode):
        singular, _vars = node.render_token_list(node.singular)
        plural = bool(node.plural)  # the tag gives an empty list when there is no plural
        if node.trimmed:
            singular = translation.trim_whitespace(singular)
        context = node.message_context.var.literal if node.message_context else None
        check(singular, context, plural)
    return missing


if __name__ == "__main__":
    status = 0
    for name in sys.argv[1:]:
        for piece in untranslated_text(Path(name).read_text()):
            print(f"{name}: {piece}")
            status = 1
    sys.exit(status)
