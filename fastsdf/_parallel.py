"""One function over many independent items at once: in this process, on a local process pool, or on
Ray, each task with a bounded number of OpenMP threads.

Why plain Ray tasks and not Ray Data: each item (a mesh) is a unit that reads its own input and
writes its own output, with nothing to shuffle, batch or hand to a next stage; what a run needs back
is one small record per item, as it completes, for the progress bar and the list of failures. Ray
tasks give exactly that (``ray.wait`` on a bounded window of tasks), with retries of a task whose
worker died; Ray Data would add its block machinery and its dependencies (pyarrow, pandas: the
``ray[data]`` extra) for a pipeline of one stage.

The compiled kernels use OpenMP, whose runtime reads ``OMP_NUM_THREADS`` once, when it starts: a
worker process gets it in its environment before it loads a kernel (a pool's initializer; Ray's
``runtime_env``), so that workers x threads match the cores instead of every task using them all.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any, Callable, Iterator, Sequence

from fastsdf._validation import integer, one_of

__all__ = ["ENGINES", "available_cpus", "check_engine", "map_unordered", "ray_available", "resolve_engine"]

ENGINES = ("auto", "serial", "pool", "ray")


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def ray_available() -> bool:
    """Whether Ray can be imported (the ``distributed`` extra)."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


def resolve_engine(engine: str, workers: int, address: str | None) -> str:
    """The engine a run of ``workers`` tasks at once uses. ``"auto"`` is Ray where there is a Ray
    cluster to use (an ``address``, ``RAY_ADDRESS``, or Ray already initialised in this process),
    else ``"serial"`` for one worker and the process pool for more. ValueError when Ray is asked for
    but missing, or an ``address`` comes without Ray.

    Why not a local Ray instance by default: on one machine the pool is as fast (200 meshes on 2
    cores: 2.89 meshes/s against Ray's 2.67, benchmarks/RESULTS.md) and starts at once, where Ray
    takes ~10 s to start and holds a shared-memory object store; Ray pays where it spreads the work
    over several machines. ``engine="ray"`` without an address still starts a local instance."""
    engine = check_engine(engine, address)
    if engine == "auto":
        engine = "ray" if _ray_cluster(address) else "serial" if workers == 1 else "pool"
    return engine


def _ray_cluster(address: str | None) -> bool:
    """Whether a Ray cluster was named or is already connected (checked without importing Ray)."""
    if address is not None:
        return True
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return True
    return bool(os.environ.get("RAY_ADDRESS")) and ray_available()


def check_engine(engine: str, address: str | None) -> str:
    """``engine`` if it is one of ``ENGINES`` and can run (with ``address``), else ValueError."""
    engine = one_of(engine, "engine", ENGINES)
    if (engine == "ray" or address is not None) and not ray_available():
        raise ValueError("Ray is not installed: pip install 'fastsdf[distributed]' (or ray), or leave "
                         "the engine and address out to run on a local process pool")
    if address is not None and engine not in ("auto", "ray"):
        raise ValueError(f"an address is a Ray cluster's: it needs the ray engine, not {engine}")
    return engine


def map_unordered(function: Callable[..., Any], items: Sequence[tuple[Any, ...]], *, engine: str = "auto",
                  workers: int | None = None, threads: int | None = None,
                  address: str | None = None) -> Iterator[tuple[int, Any, str | None]]:
    """``function(*item)`` for every item, yielding ``(index, result, None)`` as each finishes, or
    ``(index, None, message)`` when the engine lost the task (its worker died; the function's own
    exceptions are the function's to turn into results).

    Args:
        function: a module-level function (pickled by reference for the pool and Ray).
        items: argument tuples, each picklable.
        engine: ``"serial"`` (this process, in order, the kernels' threads as they are), ``"pool"``
            (spawned processes), ``"ray"``, or ``"auto"`` (``resolve_engine``).
        workers: tasks running at once (default: this machine's CPUs, or the Ray cluster's with an
            ``address``, divided by ``threads`` when given); never more than the items.
        threads: OpenMP threads per task on the pool and Ray (default: this machine's CPUs divided
            by ``workers``, at least 1).
        address: Ray's ``ray.init(address=...)``: an existing cluster (``"auto"``, ``"ray://host:10001"``;
            ``RAY_ADDRESS`` is read when None); without one, Ray runs a local instance of ``workers``
            x ``threads`` CPUs. Ray is shut down at the end, unless it was already initialised in
            this process (then it is used as it is).

    Raises:
        ValueError: a bad engine, ``workers`` or ``threads``; Ray asked for but not installed.
    """
    if workers is not None:
        workers = integer(workers, "workers", minimum=1)
    if threads is not None:
        threads = integer(threads, "threads", minimum=1)
    cpus = available_cpus()
    local = max(1, cpus // (threads or 1)) if workers is None else workers
    engine = resolve_engine(engine, min(local, max(1, len(items))), address)
    if engine == "serial":
        for index, item in enumerate(items):
            yield index, function(*item), None
    elif engine == "pool":
        local = min(local, max(1, len(items)))
        yield from _on_pool(function, items, local, threads or max(1, cpus // local))
    else:
        yield from _on_ray(function, items, workers, threads, address)


def _limit_threads(threads: int) -> None:
    """A pool worker's initializer: before any kernel loads the OpenMP runtime."""
    os.environ["OMP_NUM_THREADS"] = str(threads)


def _on_pool(function: Callable[..., Any], items: Sequence[tuple[Any, ...]], workers: int,
             threads: int) -> Iterator[tuple[int, Any, str | None]]:
    import multiprocessing

    # spawn, not fork: a forked child would inherit this process's OpenMP runtime (started with all
    # the threads, and not safe to use after a fork) and whatever else it holds.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(min(workers, max(1, len(items))), mp_context=context, initializer=_limit_threads,
                             initargs=(threads,)) as pool:
        pending = {pool.submit(function, *item): index for index, item in enumerate(items)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    index = pending.pop(future)
                    try:
                        yield index, future.result(), None
                    except Exception as exc:  # noqa: BLE001 - a dead worker fails its tasks, not the run
                        yield index, None, f"the worker process failed: {type(exc).__name__}: {exc}"
        finally:
            for future in pending:
                future.cancel()


def _on_ray(function: Callable[..., Any], items: Sequence[tuple[Any, ...]], workers: int | None,
            threads: int | None, address: str | None) -> Iterator[tuple[int, Any, str | None]]:
    import ray

    cluster = address is not None or bool(os.environ.get("RAY_ADDRESS"))
    started = not ray.is_initialized()
    if started:
        cpus = available_cpus()
        workers_here = max(1, cpus // (threads or 1)) if workers is None else workers
        local = {} if cluster else {"num_cpus": workers_here * (threads or max(1, cpus // workers_here))}
        ray.init(address=address, include_dashboard=False, logging_level="ERROR", log_to_driver=False, **local)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        if workers is None:
            workers = max(1, cpus // (threads or 1))
        # On a cluster one task must fit on one node, whose size is not known here: 1 thread unless told.
        threads = threads or (1 if cluster else max(1, cpus // workers))
        workers = min(workers, max(1, len(items)))
        task = ray.remote(function).options(num_cpus=threads,
                                            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
        queue = iter(enumerate(items))
        running: dict[Any, int] = {}
        while True:
            while len(running) < workers:
                entry = next(queue, None)
                if entry is None:
                    break
                running[task.remote(*entry[1])] = entry[0]
            if not running:
                return
            (ref,), _ = ray.wait(list(running), num_returns=1)
            index = running.pop(ref)
            try:
                yield index, ray.get(ref), None
            except Exception as exc:  # noqa: BLE001 - a lost task fails that item, not the run
                yield index, None, f"the Ray task failed: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        if started:
            ray.shutdown()
