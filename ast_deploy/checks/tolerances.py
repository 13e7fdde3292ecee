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


# Starting points: an FP32 export differs from PyTorch by float rounding only; FP16 and INT8 lose more.
DEFAULT_TOLERANCES = {
    "fp32": Tolerance(psnr_min=60.0),
    "fp16": Tolerance(psnr_min=45.0),
    "int8": Tolerance(psnr_min=35.0),
}


def tolerance_for(precision: str, recipe=None) -> Tolerance:
    """The recipe's tolerance for ``precision`` (an ``ast_deploy.recipes.Recipe``), else the default."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    table = recipe.tolerances if recipe is not None else {}
    return table.get(precision, DEFAULT_TOLERANCES[precision])
