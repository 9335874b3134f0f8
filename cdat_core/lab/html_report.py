"""The verify job's report as one self-contained HTML page: claims, plots, environment, time.

:func:`write_html` turns a report of :func:`cdat_core.lab.verify.run_verify` (the dict that
``report.json`` holds) into ``report.html``: the verdict counts and rule, the claims table
(status, claim id, part of the paper, the paper's statement, the test applied to each seed,
in how many seeds it holds as k/n, the figure's median [min, max] over seeds, the first
seed's words and the runs they come from), every plot of ``report["plots"]`` inline as a
base64 PNG (a ``data:`` URI, so the page needs no other file), the run's environment, its
compilation counts and its wall time per part. :func:`render` returns the same page as a
string. Standard library only; the page has no scripts and links to nothing.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["render", "write_html"]

_STYLE = """
body { font-family: sans-serif; margin: 2em; max-width: 80em; }
table { border-collapse: collapse; margin: 1em 0; }
td, th { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; text-align: left; }
td.PASS { background: #d9f2d9; } td.FAIL { background: #f7d4d4; }
td.MIXED { background: #fbefc7; } td.NA { background: #eee; }
figure { display: inline-block; margin: 0.5em; } img { max-width: 100%; }
code { font-size: 90%; }
"""


def _number(x: Any) -> str:
    """4 significant digits; ``None`` (a sanitized NaN or inf) as ``nan``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "nan"
    return f"{x:.4g}" if isinstance(x, float) else str(x)


def _row(cells: list[str], tag: str = "td", first_class: str = "") -> str:
    attr = f' class="{first_class}"' if first_class else ""
    out = [f"<{tag}{attr if i == 0 else ''}>{c}</{tag}>" for i, c in enumerate(cells)]
    return "<tr>" + "".join(out) + "</tr>"


def _claims(claims: list[Mapping[str, Any]]) -> str:
    e = html.escape
    head = ["status", "claim", "part", "the paper", "test (each seed)", "holds in", "figure"]
    rows = [_row([*head, "first seed", "runs"], "th")]
    for c in claims:
        figure = ""
        if c.get("figure") and c["seeds_total"]:
            figure = f"{c['figure']} {_number(c['median'])}"
            if c["seeds_total"] > 1:
                figure += f" [{_number(c['low'])}, {_number(c['high'])}]"
        first = next((o for o in c["per_seed"] if o["status"] != "N/A"), None)
        words = f"seed {first['seed']}: {first['measured']}" if first else "not evaluated"
        held = f"{c['seeds_held']}/{c['seeds_total']}" if c["seeds_total"] else "-"
        cells = [c["status"], f"<code>{e(c['id'])}</code>"]
        cells += [e(str(c[k])) for k in ("group", "statement", "criterion")]
        cells += [held, e(figure), e(words), e(str(c["source"]))]
        rows.append(_row(cells, first_class=c["status"].replace("/", "")))
    return '<table id="claims">' + "".join(rows) + "</table>"


def _pairs(title: str, items: Mapping[str, Any], table_id: str) -> str:
    e = html.escape
    rows = [_row([e(str(k)), e(v if isinstance(v, str) else _number(v))]) for k, v in items.items()]
    return f'<h2>{title}</h2><table id="{table_id}">' + "".join(rows) + "</table>"


def _figures(paths: list[str]) -> str:
    parts = []
    for p in paths:
        name = html.escape(Path(p).name)
        try:
            data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        except OSError as err:
            parts.append(f"<p>plot {name} missing: {html.escape(str(err))}</p>")
            continue
        parts.append(
            f'<figure><img alt="{name}" src="data:image/png;base64,{data}">'
            f"<figcaption>{name}</figcaption></figure>"
        )
    return "".join(parts)


def render(report: Mapping[str, Any]) -> str:
    """The report as a self-contained HTML page (see the module notes).

    Args:
      report: a report of :func:`cdat_core.lab.verify.run_verify` (``budget``, ``seeds``,
        ``verdict_rule``, ``claims``, ``summary``, ``plots``, ``environment``, ``seconds``;
        ``compile`` if present). The PNG files of ``plots`` are read and embedded; one that
        cannot be read is named as missing.

    Returns:
      The page.

    Example:
      >>> from cdat_core.lab import html_report
      >>> claim = {"id": "X.1", "group": "cost", "statement": "about 3x", "criterion": "< 4",
      ...          "status": "PASS", "seeds_held": 2, "seeds_total": 2, "figure": "ratio",
      ...          "median": 3.1, "low": 3.0, "high": 3.2, "source": "gd",
      ...          "per_seed": [{"seed": 0, "status": "PASS", "measured": "ratio = 3"}]}
      >>> page = html_report.render({"budget": "quick", "seeds": [0, 1], "verdict_rule": "k/n",
      ...     "claims": [claim], "summary": {"PASS": 1}, "plots": [], "environment": {},
      ...     "seconds": {"total": 12.0}})
      >>> "<td>2/2</td>" in page, "ratio 3.1 [3, 3.2]" in page
      (True, True)
    """
    e = html.escape
    summary = ", ".join(f"{n} {s}" for s, n in report["summary"].items())
    seconds = report["seconds"]
    title = f"cdat-core verify: {report['budget']} budget, seeds {report['seeds']}"
    body = [
        f"<h1>{e(title)}</h1>",
        f'<p id="summary">{e(summary)}; wall time {_number(seconds.get("total"))} s.</p>',
        f"<p>Verdict rule: {e(report['verdict_rule'])}.</p>",
        "<h2>Claims</h2>",
        _claims(report["claims"]),
        "<h2>Plots (first seed)</h2>",
        _figures(list(report["plots"])),
        _pairs("Environment", report["environment"], "environment"),
    ]
    if "compile" in report:
        body.append(_pairs("Compilation", report["compile"], "compile"))
    body.append(_pairs("Wall time (seconds)", seconds, "seconds"))
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(title)}</title><style>{_STYLE}</style></head><body>"
        + "\n".join(body)
        + "</body></html>\n"
    )


def write_html(report: Mapping[str, Any], path: str | Path) -> Path:
    """Write :func:`render` of ``report`` to ``path`` (UTF-8).

    Args:
      report: see :func:`render`.
      path: the HTML file (its folder must exist).

    Returns:
      ``path`` as a :class:`~pathlib.Path`.

    Example:
      >>> import pathlib, tempfile
      >>> from cdat_core.lab import html_report
      >>> path = pathlib.Path(tempfile.mkdtemp()) / "report.html"
      >>> html_report.write_html({"budget": "b", "seeds": [0], "verdict_rule": "k/n",
      ...     "claims": [], "summary": {}, "plots": [], "environment": {"jax": "0.10"},
      ...     "seconds": {"total": 1.0}}, path).read_text().startswith("<!DOCTYPE html>")
      True
    """
    path = Path(path)
    path.write_text(render(report), encoding="utf-8")
    return path
