"""Compile a fused kernel to PTX for a named GPU, with no GPU present (``triton.compile`` + ``GPUTarget``).

What comes out is what a TensorRT AOT plugin embeds in the engine: the PTX, its entry name, the
block size and shared memory. Two fixes to Triton's output make it launchable by TensorRT:

- the entry is renamed after the spec (``ast_assa_fp16_..``) so profiles and engines name what ran;
- Triton >= 3.3 appends hidden pointer parameters (``global_scratch``, later ``profile_scratch``) that
  its own launcher fills. TensorRT's AOT plugins launch with exactly inputs, scalars, outputs (the
  ``aot_impl`` contract in ``tensorrt.plugin``, whose 11.x examples use Triton >= 3.3's API), so the
  driver would read past its argument array. They are removed when the body never reads them, and
  compilation fails loudly if it does.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .kernel_specs import AssaSpec, PartialConvSpec


@dataclass(frozen=True)
class CompiledKernel:
    name: str
    ptx: str
    capability: int
    block_x: int  # threads per block: the PTX's .reqntid
    shared_mem: int  # bytes of dynamic shared memory the launch must give

    @property
    def ptx_target(self) -> str:
        return re.search(r"^\.target\s+(\S+)", self.ptx, re.M).group(1)

    @property
    def ptx_isa(self) -> str:
        return re.search(r"^\.version\s+(\S+)", self.ptx, re.M).group(1)


def kernel_for(spec):
    if isinstance(spec, AssaSpec):
        from .triton_assa import assa_kernel

        return assa_kernel
    if isinstance(spec, PartialConvSpec):
        from .triton_partial_conv import partial_conv_kernel

        return partial_conv_kernel
    raise TypeError(f"no kernel for {type(spec).__name__}")


def ptx_version_for_driver(driver_version: int) -> int:
    """Highest PTX ISA (e.g. 90 for 9.0) a CUDA driver (``cuDriverGetVersion``, e.g. 13000) can JIT."""
    major, minor = driver_version // 1000, (driver_version % 1000) // 10
    if major >= 13:
        return 90 + (major - 13) * 10 + minor
    if major == 12:
        return 80 + minor - (1 if minor >= 6 else 0)  # CUDA 12.6 shipped PTX 8.5
    if major == 11:
        return 70 + minor
    raise ValueError(f"CUDA driver {driver_version} is too old for these kernels")


def _ast_source(fn, signature: dict, constexprs: dict):
    from triton.compiler import ASTSource

    params = inspect.signature(ASTSource.__init__).parameters
    if "constexprs" in params:  # triton >= 3.3
        return ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    return ASTSource(fn=fn, signature=signature, constants=constexprs)  # pragma: no cover - triton 3.2


def compile_spec(spec, capability: int, ptx_version: int | None = None) -> CompiledKernel:
    """``spec`` compiled for ``sm_<capability>``; ``ptx_version`` (e.g. 85) caps the PTX ISA for older drivers."""
    import triton
    from triton.backends.compiler import GPUTarget

    src = _ast_source(kernel_for(spec).jit, spec.signature(), spec.constexprs())
    options = {"num_warps": spec.num_warps, "enable_fp_fusion": True}
    if ptx_version is not None:
        options["ptx_version"] = int(ptx_version)
    compiled = triton.compile(src, target=GPUTarget("cuda", int(capability), 32), options=options)
    ptx = finalize_ptx(compiled.asm["ptx"], compiled.metadata.name, spec.kernel_name(), len(spec.runtime_params()))
    return CompiledKernel(spec.kernel_name(), ptx, int(capability), compiled.metadata.num_warps * 32,
                          compiled.metadata.shared)


_IDENT = r"[A-Za-z0-9_$]"


def entry_params(ptx: str, name: str) -> list[str]:
    m = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.S)
    if m is None:
        raise ValueError(f"no .entry {name} in the PTX")
    return [p.strip() for p in m.group(1).split(",") if p.strip()]


def finalize_ptx(ptx: str, old_name: str, new_name: str, num_params: int) -> str:
    """Rename the entry and drop the hidden trailing parameters beyond the first ``num_params``."""
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", new_name):
        raise ValueError(f"{new_name!r} is not a PTX identifier")
    ptx = re.sub(rf"(?<!{_IDENT}){re.escape(old_name)}(?=(_param_\d+)?(?!{_IDENT}))", new_name, ptx)
    params = entry_params(ptx, new_name)
    if len(params) < num_params:
        raise ValueError(f"{new_name} has {len(params)} parameters, the launch passes {num_params}")
    header = re.search(rf"\.entry\s+{re.escape(new_name)}\s*\(.*?\)", ptx, re.S)
    body = ptx[header.end():]
    for extra in params[num_params:]:
        pname = extra.split()[-1]
        if re.search(rf"(?<!{_IDENT}){re.escape(pname)}(?!{_IDENT})", body):
            raise ValueError(f"{new_name} reads its hidden parameter {pname} (Triton scratch memory): TensorRT "
                             "cannot provide it, change the kernel so it needs no scratch")
    kept = ",\n\t".join(params[:num_params])
    return ptx[:header.start()] + f".entry {new_name}(\n\t{kept}\n)" + body


def assemble(ptx: str, capability: int) -> None:
    """Assemble ``ptx`` with the ptxas bundled with Triton (no GPU needed); raise with its log on error."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas = get_ptxas(capability).path
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "k.ptx"
        src.write_text(ptx)
        proc = subprocess.run([ptxas, f"--gpu-name={sm_arch_from_capability(capability)}", str(src), "-o",
                               str(Path(tmp) / "k.cubin")], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"ptxas rejected the PTX:\n{proc.stderr}")


def triton_default_ptx_version(capability: int) -> int | None:
    """The PTX ISA Triton emits by default for ``capability`` (from its bundled ptxas), if it can tell."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas, ptx_get_version

        return ptx_get_version(get_ptxas(capability).version)
    except Exception:  # pragma: no cover - internal API moved
        return None


def cuda_driver_version() -> int:
    import ctypes

    version = ctypes.c_int(0)
    if ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(version)):
        raise RuntimeError("cuDriverGetVersion failed")
    return version.value


def build_target() -> tuple[int, int | None]:
    """(compute capability, PTX ISA) for the GPU and driver at hand, where a TensorRT engine is built.

    The ISA is capped at what the driver can load: Triton otherwise emits the newest its ptxas knows
    (9.4 with triton 3.9), which older R5xx drivers reject. ``AST_PTX_ARCH`` / ``AST_PTX_VERSION``
    (e.g. 90 / 85) override both.
    """
    import os

    arch = os.environ.get("AST_PTX_ARCH")
    if arch:
        capability = int(arch)
    else:
        from triton.runtime import driver

        capability = int(driver.active.get_current_target().arch)
    if os.environ.get("AST_PTX_VERSION"):
        return capability, int(os.environ["AST_PTX_VERSION"])
    limits = [v for v in (ptx_version_for_driver(cuda_driver_version()), triton_default_ptx_version(capability))
              if v is not None]
    return capability, min(limits)
