"""The page scripts share their helpers instead of copying them (issue 10)."""

import re
from pathlib import Path

from django.conf import settings

STATIC = Path(settings.BASE_DIR) / "frontend" / "static"
SCRIPTS = sorted(STATIC.rglob("*.js"))


def test_the_dom_builder_is_defined_once_and_imported_by_both_pages() -> None:
    defining = [p for p in SCRIPTS if re.search(r"function el\(", p.read_text())]
    assert defining == [STATIC / "studio" / "dom.js"]
    importing = {
        p.relative_to(STATIC).parts[0]
        for p in SCRIPTS
        if re.search(r'import \{[^}]*\bel\b[^}]*\} from "\.\./studio/dom\.js"', p.read_text())
    }
    assert importing == {"labeling", "training"}
