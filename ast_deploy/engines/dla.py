"""DLA (the Deep Learning Accelerator of Jetson AGX Orin and Orin NX) for ``ast-build --dla-core N``.

Where TensorRT has DLA (NVIDIA, "Working with DLA", TensorRT 11.4.1 docs,
https://docs.nvidia.com/deeplearning/tensorrt/11.4.1/inference-library/work-with-dla.html, and the
11.4.1 release notes):

- TensorRT 10.7 was the last 10.x release with DLA (JetPack 6 ships 10.3: DLA is there);
- TensorRT 11.0 to 11.3 have no DLA, 11.4.0 only on Windows on ARM;
- TensorRT 11.4.1 and later: DLA again on Jetson AGX Orin under JetPack 7.2.2 or later, nowhere else
  on Linux (Jetson Thor has no DLA; the SBSA build has none outside JetPack).

The builder side is TensorRT's documented ``IBuilderConfig`` API: ``default_device_type =
DeviceType.DLA``, ``DLA_core = N``, ``BuilderFlag.GPU_FALLBACK`` so that layers DLA cannot run go to
the GPU, ``can_run_on_DLA(layer)`` / ``set_device_type(layer, DeviceType.GPU)`` per layer
("Building and Launching the Loadable"). DLA computes FP16 and INT8 only; networks are strongly
typed (11.4.1, "Strongly Typed Networks for DLA"), so the ONNX itself must be FP16 or INT8
(``ast-export --fp16`` / ``--int8``); DLA has no dynamic dimensions, so the profile is static
(min = opt = max, "DLA Supported Layers and Restrictions"). Attention (MatMul, Softmax), LayerNorm and the AST plugins are
pinned to the GPU; DLA takes the convolutions and element-wise layers.

Polygraphy's ``CreateConfig(use_dla=True)`` always picks DLA core 0 (polygraphy 0.53.6,
``backend/trt/config.py``), so the options go through ``PostprocessConfig`` with :func:`configure`
instead. Nothing here imports TensorRT at module level; the tests drive :func:`configure` with a
small stand-in for ``tensorrt`` and the builder config.
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from ..metadata import onnx_precision

DLA_LAST_10X = (10, 7)
DLA_AGAIN = (11, 4, 1)
JETPACK_FOR_11 = (7, 2, 2)

DLA_SUPPORT = ("DLA is supported by TensorRT up to 10.7 (JetPack 6 ships 10.3), and again from TensorRT "
               "11.4.1 on Jetson AGX Orin with JetPack 7.2.2 or later (NVIDIA, TensorRT 11.4.1 'Working with "
               "DLA'); TensorRT 11.0 to 11.4.0 have no DLA on Linux, and Jetson Thor and Orin Nano have none")

# Layer kinds that stay on the GPU whatever DLA could take: attention, normalization, plugins, and the
# shape / data-movement layers around them (TensorRT's LayerType names).
GPU_LAYER_TYPES = frozenset({"MATRIX_MULTIPLY", "SOFTMAX", "NORMALIZATION", "PLUGIN", "PLUGIN_V2", "PLUGIN_V3",
                             "REDUCE", "TOPK", "GATHER", "SCATTER", "SHUFFLE", "SLICE", "SHAPE", "CONSTANT",
                             "IDENTITY", "CAST", "QUANTIZE", "DEQUANTIZE", "FILL", "SELECT", "UNARY"})


class DLAError(ValueError):
    """DLA was asked for where TensorRT, the device or the ONNX cannot give it (exit code 2)."""


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", str(text))[:4])


@dataclass
class Platform:
    """What the version gate needs to know about the machine (read by :func:`detect_platform`)."""
    model: str | None = None      # /proc/device-tree/model, e.g. "NVIDIA Jetson AGX Orin Developer Kit"
    jetpack: str | None = None    # the nvidia-jetpack package's version, e.g. "6.2+b77"
    l4t: str | None = None        # /etc/nv_tegra_release, e.g. "R36 (release), REVISION: 4.3"

    @property
    def is_jetson(self) -> bool:
        return bool(self.model and "jetson" in self.model.lower()) or self.l4t is not None

    @property
    def is_agx_orin(self) -> bool:
        return bool(self.model and re.search(r"agx\s+orin", self.model, re.I))

    def describe(self) -> str:
        if not self.is_jetson:
            return "not a Jetson"
        parts = [self.model or "a Jetson"]
        if self.jetpack:
            parts.append(f"JetPack {self.jetpack}")
        elif self.l4t:
            parts.append(f"L4T {self.l4t}")
        return ", ".join(parts)


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text(errors="replace").strip("\x00\n ") or None
    except OSError:
        return None


def detect_platform() -> Platform:
    jetpack = None
    try:
        out = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "nvidia-jetpack"], capture_output=True,
                             text=True, timeout=10)
        jetpack = out.stdout.strip() or None if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    l4t = _read("/etc/nv_tegra_release")
    return Platform(model=_read("/proc/device-tree/model"), jetpack=jetpack,
                    l4t=l4t.splitlines()[0].lstrip("# ") if l4t else None)


def check_dla_support(tensorrt_version: str, platform: Platform) -> None:
    """Raise DLAError unless this TensorRT version has DLA on this platform."""
    v = _version_tuple(tensorrt_version)
    where = f"TensorRT {tensorrt_version} on {platform.describe()}"
    if not platform.is_jetson:
        raise DLAError(f"--dla-core needs a Jetson with DLA cores (AGX Orin, Orin NX); this is {where}. {DLA_SUPPORT}.")
    if v[:2] <= DLA_LAST_10X:
        return
    if v[:3] >= DLA_AGAIN:
        jp = _version_tuple(platform.jetpack or "")
        if platform.is_agx_orin and jp and jp[:3] >= JETPACK_FOR_11:
            return
        raise DLAError(f"--dla-core: {where} has no DLA: TensorRT 11.4.1+ supports DLA only on Jetson AGX Orin "
                       f"with JetPack 7.2.2 or later. {DLA_SUPPORT}.")
    raise DLAError(f"--dla-core: {where} has no DLA. {DLA_SUPPORT}.")


def check_dla_precision(precision: str) -> None:
    if precision not in ("fp16", "int8"):
        raise DLAError("--dla-core: DLA computes FP16 and INT8 only, and TensorRT takes the precision from the "
                       f"ONNX (strongly typed); this ONNX is {precision.upper()}: export it with ast-export --fp16 "
                       "or --int8")


@dataclass
class DLAOptions:
    core: int
    gpu_fallback: bool = False
    placement: list = field(default_factory=list)  # filled by configure(): one entry per network layer

    def to_dict(self) -> dict:
        """What changes the engine (cache key, sidecar options)."""
        return {"core": self.core, "gpu_fallback": self.gpu_fallback}


def _type_name(layer_type) -> str:
    return str(getattr(layer_type, "name", layer_type)).rsplit(".", 1)[-1]


def configure(trt, options: DLAOptions, builder, network, config) -> None:
    """Set DLA on a TensorRT ``IBuilderConfig`` (the ``PostprocessConfig`` callback); record per layer
    where it is meant to run in ``options.placement``. Raise DLAError when the device has too few
    DLA cores, or, without GPU fallback, when a layer cannot run on DLA."""
    cores = getattr(builder, "num_DLA_cores", None)
    if cores is not None and not 0 <= options.core < cores:
        raise DLAError(f"--dla-core {options.core}: this device has {cores} DLA core(s)"
                       + (f" (0 to {cores - 1})" if cores else " (Orin Nano and Thor have none)"))
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = options.core
    # layer types and devices in the engine inspector's output (the sidecar's engine_layers)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    if options.gpu_fallback:
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    placement, refused = [], []
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        kind = _type_name(layer.type)
        if kind in GPU_LAYER_TYPES or not config.can_run_on_DLA(layer):
            if not options.gpu_fallback:
                refused.append(f"{layer.name} ({kind})")
            config.set_device_type(layer, trt.DeviceType.GPU)
            device = "GPU"
        else:
            device = "DLA"
        placement.append({"layer": layer.name, "type": kind, "device": device})
    if refused:
        shown = ", ".join(refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        raise DLAError(f"--dla-core without --gpu-fallback: {len(refused)} of {network.num_layers} layers cannot run "
                       f"on DLA ({shown}); AST's attention, LayerNorm and plugins run on the GPU: add --gpu-fallback")
    options.placement = placement


def postprocess_config(poly_trt, create_config, trt, options: DLAOptions):
    """Polygraphy's ``PostprocessConfig`` around ``create_config`` that applies :func:`configure`."""
    return poly_trt.PostprocessConfig(create_config, lambda builder, network, config:
                                      configure(trt, options, builder, network, config))


def options_entry(options: DLAOptions | None) -> dict:
    """The build options' DLA entry (part of the cache key): nothing without DLA."""
    return {} if options is None else {"dla": options.to_dict()}


def wrap_chain(poly_trt, trt, chain, options: DLAOptions | None):
    """The engine loader ``chain`` (Polygraphy ``EngineBytesFromNetwork``) with its config passed
    through :func:`configure`; ``chain`` itself without DLA."""
    if options is None:
        return chain
    return poly_trt.EngineBytesFromNetwork(chain._network, config=postprocess_config(poly_trt, chain._config, trt, options),
                                           save_timing_cache=chain.timing_cache_path)


def record(sidecar: dict, trt, options: DLAOptions | None, engine_bytes) -> dict:
    """Add which layers run where to an engine's sidecar (nothing without DLA)."""
    if options is not None:
        sidecar["dla"] = sidecar_record(options, engine_layer_devices(trt, engine_bytes))
    return sidecar


def check_static_profile(profile) -> None:
    """DLA has no dynamic dimensions: the profile's min, opt and max must be equal, and the engine
    then runs at exactly that size (NVIDIA, "DLA Supported Layers and Restrictions", general
    restrictions; non-batch dimensions at most 8192)."""
    lo, opt, hi = (tuple(profile.min), tuple(profile.opt), tuple(profile.max))
    if not lo == opt == hi:
        raise DLAError(f"--dla-core: DLA runs static shapes only (min = opt = max), this profile is {profile}: "
                       f"give e.g. --shapes {'x'.join(map(str, opt))}:{'x'.join(map(str, opt))}:{'x'.join(map(str, opt))} "
                       "(the Runner tiles larger images into that size)")
    if any(d > 8192 for d in hi[1:]):
        raise DLAError(f"--dla-core: DLA takes non-batch dimensions up to 8192, this profile is {profile}")


def prepare(trt, onnx_path, core: int | None, gpu_fallback: bool = False, platform: Platform | None = None,
            profile=None):
    """The DLA options for a build, or None when no ``--dla-core`` was given: checks the TensorRT
    version, the platform, the ONNX's precision and the profile first (DLAError with the reason)."""
    if core is None:
        if gpu_fallback:
            raise DLAError("--gpu-fallback goes with --dla-core N")
        return None
    if core < 0:
        raise DLAError(f"--dla-core must be 0 or more, got {core}")
    check_dla_support(str(trt.__version__), platform or detect_platform())
    check_dla_precision(onnx_precision(onnx_path))
    if profile is not None:
        check_static_profile(profile)
    return DLAOptions(core=core, gpu_fallback=gpu_fallback)


def engine_layer_devices(trt, engine_bytes) -> list[dict] | None:
    """Which layers of a built engine run where, from TensorRT's engine inspector (JSON layer
    information; a DLA subgraph appears as one layer whose type or name says DLA). None when the
    engine cannot be read here (the runtime needs the device the engine was built for)."""
    try:
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        engine = runtime.deserialize_cuda_engine(bytes(engine_bytes))
        info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    except Exception:
        return None
    layers = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):  # profiling verbosity LAYER_NAMES_ONLY: names only
            layer = {"Name": layer}
        kind = str(layer.get("LayerType", ""))
        name = str(layer.get("Name", ""))
        on_dla = "DLA" in kind.upper() or "DLA" in name.upper().split("[")[0]
        layers.append({"layer": name, "type": kind, "device": "DLA" if on_dla else "GPU"})
    return layers


def sidecar_record(options: DLAOptions, engine_layers: list | None) -> dict:
    planned = options.placement
    return {
        "core": options.core, "gpu_fallback": options.gpu_fallback,
        "planned": {"dla": sum(p["device"] == "DLA" for p in planned),
                    "gpu": sum(p["device"] == "GPU" for p in planned), "layers": planned},
        # the engine inspector's view after fusion; None where the engine could not be inspected
        "engine_layers": engine_layers,
    }
