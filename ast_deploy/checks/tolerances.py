"""Pass / fail limits of the parity check, per precision, from the task recipe or the defaults."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass, replace

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

# The export recipes (ast_deploy.export.recipes) say psnr_db and max_rel.
_ALIASES = {"psnr": "psnr_min", "psnr_db": "psnr_min", "ssim": "ssim_min", "atol": "max_abs",
            "gt_psnr_drop": "gt_psnr_drop_max"}


def tolerance_for(precision: str, recipe=None) -> Tolerance:
    """The recipe's ``tolerances[precision]`` (a number is a minimum PSNR; a table or object may set
    psnr_min / psnr_db, ssim_min, max_abs, max_rel, gt_psnr_drop_max) over the defaults."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    base = DEFAULT_TOLERANCES[precision]
    table = recipe.get("tolerances") if isinstance(recipe, Mapping) else getattr(recipe, "tolerances", None)
    entry = (table.get(precision) if isinstance(table, Mapping) else getattr(table, precision, None)) if table else None
    if entry is None:
        return base
    if isinstance(entry, (int, float)):
        return replace(base, psnr_min=float(entry))
    items = entry.items() if isinstance(entry, Mapping) else (asdict(entry) if is_dataclass(entry) else vars(entry)).items()
    known = {f.name for f in fields(Tolerance)}
    updates = {}
    for key, value in items:
        key = _ALIASES.get(key, key)
        if key not in known:
            raise ValueError(f"unknown tolerance {key!r} for {precision} in the recipe; known: {', '.join(sorted(known))}")
        updates[key] = None if value is None else float(value)
    return replace(base, **updates)
