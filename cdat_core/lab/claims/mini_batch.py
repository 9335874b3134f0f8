r"""Claims on the mini-batch study: Section 3.1 "Mini-batch regime" (Fig. 7, 8, 14; ``M*``).

They read one seed's :func:`cdat_core.lab.minibatch.run_study` result (``results["minibatch"]``).
*Performance* is the paper's normalized performance: the end loss (mean loss on the whole
training split at the end of the last ``end_epochs`` epochs) over the initial loss; a run
whose loss is not finite scores ``inf``. The thresholds below were fixed before the first
full run, from the paper's wording and the conventions of :mod:`cdat_core.lab.claims`
(:data:`~cdat_core.lab.claims.criteria.CHANGE` for "larger" / "less",
:data:`~cdat_core.lab.claims.criteria.ON_PAR` for "on par with"):

- ``M1``: Spearman :math:`\rho` (batch size, best :math:`\sigma` at :math:`\beta = 0`)
  :math:`\ge` :data:`RANK_CORRELATION` (0.5): a clear increasing trend, not a tie-break;
- ``M2``: at the smallest batch size, :math:`\beta = 0`: performance of :math:`\sigma = 1`
  :math:`\le` that of :math:`\sigma = 2`;
- ``M3``: for :math:`\beta = 0.9` or :math:`0.99`: the spread over batch sizes at a fixed
  :math:`\sigma` (median over :math:`\sigma` of the standard deviation over batch sizes of
  :math:`\log` performance, performance capped at 1) at most that of :math:`\beta = 0`
  divided by ``CHANGE``, or the range of the best :math:`\sigma` over batch sizes
  strictly smaller than at :math:`\beta = 0`;
- ``M4``: at some batch size, the selected linesearch or greedy (:math:`\sigma = 1`,
  :math:`\beta = 0`) end loss :math:`\le` ``ON_PAR`` :math:`\times` the tuned constant's;
- ``M5``: median over batch sizes of (median over mini-batches of
  :math:`\eta_{mini}`) / :math:`\eta_{full}` :math:`\ge` ``CHANGE``;
- ``M6``: at the middle batch size, the tuned warm-up + cosine ends with a lower end loss
  than the best CDAT (over :math:`\sigma \times \beta`) and a test error no higher, and that
  CDAT's median learning rate over 15-25 % of the epochs is :math:`\ge`
  :data:`WARMUP_RISE` (2, as ``F3.cdat2.warmup``) times its first step's.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from cdat_core.lab import needs
from cdat_core.lab.claims.criteria import CHANGE, ON_PAR, fmt
from cdat_core.lab.claims.registry import Outcome, claim

__all__ = [
    "RANK_CORRELATION",
    "WARMUP_RISE",
    "best_sigma",
    "cdat_label",
    "performance",
    "spearman",
]

#: Spearman correlation of ``M1`` (batch size vs best σ) that counts as "increases".
RANK_CORRELATION = 0.5
#: Factor of CDAT's early learning-rate rise in ``M6`` (as in ``F3.cdat2.warmup``).
WARMUP_RISE = 2.0

STUDY = needs.measured("minibatch", about="the mini-batch study")
Study = Mapping[str, Any]


def cdat_label(sigma: float, beta: float) -> str:
    """The label of a CDAT run of the study, e.g. ``"cdat σ=2 β=0.9"``."""
    return f"cdat σ={sigma:g} β={beta:g}"


def _number(x: Any) -> float:
    value = math.inf if x is None else float(x)
    return value if math.isfinite(value) else math.inf


def performance(study: Study, batch_size: int, sigma: float, beta: float) -> float:
    """Normalized performance (end loss / initial loss) of a CDAT run; ``inf`` if diverged."""
    return _number(study["runs"][str(batch_size)][cdat_label(sigma, beta)]["normalized"])


def best_sigma(study: Study, batch_size: int, beta: float) -> float:
    """The σ of the best performance at ``batch_size`` and ``beta`` (the smaller on a tie)."""
    return min(study["sigmas"], key=lambda s: (performance(study, batch_size, s, beta), s))


def _ranks(values: Sequence[float]) -> np.ndarray:
    x = np.asarray(values, np.float64)
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=np.float64)
    for value in np.unique(x):  # ties share their average rank
        ranks[x == value] = ranks[x == value].mean()
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties: average ranks); NaN when either side is constant.

    Example:
      >>> from cdat_core.lab.claims import mini_batch
      >>> mini_batch.spearman([1, 2, 3, 4], [0.4, 1.0, 1.0, 2.0])
      0.9486832980505138
      >>> mini_batch.spearman([1, 2, 3], [1.0, 1.0, 1.0])
      nan
    """
    a, b = _ranks(x), _ranks(y)
    a, b = a - a.mean(), b - b.mean()
    norm = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b) / norm if norm > 0 else math.nan


def _run(study: Study, batch_size: int, label: str) -> Mapping[str, Any]:
    return study["runs"][str(batch_size)][label]


def _selected(study: Study, batch_size: int, tuner: str) -> Mapping[str, Any]:
    return _run(study, batch_size, study["selected"][str(batch_size)][tuner])


@claim(
    id="M1.optimal_sigma_grows_with_batch",
    group="mini-batch",
    statement="The best σ (normalized performance) increases with the batch size (Fig. 7).",
    criterion=f"β = 0: Spearman ρ(batch size, best σ) ≥ {RANK_CORRELATION}",
    needs={"study": STUDY},
)
def _grows(study: Study) -> Outcome:
    sizes = study["batch_sizes"]
    best = [best_sigma(study, b, 0.0) for b in sizes]
    rho = spearman(sizes, best)
    pairs = ", ".join(f"{b}: {s:g}" for b, s in zip(sizes, best, strict=True))
    return (
        rho >= RANK_CORRELATION,
        f"best σ by batch size (β=0) {pairs}; ρ = {fmt(rho)}",
        {"rho": rho, **{f"best_sigma_{b}": s for b, s in zip(sizes, best, strict=True)}},
    )


@claim(
    id="M2.greedy_beats_on_edge_at_small_batch",
    group="mini-batch",
    statement="At the smallest batch sizes σ = 1 does at least as well as σ = 2 (Fig. 7, "
    "Section 3.1).",
    criterion="smallest batch size, β = 0: performance σ=1 ≤ σ=2",
    needs={"study": STUDY},
)
def _greedy_small(study: Study) -> Outcome:
    b = study["batch_sizes"][0]
    one, two = performance(study, b, 1.0, 0.0), performance(study, b, 2.0, 0.0)
    ratio = one / two if math.isfinite(two) else (0.0 if math.isfinite(one) else math.nan)
    return (
        ratio <= 1.0,
        f"batch {b}: end/initial loss σ=1 {fmt(one)} vs σ=2 {fmt(two)}",
        {"ratio": ratio, "sigma_1": one, "sigma_2": two},
    )


def _spread(study: Study, beta: float) -> float:
    """Median over σ of the std over batch sizes of log performance (capped at 1)."""
    per_sigma = []
    for s in study["sigmas"]:
        perf = [min(performance(study, b, s, beta), 1.0) for b in study["batch_sizes"]]
        per_sigma.append(float(np.std(np.log(perf))))
    return float(np.median(per_sigma))


def _best_range(study: Study, beta: float) -> float:
    best = [best_sigma(study, b, beta) for b in study["batch_sizes"]]
    return max(best) - min(best)


@claim(
    id="M3.ema_smooths_sigma_choice",
    group="mini-batch",
    statement="With β = 0.9 or 0.99, performance varies less across batch sizes at a fixed "
    "σ, or the best σ varies less, than with β = 0 (Fig. 7).",
    criterion=f"some β ∈ {{0.9, 0.99}}: spread(β) ≤ spread(0) / {CHANGE} (median over σ of "
    "the std over batch sizes of log performance, capped at 1), or range of the best σ "
    "over batch sizes < at β = 0",
    needs={"study": STUDY},
)
def _ema_smooths(study: Study) -> Outcome:
    betas = [b for b in study["ema_decays"] if b in (0.9, 0.99)]
    if not betas:
        return None
    base, base_range = _spread(study, 0.0), _best_range(study, 0.0)
    ratios = {b: _spread(study, b) / base if base > 0 else math.inf for b in betas}
    ranges = {b: _best_range(study, b) for b in betas}
    holds = any(ratios[b] <= 1 / CHANGE or ranges[b] < base_range for b in betas)
    words = "; ".join(
        f"β={b:g}: spread x{ratios[b]:.3g}, best-σ range {ranges[b]:g}" for b in betas
    )
    return (
        holds,
        f"vs β=0 (spread {fmt(base)}, best-σ range {base_range:g}): {words}",
        {
            "spread_ratio": min(ratios.values()),
            "best_sigma_range_0": base_range,
            **{f"best_sigma_range_{b:g}": r for b, r in ranges.items()},
        },
    )


@claim(
    id="M4.linesearch_works_in_minibatch",
    group="mini-batch",
    statement="The linesearch or the greedy rule is on par with (or better than) the tuned "
    "constant at some batch size (Fig. 14), unlike in full batch.",
    criterion=f"some batch size: min(end loss linesearch, greedy σ=1 β=0) ≤ {ON_PAR} x "
    "tuned constant's",
    needs={"study": STUDY},
)
def _linesearch_works(study: Study) -> Outcome:
    ratios = {}
    for b in study["batch_sizes"]:
        const = _number(_selected(study, b, "constant")["end_loss"])
        line = _number(_selected(study, b, "linesearch")["end_loss"])
        greedy = _number(_run(study, b, cdat_label(1.0, 0.0))["end_loss"])
        ratios[b] = min(line, greedy) / const if math.isfinite(const) else math.nan
    finite = {b: r for b, r in ratios.items() if not math.isnan(r)}
    if not finite:
        return False, "no batch size with a finite tuned constant", {"ratio": math.nan}
    where = min(finite, key=finite.__getitem__)
    words = ", ".join(f"{b}: {fmt(r)}" for b, r in ratios.items())
    return (
        finite[where] <= ON_PAR,
        f"min(linesearch, greedy) / tuned constant end loss by batch size {words}",
        {"ratio": finite[where], "batch_size": float(where)},
    )


@claim(
    id="M5.minibatch_linesearch_takes_larger_steps",
    group="mini-batch",
    statement="At the same iterate, a linesearch on a mini-batch selects a larger η than on "
    "the full batch (Section 2.2, citing Mutschler & Zell).",
    criterion=f"at the tuned constant's last iterate per batch size: median over batch sizes "
    f"of median η_mini-batch / η_full ≥ {CHANGE}",
    needs={"study": STUDY},
)
def _larger_steps(study: Study) -> Outcome:
    ratios = {}
    for b in study["batch_sizes"]:
        probe = study["probe"][str(b)]
        full = _number(probe["full"])
        mini = float(np.median([_number(e) for e in probe["minibatch"]]))
        ratios[b] = mini / full if full > 0 else math.nan
    figure = float(np.median(list(ratios.values())))
    words = ", ".join(f"{b}: {fmt(r)}" for b, r in ratios.items())
    return (
        figure >= CHANGE,
        f"median η_mini / η_full {fmt(figure)}; by batch size {words}",
        {"ratio": figure, **{f"ratio_{b}": r for b, r in ratios.items()}},
    )


def _early_window(num_epochs: int) -> slice:
    start = math.floor(0.15 * num_epochs)
    return slice(start, max(start + 1, math.ceil(0.25 * num_epochs)))


@claim(
    id="M6.schedule_beats_cdat_in_minibatch",
    group="mini-batch",
    statement="A tuned warm-up + cosine schedule reaches a lower train loss (and test error) "
    "than CDAT at a mid batch size (Fig. 8, 20), while CDAT still shows an early "
    "learning-rate rise.",
    criterion="middle batch size: end loss schedule < best CDAT (σ x β), test error ≤, and "
    f"that CDAT's median η over 15-25% of the epochs ≥ {WARMUP_RISE:g} x its first η",
    needs={"study": STUDY},
)
def _schedule_beats(study: Study) -> Outcome:
    sizes = study["batch_sizes"]
    b = sizes[len(sizes) // 2]
    sched, cdat = _selected(study, b, "warmup_cosine"), _selected(study, b, "cdat")
    ls, lc = _number(sched["end_loss"]), _number(cdat["end_loss"])
    es, ec = _number(sched["final_test_error"]), _number(cdat["final_test_error"])
    rates = [_number(x) for x in cdat["learning_rate"]]
    first = _number(cdat["first_learning_rate"][0])
    early = float(np.median(rates[_early_window(int(study["num_epochs"]))]))
    rise = early / first if first > 0 else math.inf
    holds = ls < lc and es <= ec and rise >= WARMUP_RISE
    hp = cdat["hyperparams"]
    return (
        holds,
        f"batch {b}: end loss schedule {fmt(ls)} vs CDAT σ={hp['sigma']:g} "
        f"β={hp['ema_decay']:g} {fmt(lc)}; test error {fmt(es)} vs {fmt(ec)}; CDAT η "
        f"{fmt(first)} -> {fmt(early)} (x{rise:.3g}) early",
        {"loss_ratio": ls / lc, "test_error_schedule": es, "test_error_cdat": ec, "lr_rise": rise},
    )
