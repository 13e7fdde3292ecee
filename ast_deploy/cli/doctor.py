"""ast-doctor: what this machine can do with the toolkit, and what to install for the rest."""

from __future__ import annotations

import argparse
import json
import sys

from ..doctor import collect, format_table
from .common import add_version, tool_main


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ast-doctor", description="Report PyTorch, CUDA driver and GPU, TensorRT (Python and AOT plugins, DLA), "
        "the ONNX Runtime providers that really start, OpenVINO and the CPU's BF16/INT8 units, the Triton compiler, a Triton Inference Server binary, "
        "free memory and the default memory budget; and what to install for what is missing. Exit 0.")
    p.add_argument("model", nargs="?", metavar="MODEL.onnx",
                   help="also say which CPU runtime --runtime auto runs this ONNX on, with the figures behind it "
                        "(measured once per model and cached)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    add_version(p)
    return p


parser = build_parser  # the name the other tools use


def runtime_report(model: str) -> dict:
    """``runtime auto``'s choice for ``model`` and its figures (a problem with the file is reported, not raised)."""
    from dataclasses import asdict

    from ..backends import BackendError
    from ..runtime_choice import choose_runtime

    try:
        choice = choose_runtime(model)
    except (OSError, ValueError, BackendError) as e:
        return {"ok": False, "detail": f"{model}: {e}"}
    return {"ok": True, **asdict(choice), "detail": f"{model}: {choice.summary()}"}


@tool_main("ast-doctor")
def main(argv=None) -> int:
    args = build_parser().parse_args(argv)

    try:
        report = collect()
        if args.model:
            report["runtime"] = runtime_report(args.model)
    except KeyboardInterrupt:
        print("ast-doctor: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=False, default=str))
    else:
        print(format_table(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
