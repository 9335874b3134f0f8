"""The README's quick start and CI run the same command, and the nox sessions exist."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start_commands():
    text = (ROOT / "README.md").read_text()
    section = re.search(r"^## Quick start\n(.*?)^## ", text, re.S | re.M)
    assert section, "README.md has no '## Quick start' section"
    blocks = re.findall(r"```bash\n(.*?)```", section.group(1), re.S)
    lines = [line.split("#")[0].strip() for b in blocks for line in b.splitlines()]
    return [line for line in lines if line]


def test_ci_runs_the_readme_test_command_verbatim():
    commands = _quick_start_commands()
    assert commands, "no command in the quick start"
    test_command = commands[-1]
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in [line.strip() for line in ci]
    assert (ROOT / ".ci" / "run").stat().st_mode & 0o111, ".ci/run is not executable"


def test_nox_sessions_have_docstrings_and_forward_posargs():
    source = (ROOT / "noxfile.py").read_text()
    required = {"tests", "property", "lint", "typecheck", "doctest", "benchmarks"}
    sessions = re.findall(
        r"@nox\.session[^\n]*\ndef (\w+)\(session[^)]*\)[^:]*:\n(.*?)(?=\n@|\Z)", source, re.S
    )
    found = {name: body for name, body in sessions}
    assert required <= set(found), required - set(found)
    for name, body in found.items():
        assert re.match(r'\s*"""[^\n]+"""', body), f"session {name} lacks a one-line docstring"
        assert "*session.posargs" in body, f"session {name} does not forward posargs"


def test_pytest_exits_nonzero_when_no_test_runs(tmp_path):
    (tmp_path / "test_empty.py").write_text("")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 5  # nox treats any non-zero exit as a failed session
