"""cdat_core: curvature-aware learning-rate tuners and curvature diagnostics for JAX.

The public API is re-exported here (``import cdat_core as cc``); ``cc.dynamics`` and
``cc.lab`` are submodules. The README's Architecture section shows the layout.
"""

from cdat_core import dynamics as dynamics  # cc.dynamics, not in __all__
from cdat_core.curvature import (
    Curvature,
    directional_curvature,
    gauss_newton_curvature,
    hvp,
)
from cdat_core.diagnostics import EdgeOfStability, edge_of_stability
from cdat_core.eig import EigResult, lanczos, power_iteration
from cdat_core.linesearch import (
    LinesearchResult,
    backtracking_linesearch,
    initial_learning_rate,
)
from cdat_core.rules import (
    cdat_learning_rate,
    ema,
    greedy_learning_rate,
    hypergradient_learning_rate,
    on_edge_learning_rate,
    polyak_learning_rate,
    sharpness_learning_rate,
)
from cdat_core.sharpness import hessian_sharpness, preconditioner_from_optax_state
from cdat_core.spectrum import SpectralDensity, hessian_spectral_density
from cdat_core.spectrum_blocks import (
    UpdateAlignment,
    block_sharpness,
    gauss_newton_sharpness,
    update_alignment,
)
from cdat_core.spectrum_trace import (
    DiagonalEstimate,
    TraceEstimate,
    hessian_diagonal,
    hessian_trace,
)
from cdat_core.transforms import (
    ExactCurvature,
    ForwardEdgeCurvature,
    GaussNewtonCurvature,
    LaggedCurvature,
    ParabolicCurvature,
    ScaleByCdatState,
    ScaleByHypergradientState,
    ScaleByLinesearchState,
    ScaleByPolyakState,
    ScaleBySharpnessState,
    cdat,
    scale_by_cdat,
    scale_by_hypergradient,
    scale_by_linesearch,
    scale_by_polyak,
    scale_by_sharpness,
)

__version__ = "0.1.0"

__all__ = [
    "Curvature",
    "DiagonalEstimate",
    "EdgeOfStability",
    "EigResult",
    "ExactCurvature",
    "ForwardEdgeCurvature",
    "GaussNewtonCurvature",
    "LaggedCurvature",
    "LinesearchResult",
    "ParabolicCurvature",
    "ScaleByCdatState",
    "ScaleByHypergradientState",
    "ScaleByLinesearchState",
    "ScaleByPolyakState",
    "ScaleBySharpnessState",
    "SpectralDensity",
    "TraceEstimate",
    "UpdateAlignment",
    "__version__",
    "backtracking_linesearch",
    "block_sharpness",
    "cdat",
    "cdat_learning_rate",
    "directional_curvature",
    "edge_of_stability",
    "ema",
    "gauss_newton_curvature",
    "gauss_newton_sharpness",
    "greedy_learning_rate",
    "hessian_diagonal",
    "hessian_sharpness",
    "hessian_spectral_density",
    "hessian_trace",
    "hvp",
    "hypergradient_learning_rate",
    "initial_learning_rate",
    "lanczos",
    "on_edge_learning_rate",
    "polyak_learning_rate",
    "power_iteration",
    "preconditioner_from_optax_state",
    "scale_by_cdat",
    "scale_by_hypergradient",
    "scale_by_linesearch",
    "scale_by_polyak",
    "scale_by_sharpness",
    "sharpness_learning_rate",
    "update_alignment",
]
