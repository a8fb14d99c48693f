"""``fastsdf.fit``: one network fitted to one shape.

Defaults, chosen by measurement on the shared meshes (benchmarks/test_bench_fit.py, 2 CPU cores):
``SirenMLP(3, 128, 3, 1)`` trained with DeepSDF's clamped L1 on batches of 8,192 points drawn
fresh from a pool of 2.5M labelled points (``fastsdf.training.data``), Adam at 1e-3 with a cosine
decay to 5% of it over the run, 3,000 steps (about a minute on 2 cores). Wider networks (192, 256)
and SIREN's loss (with its eikonal term) reached less in the same minute; smaller learning rates
converged more slowly (5e-4: occupancy F1 0.9763 / 0.9966 near the surface / in the volume on cow,
0.9737 / 0.9973 on suzanne, against 0.9781 / 0.9983 and 0.9763 / 0.9977 at 1e-3; 1e-4, the SIREN
paper's, far less); larger batches gave fewer steps for no gain, and a pool with more uniform points
(35%) traded F1 near the surface for F1 in the volume.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from fastsdf._validation import integer, one_of, real
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.samples_npz import load_npz
from fastsdf.geometry.sampling import SdfSamples
from fastsdf.training import losses
from fastsdf.training.data import POOL_NEAR, POOL_UNIFORM, PointPool
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.seeding import check_seed
from fastsdf.training.steps import train_steps

__all__ = ["LOSSES", "fit"]

LOSSES = ("sdf_l1", "siren", "occupancy")
DEFAULT_STEPS = 3000
DEFAULT_BATCH = 8192
DEFAULT_LEARNING_RATE = 1e-3
FINAL_LEARNING_RATE = 0.05  # of the initial one, at the end of the cosine decay
POOL_POINTS = POOL_NEAR + POOL_UNIFORM


def default_network(dim: int = 3) -> nn.Module:
    from fastsdf.nn import SirenMLP

    return SirenMLP(dim, 128, 3, 1, double_backward=False)


def _network(model: Any, dim: int) -> nn.Module:
    """``model`` itself, or what it builds (after the caller seeded torch), for points of ``dim``
    coordinates."""
    if model is None:
        return default_network(dim)
    if isinstance(model, nn.Module):
        return model
    if not callable(model):
        raise TypeError(f"model must be a torch.nn.Module or a function that builds one, got {type(model).__name__}")
    network = model()
    if not isinstance(network, nn.Module):
        raise TypeError(f"model() must return a torch.nn.Module, got {type(network).__name__}")
    inputs = getattr(network, "in_features", dim)
    if inputs != dim:
        raise ValueError(f"the model takes {inputs} coordinates per point, the shape has {dim} "
                         f"(build it with in_features={dim})")
    return network


def _source(mesh_or_samples: Any, normalization: str, loss: str, seed: Any,
            pool_points: int) -> tuple[PointPool, NormalizationTransform]:
    """The training pool and the transform into its frame, from a mesh or samples (or their paths)."""
    from fastsdf.geometry.mesh_io import load_mesh

    source = mesh_or_samples
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        source = load_npz(path) if path.suffix.lower() == ".npz" else load_mesh(path)
    if isinstance(source, SdfSamples):
        if loss == "siren" and source.surface_points is None:
            raise ValueError("loss='siren' needs surface points and normals: sample with n_surface > 0")
        return PointPool.from_samples(source), source.transform or NormalizationTransform.identity(source.dim)
    if normalization == "none":
        transform = NormalizationTransform.identity()
    else:
        source, transform = normalize(source, method=normalization)
    if loss == "siren":
        return PointPool.from_mesh(source, near=0, uniform=0, surface=pool_points, seed=seed), transform
    uniform = pool_points // 5
    return PointPool.from_mesh(source, near=pool_points - uniform, uniform=uniform, seed=seed), transform


def _loss_function(loss: str, network: nn.Module, pool: PointPool, batch: int,
                   generator: torch.Generator) -> Callable[[], torch.Tensor]:
    device = pool.points.device
    if loss == "sdf_l1":
        def step_loss() -> torch.Tensor:
            points, sdf = pool.batch(batch, generator)
            return losses.clamped_l1(network(points)[:, 0], sdf)
    elif loss == "occupancy":
        def step_loss() -> torch.Tensor:
            points, sdf = pool.batch(batch, generator)
            return losses.occupancy_bce(network(points)[:, 0], sdf < 0)
    else:
        def step_loss() -> torch.Tensor:
            # SIREN's recipe: half the batch on the surface, half uniform in [-1, 1]^dim.
            surface, normals = pool.surface_batch(batch // 2, generator)
            off = (torch.rand((batch - batch // 2, surface.shape[1]), generator=generator) * 2 - 1).to(device)
            points = torch.cat([surface, off])
            values, jacobian = network.forward_with_gradient(points)
            on_surface = torch.arange(len(points), device=device) < len(surface)
            normals = torch.cat([normals, torch.zeros_like(off)])
            return losses.siren_sdf(values[:, 0], jacobian[:, 0], on_surface, normals)["total"]
    return step_loss


def fit(mesh_or_samples: Any, model: nn.Module | Callable[[], nn.Module] | None = None, loss: str = "sdf_l1",
        steps: int | None = None, time_budget: float | None = None, *, batch_size: int = DEFAULT_BATCH,
        learning_rate: float = DEFAULT_LEARNING_RATE, normalization: str = "sphere", seed: int | None = None,
        device: Any = None, checkpoint: str | os.PathLike | None = None, checkpoint_every: float = 30.0,
        progress: bool | None = None, pool_points: int = POOL_POINTS) -> tuple[FittedSDF, dict[str, Any]]:
    """Fits a network to a shape; returns ``(FittedSDF, history)``.

    Args:
        mesh_or_samples: a mesh (``trimesh.Trimesh``, ``(vertices, faces)``, or a path trimesh
            reads), normalised into the unit sphere first (``normalization``: ``"sphere"``,
            ``"cube"`` or ``"none"``); or ``SdfSamples`` / a DeepSDF ``.npz`` path, used as they are
            (their stored transform kept). 2D shapes come as 2D ``SdfSamples`` (``sample_sdf`` of
            a ``PolygonSDF``), fitted by a network with ``in_features=2``.
        model: a network mapping (N, dim) points to (N, 1), with ``forward_with_gradient`` for
            ``loss="siren"``, trained in place; or a function of no arguments that builds one
            (e.g. ``functools.partial(SirenMLP, 3, 64, 2, 1)``), called after seeding, so that
            with ``seed`` its initialisation is reproducible too; default ``SirenMLP(dim, 128, 3, 1)``,
            built the same way. A model whose ``in_features`` differs from the shape's dimension
            is refused.
        loss: ``"sdf_l1"`` (DeepSDF's clamped L1, delta 0.1), ``"siren"`` (SIREN's SDF loss:
            needs surface points and normals) or ``"occupancy"`` (BCE; the model then gives logits).
        steps, time_budget: stop after this many steps or seconds of training, whichever comes
            first; 3,000 steps when neither is given. The learning rate follows a cosine from
            ``learning_rate`` down to 5% of it over the run.
        seed: a non-negative integer that makes the run reproducible (given ``steps``, on the same
            machine: the same model, bit for bit): the pool's sampling, the batches, torch's global
            generator (seeded with it) and so the initialisation of a network ``fit`` builds. A
            network passed in ready-made was initialised before: seed it yourself, or pass a
            function that builds it.
        device: where to train (default: CUDA when available, else the CPU).
        checkpoint: a file to save progress to every ``checkpoint_every`` seconds and at the end;
            when it exists, training resumes from it (the same settings required).
        progress: a tqdm progress bar (default: when stderr is a terminal).
        pool_points: points labelled once from a mesh, which batches are drawn from (4/5 near the
            surface, 1/5 uniform; surface points for ``loss="siren"``).

    Returns:
        The ``FittedSDF`` (points in the mesh's coordinates, distances in its units) and the
        history: per step ``step``, ``seconds`` (of training), ``loss``, ``learning_rate``; and
        ``sampling_seconds``, ``training_seconds``, ``steps``, ``points``.

    Raises:
        ValueError: an unknown loss, bad counts or seed, a mesh or samples that cannot train, or a
            checkpoint from another run.
        TypeError: a ``model`` that is neither a module nor a function that builds one.
    """
    one_of(loss, "loss", LOSSES)
    one_of(normalization, "normalization", ("sphere", "cube", "none"))
    steps = None if steps is None else integer(steps, "steps", minimum=1)
    time_budget = None if time_budget is None else real(time_budget, "time_budget", 0, low_open=True)
    batch_size = integer(batch_size, "batch_size", minimum=1)
    pool_points = integer(pool_points, "pool_points", minimum=1)
    learning_rate = real(learning_rate, "learning_rate", 0, low_open=True)
    if steps is None and time_budget is None:
        steps = DEFAULT_STEPS
    device = torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))
    seed = check_seed(seed)
    if seed is not None:
        torch.manual_seed(seed)
    network = _network(model, mesh_or_samples.dim if isinstance(mesh_or_samples, SdfSamples) else 3).to(device)
    if loss == "siren" and not hasattr(network, "forward_with_gradient"):
        raise ValueError("loss='siren' needs a model with forward_with_gradient (e.g. fastsdf.SirenMLP)")

    start = time.perf_counter()
    pool, transform = _source(mesh_or_samples, normalization, loss, seed, pool_points)
    pool = pool.to(device)
    sampling_seconds = time.perf_counter() - start

    generator = torch.Generator().manual_seed(seed if seed is not None else int(torch.randint(2**62, ())))
    optimiser = torch.optim.Adam(network.parameters(), lr=learning_rate)
    settings = {"loss": loss, "steps": steps, "time_budget": time_budget, "batch_size": batch_size,
                "learning_rate": learning_rate}
    if callable(getattr(network, "config", None)):
        # A resume with another architecture (a Gaussian encoding of another sigma has the same
        # shapes) is another run.
        settings["network"] = {"class": type(network).__name__, "config": network.config()}
    step_loss = _loss_function(loss, network, pool, batch_size, generator)

    def step(done: int) -> torch.Tensor:
        value = step_loss()
        if not torch.isfinite(value):
            raise ValueError(f"training diverged at step {done} (loss {value.item()}): try a smaller learning_rate")
        return value

    def rate(done: int, trained: float) -> float:
        fraction = max(done / steps if steps else 0.0, trained / time_budget if time_budget else 0.0)
        cosine = 0.5 * (1 + math.cos(math.pi * fraction))
        return learning_rate * (FINAL_LEARNING_RATE + (1 - FINAL_LEARNING_RATE) * cosine)

    history = train_steps(network, optimiser, generator, settings, step=step, steps=steps, time_budget=time_budget,
                          rate=rate, label="fastsdf fit" if steps else f"fastsdf fit ({time_budget:g} s)",
                          checkpoint=checkpoint, checkpoint_every=checkpoint_every, progress=progress)
    history.update(sampling_seconds=sampling_seconds, points=history["steps"] * batch_size)
    kind = "occupancy" if loss == "occupancy" else "sdf"
    return FittedSDF(network, transform, kind, _summary(history, settings)), history


def _summary(history: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """What a saved model keeps of its training: the settings, totals and the loss curve thinned to
    at most 1,000 points."""
    keep = np.unique(np.linspace(0, len(history["step"]) - 1, min(len(history["step"]), 1000)).astype(int))
    curve = {key: [history[key][i] for i in keep] for key in ("step", "seconds", "loss", "learning_rate")} \
        if len(history["step"]) else {key: [] for key in ("step", "seconds", "loss", "learning_rate")}
    totals = {key: history[key] for key in ("sampling_seconds", "training_seconds", "steps", "points")}
    return {**curve, **totals, "settings": settings}
