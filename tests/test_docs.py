"""README and docs/ stay a usable front door and manual.

The README is kept short (the manual is docs/), every relative link resolves (files and
#anchors), and every table of measured numbers sits in a section that names the benchmark
script and the results file behind it, so a number can always be reproduced.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 150

_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SCRIPT = re.compile(r"benchmarks/[\w./-]+\.(?:py|sh)\b")
_RESULTS = re.compile(r"benchmarks/results/[\w.-]+\.(?:json|md|log)\b")


def doc_pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks (code may show link-like text that is not a link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: markup dropped, lower case, punctuation removed, spaces -> '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "")
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    for line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            base = slug(match.group(2))
            count = seen.get(base, 0)
            seen[base] = count + 1
            if count:
                seen[f"{base}-{count}"] = 1
    return set(seen)


def broken_links(page: Path, text: str) -> list[str]:
    """Relative links in `text` (the contents of `page`) whose file or #anchor does not exist."""
    broken = []
    for line in prose_lines(text):
        for target in _LINK.findall(line):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            path_part, _, fragment = target.partition("#")
            dest = (page.parent / path_part).resolve() if path_part else page
            if not dest.exists():
                broken.append(target)
            elif fragment and dest.suffix == ".md":
                dest_text = text if dest == page else dest.read_text(encoding="utf-8")
                if fragment not in anchors(dest_text):
                    broken.append(target)
    return broken


def _is_measurement(cell: str) -> bool:
    return re.match(r"^[-+]?\d", cell.replace("*", "").replace("`", "").strip()) is not None


def unsourced_tables(text: str, root: Path = ROOT) -> list[str]:
    """Headings of sections that show a table of numbers but name no existing benchmark script
    and results file."""
    sections: list[tuple[str, list[str]]] = [("(top)", [])]
    for line in prose_lines(text):
        match = _HEADING.match(line)
        if match:
            sections.append((match.group(2), []))
        else:
            sections[-1][1].append(line)
    bad = []
    for heading, lines in sections:
        rows = [line for line in lines if line.lstrip().startswith("|")]
        cells = [c for row in rows if not re.fullmatch(r"[\s|:-]+", row) for c in row.strip("|").split("|")]
        if not any(_is_measurement(c) for c in cells):
            continue
        body = "\n".join(lines)
        scripts = [s for s in _SCRIPT.findall(body) if (root / s).is_file()]
        results = [r for r in _RESULTS.findall(body) if (root / r).is_file()]
        if not scripts or not results:
            bad.append(heading)
    return bad


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move detail to docs/"


def test_readme_keeps_the_commands_ci_and_users_run():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "pip install -e '.[dev]' && slimbert run" in text
    assert "python -m pytest -q" in text


def test_every_relative_link_resolves():
    broken = {page.name: links for page in doc_pages()
              if (links := broken_links(page, page.read_text(encoding="utf-8")))}
    assert not broken


def test_every_table_of_numbers_names_its_script_and_results_file():
    unsourced = {page.name: heads for page in doc_pages()
                 if (heads := unsourced_tables(page.read_text(encoding="utf-8")))}
    assert not unsourced


def test_the_checks_catch_what_they_are_for(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "bench.py").write_text("")
    (tmp_path / "benchmarks" / "results" / "bench.json").write_text("{}")
    page = tmp_path / "docs" / "page.md"
    other = tmp_path / "docs" / "other.md"
    other.write_text("# Other\n\n## The default run (2-core CPU)\n")
    text = ("# Page\n\n[ok](other.md#the-default-run-2-core-cpu) [gone](missing.md) "
            "[bad anchor](other.md#nope) [self](#page) [web](https://example.org)\n\n"
            "```\n[in code](nowhere.md)\n```\n\n"
            "## Sourced\n\n`python benchmarks/bench.py`, `benchmarks/results/bench.json`\n\n"
            "| row | ms |\n|---|---|\n| a | 1.23 |\n\n"
            "## Unsourced\n\n`benchmarks/missing.py`, `benchmarks/results/bench.json`\n\n"
            "| row | ms |\n|---|---|\n| a | **4.56** |\n\n"
            "## Words only\n\n| module | job |\n|---|---|\n| cli | exit 2 on bad input |\n")
    page.write_text(text)
    assert broken_links(page, text) == ["missing.md", "other.md#nope"]
    assert unsourced_tables(text, root=tmp_path) == ["Unsourced"]
    assert slug("PyTorch-side INT8 (PT2E): `quantize-torch`") == "pytorch-side-int8-pt2e-quantize-torch"
