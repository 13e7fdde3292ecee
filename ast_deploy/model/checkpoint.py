"""Loading official AST checkpoints strictly, with errors that say what is wrong."""

from __future__ import annotations

import os
import pickle
import re
import warnings
from collections.abc import Mapping

import torch
import torch.nn as nn

from ..fileio import describe_file
from .ast import AST
from .configs import ARCHITECTURES, RELEASED


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit the model."""


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict, accepting the official layouts:
    ``{"state_dict": ...}`` (as the official training saves it, optionally with ``module.``
    prefixes from DataParallel), ``{"model": ...}`` / ``{"params": ...}``, or a bare state dict."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path!r} is empty (0 bytes): download it again")
    _refuse_foreign_file(path)
    try:
        with warnings.catch_warnings():  # "Detected pickle protocol 4 ... please file an issue": not the user's
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False; an unsafe load is never the answer here
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))
        if not found and _refuse_foreign_file(path) != "a Python pickle":  # bytes that are no pickle at all
            raise CheckpointError(f"{path!r} is not a PyTorch checkpoint: its bytes are neither PyTorch's zip "
                                  "format nor a pickle (random, damaged or of an unknown format)") from None
        raise CheckpointError(
            f"checkpoint {path!r} is refused for safety: it pickles "
            + (f"an object of type {found.group(1)}" if found else "objects other than tensors, or uses a pickle "
               "protocol PyTorch's safe loader cannot read")
            + ", and loading it would run code. Re-save it as a plain state dict where it was made: "
              "torch.save(model.state_dict(), path)") from None
    except Exception as e:  # torch raises RuntimeError, EOFError, IndexError... for foreign bytes
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"checkpoint {path!r} is not a readable PyTorch file (truncated, or not a checkpoint): "
            f"{type(e).__name__}: {first[:200]}") from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "params", "params_ema"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {path!r} holds no state dict of tensors "
                              f"(found {type(obj).__name__}{' with keys ' + str(list(obj)[:5]) if isinstance(obj, Mapping) else ''})")
    return {k.removeprefix("module."): v for k, v in obj.items()}


def _refuse_foreign_file(path: str) -> str | None:
    """A CheckpointError saying what the file is when its first bytes show it is no PyTorch file (an
    HTML page saved as .pth, an image, an archive): PyTorch writes a zip archive holding
    ``<name>/data.pkl``, or (before 1.6) a pickle."""

    with open(path, "rb") as f:
        head = f.read(512)
    looks = describe_file(head)
    if looks == "a zip archive":
        import zipfile

        try:
            with zipfile.ZipFile(path) as z:
                if any(name.endswith("data.pkl") for name in z.namelist()):
                    return looks
            looks = "a zip archive without PyTorch's data.pkl"
        except zipfile.BadZipFile:
            looks = "a truncated or damaged zip archive (PyTorch checkpoints are zip archives: download it again)"
    elif looks in (None, "a Python pickle"):  # left to torch's safe loader
        return looks
    raise CheckpointError(f"{path!r} is not a PyTorch checkpoint: it looks like {looks}")


def guess_architecture(state_dict: Mapping[str, torch.Tensor], candidates: Mapping[str, dict] | None = None
                       ) -> str | None:
    """Name of the architecture (among ``candidates``, default the released ones) whose keys and
    shapes the state dict has, if any."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    for name, config in (ARCHITECTURES if candidates is None else candidates).items():
        with torch.device("meta"):
            reference = AST(**config).state_dict()
        if shapes == {k: tuple(v.shape) for k, v in reference.items()}:
            return name
    return None


def describe_mismatch(model: nn.Module, state_dict: Mapping[str, torch.Tensor], limit: int = 8) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(expected[k].shape)}"
                   for k in expected if k in state_dict and state_dict[k].shape != expected[k].shape]
    lines = []
    for title, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", wrong_shape)):
        if items:
            more = f" (and {len(items) - limit} more)" if len(items) > limit else ""
            lines.append(f"  {len(items)} {title}: " + ", ".join(items[:limit]) + more)
    return "\n".join(lines)


def load_checkpoint(model: nn.Module, path: str | os.PathLike) -> nn.Module:
    """Load an official-layout checkpoint into ``model`` strictly; return the model."""
    return load_state_dict_strict(model, read_state_dict(path), path)


def load_state_dict_strict(model: nn.Module, state_dict: Mapping[str, torch.Tensor],
                           path: str | os.PathLike = "state dict") -> nn.Module:
    """``load_checkpoint`` for a state dict already read (``path`` names it in errors)."""
    problems = describe_mismatch(model, state_dict)
    if problems:
        arch = guess_architecture(state_dict)
        kind = "released " if arch in RELEASED else ""
        hint = (f"The file looks like the {kind}{arch} ({ARCHITECTURES[arch]}): build the model with that configuration."
                if arch else "It matches no released architecture (AST_B, AST_T): check the configuration it was trained with.")
        raise CheckpointError(f"checkpoint {os.fspath(path)!r} does not fit this model:\n{problems}\n{hint}")
    model.load_state_dict(state_dict, strict=True)
    return model
