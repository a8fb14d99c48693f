"""``Evaluator``: calls a user's SDF on batches of grid points, on NumPy arrays or on tensors of one
or several devices, and checks what it gives back.

``extract_mesh`` and its narrow band evaluate through it. Plain functions are first tried on a
two-point NumPy array and switched to CPU tensors if that fails or gives back a tensor; a
``torch.nn.Module`` is evaluated under ``torch.no_grad`` on its parameters' device and dtype. With
several devices, the batches are dealt out to one thread per device, a module copied to each.
"""

from __future__ import annotations

from typing import Any, Callable, NoReturn, Sequence

import numpy as np

from fastsdf._arrays import is_tensor, to_numpy
from fastsdf.geometry.grid import Grid

__all__ = ["Evaluator"]


class Evaluator:
    """Calls the user's SDF on NumPy batches or on tensors of one or several devices, and checks
    what it gives.

    Args:
        sdf: callable from (N, 3) points to (N,) or (N, 1) real values (see ``extract_mesh``).
        grid: the grid to be evaluated; its first points probe a plain function.
        device: torch device to evaluate tensors on, or None to detect it (see the module doc).
        batch: points per call of ``sdf``.
        devices: several torch devices (or ``"cuda"``: every visible GPU) to deal batches out to.

    Raises:
        TypeError: ``sdf`` not callable.
        ValueError: the meta device, or bad ``devices``.
    """

    def __init__(self, sdf: Callable, grid: Grid, device: Any, batch: int,
                 devices: Sequence[Any] | str | None = None):
        if not callable(sdf):
            raise TypeError(f"sdf must be callable, got {type(sdf).__name__}")
        self.sdf = sdf
        self.torch_device = None
        self.torch_dtype = None
        if _is_module(sdf) and any(t.is_meta for t in (*sdf.parameters(), *sdf.buffers())):
            _meta("sdf has parameters or buffers on")
        if devices is not None:
            self.replicas = _replicas(sdf, devices)
            device = self.replicas[0][0]
        if device is not None or _is_module(sdf):
            import torch

            params = [*sdf.parameters(), *sdf.buffers()] if _is_module(sdf) else []
            self.torch_device = torch.device(device) if device is not None else (
                params[0].device if params else torch.device("cpu"))
            floats = [p.dtype for p in params if p.is_floating_point()]
            self.torch_dtype = floats[0] if floats else torch.float32
        else:
            self._probe(grid.points(0, 0, min(2, batch)))
        if devices is None:
            self.replicas = [(self.torch_device, sdf)]
        if any(where is not None and where.type == "meta" for where, _ in self.replicas):
            _meta("evaluating on")

    def _probe(self, sample: np.ndarray) -> None:
        try:
            out = self.sdf(sample)
            if not is_tensor(out):
                return
        except Exception:  # noqa: BLE001 - a function on tensors fails on arrays in any way
            pass
        import torch

        self.torch_device, self.torch_dtype = torch.device("cpu"), torch.float32

    @property
    def on_torch(self) -> bool:
        """Whether ``sdf`` is evaluated on tensors (on ``torch_device``) rather than NumPy arrays."""
        return self.torch_device is not None

    def new_volume(self, shape: tuple[int, ...]) -> Any:
        """An uninitialised float32 array, or tensor on ``torch_device``, of ``shape``."""
        if self.on_torch:
            import torch

            return torch.empty(shape, dtype=torch.float32, device=self.torch_device)
        return np.empty(shape, np.float32)

    def each(self, keys: Sequence[Any], points: Callable[[Any], np.ndarray], store: Callable[[Any, Any], None]) -> None:
        """``store(key, values at points(key))`` for every key: in turn on one device, or with the
        keys dealt out to the devices, one thread each (``store`` writes disjoint parts)."""
        if len(self.replicas) == 1:
            for key in keys:
                store(key, self(points(key)))
            return
        from concurrent.futures import ThreadPoolExecutor

        def work(replica: int) -> None:
            for key in keys[replica::len(self.replicas)]:
                store(key, self(points(key), replica))

        with ThreadPoolExecutor(len(self.replicas)) as pool:
            for done in [pool.submit(work, r) for r in range(len(self.replicas))]:
                done.result()

    def __call__(self, points: np.ndarray, replica: int = 0) -> Any:
        """``sdf``'s (N,) values at float32 (N, 3) ``points``, evaluated on replica ``replica``'s
        device: a float array or tensor. TypeError or ValueError for a wrong shape, a non-real
        dtype, NaN or Inf."""
        if self.on_torch:
            import torch

            where, sdf = self.replicas[replica]
            x = torch.from_numpy(points).to(device=where, dtype=self.torch_dtype)
            with torch.no_grad():
                values = sdf(x)
            if not isinstance(values, torch.Tensor):
                raise TypeError(f"sdf returned {type(values).__name__}, expected a tensor")
            if values.is_complex() or values.is_quantized:
                raise TypeError(f"sdf must return real numbers, got a tensor of {values.dtype}")
            if values.is_meta:
                _meta("sdf returned a tensor on")
            finite = torch.isfinite
        else:
            values = np.asarray(self.sdf(points))
            if values.dtype.kind not in "fiub":  # as marching_cubes: complex would lose its imaginary part
                raise TypeError(f"sdf must return real numbers, got an array of {values.dtype}")
            finite = np.isfinite
        if tuple(values.shape) not in ((len(points),), (len(points), 1)):
            raise ValueError(f"sdf must map (N, 3) points to (N,) or (N, 1) values; got shape "
                             f"{tuple(values.shape)} for N = {len(points)}")
        values = values.reshape(-1)
        ok = finite(values)
        if not bool(ok.all()):
            bad = int(np.flatnonzero(~to_numpy(ok))[0])
            raise ValueError(f"sdf returned NaN or Inf at point {points[bad].tolist()}")
        return values


def _meta(what: str) -> NoReturn:
    """The error for the meta device, whose tensors have shapes but no values to mesh."""
    raise ValueError(f"{what} the meta device, whose tensors hold no values (a module must be materialised "
                     "first: module.to_empty(device='cpu'), then load_state_dict)")


def _replicas(sdf: Any, devices: Any) -> list[tuple[Any, Any]]:
    """(device, the SDF there) per device: a module is copied to each device it is not on."""
    import copy

    import torch

    if isinstance(devices, str) and devices == "cuda":
        devices = [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        if not devices:
            raise ValueError("devices='cuda' but no GPU is visible")
    try:
        devices = [torch.device(d) for d in devices]
    except (TypeError, RuntimeError):
        raise ValueError(f"devices must be a list of torch devices or 'cuda', got {devices!r}") from None
    if not devices:
        raise ValueError("devices must name at least one device")
    if not _is_module(sdf):
        return [(d, sdf) for d in devices]
    own = next(iter([*sdf.parameters(), *sdf.buffers()]), None)
    home = own.device if own is not None else torch.device("cpu")
    return [(d, sdf if d == home else copy.deepcopy(sdf).to(d)) for d in devices]


def _is_module(sdf: Any) -> bool:
    try:
        import torch
    except ImportError:
        return False
    return isinstance(sdf, torch.nn.Module)
