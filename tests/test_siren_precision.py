"""The composed SIREN path's precision modes (fastsdf.ops.siren_composed.linear): their numerics do not depend
on torch's process-wide matmul settings, which fastsdf reads and never writes.

No GPU here: a stand-in for F.linear rounds float32 operands to TF32 (or bf16) whenever the settings
would let the hardware do so, and the CUDA code path runs on CPU tensors by naming a CUDA device."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import fastsdf
from fastsdf.ops import siren as siren_ops
from fastsdf.ops import siren_composed

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
EPS32 = 2.0 ** -24


def tf32_reference(x: np.ndarray) -> np.ndarray:
    """float32 x rounded to TF32 in float64 arithmetic: to the nearest multiple of the TF32 ulp at
    x's binade (2^-136 below float32's normals), ties to even (np.round), overflow to Inf."""
    with np.errstate(invalid="ignore"):  # signalling NaNs
        wide = x.astype(np.float64)
    out = wide.copy()
    finite = np.isfinite(wide) & (wide != 0)
    _, exponent = np.frexp(wide[finite])
    ulp = np.ldexp(1.0, np.maximum(exponent - 1, -126) - 10)
    out[finite] = np.round(wide[finite] / ulp) * ulp
    with np.errstate(over="ignore"):
        return out.astype(np.float32)


def bf16_reference(x: np.ndarray) -> np.ndarray:
    return torch.from_numpy(x).to(torch.bfloat16).float().numpy()


def tf32_edge_cases(rng: np.random.Generator) -> np.ndarray:
    bits = rng.integers(0, 2 ** 32, 4000, dtype=np.uint64).astype(np.uint32)
    dropped = np.uint32(0x1FFF)
    ties = (bits & ~dropped) | np.uint32(0x1000)       # exactly halfway, both parities of bit 13
    near = ties + rng.choice(np.array([-1, 1], np.int64), len(ties)).astype(np.uint32)
    subnormal = rng.integers(1, 1 << 23, 1000, dtype=np.uint64).astype(np.uint32)
    special = np.array([0, 0x80000000, 1, 0x1000, 0x3000, 0x7F7FFFFF, 0x7F7FF000, 0x7F7FEFFF, 0x007FFFFF,
                        0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0x7FFFFFFF, 0xFFFFFFFF], np.uint32)
    return np.concatenate([bits, ties, near, subnormal, subnormal | np.uint32(0x80000000), special]).view(np.float32)


def test_round_tf32_matches_the_float64_reference(rng, seed) -> None:
    x = tf32_edge_cases(rng)
    got = siren_composed.round_tf32(torch.from_numpy(x)).numpy()
    want = tf32_reference(x)
    nan = np.isnan(x)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=f"seed={seed}")
    mismatch = (got.view(np.uint32) != want.view(np.uint32)) & ~nan
    assert not mismatch.any(), (f"seed={seed}: {x[mismatch][:5]} -> {got[mismatch][:5]}, want {want[mismatch][:5]}")


def test_round_tf32_keeps_shape_and_views(rng) -> None:
    x = torch.from_numpy(rng.standard_normal((5, 7)).astype(np.float32))
    np.testing.assert_array_equal(siren_composed.round_tf32(x.t()).numpy(), tf32_reference(x.t().numpy()))


# --- what the settings say ----------------------------------------------------------------------


@pytest.fixture
def settings(monkeypatch) -> Iterator[dict]:
    """Process-wide settings as torch's getters report them, without touching torch's own."""
    state = {"allow_tf32": False, "matmul_precision": "highest", ("generic", "all"): "none",
             ("cuda", "matmul"): "none", ("mkldnn", "all"): "none", ("mkldnn", "matmul"): "none"}

    def answer(key):
        value = state[key]
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(torch._C, "_get_cublas_allow_tf32", lambda: answer("allow_tf32"))
    monkeypatch.setattr(torch._C, "_get_fp32_precision_getter", lambda backend, op: answer((backend, op)))
    monkeypatch.setattr(torch, "get_float32_matmul_precision", lambda: answer("matmul_precision"))
    yield state


MIXED = RuntimeError("you have used mix of the legacy and new APIs")


@pytest.mark.parametrize("change, cuda_rounds, cpu_rounds", [
    ({}, False, False),
    ({"allow_tf32": True}, True, False),
    ({"allow_tf32": MIXED}, True, False),
    ({("cuda", "matmul"): "tf32"}, True, False),
    ({("cuda", "matmul"): "ieee", ("generic", "all"): "ieee"}, False, False),
    ({("generic", "all"): "tf32"}, True, True),
    ({"matmul_precision": "medium"}, False, True),
    ({"matmul_precision": MIXED}, False, True),
    ({("mkldnn", "matmul"): "bf16"}, False, True),
    ({("mkldnn", "all"): "tf32"}, False, True),
])
def test_which_settings_may_round_a_float32_gemm(settings, change, cuda_rounds: bool, cpu_rounds: bool) -> None:
    settings.update(change)
    assert siren_composed.gemm_may_round(CUDA) == cuda_rounds
    assert siren_composed.gemm_may_round(CPU) == cpu_rounds
    assert not siren_composed.gemm_may_round(torch.device("meta"))


# --- numerics whatever the settings ------------------------------------------------------------------


@pytest.fixture
def rounding_gemm(monkeypatch, settings) -> dict:
    """F.linear rounding its float32 operands as the hardware would under ``settings``: to TF32 on
    CUDA (the tensors here are CPU tensors standing for CUDA ones), to bf16 in oneDNN."""
    real = F.linear
    mode = {"device": "cuda"}

    def linear(a, weight, bias=None):
        if a.dtype == torch.float32:
            rounds = siren_composed.gemm_may_round(torch.device(mode["device"]))
            if rounds:
                reference = tf32_reference if mode["device"] == "cuda" else bf16_reference
                a = torch.from_numpy(reference(a.detach().numpy()))
                weight = torch.from_numpy(reference(weight.detach().numpy()))
        return real(a, weight, bias)

    monkeypatch.setattr(F, "linear", linear)
    return mode


def layer_inputs(rng, n: int, fan_in: int, width: int) -> tuple[torch.Tensor, ...]:
    a = torch.from_numpy(rng.uniform(-1, 1, (n, fan_in)).astype(np.float32))
    w = torch.from_numpy(rng.uniform(-1, 1, (width, fan_in)).astype(np.float32))
    b = torch.from_numpy(rng.uniform(-1, 1, width).astype(np.float32))
    return a, w, b


def assert_float32_accurate(z: torch.Tensor, a, w, b, context: str, operands=lambda t: t) -> None:
    """z against the float64 product of ``operands(a)``, ``operands(w)``: float32's rounding of a
    sum of fan_in products (plus the split's 2^-22) is the whole error."""
    a64, w64 = (torch.from_numpy(operands(t.numpy())).double() for t in (a, w))
    exact = F.linear(a64, w64, b.double())
    scale = a64.abs() @ w64.abs().T + b.double().abs()
    error = (z.double() - exact).abs()
    bound = (a.shape[1] + 8) * EPS32 * scale
    worst = (error / bound).max().item()
    assert worst <= 1, f"{context}: error {worst:.3g} x the float32 bound"


@pytest.mark.parametrize("precision", siren_ops.PRECISIONS)
@pytest.mark.parametrize("fan_in", [3, 35])
def test_first_layer_is_float32_whatever_the_settings(rounding_gemm, settings, precision: str, fan_in: int,
                                                     rng, seed) -> None:
    a, w, b = layer_inputs(rng, 300, fan_in, 64)
    for device, setting in (("cuda", {"allow_tf32": True}), ("cuda", {("cuda", "matmul"): "tf32"}),
                            ("cpu", {("mkldnn", "matmul"): "bf16"})):
        rounding_gemm["device"] = device
        results = []
        for change in ({}, setting):
            settings.update(change)
            results.append(siren_composed.linear(precision, torch.device(device))(a, w, b, 0))
        for z, change in zip(results, ("default settings", setting)):
            assert_float32_accurate(z, a, w, b, f"seed={seed} {precision} {device} {change}")
        settings.update({"allow_tf32": False, ("cuda", "matmul"): "none", ("mkldnn", "matmul"): "none"})


def test_fp32_mode_is_float32_in_every_layer(rounding_gemm, settings, rng, seed) -> None:
    a, w, b = layer_inputs(rng, 200, 64, 48)
    settings["allow_tf32"] = True
    for layer in (0, 1, 3):
        z = siren_composed.linear("fp32", CUDA)(a, w, b, layer)
        assert_float32_accurate(z, a, w, b, f"seed={seed} layer {layer}")


def test_tf32_mode_follows_the_users_tf32_setting(rounding_gemm, settings, rng, seed) -> None:
    """After the first layer, "tf32" is the plain product: fp32 where the user has not allowed TF32,
    the TF32 product where they have (never less accurate than TF32, never slower than fp32)."""
    a, w, b = layer_inputs(rng, 200, 64, 48)
    assert_float32_accurate(siren_composed.linear("tf32", CUDA)(a, w, b, 2), a, w, b, f"seed={seed} TF32 off")
    settings["allow_tf32"] = True
    assert_float32_accurate(siren_composed.linear("tf32", CUDA)(a, w, b, 2), a, w, b, f"seed={seed} TF32 on",
                            operands=tf32_reference)


def test_split_products_have_the_plain_gradients(settings, rng, seed) -> None:
    """Three TF32 products stand for one: autograd must see the product's gradients."""
    a, w, b = (t.requires_grad_() for t in layer_inputs(rng, 50, 3, 16))
    settings["allow_tf32"] = True
    grad_out = torch.from_numpy(rng.standard_normal((50, 16)).astype(np.float32))
    split = torch.autograd.grad((siren_composed.linear("fp32", CUDA)(a, w, b, 0) * grad_out).sum(), (a, w, b))
    plain = torch.autograd.grad((F.linear(a, w, b) * grad_out).sum(), (a, w, b))
    for name, s, p in zip("awb", split, plain):
        scale = p.abs().max().item() + 1
        np.testing.assert_allclose(s.numpy(), p.numpy(), rtol=0, atol=64 * EPS32 * scale, err_msg=f"seed={seed} d{name}")


# --- the settings themselves ----------------------------------------------------------------------


def test_no_precision_setting_is_ever_written(monkeypatch, rng) -> None:
    def refuse(*args):
        raise AssertionError("fastsdf wrote a process-wide precision setting")

    for name in ("_set_cublas_allow_tf32", "_set_fp32_precision_setter", "_set_float32_matmul_precision"):
        monkeypatch.setattr(torch._C, name, refuse)
    a, w, b = layer_inputs(rng, 20, 8, 8)
    for precision in siren_ops.PRECISIONS:
        for device in (CPU, CUDA):
            for layer in (0, 1):
                siren_composed.linear(precision, device)(a, w, b, layer)
        model = fastsdf.SirenMLP(3, 16, 2, 1, precision=precision)
        x = torch.zeros(10, 3, requires_grad=True)
        model.forward_with_gradient(x)[1].sum().backward()  # the composed path on the CPU too


def test_threads_leave_the_settings_as_the_user_set_them(rng) -> None:
    """Many threads run the composed path while the user's TF32 setting is on: no thread ever sees
    it change, and it is still on afterwards."""
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32
    seen: set[bool] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.add(matmul.allow_tf32)

    def train() -> None:
        model = fastsdf.SirenMLP(3, 128, 2, 1, precision="tf32", double_backward=True)
        for _ in range(5):
            x = torch.rand(2048, 3, requires_grad=True)
            model(x).sum().backward()

    matmul.allow_tf32 = True
    try:
        watcher = threading.Thread(target=watch)
        watcher.start()
        workers = [threading.Thread(target=train) for _ in range(4)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
        stop.set()
        watcher.join()
        assert matmul.allow_tf32 is True
        assert seen == {True}, f"the setting was seen as {seen}"
    finally:
        stop.set()
        matmul.allow_tf32 = before
