"""cdat_core.lab.html_report: report.html parsed back, every claim and every plot in it."""

import base64
import json
from html.parser import HTMLParser

from cdat_core.lab import claims, html_report, plans, plots, report, verify

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Page(HTMLParser):
    """The tables (by id: rows of cell texts) and images (attributes) of a page."""

    def __init__(self, text):
        super().__init__()
        self.tables, self.images, self.links = {}, [], []
        self._table = self._row = self._cell = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self._table = self.tables.setdefault(attrs.get("id", ""), [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(attrs)
        if "href" in attrs or (tag != "img" and "src" in attrs):
            self.links.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr":
            self._table.append(self._row)

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _verdicts():
    """Real verdicts: C1 from cost ratios on 3 seeds (3.2, 9.0, 3.3: MIXED 2/3), others N/A."""
    ratios = {0: 3.2, 1: 9.0, 2: 3.3}
    results = {
        s: {"budget": "test", "costs": {"ratios": {"directional_curvature/objective flops": r}}}
        for s, r in ratios.items()
    }
    return report.sanitize([v._asdict() for v in claims.evaluate_over_seeds(results)])


def _plot(path, scale):
    run = {"step": [0, 1, 2], "loss": [scale, scale / 2, scale / 4], "learning_rate": [0.1] * 3}
    return str(plots.plot_runs({"run": run}, path))


def _check(page, rep):
    rows = page.tables["claims"][1:]
    by_id = {row[1]: row for row in rows}
    assert list(by_id) == [c["id"] for c in rep["claims"]]  # every claim, in order, once
    for c in rep["claims"]:
        row = by_id[c["id"]]
        assert row[0] == c["status"] and row[3] == c["statement"]
        assert row[5] == (f"{c['seeds_held']}/{c['seeds_total']}" if c["seeds_total"] else "-")
    assert len(page.images) == len(rep["plots"])
    for img, path in zip(page.images, rep["plots"], strict=True):
        prefix = "data:image/png;base64,"
        assert img["src"].startswith(prefix)
        data = base64.b64decode(img["src"][len(prefix) :])
        assert data[:8] == PNG_MAGIC
        with open(path, "rb") as f:
            assert data == f.read()
    assert page.links == []  # nothing outside the page
    environment = dict(page.tables["environment"])
    assert set(environment) == set(rep["environment"])
    assert dict(page.tables["seconds"])["total"] == f"{rep['seconds']['total']:.4g}"


def test_every_claim_and_plot_is_in_the_page(tmp_path):
    rep = {
        "budget": "test",
        "seeds": [0, 1, 2],
        "verdict_rule": claims.VERDICT_RULE,
        "claims": _verdicts(),
        "summary": {"PASS": 0, "MIXED": 1, "FAIL": 0, "N/A": len(claims.CLAIMS) - 1},
        "plots": [_plot(tmp_path / "a.png", 1.0), _plot(tmp_path / "b.png", 3.0)],
        "environment": {"jax": "0.10.2", "devices": ["TFRT_CPU_0"], "cpu_count": 2},
        "seconds": {"build": 1.5, "total": 12.25},
    }
    page = Page(html_report.write_html(rep, tmp_path / "report.html").read_text("utf-8"))
    _check(page, rep)
    c1 = next(row for row in page.tables["claims"] if row[1] == "C1.curvature_flops")
    assert c1[0] == "MIXED" and c1[5] == "2/3"
    assert c1[6].endswith(" 3.3 [3.2, 9]")  # the figure's median [min, max] over seeds


def test_a_missing_plot_is_named_not_dropped(tmp_path):
    rep = {
        "budget": "test",
        "seeds": [0],
        "verdict_rule": "rule",
        "claims": [],
        "summary": {},
        "plots": [str(tmp_path / "gone.png")],
        "environment": {},
        "seconds": {"total": 1.0},
    }
    text = html_report.render(rep)
    assert Page(text).images == [] and "plot gone.png missing" in text


def test_verify_writes_the_page_of_its_report(tmp_path):
    """A one-sweep plan end to end: report.json names report.html, which embeds every plot."""
    plan = plans.Plan(
        "tiny",
        {"tiny": plans.ExperimentSpec("mlp", (4,), 32, "gd")},
        (plans.SweepSpec("tiny", "constant", ({"learning_rate": 1.0},), 20, select=False),),
        10,
        4,
        1,
        1,
        {},
        seeds=2,
    )
    rep = verify.run_verify(plan, tmp_path, progress=False)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["partial"] is False and written["html"] == str(tmp_path / "report.html")
    assert rep["plots"] and {c["status"] for c in rep["claims"]} == {"N/A"}
    _check(Page((tmp_path / "report.html").read_text("utf-8")), written)
