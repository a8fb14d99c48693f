"""The Triton SIREN kernels compile for real GPUs: sm_80 (A100) and sm_90 (H100/H200), no GPU needed.

Every tiling the dispatcher can choose (``fastsdf.kernels.siren.launch.config``: each width and number of
Jacobian columns per launch, each precision) is compiled with Triton's own compiler for an explicit
``GPUTarget``, and the result is checked: shared memory within the target's per-block limit, no
register spills up to width 256 (Triton's bundled ``ptxas -v`` on the PTX), and the sine on the
special function unit (``sin.approx.f32`` in the PTX, ``MUFU.SIN`` in the SASS from the bundled
``nvdisasm``); so are the kernels beside the network's (the composed path's sine, the split of fp32's
weights into fp16 parts). The other constants of the kernel (inputs, outputs, bias, a linear or sine output
layer) do not change its tiling; the tests take xyz inputs, one output and a bias, plus a latent
code's first layer (259 inputs) in the ``slow`` set.

Compilation runs in a subprocess (this file run as a script) with TRITON_INTERPRET unset, since the
kernels module reads it once at import and the interpreter tests set it, and with a temporary
Triton cache, so nothing is cached in the repository. The fast set (``_cases``) runs in the
suite: about 3.5 minutes of a core for sm_80 and sm_90 and 1.5 for Triton 3.6's sm_90 (the
width-256 kernels most of it), three processes started together (``fast_compilers``);
``FASTSDF_COMPILE_ALL=1 pytest tests/test_triton_compile.py`` compiles every other tiling too (tens
of minutes: widths >= 128 take 10-70 s each, too long for the suite), and ``python
tests/test_triton_compile.py [--slow] [--targets 80,90]`` prints the measurements as JSON lines.
The fast set is compiled for sm_90 by Triton 3.6 too, the GPU machine's (installed beside the venv's
by make test's set-up), whose code generation spills where 3.9's does not (``launch``'s docstring).

The training kernels (``training.backward_kernel``, plain and with the Jacobian's tangents, and the forward
that writes the tape, ``kernel`` "backward" and "taped"; the backward without dL/dz of the reverse-mode
Jacobian, "input_gradient"; forward mode over the tape, ``network.directional_kernel``,
"directional") are compiled the same way, six in the fast set (``FAST_TRAINING``), the rest in the
slow one; so is the weight gradients' GEMM ("weight_gradient", ``parameters``) for each
layer shape of ``GRADIENT_LAYERS``, the default network's hidden and first layers in the fast set.

Measured: the tables in ``fastsdf.kernels.siren.launch``'s docstring. Zero spills is asserted for widths
<= 256 (the weight gradients': all) except the configurations in ``KNOWN_SPILLS`` (measured bytes,
asserted not to grow): the
Jacobian's forward and backward (forward mode, tangents in registers) at widths 64-256, fp32's
reverse sweep at 256 on sm_90, a few tf32 and bf16 training kernels: the open items of issue 12.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Not imported here: Triton reads TRITON_INTERPRET when it is first imported, and the interpreter
# tests (test_siren_triton.py) set it before they import it, whichever file pytest collects first.
if importlib.util.find_spec("triton") is None:
    pytest.skip("Triton is not installed", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
# Shared memory per block a kernel may use (cudaDevAttrMaxSharedMemoryPerBlockOptin).
SHARED_LIMIT = {80: 166912, 90: 232448}
SPILLS_UP_TO = 256  # widths whose tilings must not spill
# (width, tangents, precision, arch) -> spill bytes measured (Triton 3.9, ptxas 12.9): still open.
# fp32 (fp16x3): the kernels with operands scaled per row (device.scale_rows: the tangents, the
# backward's gradients), whose row maxima and inverse scales cost a few words where the tiles fill
# the registers: the Jacobian's forward and backward with 3 columns at 64-128, 1 at 256 (the
# backward at 256 spilled 1.5-1.6 KB with tf32x3), and the reverse sweep at 256 on sm_90 (at 16
# points a tile it spills nothing: 174 registers). Scaling the sums back by the rows' and the
# weights' inverse scales one after the other (2026-12-01: their product could leave fp32's normal
# range) added 8-48 B to four of them. Forward mode over the tape ("directional", 2026-12-01: the
# taped forward with tangents before, which spilled 12-96 B at 16 points) at 32 points. At the
# 255-register edge ptxas is fickle: the backward at 128 with 3 tangents (sm_90) spills 72 or 88 B
# for the same instructions, its debug information alone telling them apart (2026-12-01).
KNOWN_SPILLS = {("forward", 64, 3, "fp32", 90): 16, ("forward", 128, 1, "fp32", 90): 12,
                ("forward", 128, 3, "fp32", 90): 8,
                ("forward", 256, 1, "fp32", 80): 36, ("forward", 256, 1, "fp32", 90): 96,
                ("backward", 128, 3, "fp32", 80): 60, ("backward", 128, 3, "fp32", 90): 88,
                ("backward", 256, 1, "fp32", 80): 112, ("backward", 256, 1, "fp32", 90): 60,
                ("input_gradient", 256, 0, "fp32", 90): 44, ("directional", 256, 1, "fp32", 80): 24,
                # tf32 and bf16 training kernels (the slow set), measured the same way; bf16's backward
                # as it stores dL/dz, dL/du and the weight gradients' operands in bfloat16 (2026-12-01:
                # 0 / 60 B at 256 before, with float32 stores, where they move twice the bytes).
                ("backward", 64, 3, "bf16", 90): 36, ("backward", 128, 3, "bf16", 90): 104,
                ("backward", 256, 1, "bf16", 80): 144, ("backward", 256, 1, "bf16", 90): 96,
                ("backward", 256, 0, "tf32", 90): 8,
                ("backward", 256, 1, "tf32", 80): 120, ("backward", 256, 1, "tf32", 90): 48,
                ("backward", 32, 0, "tf32", 80): 8, ("taped", 256, 0, "tf32", 90): 92,
                ("directional", 256, 1, "tf32", 90): 88,
                # tf32's forward at 256, found in the slow set 2026-12-01 (at 2f210d3 too, not recorded).
                ("forward", 256, 0, "tf32", 80): 24, ("forward", 256, 0, "tf32", 90): 24,
                ("forward", 256, 1, "tf32", 80): 12}
# Triton 3.6 (the GPU machine's; torch 2.11's) with its ptxas 12.8, at the tilings launch takes for it
# (``launch._OLDER_TRITON``), measured 2026-12-01: the fast and slow sets of widths 16-256 on sm_90 and
# 64-256 on sm_80 (widths 16 and 32 spill nothing on sm_90). bf16's backward at 64 with 3 tangents
# spills 260 / 0 B at 16 points and 4 warps, 304 / 84 B at its 32 and 8 (sm_80 / sm_90): left.
KNOWN_SPILLS_3_6 = {("forward", 64, 3, "fp32", 80): 8, ("forward", 256, 1, "fp32", 80): 20,
                    ("backward", 256, 0, "fp32", 80): 8, ("backward", 256, 0, "fp32", 90): 84,
                    ("input_gradient", 256, 0, "fp32", 80): 40, ("input_gradient", 256, 0, "fp32", 90): 64,
                    ("directional", 256, 1, "fp32", 90): 104,
                    # width 256's slow set
                    ("forward", 256, 0, "tf32", 90): 24, ("backward", 256, 0, "tf32", 80): 76,
                    ("backward", 256, 0, "tf32", 90): 60, ("backward", 256, 1, "fp32", 80): 104,
                    ("backward", 256, 1, "fp32", 90): 80, ("backward", 256, 1, "bf16", 80): 140,
                    ("backward", 256, 1, "bf16", 90): 56, ("taped", 256, 0, "fp32", 80): 36,
                    ("taped", 256, 0, "fp32", 90): 124, ("taped", 256, 0, "tf32", 80): 36,
                    ("taped", 256, 0, "tf32", 90): 96, ("taped", 256, 0, "bf16", 80): 24,
                    ("taped", 256, 0, "bf16", 90): 48, ("input_gradient", 256, 0, "tf32", 80): 40,
                    ("directional", 256, 1, "tf32", 90): 60,
                    # a latent code's first layer (the key has no inputs: the xyz forward's too)
                    ("forward", 256, 0, "fp32", 80): 48,
                    # widths 64 and 128
                    ("backward", 64, 3, "bf16", 80): 304, ("backward", 64, 3, "bf16", 90): 84,
                    ("forward", 128, 3, "fp32", 80): 44,
                    ("backward", 128, 0, "fp32", 80): 24, ("backward", 128, 3, "fp32", 80): 112,
                    ("backward", 128, 3, "fp32", 90): 176, ("backward", 128, 3, "bf16", 80): 196,
                    ("backward", 128, 3, "bf16", 90): 400}
_KNOWN_SPILLS = {(3, 9): KNOWN_SPILLS, (3, 6): KNOWN_SPILLS_3_6}
# Where make test's set-up installs Triton 3.6 (pip --target, beside the venv's own Triton).
GPU_MACHINE_TRITON = Path(sys.prefix) / "triton-3.6"
TARGETS = (80, 90)
PRECISIONS = ("fp32", "tf32", "bf16")
# The type the hidden and output layers' weights reach the kernels in (fp32's: fp16 parts).
_OPERAND = {"fp32": "*fp16", "tf32": "*fp32", "bf16": "*bf16"}


def _fast(width: int, tangents: int, precision: str) -> bool:
    """Widths 16, 32, 64 and the default network's 256 in fp32: the forward and the most Jacobian
    columns one launch takes; and bf16's forward at 256 (its largest tile, wgmma on sm_90)."""
    from fastsdf.kernels.siren import launch

    most = tangents in (0, launch.tangents_per_launch(width))
    fp32 = most and width in (16, 32, 64, 256) and precision == "fp32"
    return fp32 or (width, tangents, precision) == (256, 0, "bf16")


# The training kernels in the fast set (kernel, width, tangents, precision): the backward of the
# default network's width (fp32 and bf16, whose tile is 4x fp32's) and the Jacobian's backward at 64,
# the taped forward at the width whose tiling had to shrink for it (5-20 s a target), the sweep of the
# reverse-mode Jacobian (the backward without storing dL/dz) and forward mode over the tape at 256;
# the others are slow.
FAST_TRAINING = {("backward", 256, 0, "fp32"), ("backward", 256, 0, "bf16"), ("backward", 64, 3, "fp32"),
                 ("taped", 64, 0, "fp32"), ("input_gradient", 256, 0, "fp32"), ("directional", 256, 1, "fp32")}


# The weight gradients' layers at a network's width: (outputs, inputs) as functions of it, and whether
# the input is a sine (bounded): a hidden layer, the first layer of xyz and of a latent code's 259
# inputs, and output layers of 1 and 16.
GRADIENT_LAYERS = {"hidden": (lambda w: (w, w), True), "first": (lambda w: (w, 3), False),
                   "latent": (lambda w: (w, 259), False), "last": (lambda w: (1, w), True),
                   "outputs16": (lambda w: (16, w), True)}
# In the fast set: the default network's hidden and first layers in fp32.
FAST_GRADIENTS = {(256, "hidden", "fp32"), (256, "first", "fp32")}


# Each kind of kernel with every integer argument 1 (``_compiled_kernel``), at width 16: in the fast set.
ONES = [dict(width=16, tangents=0, precision="fp32", inputs=3, ones=True),
        *(dict(kernel=kernel, width=16, tangents=tangents, precision="fp32", inputs=3, ones=True)
          for kernel, tangents in (("taped", 0), ("directional", 3), ("backward", 3), ("input_gradient", 0))),
        dict(kernel="weight_gradient", width=16, layer="hidden", precision="bf16", ones=True)]


def _cases(slow: bool) -> list[dict]:
    """Fast: ``_fast``, ``FAST_TRAINING``, ``FAST_GRADIENTS`` in fp32 and ``ONES``. Slow: every other tiling,
    the training kernels (the backward, the forward that writes its tape, the weight gradients) in
    every other width and precision, and a latent code's first layer (259 inputs)."""
    from fastsdf.kernels.siren import launch

    cases = []
    for width in launch.WIDTHS:
        cases += [dict(kernel="weight_gradient", width=width, layer=layer, precision=p)
                  for layer in GRADIENT_LAYERS for p in PRECISIONS
                  if ((width, layer, p) in FAST_GRADIENTS) != slow]
        for tangents in range(launch.tangents_per_launch(width) + 1):
            cases += [dict(width=width, tangents=tangents, precision=p, inputs=3) for p in PRECISIONS
                      if _fast(width, tangents, p) != slow]
        for kernel in ("backward", "taped", "input_gradient", "directional"):
            for tangents in {"backward": (0, launch.tangents_per_launch(width)),
                             "directional": (launch.tangents_per_launch(width),)}.get(kernel, (0,)):
                cases += [dict(kernel=kernel, width=width, tangents=tangents, precision=p, inputs=3)
                          for p in PRECISIONS if ((kernel, width, tangents, p) in FAST_TRAINING) != slow]
        if slow:
            cases.append(dict(width=width, tangents=0, precision="fp32", inputs=259))
    if not slow:
        cases += ONES
    return cases


def _compile(case: dict, arch: int, workdir: str) -> dict:
    """Compile one case for sm_<arch> and measure it (runs in the subprocess)."""
    import triton

    from fastsdf.kernels.siren import launch, network, operands

    if case.get("kernel") in ("backward", "input_gradient"):
        return _compile_backward(case, arch, workdir)
    if case.get("kernel") == "weight_gradient":
        return _compile_weight_gradient(case, arch, workdir)
    if case.get("kernel") == "directional":
        return _compile_directional(case, arch, workdir)
    width, tangents, precision, inputs = case["width"], case["tangents"], case["precision"], case["inputs"]
    cfg = launch.config(width, tangents, precision, arch, case.get("kernel", "forward"))
    exact = inputs <= network.EXACT_FIRST_LAYER
    operand = _OPERAND[precision]
    signature = dict(x_ptr="*fp32", n_points="i32", y_ptr="*fp32", jac_ptr="*fp32", w_first="*fp32",
                     b_first="*fp32", w_hidden=operand, b_hidden="*fp32", w_last=operand, b_last="*fp32",
                     scales="*fp32", omega_first="fp32", omega_hidden="fp32", omega_last="fp32", hidden_layers="i32",
                     first_column="i32", jac_column="i32", tape_ptr="*fp32", tape_last_ptr="*fp32")
    constants = dict(IN=inputs, K_FIRST=inputs if exact else triton.cdiv(inputs, 32) * 32, H=width, OUT=1,
                     GRAD_COLUMNS=3, TANGENTS=tangents, SINE_LAST=False, HAS_BIAS=True, EXACT_FIRST=exact,
                     PRECISION=operands.kernel_precision(precision), TAPE=case.get("kernel") == "taped",
                     BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k, BLOCK_K_FIRST=network.BLOCK_K_FIRST)
    return _compiled(network.siren_kernel, signature, constants, cfg, case, arch, workdir)


def _compile_directional(case: dict, arch: int, workdir: str) -> dict:
    """Forward mode along given directions over the tape (``network.directional_kernel``), its first
    tangent in the activations' place: the forward's tiling with one tangent fewer."""
    from fastsdf.kernels.siren import launch, network, operands

    width, tangents, precision = case["width"], case["tangents"], case["precision"]
    cfg = launch.config(width, tangents - 1, precision, arch, "directional")
    operand = _OPERAND[precision]
    signature = dict(n_points="i32", jac_ptr="*fp32", w_hidden=operand, w_last=operand, scales="*fp32",
                     omega_first="fp32", omega_hidden="fp32", omega_last="fp32", hidden_layers="i32",
                     jac_column="i32", tape_ptr="*fp32", tape_last_ptr="*fp32", tape_u_ptr="*fp32",
                     tape_u_last_ptr="*fp32")
    constants = dict(H=width, OUT=1, GRAD_COLUMNS=3, TANGENTS=tangents - 1, SINE_LAST=False,
                     PRECISION=operands.kernel_precision(precision), BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k)
    return _compiled(network.directional_kernel, signature, constants, cfg, case, arch, workdir)


def _compile_backward(case: dict, arch: int, workdir: str) -> dict:
    """The training backward (``training.backward_kernel``) for xyz inputs and one output; as
    "input_gradient", without storing dL/dz (``training.input_gradient``)."""
    from fastsdf.kernels.siren import launch, operands, training

    width, precision, tangents = case["width"], case["precision"], case["tangents"]
    cfg = launch.backward_config(width, tangents, precision, arch)
    operand = _OPERAND[precision]
    pointers = ("dy_ptr", "dj_ptr", "dx_ptr", "tape_ptr", "tape_last_ptr", "tape_u_ptr", "tape_u_last_ptr", "delta_ptr",
                "delta_last_ptr", "delta_u_ptr", "delta_u_last_ptr", "w_first")
    signature = dict({name: "*fp32" for name in pointers}, n_points="i32", w_hidden=operand, w_last=operand,
                     scales="*fp32", omega_first="fp32", omega_hidden="fp32", omega_last="fp32", hidden_layers="i32",
                     jac_column="i32")
    # fp32 and tf32: a later launch of the Jacobian's columns (FIRST False), which adds to the earlier
    # ones' results, the larger kernel. bf16: the launch that sweeps them all (a network of one
    # output), whose dL/dz and dL/du are bfloat16 (``training.backward``).
    first = tangents == 0 or precision == "bf16"
    if precision == "bf16" and case["kernel"] == "backward":
        signature.update(delta_ptr="*bf16", delta_u_ptr="*bf16")
    constants = dict(IN=3, IN_PAD=16, H=width, OUT=1, GRAD_COLUMNS=3, TANGENTS=tangents, FIRST=first,
                     SINE_LAST=False, NEED_DX=True, DELTAS=case["kernel"] == "backward",
                     STORE_A=case["kernel"] == "backward", STORE_T=case["kernel"] == "backward",
                     PRECISION=operands.kernel_precision(precision), BLOCK_M=cfg.block_m, BLOCK_K=cfg.block_k)
    return _compiled(training.backward_kernel, signature, constants, cfg, case, arch, workdir)


def _compile_weight_gradient(case: dict, arch: int, workdir: str) -> dict:
    """The weight gradient's GEMM (``parameters.weight_gradient_kernel``) of a layer of
    ``GRADIENT_LAYERS`` with dL/db and tangent planes (a loop the kernel always has); the split is
    the y program id."""
    from fastsdf.kernels.siren import launch, operands, parameters

    shape, bounded = GRADIENT_LAYERS[case["layer"]]
    outputs, inputs = shape(case["width"])
    tiling = launch.gradient_tiling(outputs, inputs, case["precision"], arch)
    operand = "*bf16" if case["precision"] == "bf16" else "*fp32"  # bf16's operands as the sweep leaves them
    signature = dict({name: operand for name in ("d_ptr", "a_ptr", "du_ptr", "t_ptr")}, partial_ptr="*fp32",
                     bias_ptr="*fp32", n_points="i32", chunk="i32", planes="i32", du_plane="i64", t_plane="i64")
    # bf16's rows as its sweep leaves them: in the first half of float32 rows.
    rows = 2 if case["precision"] == "bf16" else 1
    constants = dict(OUT=outputs, IN=inputs, D_ROW=outputs * rows, A_ROW=inputs * rows, DU_ROW=outputs * rows,
                     T_ROW=inputs * rows, BOUNDED=bounded, BIAS=True,
                     PRECISION=operands.kernel_precision(case["precision"]), BLOCK_O=tiling.block_o,
                     BLOCK_I=tiling.block_i, BLOCK_P=tiling.block_p)
    compiled = _compiled_kernel(parameters.weight_gradient_kernel, signature, constants, tiling.options, arch,
                                case.get("ones", False))
    return {**case, **_measure(compiled, arch, workdir, "y"), "arch": arch, "block_o": tiling.block_o,
            "block_i": tiling.block_i, "num_warps": tiling.num_warps}


def _compiled(kernel, signature: dict, constants: dict, cfg, case: dict, arch: int, workdir: str) -> dict:
    """``kernel`` compiled for sm_``arch`` at ``constants`` and ``cfg``'s warps and stages, measured."""
    compiled = _compiled_kernel(kernel, signature, constants, cfg.options, arch, case.get("ones", False))
    return {**case, **_measure(compiled, arch, workdir), "arch": arch, "block_m": cfg.block_m,
            "block_k": cfg.block_k, "num_warps": cfg.num_warps}


def _compiled_kernel(kernel, signature: dict, constants: dict, options: dict, arch: int, ones: bool = False):
    """``kernel`` compiled; with ``ones`` every integer argument 1, which Triton's launcher turns into a
    constant (a Python int in the kernel: a batch of one point, one plane, a unit stride)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if ones:
        constants = {**constants, **{name: 1 for name, kind in signature.items() if kind in ("i32", "i64")}}
    signature = {**signature, **{name: "constexpr" for name in constants}}
    return triton.compile(ASTSource(kernel, signature, constants), target=GPUTarget("cuda", arch, 32), options=options)


def _measure(compiled, arch: int, workdir: str, split_axis: str = "x") -> dict:
    from triton.backends.nvidia.compiler import get_ptxas

    from fastsdf.kernels.siren import launch

    ptx = compiled.asm["ptx"]
    source = Path(workdir) / "kernel.ptx"
    source.write_text(ptx)
    ptxas = get_ptxas(arch).path
    log = subprocess.run([ptxas, "-v", f"--gpu-name=sm_{arch}{'a' if arch == 90 else ''}", str(source), "-o",
                          str(source.with_suffix(".cubin"))], capture_output=True, text=True, check=True).stderr
    registers = int(re.search(r"Used (\d+) registers", log).group(1))
    spills = sum(int(v) for v in re.findall(r"(\d+) bytes spill (?:stores|loads)", log))
    cubin = Path(workdir) / "compiled.cubin"
    cubin.write_bytes(compiled.asm["cubin"])
    nvdisasm = Path(ptxas).with_name("nvdisasm")
    sass = subprocess.run([str(nvdisasm), str(cubin)], capture_output=True, text=True).stdout
    # 64-bit offsets: the program id that scales by the batch (``split_axis``'s) is widened first.
    ttir = compiled.asm["ttir"]
    pid = re.search(rf"(%\S+) = tt.get_program_id {split_axis} : i32", ttir).group(1)
    return dict(triton=list(launch.TRITON_VERSION), registers=registers, spill_bytes=spills,
                shared=compiled.metadata.shared, sin_approx="sin.approx.f32" in ptx, mufu_sin="MUFU.SIN" in sass,
                cos_approx="cos.approx.f32" in ptx, mufu_cos="MUFU.COS" in sass, sass_read=bool(sass),
                pid_int64=f"arith.extsi {pid} : i32 to i64" in ttir)


def _other_kernels(arch: int, workdir: str) -> list[dict]:
    """The kernels beside the network's: the composed path's sine (``elementwise.sincos_kernel``) and
    the split of fp32's weights (``operands.split_kernel``, at width 256)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from fastsdf.kernels.siren import elementwise, operands

    sources = {"sincos": ASTSource(elementwise.sincos_kernel, dict(z_ptr="*fp32", s_ptr="*fp32", c_ptr="*fp32",
                                                                    n="i64", omega="fp32", BLOCK="constexpr"),
                                   dict(BLOCK=elementwise.SINCOS_BLOCK)),
               "split": ASTSource(operands.split_kernel, dict(w_ptr="*fp32", parts_ptr="*fp16", inverse_ptr="*fp32",
                                                               SIZE="constexpr", COLUMNS="constexpr",
                                                               BLOCK="constexpr"),
                                  dict(SIZE=256 * 256, COLUMNS=256, BLOCK=operands.SPLIT_BLOCK))}
    options = {"sincos": dict(enable_fp_fusion=True), "split": operands.SPLIT_OPTIONS}
    return [{"kernel": name, **_measure(triton.compile(source, target=GPUTarget("cuda", arch, 32),
                                                       options=options[name]), arch, workdir),
             "arch": arch} for name, source in sources.items()]


class _Compiler:
    """The cases compiled in a subprocess for ``targets`` by the Triton in ``site`` (a pip --target
    folder put first on the path) or else the installed one: started at once, its results read by
    ``results``."""

    def __init__(self, slow: bool, site: Path | None = None, targets: tuple[int, ...] = TARGETS) -> None:
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        if site is not None:
            env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(site), env.get("PYTHONPATH"))))
        self._workdir = tempfile.TemporaryDirectory()
        work = Path(self._workdir.name)
        env["TRITON_CACHE_DIR"] = str(work / "cache")
        # Files, not pipes: a full pipe would stop the compiler until its results are read.
        self._out, self._err = open(work / "stdout", "w+"), open(work / "stderr", "w+")
        arguments = [*(["--slow"] if slow else []), "--targets", ",".join(map(str, targets))]
        self._process = subprocess.Popen([sys.executable, __file__, *arguments], cwd=ROOT, env=env,
                                         stdout=self._out, stderr=self._err, text=True)

    def results(self) -> list[dict]:
        returncode = self._process.wait()
        self._out.seek(0)
        self._err.seek(0)
        stdout, stderr = self._out.read(), self._err.read()
        self.close()
        assert returncode == 0, stderr[-4000:]
        return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]

    def close(self) -> None:
        """Stops the compiler if it still runs (its results never read) and removes its files."""
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._out.close()
        self._err.close()
        self._workdir.cleanup()


@pytest.fixture(scope="module")
def fast_compilers(request: pytest.FixtureRequest) -> Iterator[dict[str, _Compiler]]:
    """The fast set's compilations the selected tests need (sm_80 and sm_90 by the installed Triton,
    sm_90 by the GPU machine's), all started by the first of those tests: one after another they took
    five minutes of the suite's time, overlapped on two cores about half of that."""
    selected = {item.originalname for item in request.session.items}
    compilers = {}
    if test_every_tiling_compiles_for_sm80_and_sm90.__name__ in selected:
        compilers |= {str(arch): _Compiler(False, targets=(arch,)) for arch in TARGETS}
    if test_every_tiling_compiles_for_sm90_with_the_gpu_machines_triton.__name__ in selected \
            and GPU_MACHINE_TRITON.is_dir():
        compilers["3.6"] = _Compiler(False, GPU_MACHINE_TRITON, (90,))
    yield compilers
    for compiler in compilers.values():
        compiler.close()


def _check(results: list[dict]) -> None:
    assert results
    for r in results:
        assert r["shared"] <= SHARED_LIMIT[r["arch"]], r
        if r.get("width", 0) <= SPILLS_UP_TO or r.get("kernel") == "weight_gradient":
            key = (r.get("kernel", "forward"), r.get("width"), r.get("tangents"), r.get("precision"), r["arch"])
            known = _KNOWN_SPILLS.get(tuple(r["triton"]), KNOWN_SPILLS).get(key, 0)
            assert r["spill_bytes"] <= known, r
        assert r["pid_int64"], r
        if r.get("kernel") in ("split", "weight_gradient"):
            continue
        # The backward and forward mode over the tape need the cosine only.
        sine = "cos" if r.get("kernel") in ("backward", "input_gradient", "directional") else "sin"
        assert r[f"{sine}_approx"], r
        if r["sass_read"]:
            assert r[f"mufu_{sine}"], r


def test_older_triton_takes_the_tilings_it_compiles_without_spills(monkeypatch: pytest.MonkeyPatch) -> None:
    """``launch._OLDER_TRITON`` and the weight gradients' smaller tiles apply up to the versions they
    were measured for, and 3.9 keeps its own tilings."""
    from fastsdf.kernels.siren import launch

    def tilings() -> tuple:
        return (launch.config(256, 0, "bf16", 90).block_m, launch.backward_config(256, 0, "bf16", 90).block_m,
                launch.backward_config(128, 0, "bf16", 80).num_warps,
                launch.config(256, 0, "bf16", 80, "directional").block_m,
                launch.config(256, 0, "fp32", 90, "directional").block_m,
                launch.gradient_tiling(256, 256, "fp32", 90).block_p,
                launch.gradient_tiling(256, 256, "tf32", 80))

    newest = launch.GradientTiling(128, 128, 32, 8, 3)
    older = launch.GradientTiling(128, 128, 16, 8, 3)
    for version, want in (((3, 6), (64, 32, 4, 16, 16, 16, older)), ((3, 7), (64, 32, 4, 16, 16, 16, older)),
                          ((3, 8), (128, 32, 8, 64, 32, 32, newest)), ((3, 9), (128, 64, 8, 64, 32, 32, newest))):
        monkeypatch.setattr(launch, "TRITON_VERSION", version)
        assert tilings() == want, version


def test_every_tiling_compiles_for_sm80_and_sm90(fast_compilers: dict[str, _Compiler]) -> None:
    results = [r for arch in TARGETS for r in fast_compilers[str(arch)].results()]
    assert len(results) == len(TARGETS) * (len(_cases(False)) + 2)
    _check(results)


@pytest.mark.skipif(not GPU_MACHINE_TRITON.is_dir(),
                    reason=f"Triton 3.6 is not in {GPU_MACHINE_TRITON} (make test's set-up installs it there)")
def test_every_tiling_compiles_for_sm90_with_the_gpu_machines_triton(fast_compilers: dict[str, _Compiler]) -> None:
    """The fast set for sm_90 by Triton 3.6, which the GPU machine (an H200) and torch 2.11 run: its code
    generation spills where 3.9's does not, so launch picks other tilings for it, and what
    ``make gpu-check`` measures is checked here."""
    results = fast_compilers["3.6"].results()
    assert {tuple(r["triton"]) for r in results} == {(3, 6)}
    assert len(results) == len(_cases(False)) + 2
    _check(results)


@pytest.mark.skipif(os.environ.get("FASTSDF_COMPILE_ALL") != "1",
                    reason="every other tiling: tens of minutes; FASTSDF_COMPILE_ALL=1 runs it")
def test_the_other_tilings_compile_for_sm80_and_sm90() -> None:
    results = _Compiler(slow=True).results()
    assert len(results) == len(TARGETS) * (len(_cases(True)) + 2)
    _check(results)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    assert os.environ.get("TRITON_INTERPRET") != "1"
    targets = TARGETS
    if "--targets" in sys.argv:
        targets = tuple(int(arch) for arch in sys.argv[sys.argv.index("--targets") + 1].split(","))
    with tempfile.TemporaryDirectory() as workdir:
        for arch in targets:
            for result in _other_kernels(arch, workdir):
                print(json.dumps(result), flush=True)
            for case in _cases("--slow" in sys.argv):
                print(json.dumps(_compile(case, arch, workdir)), flush=True)
