"""The documentation site (docs/site, built by `nox -s docs`) stays true to the README.

The pages include README.md and examples/README.md with MyST's include directive; these
checks fail fast, without Sphinx, when a README heading they cut at is renamed, when a README
section falls outside every page, or when an example script has no page section.
"""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "docs" / "site"
INCLUDE = re.compile(r"```\{include\} (?P<path>\S+)\n(?P<options>(?::[^\n]*\n)*)```")


def _readme_includes():
    """(page, start-after or None, end-before or None) for every include of README.md."""
    found = []
    for page in sorted(SITE.rglob("*.md")):
        for m in INCLUDE.finditer(page.read_text()):
            if (page.parent / m["path"]).resolve() != ROOT / "README.md":
                continue
            options = dict(re.findall(r':([\w-]+):\s*"?(.*?)"?\n', m["options"]))
            found.append((page, options.get("start-after"), options.get("end-before")))
    return found


def test_each_readme_cut_is_a_heading_found_once():
    readme = (ROOT / "README.md").read_text()
    includes = _readme_includes()
    assert len(includes) >= 4, includes
    for page, start, end in includes:
        for marker in filter(None, (start, end)):
            assert marker.startswith("## "), (page, marker)
            hits = re.findall(rf"^{re.escape(marker)}$", readme, re.M)
            assert len(hits) == 1, f"{page.name}: README has {len(hits)} lines {marker!r}"


def test_every_readme_section_is_on_a_page():
    readme = (ROOT / "README.md").read_text()
    spans = []
    for _, start, end in _readme_includes():
        lo = readme.index(start) if start else 0
        hi = readme.index(end) if end else len(readme)
        spans.append((lo, hi))
    for heading in re.finditer(r"^#{1,3} .*$", readme, re.M):
        assert any(lo <= heading.start() < hi for lo, hi in spans), heading[0]


def test_every_example_script_has_a_section():
    page = (SITE / "examples.md").read_text()
    assert "```{include} ../../examples/README.md" in page
    for script in sorted((ROOT / "examples").glob("*.py")):
        assert f"```{{literalinclude}} ../../examples/{script.name}\n" in page, script.name


def test_ci_builds_the_docs_with_warnings_as_errors():
    noxfile = (ROOT / "noxfile.py").read_text()
    defaults = re.search(r"nox\.options\.sessions = \[(.*?)\]", noxfile, re.S)
    assert defaults and '"docs"' in defaults[1]
    session = re.search(r"def docs\(.*?\n(?=\n\n|\Z)", noxfile, re.S)
    assert session and '"-W"' in session[0] and '"docs/site"' in session[0]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = extras["optional-dependencies"]["docs"]
    assert pins and all("==" in pin for pin in pins), pins
