"""examples/: every script is listed in its README, has a --quick mode and runs in CI's session."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


def test_the_four_framework_scripts_exist():
    names = {p.name for p in EXAMPLES}
    assert {"flax_nnx.py", "flax_linen.py", "equinox_mlp.py", "nanolm.py"} <= names


def test_each_script_is_listed_documented_and_quick():
    readme = (ROOT / "examples" / "README.md").read_text()
    for path in EXAMPLES:
        source = path.read_text()
        assert f"`{path.name}`" in readme, f"{path.name} is not listed in examples/README.md"
        assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"
        assert '"--quick"' in source, f"{path.name} has no --quick mode"
        assert 'if __name__ == "__main__":' in source


def test_nox_runs_the_examples_by_default():
    noxfile = (ROOT / "noxfile.py").read_text()
    default = re.search(r"nox\.options\.sessions = \[(.*?)\]", noxfile, re.S)
    assert default and '"examples"' in default.group(1)
    assert re.search(r'def examples\(session.*?"--quick"', noxfile, re.S)
