"""NVIDIA's real ``tensorrt.plugin`` (QDP) from the ``tensorrt-cu12-bindings`` wheels, on a stand-in core.

Every ``tensorrt-cu12-bindings`` wheel holds ``tensorrt_bindings/plugin/``, the plain-Python plugin
layer of that TensorRT version, beside a compiled ``tensorrt`` module that needs ``libnvinfer``. This
module downloads a wheel into a cache (``$AST_TRT_WHEELS``, default ``~/.cache/ast-deploy/trt-wheels``;
NVIDIA's wheels are never committed), extracts the plugin package and loads it as ``tensorrt.plugin``
on top of :class:`Core`, the smallest stand-in for the compiled core that the real code imports
(PluginField*, DataType, TensorFormat, the plugin registry, dimension expressions and an expression
builder, the plugin base classes). :func:`loaded` restores ``sys.modules`` afterwards.

:class:`Builder` then calls a plugin the way onnx-tensorrt and the TensorRT builder do: the creator's
fields from the ONNX node's attributes (creator field order, INT -> 1-element int32 ``INT32``, FLOAT ->
1-element float32 ``FLOAT32``: onnx-tensorrt ``loadFields``), ``create_plugin`` with the request the
node's ``aot`` attribute selects, output types from placeholder dims, output shapes from symbolic
dims, format combinations, tactics, and for AOT plugins the launch parameters and the kernel.

This stand-in stays: the real TensorRT cannot be installed here (its libraries are on NVIDIA's index
only), and the real TensorRT-RTX that builds here has no plugin layer (``tests/test_rtx.py``,
``test_ast_plugins_cannot_register_with_tensorrt_rtx``), so no real library here can register the
plugins or call their shape, type, format and AOT functions.

Run as a script (``python tests/trt_qdp.py VERSION OUT.json``) it builds the test model's plugins
end to end, including real Triton PTX, in a process without ``TRITON_INTERPRET``.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import json
import os
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import numpy as np

# 10.9: the first with aot_impl; 10.13: JetPack 7; 11.1: the last with int(f.data); 11.4: the newest.
VERSIONS = ("10.9.0.34", "10.13.3.9", "11.1.0.106", "11.4.0.106")
PACKAGE = "tensorrt-cu12-bindings"


class Unavailable(RuntimeError):
    """The wheel could not be had (offline, no such version): the tests skip with this reason."""


def cache_dir() -> Path:
    return Path(os.environ.get("AST_TRT_WHEELS") or Path.home() / ".cache" / "ast-deploy" / "trt-wheels")


def wheel_path(version: str) -> Path:
    folder = cache_dir()
    found = sorted(folder.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if found:
        return found[0]
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
           f"{PACKAGE}=={version}", "-d", str(folder)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise Unavailable(f"cannot download {PACKAGE}=={version}: {e}") from None
    found = sorted(folder.glob(f"tensorrt_cu12_bindings-{version}-*.whl"))
    if proc.returncode or not found:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
        raise Unavailable(f"cannot download {PACKAGE}=={version} (offline?): {tail[0]}")
    return found[0]


def plugin_package(version: str) -> Path:
    """``<cache>/extracted/<version>/tensorrt``: a folder whose ``plugin/`` is the wheel's QDP package."""
    root = cache_dir() / "extracted" / version
    target = root / "tensorrt" / "plugin"
    if not (target / "__init__.py").is_file():
        with zipfile.ZipFile(wheel_path(version)) as wheel:
            members = [m for m in wheel.namelist() if m.startswith("tensorrt_bindings/plugin/") and m.endswith(".py")]
            if not members:
                raise Unavailable(f"{PACKAGE}=={version} has no tensorrt_bindings/plugin/ (TensorRT < 10.6)")
            tmp = root / f"tmp-{os.getpid()}"
            for m in members:
                dest = tmp / "plugin" / m[len("tensorrt_bindings/plugin/"):]
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(wheel.read(m))
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp / "plugin", target)
            except OSError:  # another process extracted it first
                pass
    return target.parent


# ---------------------------------------------------------------------------------------- core stand-in


class DataType(enum.IntEnum):  # values as in NvInferRuntimeBase.h
    FLOAT = 0
    HALF = 1
    INT8 = 2
    INT32 = 3
    BOOL = 4
    UINT8 = 5
    FP8 = 6
    BF16 = 7
    INT64 = 8
    INT4 = 9


class TensorFormat(enum.IntEnum):
    LINEAR = 0
    CHW2 = 1
    HWC8 = 2
    CHW4 = 3
    CHW16 = 4
    CHW32 = 5
    DHWC8 = 6
    CDHW32 = 7
    HWC = 8
    DLA_LINEAR = 9
    DLA_HWC4 = 10
    HWC16 = 11
    DHWC = 12


class PluginFieldType(enum.IntEnum):
    FLOAT16 = 0
    FLOAT32 = 1
    FLOAT64 = 2
    INT8 = 3
    INT16 = 4
    INT32 = 5
    CHAR = 6
    DIMS = 7
    UNKNOWN = 8
    BF16 = 9
    INT64 = 10
    FP8 = 11
    INT4 = 12


FIELD_DTYPES = {PluginFieldType.FLOAT16: np.float16, PluginFieldType.FLOAT32: np.float32,
                PluginFieldType.FLOAT64: np.float64, PluginFieldType.INT8: np.int8, PluginFieldType.INT16: np.int16,
                PluginFieldType.INT32: np.int32, PluginFieldType.INT64: np.int64, PluginFieldType.CHAR: np.int8,
                PluginFieldType.UNKNOWN: np.int8}


class PluginField:
    """Like the binding: ``data`` reads back as a NumPy array of the field type's element type."""

    def __init__(self, name="", data=None, type=PluginFieldType.UNKNOWN):
        self.name, self.type = name, PluginFieldType(type)
        dtype = FIELD_DTYPES.get(self.type, np.int8)
        if data is None:
            data = np.array([], dtype)
        elif isinstance(data, (bytes, bytearray)):
            data = np.frombuffer(bytes(data), dtype=np.int8)
        self.data = np.ascontiguousarray(data).view(dtype) if np.asarray(data).dtype != dtype else np.asarray(data)
        self.size = len(self.data)


class PluginFieldCollection(list):
    pass


class DimensionOperation(enum.IntEnum):
    SUM = 0
    PROD = 1
    MAX = 2
    MIN = 3
    SUB = 4
    EQUAL = 5
    LESS = 6
    FLOOR_DIV = 7
    CEIL_DIV = 8


_OPS = {DimensionOperation.SUM: lambda a, b: a + b, DimensionOperation.PROD: lambda a, b: a * b,
        DimensionOperation.MAX: max, DimensionOperation.MIN: min, DimensionOperation.SUB: lambda a, b: a - b,
        DimensionOperation.EQUAL: lambda a, b: int(a == b), DimensionOperation.LESS: lambda a, b: int(a < b),
        DimensionOperation.FLOOR_DIV: lambda a, b: a // b, DimensionOperation.CEIL_DIV: lambda a, b: -(-a // b)}


class IDimensionExpr:
    """A constant, a named run-time dim, or an operation on two expressions (folded when constant)."""

    def __init__(self, value=None, op=None, args=()):
        self.value, self.op, self.args = value, op, args

    def is_constant(self) -> bool:
        return isinstance(self.value, int)

    def get_constant_value(self) -> int:
        assert self.is_constant(), "not a constant"
        return self.value

    def evaluate(self, env: dict) -> int:
        if self.op is None:
            return self.value if isinstance(self.value, int) else env[self.value]
        return _OPS[self.op](*(a.evaluate(env) for a in self.args))

    def __repr__(self):
        return repr(self.value) if self.op is None else f"{self.op.name}({self.args[0]!r}, {self.args[1]!r})"


class IExprBuilder:
    def constant(self, value: int) -> IDimensionExpr:
        return IDimensionExpr(int(value))

    def operation(self, op, first: IDimensionExpr, second: IDimensionExpr) -> IDimensionExpr:
        assert isinstance(first, IDimensionExpr) and isinstance(second, IDimensionExpr), (first, second)
        if first.is_constant() and second.is_constant():
            return IDimensionExpr(_OPS[op](first.value, second.value))
        return IDimensionExpr(op=DimensionOperation(op), args=(first, second))

    def declare_size_tensor(self, *args):  # pragma: no cover - not used by the AST plugins
        raise NotImplementedError


class Dims(list):
    MAX_DIMS = 8

    def __init__(self, shape=()):
        super().__init__([0] * shape if isinstance(shape, int) else list(shape))


class DimsExprs(list):
    def __init__(self, n=0):
        super().__init__([None] * n if isinstance(n, int) else list(n))


class PluginTensorDesc:
    def __init__(self, dims=(), type=DataType.FLOAT, format=TensorFormat.LINEAR, scale=1.0):
        self.dims, self.type, self.format, self.scale = Dims(dims), type, format, scale


class DynamicPluginTensorDesc:
    def __init__(self, desc: PluginTensorDesc, min=(), opt=(), max=()):
        self.desc, self.min, self.opt, self.max = desc, Dims(min), Dims(opt), Dims(max)


class PluginRegistry:
    def __init__(self):
        self.creators = {}

    def register_creator(self, creator, namespace="") -> bool:
        key = (creator.name, creator.plugin_version, namespace)
        assert key not in self.creators, f"creator {key} registered twice"
        self.creators[key] = creator
        return True

    def get_creator(self, name, version, namespace=""):
        return self.creators.get((name, version, namespace))

    def deregister_creator(self, creator) -> bool:
        for key, value in list(self.creators.items()):
            if value is creator:
                del self.creators[key]
                return True
        return False

    @property
    def all_creators(self):
        return list(self.creators.values())


class _Base:
    def __init__(self, *args, **kwargs):
        pass


def make_core() -> types.ModuleType:
    """A module with what ``tensorrt.plugin`` imports from the compiled ``tensorrt``."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "stand-in"
    for cls in (DataType, TensorFormat, PluginFieldType, PluginField, PluginFieldCollection, DimensionOperation,
                IDimensionExpr, IExprBuilder, Dims, DimsExprs, PluginTensorDesc, DynamicPluginTensorDesc):
        setattr(trt, cls.__name__, cls)
    for name in ("IPluginCreatorV3Quick", "IPluginV3", "IPluginV3QuickCore", "IPluginV3QuickBuild",
                 "IPluginV3QuickRuntime", "IPluginV3QuickAOTBuild", "ISymExpr", "ITensor"):
        setattr(trt, name, type(name, (_Base,), {}))
    trt.float32, trt.float16, trt.int32, trt.int8, trt.bfloat16 = (DataType.FLOAT, DataType.HALF, DataType.INT32,
                                                                   DataType.INT8, DataType.BF16)
    trt.QuickPluginCreationRequest = enum.IntEnum(
        "QuickPluginCreationRequest", "UNKNOWN PREFER_JIT PREFER_AOT STRICT_JIT STRICT_AOT", start=0)
    trt.TensorRTPhase = enum.IntEnum("TensorRTPhase", "BUILD RUNTIME", start=0)
    trt.PluginArgType = enum.IntEnum("PluginArgType", "INT", start=0)
    trt.PluginArgDataType = enum.IntEnum("PluginArgDataType", "INT8 INT16 INT32", start=0)

    class Logger:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

        def __init__(self, min_severity=2):
            self.min_severity = min_severity

        def log(self, severity, msg):
            pass

    trt.Logger = Logger
    registry = PluginRegistry()
    trt.get_plugin_registry = lambda: registry
    nptypes = {DataType.FLOAT: np.float32, DataType.HALF: np.float16, DataType.INT8: np.int8,
               DataType.INT32: np.int32, DataType.BOOL: np.bool_, DataType.UINT8: np.uint8, DataType.INT64: np.int64}
    trt.nptype = lambda dtype: nptypes[dtype]
    return trt


@contextlib.contextmanager
def loaded(version: str):
    """``(tensorrt stand-in, real tensorrt.plugin of version)`` in ``sys.modules`` for the block;
    everything named ``tensorrt`` / ``tensorrt.*`` before it is put back afterwards."""
    folder = plugin_package(version)
    saved = {k: v for k, v in sys.modules.items() if k == "tensorrt" or k.startswith("tensorrt.")}
    for k in saved:
        del sys.modules[k]
    trt = make_core()
    trt.__path__ = [str(folder)]
    trt.__package__ = "tensorrt"
    sys.modules["tensorrt"] = trt
    try:
        trtp = importlib.import_module("tensorrt.plugin")
        trt.plugin = trtp
        yield trt, trtp
    finally:
        for k in [k for k in sys.modules if k == "tensorrt" or k.startswith("tensorrt.")]:
            del sys.modules[k]
        sys.modules.update(saved)


# ---------------------------------------------------------------------------------------- the callers


def onnx_fields(trt, creator, node) -> list:
    """The fields onnx-tensorrt gives ``createPlugin`` for ``node`` (an onnx NodeProto): the creator's
    field names in its order, each from the node attribute of that name (others are not passed)."""
    from onnx import AttributeProto, helper

    attrs = {a.name: a for a in node.attribute}
    fields = []
    for wanted in creator.field_names:
        attr = attrs.get(wanted.name)
        if attr is None:
            continue
        value = helper.get_attribute_value(attr)
        if attr.type == AttributeProto.INT:
            fields.append(trt.PluginField(attr.name, np.array([value], np.int32), trt.PluginFieldType.INT32))
        elif attr.type == AttributeProto.FLOAT:
            fields.append(trt.PluginField(attr.name, np.array([value], np.float32), trt.PluginFieldType.FLOAT32))
        elif attr.type == AttributeProto.STRING:
            fields.append(trt.PluginField(attr.name, value, trt.PluginFieldType.CHAR))
        else:
            raise AssertionError(f"attribute type {attr.type} not used by the AST nodes")
    return fields


def creation_request(trt, node):
    """onnx-tensorrt: a node's ``aot`` attribute picks STRICT_AOT / STRICT_JIT, else the network flags."""
    for a in node.attribute:
        if a.name == "aot":
            return trt.QuickPluginCreationRequest.STRICT_AOT if a.i else trt.QuickPluginCreationRequest.STRICT_JIT
    return trt.QuickPluginCreationRequest.UNKNOWN


class Builder:
    """Calls one plugin as the TensorRT builder does; shapes are tuples of ints or dim names."""

    def __init__(self, trt, plugin, input_types, input_shapes):
        self.trt, self.plugin = trt, plugin
        self.input_types, self.input_shapes = list(input_types), [tuple(s) for s in input_shapes]
        self.exprs = IExprBuilder()

    def _dims_exprs(self, shape):
        return DimsExprs([IDimensionExpr(d) for d in shape])

    def output_types(self):
        return self.plugin.get_output_data_types(self.input_types, [len(s) for s in self.input_shapes])

    def output_shapes(self):
        return self.plugin.get_output_shapes([self._dims_exprs(s) for s in self.input_shapes], [], self.exprs)

    def _in_out(self, types, env):
        shapes = self.input_shapes + self.out_shapes(env)
        return [DynamicPluginTensorDesc(PluginTensorDesc([env.get(d, d) if isinstance(d, str) else d for d in s],
                                                         t, TensorFormat.LINEAR)) for s, t in zip(shapes, types)]

    def out_shapes(self, env):
        return [tuple(e.evaluate(env) for e in exprs) for exprs in self.output_shapes()]

    def format_combinations(self, env):
        """Every (types, formats) the plugin offers: the flat PluginTensorDesc list cut per combination."""
        n = len(self.input_types) + len(self.output_types())
        flat = self.plugin.get_supported_format_combinations(self._in_out(self.input_types + self.output_types(), env),
                                                              len(self.input_types))
        return [tuple((d.type, d.format) for d in flat[i:i + n]) for i in range(0, len(flat), n)]

    def configure(self, types, env):
        io = self._in_out(types, env)
        k = len(self.input_types)
        self.plugin.configure_plugin(io[:k], io[k:])
        return self.plugin.get_valid_tactics()

    def launch(self, types, env, tactic=0):
        """``get_launch_params`` + ``get_kernel`` for ``types``; launch values evaluated in ``env``."""
        io = self._in_out(types, env)
        k = len(self.input_types)
        self.plugin.configure_plugin(io[:k], io[k:])
        self.plugin.set_tactic(tactic)
        params = _LaunchParams()
        setter = _SymExprSetter()
        self.plugin.get_launch_params([self._dims_exprs(s) for s in self.input_shapes], io, k, params, setter,
                                      self.exprs)
        name, ptx = self.plugin.get_kernel([d.desc for d in io[:k]], [d.desc for d in io[k:]])
        launch = {f: getattr(params, f).expr.evaluate(env) for f in _LaunchParams.FIELDS}
        scalars = [setter[i].expr.evaluate(env) for i in range(setter.nbSymExprs)]
        return name, ptx, launch, scalars, [setter[i].dtype.name for i in range(setter.nbSymExprs)]


class _LaunchParams:
    FIELDS = ("grid_x", "grid_y", "grid_z", "block_x", "block_y", "block_z", "shared_mem")


class _SymExprSetter:
    def __init__(self):
        self.nbSymExprs = 0
        self.items = {}

    def __setitem__(self, i, value):
        assert 0 <= i < self.nbSymExprs
        self.items[i] = value

    def __getitem__(self, i):
        return self.items[i]


# ---------------------------------------------------------------------------------------- end to end


def ast_nodes(model):
    """``{op_type: first node}`` of the AST custom nodes in an ONNX model."""
    found = {}
    for n in model.graph.node:
        if n.domain == "ast" and n.op_type not in found:
            found[n.op_type] = n
    return found


def create(trt, node):
    creator = trt.get_plugin_registry().get_creator(node.op_type, "1", "ast")
    assert creator is not None, f"no creator for ast::{node.op_type}"
    fc = trt.PluginFieldCollection(onnx_fields(trt, creator, node))
    return creator, creator.create_plugin(node.op_type, "ast", fc, trt.TensorRTPhase.BUILD, creation_request(trt, node))


def main(argv=None) -> int:
    """``VERSION MODEL.onnx OUT.json``: every AST plugin of the model through the builder's calls with
    real Triton PTX (``AST_PTX_ARCH`` / ``AST_PTX_VERSION`` name the target); results as JSON."""
    version, model_path, out = (argv or sys.argv[1:])[:3]
    import onnx

    model = onnx.load(model_path)
    results = {}
    with loaded(version) as (trt, trtp):
        from ast_deploy.engines import trt_plugins

        trt_plugins._registered = False
        assert trt_plugins.register_plugins()
        for op, node in ast_nodes(model).items():
            _, plugin = create(trt, node)
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            if op == "PartialConv":
                c = attrs_from_value_info(model, node)
                shapes = [("B", "H", "W", c["x"][3]), c["weight"]]
                env = {"B": 2, "H": 24, "W": 40}
            else:
                dims = attrs_from_value_info(model, node)
                shapes = [("Bw",) + tuple(dims["q"][1:]), ("Bw",) + tuple(dims["kv"][1:]), dims["bias"], dims["mix"]]
                if op.endswith("Shifted"):
                    shapes.append(("nW", dims["region_ids"][1]))
                env = {"Bw": 12, "nW": 6}
            types_ = [DataType.HALF, DataType.HALF] + [DataType.FLOAT] * (len(shapes) - 2) + [DataType.HALF]
            if op == "PartialConv":
                types_ = [DataType.HALF, DataType.FLOAT, DataType.HALF]
            b = Builder(trt, plugin, types_[:-1], shapes)
            b.output_types()
            name, ptx, launch, scalars, scalar_types = b.launch(types_, env)
            ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
            results[op] = dict(name=name, ptx=ptx, launch=launch, scalars=scalars, scalar_types=scalar_types,
                               attrs={k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()},
                               shapes=[list(s) for s in shapes], env=env)
    Path(out).write_text(json.dumps(results))
    return 0


def attrs_from_value_info(model, node) -> dict:
    """Static dims of a node's inputs by the names the plugin gives them, from shape inference
    (``None`` for symbolic dims)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    known = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.input)}
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    names = {"PartialConv": ("x", "weight"),
             "AdaptiveSparseAttention": ("q", "kv", "bias", "mix"),
             "AdaptiveSparseAttentionShifted": ("q", "kv", "bias", "mix", "region_ids")}[node.op_type]
    dims = {}
    for label, name in zip(names, node.input):
        if name in inits:
            dims[label] = inits[name]
            continue
        shape = known[name].type.tensor_type.shape.dim
        dims[label] = tuple(d.dim_value if d.HasField("dim_value") else None for d in shape)
    return dims


if __name__ == "__main__":
    sys.exit(main())
