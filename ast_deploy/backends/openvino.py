"""OpenVINO backend (CPU): runs an ast-export ONNX on OpenVINO's CPU plugin.

OpenVINO's ONNX reader has no conversion rule for the ``ast::`` custom nodes, so the loader inlines
their local functions in memory (``onnx.inliner``; the file is never written), runs each FRFN
channels-first (``backends.channels_first``: without the rewrite the CPU plugin spends about 40 % of an
FP32 AST-B run on Transposes and Reorders around the depth-wise convolutions) and converts the
result. The converted model is kept as OpenVINO IR in the package's cache, keyed by the ONNX's
content and OpenVINO's version, and OpenVINO's own model cache (CACHE_DIR) keeps the compiled
model: the second start of a model skips both the conversion and the compilation.

Precision follows the export (``inference_precision``): an FP32 ONNX computes in f32 (OpenVINO's
CPU default on a CPU with BF16 would be bf16); an FP16 or INT8 ONNX computes its float parts in bf16
where the CPU has native BF16 (AMX or AVX512-BF16: OpenVINO lists "BF16" in its optimization
capabilities), else f32. An INT8 ONNX's Q/DQ pairs run as integer kernels (OpenVINO's
low-precision transformations).

Thread safety: one compiled model serves several threads; each call takes an idle infer request
from a pool (or makes one), so parallel calls run in parallel (in streams of their own in
"throughput" mode).
"""

from __future__ import annotations

import json
import os
import queue
from pathlib import Path

import numpy as np

from ..budget import cache_root, file_digest
from ..fileio import atomic_write
from ..metadata import onnx_precision
from .base import Backend, BackendError
from .channels_first import frfn_channels_first
from .onnxrt import model_size_multiple, shape_range_from_dims
from .options import OpenVINOOptions

INSTALL_HINT = "pip install 'ast-deploy[openvino]'"
CHANNELS_FIRST_VERSION = 2  # part of the cached IR's name: bump when the rewrite changes


def import_openvino():
    """The ``openvino`` module, or a BackendError that names the extra to install."""
    try:
        import openvino
    except ImportError as e:
        raise BackendError(f"runtime 'openvino' needs OpenVINO, which is not installed ({e}): {INSTALL_HINT}, "
                           "or use runtime onnxruntime") from None
    return openvino


def cpu_capabilities(core=None) -> list[str]:
    """OpenVINO's CPU optimization capabilities here ("FP32", "BF16", "INT8", ...)."""
    core = core or import_openvino().Core()
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def inference_precision(export_precision: str, capabilities) -> str:
    """The INFERENCE_PRECISION_HINT an export computes in: FP32 exports in f32; FP16 and INT8 exports'
    float parts in bf16 where the CPU has native BF16, else f32."""
    if export_precision in ("fp16", "int8") and "BF16" in capabilities:
        return "bf16"
    return "f32"


def _rewrite_tag(options: OpenVINOOptions) -> str:
    """What the cached IR's name and the memory-cost key add for the graph rewrite (none without it)."""
    return f"-cf{CHANNELS_FIRST_VERSION}" if options.channels_first_ffn else ""


def _cache_folder(options: OpenVINOOptions) -> Path | None:
    if options.cache_dir == "":
        return None
    return Path(options.cache_dir) if options.cache_dir else cache_root() / "openvino"


class CompiledModelFromOnnx:
    """Loader: when called, returns (compiled model, facts) for an ONNX file; facts holds the ONNX's
    metadata, its precision and the input's dims."""

    def __init__(self, path: str | os.PathLike, options: OpenVINOOptions | None = None):
        self.path = Path(path)
        self.options = options or OpenVINOOptions()

    def __call__(self, extra_config: dict | None = None):
        """``extra_config``: more compile properties (e.g. {"PERF_COUNT": True} for a profile)."""
        ov = import_openvino()
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model {str(self.path)!r} does not exist")
        core = ov.Core()
        folder = _cache_folder(self.options)
        model, facts = self._converted(ov, core, folder)
        facts["inference_precision"] = (inference_precision(facts["precision"], cpu_capabilities(core))
                                        if self.options.precision == "auto" else self.options.precision)
        config = {"INFERENCE_PRECISION_HINT": facts["inference_precision"],
                  "PERFORMANCE_HINT": self.options.mode.upper()}
        if self.options.threads:
            config["INFERENCE_NUM_THREADS"] = int(self.options.threads)
        config.update(extra_config or {})
        if folder is not None:
            core.set_property({"CACHE_DIR": str(folder / "compiled")})
        try:
            compiled = core.compile_model(model, "CPU", config)
        except RuntimeError as e:
            raise BackendError(f"{self.path}: OpenVINO cannot compile it: {str(e).strip().splitlines()[0][:300]}"
                               ) from None
        return compiled, facts

    def _converted(self, ov, core, folder: Path | None):
        """The OpenVINO model (the cached IR's path, or an ov.Model) and the ONNX's facts."""
        ir = None
        if folder is not None:
            version = ov.__version__.split("-")[0]
            ir = folder / "ir" / f"{file_digest(self.path)}-{version}{_rewrite_tag(self.options)}.xml"
            sidecar = ir.with_suffix(".json")
            if ir.is_file() and ir.with_suffix(".bin").is_file() and sidecar.is_file():
                try:
                    return str(ir), json.loads(sidecar.read_text())
                except ValueError:
                    pass  # a damaged sidecar: convert again
        model, facts = self._convert(ov)
        if ir is not None:
            try:
                _save_ir(ov, model, ir, facts)
                return str(ir), facts  # compiled from the IR's path, as later starts are: one compiled-cache entry
            except OSError:
                pass  # a read-only cache: convert again next time
        return model, facts

    def _convert(self, ov):
        import io

        import onnx
        import onnx.inliner

        try:
            proto = onnx.load(str(self.path))
        except Exception as e:  # DecodeError and friends
            raise BackendError(f"{self.path}: not a usable ONNX model ({type(e).__name__}: {e})") from None
        facts = {"metadata": {p.key: p.value for p in proto.metadata_props}, "precision": onnx_precision(proto)}
        inlined = onnx.inliner.inline_local_functions(proto)  # a copy: the file and `proto` stay as they are
        del proto
        if self.options.channels_first_ffn:
            facts["channels_first_ffn"] = frfn_channels_first(inlined)
        try:
            # the ONNX frontend as is (ovc's convert_model adds seconds of offline passes that the CPU
            # plugin's compilation makes up for: same speed, measured on the demo model)
            model = ov.Core().read_model(io.BytesIO(inlined.SerializeToString()))
        except Exception as e:  # OpConversionFailure and others
            raise BackendError(f"{self.path}: OpenVINO cannot read it: {str(e).strip().splitlines()[0][:300]}"
                               ) from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise BackendError(f"{self.path}: expected one input and one output, found {len(model.inputs)} and "
                               f"{len(model.outputs)}")
        shape = model.inputs[0].get_partial_shape()
        facts["input_dims"] = [d.get_length() if d.is_static else None for d in shape]
        return model, facts


def _save_ir(ov, model, xml: Path, facts: dict) -> None:
    """The IR pair and its sidecar, each renamed into place when complete (the sidecar last: it marks
    the entry as whole)."""
    xml.parent.mkdir(parents=True, exist_ok=True)
    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.tmp.xml")
    try:
        ov.save_model(model, str(tmp), compress_to_fp16=False)
        os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
        os.replace(tmp, xml)
    finally:
        for leftover in (tmp, tmp.with_suffix(".bin")):
            leftover.unlink(missing_ok=True)
    atomic_write(xml.with_suffix(".json"), json.dumps(facts) + "\n")


class OpenVINOBackend(Backend):
    """Runs an ONNX model on OpenVINO's CPU plugin (``options``: an OpenVINOOptions)."""

    runtime = "openvino"
    device = "cpu"

    def __init__(self, model: str | os.PathLike | CompiledModelFromOnnx, options: OpenVINOOptions | None = None, *,
                 size_multiple: int | None = None):
        loader = model if isinstance(model, CompiledModelFromOnnx) else CompiledModelFromOnnx(model, options)
        self.compiled, facts = loader()
        self.path, self.options = loader.path, loader.options
        self.metadata = dict(facts["metadata"])
        self.precision = facts["precision"]  # the export's
        self.inference_precision = facts["inference_precision"]  # what the CPU computes in
        self.channels_first_ffn = facts.get("channels_first_ffn", 0)  # FRFN blocks rewritten to run channels-first
        self.name = f"openvino[CPU,{self.inference_precision}]:{self.path.name}"
        self.size_multiple, self.size_multiple_source = model_size_multiple(self.path, self.metadata, size_multiple)
        self.shape_range = shape_range_from_dims(facts["input_dims"], self.size_multiple)
        self.intra_op_threads = self.options.threads
        self.settings_key = f"{self.inference_precision}-{self.options.mode}{_rewrite_tag(self.options)}"
        self._idle: queue.SimpleQueue = queue.SimpleQueue()

    def _infer(self, batch: np.ndarray) -> np.ndarray:
        try:
            request = self._idle.get_nowait()
        except queue.Empty:
            request = self.compiled.create_infer_request()
        try:
            request.infer({0: batch})
            # the request reuses its output buffer: copy before handing the request back
            return np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True)
        finally:
            self._idle.put(request)

    def close(self) -> None:
        self.compiled = None
        self._idle = queue.SimpleQueue()
