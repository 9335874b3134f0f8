"""Sphinx configuration of the documentation site (``nox -s docs`` builds it).

The pages include the README's sections and ``examples/README.md`` with MyST's ``include``
directive, so the site says what the README says; the API reference is generated from the
docstrings (autodoc + napoleon for the Google style, MathJax for their ``:math:`` roles).
"""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import jax

import cdat_core

# jax.Array's class calls itself jaxlib._jax.Array; show its public name, jax.Array.
jax.Array.__qualname__ = "Array"

project = "cdat_core"
author = "cdat_core developers"
copyright = "cdat_core developers, Apache-2.0"
version = release = cdat_core.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# MyST: anchors on the README's headings (architecture.md labels its page for `(#architecture)`).
myst_heading_anchors = 3

# The API reference: one page per public module, written at build time by _write_api_pages
# (api/generated/ is not committed), members in source order, type hints beside the
# arguments they annotate.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_format = "short"
# A package's page documents what it defines, not what it re-exports from its modules (each
# object is described once, on its module's page, whatever ``__all__`` lists).
autodoc_default_options = {"members": True, "ignore-module-all": True}
autodoc_typehints_description_target = "documented"
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = f"cdat_core {release}"


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Skip a NamedTuple field's "Alias for field number N": its class's Attributes say more."""
    doc = getattr(obj, "__doc__", None) or ""
    return True if doc.startswith("Alias for field number") else None


# Top-level modules in the README's Architecture order; a module not named here comes after
# them, so a new module gets its page without editing this file.
API_ORDER = [
    "curvature",
    "rules",
    "linesearch",
    "eig",
    "sharpness",
    "transforms",
    "diagnostics",
    "dynamics",
    "frameworks",
    "testing",
    "lab",
]


def _public_submodules(module) -> list[str]:
    """Full names of a package's public submodules (none for a plain module)."""
    if not hasattr(module, "__path__"):
        return []
    names = [m.name for m in pkgutil.iter_modules(module.__path__) if not m.name.startswith("_")]
    return [f"{module.__name__}.{name}" for name in sorted(names)]


def api_modules() -> list[str]:
    """The top-level public modules of cdat_core, in API_ORDER, then the others by name."""
    found = _public_submodules(cdat_core)
    rank = {f"cdat_core.{name}": i for i, name in enumerate(API_ORDER)}
    return sorted(found, key=lambda name: (rank.get(name, len(rank)), name))


def _page(name: str) -> str:
    """The reST page of one module: its docstring and members, then its submodules."""
    module = importlib.import_module(name)  # the module, even where a function shadows it
    lines = [name, "=" * len(name), "", f".. automodule:: {name}", ""]
    children = _public_submodules(module)
    if children:
        lines += [".. rubric:: Modules", "", ".. toctree::", "   :maxdepth: 1", ""]
        lines += [f"   {child}" for child in children]
        lines.append("")
    return "\n".join(lines)


def _write_api_pages(app) -> None:
    """Write api/generated/<module>.rst for every public module (only pages that changed).

    Not autosummary: it resolves ``cdat_core.transforms.cdat`` to the function that the
    package re-exports under the module's name, and would document the function as the page.
    """
    out = Path(app.srcdir) / "api" / "generated"
    out.mkdir(parents=True, exist_ok=True)
    todo, pages = api_modules(), {}
    while todo:
        name = todo.pop()
        pages[name] = _page(name)
        todo += _public_submodules(importlib.import_module(name))
    for stale in set(out.glob("*.rst")) - {out / f"{name}.rst" for name in pages}:  # renamed
        stale.unlink()
    for name, text in pages.items():
        path = out / f"{name}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    index = ["", ".. toctree::", "   :maxdepth: 1", ""]
    index += [f"   generated/{name}" for name in api_modules()]
    path = out / "modules.inc"  # included by api/index.md
    text = "\n".join([*index, ""])
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def setup(app):
    """Register the hooks above."""
    app.connect("builder-inited", _write_api_pages)
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
