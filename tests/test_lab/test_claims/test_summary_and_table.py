"""cdat_core.lab.claims (the package): the counts and the plain-text table of the claims."""

from cdat_core.lab import claims


def test_summary_counts_each_status(synthetic):
    results = synthetic.ideal()
    del results["costs"]
    results["identity"]["on_edge_aligned"] = 0.21
    counts = claims.summary(claims.evaluate_claims(results))
    assert counts == {"PASS": len(claims.CLAIMS) - 7, "MIXED": 0, "FAIL": 1, "N/A": 6}


def test_table_lists_every_claim_and_the_counts(synthetic):
    out = claims.evaluate_claims(synthetic.ideal())
    text = claims.format_table(out)
    for c in out:
        assert f"{c.status:<5} {c.id}  [{c.group}]" in text
    counts = claims.summary(out)
    assert (
        text.splitlines()[-1]
        == f"{counts['PASS']} PASS, 0 MIXED, {counts['FAIL']} FAIL, {counts['N/A']} N/A"
    )


def test_table_wraps_long_statements():
    c = claims.Claim("X.1", "cost", "word " * 40, "c", "m", None, {}, "s")
    lines = claims.format_table([c], width=60).splitlines()
    assert lines[0] == "N/A   X.1  [cost]"
    assert all(len(line) <= 60 for line in lines)
    assert sum(line.startswith(" " * 16 + "word") for line in lines) >= 2
