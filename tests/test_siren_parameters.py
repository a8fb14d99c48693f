"""The weight gradients' GEMM (fastsdf.kernels.siren.parameters) against float64 products.

Without a GPU it runs in Triton's interpreter (TRITON_INTERPRET=1, set before Triton is imported),
where the kernel rounds its operands as the tensor cores do (TF32 truncation, bfloat16 rounding)
and its fp16 products are exact, as the tensor cores' are: the errors seen are the GPU's, up to
summation order. Each precision's error is bounded per term of the sum by its operands' rounding
(``PER_TERM``), so the tolerance is that bound times the sum of the terms' magnitudes (what the
products add up, however much they cancel), plus float32 accumulation's worst case.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from fastsdf.kernels.siren import launch, parameters  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# A term d a's error bound, relative: fp32's fp16 big and small parts keep 2^-22 of each operand and
# leave out the small parts' product (2^-22), TF32 truncates each to 10 bits after the point
# (2^-10), bfloat16 rounds each to 7 (2^-8), and their product adds the errors' product.
PER_TERM = {"fp32": 4 * 2.0 ** -22, "tf32": 2.0 ** -9 + 2.0 ** -20, "bf16": 2.0 ** -7 + 2.0 ** -16}
# fp32's absolute floors: a scaled operand's small parts are fp16 normals down to 2^-18 of the
# largest value of its row or column in a step (scaled to [2^14, 2^15)), below which they keep
# 2^-25 absolutely, 2^-39 of that largest; a sine, taken as it is, keeps 2^-25 absolutely (the
# MUFU computes it within 2^-20.9).
SCALED_FLOOR = 2.0 ** -39
SINE_FLOOR = 2.0 ** -25


def _accumulation(points: int) -> float:
    """float32 accumulation's bound, relative to the sum of the terms' magnitudes: an add per step of
    a chunk, one per product of a step (the tensor cores may truncate: 2^-23 each) and one per
    chunk's partial sum."""
    splits, chunk = parameters.chunking(points, launch.gradient_tiling(16, 16).block_p)
    return 2.0 ** -23 * (chunk // 32 + 32 + splits)


def _tensor(rng: np.random.Generator, *shape: int, spread: float = 0.0) -> torch.Tensor:
    """Normal values times 2^u, u uniform in [-spread, spread] per value."""
    values = rng.standard_normal(shape) * np.exp2(rng.uniform(-spread, spread, shape))
    return torch.tensor(values, dtype=torch.float32, device=DEVICE)


def _check(got: torch.Tensor, d: torch.Tensor, a: torch.Tensor, du: torch.Tensor | None, t: torch.Tensor | None,
           precision: str, bounded: bool) -> None:
    """got against d^T a + sum_c du[c]^T t[c] in float64, within each term's bound (``PER_TERM`` of
    its magnitude) and fp32's floors, taken at the largest values of the whole batch."""
    pairs = [(d, a, bounded)] + ([(du[c], t[c], False) for c in range(du.shape[0])] if du is not None else [])
    want = bound = 0
    for dd, aa, sine in pairs:
        dd, aa = dd.double(), aa.double()
        want = want + dd.T @ aa
        dd, aa = dd.abs(), aa.abs()
        bound = bound + (PER_TERM[precision] + _accumulation(len(dd))) * (dd.T @ aa)
        if precision == "fp32":
            bound = bound + SCALED_FLOOR * dd.amax(0)[:, None] * aa.sum(0)[None, :]
            floor = torch.full_like(aa[0], SINE_FLOOR) if sine else SCALED_FLOOR * aa.amax(0)
            bound = bound + dd.sum(0)[:, None] * floor[None, :]
    assert got.shape == want.shape and got.dtype == torch.float32
    error = (got.double() - want).abs()
    assert (error <= bound).all(), float((error / bound.clamp(min=1e-300)).max())


# points (odd sizes, one, more than a chunk), outputs, inputs (xyz, a latent code's 259), planes of
# tangents, a sine input (bounded).
SHAPES = [(1, 16, 16, 0, True), (7, 1, 64, 1, True), (1000, 64, 48, 0, True), (77, 256, 3, 0, False),
          (33, 32, 259, 0, False), (263, 128, 128, 3, True), (2 * parameters.MIN_CHUNK + 5, 16, 32, 1, True)]


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("points, outputs, inputs, planes, bounded", SHAPES)
def test_weight_gradient_matches_float64(points: int, outputs: int, inputs: int, planes: int, bounded: bool,
                                         precision: str, rng: np.random.Generator) -> None:
    """dL/dW within each precision's rounding of float64 on fresh random operands, dL/db within
    float32's summation of float64's, for every layer shape a network has and chunked batches."""
    d = _tensor(rng, points, outputs)
    a = torch.sin(_tensor(rng, points, inputs) * 30) if bounded else _tensor(rng, points, inputs)
    du = _tensor(rng, planes, points, outputs) if planes else None
    t = _tensor(rng, planes, points, inputs) if planes else None
    w, b = parameters.weight_gradient(d, a, precision, bounded, du, t, bias=True)
    _check(w, d, a, du, t, precision, bounded)
    _check_bias(b, d)


@pytest.mark.parametrize("precision", ["fp32", "tf32"])
def test_older_tritons_steps_match_float64(precision: str, rng: np.random.Generator,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The shorter steps Triton before 3.8 takes (``launch.gradient_tiling``: 3.6 spills at 32 points
    a step), several of them in a chunk, and a partial one, within the same bounds."""
    monkeypatch.setattr(launch, "TRITON_VERSION", (3, 6))
    assert launch.gradient_tiling(256, 192, precision).block_p == 16
    d, a = _tensor(rng, 45, 256), torch.sin(_tensor(rng, 45, 192) * 30)
    du, t = _tensor(rng, 1, 45, 256), _tensor(rng, 1, 45, 192)
    w, b = parameters.weight_gradient(d, a, precision, True, du, t, bias=True)
    _check(w, d, a, du, t, precision, True)
    _check_bias(b, d)


def _check_bias(got: torch.Tensor, d: torch.Tensor) -> None:
    d = d.double()
    assert ((got.double() - d.sum(0)).abs() <= _accumulation(len(d)) * d.abs().sum(0)).all()


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_large_batches_on_cuda(precision: str, rng: np.random.Generator) -> None:
    """A width-256 hidden layer with one tangent plane over 3 M points (MAX_SPLITS chunks) on the
    GPU's tensor cores, against float64 on the GPU."""
    if DEVICE != "cuda":
        pytest.skip("needs a CUDA GPU")
    points = 3 * 2**20 + 7
    generator = torch.Generator(DEVICE).manual_seed(int(rng.integers(2**62)))
    d, du, t = (torch.randn(shape, device=DEVICE, generator=generator)
                for shape in ((points, 256), (1, points, 256), (1, points, 256)))
    a = torch.sin(30 * torch.randn(points, 256, device=DEVICE, generator=generator))
    w, b = parameters.weight_gradient(d, a, precision, True, du, t, bias=True)
    _check(w, d, a, du, t, precision, True)
    _check_bias(b, d)


@pytest.mark.parametrize("power", [-60, -20, 20, 60])
def test_fp32_holds_far_from_fp16s_range_and_across_magnitudes(power: int, rng: np.random.Generator) -> None:
    """fp32's fp16 parts are taken after scaling each step's rows of dL/dz^T and columns of the
    input by powers of two: operands 2^power times a network's, spread over 2^+-20 within a column,
    keep float32's precision (unscaled, fp16 would flush them or overflow)."""
    d = _tensor(rng, 300, 64, spread=20) * 2.0 ** power
    a = _tensor(rng, 300, 48, spread=20) * 2.0 ** -power
    t = _tensor(rng, 2, 300, 48, spread=20) * 2.0 ** power
    du = _tensor(rng, 2, 300, 64, spread=20)
    w, _ = parameters.weight_gradient(d, a, "fp32", False, du, t)
    _check(w, d, a, du, t, "fp32", False)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the interpreter's inf - inf
def test_zeros_empty_batches_and_what_is_not_finite() -> None:
    """Zeros give zeros exactly, an empty batch zeros of the right shapes, and a NaN or an infinity in
    an operand shows in its row of dL/dW (not scaled away)."""
    d = torch.zeros(50, 16, device=DEVICE)
    a = torch.randn(50, 16, device=DEVICE)
    w, b = parameters.weight_gradient(d, a, "fp32", False, bias=True)
    assert not w.any() and not b.any()
    w, b = parameters.weight_gradient(d[:0], a[:0], "fp32", True, bias=True)
    assert w.shape == (16, 16) and b.shape == (16,) and not w.any() and not b.any()
    for bad in (float("nan"), float("inf")):
        d = torch.randn(50, 16, device=DEVICE)
        d[7, 3] = bad
        w, b = parameters.weight_gradient(d, a, "fp32", False, bias=True)
        assert not torch.isfinite(w[3]).any() and torch.isfinite(w[torch.arange(16) != 3]).all()


def test_operands_that_do_not_match_are_refused() -> None:
    """Shapes, dtypes or devices the kernel would read past or misread: a ValueError naming them."""
    d, a = torch.zeros(10, 16, device=DEVICE), torch.zeros(10, 8, device=DEVICE)
    planes = torch.zeros(2, 10, 16, device=DEVICE), torch.zeros(2, 10, 8, device=DEVICE)
    for args, match in [((d, a[:9]), "expected"), ((d, a.double()), "float32"), ((d[0], a), "expected"),
                        ((d, a, planes[0], None), "together"), ((d, a, planes[0], planes[1][:1]), "expected"),
                        ((d, a, planes[0][:, :9], planes[1]), "expected")]:
        with pytest.raises(ValueError, match=match):
            parameters.weight_gradient(args[0], args[1], "fp32", False, *args[2:])


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_bfloat16_and_strided_operands_give_their_float32_copies_bits(precision: str,
                                                                    rng: np.random.Generator) -> None:
    """Operands as bf16's sweep leaves them (bfloat16 in the first half of each float32 row, planes
    apart: ``training.Deltas``) and with columns apart (copied first) give the bits of their float32
    contiguous copies."""
    n, outputs, inputs, planes = 300, 48, 40, 2

    def in_rows(values: torch.Tensor) -> torch.Tensor:
        rows = torch.empty(values.shape, dtype=torch.float32, device=DEVICE)
        view = rows.view(torch.bfloat16)[..., :values.shape[-1]]
        view.copy_(values)
        return view

    d, a = _tensor(rng, n, outputs).bfloat16(), _tensor(rng, n, inputs).bfloat16()
    du, t = _tensor(rng, planes, n, outputs).bfloat16(), _tensor(rng, planes, n, inputs).bfloat16()
    want = parameters.weight_gradient(d.float(), a.float(), precision, False, du.float(), t.float(), bias=True)
    got = parameters.weight_gradient(d, in_rows(a), precision, False, in_rows(du), in_rows(t), bias=True)
    columns_apart = parameters.weight_gradient(d.float().t().contiguous().t(), a.float(), precision, False,
                                               du.float(), t.float(), bias=True)
    assert in_rows(a).stride(0) == 2 * inputs and columns_apart[0].shape == (outputs, inputs)
    for result in (got, columns_apart):
        assert torch.equal(result[0], want[0]) and torch.equal(result[1], want[1])


def test_the_sums_are_deterministic(rng: np.random.Generator) -> None:
    """Chunks' partial sums are added in a fixed order (no atomics): the same bits every call."""
    d = _tensor(rng, 2 * parameters.MIN_CHUNK + 99, 16)
    a = _tensor(rng, 2 * parameters.MIN_CHUNK + 99, 16)
    first = parameters.weight_gradient(d, a, "fp32", False, bias=True)
    second = parameters.weight_gradient(d, a, "fp32", False, bias=True)
    assert all(torch.equal(x, y) for x, y in zip(first, second))


@pytest.mark.parametrize("version", [(3, 6), (3, 9)])
def test_the_tilings_fit_the_products(version: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles are powers of two of at least 16 (a product's smallest), at most 128, and cover layers
    of every shape the kernels take, with Triton 3.9's tilings and older versions' (``launch``)."""
    monkeypatch.setattr(launch, "TRITON_VERSION", version)
    for outputs in (1, 3, 16, 64, 256, 512):
        for inputs in (3, 16, 259, 512):
            for precision in ("fp32", "tf32", "bf16"):
                for target in (80, 90):
                    tiling = launch.gradient_tiling(outputs, inputs, precision, target)
                    for block in (tiling.block_o, tiling.block_i):
                        assert 16 <= block <= 128 and block & (block - 1) == 0
                    assert tiling.block_p % 16 == 0 and tiling.num_warps in (2, 4, 8)
