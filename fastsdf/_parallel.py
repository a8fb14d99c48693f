"""One function over many independent items at once: in this process, on a local process pool, or on
Ray, each task with a bounded number of OpenMP threads.

Why plain Ray tasks and not Ray Data: each item (a mesh) is a unit that reads its own input and
writes its own output, with nothing to shuffle, batch or hand to a next stage; what a run needs back
is one small record per item, as it completes, for the progress bar and the list of failures. Ray
tasks give exactly that (``ray.wait`` on a bounded window of tasks); Ray Data would add its block
machinery and its dependencies (pyarrow, pandas: the ``ray[data]`` extra) for a pipeline of one stage.

The compiled kernels use OpenMP, whose runtime reads ``OMP_NUM_THREADS`` once, when it starts: a
worker process gets it in its environment before it loads a kernel (the pool worker's first step;
Ray's ``runtime_env``), so that workers x threads match the cores instead of every task using them all.

A worker process that dies (a native library's segfault on one malformed mesh, the out-of-memory
killer) loses its own task and nothing else, on the pool and on Ray alike: the task runs once more on
a fresh worker, then is reported as failed with how its worker died (``map_unordered``).
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import sys
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterator, Sequence

from fastsdf._validation import integer, one_of

__all__ = ["ENGINES", "available_cpus", "check_engine", "map_unordered", "ray_available", "resolve_engine"]

ENGINES = ("auto", "serial", "pool", "ray")

TRIES = 2
"""Runs of a task whose worker process dies, on the pool and on Ray alike (Ray's own retries are off)."""


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
    ``(index, None, message)`` for an item that failed on the pool or Ray: the function raised (the
    message is the exception's type and first line; in this process, ``"serial"``, the exception
    propagates instead), or the worker process running it died twice.

    A worker that dies (a segfault in native code, the out-of-memory killer, ``os._exit``) costs only
    the task it was running, on either engine: the others run on, a fresh worker takes its place, and
    that task runs once more (a kill for memory may be the other tasks' doing); if its worker dies
    again, the item is reported, e.g. ``"the worker process died while running it, on each of its 2
    tries (exit code -11, SIGSEGV)"``. No task that finished is run again, and no task but the one
    whose worker died is interrupted (on Ray, a node that dies loses each of its tasks so); the
    function must tolerate being cut off and run again (the sampling's writes are atomic: a killed
    write leaves at most a hidden temporary file). A task that never returns holds its worker until
    the run is interrupted (Ctrl-C stops the workers): there is no timeout per task.

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
        return
    # The engines take their work from `todo` as they go: a task whose worker died goes back in
    # while the engine waits for this generator to ask for the next result.
    todo = collections.deque(range(len(items)))
    deaths: dict[int, list[str]] = {}
    if engine == "pool":
        local = min(local, max(1, len(items)))
        attempts = _on_pool(function, items, todo, local, threads or max(1, cpus // local))
    else:
        attempts = _on_ray(function, items, todo, workers, threads, address)
    with contextlib.closing(attempts):
        for index, result, message, death in attempts:
            if death is None:
                yield index, result, message
                continue
            deaths.setdefault(index, []).append(death)
            if len(deaths[index]) < TRIES:
                todo.append(index)
            else:
                causes = "; ".join(dict.fromkeys(deaths[index]))  # each different cause once
                yield index, None, f"the worker process died while running it, on each of its {TRIES} tries " \
                                   f"({causes})"


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _exit_cause(code: int | None) -> str:
    """A dead process's exit code in words: a negative one is the signal that killed it."""
    if code is not None and code < 0:
        try:
            return f"exit code {code}, {signal.Signals(-code).name}"
        except ValueError:
            pass
    return f"exit code {code}"


def _serve(connection: Connection, function: Callable[..., Any], threads: int) -> None:
    """A pool worker: runs the tasks that come down ``connection`` one at a time, until it closes."""
    # Before any kernel loads the OpenMP runtime, which reads it once.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    # Ctrl-C reaches the whole process group: the parent stops the workers, they do not print tracebacks.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            index, item = connection.recv()
        except EOFError:  # the parent closed its end: no more tasks
            return
        try:
            reply = (index, function(*item), None)
        except Exception as exc:  # noqa: BLE001 - the item's failure, reported by the parent
            reply = (index, None, _one_line(exc))
        try:
            connection.send(reply)
        except Exception as exc:  # noqa: BLE001 - a result that does not pickle
            connection.send((index, None, f"its result cannot be sent back: {_one_line(exc)}"))


class _Worker:
    """One spawned process of the pool, the pipe to it, and the item it is running (None when idle)."""

    def __init__(self, context: Any, function: Callable[..., Any], threads: int) -> None:
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, function, threads), name="fastsdf-worker")
        self.process.start()
        child.close()  # the child's end lives in the child only, so its death reads as the end of the pipe
        self.task: int | None = None

    def reply(self) -> tuple[Any, str | None] | None:
        """The (result, message) it sent back, or None when it died without one."""
        try:
            if not self.connection.poll():
                return None
            _, result, message = self.connection.recv()
        except (EOFError, OSError):
            return None
        except Exception as exc:  # noqa: BLE001 - a result this process cannot unpickle; the pipe is still whole
            return None, f"its result cannot be read back: {_one_line(exc)}"
        return result, message


def _stop(workers: list[_Worker]) -> None:
    """Ends the processes: at once those running a task, the others by closing their pipes."""
    for worker in workers:
        if worker.task is not None and worker.process.is_alive():
            worker.process.terminate()
        worker.connection.close()
    for worker in workers:
        worker.process.join(10)
        if worker.process.is_alive():
            worker.process.kill()
            worker.process.join()


def _on_pool(function: Callable[..., Any], items: Sequence[tuple[Any, ...]], todo: collections.deque[int],
             workers: int, threads: int) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """Yields ``(index, result, message, death)``, death saying how the worker died (the task lost).

    Its own pool, not concurrent.futures': a ProcessPoolExecutor whose worker dies marks itself
    broken, fails every pending task (BrokenProcessPool) and terminates the other workers, without
    saying which task killed it. Here each worker runs one task at a time over its own pipe, so a
    death is that task's alone and the exit code says how it died."""
    import multiprocessing

    # spawn, not fork: a forked child would inherit this process's OpenMP runtime (started with all
    # the threads, and not safe to use after a fork) and whatever else it holds.
    context = multiprocessing.get_context("spawn")
    idle: list[_Worker] = []
    busy: list[_Worker] = []
    try:
        while todo or busy:
            while todo and len(busy) < workers:
                while idle and not idle[-1].process.is_alive():  # died idle (killed for memory?)
                    _stop([idle.pop()])
                worker = idle.pop() if idle else _Worker(context, function, threads)
                worker.task = todo.popleft()
                busy.append(worker)
                try:
                    worker.connection.send((worker.task, items[worker.task]))
                except OSError:  # it died already: its pipe and sentinel tell below
                    pass
            ready = set(wait([w.connection for w in busy] + [w.process.sentinel for w in busy]))
            for worker in [w for w in busy if w.connection in ready or w.process.sentinel in ready]:
                busy.remove(worker)
                index, worker.task = worker.task, None
                reply = worker.reply()  # one sent before the process died still counts
                if reply is not None:
                    idle.append(worker)
                    yield index, *reply, None
                else:
                    _stop([worker])
                    yield index, None, None, _exit_cause(worker.process.exitcode)
    finally:
        _stop(idle + busy)


def _on_ray(function: Callable[..., Any], items: Sequence[tuple[Any, ...]], todo: collections.deque[int],
            workers: int | None, threads: int | None,
            address: str | None) -> Iterator[tuple[int, Any, str | None, str | None]]:
    """As ``_on_pool``, on Ray tasks with Ray's retries off: ``map_unordered`` reruns a lost task as
    it does on the pool. Ray by default would rerun a task whose worker died 3 times
    (``max_retries``), and one that its memory monitor killed by another count
    (``RAY_task_oom_retries``, unbounded in some versions); ``max_retries=0`` turns off both."""
    import ray
    from ray.exceptions import NodeDiedError, OutOfMemoryError, RayTaskError, WorkerCrashedError

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
        task = ray.remote(function).options(num_cpus=threads, max_retries=0, retry_exceptions=False,
                                            runtime_env={"env_vars": {"OMP_NUM_THREADS": str(threads)}})
        running: dict[Any, int] = {}
        while todo or running:
            while todo and len(running) < workers:
                index = todo.popleft()
                running[task.remote(*items[index])] = index
            (ref,), _ = ray.wait(list(running), num_returns=1)
            index = running.pop(ref)
            try:
                result = ray.get(ref)
            except (WorkerCrashedError, OutOfMemoryError, NodeDiedError) as exc:
                yield index, None, None, f"Ray: {_one_line(exc)}"
            except RayTaskError as exc:
                yield index, None, _one_line(exc.cause if exc.cause is not None else exc), None
            except Exception as exc:  # noqa: BLE001 - any other loss fails that item, not the run
                yield index, None, f"the Ray task failed: {_one_line(exc)}", None
            else:
                yield index, result, None, None
    finally:
        if started:
            ray.shutdown()
