"""Project guidelines: Markdown written by project admins, rendered to HTML that cannot script.

Python-Markdown 3 has no "safe mode"; its documented way to refuse raw HTML is to remove
the two processors that pass HTML through (`html_block`, `html`). Raw tags then come out
escaped, as text. Links and images keep only http(s)/mailto/relative URLs, so a
`javascript:` link cannot be smuggled in through Markdown syntax either (the page's CSP
would block it too; this is the second lock).
"""

import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import markdown
from django.utils.safestring import SafeString, mark_safe
from markdown.treeprocessors import Treeprocessor

SAFE_SCHEMES = frozenset({"", "http", "https", "mailto"})
URL_ATTRIBUTES = {"a": "href", "img": "src"}


def is_safe_url(url: str) -> bool:
    """True for relative URLs and http(s)/mailto ones (whitespace and case are normalised)."""
    cleaned = "".join(ch for ch in url if ch.isprintable() and not ch.isspace())
    try:
        scheme = urlsplit(cleaned).scheme.lower()
    except ValueError:
        return False
    return scheme in SAFE_SCHEMES


class _DropUnsafeUrls(Treeprocessor):
    def run(self, root: ET.Element) -> None:
        for element in root.iter():
            attribute = URL_ATTRIBUTES.get(element.tag)
            if attribute and not is_safe_url(element.get(attribute, "")):
                element.attrib.pop(attribute, None)


def _markdown() -> markdown.Markdown:
    md = markdown.Markdown(extensions=["sane_lists"], output_format="html")
    md.preprocessors.deregister("html_block")
    md.inlinePatterns.deregister("html")
    md.treeprocessors.register(_DropUnsafeUrls(md), "drop_unsafe_urls", 0)
    return md


def guidelines_html(text: str) -> SafeString:
    """The guidelines as HTML. Safe to mark: every tag in it was produced by Markdown, and
    every character of the admin's text reached it escaped."""
    return mark_safe(_markdown().convert(text or ""))  # noqa: S308 - see the module docstring
