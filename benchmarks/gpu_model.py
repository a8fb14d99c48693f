"""A cost model of the SIREN kernels on an H100 / H200: counted on the CPU, not measured on a GPU.

Per point, for each way of running a SIREN (fastsdf's Triton kernels, through ``fastsdf.SirenMLP``
with FASTSDF_BACKEND=triton, and eager PyTorch: ``fastsdf.ops.siren_reference`` with autograd), it
counts what every kernel of the call does:

- global-memory bytes loaded and stored. Triton kernels run in Triton's CPU interpreter
  (TRITON_INTERPRET=1) with its load and store instructions wrapped: each counts the bytes its mask
  lets through, and which kernel argument (buffer) they fall in. PyTorch ops run under a
  TorchDispatchMode: an op reads its inputs and writes its outputs (a broadcast dimension read
  once); views and allocations move nothing;
- which of those bytes L2 serves: those of a Triton kernel's arguments whose whole tensor, at
  NOMINAL_BATCH points, takes at most half of L2 (the weights every tile re-reads), less each
  tensor's first touch; the rest (points, outputs, anything bigger, all of PyTorch's ops) is HBM's;
- tensor-core FLOPs (2 M N K per ``tl.dot`` or matrix product), by the hardware they run on: the
  dot's ``input_precision`` (tf32x3 costs three TF32 products); for the IEEE dots through which the
  interpreted kernels emulate their tensor-core products (rounded operands), the operands' values:
  bf16 where both hold bf16 values only, TF32 where both hold TF32 values (the fp32 mode's three
  products of big and small parts); fp16-typed dots (the fp32 mode's fp16x3 products of sines) at
  fp16's rate, bf16's; fp32 (CUDA cores) for other IEEE dots and PyTorch's float32 products
  (``allow_tf32`` is off by default);
- float adds, multiplies, FMAs and divisions on blocks (CUDA-core instructions, masked lanes
  included; Triton's index arithmetic is not counted), and sines and cosines.

Per point means the difference between two batch sizes over the difference in points: weights read
once per call drop out, weights read once per tile of points stay (amortised over the tile).

fastsdf's tilings depend on the Triton version (``fastsdf.kernels.siren.launch``): its rows are
counted at the installed Triton's and again, labelled, at those of the versions ``--tilings`` names
(the GPU machine's 3.6 by default) where they count differently.

From the counts it gives the roofline bound of each kernel, the largest of bytes / HBM bandwidth,
tensor FLOPs / tensor-core rate, CUDA-core instructions / their rate and sines / the special-function
units' rate (MUFU, 16 per clock per SM, which ``sin.approx`` uses; libdevice's ``sinf`` costs about
28 FP32 instructions instead, not counted here), and all global bytes / L2 bandwidth and the bytes
L2 does not serve / HBM bandwidth, summed over the call's kernels, as points per second on an H100
SXM and an H200 (datasheet rates) and on an H200 with the ceilings measured on this workplace's
machine (KINDS.md: 4.3 TB/s copy, 790 TFLOP/s bf16; the rest from the datasheet). L2's size and
bandwidth are leads (50 / 60 MB, 12 TB/s), not measured here. It is a bound, not a prediction,
and no GPU has measured it.

Usage (from the repository root; a few minutes on a CPU):

    python benchmarks/gpu_model.py                  # table on stdout, benchmarks/results/gpu_model.json
    python benchmarks/gpu_model.py --networks siren256 --precisions fp32 --out /tmp/model.json
    python benchmarks/gpu_model.py --tilings 3.6,3.8  # also fastsdf at these Tritons' tilings (default 3.6)
    python benchmarks/make_results.py benchmarks/results/*.json   # the RESULTS.md section
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__":
    # Triton's interpreter must be chosen before triton is imported (torch imports it): the
    # @triton.jit functions of triton.language itself are defined then.
    os.environ["TRITON_INTERPRET"] = "1"
    os.environ["FASTSDF_BACKEND"] = "triton"

import numpy as np
import torch
from torch.utils.flop_counter import flop_registry
from torch.utils._python_dispatch import TorchDispatchMode

BENCH_DIR = Path(__file__).resolve().parent
if __name__ == "__main__":
    sys.path.insert(0, str(BENCH_DIR.parent))  # this checkout's fastsdf, installed or not
DEFAULT_OUT = BENCH_DIR / "results" / "gpu_model.json"
KIND = "fastsdf-gpu-model"  # make_results.py renders files with this "kind" as the model's section
TARGET_BYTES = {"forward": 256, "train": 1024, "train_y": 1024}  # issue 12: global bytes per point


# --- the chips ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chip:
    """Peak rates: bytes/s, FLOP/s (an FMA is 2 FLOPs) and special-function results/s; L2's size in
    bytes (``l2_size``) and read bandwidth (``l2``, bytes/s)."""

    name: str
    hbm: float
    tf32: float
    bf16: float
    fp32: float
    mufu: float
    source: str
    l2_size: float
    l2: float


_MUFU = 16 * 132 * 1.98e9  # 16 per clock per SM, 132 SMs, 1.98 GHz boost
# L2 bandwidth: a lead, not measured here (published H100 microbenchmarks: about 2.5-3x HBM,
# 10-12 TB/s; the H200 is the same die). The upper end, as a bound should be.
_L2_BANDWIDTH = 12e12
_L2_SOURCE = "; L2 size and bandwidth are leads, not measured here"
CHIPS = (
    Chip("H100 SXM", 3.35e12, 494.7e12, 989.4e12, 66.9e12, _MUFU, "datasheet (dense)" + _L2_SOURCE,
         50e6, _L2_BANDWIDTH),
    Chip("H200", 4.8e12, 494.7e12, 989.4e12, 66.9e12, _MUFU, "datasheet (dense); L2 size as PyTorch reports it "
         "(KINDS.md)" + _L2_SOURCE, 60e6, _L2_BANDWIDTH),
    Chip("H200 measured", 4.3e12, 494.7e12, 790e12, 66.9e12, _MUFU,
         "measured here (KINDS.md): 4.3 TB/s device copy, 790 TFLOP/s bf16 GEMM; TF32, FP32 and MUFU from the "
         "datasheet" + _L2_SOURCE, 60e6, _L2_BANDWIDTH),
)
# A kernel argument whose whole tensor takes at most this share of L2 is read from L2 after its first
# touch (the weights re-read per tile); the rest of the traffic (points, outputs, activations that
# grow with the batch, PyTorch's ops) comes from HBM.
L2_RESIDENT_SHARE = 0.5
# The batch at which the arguments' sizes are judged against L2: the GPU benchmarks' middle
# (gpu_bench.py times 2^18-2^22 points), not the interpreter's small batches.
NOMINAL_BATCH = 2 ** 20

# Tensor-core precision classes: the rate each runs at, as a fraction of a chip's rate.
_TENSOR_RATE = {"tf32": ("tf32", 1.0), "tf32x3": ("tf32", 1 / 3), "bf16": ("bf16", 1.0), "fp16": ("bf16", 1.0),
                "fp16x3": ("bf16", 1 / 3), "bf16x3": ("bf16", 1 / 3), "bf16x6": ("bf16", 1 / 6)}
_CORE_CLASSES = ("fp32", "ieee")  # products on the CUDA cores


# --- counts ---------------------------------------------------------------------------------------------

@dataclass
class KernelCount:
    """What one kernel (a Triton launch or a PyTorch op) did."""

    name: str
    kind: str  # "triton" or "torch"
    load: float = 0.0  # bytes
    store: float = 0.0
    mma: dict[str, float] = field(default_factory=dict)  # precision class -> FLOPs
    lanes: float = 0.0  # CUDA-core float instructions (per lane)
    sines: float = 0.0  # sin and cos results
    buffers: dict[str, list[float]] = field(default_factory=dict)  # argument -> [load, store] bytes
    footprint: dict[str, float] = field(default_factory=dict)  # argument -> bytes of its whole tensor
    growth: dict[str, float] = field(default_factory=dict)  # argument -> its tensor's bytes per point (per_point)

    @property
    def bytes(self) -> float:
        return self.load + self.store

    def l2_resident(self, chip: Chip) -> float:
        """Bytes ``chip``'s L2 serves: those moved to and from arguments small enough to stay there,
        less each tensor's first touch, which comes from (or goes back to) HBM: the points and
        outputs of a batch that fits in L2 still cross HBM once. PyTorch ops' traffic is all HBM's:
        their operands that grow with the batch do not fit."""
        limit = chip.l2_size * L2_RESIDENT_SHARE
        return sum(max(0.0, sum(moved) - self.growth.get(name, 0.0)) for name, moved in self.buffers.items()
                   if self.footprint.get(name, float("inf")) <= limit)

    def add_mma(self, precision: str, flops: float) -> None:
        self.mma[precision] = self.mma.get(precision, 0.0) + flops

    def times(self, chip: Chip) -> dict[str, float]:
        """Seconds on ``chip`` per resource."""
        tensor = sum(flops / (getattr(chip, _TENSOR_RATE[p][0]) * _TENSOR_RATE[p][1])
                     for p, flops in self.mma.items() if p not in _CORE_CLASSES)
        core_flops = sum(flops for p, flops in self.mma.items() if p in _CORE_CLASSES)
        # Every global access passes through L2; only what is not resident there also costs HBM.
        return {"HBM": (self.bytes - self.l2_resident(chip)) / chip.hbm, "L2": self.bytes / chip.l2,
                "tensor cores": tensor, "FP32 cores": (core_flops + 2 * self.lanes) / chip.fp32,
                "MUFU": self.sines / chip.mufu}

    def minus(self, other: "KernelCount", scale: float) -> "KernelCount":
        """(self - other) * scale, field by field; the footprints and growths are self's."""
        def diff(a: dict, b: dict) -> dict:
            return {k: (a.get(k, 0.0) - b.get(k, 0.0)) * scale for k in {*a, *b}}

        buffers = {k: [(self.buffers.get(k, [0, 0])[i] - other.buffers.get(k, [0, 0])[i]) * scale for i in (0, 1)]
                   for k in {*self.buffers, *other.buffers}}
        return KernelCount(self.name, self.kind, (self.load - other.load) * scale, (self.store - other.store) * scale,
                           diff(self.mma, other.mma), (self.lanes - other.lanes) * scale,
                           (self.sines - other.sines) * scale, buffers, dict(self.footprint), dict(self.growth))


class Recorder:
    """Collects a KernelCount per Triton launch (interpreted) and per PyTorch op inside ``with``.

    Triton must run in its interpreter: TRITON_INTERPRET=1 set before the kernels are defined."""

    def __init__(self) -> None:
        self.kernels: list[KernelCount] = []
        self._launch: KernelCount | None = None
        self._buffers: tuple[np.ndarray, np.ndarray, list[str]] | None = None

    @contextlib.contextmanager
    def triton_only(self) -> Iterator["Recorder"]:
        with _patched_interpreter(self):
            yield self

    @contextlib.contextmanager
    def everything(self) -> Iterator["Recorder"]:
        with _patched_interpreter(self), _TorchOps(self):
            yield self

    # -- called from the interpreter's patched builder --

    def begin_launch(self, name: str, arguments: dict[str, Any]) -> None:
        self._launch = KernelCount(name, "triton")
        ranges = []
        for arg, value in arguments.items():
            if isinstance(value, torch.Tensor) and value.numel():
                self._launch.footprint[arg] = float(value.numel() * value.element_size())
                storage = value.untyped_storage()
                ranges.append((storage.data_ptr(), storage.data_ptr() + storage.nbytes(), arg))
        ranges.sort()
        self._buffers = (np.array([r[0] for r in ranges], dtype=np.uint64),
                         np.array([r[1] for r in ranges], dtype=np.uint64), [r[2] for r in ranges])

    def end_launch(self) -> None:
        self.kernels.append(self._launch)
        self._launch = None

    def memory(self, addresses: np.ndarray, mask: np.ndarray, itemsize: int, slot: int) -> None:
        """``slot`` 0 for a load, 1 for a store."""
        launch = self._launch
        if launch is None:
            return
        addresses = np.broadcast_to(addresses, np.broadcast_shapes(addresses.shape, mask.shape))
        touched = addresses[np.broadcast_to(mask, addresses.shape)].astype(np.uint64)
        nbytes = float(touched.size * itemsize)
        if slot == 0:
            launch.load += nbytes
        else:
            launch.store += nbytes
        starts, ends, names = self._buffers
        index = np.searchsorted(starts, touched, side="right").astype(np.int64) - 1
        inside = (index >= 0) & (touched < ends[np.maximum(index, 0)])
        counts = np.bincount(index[inside], minlength=len(names))
        for i, name in enumerate(names):
            if counts[i]:
                launch.buffers.setdefault(name, [0.0, 0.0])[slot] += float(counts[i] * itemsize)
        outside = touched.size - int(inside.sum())
        if outside:
            launch.buffers.setdefault("(outside the arguments)", [0.0, 0.0])[slot] += float(outside * itemsize)

    def dot(self, a: np.ndarray, b: np.ndarray, a_type: Any, b_type: Any, precision: Any) -> None:
        if self._launch is None:
            return
        flops = 2.0 * a.shape[-2] * a.shape[-1] * b.shape[-1] * (int(np.prod(a.shape[:-2])) if a.ndim > 2 else 1)
        self._launch.add_mma(_dot_class(a, b, a_type, b_type, precision), flops)

    def lanes(self, count: int) -> None:
        if self._launch is not None:
            self._launch.lanes += count

    def sines(self, count: int) -> None:
        if self._launch is not None:
            self._launch.sines += count

    # -- called from the dispatch mode --

    def torch_op(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        if self._launch is not None or func.is_view or func in _NO_TRAFFIC:
            return
        outputs = [t for t in _tensors(out)]
        if not outputs:
            return
        inputs = [t for t in _tensors((args, {k: v for k, v in kwargs.items() if k != "out"}))]
        count = KernelCount(str(func.overloadpacket.__name__), "torch",
                            load=float(sum(_tensor_bytes(t) for t in inputs)),
                            store=float(sum(_tensor_bytes(t) for t in outputs)))
        packet = func.overloadpacket
        if packet in flop_registry:
            flops = float(flop_registry[packet](*args, **kwargs, out_val=out))
            dtype = inputs[0].dtype if inputs else torch.float32
            count.add_mma("bf16" if dtype in (torch.bfloat16, torch.float16) else "fp32", flops)
        elif packet in _SINES:
            count.sines = float(sum(t.numel() for t in outputs))
        else:
            count.lanes = float(max(t.numel() for t in [*inputs, *outputs] if t.is_floating_point())
                                if any(t.is_floating_point() for t in [*inputs, *outputs]) else 0)
        self.kernels.append(count)


def _tensors(tree: Any) -> Iterator[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        yield tree
    elif isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _tensors(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _tensors(item)


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes an op moves for ``t``: a broadcast (stride 0) dimension once."""
    elements = 1
    for size, stride in zip(t.shape, t.stride()):
        if stride != 0:
            elements *= size
    return elements * t.element_size() if t.numel() else 0


_aten = torch.ops.aten
_NO_TRAFFIC = {_aten.empty.memory_format, _aten.empty_strided.default, _aten.empty_like.default,
               _aten.new_empty.default, _aten.new_empty_strided.default, _aten.lift_fresh.default}
_SINES = {_aten.sin, _aten.cos}


class _TorchOps(TorchDispatchMode):
    def __init__(self, recorder: Recorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.recorder.torch_op(func, args, kwargs, out)
        return out


def _mantissa_cleared(x: np.ndarray, low_bits: int) -> bool:
    """Whether float32 ``x`` has the low ``low_bits`` of every mantissa zero."""
    return x.dtype == np.float32 and not np.any(x.view(np.uint32) & np.uint32((1 << low_bits) - 1))


def _dot_class(a: np.ndarray, b: np.ndarray, a_type: Any, b_type: Any, precision: Any) -> str:
    """The hardware a dot runs on. Under the interpreter the kernels emulate their tensor-core
    products with IEEE dots on rounded operands (kernels.siren.device's _NATIVE), so the operands' values
    tell the precision: bf16 keeps 7 mantissa bits (the low 16 of fp32's zero), TF32 10 (the low 13
    zero; the fp32 mode's big and small parts are both TF32). A bf16-valued pair is taken as bf16
    (a TF32 dot of such operands, a tile of zeros say, would be costed at bf16's rate)."""
    names = {str(a_type), str(b_type)}
    if names & {"bf16", "fp16"}:
        return "fp16" if "fp16" in names else "bf16"
    name = getattr(precision, "name", str(precision)).lower()
    if name == "ieee":
        if _mantissa_cleared(a, 16) and _mantissa_cleared(b, 16):
            return "bf16"
        if _mantissa_cleared(a, 13) and _mantissa_cleared(b, 13):
            return "tf32"
    return name


@contextlib.contextmanager
def _patched_interpreter(recorder: Recorder) -> Iterator[None]:
    """Wraps the interpreter's memory, dot and math builders and its launcher while inside."""
    from triton.runtime import interpreter

    builder = interpreter.interpreter_builder
    cls = type(builder)
    originals: dict[str, Any] = {}

    def wrap(name: str, make: Callable[[Callable], Callable]) -> None:
        original = getattr(cls, name, None)
        if original is None:
            return
        originals[name] = original
        setattr(builder, name, make(original.__get__(builder)))

    def itemsize(handle: Any) -> int:
        return max(1, handle.get_element_ty().primitive_bitwidth // 8)

    def masked_load(f: Callable) -> Callable:
        def load(ptrs: Any, mask: Any, other: Any, *rest: Any) -> Any:
            recorder.memory(ptrs.data, mask.data, itemsize(ptrs), 0)
            return f(ptrs, mask, other, *rest)
        return load

    def masked_store(f: Callable) -> Callable:
        def store(ptrs: Any, value: Any, mask: Any, *rest: Any) -> Any:
            recorder.memory(ptrs.data, mask.data, itemsize(ptrs), 1)
            return f(ptrs, value, mask, *rest)
        return store

    def atomic_rmw(f: Callable) -> Callable:
        def rmw(op: Any, ptr: Any, val: Any, mask: Any, *rest: Any) -> Any:
            for slot in (0, 1):
                recorder.memory(ptr.data, mask.data, itemsize(ptr), slot)
            return f(op, ptr, val, mask, *rest)
        return rmw

    def dot(f: Callable) -> Callable:
        def run(a: Any, b: Any, d: Any, precision: Any, *rest: Any) -> Any:
            recorder.dot(a.data, b.data, a.dtype.scalar, b.dtype.scalar, precision)
            return f(a, b, d, precision, *rest)
        return run

    def counted(kind: str) -> Callable[[Callable], Callable]:
        def make(f: Callable) -> Callable:
            def run(*args: Any) -> Any:
                out = f(*args)
                if np.issubdtype(out.data.dtype, np.floating):
                    getattr(recorder, kind)(int(out.data.size))
                return out
            return run
        return make

    wrap("create_masked_load", masked_load)
    wrap("create_masked_store", masked_store)
    wrap("create_atomic_rmw", atomic_rmw)
    wrap("create_dot", dot)
    for name in ("create_sin", "create_cos"):
        wrap(name, counted("sines"))
    for name in ("create_fadd", "create_fsub", "create_fmul", "create_fdiv", "create_precise_divf",
                 "create_fma", "create_fneg"):
        wrap(name, counted("lanes"))

    executor = interpreter.GridExecutor
    launch = executor.__call__

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        arguments = dict(zip(self.arg_names, args))
        arguments.update(kwargs)
        recorder.begin_launch(getattr(self.fn, "__name__", "kernel"), arguments)
        try:
            return launch(self, *args, **kwargs)
        finally:
            recorder.end_launch()

    executor.__call__ = call
    try:
        yield
    finally:
        executor.__call__ = launch
        for name in originals:
            delattr(builder, name)


# --- the workloads ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Network:
    key: str
    text: str
    hidden: int
    hidden_layers: int
    latent: int = 0


NETWORKS = {
    "siren256": Network("siren256", "3 -> 256 x 4 sine layers -> 1 (SirenMLP(3, 256, 3, 1), the SIREN SDF network)",
                        256, 3),
    "siren512": Network("siren512", "3 -> 512 x 4 sine layers -> 1 (SirenMLP(3, 512, 3, 1))", 512, 3),
    "latent256": Network("latent256", "DeepSDF-like: latent 256 + xyz 3 -> 256 x 4 sine layers -> 1 "
                                      "(SirenMLP(3, 256, 3, 1, latent_features=256), code per point)", 256, 3, 256),
    "deepsdf512": Network("deepsdf512", "train_deepsdf's SIREN: latent 256 + xyz 3 -> 512 x 8 sine layers -> 1 "
                                        "(SirenMLP(3, 512, 7, 1, latent_features=256)); slow in the interpreter",
                          512, 7, 256),
}
DEFAULT_NETWORKS = ("siren256", "siren512", "latent256")
JOBS = ("forward", "gradient", "train", "train_y")
JOB_TEXT = {"forward": "forward", "gradient": "forward + input gradient",
            "train": "training step (L1 + eikonal, backward to the parameters; no optimiser)",
            "train_y": "training step on y alone (L1, backward to the parameters; no optimiser)"}
PRECISIONS = ("fp32", "tf32", "bf16")
# The GPU machine's Triton (its torch 2.11 pins 3.6; the device README's KINDS.md): fastsdf takes
# other tilings there where 3.9's spill (fastsdf.kernels.siren.launch._OLDER_TRITON), so the model
# counts those as well.
GPU_MACHINE_TRITON = (3, 6)


def _model(network: Network, precision: str) -> Any:
    from fastsdf.nn import SirenMLP

    torch.manual_seed(0)
    return SirenMLP(3, network.hidden, network.hidden_layers, 1, latent_features=network.latent,
                    precision=precision)


def _inputs(network: Network, n: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    generator = torch.Generator().manual_seed(n)
    x = torch.rand(n, 3, generator=generator) * 2 - 1
    latent = torch.randn(n, network.latent, generator=generator) * 0.01 if network.latent else None
    return x, latent


def _loss(y: torch.Tensor, jacobian: torch.Tensor) -> torch.Tensor:
    """The benchmarks' training loss: |y| (an L1 on the SDF) plus the eikonal term | |grad| - 1 |."""
    return y.abs().mean() + (jacobian[:, 0].norm(dim=-1) - 1).abs().mean()


def fastsdf_call(network: Network, job: str, precision: str) -> Callable[[int], Callable[[], None]]:
    """n -> the call of ``job`` through SirenMLP (FASTSDF_BACKEND=triton)."""
    model = _model(network, precision)

    def make(n: int) -> Callable[[], None]:
        x, latent = _inputs(network, n)
        if job == "forward":
            return lambda: _no_grad(model, x, latent)
        if job == "gradient":
            return lambda: _no_grad(model.forward_with_gradient, x, latent)

        def step() -> None:
            model.zero_grad(set_to_none=True)
            if job == "train_y":
                model(x, latent).abs().mean().backward()
            else:
                _loss(*model.forward_with_gradient(x, latent)).backward()

        return step

    return make


def _no_grad(fn: Callable, *args: Any) -> None:
    with torch.no_grad():
        fn(*args)


def eager_call(network: Network, job: str) -> Callable[[int], Callable[[], None]]:
    """n -> ``job`` in eager PyTorch: fastsdf.ops.siren_reference's forward (the official SIREN's
    ops), the input gradient by torch.autograd.grad (create_graph for the training step)."""
    from fastsdf.ops import siren_reference

    model = _model(network, "fp32")
    weights, biases, omegas = list(model.weights), list(model.biases), model.omegas

    def net(x: torch.Tensor, latent: torch.Tensor | None) -> torch.Tensor:
        points = x if latent is None else torch.cat([latent, x], dim=-1)
        return siren_reference.forward(points, weights, biases, omegas)

    def make(n: int) -> Callable[[], None]:
        x, latent = _inputs(network, n)
        if job == "forward":
            return lambda: _no_grad(net, x, latent)

        def gradient() -> None:
            xg = x.detach().requires_grad_(True)
            y = net(xg, latent)
            torch.autograd.grad(y, xg, torch.ones_like(y))

        def step() -> None:
            for p in weights + biases:
                p.grad = None
            if job == "train_y":
                net(x, latent).abs().mean().backward()
                return
            xg = x.detach().requires_grad_(True)
            y = net(xg, latent)
            grad = torch.autograd.grad(y, xg, torch.ones_like(y), create_graph=True)[0]
            _loss(y, grad[:, None, :]).backward()

        return gradient if job == "gradient" else step

    return make


def count_call(make: Callable[[int], Callable[[], None]], n: int) -> list[KernelCount]:
    call = make(n)
    recorder = Recorder()
    with recorder.everything():
        call()
    return recorder.kernels


# --- per point and the bounds --------------------------------------------------------------------------

def per_point(small: list[KernelCount], large: list[KernelCount], batches: tuple[int, int],
              at: int = NOMINAL_BATCH) -> list[KernelCount]:
    """What each kernel adds per point between the calls at two batches (kernels paired in order;
    where the two calls launched different kernels, the call as one), with its arguments' sizes
    extrapolated (linearly in the batch) to ``at`` points."""
    scale = 1.0 / (batches[1] - batches[0])
    if [k.name for k in small] != [k.name for k in large]:
        small, large = [_merged(small)], [_merged(large)]
    points = []
    for a, b in zip(small, large):
        k = b.minus(a, scale)
        k.growth = {name: (size - a.footprint.get(name, size)) * scale for name, size in b.footprint.items()}
        k.footprint = {name: size + k.growth[name] * (at - batches[1]) for name, size in b.footprint.items()}
        points.append(k)
    return points


def _merged(kernels: list[KernelCount]) -> KernelCount:
    total = KernelCount("call", "mixed")
    for k in kernels:
        total.load += k.load
        total.store += k.store
        total.lanes += k.lanes
        total.sines += k.sines
        for p, flops in k.mma.items():
            total.add_mma(p, flops)
        for name, (load, store) in k.buffers.items():
            slot = total.buffers.setdefault(f"{k.name}.{name}", [0.0, 0.0])
            slot[0] += load
            slot[1] += store
        for name, size in k.footprint.items():
            key = f"{k.name}.{name}"
            total.footprint[key] = max(total.footprint.get(key, 0.0), size)
    return total


def bound(kernels: list[KernelCount], chip: Chip) -> dict[str, Any]:
    """Points per second when each kernel runs at its roofline and they run one after another,
    and the resource that binds most of that time."""
    seconds = 0.0
    by_resource: dict[str, float] = {}
    for k in kernels:
        times = k.times(chip)
        resource = max(times, key=times.get)
        seconds += times[resource]
        by_resource[resource] = by_resource.get(resource, 0.0) + times[resource]
    l2 = sum(k.l2_resident(chip) for k in kernels)
    traffic = {"hbm_bytes": sum(k.bytes for k in kernels) - l2, "l2_bytes": l2}
    if seconds <= 0:
        return {"points_per_s": None, "binds": "nothing", "share": 0.0, **traffic}
    resource = max(by_resource, key=by_resource.get)
    return {"points_per_s": 1.0 / seconds, "binds": resource, "share": by_resource[resource] / seconds, **traffic}


def summary(kernels: list[KernelCount]) -> dict[str, Any]:
    total = _merged(kernels)
    return {"bytes": total.bytes, "load": total.load, "store": total.store,
            "flops": sum(total.mma.values()) + 2 * total.lanes, "mma_flops": dict(sorted(total.mma.items())),
            "lanes": total.lanes, "sines": total.sines}


def _on_tf32(kernels: list[KernelCount]) -> list[KernelCount]:
    """The same kernels with their float32 products on TF32 tensor cores (PyTorch's allow_tf32=True)."""
    out = []
    for k in kernels:
        copy = k.minus(KernelCount(k.name, k.kind), 1.0)
        copy.mma = {("tf32" if p == "fp32" else p): v for p, v in k.mma.items()}
        out.append(copy)
    return out


def model_rows(network: Network, job: str, impl: str, precision: str, make: Callable[[int], Callable[[], None]],
               batches: tuple[int, int]) -> tuple[list[dict[str, Any]], list[KernelCount]]:
    """The rows of one way of running ``job`` (two for eager: its float32 products on the CUDA cores,
    PyTorch's default, and on TF32 tensor cores), and its kernels per point."""
    small, large = (count_call(make, n) for n in batches)
    points = per_point(small, large, batches)
    buffers: dict[str, list[float]] = {}
    for k in points:
        for name, values in k.buffers.items():
            key = f"{k.name}.{name}"
            buffers[key] = [a + b for a, b in zip(buffers.get(key, [0.0, 0.0]), values)]
    variants = [(precision, points)] if impl != "eager" else [("fp32", points), ("tf32", _on_tf32(points))]
    rows = [_row(network, job, impl, name, kernels, kernels_per_call=len(large),
                 triton_launches=sum(k.kind == "triton" for k in large),
                 at_batch={str(n): {**summary(ks), "bytes_per_point": _merged(ks).bytes / n}
                           for n, ks in zip(batches, (small, large))},
                 buffers_per_point={k: v for k, v in sorted(buffers.items(), key=lambda kv: -sum(kv[1]))
                                    if sum(v) > 0})
            for name, kernels in variants]
    return rows, points


NOTES = [
    "Targets (issue 12, global bytes per point: forward <= 256, training step <= 1 KB) apply to the networks of "
    "points alone: with a latent code per point, its 1 KB of input already exceeds them.",
    "Per point: the counts' difference between the two batches over the difference in points (weights read once "
    "per call drop out; weights read once per tile of points stay).",
    "Bounds: each kernel at the largest of HBM bytes / HBM bandwidth, all global bytes / L2 bandwidth, tensor "
    "FLOPs / tensor-core rate, CUDA-core instructions / their rate and sines / MUFU rate; summed over the call's "
    "kernels. Launch overheads and the optimiser are left out.",
    f"L2: a Triton kernel's traffic to an argument whose whole tensor, at {NOMINAL_BATCH:,} points, takes at most "
    f"{L2_RESIDENT_SHARE:.0%} of L2 (the weights re-read by every tile) is served by L2, less the tensor's first "
    "touch (a batch's points and outputs cross HBM once); the rest (and all of PyTorch's ops' traffic) by HBM. "
    "L2 sizes (H100 50 MB, H200 60 MB as PyTorch reports it) and the L2 bandwidth "
    f"({_L2_BANDWIDTH / 1e12:.0f} TB/s, about 2.5-3x HBM in published H100 microbenchmarks) are leads, not measured "
    "here. HBM B/pt and L2 B/pt: the H200's split of the global bytes.",
    "Dots: the kernels' products are costed on the hardware they run on: in the CPU interpreter they are IEEE dots "
    "of operands rounded to TF32 or bf16, recognised by their values, or fp16 dots (fp32 mode: three fp16 "
    "products per layer, big and small parts, three TF32 ones for a latent code's first layer and dL/dx; tf32: "
    "one; bf16: one bf16).",
    "Sines are costed on the MUFU (sin.approx); libdevice's sinf, which the kernels may compile to, costs about "
    "28 FP32 instructions each instead.",
    "eager: PyTorch ops (fastsdf.ops.siren_reference, the official SIREN's ops), input gradient by "
    "torch.autograd.grad (create_graph for the training step); fp32 = float32 products on the CUDA cores "
    "(PyTorch's default), tf32 = the same kernels with allow_tf32.",
    "fastsdf: SirenMLP with FASTSDF_BACKEND=triton; its training step runs what the backend runs when autograd "
    "records. PyTorch products in it are counted as float32 on the CUDA cores (on CUDA its tf32 mode runs the "
    "forward's hidden products in TF32). Its weight gradients are a Triton GEMM over chunks of the batch, each "
    "operand read once per 128-column tile of the other (all counted as HBM's); at the model's batches it takes one "
    "chunk, so the chunks' partial sums (about 32 B per point per width-256 layer at 2^20 points) are not counted.",
    "fastsdf (Triton 3.6): the same kernels at the tilings fastsdf takes under Triton 3.6 (the GPU machine's, which "
    "its torch 2.11 pins), shown where they count differently from the installed Triton's; counted by the installed "
    "Triton's interpreter, so only the tilings differ, not 3.6's code. Spills (local memory) are not counted for "
    "either.",
]

FLOOR_TEXT = ("floor: one kernel that keeps everything on chip (reads the points, writes the outputs), eager "
              "PyTorch's products on tensor cores at this precision (fp32: three fp16 products of scaled parts), one "
              "sine per neuron (and one cosine where a derivative is needed) on the MUFU")


def floor_rows(network: Network, job: str, eager: list[KernelCount], precisions: Sequence[str]) -> list[dict[str, Any]]:
    """The hardware floor of ``job``: what no implementation can beat by much."""
    flops = sum(sum(k.mma.values()) for k in eager)
    inputs = 4.0 * (3 + network.latent)
    outputs = {"forward": 4.0, "gradient": 4.0 + 12.0, "train": 0.0, "train_y": 0.0}[job]
    sines = (network.hidden_layers + 1) * network.hidden * (1 if job == "forward" else 2)
    rows = []
    for precision in precisions:
        kernel = KernelCount("floor", "ideal", load=inputs, store=outputs,
                             mma={{"fp32": "fp16x3"}.get(precision, precision): flops}, sines=sines)
        rows.append(_row(network, job, "floor", precision, [kernel], kernels_per_call=1, triton_launches=0))
    return rows


def _row(network: Network, job: str, impl: str, precision: str, kernels: list[KernelCount],
         **extra: Any) -> dict[str, Any]:
    row = {"network": network.key, "network_text": network.text, "job": job, "impl": impl, "precision": precision,
           **extra, "per_point": summary(kernels), "bounds": {chip.name: bound(kernels, chip) for chip in CHIPS}}
    target = TARGET_BYTES.get(job)
    if target is not None and impl.startswith("fastsdf") and not network.latent:
        row["target_bytes"] = target
        row["target_met"] = row["per_point"]["bytes"] <= target
    return row


def run_model(networks: Sequence[str], precisions: Sequence[str], batches: tuple[int, int],
              jobs: Sequence[str] = JOBS, tilings: Sequence[tuple[int, int]] = (),
              log: Callable[[str], None] = print) -> list[dict[str, Any]]:
    """The rows of every network, job and precision: fastsdf at the installed Triton's tilings, then at
    each of ``tilings``' where they count differently; eager; the floor."""
    from fastsdf.kernels.siren import launch

    installed = launch.TRITON_VERSION
    versions = list(dict.fromkeys([installed, *tilings]))
    rows = []
    for key in networks:
        network = NETWORKS[key]
        for job in jobs:
            for precision in precisions:
                counted = []
                for version in versions:
                    impl = "fastsdf" if version == installed else "fastsdf (Triton {}.{})".format(*version)
                    log(f"  {key}: {job}, {impl} {precision}")
                    with launch.tilings_of(version):
                        row = model_rows(network, job, impl, precision, fastsdf_call(network, job, precision),
                                         batches)[0][0]
                    if all(row["per_point"] != other["per_point"] for other in counted):
                        counted.append(row)
                rows += counted
            log(f"  {key}: {job}, eager")
            eager_rows, eager = model_rows(network, job, "eager", "fp32", eager_call(network, job), batches)
            rows += eager_rows + floor_rows(network, job, eager, precisions)
    return rows


# --- output ----------------------------------------------------------------------------------------------

def fmt(value: float | None) -> str:
    """About three significant digits; large values as a power of ten."""
    if value is None:
        return "-"
    if value >= 1e6:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def table_lines(rows: list[dict[str, Any]]) -> list[str]:
    """A plain-text table per network: per point, and the bound on each chip."""
    chips = " ".join(f"{chip.name:>14}" for chip in CHIPS)
    header = (f"{'job':<9} {'impl':<20} {'prec':<5} {'B/pt':>9} {'HBM B/pt':>9} {'L2 B/pt':>9} {'FLOP/pt':>9} "
              f"{'sin+cos':>8} {'kernels':>7} {chips}  {'binds (H200)':<24} target")
    lines = []
    for key in dict.fromkeys(r["network"] for r in rows):
        lines += ["", rows_of(rows, key)[0]["network_text"], "  points/s bounds below: roofline per kernel, summed",
                  header, "-" * len(header)]
        for r in rows_of(rows, key):
            p = r["per_point"]
            h200 = r["bounds"]["H200"]
            binds = f"{h200['binds']} ({100 * h200['share']:.0f}%)"
            target = ""
            if "target_met" in r:
                target = f"{'met' if r['target_met'] else 'MISSED'} (<= {r['target_bytes']} B)"
            bounds = " ".join(f"{fmt(r['bounds'][chip.name]['points_per_s']):>14}" for chip in CHIPS)
            lines.append(f"{r['job']:<9} {r['impl']:<20} {r['precision']:<5} {fmt(p['bytes']):>9} "
                         f"{fmt(h200['hbm_bytes']):>9} {fmt(h200['l2_bytes']):>9} {fmt(p['flops']):>9} "
                         f"{fmt(p['sines']):>8} {r['kernels_per_call']:>7} {bounds}  {binds:<24} {target}")
    return lines


def rows_of(rows: list[dict[str, Any]], network: str) -> list[dict[str, Any]]:
    return [r for r in rows if r["network"] == network]


def _commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=BENCH_DIR, capture_output=True, text=True,
                              check=True).stdout.strip() or None
    except (OSError, subprocess.CalledProcessError):
        return None


def write_json(path: Path, data: dict[str, Any]) -> None:
    from fastsdf.io import atomic_write

    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--networks", default=",".join(DEFAULT_NETWORKS),
                        help=f"comma-separated, of {', '.join(NETWORKS)} (default: %(default)s)")
    parser.add_argument("--precisions", default=",".join(PRECISIONS), help="fastsdf's (default: %(default)s)")
    parser.add_argument("--jobs", default=",".join(JOBS), help="(default: %(default)s)")
    parser.add_argument("--batches", default="128,256",
                        help="two batch sizes, multiples of the kernels' tile (default: %(default)s)")
    parser.add_argument("--tilings", default="{}.{}".format(*GPU_MACHINE_TRITON),
                        help="also count fastsdf at the tilings it takes under these Triton versions, where they "
                             "count differently from the installed Triton's; 'none' for none (default: %(default)s, "
                             "the GPU machine's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON to write (default: %(default)s)")
    args = parser.parse_args(argv)

    def listed(name: str, known: Sequence[str]) -> list[str]:
        values = [v.strip() for v in getattr(args, name).split(",") if v.strip()]
        unknown = [v for v in values if v not in known]
        if not values or unknown:
            parser.error(f"--{name}: unknown {unknown or 'empty list'}; known: {', '.join(known)}")
        return values

    args.networks = listed("networks", tuple(NETWORKS))
    args.precisions = listed("precisions", PRECISIONS)
    args.jobs = listed("jobs", JOBS)
    try:
        batches = tuple(int(v) for v in args.batches.split(","))
    except ValueError:
        batches = ()
    if len(batches) != 2 or not 0 < batches[0] < batches[1]:
        parser.error(f"--batches must be two increasing positive integers, got {args.batches!r}")
    args.batches = batches
    try:
        args.tilings = [] if args.tilings == "none" else [
            (int(major), int(minor)) for major, minor in (v.strip().split(".") for v in args.tilings.split(","))]
    except ValueError:
        parser.error(f"--tilings must be Triton versions like 3.6,3.8 or 'none', got {args.tilings!r}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get("FASTSDF_BACKEND") != "triton":
        raise SystemExit("run gpu_model.py as a script: it sets TRITON_INTERPRET=1 before triton is imported")
    torch.set_num_threads(1)  # the counts do not depend on it; the interpreter's numpy does the work
    print(f"counting at batches {args.batches} (Triton interpreter + PyTorch dispatcher; a model, no GPU):",
          flush=True)
    rows = run_model(args.networks, args.precisions, args.batches, args.jobs, args.tilings,
                     log=lambda line: print(line, flush=True))
    data = {
        "kind": KIND,
        "note": ("A cost model, not a measurement: counts from Triton's CPU interpreter and PyTorch's dispatcher, "
                 "bounds from peak rates (L2's size and bandwidth: leads). No GPU has measured these numbers."),
        "nominal_batch": NOMINAL_BATCH,
        "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _commit(),
        "torch": torch.__version__,
        "triton": _triton_version(),
        "tilings": [".".join(map(str, v)) for v in args.tilings],
        "batches": list(args.batches),
        "chips": [asdict(chip) for chip in CHIPS],
        "jobs": {job: JOB_TEXT[job] for job in args.jobs},
        "floor_text": FLOOR_TEXT + ".",
        "notes": NOTES,
        "rows": rows,
    }
    write_json(args.out, data)
    print("\n".join(table_lines(rows)))
    print("\n".join(["", f"- {FLOOR_TEXT}.", *(f"- {note}" for note in NOTES)]))
    print(f"\nA MODEL, NOT A MEASUREMENT (no GPU ran this). Wrote {args.out}")
    return 0


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


if __name__ == "__main__":
    sys.exit(main())
