"""ast-build: build a TensorRT engine from an exported AST ONNX model."""

from __future__ import annotations

import argparse
import logging
import sys

from ..engines import PluginError, ProfileError, TensorRTNotInstalled, build_engine
from ..engines.cache import read_sidecar
from ..engines.layers import table
from ..engines.plugins import PLUGIN_MODES
from ..engines.runtimes import TARGETS, TENSORRT, parse_compute_capabilities
from ..engines.target import parse_device
from .common import add_version, tool_main


def _device(text: str) -> str:

    try:
        parse_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def _capabilities(text: str) -> str:
    try:
        parse_compute_capabilities(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ast-build", description="Build a strongly typed TensorRT engine from an AST ONNX model "
        "(precision is the ONNX's). Engines are cached by ONNX hash, TensorRT version, GPU and options.")
    p.add_argument("onnx", help="the exported model (.onnx)")
    p.add_argument("--out", help="engine path (default: beside the ONNX, named by the cache key)")
    p.add_argument("--target", choices=TARGETS, default=TENSORRT,
                   help="tensorrt: TensorRT, built on the GPU it runs on (default); rtx: TensorRT-RTX (RTX GPUs), "
                        "built ahead of time without a GPU for --compute-capability, or for the GPU at hand")
    p.add_argument("--compute-capability", metavar="LIST", type=_capabilities,
                   help="--target rtx: the GPUs to build for, e.g. 86,89,120 (RTX 30xx, 40xx, 50xx); "
                        "default: the GPU at hand")
    p.add_argument("--strip-weights", action="store_true",
                   help="an engine without its weights (much smaller), refitted from the ONNX where it runs: "
                        "Runner(plan, options=TensorRTOptions(refit_from=ONNX)); TensorRT >= 10, TensorRT-RTX on a GPU")
    p.add_argument("--shapes", metavar="MIN:OPT:MAX",
                   help="optimization profile, e.g. 1x3x128x128:1x3x512x512:4x3x1024x1024 "
                        "(default: the task recipe's, or the ONNX's static shape)")
    p.add_argument("--recipe", metavar="TASK", help="task recipe to take the profile from (default: the ONNX's task)")
    p.add_argument("--plugins", choices=PLUGIN_MODES, default="auto",
                   help="AST TensorRT plugins: auto = use them if they register, on = require them, "
                        "off = use the ONNX local functions (default: auto)")
    p.add_argument("--timing-cache", metavar="PATH", help="tactic timing cache to read and update")
    p.add_argument("--opt-level", type=int, choices=range(0, 6), metavar="N",
                   help="builder optimization level 0-5 (TensorRT's default: 3)")
    p.add_argument("--hardware-compat", action="store_true",
                   help="build an engine that runs on any Ampere or newer GPU (slower); the AST plugins embed "
                        "PTX for the build GPU, so this uses the ONNX local functions (refused with --plugins on)")
    p.add_argument("--device", default="cuda", metavar="cuda[:N]", type=_device,
                   help="the GPU to build on and for, as the runtime tools spell it (default: cuda, i.e. cuda:0)")
    p.add_argument("--dla-core", type=int, metavar="N",
                   help="Jetson Orin: build for DLA core N (FP16/INT8 ONNX; TensorRT <= 10.7, or >= 11.4.1 on AGX Orin "
                        "with JetPack >= 7.2.2)")
    p.add_argument("--gpu-fallback", action="store_true",
                   help="with --dla-core: layers DLA cannot run (attention, LayerNorm, plugins) run on the GPU")
    p.add_argument("--force", action="store_true", help="rebuild even if a cached engine matches")
    add_version(p)
    return p


@tool_main("ast-build")
def main(argv=None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        path = build_engine(args.onnx, args.out, target=args.target, compute_capabilities=args.compute_capability,
                            strip_weights=args.strip_weights, shapes=args.shapes, plugins=args.plugins,
                            timing_cache=args.timing_cache, opt_level=args.opt_level,
                            hardware_compat=args.hardware_compat, recipe=args.recipe, force=args.force,
                            device=args.device, dla_core=args.dla_core, gpu_fallback=args.gpu_fallback)
    except (TensorRTNotInstalled, ProfileError, PluginError, FileNotFoundError, ValueError) as e:
        print(f"ast-build: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # the build itself failed (parser or builder errors are logged above)
        print(f"ast-build: the engine build failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    report_layers(path)
    print(path)
    return 0


def report_layers(engine_path) -> None:
    """The engine's layers per precision and type, and a warning per node whose precision is not the ONNX's."""
    record = (read_sidecar(engine_path) or {}).get("layers")
    if not record:
        return
    print(table(record["layers"]), file=sys.stderr)
    checks = record.get("checks") or {}
    for problem in checks.get("mismatches", []):
        print(f"ast-build: warning: {problem}", file=sys.stderr)
    if not checks.get("mismatches"):
        print(f"ast-build: every layer runs in the precision the {checks.get('onnx_precision', '?').upper()} ONNX "
              "asks for", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
