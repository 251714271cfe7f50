"""Guidelines Markdown: formatting kept, raw HTML and script URLs never reach the page."""

import pytest

from frontend.guidelines import guidelines_html


def test_markdown_formatting_is_rendered() -> None:
    html = guidelines_html("# Rules\n\n- be **helpful**\n- be `honest`\n\n> quoted")
    assert "<h1>Rules</h1>" in html
    assert "<li>be <strong>helpful</strong></li>" in html
    assert "<code>honest</code>" in html
    assert "<blockquote>" in html


@pytest.mark.parametrize(
    "source",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "<div>\n<iframe src=//evil></iframe>\n</div>",
        "text <a href=x onclick=alert(1)>link</a>",
    ],
)
def test_raw_html_comes_out_as_text(source: str) -> None:
    html = guidelines_html(source)
    assert "<script" not in html and "<img" not in html and "<iframe" not in html
    assert "<a " not in html and "<div" not in html
    assert "&lt;" in html


@pytest.mark.parametrize(
    "source",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert(1))",
        "[x]( java\tscript:alert(1))",
        "![i](data:text/html;base64,PHNjcmlwdD4=)",
        "[x](vbscript:msgbox)",
    ],
)
def test_script_urls_are_dropped(source: str) -> None:
    html = guidelines_html(source).lower()
    assert "javascript" not in html.replace(" ", "") and "vbscript" not in html
    assert "data:" not in html


def test_safe_links_are_kept() -> None:
    html = guidelines_html("[docs](https://example.org/a?b=1) [rel](/projects/) [m](mailto:a@b.c)")
    assert 'href="https://example.org/a?b=1"' in html
    assert 'href="/projects/"' in html and 'href="mailto:a@b.c"' in html


@pytest.mark.parametrize(
    ("url", "safe"),
    [
        ("https://a.b", True),
        ("/x", True),
        ("#top", True),
        ("javascript:x", False),
        ("java\nscript:x", False),
        ("data:x", False),
        ("ftp://a", False),
    ],
)
def test_link_schemes(url: str, safe: bool) -> None:
    html = guidelines_html(f"[x]({url})")
    assert ('href="' in html) is safe


def test_empty_guidelines() -> None:
    assert guidelines_html("") == ""
