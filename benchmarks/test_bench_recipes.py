"""The CDAT recipe matrix (issue 13): 4 problems x 3 base optimizers, CDAT σ ∈ {1, 2} vs tuned η.

Every cell (``cdat_core.lab.recipes.run_cell`` at the ``"bench"`` sizes) trains, per seed, a
log2 grid of constant learning rates and CDAT at σ = 1 and 2 with the base's recommended
recipe (``recipes.RECIPES``), all seeds x settings as lanes of one compiled program, full
batch, on the CPU. The paper's rule (the same settings without the loss check) runs beside
each recipe, to show what the check changes. Per seed the constant is tuned by appendix C.3
(best mean of the last 5 losses); the table gives the median final-loss ratio CDAT / tuned
and the minimum train-accuracy ratio over seeds.

Environment: ``CDAT_RECIPES_SEEDS`` (default 5), ``CDAT_RECIPES_TABLE`` (a path: the markdown
table is written there; it is printed in the "benchmark figures" section either way),
``CDAT_RECIPES_CELLS`` (e.g. ``relu_mlp_ce:adam,cnn_ce:gd``: only those cells).

The test fails when a cell of ``recipes.RECOMMENDED`` does not hold on every seed, or when a
tuned constant sits at an end of its grid (the grid must then be widened).
"""

import os
import time

import numpy as np

from cdat_core.lab import recipes

SEEDS = tuple(range(int(os.environ.get("CDAT_RECIPES_SEEDS", "5"))))


def variants(base):
    """The recommended recipe, and beside it the paper's rule (no loss check)."""
    recipe = recipes.RECIPES[base]
    if recipe.max_rise is not None:
        return [recipe, recipes.Recipe(recipe.sigma, recipe.ema_decay, None)]
    return [recipe]


def cells():
    wanted = os.environ.get("CDAT_RECIPES_CELLS")
    pairs = [(p, b) for p in recipes.PROBLEM_NAMES for b in recipes.BASE_NAMES]
    if wanted:
        pairs = [tuple(x.split(":")) for x in wanted.split(",")]
    return pairs


def run_matrix(progress):
    out = []
    for problem, base in cells():
        for recipe in variants(base):
            cell = recipes.run_cell(problem, base, seeds=SEEDS, size="bench", recipe=recipe)
            progress(cell)
            out.append(cell)
    return out


def test_recipe_matrix(benchmark, bench_report):
    def progress(cell):
        print(
            f"{cell.problem}/{cell.base} [{cell.recipe.label}] {cell.seconds:.0f} s: "
            f"tuned η {cell.tuned_learning_rate}, acc ratio {cell.accuracy_ratio.min(0)}",
            flush=True,
        )

    start = time.perf_counter()
    matrix = benchmark.pedantic(run_matrix, args=(progress,), rounds=1, iterations=1)
    wall = time.perf_counter() - start
    table = recipes.markdown_table(matrix)
    stamp = time.strftime("%Y-%m-%d")
    text = f"{table}\n\n{len(SEEDS)} seeds, matrix wall time {wall:.0f} s ({stamp}).\n"
    path = os.environ.get("CDAT_RECIPES_TABLE")
    if path:
        with open(path, "w") as fh:
            fh.write(text)
    bench_report.extend(["recipe matrix:", *text.splitlines()])
    benchmark.extra_info["matrix_seconds"] = wall
    recommended = set(recipes.RECOMMENDED)
    for cell in matrix:
        assert np.all(cell.tuned_inside), f"{cell.problem}/{cell.base}: widen the grid"
        if (cell.problem, cell.base) in recommended and cell.recipe == recipes.RECIPES[cell.base]:
            k = cell.sigmas.index(cell.recipe.sigma)
            assert cell.holds()[k], f"{cell.problem}/{cell.base}: {cell.accuracy_ratio[:, k]}"
