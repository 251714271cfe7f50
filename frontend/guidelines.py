"""Project guidelines: Markdown written by project admins, rendered to HTML that cannot script.

Two locks. Python-Markdown 3 has no "safe mode"; its documented way to refuse raw HTML is
to remove the two processors that pass HTML through (`html_block`, `html`), so raw tags
come out escaped, as text. Then nh3 (the ammonia HTML sanitiser) parses the HTML that
Markdown produced the way a browser does, character references included, and keeps only
the tags and attributes below and http(s)/mailto/relative URLs: `&#106;avascript:` in a
link target is `javascript:` to a browser, and to nh3. (The page's CSP blocks script URLs
too.)
"""

from urllib.parse import urlsplit

import markdown
import nh3
from django.utils.safestring import SafeString, mark_safe

# What Python-Markdown with sane_lists writes, and nothing else.
ALLOWED_TAGS = frozenset(
    {"p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "code", "pre"}
    | {"blockquote", "ul", "ol", "li", "a", "img"}
)
ALLOWED_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "ol": {"start"}}
# Relative URLs (no scheme) are kept too.
ALLOWED_URL_SCHEMES = frozenset({"http", "https", "mailto"})


def _refuse_spaced_schemes(tag: str, attribute: str, value: str) -> str | None:
    """nh3 calls this with the decoded value of each attribute it kept. `java  script:x`
    (Markdown turns a tab into spaces) is a harmless relative URL to nh3 and to browsers;
    refuse it anyway, as anything that names another scheme once whitespace is gone."""
    if attribute not in {"href", "src"}:
        return value
    squeezed = "".join(ch for ch in value if ch.isprintable() and not ch.isspace())
    try:
        scheme = urlsplit(squeezed).scheme.lower()
    except ValueError:
        return None
    return value if not scheme or scheme in ALLOWED_URL_SCHEMES else None


_CLEANER = nh3.Cleaner(
    tags=set(ALLOWED_TAGS),
    attributes=ALLOWED_ATTRIBUTES,
    url_schemes=set(ALLOWED_URL_SCHEMES),
    attribute_filter=_refuse_spaced_schemes,
    link_rel="noopener noreferrer",
)


def _markdown() -> markdown.Markdown:
    md = markdown.Markdown(extensions=["sane_lists"], output_format="html")
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    return md


def guidelines_html(text: str) -> SafeString:
    """The guidelines as HTML. Safe to mark: nh3 has just reduced it to the allow-list."""
    return mark_safe(_CLEANER.clean(_markdown().convert(text or "")))  # noqa: S308 - see above
