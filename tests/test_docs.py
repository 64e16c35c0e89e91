"""README.md's relative links (docs pages, pictures, files) point to files that exist.

The docs site itself is checked by `mkdocs build --strict` in `make test`.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

ROOT = Path(__file__).resolve().parent.parent
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def relative_links(markdown: str) -> list[str]:
    """The targets of [text](target) and ![alt](target) outside code, without #anchors."""
    text = re.sub(r"```.*?```", "", markdown, flags=re.S)  # fenced code blocks
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code
    out = []
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # http:, https:, mailto: ... and anchors within the page
        out.append(unquote(target.split("#", 1)[0]))
    return out


def test_relative_links_in_the_readme_point_to_files_that_exist():
    links = relative_links((ROOT / "README.md").read_text(encoding="utf-8"))
    assert links, "no relative links found: the link pattern is broken"
    missing = [t for t in links if not (ROOT / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def test_the_link_finder_finds_links_and_skips_code_and_urls():
    md = ("see [a](docs/a.md#part) and ![b](docs/images/b.png) and [c](https://x.org/c.md)\n"
          "`[d](d.md)` [e](#anchor)\n```\n[f](f.md)\n```\n")
    assert relative_links(md) == ["docs/a.md", "docs/images/b.png"]
