"""Deterministic cost gate: XLA-counted flop ratios against the committed baseline.

For every benchmark model (``cdat_core.lab.benchmark_models.PROBLEM_NAMES``) this compiles,
without running, the objective, the curvature methods and the plain and CDAT training steps, reads
the flops XLA counts, and compares the ratios (method / objective, CDAT step / plain step)
with ``benchmarks/flop_ratios_baseline.json``. Counts are deterministic for a given JAX
version and backend, so any change is a change in the traced computation, not noise.

    python benchmarks/check_flop_ratios.py            # exit 1 if a ratio grew by > 5%
    python benchmarks/check_flop_ratios.py --report   # also print markdown tables
    python benchmarks/check_flop_ratios.py --update   # rewrite the baseline (review the diff)
    python benchmarks/check_flop_ratios.py --problems mlp2 conv

Exit status: 0 when no ratio regressed by more than the tolerance, 1 when one did, 2 when the
baseline is missing or holds none of the measured entries. Improvements beyond the tolerance
are reported (re-baseline with ``--update`` to lock them in) but do not fail. Temp-byte ratios
are written to the baseline and printed with ``--report`` for information; they are not gated.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import jax

from cdat_core.lab import benchmark_models as bm
from cdat_core.lab import costs

BASELINE = Path(__file__).with_name("flop_ratios_baseline.json")
TOLERANCE = 0.05
DEPTHS = {"mlp2": 2, "mlp8": 8, "mlp32": 32}


def measure_all(problems: list[str]) -> dict[str, dict[str, costs.Costs]]:
    out = {}
    for name in problems:
        start = time.perf_counter()
        out[name] = bm.measure(bm.benchmark_problem(name))
        print(f"  measured {name:<12} in {time.perf_counter() - start:5.1f} s", file=sys.stderr)
    return out


def environment() -> dict[str, Any]:
    device = jax.devices()[0]
    return {
        "date": datetime.date.today().isoformat(),
        "jax": jax.__version__,
        "jaxlib": getattr(jax.lib, "__version__", jax.__version__),
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
    }


def tables(measured: dict[str, dict[str, costs.Costs]], field: str) -> dict[str, dict[str, float]]:
    return {
        name: {k: round(v, 4) for k, v in costs.ratio_table(c, field).items()}
        for name, c in measured.items()
    }


def markdown(measured: dict[str, dict[str, costs.Costs]]) -> str:
    keys = [f"{a}/{b}" for a, b in costs.RATIOS]
    lines = [
        "| model | " + " | ".join(keys) + " | CDAT floor (sgd) |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for field in ("flops", "temp_bytes", "total_bytes"):
        for name, c in measured.items():
            ratios = costs.ratio_table(c, field)
            cells = [f"{ratios[k]:.2f}" if k in ratios else "" for k in keys]
            floor = costs.fused_step_flops(c, "sgd") / c["sgd"].flops if field == "flops" else None
            lines.append(
                f"| {name} ({field}) | "
                + " | ".join(cells)
                + f" | {'' if floor is None else f'{floor:.2f}'} |"
            )
    depth = {n: c for n, c in measured.items() if n in DEPTHS}
    if len(depth) >= 2:
        methods = ("objective", "value_and_grad", "directional_curvature", "hvp_dot")
        lines += ["", "| XLA temp KiB | " + " | ".join(methods) + " |", "|---" * 5 + "|"]
        for name, c in depth.items():
            kib = [f"{c[m].temp_bytes / 1024:.0f}" for m in methods]
            lines.append(f"| depth {DEPTHS[name]} | " + " | ".join(kib) + " |")
        # From depth 8 on, when measured: depth 2 adds a constant offset that is not growth.
        ordered = sorted(depth, key=DEPTHS.__getitem__)
        lo, hi = ordered[1 if len(ordered) > 2 else 0], ordered[-1]
        layers = DEPTHS[hi] - DEPTHS[lo]
        growth = [
            f"{(depth[hi][m].temp_bytes - depth[lo][m].temp_bytes) / layers / 1024:.1f}"
            for m in methods
        ]
        lines.append(f"| KiB per layer ({lo}->{hi}) | " + " | ".join(growth) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--update", action="store_true", help="rewrite the baseline")
    parser.add_argument("--report", action="store_true", help="print markdown tables")
    parser.add_argument("--problems", nargs="+", default=list(bm.PROBLEM_NAMES))
    parser.add_argument("--baseline", type=Path, default=BASELINE)
    parser.add_argument("--tolerance", type=float, default=None, help="default: baseline's")
    args = parser.parse_args(argv)
    unknown = set(args.problems) - set(bm.PROBLEM_NAMES)
    if unknown:
        parser.error(f"unknown problems {sorted(unknown)}; choose from {bm.PROBLEM_NAMES}")

    start = time.perf_counter()
    measured = measure_all(args.problems)
    current = tables(measured, "flops")
    print(f"measured {len(measured)} models in {time.perf_counter() - start:.1f} s")
    if args.report:
        print(markdown(measured))

    if args.update:
        old = json.loads(args.baseline.read_text()) if args.baseline.exists() else {}
        baseline = {
            "about": "XLA-counted ratios written by benchmarks/check_flop_ratios.py --update; "
            "flops are gated (tolerance), temp_bytes are for information.",
            "tolerance": args.tolerance or old.get("tolerance", TOLERANCE),
            "environment": environment(),
            "flops": {**old.get("flops", {}), **current},
            "temp_bytes": {**old.get("temp_bytes", {}), **tables(measured, "temp_bytes")},
        }
        args.baseline.write_text(json.dumps(baseline, indent=2, sort_keys=False) + "\n")
        print(f"wrote {args.baseline}")
        return 0

    if not args.baseline.exists():
        print(f"no baseline at {args.baseline}; create it with --update", file=sys.stderr)
        return 2
    baseline = json.loads(args.baseline.read_text())
    tolerance = args.tolerance if args.tolerance is not None else baseline["tolerance"]
    env, now = baseline.get("environment", {}), environment()
    for key in ("jax", "backend"):
        if env.get(key) != now[key]:
            print(f"note: baseline {key} {env.get(key)!r}, now {now[key]!r}; counts may differ")
    compared = sum(1 for p, r in current.items() for k in r if k in baseline["flops"].get(p, {}))
    if not compared:
        print("the baseline holds none of the measured ratios", file=sys.stderr)
        return 2
    worse, better = costs.compare_ratios(current, baseline["flops"], tolerance=tolerance)
    for change in better:
        print(
            f"improved  {change.problem}: {change.ratio} {change.baseline:.3f} -> "
            f"{change.current:.3f} ({change.relative:+.1%}); lock it in with --update"
        )
    for change in worse:
        rel = "nan" if math.isnan(change.current) else f"{change.relative:+.1%}"
        print(
            f"REGRESSED {change.problem}: {change.ratio} {change.baseline:.3f} -> "
            f"{change.current:.3f} ({rel}, tolerance {tolerance:.0%})"
        )
    print(f"{compared} flop ratios compared, {len(worse)} regressed, {len(better)} improved")
    return 1 if worse else 0


if __name__ == "__main__":
    sys.exit(main())
