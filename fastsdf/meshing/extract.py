"""``extract_mesh``: evaluate any SDF on a regular grid, in batches, and mesh it.

The grid's coordinates (``fastsdf.geometry.grid.Grid``) are generated per batch from flat indices,
so no (R^3, 3) array ever exists; ``fastsdf.meshing.evaluator`` calls the SDF on them, on one device
or several. ``method="dense"`` fills one volume and meshes it; ``method="chunked"`` walks slabs of
point layers along axis 0, meshing each with the next slab's first vertices referenced by id, so
peak memory stays bounded at any resolution and the mesh is the dense one, vertex for vertex.
``method="sparse"`` walks the same slabs but evaluates only the narrow band around the surface
(``fastsdf.meshing.narrow_band``), so its cost grows with the surface, not the volume;
``method="mise"`` does so for fields without a distance bound (``fastsdf.meshing.mise``).
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable, Sequence

import numpy as np

from fastsdf import _memory
from fastsdf._arrays import concatenate
from fastsdf._progress import progress_bar
from fastsdf._validation import integer, one_of, real
from fastsdf.geometry.grid import UNIT_BOUNDS, Bounds, Grid
from fastsdf.io import PlyWriter, write_ply
from fastsdf.meshing.evaluator import Evaluator
from fastsdf.meshing.marching_cubes import prepare_volume
from fastsdf.meshing.mise import Mise
from fastsdf.meshing.narrow_band import DEFAULT_SAFETY, NarrowBand

__all__ = ["extract_mesh"]

_DEFAULT_BATCH = 1 << 18
# Values kept per slab in chunked mode; bounds its memory whatever the resolution.
_SLAB_BYTES = 256 << 20
# By default a progress bar appears only for grids at least this large: smaller ones take seconds.
_PROGRESS_POINTS = 1 << 24


def extract_mesh(
    sdf: Callable[[Any], Any],
    resolution: int | Sequence[int],
    bounds: Bounds = UNIT_BOUNDS,
    level: float = 0.0,
    method: str = "dense",
    batch_size: int | None = None,
    progress: bool | None = None,
    device: Any = None,
    safety: float = DEFAULT_SAFETY,
    devices: Sequence[Any] | str | None = None,
    out: str | os.PathLike | None = None,
) -> tuple[Any, Any]:
    """Meshes the level set of ``sdf`` sampled on a grid over ``bounds``.

    Args:
        sdf: callable from (N, 3) points to (N,) or (N, 1) real values (floating, integer or bool;
            stored as float32; complex values raise TypeError): a ``torch.nn.Module`` (evaluated
            under ``torch.no_grad`` on its parameters' device and dtype), a function on tensors, or
            a function on NumPy arrays. Plain functions are first tried on a two-point NumPy array
            and switched to CPU tensors if that fails or gives back a tensor; pass ``device`` to
            evaluate on tensors on that device directly.
        resolution: samples per axis, one int or three, each at least 2. The grid includes both
            bounds: sample ``n`` along an axis sits at ``lo + n * (hi - lo) / (resolution - 1)``.
        bounds: ``(lo, hi)``, each three finite numbers with ``lo < hi``.
        level: iso-value.
        method: ``"dense"`` (one volume in memory), ``"chunked"`` (slabs of about 256 MiB of
            values, same mesh as dense, for resolutions whose volume does not fit) or ``"sparse"``
            (the slabs of chunked, evaluated only near the surface: from coarse blocks of the grid
            down to blocks of 4^3 cells, a block is skipped when its centre value, minus the level,
            exceeds ``safety`` times its half-diagonal; see ``fastsdf.meshing.narrow_band``). For a
            true SDF (analytic shapes, ``MeshSDF``) sparse gives the dense mesh exactly. ``"mise"``
            (Occupancy Networks' multiresolution extraction, for fields without a Lipschitz bound
            such as occupancy logits): the same slabs and blocks, a block refined only where the
            values at its corners (or at a neighbour's) lie on both sides of the level; see
            ``fastsdf.meshing.mise``.
        batch_size: points per call of ``sdf`` (default 262144).
        progress: show a progress bar (tqdm); ``None`` shows one for grids of 2^24 points or more
            when stderr is a terminal, ``False`` never.
        device: torch device to evaluate tensors on (overrides the detection above); not the meta
            device (a module there, or one returning meta tensors, raises ValueError: meta tensors
            have no values).
        safety: ``"sparse"`` only: the bound assumed on the field's gradient norm (>= 1). 1 suffices
            for true SDFs; learned ones exceed it here and there (2, the default, has been exact on
            trained SIRENs, but one fitted for only 150 steps reached 3.3 and lost exactness at 2
            grid points); a larger value evaluates a wider band. Parts of the surface where the
            gradient exceeds it and thinner than a coarse block can be missed, and grid points
            there can take stand-in values, which moves their vertices.
        devices: several torch devices to spread the evaluation over, batch by batch (``"cuda"``:
            every visible GPU); a module is copied to each (the first holds the volume and the
            mesh). The mesh is the one a single device gives, for an SDF whose value at a point
            does not depend on the other points of its batch (fastsdf's networks and analytic
            shapes).
        out: a PLY file to write the mesh to instead of returning it; with ``"chunked"`` and
            ``"sparse"`` each slab's vertices and faces go to disk as they are made
            (``fastsdf.io.PlyWriter``), so the mesh need not fit in memory. Written atomically:
            an error leaves an existing file as it was.

    Returns:
        ``(verts, faces)`` as ``fastsdf.marching_cubes`` gives them: NumPy arrays when ``sdf`` was
        evaluated on NumPy arrays, tensors on the evaluation device otherwise. With ``out``: the
        numbers of vertices and faces written. A grid in which the
        surface does not appear gives an empty mesh.

    Raises:
        ValueError: bad arguments, the meta device, or ``sdf`` returning the wrong shape or NaN/Inf
            values.
        TypeError: ``sdf`` not callable, or returning complex or non-numeric values.
        MemoryError: a dense volume or the mesh would not fit in the memory available.
    """
    grid = Grid(resolution, bounds)
    level = real(level, "level")
    one_of(method, "method", ("dense", "chunked", "sparse", "mise"))
    safety = real(safety, "safety", 1)  # 1: the gradient norm of a true SDF
    batch = _DEFAULT_BATCH if batch_size is None else integer(batch_size, "batch_size", minimum=1)
    evaluator = Evaluator(sdf, grid, device, batch, devices)
    res = grid.resolution
    total = math.prod(res)
    bar = progress_bar(progress, total, 0, f"extract_mesh {res[0]}x{res[1]}x{res[2]}", "pt",
                       long_run=total >= _PROGRESS_POINTS, unit_scale=True)
    try:
        if method == "dense":
            verts, faces = _dense(evaluator, grid, level, batch, bar)
            if out is None:
                return verts, faces
            write_ply(out, verts, faces)
            return len(verts), len(faces)
        if method == "chunked":
            def fill(*slab: Any) -> None:
                _fill_layers(evaluator, grid, *slab, batch, bar)
        else:
            band = NarrowBand(evaluator, grid, level, safety, batch) if method == "sparse" else \
                Mise(evaluator, grid, level, batch)

            def fill(*slab: Any) -> None:
                _fill_band(evaluator, grid, band, *slab, batch, bar)
        if out is None:
            return _chunked(evaluator, grid, level, fill)
        with PlyWriter(out) as ply:
            _chunked(evaluator, grid, level, fill, ply)
        return ply.vertices, ply.faces
    finally:
        if bar is not None:
            bar.close()


def _fill_layers(evaluator: Evaluator, grid: Grid, volume: Any, first_layer: int, start_layer: int,
                 batch: int, bar) -> None:
    """Evaluates layers [first_layer + start_layer, first_layer + len(volume)) into volume[start_layer:]."""
    flat = volume.reshape(-1)
    start, stop = start_layer * grid.layer_points, volume.shape[0] * grid.layer_points

    def store(s: int, values: Any) -> None:
        e = min(s + batch, stop)
        flat[s:e] = values
        if bar is not None:
            bar.update(e - s)

    evaluator.each(range(start, stop, batch), lambda s: grid.points(first_layer, s, min(s + batch, stop)), store)


def _fill_band(evaluator: Evaluator, grid: Grid, band: NarrowBand, volume: Any, first_layer: int,
               start_layer: int, batch: int, bar) -> None:
    """Like ``_fill_layers``, evaluating only the band's samples and filling in the others."""
    layers = np.arange(first_layer + start_layer, first_layer + volume.shape[0])
    rows = volume[start_layer:]
    if not evaluator.on_torch:
        mask = band.slab(layers, rows)
    elif rows.device.type == "cpu":
        mask = band.slab(layers, rows.numpy())
    else:
        import torch

        values = np.empty(tuple(rows.shape), np.float32)
        mask = band.slab(layers, values)
        rows.copy_(torch.from_numpy(values))
    flat, wanted = rows.reshape(-1), np.flatnonzero(mask)
    offset = start_layer * grid.layer_points

    def store(s: int, found: Any) -> None:
        index = wanted[s:s + batch]
        if evaluator.on_torch:
            import torch

            flat[torch.from_numpy(index).to(flat.device)] = found.to(flat.device, flat.dtype)
        else:
            flat[index] = found

    evaluator.each(range(0, len(wanted), batch), lambda s: grid.points_at(first_layer, wanted[s:s + batch] + offset),
                   store)
    if bar is not None:
        bar.update(len(layers) * grid.layer_points)


def _dense(evaluator: Evaluator, grid: Grid, level: float, batch: int, bar):
    from fastsdf.meshing.marching_cubes import marching_cubes

    res = grid.resolution
    _memory.check_fits(
        4 * math.prod(res), f"a dense {res[0]}x{res[1]}x{res[2]} float32 volume",
        evaluator.torch_device, "use method='chunked', which needs memory for a few layers only")
    volume = evaluator.new_volume(res)
    _fill_layers(evaluator, grid, volume, 0, 0, batch, bar)
    return marching_cubes(volume, level, spacing=grid.step, origin=grid.lo)


def _chunked(evaluator: Evaluator, grid: Grid, level: float, fill: Callable[[Any, int, int], None],
             ply: PlyWriter | None = None):
    """Meshes slab after slab; ``fill(volume, first_layer, start_layer)`` puts the values of
    layers ``first_layer + start_layer ...`` into ``volume[start_layer:]``. Returns the mesh, or
    with ``ply`` adds each slab's part to it and returns None."""
    nx = grid.resolution[0]
    layer_bytes = 4 * grid.layer_points
    # Each slab owns `owned` point layers and cube layers and also holds the next two layers: the
    # first of them has the vertices its last cubes use, and the second decides which of that
    # layer's edges are crossed, hence their ids.
    owned = max(1, _SLAB_BYTES // layer_bytes - 2)
    _memory.check_fits((owned + 2) * layer_bytes, "one slab of the chunked grid", evaluator.torch_device,
                       "the grid's layers are too large even for chunked extraction")
    verts, faces = [], []
    vertex_base = 0
    carry = None
    a = 0
    while a < nx:
        b = min(a + owned, nx)
        if nx - b == 1:
            b = nx  # a slab of one layer has no cubes; its layer joins this one
        stop = min(b + 2, nx)
        volume = evaluator.new_volume((stop - a, grid.resolution[1], grid.resolution[2]))
        reused = 0 if carry is None else len(carry)
        if reused:
            volume[:reused] = carry
        fill(volume, a, reused)
        kernels, data, wrap = prepare_volume(volume)
        counts = kernels.count(data, level)
        layers = b - a
        v, f = kernels.fill(data, level, counts, vertex_base=vertex_base, layers=layers,
                            index_offset=(a, 0, 0), origin=grid.lo, spacing=grid.step)
        if ply is None:
            verts.append(wrap(v))
            faces.append(wrap(f))
        else:
            ply.add(v, f)
        vertex_base += counts.sizes(layers)[0]
        carry = volume[b - a:] if b < nx else None  # a view; the next slab copies it in
        a = b
    return (concatenate(verts), concatenate(faces)) if ply is None else None

