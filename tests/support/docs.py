"""Reading the README and docs/ as a user does: sections, code blocks, the commands in them."""

from __future__ import annotations

import re

from support.service import REPO

README_PATH = REPO / "README.md"
DOCS = sorted((REPO / "docs").glob("*.md"))


def section(text: str, title: str) -> str:
    """The body of the `## title` section of a markdown text."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no '## {title}' section"
    return match[1]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.M | re.S)


def commands(text: str) -> list[str]:
    """Every command of the ```bash blocks: continuation lines joined, comments dropped."""
    found = []
    for block in code_blocks(text, "bash"):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#\s", line, maxsplit=1)[0].strip()
            if line and not line.startswith("#"):
                found.append(" ".join(line.split()))
    return found
