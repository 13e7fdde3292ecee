"""Fused Triton kernels against the reference ops: numerics under Triton's interpreter on this CPU,
the same checks on CUDA where a GPU exists, and the whole tiny model with the kernels swapped in.

Triton picks interpreter or compiled mode once per process, when it is imported, so this module sets
TRITON_INTERPRET=1 (unless set already) before anything imports triton. On a GPU machine, run
``TRITON_INTERPRET=0 python -m pytest tests/test_kernels.py`` to test the compiled kernels on CUDA.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("triton")

from ast_deploy.ops.triton_runtime import interpreter_enabled  # noqa: E402

INTERPRETED = interpreter_enabled()
if os.environ["TRITON_INTERPRET"] == "1" and not INTERPRETED:
    raise RuntimeError("triton was imported before tests/test_kernels.py set TRITON_INTERPRET=1; run the kernel "
                       "tests in their own process: TRITON_INTERPRET=1 python -m pytest tests/test_kernels.py")
needs_interpreter = pytest.mark.skipif(not INTERPRETED, reason="CPU kernel runs need TRITON_INTERPRET=1")
compiled_only = pytest.mark.skipif(INTERPRETED, reason="TRITON_INTERPRET=1: run with TRITON_INTERPRET=0 to test "
                                                       "the compiled kernels on the GPU")

from ast_deploy.model.ast import shift_region_ids  # noqa: E402
from ast_deploy.ops import ASSA_IMPLS, PARTIAL_CONV_IMPLS, get_impl  # noqa: E402
from ast_deploy.ops.assa import assa_reference  # noqa: E402
from ast_deploy.ops.partial_conv import partial_conv_reference  # noqa: E402


def rel_err(out, ref):
    return float((out.double() - ref.double()).abs().max() / ref.double().abs().max())


def assa_inputs(windows, tokens, heads, head_dim, num_regions=None, dtype=torch.float32, seed=0, spread=1.0):
    g = torch.Generator().manual_seed(seed)
    c = heads * head_dim
    q = (torch.randn(windows, tokens, c, generator=g) * spread).to(dtype)
    kv = (torch.randn(windows, tokens, 2 * c, generator=g) * spread).to(dtype)
    bias = torch.randn(heads, tokens, tokens, generator=g) * 0.5
    mix = torch.softmax(torch.randn(2, generator=g), 0)
    regions = None
    if num_regions:
        regions = torch.randint(0, 3, (num_regions, tokens), generator=g).float()
    return q, kv, bias, mix, regions


def run_assa(q, kv, bias, mix, regions, heads, scale, device="cpu"):
    if device == "cpu" and not INTERPRETED:
        pytest.skip("CPU kernel runs need TRITON_INTERPRET=1")
    from ast_deploy.ops.triton_assa import assa_triton_launch

    args = [t.to(device) if t is not None else None for t in (q, kv, bias, mix, regions)]
    return assa_triton_launch(*args, heads, scale).cpu()


ASSA_CASES = [
    # windows, tokens, heads, head_dim, regions (nW; None = unmasked)
    (6, 64, 1, 32, None),
    (8, 64, 4, 32, 4),
    (3, 64, 16, 32, 1),
    (5, 64, 3, 16, None),
    (4, 64, 2, 64, 2),
    (4, 64, 8, 8, 2),  # the tiny config's head dim: padded to 16 for tl.dot
    (6, 16, 2, 8, 3),  # 4x4 windows
    (4, 36, 2, 16, 2),  # 6x6 windows: N padded to 64
]


@pytest.mark.parametrize("windows,tokens,heads,head_dim,regions", ASSA_CASES)
def test_assa_fp32_matches_reference(windows, tokens, heads, head_dim, regions):
    q, kv, bias, mix, ids = assa_inputs(windows, tokens, heads, head_dim, regions)
    scale = head_dim ** -0.5
    out = run_assa(q, kv, bias, mix, ids, heads, scale)
    ref = assa_reference(q, kv, bias, mix, ids, num_heads=heads, scale=scale)
    assert out.dtype == torch.float32 and out.shape == q.shape
    assert rel_err(out, ref) < 1e-5


def test_assa_uses_the_shift_mask_of_each_window():
    """Real shift regions over 2 images: window b must take region row b % nW, not b."""
    ids = shift_region_ids(16, 24, 8, 4)  # 6 windows per image
    q, kv, bias, mix, _ = assa_inputs(12, 64, 2, 32, seed=3)
    out = run_assa(q, kv, bias, mix, ids, 2, 32 ** -0.5)
    ref = assa_reference(q, kv, bias, mix, ids, num_heads=2, scale=32 ** -0.5)
    unmasked = assa_reference(q, kv, bias, mix, None, num_heads=2, scale=32 ** -0.5)
    assert rel_err(out, ref) < 1e-5
    assert rel_err(unmasked, ref) > 1e-2  # the mask matters for this input


@pytest.mark.parametrize("windows,tokens,heads,head_dim,regions", [(8, 64, 4, 32, 4), (4, 64, 8, 8, None)])
def test_assa_fp16_matches_fp32_reference(windows, tokens, heads, head_dim, regions):
    q, kv, bias, mix, ids = assa_inputs(windows, tokens, heads, head_dim, regions, dtype=torch.float16, seed=1)
    scale = head_dim ** -0.5
    out = run_assa(q, kv, bias.half(), mix.half(), ids, heads, scale)
    ref = assa_reference(q.float(), kv.float(), bias.half().float(), mix.half().float(), ids, num_heads=heads,
                         scale=scale)
    assert out.dtype == torch.float16
    assert rel_err(out, ref) < 2e-3


def overflow_inputs():
    """FP16 inputs with logits past 256 (relu(s)**2 > 65504) but an output well inside FP16's range."""
    heads, head_dim = 2, 32
    q, kv, bias, mix, ids = assa_inputs(4, 64, heads, head_dim, 2, dtype=torch.float32, seed=2)
    q[:, :4], kv[:, :4, : heads * head_dim] = 8.0, 8.0  # 4 tokens whose mutual logits reach ~362
    kv[..., heads * head_dim:] *= 0.01
    return q.half(), kv.half(), bias, mix, ids, heads, head_dim ** -0.5


def test_assa_fp16_stays_finite_past_logit_256():
    q, kv, bias, mix, ids, heads, scale = overflow_inputs()
    ref = assa_reference(q.float(), kv.float(), bias, mix, ids, num_heads=heads, scale=scale)
    # the case really overflows when computed in FP16
    logits = (q.float()[:, :, :32] * scale) @ kv.float()[:, :, :32].transpose(1, 2)
    assert logits.max() > 256
    naive = assa_reference(q, kv, bias.half(), mix.half(), ids, num_heads=heads, scale=scale)
    assert not torch.isfinite(naive).all()

    out = run_assa(q, kv, bias, mix, ids, heads, scale)
    assert out.dtype == torch.float16 and torch.isfinite(out).all()
    assert ref.abs().max() > 100  # the big values made it into the output
    assert rel_err(out, ref) < 2e-3


def test_assa_rejects_bad_shapes():
    q, kv, bias, mix, _ = assa_inputs(2, 64, 2, 32)
    with pytest.raises(ValueError, match="kv must be"):
        run_assa(q, kv[..., :-1], bias, mix, None, 2, 0.1)
    with pytest.raises(ValueError, match="bias must be"):
        run_assa(q, kv, bias[:1], mix, None, 2, 0.1)
    with pytest.raises(ValueError, match="N must be"):
        run_assa(*assa_inputs(1, 81, 1, 16)[:4], None, 1, 0.1)


def run_partial_conv(x, w, block_pixels=None, device="cpu"):
    if device == "cpu" and not INTERPRETED:
        pytest.skip("CPU kernel runs need TRITON_INTERPRET=1")
    from ast_deploy.ops.triton_partial_conv import partial_conv_triton_launch

    return partial_conv_triton_launch(x.to(device), w.to(device), block_pixels).cpu()


PCONV_CASES = [
    # B, H, W, C, Cp, pixel tile (64 = the GPU tile; None = the interpreter's big tile)
    (2, 9, 13, 16, 4, 64),  # several tiles, ragged last one, tiles straddle rows and images
    (1, 8, 8, 512, 128, 64),  # two output-channel blocks, four input-channel blocks
    (1, 5, 7, 8, 2, None),  # the tiny config's Cp = 2
    (2, 16, 16, 40, 10, None),
]


@pytest.mark.parametrize("b,h,w,c,cp,tile", PCONV_CASES)
def test_partial_conv_fp32_matches_reference(b, h, w, c, cp, tile):
    g = torch.Generator().manual_seed(c)
    x = torch.randn(b, h, w, c, generator=g)
    weight = torch.randn(cp, cp, 3, 3, generator=g) * 0.2
    y = run_partial_conv(x, weight, tile)
    ref = partial_conv_reference(x, weight)
    assert rel_err(y[..., :cp], ref[..., :cp]) < 1e-5
    assert torch.equal(y[..., cp:], x[..., cp:])


def test_partial_conv_fp16_matches_fp32_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 11, 6, 64, generator=g).half()
    weight = (torch.randn(16, 16, 3, 3, generator=g) * 0.2).half()
    y = run_partial_conv(x, weight, 64)
    ref = partial_conv_reference(x.float(), weight.float())
    assert y.dtype == torch.float16
    assert rel_err(y[..., :16], ref[..., :16]) < 2e-3
    assert torch.equal(y[..., 16:], x[..., 16:])


def test_partial_conv_does_not_mix_images_or_rows():
    """A single hot pixel at an image's corner must reach only its 3x3 neighbourhood in that image."""
    x = torch.zeros(2, 4, 5, 8)
    x[0, 3, 4, :2] = 1.0  # last pixel of image 0: the next flattened pixel is image 1's first
    weight = torch.ones(2, 2, 3, 3)
    y = run_partial_conv(x, weight, 64)
    touched = (y[..., :2].abs().sum(-1) > 0).nonzero().tolist()
    assert touched == [[0, 2, 3], [0, 2, 4], [0, 3, 3], [0, 3, 4]]


def test_triton_impl_refuses_cpu_without_interpreter(monkeypatch):
    from ast_deploy.ops import triton_ops

    get_impl(ASSA_IMPLS, "triton")
    monkeypatch.setattr(triton_ops, "interpreter_enabled", lambda: False)
    q, kv, bias, mix, _ = assa_inputs(1, 64, 1, 32)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        get_impl(ASSA_IMPLS, "triton")(q, kv, bias, mix, None, num_heads=1, scale=0.1)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        get_impl(PARTIAL_CONV_IMPLS, "triton")(torch.zeros(1, 4, 4, 8), torch.zeros(2, 2, 3, 3))
    # the custom op itself still runs (the reference), so tracing and export work on any machine
    out = torch.ops.ast.adaptive_sparse_attention(q, kv, bias, mix, None, 1, 0.1)
    assert torch.allclose(out, assa_reference(q, kv, bias, mix, None, num_heads=1, scale=0.1))


@needs_interpreter
def test_custom_ops_pass_opcheck():
    import ast_deploy.ops.triton_ops  # noqa: F401  registers torch.ops.ast.*

    q, kv, bias, mix, ids = assa_inputs(4, 16, 2, 8, 2)
    torch.library.opcheck(torch.ops.ast.adaptive_sparse_attention, (q, kv, bias, mix, ids, 2, 0.35))
    torch.library.opcheck(torch.ops.ast.partial_conv, (torch.randn(1, 5, 6, 8), torch.randn(2, 2, 3, 3)))
    # a non-contiguous view: the output is contiguous anyway, and the fake implementation must agree
    x = torch.randn(1, 8, 5, 6).permute(0, 2, 3, 1)
    torch.library.opcheck(torch.ops.ast.partial_conv, (x, torch.randn(2, 2, 3, 3)))


@needs_interpreter
def test_tiny_model_with_kernels_matches_reference(tiny_model):
    from ast_deploy import Runner

    x = torch.rand(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = tiny_model(x)
    out = Runner(tiny_model, protocol="none", kernels="triton")(x)
    # the model adds its input back: compare what the network computed
    assert rel_err(out - x, ref - x) < 1e-4


@pytest.mark.gpu
@compiled_only
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float16, 2e-3)])
def test_kernels_on_cuda_match_reference(dtype, tol):
    q, kv, bias, mix, ids = assa_inputs(64, 64, 4, 32, 16, dtype=dtype)
    out = run_assa(q, kv, bias, mix, ids, 4, 32 ** -0.5, device="cuda")
    ref = assa_reference(q.float(), kv.float(), bias, mix, ids, num_heads=4, scale=32 ** -0.5)
    assert rel_err(out, ref) < tol
    x, weight = torch.randn(2, 64, 48, 128).to(dtype), (torch.randn(32, 32, 3, 3) * 0.1).to(dtype)
    y = run_partial_conv(x, weight, device="cuda")
    assert rel_err(y, partial_conv_reference(x.float(), weight.float())) < tol


@pytest.mark.gpu
@compiled_only
def test_assa_fp16_overflow_case_on_cuda():
    q, kv, bias, mix, ids, heads, scale = overflow_inputs()
    out = run_assa(q, kv, bias, mix, ids, heads, scale, device="cuda")
    ref = assa_reference(q.float(), kv.float(), bias, mix, ids, num_heads=heads, scale=scale)
    assert torch.isfinite(out).all() and rel_err(out, ref) < 2e-3
