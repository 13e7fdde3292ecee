"""Pass / fail limits of the parity check, per precision, from the task recipe or the defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class Tolerance:
    psnr_min: float  # dB, candidate output vs reference output, every image
    ssim_min: float | None = None
    max_abs: float | None = None
    max_rel: float | None = None  # of max |candidate - reference| / max |reference|
    gt_psnr_drop_max: float | None = None  # dB the candidate may lose against ground truth vs the reference

    def to_dict(self) -> dict:
        return asdict(self)


# The one default table (ast-check without a task recipe, the FP16 / INT8 step's budget without a
# recipe); the shipped recipes hold the same numbers. PSNR with a data range of 1, unclipped
# (metrics.psnr). Measured (benchmarks/measure_tolerances.py, RESULTS.md "Tolerances"): FP32
# exports reach 130 dB (the tests' tiny model) to 155 dB against PyTorch on the CPU, AST-B 143.6;
# FP16 75.8 dB (AST-B, random weights, against FP32 on photographs) to 94.7 dB; INT8 42.5 dB
# (AST-B) to 58.8 dB. The recipes' comments give each margin and why it is that wide.
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(psnr_min=90.0, max_rel=1e-4),
    "fp16": Tolerance(psnr_min=50.0, max_rel=2e-2),
    "int8": Tolerance(psnr_min=35.0, max_rel=1e-1),
}


def tolerance_for(precision: str, recipe=None) -> Tolerance:
    """The recipe's tolerance for ``precision`` (an ``ast_deploy.recipes.Recipe``), else the default."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    table = recipe.tolerances if recipe is not None else {}
    return table.get(precision, DEFAULT_TOLERANCES[precision])
