"""DeepSDF training data for a collection of meshes: one .npz per mesh, the meshes sampled at once
on a process pool or Ray (``fastsdf._parallel``), resumably.

What a run promises whatever the engine: outputs that exist are skipped (never overwritten unless
asked), every file is written atomically, a mesh that fails is reported and the rest go on (one that
kills its worker process too, on the pool and on Ray: ``fastsdf._parallel.map_unordered``), and a
``seed`` gives byte-identical files: each mesh draws from a stream seeded by the run's seed and its
file name, never by the order or the process it runs in.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from fastsdf._parallel import check_engine, map_unordered
from fastsdf._progress import progress_bar
from fastsdf._validation import integer, one_of
from fastsdf.geometry import normalization, sampling
from fastsdf.geometry.mesh_io import load_mesh
from fastsdf.geometry.mesh_sdf import SIGNS
from fastsdf.geometry.samples_npz import save_npz

__all__ = ["SampleReport", "sample_meshes"]

NORMALIZATIONS = ("sphere", "cube", "none")


@dataclasses.dataclass
class SampleReport:
    """What ``sample_meshes`` did: the files it wrote, the meshes it skipped because their output
    existed, and one line per mesh that failed (its path, then why)."""

    written: list[Path] = dataclasses.field(default_factory=list)
    skipped: list[Path] = dataclasses.field(default_factory=list)
    failures: list[str] = dataclasses.field(default_factory=list)


def sample_meshes(
    meshes: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    n_uniform: int = sampling.DEEPSDF_N_UNIFORM,
    n_near: int = sampling.DEEPSDF_N_NEAR,
    near_std: float | Sequence[float] = sampling.DEEPSDF_NEAR_STD,
    n_surface: int = 0,
    normalize: str = "sphere",
    sign: str = "winding",
    seed: int | None = None,
    overwrite: bool = False,
    workers: int | None = None,
    threads: int | None = None,
    engine: str = "auto",
    address: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] | None = None,
) -> SampleReport:
    """Samples each mesh into ``out_dir/<stem>.npz`` (``save_npz``'s layout), several at once.

    Each mesh is loaded, normalised (``normalize``: ``"sphere"``, DeepSDF's; ``"cube"``; or
    ``"none"``), sampled with ``sample_sdf(n_uniform=, n_near=, near_std=, n_surface=, sign=)`` and
    written atomically with its normalisation. Two meshes with the same stem are one output: the
    second is reported as a failure.

    Args:
        meshes: mesh files.
        out_dir: the folder of the outputs (created when needed).
        seed: None for fresh randomness; an integer >= 0 makes every file reproducible,
            byte for byte, whatever the engine, workers and threads.
        overwrite: replace existing outputs instead of skipping them.
        workers: meshes sampled at once (default: this machine's CPUs, or the Ray cluster's with an
            ``address``; never more than the meshes to do). 1 samples them one after another in
            this process, the kernels using every core.
        threads: OpenMP threads per mesh when ``workers`` > 1 (default: the CPUs divided by ``workers``).
        engine: ``"auto"`` (Ray when a cluster is named or connected, else the process pool),
            ``"pool"``, ``"ray"`` (a local instance without an address) or ``"serial"``; see
            ``fastsdf._parallel.resolve_engine``.
        address: an existing Ray cluster, as ``ray.init(address=...)`` takes it.
        progress: one bar for the whole run (None: when stderr is a terminal).
        log: called with one line per mesh written or skipped.

    Returns:
        A ``SampleReport``. Failing meshes do not raise: they are in ``failures``. That includes a
        mesh whose worker process dies (a segfault in a native library, the out-of-memory killer):
        it is sampled once more in a fresh process, and if that one dies too, reported as
        ``"<path>: the worker process died while running it, on each of its 2 tries (exit code
        -11, SIGSEGV)"`` (on Ray: Ray's ``WorkerCrashedError`` or ``OutOfMemoryError``); the
        other meshes are neither stopped nor run twice, and an interrupted write leaves no output.
        A mesh whose sampling never returned would hold its worker until the run is interrupted
        (there is no timeout per mesh); a rerun then resumes.

    Raises:
        ValueError: bad counts, options, ``workers`` or ``threads``; Ray asked for but not installed.
    """
    n_uniform = integer(n_uniform, "n_uniform", minimum=0)
    n_near = integer(n_near, "n_near", minimum=0)
    n_surface = integer(n_surface, "n_surface", minimum=0)
    if n_uniform + n_near + n_surface == 0:
        raise ValueError("nothing to sample: n_uniform, n_near and n_surface are all 0")
    options = {"n_uniform": n_uniform, "n_near": n_near, "n_surface": n_surface,
               "near_std": sampling.near_stds(near_std), "sign": one_of(sign, "sign", SIGNS)}
    normalize = one_of(normalize, "normalize", NORMALIZATIONS)
    seed = None if seed is None else integer(seed, "seed", minimum=0)
    if workers is not None:
        workers = integer(workers, "workers", minimum=1)
    if threads is not None:
        threads = integer(threads, "threads", minimum=1)
    check_engine(engine, address)
    out_dir = Path(out_dir)

    report = SampleReport()
    failures: list[tuple[int, str]] = []  # (position in meshes, line): reported in the input's order
    jobs: list[tuple[Any, ...]] = []
    positions: list[int] = []
    claimed: dict[str, Path] = {}
    for position, path in enumerate(map(Path, meshes)):
        target = out_dir / f"{path.stem}.npz"
        if path.stem in claimed:
            failures.append((position, f"{path}: same output {target.name} as {claimed[path.stem].name}; "
                                       "rename one"))
        elif target.exists() and not overwrite:
            claimed[path.stem] = path
            report.skipped.append(path)
        else:
            claimed[path.stem] = path
            entropy = None if seed is None else (seed, zlib.crc32(path.stem.encode()))
            jobs.append((path, target, normalize, entropy, options))
            positions.append(position)

    done = len(report.skipped) + len(failures)
    bar = progress_bar(progress, done + len(jobs), done, "fastsdf sample", "mesh")

    def say(line: str) -> None:
        if log is not None:
            (log if bar is None else bar.write)(line)

    try:
        for path in report.skipped:
            say(f"skip {path.name}: {out_dir / (path.stem + '.npz')} exists")
        if jobs:  # nothing to do starts no pool and no Ray
            for index, result, lost in map_unordered(sample_mesh_file, jobs, engine=engine, workers=workers,
                                                     threads=threads, address=address):
                path, target = jobs[index][:2]
                if lost is not None or isinstance(result, str):
                    message = lost if lost is not None else result
                    failures.append((positions[index], message if str(path) in message else f"{path}: {message}"))
                else:
                    report.written.append(target)
                    n_pos, n_neg, seconds = result
                    say(f"wrote {target} ({n_pos:,} pos, {n_neg:,} neg) in {seconds:.1f} s")
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    report.failures = [line for _, line in sorted(failures)]
    rank = {stem: i for i, stem in enumerate(claimed)}
    report.written.sort(key=lambda target: rank[target.stem])
    return report


def sample_mesh_file(path: Path, target: Path, normalize: str, entropy: tuple[int, int] | None,
                     options: dict[str, Any]) -> tuple[int, int, float] | str:
    """One mesh's task: loads, normalises, samples and writes it. Returns (pos rows, neg rows,
    seconds), or the reason it failed as one line (any exception: one bad mesh must not stop the
    others, and a message pickles where some exceptions do not)."""
    start = time.perf_counter()
    try:
        mesh = load_mesh(path)
        if normalize == "none":
            transform = normalization.NormalizationTransform.identity()
        else:
            mesh, transform = normalization.normalize(mesh, method=normalize)
        seed = None if entropy is None else np.random.SeedSequence(list(entropy))
        samples = dataclasses.replace(sampling.sample_sdf(mesh, seed=seed, **options), transform=transform)
        save_npz(target, samples)
    except Exception as exc:  # noqa: BLE001 - reported by the caller, the run goes on
        return str(exc) if isinstance(exc, (ValueError, OSError)) else f"{type(exc).__name__}: {exc}"
    return int((samples.sdf > 0).sum()), int((samples.sdf <= 0).sum()), time.perf_counter() - start

