r"""CDAT recipes per base optimizer, and the recipe matrix that measures them (issue 13).

The matrix crosses the four small float32 problems of :mod:`cdat_core.lab.recipe_problems`
(tanh MLP + squared loss, ReLU MLP + cross-entropy, small CNN + cross-entropy, character
Transformer + cross-entropy; PyTorch's default initialisation, full batch) with the lab's base
optimizers ``gd``, ``momentum`` and ``adam`` (:data:`~cdat_core.lab.bases.BASES`).

:func:`run_cell` trains one (problem, base) cell over seeds: a log2 grid of constant
learning rates and CDAT at :math:`\sigma \in \{1, 2\}` with the base's :class:`Recipe`, all
seeds x grid as lanes of one compiled program (the lab's training chunk, as in
:func:`~cdat_core.lab.train.run_lanes`, without its sharpness probes). Per
seed the tuned constant is chosen by appendix C.3 (best mean loss of the last 5 iterates);
CDAT is compared with it by final-loss ratio and train-accuracy ratio, on that seed.

:data:`RECIPES` is what the library recommends per base, and :data:`RECOMMENDED` the cells
where that recipe held on every seed of the benchmark matrix
(``benchmarks/test_bench_recipes.py``); the test asserts it on each of them.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from cdat_core.lab import _train_kernels as _kernels
from cdat_core.lab.bases import BASES
from cdat_core.lab.recipe_problems import (
    PROBLEM_NAMES,
    SIZES,
    RecipeProblem,
    char_corpus,
    recipe_problem,
)
from cdat_core.lab.schedules import scale_by_scheduled_learning_rate
from cdat_core.transforms import scale_by_cdat

__all__ = [
    "BASE_NAMES",
    "MIN_ACCURACY_RATIO",
    "PROBLEM_NAMES",
    "RECIPES",
    "RECOMMENDED",
    "SIZES",
    "CellResult",
    "Recipe",
    "RecipeProblem",
    "char_corpus",
    "markdown_table",
    "recipe_problem",
    "run_cell",
]

PyTree = Any
BASE_NAMES = ("gd", "momentum", "adam")

#: A recommended cell holds when, on every seed, CDAT's train accuracy is at least this
#: fraction of the tuned constant's (fixed before any result was looked at).
MIN_ACCURACY_RATIO = 0.9


@dataclasses.dataclass(frozen=True)
class Recipe:
    r"""CDAT's settings on one base optimizer: ``cdat(base(1.0), sigma, ema_decay=..., ...)``.

    Attributes:
      sigma: :math:`\sigma` (2: on the edge, 1: greedy).
      ema_decay: :math:`\beta_{cdat}` of the numerator and denominator averages.
      max_rise: the loss check :math:`\kappa`, or ``None`` for the paper's rule.
    """

    sigma: float = 2.0
    ema_decay: float = 0.0
    max_rise: float | None = None

    @property
    def label(self) -> str:
        """The settings besides σ, e.g. ``"β=0.9, κ=1"`` (``κ=None``: the paper's rule)."""
        return (
            f"β={self.ema_decay:g}, κ={'None' if self.max_rise is None else f'{self.max_rise:g}'}"
        )

    def optimizer(self, base: str) -> optax.GradientTransformationExtraArgs:
        """The recipe on a base of :data:`~cdat_core.lab.bases.BASES` at learning rate 1.

        Example:
          >>> from cdat_core.lab import recipes
          >>> opt = recipes.RECIPES["adam"].optimizer("adam")
          >>> type(opt).__name__
          'GradientTransformationExtraArgs'
        """
        cdat = scale_by_cdat(self.sigma, ema_decay=self.ema_decay, max_rise=self.max_rise)
        return optax.chain(BASES.lookup(base).build(), cdat)


#: The recommended recipe per base, chosen on the benchmark matrix (5 seeds, PyTorch-default
#: init; ``benchmarks/test_bench_recipes.py``, the README's table). Every base gets the loss
#: check ``max_rise=1.0`` (κ). Without it, the same settings (the paper's rule) collapsed to
#: chance accuracy on some seeds: Adam on the ReLU MLP (4/5 seeds at σ = 2), GD on the CNN
#: (2/5), momentum on the CNN and on the Transformer (1/5 each). The quadratic model behind
#: eq (8) fails past ReLU kinks and at small-weight inits
#: (docs/investigations/cdat_adam_blowup/FINDINGS.md). With the check no seed of a
#: recommended cell fell below 0.9 of the tuned constant's accuracy, at 0-0.12 backtracks
#: (extra forward passes) per step on average.
#:
#: - ``gd``: σ = 2, no average (β = 0), κ = 1: the paper's GD rule plus the check. With
#:   β = 0.9 the final loss was 1.5-5x worse on the ReLU MLP, the CNN and the Transformer.
#: - ``momentum``: σ = 2, β = 0.9, κ = 1. With β = 0 the rule's η jumped between 0 and 10
#:   from step to step along the momentum direction, and a Transformer seed still collapsed
#:   with the check; the average settles it (final loss 0.002-1.0x the tuned constant's).
#: - ``adam``: σ = 2, β = 0.9, κ = 1 (Adam's first direction is -sign(g): the rule's first
#:   step overshoots 2-120x, FINDINGS.md). Without the average (β = 0) all five
#:   Transformer seeds ended at 0.06-0.6 accuracy at σ = 2.
RECIPES: dict[str, Recipe] = {
    "gd": Recipe(2.0, 0.0, 1.0),
    "momentum": Recipe(2.0, 0.9, 1.0),
    "adam": Recipe(2.0, 0.9, 1.0),
}

#: The problem-base pairs (cells) where the base's recipe is recommended: it held on every seed of
#: the benchmark matrix and of the test's smaller models. Not recommended: Adam on the character
#: Transformer. There σ = 2 does not blow up but stalls: on 2 of 3 seeds of the test's 1-block
#: model the loss ended at 2.21 and 2.25 with η at 0.016 and 0.008 after 150 steps (the tuned
#: constant reached 0.017-0.018), and one seed in five of the benchmark's 2-block model ended at
#: 0.94 of the constant's accuracy; σ = 1 trained on every seed of both.
RECOMMENDED: tuple[tuple[str, str], ...] = tuple(
    cell
    for cell in itertools.product(PROBLEM_NAMES, BASE_NAMES)
    if cell != ("char_transformer_ce", "adam")
)


# --------------------------------------------------------------------------------------------
# One cell: seeds x (log2 constant grid + CDAT σ), the C.3 selection, the ratios.
# --------------------------------------------------------------------------------------------

#: Exponents k of the constant grid η = 2^k per base (the benchmark's; the test takes every
#: other one). Wide enough that every tuned η measured sat inside.
GRIDS: dict[str, tuple[int, ...]] = {
    "gd": tuple(range(-7, 5)),
    "momentum": tuple(range(-9, 3)),
    "adam": tuple(range(-12, 0)),
}


class CellResult(NamedTuple):
    r"""One (problem, base) cell over seeds: the tuned constant and CDAT at each ``sigma``.

    Per-seed arrays have shape ``(S,)`` (seeds) or ``(S, K)`` (seeds x ``sigmas``). Loss is
    the mean of the last 5 iterates (appendix C.3); accuracy is the final train accuracy.

    Attributes:
      problem: a name of :data:`PROBLEM_NAMES`.
      base: a name of :data:`BASE_NAMES`.
      recipe: the CDAT settings (its ``sigma`` is replaced by each of ``sigmas``).
      seeds: the seeds (initial weights; the data is the same).
      grid: the constant learning rates tried.
      sigmas: the CDAT :math:`\sigma` tried.
      tuned_learning_rate: per seed, the grid's best by loss.
      tuned_inside: per seed, whether that best is not an end of the grid.
      tuned_loss: per seed, its loss.
      tuned_accuracy: per seed, its accuracy.
      cdat_loss: CDAT's loss.
      cdat_accuracy: CDAT's accuracy.
      cdat_learning_rate: CDAT's median :math:`\eta_t` over the run.
      backtracks: CDAT's loss-check backtracks per step (0 without the check).
      seconds: wall time of the cell (compilation included).
    """

    problem: str
    base: str
    recipe: Recipe
    seeds: tuple[int, ...]
    grid: tuple[float, ...]
    sigmas: tuple[float, ...]
    tuned_learning_rate: np.ndarray
    tuned_inside: np.ndarray
    tuned_loss: np.ndarray
    tuned_accuracy: np.ndarray
    cdat_loss: np.ndarray
    cdat_accuracy: np.ndarray
    cdat_learning_rate: np.ndarray
    backtracks: np.ndarray
    seconds: float

    @property
    def loss_ratio(self) -> np.ndarray:
        """CDAT's loss / the tuned constant's, per seed and σ (< 1: CDAT lower; 0/0 = 1)."""
        tuned = self.tuned_loss[:, None]
        with np.errstate(all="ignore"):
            ratio = self.cdat_loss / tuned
        return np.where((self.cdat_loss == 0) & (tuned == 0), 1.0, ratio)

    @property
    def accuracy_ratio(self) -> np.ndarray:
        """CDAT's accuracy / the tuned constant's, per seed and σ."""
        return self.cdat_accuracy / self.tuned_accuracy[:, None]

    def holds(self, fraction: float = MIN_ACCURACY_RATIO) -> np.ndarray:
        """Per σ: whether the accuracy ratio is at least ``fraction`` on every seed."""
        return np.all(self.accuracy_ratio >= fraction, axis=0)


def _any_base(index: jax.Array) -> optax.GradientTransformationExtraArgs:
    """The direction of base ``BASE_NAMES[index]`` (traced), all three bases kept in the state.

    Every base updates its own state; the update is the selected base's, by ``where``, so
    the numbers are those of that base alone. One compiled program then serves every base of
    a problem (compiling once per base took most of the test's time).
    """
    bases = [BASES.lookup(name).build() for name in BASE_NAMES]

    def init(params: PyTree) -> tuple[Any, ...]:
        return tuple(b.init(params) for b in bases)

    def update(updates: PyTree, state: Any, params: PyTree = None, **extra: Any) -> Any:
        outs = [b.update(updates, s, params) for b, s in zip(bases, state, strict=True)]

        def pick(*leaves: jax.Array) -> jax.Array:
            out = leaves[0]
            for k, leaf in enumerate(leaves[1:], start=1):
                out = jnp.where(index == k, leaf, out)
            return out

        return jax.tree.map(pick, *(u for u, _ in outs)), tuple(s for _, s in outs)

    return optax.GradientTransformationExtraArgs(init, update)


@functools.cache
def _factory(kind: str, check: bool = False) -> Callable[[Any], optax.GradientTransformation]:
    """``hyperparams -> transformation``: the constant or CDAT on base ``hyperparams["base"]``.

    The constant reads ``learning_rate``; CDAT ``sigma``, ``ema_decay`` and, with ``check``,
    ``max_rise``. Cached, so every cell of one problem reuses one compiled program per kind.
    """

    def build(hp: Any) -> optax.GradientTransformation:
        if kind == "constant":
            tail = scale_by_scheduled_learning_rate(hp["learning_rate"])
        else:
            rise = hp["max_rise"] if check else None
            tail = scale_by_cdat(hp["sigma"], ema_decay=hp["ema_decay"], max_rise=rise)
        return optax.chain(_any_base(hp["base"]), tail)

    return build


@functools.cache
def _batched_predict(predict: Callable[..., jax.Array]) -> Callable[..., jax.Array]:
    return jax.jit(jax.vmap(predict, in_axes=(0, None)))


def _accuracy(problem: RecipeProblem, params: list[PyTree]) -> np.ndarray:
    logits = _batched_predict(problem.predict)(_kernels.stack_lanes(params), problem.inputs)
    hits = np.argmax(np.asarray(logits), axis=-1) == np.asarray(problem.targets)[None]
    return hits.reshape(len(params), -1).mean(axis=1)


def _train_lanes(
    p: RecipeProblem, params: list[PyTree], make: Callable[..., Any], hps: list[Any], steps: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[PyTree]]:
    """Every lane's run in one call of the lab's compiled chunk (that of ``run_lanes``).

    :func:`~cdat_core.lab.train.run_lanes` also measures every lane's sharpness (Lanczos)
    before and after each chunk; its compilation took 15-30 s per problem on two CPU cores,
    5-10x the training program's, and the matrix never reads it. This is the same ``lax.scan``
    of :func:`cdat_core.lab._train_kernels.compiled`, vmapped over the lanes (sharded over the
    local devices) without the probes. Returns per-step losses and learning rates, per-step
    loss-check backtracks (0 without the check) and the final params of each lane.
    """
    n, devices = len(hps), len(jax.local_devices())
    pad = list(range(n)) + [n - 1] * (-n % devices)
    names = sorted(hps[0])
    hp = _kernels.put_lanes({k: np.asarray([hps[i][k] for i in pad], np.float32) for k in names})
    stacked = _kernels.put_lanes(_kernels.stack_lanes([params[i] for i in pad]))
    keys = _kernels.put_lanes(_kernels.stack_keys([jax.random.key(0)] * len(pad)))
    init, chunk = _kernels.compiled(p.loss, make, steps, None)
    zeros = _kernels.put_lanes(np.zeros(len(pad), np.int32))
    # (params, state, step, previous update): the chunk also records successive-update cosines
    carry = (stacked, init(stacked, hp), zeros, jax.tree.map(jnp.zeros_like, stacked))
    data = _kernels.put_replicated((p.inputs, p.targets))
    (final, *_), (losses, rates, _, internals, _) = jax.device_get(chunk(carry, hp, data, keys))
    backtracks = internals.get("num_backtracks", np.zeros_like(losses))
    lanes = [jax.tree.map(lambda x, i=i: x[i], final) for i in range(n)]
    return losses[:n], rates[:n], np.asarray(backtracks)[:n], lanes


def _lanes(
    p: RecipeProblem, seeds: tuple[int, ...], make: Callable[..., Any], hps: list[Any], steps: int
) -> tuple[np.ndarray, ...]:
    """Seeds x ``hps`` lanes: C.3 scores, accuracies, median η and backtracks per step."""
    n, shape = len(hps), (len(seeds), len(hps))
    inits = [p.init(s) for s in seeds for _ in range(n)]
    losses, rates, backtracks, params = _train_lanes(p, inits, make, hps * len(seeds), steps)
    scores = np.mean(losses[:, -5:], axis=1).reshape(shape)
    scores = np.where(np.isfinite(scores), scores, np.inf)  # C.3: NaN is never the best
    median_rate = np.median(rates, axis=1).reshape(shape)
    return (
        scores,
        _accuracy(p, params).reshape(shape),
        median_rate,
        np.mean(backtracks, 1).reshape(shape),
    )


@functools.lru_cache(maxsize=64)
def _constant_grid(
    problem: str, base: str, size: str, seeds: tuple[int, ...], grid: tuple[float, ...], steps: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeds x grid of constant learning rates: C.3 scores and accuracies (cached).

    The recipes tried on one cell share it; its time counts in the first one's ``seconds``.
    """
    hps = [{"learning_rate": x, "base": BASE_NAMES.index(base)} for x in grid]
    scores, acc, _, _ = _lanes(
        recipe_problem(problem, size), seeds, _factory("constant"), hps, steps
    )
    return scores, acc


def run_cell(
    problem: str,
    base: str,
    *,
    seeds: Sequence[int] = (0, 1, 2),
    size: str = "test",
    exponents: Sequence[int] | None = None,
    sigmas: Sequence[float] = (1.0, 2.0),
    recipe: Recipe | None = None,
    num_steps: int | None = None,
) -> CellResult:
    r"""Train one cell: per seed, a log2 grid of constants and CDAT at each ``sigma``.

    Two compiled programs (the constant's and CDAT's), each running every seed x setting as
    one lane of the lab's vmapped training chunk (:func:`_train_lanes`), full batch. Per
    seed, the tuned constant is the grid's best mean loss of the last 5 iterates (appendix
    C.3, as :func:`~cdat_core.lab.history.last_iterates_loss`; a non-finite mean is never best).

    Args:
      problem: a name of :data:`PROBLEM_NAMES`.
      base: a name of :data:`BASE_NAMES`.
      seeds: initial-weight seeds.
      size: the problem size, ``"test"`` or ``"bench"`` (:data:`SIZES`).
      exponents: the grid :math:`\eta = 2^k` (default :data:`GRIDS` of ``base``).
      sigmas: CDAT's :math:`\sigma` values.
      recipe: CDAT settings (default :data:`RECIPES` of ``base``); ``sigma`` is overridden.
      num_steps: steps per run (default the problem's).

    Returns:
      A :class:`CellResult`.

    Example:
      >>> from cdat_core.lab import recipes
      >>> cell = recipes.run_cell("tanh_mlp_sq", "gd", seeds=(0,), exponents=(-2, 0, 2),
      ...                         num_steps=20)
      >>> cell.cdat_accuracy.shape, cell.loss_ratio.shape, cell.grid
      ((1, 2), (1, 2), (0.25, 1.0, 4.0))
    """
    p = recipe_problem(problem, size)
    recipe = RECIPES[base] if recipe is None else recipe
    grid = tuple(math.ldexp(1.0, int(k)) for k in (GRIDS[base] if exponents is None else exponents))
    seeds, sigmas = tuple(seeds), tuple(float(s) for s in sigmas)
    steps = p.num_steps if num_steps is None else num_steps
    start = time.perf_counter()

    scores, const_acc = _constant_grid(problem, base, size, seeds, grid, steps)
    numbers = {"ema_decay": recipe.ema_decay}
    if recipe.max_rise is not None:
        numbers["max_rise"] = recipe.max_rise
    make = _factory("cdat", recipe.max_rise is not None)
    hps = [{**numbers, "sigma": s, "base": BASE_NAMES.index(base)} for s in sigmas]
    cdat_loss, cdat_acc, cdat_rate, backtracks = _lanes(p, seeds, make, hps, steps)
    best = np.argmin(scores, axis=1)
    rows = np.arange(len(seeds))
    return CellResult(
        problem=problem,
        base=base,
        recipe=recipe,
        seeds=seeds,
        grid=grid,
        sigmas=sigmas,
        tuned_learning_rate=np.asarray(grid)[best],
        tuned_inside=(best > 0) & (best < len(grid) - 1),
        tuned_loss=scores[rows, best],
        tuned_accuracy=const_acc[rows, best],
        cdat_loss=cdat_loss,
        cdat_accuracy=cdat_acc,
        cdat_learning_rate=cdat_rate,
        backtracks=backtracks,
        seconds=time.perf_counter() - start,
    )


def markdown_table(cells: Sequence[CellResult], fraction: float = MIN_ACCURACY_RATIO) -> str:
    """The matrix as a markdown table, one row per cell.

    Columns: the tuned constant (median η over seeds, and its min accuracy), then per σ the
    median final-loss ratio CDAT / tuned and the min accuracy ratio over seeds, with the
    number of seeds below ``fraction``; "holds" says whether the base's recipe σ held on
    every seed.

    Example:
      >>> import numpy as np
      >>> from cdat_core.lab import recipes
      >>> one = np.ones(2)
      >>> cell = recipes.CellResult("cnn_ce", "gd", recipes.Recipe(), (0, 1), (1.0,), (1.0, 2.0),
      ...     one, one > 0, one, one, np.ones((2, 2)), np.array([[1.0, 0.5], [1.0, 1.0]]),
      ...     np.ones((2, 2)), np.zeros((2, 2)), 0.0)
      >>> print(recipes.markdown_table([cell]).splitlines()[-1])
      | cnn_ce | gd | β=0, κ=None | 1 (min acc 1.00) | 1 / 1.00 | 1 / 0.50 (1/2 below) | no |
    """
    head = "| problem | base | CDAT | tuned constant η | "
    sigmas = cells[0].sigmas if cells else ()
    head += (
        " | ".join(f"σ={s:g}: loss ratio / acc ratio" for s in sigmas)
        + " | holds at recipe σ, every seed |"
    )
    lines = [head, "|" + "---|" * (5 + len(sigmas))]
    for c in cells:
        row = [c.problem, c.base, c.recipe.label]
        edge = "" if c.tuned_inside.all() else ", at grid edge"
        lr = f"{np.median(c.tuned_learning_rate):.3g} (min acc {c.tuned_accuracy.min():.2f}{edge})"
        row.append(lr)
        for k in range(len(c.sigmas)):
            below = int(np.sum(c.accuracy_ratio[:, k] < fraction))
            text = f"{np.median(c.loss_ratio[:, k]):.3g} / {c.accuracy_ratio[:, k].min():.2f}"
            row.append(text + (f" ({below}/{len(c.seeds)} below)" if below else ""))
        if c.recipe.sigma in c.sigmas:
            row.append("yes" if c.holds(fraction)[c.sigmas.index(c.recipe.sigma)] else "no")
        else:
            row.append("n/a")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
