"""The GPU benchmarks of ``make gpu-check``: a few minutes on one GPU, every number in one JSON file.

    siren-cuda-forward{n}    SIREN 3 -> 256 x 4 -> 1 at n = 2^18 .. 2^22 points, no gradient: PyTorch
                             eager (the official SIREN), torch.compile of it, fastsdf fp32 / tf32 / bf16
    siren-cuda-gradient{n}   the network and its input gradient: autograd vs forward_with_gradient
    siren-cuda-train{n}      one Adam step of L1 + eikonal: eager (autograd.grad with create_graph) vs fastsdf
    marching_cubes-cuda-{n}  fastsdf.marching_cubes of a sphere's SDF sampled on n^3, n = 512, 1024
    mesh_sdf-cuda-icosphere20k  fastsdf.MeshSDF at 1M points (half uniform, half near the surface),
                             each sign mode
    siren-cuda-tilings-{job}{n}  (part ``tilings``, not run by default) SirenMLP 3 -> 256 x 4 -> 1's fused
                             kernels at the tilings the installed Triton takes and at another version's
                             (3.9's under an older Triton, 3.6's under 3.9), rounds interleaved, at 2^20
                             points: forward, gradient, train (L1 + eikonal) and train_y (L1), no optimiser

The workloads and peers are those of the pytest-benchmark suite (benchmarks/test_bench_*.py), timed
here with CUDA events around each call: warm-up calls first (compilation, caches), then rounds
that rotate over enough copies of the input (fresh random values, never zeros) to exceed the GPU's
L2 several times, so no round reads its input from L2; median, interquartile range and minimum.
Outputs are checked before timing: SIREN outputs against a float64 evaluation of the same network
(relative 2-norm error), marching cubes against the CPU module's mesh size, MeshSDF against the CPU
module's exact distances. ``--budget`` seconds are shared out between the parts; what does not fit
is listed as skipped, as is what runs out of GPU memory.

The JSON has pytest-benchmark's layout, so ``benchmarks/make_results.py`` renders it into
RESULTS.md beside the CPU tables. A table is printed last.

``--dry-run`` runs the same code on the CPU with tiny sizes to test this script without a GPU. Its
numbers are not GPU numbers: its groups are named ``*-dryrun-*``, every row says DRY RUN, it
refuses to write under benchmarks/results/, and make_results.py skips its files.

    python benchmarks/gpu_bench.py                            # on a GPU: benchmarks/results/gpu.json
    python benchmarks/gpu_bench.py --dry-run --out /tmp/dry.json
    python benchmarks/gpu_bench.py --parts tilings --budget 120 --out benchmarks/results/gpu_tilings.json
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import gc
import json
import math
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
DEFAULT_OUT = RESULTS_DIR / "gpu.json"
if __name__ == "__main__" and "--dry-run" in sys.argv:
    # The tilings part's dry run runs the Triton kernels in Triton's CPU interpreter, which must be
    # chosen before triton is imported (torch imports it).
    os.environ.setdefault("TRITON_INTERPRET", "1")
for _path in (ROOT / "tests", BENCH_DIR, ROOT):  # this checkout's fastsdf, installed or not
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fastsdf  # noqa: E402
from fastsdf.io import atomic_write  # noqa: E402

DRY_RUN_NOTE = "CPU DRY RUN of benchmarks/gpu_bench.py: NOT GPU NUMBERS, only a test of the script."
SIREN_SIZES = tuple(2**k for k in range(18, 23))
MC_SIZES = (512, 1024)
MESH_POINTS = 1_000_000
TILINGS_POINTS = 2**20
DRY = {"siren": (256, 512), "marching_cubes": (24, 32), "mesh_sdf": 2_000, "tilings": 131}
PARTS = ("siren", "marching_cubes", "mesh_sdf")  # the default's, make gpu-check's
KNOWN_PARTS = (*PARTS, "tilings")
# Of the budget left when a part starts.
SHARES = {"siren": 0.7, "marching_cubes": 0.12, "mesh_sdf": 0.18, "tilings": 1.0}
PRECISIONS = ("fp32", "tf32", "bf16")
CHECK_POINTS = 65_536  # SIREN outputs checked against float64 on this many points
L2_MULTIPLE = 2  # the rotated inputs hold at least this many times the L2 cache
MAX_COPIES = 64
TARGET_S = 0.4  # timed rounds per peer and size: about this long, 5 to 25 rounds
# Relative errors above these (per precision) are flagged SUSPECT in the summary: fp32 lands far
# under 1e-3, TF32 and bf16 products lose more, magnified by omega_0 through the layers.
SUSPECT = {"fp32": 1e-3, "tf32": 3e-2, "bf16": 1e-1}


# --- timing ----------------------------------------------------------------------------------------

class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


@dataclass
class Bench:
    """Where results and skips go; knows the device and whether this is a dry run."""

    device: str
    dry_run: bool
    out: Path | None = None  # rewritten after every result, so that a run killed midway keeps its numbers
    results: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    started: str = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat())

    @property
    def kind(self) -> str:
        return "dryrun" if self.dry_run else "cuda"

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def l2_bytes(self) -> int:
        if self.device != "cuda":
            return 32 * 2**20
        return int(getattr(torch.cuda.get_device_properties(0), "L2_cache_size", 60 * 2**20))

    def copies(self, nbytes: int) -> int:
        """Inputs of ``nbytes`` to rotate over so that together they exceed the L2 several times."""
        most = 2 if self.dry_run else MAX_COPIES  # a dry run only needs the rotation to happen
        return max(1, min(most, math.ceil(L2_MULTIPLE * self.l2_bytes() / max(nbytes, 1))))

    def time(self, call: Callable[[Any], Any], inputs: Sequence[Any], deadline: Deadline) -> dict[str, Any] | None:
        """Warm-up, then timed rounds rotating over ``inputs``; None where the deadline leaves no room."""
        start = time.perf_counter()
        call(inputs[0])  # compiles, uploads, warms caches
        self.sync()
        first = time.perf_counter() - start
        start = time.perf_counter()
        call(inputs[1 % len(inputs)])
        self.sync()
        one = time.perf_counter() - start
        rounds = self.rounds_for(one, deadline)
        return None if rounds is None else stats_of(self._rounds(call, inputs, rounds), first)

    def rounds_for(self, one: float, deadline: Deadline) -> int | None:
        """Timed rounds of a call that took ``one`` second: about TARGET_S of them, 5 to 25, fewer
        (at least 3) where the deadline is near; None where not even 3 fit."""
        target = TARGET_S / 10 if self.dry_run else TARGET_S  # a dry run tests the code, not the times
        rounds = int(max(5, min(25, target / max(one, 1e-6))))
        if rounds * one > deadline.left():
            rounds = int(deadline.left() / max(one, 1e-6))
        return rounds if rounds >= 3 else None

    def _rounds(self, call: Callable[[Any], Any], inputs: Sequence[Any], rounds: int) -> list[float]:
        if self.device != "cuda":
            seconds = []
            for r in range(rounds):
                start = time.perf_counter()
                call(inputs[r % len(inputs)])
                seconds.append(time.perf_counter() - start)
            return seconds
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(rounds)]
        for r, (begin, end) in enumerate(events):
            begin.record()
            call(inputs[r % len(inputs)])
            end.record()
        torch.cuda.synchronize()
        return [begin.elapsed_time(end) / 1e3 for begin, end in events]

    def record(self, group: str, key: str, stats: dict[str, Any], extra: dict[str, Any]) -> None:
        extra = {"device": self.device, "threads": None if self.device == "cuda" else torch.get_num_threads(),
                 **extra}
        if self.dry_run:
            extra["dry_run"] = True
            extra["peer"] = f"{extra.get('peer', key)} [DRY RUN]"
            extra["notes"] = [DRY_RUN_NOTE, *extra.get("notes", [])]
        elif self.device == "cuda":
            extra["gpu"] = torch.cuda.get_device_name()
        self.results.append({"group": group, "name": f"{key}", "fullname": f"gpu_bench.py::{group}::{key}",
                             "params": {"key": key}, "extra_info": extra, "stats": stats})
        self.save()

    def save(self) -> None:
        """Writes what has been measured so far (nothing before the first result)."""
        if self.out is None or not self.results:
            return
        data = {"machine_info": machine_info(self), "commit_info": commit_info(), "datetime": self.started,
                "version": "gpu_bench.py", "benchmarks": self.results, "skipped": self.skipped,
                "errors": self.errors}
        if self.dry_run:
            data["dry_run"] = True
        write_json(self.out, data)

    def attempt(self, what: str, run: Callable[[], None]) -> bool:
        """Runs one measurement; out of memory and errors are recorded, not raised. False on failure."""
        try:
            run()
            return True
        except torch.cuda.OutOfMemoryError:
            self.skipped.append({"what": what, "why": "out of GPU memory"})
        except Exception as exc:  # noqa: BLE001 - one failing peer must not stop the rest
            self.errors.append({"what": what, "error": f"{type(exc).__name__}: {exc}",
                                "traceback": traceback.format_exc(limit=6)})
            print(f"error in {what}: {type(exc).__name__}: {exc}", flush=True)
        finally:
            gc.collect()
            if self.device == "cuda":
                torch.cuda.empty_cache()
        return False


def stats_of(seconds: Sequence[float], first_call_s: float) -> dict[str, Any]:
    """pytest-benchmark's statistics of the timed rounds, and how long the first (warm-up) call took."""
    q1, median, q3 = np.percentile(seconds, [25, 50, 75])
    return {"median": float(median), "iqr": float(q3 - q1), "min": float(np.min(seconds)),
            "max": float(np.max(seconds)), "mean": float(np.mean(seconds)), "stddev": float(np.std(seconds)),
            "rounds": len(seconds), "iterations": 1, "first_call_s": first_call_s}


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    """||out - ref|| / ||ref|| in float64; NaN anywhere gives inf."""
    out, ref = out.detach().double().reshape(-1), ref.detach().double().reshape(-1).to(out.device)
    if not torch.isfinite(out).all():
        return math.inf
    return float(torch.linalg.vector_norm(out - ref) / torch.linalg.vector_norm(ref))


# --- SIREN -----------------------------------------------------------------------------------------------

def siren(bench: Bench, sizes: Sequence[int], deadline: Deadline) -> None:
    """Each job in turn with its share of the time; within a job, the most telling measurements
    first (fastsdf fp32 and the peer it must beat, at the largest and middle sizes), torch.compile
    (slow to compile) last, so that a short budget loses the least."""
    import test_bench_siren as suite

    official = suite._official(bench.device)
    reference = suite._official(bench.device).double()
    jobs = {"forward": 0.35, "gradient": 0.3, "train": 0.35}
    order = sorted(sizes, key=lambda n: (n != max(sizes), n != sorted(sizes)[len(sizes) // 2], -n))
    for i, job in enumerate(jobs):
        job_deadline = Deadline(deadline.left() * jobs[job] / sum(list(jobs.values())[i:]))
        peers = _siren_peers(job, official, bench)
        tasks = sorted(((key, n) for key in peers for n in order),
                       key=lambda task: (_SIREN_ROUND[_SIREN_TIER.get(task[0], 2)], order.index(task[1]),
                                         _SIREN_TIER.get(task[0], 2)))
        out_of_memory: dict[str, int] = {}  # key -> the smallest size that ran out of memory
        for key, n in tasks:
            what = f"siren {job} {key} at {n:,} points"
            if n >= out_of_memory.get(key, math.inf):
                bench.skipped.append({"what": what, "why": f"out of GPU memory at {out_of_memory[key]:,} points"})
            elif job_deadline.left() <= _SIREN_NEEDS_S.get(key, 0):
                bench.skipped.append({"what": what, "why": "time budget"})
            elif not bench.attempt(what, lambda: _siren_one(bench, suite, reference, job, key, n, peers[key],
                                                           job_deadline, what)):
                if bench.skipped and bench.skipped[-1]["what"] == what:
                    out_of_memory[key] = min(n, out_of_memory.get(key, n))


# Order within a job: fastsdf fp32 then the peer it must beat, size by size; then the other
# precisions at every size; then torch.compile.
_SIREN_TIER = {"fastsdf-fp32": 0, "eager": 1, "autograd": 1, "compile": 3}  # others 2
_SIREN_ROUND = {0: 0, 1: 0, 2: 1, 3: 2}
_SIREN_NEEDS_S = {"compile": 45.0}  # torch.compile's first call compiles: start it only with this much left


def _siren_one(bench: Bench, suite: Any, reference: Any, job: str, key: str, n: int, peer: tuple,
               deadline: Deadline, what: str) -> None:
    name, version, make, extra = peer
    pool = [torch.rand(n, 3, device=bench.device) * 2 - 1 for _ in range(bench.copies(n * 3 * 4))]
    call = make()
    check = _siren_reference(reference, pool[0][:CHECK_POINTS], job)
    errors = _siren_errors(call, pool[0][:CHECK_POINTS], check, job)
    stats = bench.time(call, pool, deadline)
    if stats is None:
        bench.skipped.append({"what": what, "why": "time budget"})
        return
    bench.record(f"siren-{bench.kind}-{job}{n}", f"{key}-{n}", stats, {
        "peer": name, "version": version, "points": n, **extra, **errors,
        "input": f"{suite.NETWORK_TEXT}; {_JOB_TEXT[job]} at {n:,} points uniform in [-1, 1]^3 "
                 f"({len(pool)} inputs rotated)"})


_JOB_TEXT = {"forward": "the network, no gradient recorded", "gradient": "the network and its input gradient",
             "train": "one Adam step of L1 + eikonal"}


def _siren_peers(job: str, official: Any, bench: Bench) -> dict[str, tuple[str, str, Callable[[], Callable], dict]]:
    """key -> (peer, version, make() -> call(x), extra_info) for ``job``."""
    import test_bench_siren as suite

    ours_version = fastsdf.__version__
    torch_version = torch.__version__
    peers: dict[str, tuple[str, str, Callable[[], Callable], dict]] = {}
    if job == "forward":
        peers["eager"] = ("PyTorch eager", torch_version, lambda: _no_grad(official.net), {})
        if not bench.dry_run:
            peers["compile"] = ("torch.compile", torch_version,
                                lambda: _no_grad(torch.compile(official.net, dynamic=True)),
                                {"notes": ["torch.compile(dynamic=True): compiled once, in the untimed warm-up."]})
        for p in PRECISIONS:
            peers[f"fastsdf-{p}"] = ("fastsdf", ours_version, lambda p=p: _no_grad(suite._ours(official, p)),
                                     {"variant": p, "compare_with": "fp32"})
    elif job == "gradient":
        def autograd() -> Callable:
            def call(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
                y, coords = official(x)
                return y, torch.autograd.grad(y, coords, torch.ones_like(y))[0]
            return call

        peers["autograd"] = ("PyTorch autograd", torch_version, autograd, {})
        for p in PRECISIONS:
            peers[f"fastsdf-{p}"] = ("fastsdf", ours_version,
                                     lambda p=p: _no_grad(suite._ours(official, p).forward_with_gradient),
                                     {"variant": p, "compare_with": "fp32"})
    else:
        peers["eager"] = ("PyTorch eager (autograd.grad, create_graph)", torch_version,
                          lambda: suite._train_step("eager", _fresh(official, bench))[0], {})
        for p in PRECISIONS:
            peers[f"fastsdf-{p}"] = ("fastsdf", ours_version,
                                     lambda p=p: suite._train_step("fastsdf", _fresh(official, bench), p)[0],
                                     {"variant": p, "compare_with": "fp32"})
    if job != "forward" and not bench.dry_run:
        from fastsdf.ops import siren_triton

        for p in PRECISIONS:
            if not siren_triton.jacobian_pays(p):
                make = peers[f"fastsdf-{p}"][2]
                peers[f"fastsdf-{p}-fused"] = (
                    "fastsdf", ours_version, lambda make=make: _fused(make()),
                    {"variant": f"{p} fused", "compare_with": "fp32",
                     "notes": ["FASTSDF_BACKEND=triton: the fused kernels, where the dispatcher takes the composed "
                               "path in this precision until they are measured faster."]})
    return peers


def _fused(call: Callable) -> Callable:
    """``call`` under FASTSDF_BACKEND=triton (the dispatcher reads it at every call)."""
    def run(x: torch.Tensor) -> Any:
        with _fastsdf_backend("triton"):
            return call(x)
    return run


@contextlib.contextmanager
def _fastsdf_backend(name: str) -> Iterator[None]:
    """FASTSDF_BACKEND=``name`` within the block."""
    saved = os.environ.get("FASTSDF_BACKEND")
    os.environ["FASTSDF_BACKEND"] = name
    try:
        yield
    finally:
        if saved is None:
            del os.environ["FASTSDF_BACKEND"]
        else:
            os.environ["FASTSDF_BACKEND"] = saved


def _fresh(official: Any, bench: Bench) -> Any:
    """A copy of the official network to train (each peer steps its own)."""
    import test_bench_siren as suite

    copy = suite._official(bench.device)
    copy.load_state_dict(official.state_dict())
    return copy


def _no_grad(fn: Callable) -> Callable:
    def call(x: torch.Tensor) -> Any:
        with torch.no_grad():
            return fn(x)
    return call


def _siren_reference(reference: Any, x: torch.Tensor, job: str) -> tuple[torch.Tensor, torch.Tensor | None] | None:
    """The float64 network (and input gradient) at x; None for the training step."""
    if job == "train":
        return None
    x64 = x.double().requires_grad_(job == "gradient")
    y, coords = reference(x64)
    if job == "forward":
        return y.detach(), None
    return y.detach(), torch.autograd.grad(y, coords, torch.ones_like(y))[0]


def _siren_errors(call: Callable, x: torch.Tensor, check: Any, job: str) -> dict[str, Any]:
    if check is None:
        return {}
    out = call(x)
    if job == "forward":
        return {"rel_error_y": relative_error(out[0] if isinstance(out, tuple) else out, check[0])}
    y, jacobian = out
    return {"rel_error_y": relative_error(y, check[0]), "rel_error_grad": relative_error(jacobian, check[1])}


# --- tilings: the installed Triton's against another version's -----------------------------------------

# Jobs and precisions, the most telling first (the budget cuts the tail): bf16's forward and each
# precision's training steps, where Triton 3.6's tilings differ most from 3.9's.
TILINGS_ORDER = (("forward", "bf16"), ("train", "fp32"), ("train", "bf16"), ("train", "tf32"), ("train_y", "fp32"),
                 ("train_y", "bf16"), ("train_y", "tf32"), ("gradient", "bf16"), ("gradient", "fp32"),
                 ("gradient", "tf32"), ("forward", "fp32"), ("forward", "tf32"))


# A pair first compiles its kernels at both tilings (tens of seconds, however long the rounds): one
# starts only with this much of the part's time left.
_TILINGS_NEEDS_S = 20.0


def _job_tilings(job: str, precision: str, target: int) -> tuple:
    """The tilings the kernels of ``job`` take at width 256 (``fastsdf.kernels.siren.launch``): the
    forward's; the taped forward and the reverse sweep of the input gradient and of both training
    steps; the weight gradients' of a hidden layer in training; forward mode over the tape in the
    eikonal step."""
    from fastsdf.kernels.siren import launch

    if job == "forward":
        return (launch.config(256, 0, precision, target),)
    tilings = (launch.config(256, 0, precision, target, "taped"), launch.backward_config(256, 0, precision, target))
    if job != "gradient":
        tilings += (launch.gradient_tiling(256, 256, precision, target),)
    if job == "train":
        tilings += (launch.config(256, 0, precision, target, "directional"),)
    return tilings


def _tilings_job(model: Any, job: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> what ``job`` computes, flat: y; y and dy/dx; the parameters' gradients after a backward
    of the L1 (``train_y``) or L1 + eikonal (``train``) loss."""
    def call(x: torch.Tensor) -> torch.Tensor:
        if job in ("forward", "gradient"):
            with torch.no_grad():
                out = model(x) if job == "forward" else torch.cat([t.reshape(len(x), -1) for t in
                                                                   model.forward_with_gradient(x)], dim=1)
            return out.reshape(-1)
        model.zero_grad(set_to_none=True)
        if job == "train_y":
            loss = model(x).abs().mean()
        else:
            y, jacobian = model.forward_with_gradient(x)
            loss = y.abs().mean() + (jacobian[:, 0].norm(dim=-1) - 1).abs().mean()
        loss.backward()
        return torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    return call


def tilings(bench: Bench, points: int, deadline: Deadline) -> None:
    """Each job and precision of TILINGS_ORDER whose kernels' tilings differ between the installed
    Triton and the other version (3.9 under an older one, 3.6 under 3.9): SirenMLP's fused kernels
    (FASTSDF_BACKEND=triton) at both, rounds interleaved on the same inputs; the other version's row
    says how far its result is from the installed one's (the same sums, tiled otherwise)."""
    import test_bench_siren as suite
    from fastsdf.kernels.siren import launch

    installed = launch.TRITON_VERSION
    other = (3, 9) if installed < (3, 9) else (3, 6)
    names = {installed: "{}.{}".format(*installed), other: "{}.{}".format(*other)}
    target = launch.arch(torch.device(bench.device))
    official = suite._official(bench.device)
    pool = [torch.rand(points, 3, device=bench.device) * 2 - 1 for _ in range(bench.copies(points * 3 * 4))]
    for job, precision in TILINGS_ORDER:
        what = f"tilings {job} {precision} at {points:,} points"
        with launch.tilings_of(other):
            theirs = _job_tilings(job, precision, target)
        if theirs == _job_tilings(job, precision, target):
            continue
        if deadline.left() <= _TILINGS_NEEDS_S:
            bench.skipped.append({"what": what, "why": "time budget"})
            continue
        bench.attempt(what, lambda: _tilings_pair(bench, suite, official, job, precision, pool,
                                                  (installed, other), names, deadline, what))


def _tilings_pair(bench: Bench, suite: Any, official: Any, job: str, precision: str, pool: list[torch.Tensor],
                  versions: tuple[tuple[int, int], tuple[int, int]], names: dict, deadline: Deadline,
                  what: str) -> None:
    from fastsdf.kernels.siren import launch

    model = suite._ours(official, precision)
    run = _tilings_job(model, job)

    def at(version: tuple[int, int]) -> Callable[[torch.Tensor], torch.Tensor]:
        def call(x: torch.Tensor) -> torch.Tensor:
            with launch.tilings_of(version), _fastsdf_backend("triton"):
                return run(x)
        return call

    calls = [at(v) for v in versions]
    firsts, outs = [], []
    for call in calls:  # compiles, then a second call for the time of one
        start = time.perf_counter()
        outs.append(call(pool[0]).detach().clone())
        bench.sync()
        firsts.append(time.perf_counter() - start)
    start = time.perf_counter()
    for call in calls:
        call(pool[1 % len(pool)])
    bench.sync()
    rounds = bench.rounds_for(time.perf_counter() - start, deadline)
    if rounds is None:
        bench.skipped.append({"what": what, "why": "time budget"})
        return
    seconds: list[list[float]] = [[] for _ in calls]
    for r in range(rounds):
        for i, call in enumerate(calls):
            seconds[i] += bench._rounds(call, [pool[r % len(pool)]], 1)
    for i, version in enumerate(versions):
        extra = {"peer": "fastsdf", "version": fastsdf.__version__, "points": len(pool[0]),
                 "variant": precision if i == 0 else f"{precision}, Triton {names[version]}'s tilings",
                 "compare_with": precision,
                 "input": f"{suite.NETWORK_TEXT}; {_TILINGS_JOB_TEXT[job]} at {len(pool[0]):,} points uniform in "
                          f"[-1, 1]^3 ({len(pool)} inputs rotated), fused kernels (FASTSDF_BACKEND=triton), "
                          f"rounds interleaved with the other tilings'; Triton {names[versions[0]]} installed"}
        if i:
            extra["rel_diff_vs_installed_tilings"] = relative_error(outs[i], outs[0])
        bench.record(f"siren-{bench.kind}-tilings-{job}{len(pool[0])}", f"fastsdf-{precision}-{names[version]}",
                     stats_of(seconds[i], firsts[i]), extra)


_TILINGS_JOB_TEXT = {"forward": "the network, no gradient recorded",
                     "gradient": "the network and its input gradient (forward_with_gradient, no gradient recorded)",
                     "train": "a backward of L1 + eikonal to the parameters, no optimiser",
                     "train_y": "a backward of L1 to the parameters, no optimiser"}


# --- marching cubes ------------------------------------------------------------------------------------

def marching_cubes(bench: Bench, sizes: Sequence[int], deadline: Deadline) -> None:
    from bench_common import SPHERE_RADIUS

    for n in sizes:
        what = f"marching cubes at {n}^3"
        if deadline.left() <= 0:
            bench.skipped.append({"what": what, "why": "time budget"})
            continue

        def run(n: int = n) -> None:
            axis = torch.linspace(-1.0, 1.0, n, dtype=torch.float64, device=bench.device).float().square_()
            volume = (axis[:, None, None] + axis[None, :, None] + axis[None, None, :]).sqrt_().sub_(SPHERE_RADIUS)
            pool = [volume] * bench.copies(volume.numel() * 4)  # a volume larger than the L2 is one copy

            def call(v: torch.Tensor) -> Any:
                return fastsdf.marching_cubes(v, 0.0)

            verts, faces = call(volume)
            extra: dict[str, Any] = {"vertices": int(len(verts)), "faces": int(len(faces))}
            if n <= 512:
                cpu_verts, cpu_faces = fastsdf.marching_cubes(volume.cpu().numpy(), 0.0)
                extra["same_size_as_cpu"] = (len(cpu_verts), len(cpu_faces)) == (len(verts), len(faces))
                if not extra["same_size_as_cpu"]:
                    raise AssertionError(f"{len(verts)} vertices, {len(faces)} faces; the CPU module gives "
                                         f"{len(cpu_verts)}, {len(cpu_faces)}")
            del verts, faces
            stats = bench.time(call, pool, deadline)
            if stats is None:
                bench.skipped.append({"what": what, "why": "time budget"})
                return
            bench.record(f"marching_cubes-{bench.kind}-{n}", f"fastsdf-{n}", stats, {
                "peer": "fastsdf", "version": fastsdf.__version__, "n": n, **extra,
                "input": f"sphere SDF (radius {SPHERE_RADIUS}) sampled on {n}^3 in [-1, 1]^3, float32, on the device"})

        bench.attempt(what, run)


# --- MeshSDF ------------------------------------------------------------------------------------------

def mesh_sdf(bench: Bench, points: int, deadline: Deadline) -> None:
    from bench_common import ICOSPHERE, MeshWorkload, accuracy, load_mesh, query_points

    what = f"MeshSDF at {points:,} points"
    try:
        mesh = load_mesh(ICOSPHERE)
    except ImportError as exc:
        bench.skipped.append({"what": what, "why": f"{exc} (the icosphere is made by trimesh: carry its wheel)"})
        return
    host = [query_points(mesh, points, seed=i) for i in range(bench.copies(points * 3 * 4))]
    pool = [torch.from_numpy(p).to(bench.device) for p in host]
    check = MeshWorkload(mesh, host[0])
    count = min(points, 10_000)
    unsigned, exact = check.references(count)
    for sign in ("pseudonormal", "winding", "exact_winding"):
        if deadline.left() <= 0:
            bench.skipped.append({"what": f"{what}, {sign}", "why": "time budget"})
            continue

        def run(sign: str = sign) -> None:
            sdf = fastsdf.MeshSDF(mesh.vertices, mesh.faces, sign=sign)
            quality = accuracy(sdf(pool[0][:count]).cpu().numpy(), unsigned, exact)
            stats = bench.time(sdf, pool, deadline)
            if stats is None:
                bench.skipped.append({"what": f"{what}, {sign}", "why": "time budget"})
                return
            bench.record(f"mesh_sdf-{bench.kind}-{ICOSPHERE}", f"fastsdf-{sign}-{points}", stats, {
                "peer": "fastsdf", "version": fastsdf.__version__, "sign": sign, "points": points,
                "mesh": ICOSPHERE, **quality,
                "input": f"mesh {mesh.describe()}, normalised into the unit sphere; {points:,} float32 points, half "
                         f"uniform in [-1, 1]^3, half near the surface, on the device ({len(pool)} sets rotated)",
                "notes": [f"Accuracy against fastsdf's CPU references on the first {count:,} points."]})

        bench.attempt(f"{what}, {sign}", run)


# --- output ----------------------------------------------------------------------------------------

def machine_info(bench: Bench) -> dict[str, Any]:
    from bench_common import cpu_threads

    brand = "?"
    try:
        brand = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    info = {"node": platform.node(), "python_version": platform.python_version(),
            "cpu": {"brand_raw": brand, "count": os.cpu_count()},
            "fastsdf": {"version": fastsdf.__version__, "cpu_threads": cpu_threads(), "numpy": np.__version__,
                        "torch": torch.__version__, "cuda": torch.version.cuda, "triton": _version("triton"),
                        "gpu": torch.cuda.get_device_name() if bench.device == "cuda" else None,
                        "dry_run": bench.dry_run}}
    if bench.dry_run:
        info["dry_run"] = True
    return info


def _version(module: str) -> str | None:
    try:
        return __import__(module).__version__
    except ImportError:
        return None


@functools.lru_cache(maxsize=1)
def commit_info() -> dict[str, Any]:
    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None

    commit = (git("rev-parse", "HEAD") or "").strip() or os.environ.get("FASTSDF_COMMIT", "")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"id": commit, "dirty": bool(status and status.strip())}


def write_json(path: Path, data: dict[str, Any]) -> None:
    with atomic_write(path, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")


def summary_lines(bench: Bench) -> list[str]:
    lines = [f"{'group':<34} {'peer':<36} {'median ms':>10} {'IQR ms':>8} {'rounds':>6}  checks"]
    for r in bench.results:
        extra, stats = r["extra_info"], r["stats"]
        peer = f"{extra['peer']} {extra.get('variant') or extra.get('sign') or ''}".strip()
        checks = " ".join(f"{k}={extra[k]:.1e}" if isinstance(extra[k], float) else f"{k}={extra[k]}"
                          for k in ("rel_error_y", "rel_error_grad", "rel_diff_vs_installed_tilings",
                                    "max_abs_error", "sign_disagreement", "same_size_as_cpu") if k in extra)
        limit = SUSPECT.get(str(extra.get("variant", "fp32")), SUSPECT["fp32"])
        if any(extra.get(k, 0.0) > limit for k in ("rel_error_y", "rel_error_grad")):
            checks += f" SUSPECT (> {limit:g})"
        points = extra.get("points")
        rate = f" ({points / stats['median'] / 1e6:,.1f} M pts/s)" if points else ""
        lines.append(f"{r['group']:<34} {peer[:36]:<36} {1e3 * stats['median']:>10.3f} {1e3 * stats['iqr']:>8.3f} "
                     f"{stats['rounds']:>6}  {checks}{rate}")
    lines += [f"skipped: {s['what']}: {s['why']}" for s in bench.skipped]
    lines += [f"ERROR: {e['what']}: {e['error']}" for e in bench.errors]
    if bench.dry_run:
        lines.append(DRY_RUN_NOTE)
    return lines


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=None, help=f"JSON to write (default: {DEFAULT_OUT}; "
                                                               "a dry run needs one outside benchmarks/results)")
    parser.add_argument("--budget", type=float, default=220.0,
                        help="seconds for all the timing, shared out between the parts (default: %(default)s)")
    parser.add_argument("--parts", default=",".join(PARTS),
                        help=f"comma-separated, of {', '.join(KNOWN_PARTS)} (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes on the CPU: tests the script, no GPU numbers")
    args = parser.parse_args(argv)
    args.parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in args.parts if p not in KNOWN_PARTS]
    if unknown or not args.parts:
        parser.error(f"--parts: unknown {unknown or 'empty list'}; known: {', '.join(KNOWN_PARTS)}")
    if not args.budget > 0:
        parser.error("--budget must be positive")
    if args.dry_run:
        if args.out is None:
            parser.error("--dry-run needs --out (a path outside benchmarks/results: its numbers are not GPU numbers)")
        if RESULTS_DIR.resolve() in args.out.resolve().parents:
            parser.error(f"--dry-run will not write under {RESULTS_DIR}: its numbers are not GPU numbers")
    elif args.out is None:
        args.out = DEFAULT_OUT
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    if not args.dry_run:
        from bench_common import cuda_ready

        reason = cuda_ready()
        if reason is not None:
            print(f"gpu_bench.py: {reason}; nothing measured (--dry-run tests the script on the CPU)", file=sys.stderr)
            return 2
    bench = Bench("cpu" if args.dry_run else "cuda", args.dry_run, args.out)
    torch.manual_seed(0)
    deadline = Deadline(args.budget)
    runners = {
        "siren": lambda d: siren(bench, DRY["siren"] if args.dry_run else SIREN_SIZES, d),
        "marching_cubes": lambda d: marching_cubes(bench, DRY["marching_cubes"] if args.dry_run else MC_SIZES, d),
        "mesh_sdf": lambda d: mesh_sdf(bench, DRY["mesh_sdf"] if args.dry_run else MESH_POINTS, d),
        "tilings": lambda d: tilings(bench, DRY["tilings"] if args.dry_run else TILINGS_POINTS, d),
    }
    for i, part in enumerate(args.parts):
        share = SHARES[part] / sum(SHARES[p] for p in args.parts[i:])
        print(f"{part}: {share * deadline.left():.0f} s", flush=True)
        bench.attempt(part, lambda: runners[part](Deadline(share * deadline.left())))
    if bench.results:
        bench.save()
        print(f"wrote {len(bench.results)} results to {args.out}")
    else:
        print("nothing was measured: no file written", file=sys.stderr)
    print("\n".join(summary_lines(bench)))
    return 1 if bench.errors or not bench.results else 0


if __name__ == "__main__":
    sys.exit(main())
