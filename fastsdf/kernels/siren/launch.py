"""How the SIREN kernels are launched: which networks they take (``supports``), the tiling of each
launch (``Config``, measured per width, number of Jacobian columns, precision and target: ``arch``),
the groups of Jacobian columns a call launches, and the device guard every launch runs under.

Register budget (fp32 words per thread): a BLOCK_M x H tile costs BLOCK_M H / (32 num_warps); a
layer holds 2 (1 + TANGENTS) of them (inputs and accumulators) plus the chunk's operands (the
A chunk replicated over the N warps, its big/small parts, the weight chunk's, and the loads ptxas
prefetches for the next chunks, ~100-140 registers measured). Width 256, fp32 forward: BLOCK_M 32,
8 warps, 2 x 32 tile registers, 184-187 in all, no spill; BLOCK_M 64 (2 x 64) spills 180-432 B.
Small tiles cost tensor-core efficiency: sm_90's wgmma needs M >= 64 per warpgroup, so with
BLOCK_M < 64 Triton issues mma.sync (HMMA m16n8k16 for fp16, m16n8k8 for TF32), and the weights
are re-read from L2 per BLOCK_M points; spill-free was preferred to larger tiles.

Configurations of the forward (``_CONFIGS``, BLOCK_M / BLOCK_K / warps, no software pipelining of
the layer loop) measured with Triton 3.9 and its ptxas (registers / spill bytes / shared memory,
sm_80 ; sm_90), fp32 (fp16x3: ``device``) unless said:

=====  ==========  ===========  ==============================  ===============================
width  tangents    tiling       sm_80                           sm_90
=====  ==========  ===========  ==============================  ===============================
16     0 / 3       64,32 /16/4  47 / 0 / 4 KB; 80 / 0 / 2 KB    39 / 0 / 2 KB; 72 / 0 / 2 KB
32     0 / 3       64,32 /16/4  64 / 0 / 4 KB; 168 / 0 / 2 KB   48 / 0 / 2 KB; 166 / 0 / 2 KB
64     0           64/16/4      128 / 0 / 4 KB (tf32 163)       105 / 0 / 4 KB (tf32 124)
64     3           16/16/4      168 / 0 / 4 KB (tf32 166)       168 / 16 B / 4 KB (tf32 166 / 0)
128    0 / 3       32,16 /16/8  128 / 0 / 8 KB; 255 / 0 / 8 KB  128 / 0 / 8 KB; 255 / 8 B / 8 KB
256    0           32/16/8      187 / 0 / 32 KB                 184 / 0 / 32 KB
256    1 per call  16/16/8      255 / 36 B / 16 KB              255 / 96 B / 16 KB
512    0           16/16/8      182 / 0 / 32 KB                 178 / 0 / 32 KB
=====  ==========  ===========  ==============================  ===============================

fp32 took three TF32 products (tf32x3, split in the kernel) until 2026-11-30; its fp16 products
take fewer registers without tangents (tf32x3 at 256: 202 / 206, at 512 88 B of spills), a few
more with them, whose rows are scaled first (``device.scale_rows``: tf32x3's Jacobian at 256 spilled
12 / 24 B). With a 256-d latent code the first layer's loop (no longer unrolled) spills nothing
(it spilled 7-8 KB at width 256, 0.5 MB at 512). Larger tiles at 256 still spill: 64 points 432 B
(sm_80) and 180 B (sm_90, wgmma), 128 points 9 KB / 352 B. Widths 128 and 512 and the tf32/bf16
variants at 256 are compiled only with FASTSDF_COMPILE_ALL=1 (tests/test_triton_compile.py); tf32's
forward at 256 spills 24 B (with a tangent 12 B on sm_80).

The training kernels' tilings (``_BACKWARD_CONFIGS``, ``_TAPED_CONFIGS`` where they differ from the
forward's; measured by tests/test_triton_compile.py, which compiles the other precisions too), fp32,
registers / spill bytes / shared memory:

==============  ======  ========  ===========================  ===========================
kernel          width   tangents  sm_80                        sm_90
==============  ======  ========  ===========================  ===========================
backward        16      0 / 3     96/0/5 KB; 168/0/3 KB        98/0/5 KB; 164/0/3 KB
backward        32      0 / 3     164/0/8 KB; 167/0/3 KB       180/0/8 KB; 163/0/3 KB
backward        64      0 / 3     170/0/16 KB; 254/0/5 KB      255/0/16 KB; 254/0/5 KB
backward        128     0 / 3     255/0/16 KB; 255/60 B/9 KB   255/0/16 KB; 255/72 B/9 KB
backward        256     0 / 1     255/0/32 KB; 255/112 B/17 KB 255/0/32 KB; 255/60 B/17 KB
taped           128     0         191/0/16 KB                  255/0/16 KB
taped           256     0         192/0/32 KB                  193/0/32 KB
directional     16, 32  3         96/0; 168/0                  96/0; 255/0
directional     64-128  3         168/0; 255/0                 168/0; 255/0
directional     256     1         255/24 B/32 KB               255/0/32 KB
input_gradient  256     0         255/0/32 KB                  255/44 B/32 KB
==============  ======  ========  ===========================  ===========================

(the backward's tilings: those of the forward's launch with as many tangents, except 8 warps at
width 64 without tangents (BLOCK_M 64; with 4 warps it spilled 476 B on sm_90) and BLOCK_M 16 at
width 32 with 3; the taped forward's: the forward's, except BLOCK_M 32 at width 64, where 64
spilled 188 B on sm_90; forward mode over the tape's, ``network.directional_kernel``: the forward's
with one tangent fewer, its first tangent in the activations' place, so 32 points at width 256
where the taped forward that carried the activations beside a tangent took 16). At 64 points and
width 256 the backward spills 356 B on sm_90, at width 512 it spills throughout (tf32x3: 0.6-11
KB). The reverse-mode Jacobian's sweep
(``training.input_gradient``: the backward without storing dL/dz) takes the backward's tilings;
at width 256 on sm_90 it spills 44 B (at BLOCK_M 16: 174 registers, none). The Jacobian's backward
at width 256 spilled 1.5-1.6 KB in fp32 with tf32x3 (dL/da, dL/dt, their accumulators, the split's
big and small parts and the tape's z, u and derivative live at once at BLOCK_M 16), 60-112 B with
fp16 parts; in tf32 48-120 B and in bf16 up to 60 B (since it writes t = omega cos(omega z) u over
u for the weight gradients, ``training``); other tf32 variants at widths 64-256 spill 8-96 B
(tests/test_triton_compile.py's ``KNOWN_SPILLS``).

bf16 (``_BF16_CONFIGS``): ``device.operand`` keeps the tiles a layer hands to the next (and the
backward's dL/dz) in bfloat16, the products' operand type, which halves their registers with the
same numerics, so bf16 runs larger tiles where they compile without spills (BLOCK_M / warps,
BLOCK_K 16; registers / spill bytes; the rest as fp32's tilings, whose bf16 variants all compile
without spills except the training backward, which stores dL/dz, dL/du and the weight gradients'
operands in bfloat16 (``training.Deltas``; half the bytes, 74 -> 48 KB of HBM traffic a point in
the cost model's eikonal step): with one tangent at 256 144 B (sm_80) and 96 B (sm_90), where
float32 stores spilled 0 and 60 B, with 3 at 64 36 B and at 128 104 B on sm_90; tf32's backward
at width 32 spills 8 B on sm_80; forward mode over the tape takes 64 points at width 256, where the
forward's 128 spilled 856 B on sm_90):

========  =====  ========  ====================  ====================
kernel    width  tangents  sm_80                 sm_90
========  =====  ========  ====================  ====================
forward   16     0 / 3     128/4: 44/0; 118/0    128/4: 50/0; 128/0
forward   32     0 / 3     128/4 72/0; 64/4 123  128/4 70/0; 64/4 101
forward   64     0 / 3     128/8: 80/0; 249/0    128/8: 64/0; 208/0
forward   128    0         128/8: 176/0          128/8: 180/0
forward   256    0         64/8: 255/0           128/8: 255/0 (wgmma)
taped     16-32  0         128/4: 96-168/0       128/4: 124-220/0
taped     64     0         128/8: 254/0          128/8: 244/0
backward  16     0         128/4: 140/0          128/4: 146/0
backward  64     0 / 3     64/8 175/0; 32/8 231  64/8 231/0; 32/8 254
backward  128    0         32/8: 172/0           32/8: 255/0
backward  256    0         64/8: 255/0           64/8: 239/0
direct.   256    1         64/8: 255/0           64/8: 249/0
========  =====  ========  ====================  ====================

At width 256, sm_90's forward at BLOCK_M 128 (one tile per warpgroup pair, wgmma) reads the weights
once per 128 points where fp32 reads them per 32; on sm_80 BLOCK_M 128 spills 47 KB, so it takes 64.
Larger tiles spill: the forward with tangents from width 128, the taped forward from 64 at 128 points
(1 KB at width 128) and the backward at 128 points (0.5-7 KB).

The weight gradients' GEMM (``gradient_tiling``, ``parameters``): tiles of dL/dW up to 128 x 128
(fp32 on sm_80: 64 x 128), 32 points a step in 3 stages, 8 warps; compiled for every layer shape of
the networks the kernels take (widths 16-512; hidden, first of xyz or of a 259-input latent code,
output of 1 or 16; each precision): no spills, at most 96 KB of shared memory. Width 256's hidden
layer uses 255 / 242 registers in fp32 (sm_90 / sm_80), 232 / 242 in tf32, 193 / 190 in bf16
(its operands bfloat16, as the sweep leaves them; 226 / 250 from float32). fp32
keeps two tile accumulators (a step's products are scaled back before they are added), so its
128 x 128 tile spilled 496 B on sm_80; a latent code's inputs (rows not 16-aligned: loaded a value
at a time) spilled 0.5-1.3 KB at 128 outputs, hence half of them there.

Older Triton (``TRITON_VERSION``): the tables above are Triton 3.9's. A user's Triton is the one
their torch pins (torch 2.11, and the GPU machine this project measures on: 3.6), and its code
generation differs. Compiled by 3.6 and its ptxas (tests/test_triton_compile.py with Triton 3.6),
some of these tilings spill at width 256, sm_90 / sm_80: bf16's backward at 64 points 10.1 / 1.6
KB, its reverse-mode sweep 0 / 1 KB; forward mode over the tape 4.7 / 3.6 KB in bf16 at 64 points,
0.8-1 KB in fp32 and tf32 at 32; the weight gradients' 128 x 128 tile 540 B in fp32 and 120 B in
tf32 on sm_90, fp32's 64 x 128 244 B on sm_80 (the PTX spills as much with ptxas 12.9 or 13.0).
Where the version is that old they take ``_OLDER_TRITON``'s tilings: the backward at 32 points
(bf16 as fp32: no spills; 3.8 spills 632 B at 64 too), forward mode over the tape at 16 (none in
bf16, 104 B in fp32 and 60 B in tf32 on sm_90), the weight gradients' at 16 points a step in fp32
and tf32 where a tile has 64 x 64 or more (3.9's tiles: none on either target, for every layer
shape of widths 16-512; 64 x 64 tiles at 32 points, also spill-free, read each operand twice as
often: the cost model's fp32 `train_y` lost 23% to it), and bf16's forward at 64 points on
sm_90 too (wgmma still; none, where 128 spills 312 B with 3.6's ptxas 12.8 and none with 12.9 or
13.0 on the same PTX); at width 128 bf16's backward with 4 warps (none; 8 spilled 96 / 364 B).
Triton 3.8 (sm_90 measured) compiles the rest within 110 B of 3.9's spills; 3.7, not measured,
takes 3.6's tilings. 3.6's remaining spills (``KNOWN_SPILLS_3_6``) are 8-140 B at width 256,
none at 16 and 32, 8-304 B at 64 (bf16's backward with 3 tangents on sm_80), and at 128 24-400 B,
the most in the backward with 3 tangents at 16 points (bf16 400 / 196 B, fp32 176 / 112 B; bf16
with 4 warps spills 820 B).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

__all__ = ["OUT_PAD", "PRECISION_CODES", "TRITON_VERSION", "WIDTHS", "Config", "GradientTiling", "arch",
           "backward_config", "column_groups", "config", "gradient_tiling", "on_device", "supports",
           "tangents_per_launch", "tilings_of"]

# The kernels' PRECISION: 0 is tf32x3, which fp32 keeps for a latent first layer and dL/dx; its other
# products are device.FP16X3 (operands.kernel_precision).
PRECISION_CODES = {"fp32": 0, "tf32": 1, "bf16": 2}
_MAX_TANGENTS = 3  # Jacobian columns per launch
WIDTHS = (16, 32, 64, 128, 256, 512)
_MAX_OUTPUTS = 16  # the output layer is one chunk of OUT_PAD columns
OUT_PAD = tl.constexpr(16)
_MAX_INPUTS = 512
# Triton's (major, minor) version: before 3.9 some tilings take ``_OLDER_TRITON``'s.
TRITON_VERSION = tuple(int(part) for part in triton.__version__.split(".")[:2])


@dataclass(frozen=True)
class Config:
    """A tiling: points per program, rows of a weight chunk (the K of each ``tl.dot``), warps, and
    Triton's software pipelining of the loop over hidden layers (1: none; more prefetches the next
    layers' weights into shared memory, one copy of a layer's weights per stage)."""

    block_m: int
    block_k: int
    num_warps: int
    num_stages: int = 1

    @property
    def options(self) -> dict:
        return _options(self.num_warps, self.num_stages)


@dataclass(frozen=True)
class GradientTiling:
    """A tiling of the weight gradients' GEMM (``parameters``): a BLOCK_O x BLOCK_I tile of dL/dW per
    program, BLOCK_P points a step, warps, and Triton's software pipelining of the loop over the
    steps (``num_stages`` copies of a step's operands in shared memory)."""

    block_o: int
    block_i: int
    block_p: int
    num_warps: int
    num_stages: int

    @property
    def options(self) -> dict:
        return _options(self.num_warps, self.num_stages)


def _options(num_warps: int, num_stages: int) -> dict:
    """A launch's compiler options. Fused multiply-adds are asked for explicitly: Triton 3.9 warns
    that 3.10 will turn them off by default."""
    return dict(num_warps=num_warps, num_stages=num_stages, enable_fp_fusion=True)


def tangents_per_launch(width: int) -> int:
    """Jacobian columns one launch computes (each costs two tiles of registers)."""
    return _MAX_TANGENTS if width <= 128 else 1


# (width, tangent tiles) -> Config, measured by tests/test_triton_compile.py (the table above).
_CONFIGS: dict[tuple[int, int], Config] = {}
for _w in WIDTHS:
    for _t in range(tangents_per_launch(_w) + 1):
        if _w <= 32:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 32, 16, 4)
        elif _w == 64:
            _CONFIGS[_w, _t] = Config(64 if _t == 0 else 16, 16, 4)
        elif _w <= 256:
            _CONFIGS[_w, _t] = Config(32 if _t == 0 else 16, 16, 8)
        else:
            _CONFIGS[_w, _t] = Config(16, 16, 8)

# Where the training kernels need smaller tiles than the forward's (measured as the table above).
_BACKWARD_CONFIGS: dict[tuple[int, int], Config] = {(64, 0): Config(64, 16, 8), (32, 3): Config(16, 16, 4)}
_TAPED_CONFIGS: dict[tuple[int, int], Config] = {(64, 0): Config(32, 16, 4)}


def _both(block_m: int, num_warps: int) -> tuple[Config, Config]:
    return Config(block_m, 16, num_warps), Config(block_m, 16, num_warps)


# bf16 keeps the tiles between layers in bfloat16 (``device.operand``), half the registers, so it
# runs larger tiles than the tables above where they compile without spills (measured as the
# bf16 table above): (kernel, width, tangents) -> (sm_80's, sm_90's); the others are fp32's.
_BF16_CONFIGS: dict[tuple[str, int, int], tuple[Config, Config]] = {
    ("forward", 16, 0): _both(128, 4), ("forward", 32, 0): _both(128, 4), ("forward", 16, 3): _both(128, 4),
    ("forward", 32, 3): _both(64, 4), ("forward", 64, 0): _both(128, 8), ("forward", 64, 3): _both(128, 8),
    ("forward", 128, 0): _both(128, 8), ("forward", 256, 0): (Config(64, 16, 8), Config(128, 16, 8)),
    ("taped", 16, 0): _both(128, 4), ("taped", 32, 0): _both(128, 4), ("taped", 64, 0): _both(128, 8),
    ("directional", 256, 0): _both(64, 8),
    ("backward", 16, 0): _both(128, 4), ("backward", 64, 0): _both(64, 8), ("backward", 64, 3): _both(32, 8),
    ("backward", 128, 0): _both(32, 8), ("backward", 256, 0): _both(64, 8)}


# Where Triton before 3.9 spills at the tilings above (the module's docstring): (kernel, width,
# tangents, precision) -> (the newest version that needs it, sm_80's tiling, sm_90's). "backward"
# serves the reverse-mode sweep too; "directional" is keyed by its tangents beside the first.
_OLDER_TRITON: dict[tuple[str, int, int, str], tuple[tuple[int, int], Config, Config]] = {
    ("backward", 256, 0, "bf16"): ((3, 8), *_both(32, 8)), ("forward", 256, 0, "bf16"): ((3, 7), *_both(64, 8)),
    ("backward", 128, 0, "bf16"): ((3, 7), *_both(32, 4)),
    **{("directional", 256, 0, p): ((3, 7), *_both(16, 8)) for p in ("fp32", "tf32", "bf16")}}


def _older(kernel: str, width: int, tangents: int, precision: str, target: int) -> Config | None:
    entry = _OLDER_TRITON.get((kernel, width, tangents, precision))
    return None if entry is None or TRITON_VERSION > entry[0] else entry[1 + (target == 90)]


@contextlib.contextmanager
def tilings_of(version: tuple[int, int]) -> Iterator[None]:
    """Within the block the kernels take the tilings they take under Triton ``version`` (major,
    minor), whichever Triton compiles or interprets them: for comparing tilings (the benchmarks).
    Not thread-safe: it sets the module's ``TRITON_VERSION``, which every launch reads."""
    global TRITON_VERSION
    version = tuple(version)
    if len(version) != 2 or not all(isinstance(part, int) and part >= 0 for part in version):
        raise ValueError(f"tilings_of: version must be (major, minor), two non-negative ints, got {version!r}")
    saved, TRITON_VERSION = TRITON_VERSION, version
    try:
        yield
    finally:
        TRITON_VERSION = saved


def supports(weights: Sequence[torch.Tensor]) -> bool:
    """Whether the fused kernels take this network: hidden layers square, of a power-of-two width
    from 16 to 512, at most 512 inputs and at most 16 outputs."""
    width = weights[0].shape[0]
    square = all(tuple(w.shape) == (width, width) for w in weights[1:-1])
    return (square and width in WIDTHS and weights[0].shape[1] <= _MAX_INPUTS
            and weights[-1].shape[0] <= _MAX_OUTPUTS)


def arch(device: torch.device) -> int:
    """The target whose tilings a launch on ``device`` takes: 90 for sm_90 and later, 80 before; 90 on
    the CPU (Triton's interpreter, which the cost model takes for an H100/H200)."""
    if device.type != "cuda":
        return 90
    return 90 if torch.cuda.get_device_capability(device)[0] >= 9 else 80


def _bf16(kernel: str, width: int, tangents: int, target: int) -> Config | None:
    tilings = _BF16_CONFIGS.get((kernel, width, tangents))
    return None if tilings is None else tilings[target == 90]


def backward_config(width: int, tangents: int = 0, precision: str = "fp32", target: int = 90) -> Config:
    """The tiling of ``backward`` at this width, ``tangents`` Jacobian columns per launch, for
    ``target`` (``arch``)."""
    return (_older("backward", width, tangents, precision, target)
            or (precision == "bf16" and _bf16("backward", width, tangents, target))
            or _BACKWARD_CONFIGS.get((width, tangents)) or _CONFIGS[width, tangents])


def config(width: int, tangents: int, precision: str = "fp32", target: int = 90, kernel: str = "forward") -> Config:
    """The tiling the kernels run a network of this width with, ``tangents`` Jacobian columns per
    launch (0 for the forward), at ``precision`` for ``target`` (``arch``); ``kernel``: "forward",
    "taped" (the forward that writes the backward's tape) or "directional" (forward mode over the
    tape, ``tangents`` beside the first, which takes the activations' place: the forward's tiling
    with one tangent fewer)."""
    return (_older(kernel, width, tangents, precision, target)
            or (precision == "bf16" and _bf16(kernel, width, tangents, target))
            or (kernel == "taped" and _TAPED_CONFIGS.get((width, tangents))) or _CONFIGS[width, tangents])


def gradient_tiling(outputs: int, inputs: int, precision: str = "fp32", target: int = 90) -> GradientTiling:
    """The tiling of the weight gradient of a layer of ``inputs`` -> ``outputs`` at ``precision`` for
    ``target`` (``arch``): tiles of up to 128 x 128 (fp32 on sm_80: 64 x 128), 16 at least (a
    product's smallest), half as many outputs where the inputs' rows are not 16-aligned (a latent
    code's 259: loaded a value at a time); 32 points a step in 3 stages; 8 warps for a tile of 128
    inputs, 2 for a 16 x 16 tile (with 4, ptxas spilled 8-16 B on sm_80), else 4. Triton before 3.8
    takes 16 points a step in fp32 and tf32 where the tile has 64 x 64 or more (3.6 spilled
    120-540 B at 32, none at 16; a 16 x 128 tile spills at 16, not at 32)."""
    block_o = 64 if precision == "fp32" and target < 90 else 128
    if inputs % 16:
        block_o //= 2
    block_o = min(block_o, max(16, triton.next_power_of_2(outputs)))
    block_i = min(128, max(16, triton.next_power_of_2(inputs)))
    warps = 8 if block_i == 128 else 2 if block_o * block_i <= 256 else 4
    block_p = 16 if TRITON_VERSION < (3, 8) and precision != "bf16" and block_o * block_i >= 64 * 64 else 32
    return GradientTiling(block_o, block_i, block_p, warps, 3)


def column_groups(width: int, columns: int) -> list[tuple[int, int]]:
    """(first column, columns) of each launch: up to ``tangents_per_launch`` Jacobian columns each, a
    single launch of none without a Jacobian."""
    per_launch = tangents_per_launch(width)
    return [(c, min(per_launch, columns - c)) for c in range(0, columns, per_launch)] or [(0, 0)]


def on_device(t: torch.Tensor) -> contextlib.AbstractContextManager:
    """Launches on t's GPU, whichever is current (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()
