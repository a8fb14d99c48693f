"""The Triton SIREN kernels (fastsdf.kernels.siren) against the float64 reference.

Without a GPU they run in Triton's interpreter on the CPU (TRITON_INTERPRET=1, which Triton reads
when the kernels are defined, hence set here before they are imported); with one, on CUDA, and the
tests marked ``cuda`` add sizes the interpreter is too slow for.

What the interpreter cannot model is bounded here. It ignores ``input_precision``: the kernels
then round their operands themselves as the tensor cores do (TF32 truncation, the tf32x3 split,
bfloat16 round-to-nearest-even). It has no ``sin.approx.f32``: the kernels take tl.sin there. So
each network is also run as ``hardware_model``, a float64 forward-mode twin of the kernels with
the same operand rounding and every sine and cosine off by the MUFU's documented worst case
(2^-20.9, PTX ISA) in the direction that adds up; the tolerances must hold for it with a margin of
2, and for the kernels.
"""

from __future__ import annotations

import inspect
import os
import types
from typing import Any

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from fastsdf.kernels import siren as kernels  # noqa: E402
from fastsdf.kernels.siren import device, elementwise, gradient, launch, network, operands, training  # noqa: E402
from fastsdf.nn import SirenMLP  # noqa: E402
from fastsdf.ops import siren as siren_ops  # noqa: E402
from fastsdf.ops import siren_cpu, siren_triton  # noqa: E402
from fastsdf.ops.siren_fused import FusedBackend  # noqa: E402
from siren_helpers import (RTOL_GRAD, RTOL_Y, double_copy, gradient_errors, magnitudes,  # noqa: E402,F401
                           network_points, output_errors, poisoned, training_loss)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Errors relative to ``magnitudes``: fp32 (tf32x3, the approximate sine) a few times float32's.
RTOL = {"fp32": (RTOL_Y * 5, RTOL_GRAD * 5), "tf32": (5e-3, 5e-2), "bf16": (3e-2, 2e-1)}
MUFU_ERROR = 2.0 ** -20.9  # sin.approx.f32 / cos.approx.f32, max absolute error on [-pi, pi]


@pytest.fixture(autouse=True)
def _triton_backend(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    monkeypatch.setenv("FASTSDF_BACKEND", "triton")
    torch.manual_seed(seed % (2**63))


def run(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
    """(y of the forward's launch, y and J of the Jacobian's)."""
    with torch.no_grad():
        y = model(x, latent)
        y2, j = model.forward_with_gradient(x, latent)
    # The forward and the Jacobian's launch may tile the points differently: other sums' order. In
    # tf32 and bf16 an activation a sum's last bit moves may then round to the neighbouring TF32 or
    # bfloat16 value, 2^-10 or 2^-8 of it, amplified by the layers above: there each launch's y is
    # held to float64 instead (``check``). fp32's fp16 parts move no more than the sums.
    if model.precision == "fp32":
        assert torch.allclose(y, y2, rtol=0, atol=1e-5 * float(y.abs().max().clamp(min=1)))
    return y, y2, j


# --- the hardware's rounding, in float64 ---------------------------------------------------------


def _tf32(t: torch.Tensor) -> torch.Tensor:
    bits = t.float().contiguous().view(torch.int32) & -8192  # 0xFFFFE000: 10 mantissa bits kept
    return bits.view(torch.float32).double()


def _fp16_parts(t: torch.Tensor, scale: torch.Tensor | float) -> list[torch.Tensor]:
    """t times scale rounded to fp16 (to nearest even) and the rest rounded again, unscaled."""
    scaled = t.float() * scale
    big = scaled.half()
    return [big.double() / scale, (scaled - big.float()).half().double() / scale]


def _power_below(largest: torch.Tensor, top: int) -> torch.Tensor:
    """The power of two that puts ``largest`` in [2^(top - 1), 2^top)."""
    return torch.exp2((top - torch.frexp(largest.float())[1]).double()).float()


def _operands(t: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """t as the tensor cores read it: the parts whose products are summed. fp16x3: a sine, as it is;
    "fp16x3 rows": an operand without a bound, each row scaled to a largest in [2^14, 2^15) first;
    "fp16x3 weights": the matrix scaled to a largest in [2^14, 2^15) (``operands.split_fp16``)."""
    if mode == "fp16x3":
        return _fp16_parts(t, 1.0)
    if mode == "fp16x3 rows":
        return _fp16_parts(t, _power_below(t.abs().amax(dim=-1, keepdim=True), 15))
    if mode == "fp16x3 weights":
        return _fp16_parts(t, _power_below(t.abs().max(), 15))
    if mode == "bf16":
        return [t.float().to(torch.bfloat16).double()]
    if mode == "tf32":
        return [_tf32(t)]
    big = _tf32(t)  # tf32x3
    return [big, _tf32(t.float() - big.float())]


def _mode(precision: str, bounded: bool) -> str:
    """How a product at ``precision`` multiplies an operand (``bounded``: a sine)."""
    if precision != "fp32":
        return precision
    return "fp16x3" if bounded else "fp16x3 rows"


def _product(a: torch.Tensor, w_t: torch.Tensor, mode: str) -> torch.Tensor:
    pa, pw = _operands(a, mode), _operands(w_t, "fp16x3 weights" if mode.startswith("fp16x3") else mode)
    total = pa[0] @ pw[0]
    if len(pa) > 1:  # tf32x3, fp16x3: the small parts' product is left out
        total = total + pa[0] @ pw[1] + pa[1] @ pw[0]
    return total


def _mufu(phase: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s, c = torch.sin(phase), torch.cos(phase)
    return s + MUFU_ERROR * torch.sign(s), c + MUFU_ERROR * torch.sign(c)


def hardware_model(model: SirenMLP, x: torch.Tensor, latent: torch.Tensor | None = None,
                   reverse: bool = False) -> tuple[torch.Tensor, ...]:
    """(y, J) as the GPU kernels compute them, up to summation order: the first layer exact (<= 16
    inputs, else tf32x3), the others at the model's precision (fp32: fp16x3, ``_mode``), the MUFU's
    worst-case sine error; J by forward mode, or with ``reverse`` as ``kernels.siren.gradient``'s
    reverse mode (a sweep per output from the taped forward, dL/dx's product in tf32x3)."""
    a = network_points(model, x, latent)
    weights = [w.detach().double() for w in model.weights]
    biases = [b.detach().double() for b in model.biases] or [None] * len(weights)
    columns = model.in_features
    t = torch.zeros(a.shape[0], columns, a.shape[1], dtype=torch.float64)
    t[:, :, -columns:] = torch.eye(columns, dtype=torch.float64)
    factors = []  # omega cos(omega z) of each layer, None for a linear one
    for layer, (w, b, omega) in enumerate(zip(weights, biases, model.omegas)):
        if layer == 0:
            exact = a.shape[1] <= 16
            z = a @ w.T if exact else _product(a, w.T, "tf32x3")
            dz = t @ w.T
        else:
            z = _product(a, w.T, _mode(model.precision, True))
            dz = torch.stack([_product(t[:, k], w.T, _mode(model.precision, False)) for k in range(columns)], dim=1)
        if b is not None:
            z = z + b
        if omega is None:
            a, t = z, dz
            factors.append(None)
        else:
            s, c = _mufu(omega * z)
            a, t = s, omega * c[:, None, :] * dz
            factors.append(omega * c)
    if not reverse:
        return a, t.transpose(1, 2)
    sweeps = []
    for output in range(a.shape[1]):
        g = torch.zeros_like(a)
        g[:, output] = 1
        for layer in range(len(weights) - 1, -1, -1):
            if factors[layer] is not None:
                g = g * factors[layer]
            w = weights[layer] if layer else weights[0][:, -columns:]
            g = _product(g, w, _mode(model.precision, False) if layer else "tf32x3")
        sweeps.append(g)
    return a, torch.stack(sweeps, dim=1)


def check(model: SirenMLP, x: torch.Tensor, forward_y: torch.Tensor, y: torch.Tensor, j: torch.Tensor,
          latent: torch.Tensor | None = None, reverse: bool = False) -> None:
    """``forward_y`` of the forward's launch, (y, j) of the Jacobian's (by reverse mode with
    ``reverse``) and the hardware's model of them (y's products are the same in every launch),
    against float64."""
    tol_y, tol_j = RTOL[model.precision]
    model_y, model_j = hardware_model(model, x, latent, reverse)
    hardware = output_errors(model, x, model_y.float(), model_j.float(), latent)
    assert hardware[0] <= tol_y / 2 and hardware[1] <= tol_j / 2, hardware
    error_y, error_j = output_errors(model, x, y.cpu(), j.cpu(), latent)
    error_forward = output_errors(model, x, forward_y.cpu(), None, latent)[0]
    assert error_y <= tol_y and error_j <= tol_j and error_forward <= tol_y, (error_y, error_j, error_forward)


# Each width, depth (hidden layers 0-5), precision, batch kind and output kind at least once.
CASES = [
    # width, hidden, outputs, outermost_linear, bias, latent, precision, points
    (16, 1, 1, True, True, 0, "fp32", 1000),
    (32, 0, 3, False, False, 0, "tf32", 7),
    (32, 5, 1, True, True, 0, "fp32", 3),
    (64, 3, 1, True, True, 0, "bf16", 1),
    (128, 2, 2, True, False, 0, "fp32", 77),
    (256, 1, 1, True, True, 0, "tf32", 33),
    (256, 4, 1, False, True, 0, "fp32", 5),
    (512, 1, 1, True, True, 0, "bf16", 17),
    (32, 2, 1, True, True, 17, "fp32", 40),  # 20 inputs: the first layer by tf32x3 products
    (64, 1, 2, True, True, 4, "bf16", 9),  # 7 inputs: exact first layer after a latent code
    # bf16 runs tiles of up to 128 points (launch.config): two full tiles and a partial one.
    (16, 1, 1, True, True, 0, "bf16", 263),
    (128, 1, 1, False, True, 0, "bf16", 263),
    (256, 1, 1, True, True, 0, "bf16", 263),
]


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("width, hidden, outputs, outermost_linear, bias, latent_features, precision, points", CASES)
def test_fused_kernels_match_reference(width: int, hidden: int, outputs: int, outermost_linear: bool, bias: bool,
                                       latent_features: int, precision: str, points: int, mode: str,
                                       monkeypatch: pytest.MonkeyPatch, poisoned: None) -> None:
    """The forward and the Jacobian by each mode (``kernels.siren.gradient``), against the float64
    reference, with the hardware's rounding modelled for that mode."""
    monkeypatch.setattr(gradient, "reverse_pays", lambda *args: mode == "reverse")
    model = SirenMLP(3, width, hidden, outputs, outermost_linear=outermost_linear, bias=bias,
                     latent_features=latent_features, precision=precision).to(DEVICE)
    assert kernels.supports(list(model.weights))
    x = torch.rand(points, 3, device=DEVICE) * 2 - 1
    latent = torch.randn(latent_features, device=DEVICE) * 0.1 if latent_features else None
    forward_y, y, j = run(model, x, latent)
    assert torch.isfinite(y).all() and torch.isfinite(j).all()
    model, x = model.cpu(), x.cpu()
    check(model, x, forward_y, y, j, None if latent is None else latent.cpu(), mode == "reverse")


def test_the_jacobian_takes_the_mode_with_fewer_products() -> None:
    """Forward mode: 1 + columns products per layer (a launch per column from width 256, each adding
    y's); reverse mode: 1 + outputs."""
    assert gradient.reverse_pays(256, 1, 3) and gradient.reverse_pays(64, 1, 3) and gradient.reverse_pays(128, 1, 2)
    assert not gradient.reverse_pays(256, 1, 1) and not gradient.reverse_pays(64, 1, 1)
    assert not gradient.reverse_pays(64, 3, 3) and gradient.reverse_pays(256, 3, 3)


def test_reverse_mode_keeps_the_tape_of_a_chunk_at_a_time(monkeypatch: pytest.MonkeyPatch, poisoned: None) -> None:
    """With a tape budget of under a tile, 300 points run as chunks of 128 (of 1,024 bytes of tape
    each): the same (y, J) as in one chunk, and no tape larger than a chunk's."""
    model = SirenMLP(3, 16, 1, 2).to(DEVICE)
    x = torch.rand(300, 3, device=DEVICE) * 2 - 1
    args = (x, list(model.weights), list(model.biases), model.omegas, "fp32", 3)
    whole = gradient.forward_with_gradient(*args, reverse=True)
    tapes: list[int] = []
    real = gradient.forward_taped
    monkeypatch.setattr(gradient, "forward_taped", lambda x, *rest: tapes.append(len(x)) or real(x, *rest))
    monkeypatch.setattr(gradient, "TAPE_BYTES", 1)
    chunked = gradient.forward_with_gradient(*args, reverse=True)
    assert tapes == [128, 128, 44]
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
    empty = gradient.forward_with_gradient(x[:0], *args[1:], reverse=True)
    assert empty[0].shape == (0, 2) and empty[1].shape == (0, 2, 3)


def test_more_jacobian_columns_than_one_launch_takes(rng: np.random.Generator, poisoned: None) -> None:
    """Seven columns (a latent code's and xyz): launches of 3, 3 and 1 write their own columns."""
    model = SirenMLP(3, 32, 1, 2, latent_features=5).to(DEVICE)
    x = torch.as_tensor(rng.uniform(-1, 1, (11, 8)), dtype=torch.float32, device=DEVICE) * 0.5
    weights, biases = list(model.weights), list(model.biases)
    y, j = kernels.forward_with_gradient(x, weights, biases, model.omegas, "fp32", 7)
    from fastsdf.ops import siren_reference

    twin = double_copy(model.cpu())
    want_y, want_j = siren_reference.forward_with_gradient(x.cpu().double(), list(twin.weights), list(twin.biases),
                                                           twin.omegas, 7)
    scale = float(want_j.detach().abs().max()) + 1
    assert (y.cpu().double() - want_y).abs().max() <= RTOL_Y * 50
    assert (j.cpu().double() - want_j).abs().max() <= RTOL_GRAD * 5 * scale


def test_the_sine_model_holds_at_omega_30(rng: np.random.Generator) -> None:
    """The range reduction and the MUFU bound on SIREN's pre-activations (omega_0 z of the first
    layer, up to ~30, and of a hidden layer): the reduced argument is within float32 rounding of
    the exact one, so that the sine's error is the MUFU's 2^-20.9 plus float32's of the phase."""
    model = SirenMLP(3, 256, 1, 1)
    x = torch.as_tensor(rng.uniform(-1, 1, (500, 3)), dtype=torch.float32)
    with torch.no_grad():
        z0 = torch.nn.functional.linear(x, model.weights[0], model.biases[0])
        z1 = torch.nn.functional.linear(torch.sin(30 * z0), model.weights[1], model.biases[1])
    for z in (z0, z1):
        s, c = kernels.sincos(z.contiguous(), 30.0)
        phase = 30 * z.double()
        # float32 rounds omega z to within |phase| 2^-24; the reduction adds a few of its ulps.
        bound = (phase.abs() * 2.0 ** -23 + MUFU_ERROR).max()
        assert (s.double() - torch.sin(phase)).abs().max() <= bound
        assert (c.double() / 30 - torch.cos(phase)).abs().max() <= bound
        assert MUFU_ERROR < 1e-6 and float(bound) < RTOL_Y  # the sine's error is small next to the tolerance


def _split_reference(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``operands.split_fp16`` in PyTorch ops: each matrix times 2^p, p = FP16_RANGE - its largest
    |value|'s frexp exponent (clamped to [-126, 126]; the biased exponent for zeros and what is not
    finite), rounded to fp16, the rest rounded again."""
    largest = w.abs().amax(dim=(-2, -1))
    biased = (largest.contiguous().view(torch.int32) >> 23) & 0xFF
    power = (device.FP16_RANGE.value + 126 - biased).clamp(-126, 126).double()
    scaled = (w.double() * torch.exp2(power)[..., None, None]).float()
    big = scaled.half()
    return torch.stack([big, (scaled - big.float()).half()], dim=-2), torch.exp2(-power).float()


def test_split_fp16_keeps_weights_of_any_magnitude_to_float32s_precision() -> None:
    """``operands.split_fp16`` (one launch) equals its PyTorch twin bit for bit on odd shapes, and
    scales each matrix by its own power of two: big + small parts within 2^-23 of every weight
    relative to the matrix's largest, for weights from 2^-120 to 2^120; a matrix of zeros stays
    zero, and one with an infinity or a NaN is not finite."""
    for shape in ((3, 7, 5), (2, 33, 17), (1, 1, 1)):
        w = torch.randn(shape) * torch.exp2(torch.randint(-60, 60, (shape[0], 1, 1)).float())
        for got, want in zip(operands.split_fp16(w.to(DEVICE)), _split_reference(w)):
            assert torch.equal(got.cpu(), want)
    for magnitude in (2.0 ** -100, 1e-3, 1.0, 2.0 ** 100):
        w = torch.randn(3, 64, 48) * magnitude * torch.tensor([1.0, 2.0 ** -20, 2.0 ** 20])[:, None, None]
        parts, inverse = (t.cpu() for t in operands.split_fp16(w.to(DEVICE)))
        assert parts.dtype == torch.float16 and parts.shape == (3, 64, 2, 48) and inverse.shape == (3,)
        rebuilt = (parts[..., 0, :].double() + parts[..., 1, :].double()) * inverse.double()[:, None, None]
        largest = w.double().abs().amax(dim=(1, 2))
        assert ((rebuilt - w.double()).abs().amax(dim=(1, 2)) <= 2.0 ** -23 * largest).all()
        assert (parts[..., 0, :].float().abs().amax(dim=(1, 2)) < 2.0 ** device.FP16_RANGE.value).all()
    parts, inverse = operands.split_fp16(torch.zeros(5, 7, device=DEVICE))
    assert not parts.any() and torch.isfinite(inverse).all()
    for bad in (float("inf"), float("nan")):
        w = torch.rand(3, 5, 7)
        w[2, 1, 3] = bad
        with np.errstate(invalid="ignore"):  # the interpreter's inf - inf
            parts, _ = (t.cpu() for t in operands.split_fp16(w.to(DEVICE)))
        assert not torch.isfinite(parts[2].float()).all() and torch.isfinite(parts[:2].float()).all()
    assert operands.split_fp16(torch.empty(0, 4, 4, device=DEVICE))[0].shape == (0, 4, 2, 4)


@pytest.mark.parametrize("mode", ["forward", "reverse"])
@pytest.mark.parametrize("power", [-40, 40])
def test_fp32_holds_for_weights_and_gradients_far_from_fp16s_range(power: int, mode: str,
                                                                  monkeypatch: pytest.MonkeyPatch,
                                                                  poisoned: None) -> None:
    """fp32 multiplies by fp16 parts of scaled weights (``operands.split_fp16``) and of operands
    scaled per row (tangents, the sweep's gradients: ``device.scale_rows``): hidden and output weights
    2^power times a network's (omegas and biases compensating, so y and J scale by 2^power, and so
    do the tangents and gradients inside) give y and J by either mode within fp32's tolerance of
    float64, where fp16 unscaled would overflow or flush to zero."""
    monkeypatch.setattr(gradient, "reverse_pays", lambda *args: mode == "reverse")
    model = SirenMLP(3, 32, 2, 2, outermost_linear=True)
    factor = 2.0 ** power
    weights = [w.detach().clone() for w in model.weights]
    biases = [b.detach().clone() for b in model.biases]
    for layer in range(1, len(weights)):
        weights[layer] *= factor
        biases[layer] *= factor
    omegas = [model.omegas[0]] + [omega / factor for omega in model.omegas[1:-1]] + [None]
    x = torch.rand(45, 3) * 2 - 1
    on_device = ([w.to(DEVICE) for w in weights], [b.to(DEVICE) for b in biases], omegas, "fp32")
    y = kernels.forward(x.to(DEVICE), *on_device).cpu().double()
    y2, j = (t.cpu().double() for t in kernels.forward_with_gradient(x.to(DEVICE), *on_device, 3))
    from fastsdf.ops import siren_reference

    want_y, want_j = siren_reference.forward_with_gradient(x.double(), [w.detach().double() for w in model.weights],
                                                           [b.detach().double() for b in model.biases],
                                                           model.omegas, 3)
    scale_y, scale_j = float(want_y.abs().max()) + 1, float(want_j.detach().abs().max()) + 1
    assert (y / factor - want_y).abs().max() <= RTOL_Y * 5 * scale_y
    assert (y2 / factor - want_y).abs().max() <= RTOL_Y * 5 * scale_y
    assert (j / factor - want_j).abs().max() <= RTOL_GRAD * 5 * scale_j


@pytest.mark.parametrize("power", [-24, 24])
def test_fp32_scales_the_rows_of_tangents_and_gradients_far_from_fp16s_range(power: int, poisoned: None) -> None:
    """The operands without a bound, scaled per row (``device.scale_rows``) before their fp16 parts
    are taken: first-layer weights 2^power times a network's at points 2^-power times (y the same,
    J and every tangent 2^power times), by forward mode; and the reverse sweep from dL/dy 2^power
    times (``training.input_gradient``). Within fp32's tolerance of float64, where fp16 unscaled
    overflows (2^24) or loses the tangents to subnormals (2^-24)."""
    model = SirenMLP(3, 32, 2, 1, outermost_linear=True)
    factor = 2.0 ** power
    weights = [w.detach().clone() for w in model.weights]
    weights[0] *= factor
    biases = [b.detach() for b in model.biases]
    x = torch.rand(45, 3) * 2 - 1
    from fastsdf.ops import siren_reference

    want_y, want_j = siren_reference.forward_with_gradient(x.double(), [w.detach().double() for w in model.weights],
                                                           [b.double() for b in biases], model.omegas, 3)
    scale_j = float(want_j.detach().abs().max()) + 1
    args = ([w.to(DEVICE) for w in weights], [b.to(DEVICE) for b in biases], model.omegas, "fp32")
    _, j = kernels.forward_with_gradient((x / factor).to(DEVICE), *args, 3, reverse=False)
    assert (j.cpu().double() / factor - want_j).abs().max() <= RTOL_GRAD * 5 * scale_j
    args = ([w.to(DEVICE) for w in model.weights], [b.to(DEVICE) for b in biases], model.omegas, "fp32")
    y, tape = network.forward_taped(x.to(DEVICE), *args)
    dx = torch.empty(len(x), 3, device=DEVICE)
    training.input_gradient(torch.full_like(y, factor), tape, *args[:1], model.omegas, "fp32", dx)
    assert (dx.cpu().double() / factor - want_j[:, 0]).abs().max() <= RTOL_GRAD * 5 * scale_j


def test_other_widths_take_the_composed_path() -> None:
    for model in (SirenMLP(3, 24, 1, 1), SirenMLP(3, 1024, 1, 1), SirenMLP(3, 32, 1, 17)):
        assert not kernels.supports(list(model.weights))
    model = SirenMLP(3, 24, 1, 1).to(DEVICE)
    x = torch.rand(9, 3, device=DEVICE)
    _, y, j = run(model, x)
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
    assert error_y <= RTOL_Y and error_j <= RTOL_GRAD


def test_the_weights_are_prepared_once_per_call(monkeypatch: pytest.MonkeyPatch, poisoned: None) -> None:
    """Forward mode at width 256 launches once per Jacobian column; the operands (fp32's split into
    fp16 parts among them) are prepared once for all three."""
    model = SirenMLP(3, 256, 0, 1).to(DEVICE)
    calls: list[str] = []
    real = network.layer_operands
    monkeypatch.setattr(network, "layer_operands", lambda *args: calls.append(args[-1]) or real(*args))
    x = torch.rand(5, 3, device=DEVICE) * 2 - 1
    _, j = kernels.forward_with_gradient(x, list(model.weights), list(model.biases), model.omegas, "fp32", 3,
                                         reverse=False)
    assert launch.column_groups(256, 3) == [(0, 1), (1, 1), (2, 1)] and calls == ["fp32"]
    want = double_copy(model.cpu())
    from fastsdf.ops import siren_reference

    _, want_j = siren_reference.forward_with_gradient(x.cpu().double(), list(want.weights), list(want.biases),
                                                      want.omegas, 3)
    assert (j.cpu().double() - want_j).abs().max() <= RTOL_GRAD * 5 * (float(want_j.detach().abs().max()) + 1)


def test_the_derivative_along_a_direction_is_the_jacobian_times_it(poisoned: None) -> None:
    """``forward_directional``'s derivatives along directions v (per point and tangent) are J v, with
    J from the reverse sweeps of the same tape, and its tape's tangents start at W v."""
    model = SirenMLP(3, 64, 2, 2, latent_features=4).to(DEVICE)
    x = torch.rand(70, 7, device=DEVICE) * 2 - 1
    weights, biases = list(model.weights), list(model.biases)
    y, tape = kernels.forward_taped(x, weights, biases, model.omegas, "fp32")
    jacobian = torch.empty((70, 2, 5), device=DEVICE)
    kernels.jacobian_from_tape(tape, weights, model.omegas, "fp32", jacobian)
    directions = torch.randn(70, 2, 5, device=DEVICE)
    derivatives, directed = kernels.forward_directional(weights, model.omegas, "fp32", directions, tape)
    want = torch.einsum("noc,ntc->not", jacobian.double(), directions.double())
    assert derivatives.shape == (70, 2, 2)
    assert (derivatives.double() - want).abs().max() <= RTOL_GRAD * 5 * (float(want.abs().max()) + 1)
    first = torch.einsum("ntc,hc->tnh", directions.double(), weights[0].detach().double()[:, 2:])
    assert torch.allclose(directed.tangents[0].double(), first, rtol=1e-5, atol=1e-5)
    assert directed.pre is tape.pre


@pytest.mark.parametrize("outputs", [2, 4])
def test_bf16s_sweep_leaves_the_weight_gradients_operands_in_bfloat16(outputs: int, poisoned: None) -> None:
    """In bf16 the training sweep writes the weight gradients' operands, a = sin(omega z) and t =
    omega cos(omega z) u, as bfloat16 in the first half of each of the tape's rows (``Deltas.a`` and
    ``.t``: views), and dL/dz and dL/du in bfloat16 where one launch sweeps every tangent (width 64:
    up to 3), in float32 where later launches add their share."""
    model = SirenMLP(3, 64, 2, outputs, precision="bf16").to(DEVICE)
    n = 37
    x = torch.rand(n, 3, device=DEVICE) * 2 - 1
    weights, biases, omegas = list(model.weights), list(model.biases), model.omegas
    _, tape = kernels.forward_taped(x, weights, biases, omegas, "bf16")
    _, tape = kernels.forward_directional(weights, omegas, "bf16", torch.randn(n, outputs, 3, device=DEVICE), tape)
    z, u = tape.pre.double(), tape.tangents.double()
    seeds = torch.eye(outputs, device=DEVICE).expand(n, outputs, outputs).contiguous()
    deltas = kernels.backward(torch.randn(n, outputs, device=DEVICE), seeds, x, tape, weights, omegas, "bf16", True)
    omega = torch.tensor([omegas[0], *omegas[1:-1]], dtype=torch.float64, device=DEVICE)[:, None, None]
    a = torch.sin(omega * z)
    t = omega[:, None] * torch.cos(omega * z)[:, None] * u
    assert deltas.a.dtype == deltas.t.dtype == torch.bfloat16
    assert deltas.a.data_ptr() == tape.pre.data_ptr() and deltas.t.data_ptr() == tape.tangents.data_ptr()
    # bfloat16 keeps 8 bits: within 2^-8 of each value, beside the sine's own error (the MUFU's, and
    # the phase omega z rounded to float32), times omega u for t.
    sine = 2 * MUFU_ERROR + 2.0 ** -22 * (omega * z).abs()
    assert ((deltas.a.double() - a).abs() <= 2.0 ** -8 * a.abs() + sine).all()
    assert ((deltas.t.double() - t).abs() <= 2.0 ** -8 * t.abs() + sine[:, None] * omega[:, None] * u.abs()).all()
    single = len(launch.column_groups(64, outputs)) == 1
    assert deltas.pre.dtype == deltas.tangents.dtype == (torch.bfloat16 if single else torch.float32)
    assert deltas.last.dtype == deltas.tangents_last.dtype == torch.float32


def test_training_gradients_through_the_triton_sine(monkeypatch: pytest.MonkeyPatch) -> None:
    model = SirenMLP(3, 32, 1, 1).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    n = 33
    x = torch.rand(n, 3, device=DEVICE) * 2 - 1

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        y, j = m.forward_with_gradient(xx[rows])
        return [g.cpu() for g in torch.autograd.grad(training_loss(y, j, n), [*m.parameters(), xx])]

    assert siren_ops.backend(x) == "triton"
    got = grads(model, torch.float32, slice(None))
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    for error in gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), n):
        assert error <= RTOL_GRAD


def test_sincos(rng: np.random.Generator, poisoned: None) -> None:
    z = torch.as_tensor(rng.uniform(-5, 5, 3001), dtype=torch.float32, device=DEVICE)
    s, c = kernels.sincos(z, 30.0)
    phase = 30.0 * z.double()
    assert (s.double() - torch.sin(phase)).abs().max() < 1e-4
    assert (c.double() / 30 - torch.cos(phase)).abs().max() < 1e-4


def test_every_launch_runs_on_its_tensors_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """Triton launches on the current device: each launch must sit inside torch.cuda.device of its
    tensors (recorded here on the CPU, where the guard is a null context)."""
    guard = launch.on_device(types.SimpleNamespace(device=torch.device("cuda", 1)))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1
    inside: list[bool] = []
    active = [False]
    real_guard = launch.on_device

    class Recorded:
        def __init__(self, t: torch.Tensor) -> None:
            self.inner = real_guard(t)

        def __enter__(self) -> None:
            active[0] = True
            self.inner.__enter__()

        def __exit__(self, *exc: Any) -> None:
            self.inner.__exit__(*exc)
            active[0] = False

    def recorded(kernel: Any) -> Any:
        class Launcher:
            def __getitem__(self, grid: Any) -> Any:
                def launch(*args: Any, **kwargs: Any) -> Any:
                    inside.append(active[0])
                    return kernel[grid](*args, **kwargs)

                return launch

        return Launcher()

    for module in (network, training, elementwise):
        monkeypatch.setattr(module, "on_device", Recorded)
    monkeypatch.setattr(network, "siren_kernel", recorded(network.siren_kernel))
    monkeypatch.setattr(training, "backward_kernel", recorded(training.backward_kernel))
    monkeypatch.setattr(elementwise, "sincos_kernel", recorded(elementwise.sincos_kernel))
    model = SirenMLP(3, 16, 0, 1)
    x = torch.rand(5, 3)
    ws, bs = list(model.weights), list(model.biases)
    kernels.forward(x, ws, bs, model.omegas, "fp32")
    for reverse in (False, True):  # one launch; the taped forward and the sweep
        kernels.forward_with_gradient(x, ws, bs, model.omegas, "fp32", 3, reverse)
    kernels.sincos(x, 30.0)
    assert inside == [True] * 5


@pytest.mark.cuda
@pytest.mark.parametrize("width", [64, 256, 512])
def test_large_batches_on_cuda(width: int, poisoned: None) -> None:
    if DEVICE != "cuda":
        pytest.skip("needs a CUDA GPU")
    model = SirenMLP(3, width, 3, 1).to(DEVICE)
    x = torch.rand(1_000_003, 3, device=DEVICE) * 2 - 1
    forward_y, y, j = run(model, x)
    assert torch.isfinite(y).all() and torch.isfinite(j).all()
    rows = torch.randint(0, len(x), (4000,), device=DEVICE)
    check(model.cpu(), x[rows].cpu(), forward_y[rows], y[rows], j[rows])


@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_one_point_runs_every_kernel_on_cuda(precision: str, monkeypatch: pytest.MonkeyPatch, poisoned: None) -> None:
    """A batch of one point, whose integer arguments equal to 1 Triton's launcher makes constants
    (which no interpreter test sees; test_triton_compile.py's ``ONES`` compiles them): the forward,
    the Jacobian both ways, and a training step through the fused backward and the GEMMs."""
    if DEVICE != "cuda":
        pytest.skip("needs a CUDA GPU")
    model = SirenMLP(3, 64, 2, 1, precision=precision).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    x = torch.rand(1, 3, device=DEVICE) * 2 - 1
    ws, bs = list(model.weights), list(model.biases)
    with torch.no_grad():
        y = model(x)
        jacobians = [kernels.forward_with_gradient(x, ws, bs, model.omegas, precision, 3, reverse)[1]
                     for reverse in (False, True)]
    tol_y, tol_j = RTOL[precision]
    for j in jacobians:
        error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
        assert error_y <= tol_y and error_j <= tol_j, (error_y, error_j)

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        y, j = m.forward_with_gradient(x.to(dtype)[rows])
        return [g.cpu() for g in torch.autograd.grad(y.sum() + j.pow(2).sum(), list(m.parameters()))]

    got = grads(model, torch.float32, slice(None))
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    assert max(gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), 1)) <= tol_j


def test_hidden_layers_with_different_omegas_are_computed_with_theirs(poisoned: None) -> None:
    """The kernels take one hidden omega: a network whose hidden layers differ (fastsdf.Siren's
    ``net[i].omega_0`` can be set per layer, as in the official class) runs on the composed path."""
    from fastsdf.nn import Siren

    model = Siren(3, 32, 3, 1, outermost_linear=True).to(DEVICE)
    for layer, omega in zip(model.net[1:4], (10.0, 30.0, 45.0)):
        layer.omega_0 = omega
    x = torch.rand(37, 3, device=DEVICE) * 2 - 1
    with torch.no_grad():
        y = model(x)[0]
        j = model.forward_with_gradient(x)[1]
    error_y, error_j = output_errors(model.cpu(), x.cpu(), y.cpu(), j.cpu())
    tol_y, tol_j = RTOL["fp32"]
    assert error_y <= tol_y and error_j <= tol_j


def test_the_fused_backends_take_the_dispatchers_calls() -> None:
    """ops.siren calls the CPU and the Triton backend through ``FusedBackend``: each module has its
    functions, with its parameters."""
    calls = [name for name, member in vars(FusedBackend).items() if inspect.isfunction(member)
             and not name.startswith("_")]
    assert {"supports", "jacobian_pays", "serves_recorded", "forward", "forward_with_gradient"} <= set(calls)
    for module in (siren_cpu, siren_triton):
        for name in calls:
            want = list(inspect.signature(getattr(FusedBackend, name)).parameters)[1:]  # less self
            assert list(inspect.signature(getattr(module, name)).parameters) == want, (module.__name__, name)


def test_the_jacobian_runs_fused_only_where_it_pays(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chosen by the dispatcher (no FASTSDF_BACKEND), forward_with_gradient runs the fused kernel in
    the precisions measured faster than the composed path, and the composed path in the others."""
    calls = []
    monkeypatch.setattr(kernels, "forward_with_gradient", lambda *args: calls.append(args[4]) or (None, None))
    monkeypatch.setattr(siren_ops, "backend", lambda x: "triton")
    monkeypatch.delenv("FASTSDF_BACKEND")
    x = torch.rand(5, 3)
    for precision in siren_ops.PRECISIONS:
        model = SirenMLP(3, 32, 1, 1, precision=precision)
        with torch.no_grad():
            siren_ops.forward_with_gradient(x, list(model.weights), list(model.biases), model.omegas, precision, 3)
    assert calls == [p for p in siren_ops.PRECISIONS if siren_triton.jacobian_pays(p)] == ["tf32"]


# --- training: the fused backward ----------------------------------------------------------------

# Each width, 0-5 hidden layers, each precision, batches of 1, 7, 1000 (not a multiple of the tile),
# with and without bias, linear and sine output layers, latent codes (exact and tf32x3 first layers),
# a loss on y alone (``model(x)``) and on y and the Jacobian (``forward_with_gradient``: a tangent per
# output in the backward, at widths >= 256 one per launch, the later launches adding their share).
BACKWARD_CASES = [
    # width, hidden, outputs, outermost_linear, bias, latent, precision, points, jacobian
    (16, 0, 1, True, True, 0, "fp32", 1000, False),
    (16, 2, 2, False, True, 0, "tf32", 100, True),
    (32, 5, 2, False, False, 0, "fp32", 7, True),
    (64, 2, 1, True, True, 4, "bf16", 1, True),
    (128, 1, 3, False, True, 0, "tf32", 33, False),
    (256, 3, 1, True, True, 0, "fp32", 17, False),
    (256, 1, 1, True, True, 0, "fp32", 6, True),
    (256, 1, 2, False, False, 0, "bf16", 9, True),
    (512, 1, 1, True, False, 0, "bf16", 5, False),
    (32, 1, 1, True, True, 17, "fp32", 40, True),  # 20 inputs: dL/dx over a padded first layer
    # bf16's larger tiles (launch.config, launch.backward_config): two full tiles and a partial one.
    (64, 1, 1, True, True, 0, "bf16", 263, True),
    (256, 2, 1, True, True, 0, "bf16", 263, False),
]


def _backward_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The fused backward's tangents, recorded per call (one per output with the Jacobian, the
    directions dL/dJ; 0: dL/dy alone)."""
    calls: list[int] = []
    real = kernels.backward
    monkeypatch.setattr(kernels, "backward",
                        lambda dy, dj, *args: calls.append(0 if dj is None else dj.shape[-1]) or real(dy, dj, *args))
    return calls


@pytest.mark.parametrize("width, hidden, outputs, outermost_linear, bias, latent_features, precision, points, jacobian",
                         BACKWARD_CASES)
def test_training_backward_matches_reference(width: int, hidden: int, outputs: int, outermost_linear: bool,
                                             bias: bool, latent_features: int, precision: str, points: int,
                                             jacobian: bool, monkeypatch: pytest.MonkeyPatch, poisoned: None) -> None:
    """A recorded forward (or forward with the Jacobian) runs the fused kernels forward and backward:
    the gradients of a loss on y (and J) with respect to every parameter, x and the latent code match
    float64 autograd on the reference."""
    model = SirenMLP(3, width, hidden, outputs, outermost_linear=outermost_linear, bias=bias,
                     latent_features=latent_features, precision=precision).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    x = torch.rand(points, 3, device=DEVICE) * 2 - 1
    latent = torch.randn(points, latent_features, device=DEVICE) * 0.1 if latent_features else None
    # A loss linear in y and J: dL/dy and dL/dJ are the same for both, so the comparison measures the
    # backward (and the tape), not the forward's error in y (relative to y, unbounded where y is small).
    direction = torch.randn(points, outputs, device=DEVICE)
    direction_j = torch.randn(points, outputs, 3, device=DEVICE)
    calls = _backward_calls(monkeypatch)

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        leaves = [*m.parameters(), xx]
        code = None
        if latent is not None:
            code = latent.to(dtype).requires_grad_()
            leaves.append(code)
        code = None if code is None else code[rows]
        if jacobian:
            y, j = m.forward_with_gradient(xx[rows], code)
            loss = (y * direction[rows].to(dtype)).sum() + (j * direction_j[rows].to(dtype)).sum()
        else:
            loss = (m(xx[rows], code) * direction[rows].to(dtype)).sum()
        return [g.cpu() for g in torch.autograd.grad(loss / points, leaves)]

    got = grads(model, torch.float32, slice(None))
    assert calls == [outputs if jacobian else 0] and all(torch.isfinite(g).all() for g in got)
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    errors = gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), points)
    assert max(errors) <= RTOL[precision][1], errors


def test_a_jacobian_the_loss_leaves_out_sweeps_no_tangents(monkeypatch: pytest.MonkeyPatch, poisoned: None) -> None:
    model = SirenMLP(3, 16, 1, 1).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    x = torch.rand(11, 3, device=DEVICE) * 2 - 1
    calls = _backward_calls(monkeypatch)

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        y, _ = m.forward_with_gradient(xx[rows])
        return [g.cpu() for g in torch.autograd.grad(y.sum(), [*m.parameters(), xx])]

    got = grads(model, torch.float32, slice(None))
    assert calls == [0]
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    assert max(gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), 11)) <= RTOL["fp32"][1]


@pytest.mark.parametrize("jacobian", [False, True])
def test_frozen_parameters_get_no_gradient_and_the_others_theirs(jacobian: bool, monkeypatch: pytest.MonkeyPatch,
                                                                 poisoned: None) -> None:
    """Parameters that do not require grad get none from the fused backward, and the others theirs: a
    weight without its bias, a bias without its weight (summed without the GEMM)."""
    model = SirenMLP(3, 32, 2, 1).to(DEVICE)
    model.weights[0].requires_grad_(False)
    model.biases[1].requires_grad_(False)
    model.weights[2].requires_grad_(False)
    twin = double_copy(model.cpu()).to(DEVICE)
    x = torch.rand(57, 3, device=DEVICE) * 2 - 1
    calls = _backward_calls(monkeypatch)

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype)[rows]
        if jacobian:
            y, j = m.forward_with_gradient(xx)
            loss = y.sum() + j.pow(2).sum()
        else:
            loss = m(xx).sum()
        return [g.cpu() for g in torch.autograd.grad(loss, [p for p in m.parameters() if p.requires_grad])]

    got = grads(model, torch.float32, slice(None))
    assert calls == [1 if jacobian else 0] and len(got) == 5
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    assert max(gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), 57)) <= RTOL["fp32"][1]


@pytest.mark.parametrize("jacobian", [False, True])
def test_gradients_of_gradients_take_the_composed_path(jacobian: bool, monkeypatch: pytest.MonkeyPatch,
                                                       poisoned: None) -> None:
    """create_graph through the fused call (an eikonal loss by torch.autograd.grad of forward, or a
    loss on the gradient of forward_with_gradient's Jacobian): that backward runs the composed path,
    whose gradients autograd differentiates again."""
    model = SirenMLP(3, 32, 2, 1).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    n = 13
    x = torch.rand(n, 3, device=DEVICE) * 2 - 1
    calls = _backward_calls(monkeypatch)

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        if jacobian:
            y, j = m.forward_with_gradient(xx[rows])
            (g,) = torch.autograd.grad(j.sum(), xx, create_graph=True)
            loss = y.pow(2).sum() + g[rows].pow(2).sum()
        else:
            y = m(xx[rows])
            (g,) = torch.autograd.grad(y.sum(), xx, create_graph=True)
            loss = training_loss(y, g[rows][:, None, :], n) * n
        return [g.cpu() for g in torch.autograd.grad(loss / n, [*m.parameters(), xx])]

    got = grads(model, torch.float32, slice(None))
    # The loss's y term, first order, on the kernels (with the Jacobian, which the y term leaves out,
    # no tangent swept); the create_graph backward was composed.
    assert calls == [0]
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    for error in gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), n):
        assert error <= RTOL["fp32"][1]


@pytest.mark.parametrize("jacobian", [False, True])
def test_fused_backward_runs_again_with_retain_graph(jacobian: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused backward leaves the weight gradients' operands in the tape over what it read: a
    second backward of the same graph runs the taped forward again, to the same gradients."""
    model = SirenMLP(3, 16, 1, 2).to(DEVICE)
    x = (torch.rand(9, 3, device=DEVICE) * 2 - 1).requires_grad_()
    calls = _backward_calls(monkeypatch)
    if jacobian:
        y, j = model.forward_with_gradient(x)
        loss = y.pow(2).sum() + (j * torch.randn_like(j)).sum()
    else:
        loss = model(x).pow(2).sum()
    first = torch.autograd.grad(loss, [*model.parameters(), x], retain_graph=True)
    second = torch.autograd.grad(loss, [*model.parameters(), x])
    assert calls == 2 * [2 if jacobian else 0] and all(torch.equal(a, b) for a, b in zip(first, second))


@pytest.mark.parametrize("jacobian", [False, True])
def test_a_tape_too_large_for_memory_takes_the_composed_path(jacobian: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastsdf import _memory

    model = SirenMLP(3, 16, 1, 1).to(DEVICE)
    twin = double_copy(model.cpu()).to(DEVICE)
    x = torch.rand(9, 3, device=DEVICE) * 2 - 1
    # The backward's tapes: 9 points x 33 neurons x 4 bytes, the tape and its gradient (x 2 with the
    # tangent of the one output); half of the memory is less.
    monkeypatch.setattr(_memory, "available_bytes", lambda device=None: 2 * 4 * 9 * 33 * 2 * (2 if jacobian else 1) - 4)
    calls = _backward_calls(monkeypatch)

    def grads(m: SirenMLP, dtype: torch.dtype, rows: slice) -> list[torch.Tensor]:
        xx = x.to(dtype).requires_grad_()
        loss = sum(t.sum() for t in m.forward_with_gradient(xx[rows])) if jacobian else m(xx[rows]).sum()
        return [g.cpu() for g in torch.autograd.grad(loss, [*m.parameters(), xx])]

    got = grads(model, torch.float32, slice(None))
    assert calls == []
    monkeypatch.setenv("FASTSDF_BACKEND", "reference")
    assert max(gradient_errors(got, lambda rows: grads(twin, torch.float64, rows), 9)) <= RTOL["fp32"][1]
