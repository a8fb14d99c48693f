"""Latent inference: the code of a new shape under a frozen decoder, from full or partial samples.

DeepSDF's reconstruction (its reconstruct.py, as its main block calls it) optimises a code of shape
(1, latent_size) from N(0, 0.01^2) with Adam for 800 iterations of 8,000 samples (4,000 from the
positive and 4,000 from the negative samples), at a rate of 5e-3 times 0.1^(i // 400), on
L1(clamp(f, -0.1, 0.1), clamp(s, -0.1, 0.1)) (mean over the samples; the prediction clamped too, so
points predicted beyond 0.1 give no gradient) plus 1e-4 mean(z^2): a code prior 1/latent_size as
strong as 1e-4 ||z||^2 (256 times weaker for the paper's 256-d codes). ``recipe="deepsdf"`` runs that
recipe (``DEEPSDF``). On 2 CPU cores it takes minutes per shape for the paper's 8 x 512 decoder
(users report about 125 s; one iteration of 2,048 points takes 0.11 s here in float32).

The default recipe (``FAST``) takes fewer, smaller, longer steps: 200 iterations of 1,024 fresh points
at a rate of 2e-2, divided by 10 halfway, on fastsdf's ``clamped_l1`` (the prediction clamped only
where the target is saturated too, so it keeps a gradient) plus 1e-4 ||z||^2; about 6 s per shape for
the paper's decoder on 2 cores. The code has only ``latent_size`` unknowns, and fresh points each
iteration give it a large part of the sample set over the run. Either way the decoder is frozen for
real (no weight gradients are computed: a third of the work), its weight-normalised weights are
computed once per reconstruction rather than at every call, and with ``precision="auto"`` (the
default recipe's) on CPUs with native bfloat16 (AVX512-BF16, AMX) the products run in bfloat16 with
float32 accumulation (0.05 s per 2,048 points).

Measured on a decoder trained on the shared meshes (4 x 256, codes of 64; clamped L1 on 20,000 of
each shape's samples): the original recipe reached 0.0073 (spot) and 0.0089 (homer) in 42-48 s;
the defaults 0.0074 and 0.0092 in about 1 s; with the rate DeepSDF uses (5e-3) they reached only
0.0102 and 0.0111.
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from fastsdf._validation import integer, one_of, real
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.samples_npz import load_npz
from fastsdf.geometry.sampling import SdfSamples
from fastsdf.training.autodecoder import AutoDecoder, LatentShape
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.losses import clamped_l1
from fastsdf.training.shapes import ShapeSamples

__all__ = ["DEEPSDF", "FAST", "RECIPES", "Reconstruction", "ReconstructionRecipe", "partial_view", "reconstruct"]

ITERATIONS = 200
SAMPLES_PER_ITERATION = 1024
LEARNING_RATE = 2e-2
CODE_REGULARIZATION = 1e-4
INIT_STD = 0.01


@dataclass(frozen=True)
class ReconstructionRecipe:
    """How ``reconstruct`` optimises a code.

    Attributes:
        iterations, samples_per_iteration: Adam steps, and the fresh samples each takes (half
            outside, half inside, drawn with replacement).
        learning_rate: Adam's initial rate, multiplied by 0.1 every ``iterations // 2`` iterations
            (DeepSDF's schedule: 10x lower halfway, and once more for the last iteration of an odd
            count).
        code_regularization, penalty: the code prior, ``code_regularization * ||z||^2``
            (``penalty="sum"``) or ``code_regularization * mean(z^2)`` (``"mean"``, DeepSDF's).
        clamp: ``"target"`` (fastsdf's ``clamped_l1``: the prediction clamped where the target is
            saturated) or ``"both"`` (DeepSDF's: prediction and target clamped to +-0.1, no gradient
            from points predicted beyond).
        init_std: the code starts from N(0, init_std^2).
        precision: ``"auto"``, ``"fp32"`` or ``"bf16"`` (see ``reconstruct``).
    """

    iterations: int = ITERATIONS
    samples_per_iteration: int = SAMPLES_PER_ITERATION
    learning_rate: float = LEARNING_RATE
    code_regularization: float = CODE_REGULARIZATION
    penalty: str = "sum"
    clamp: str = "target"
    init_std: float = INIT_STD
    precision: str = "auto"

    def __post_init__(self) -> None:
        # Frozen: the checked values (plain ints and floats) are set past the dataclass's guard.
        for name in ("iterations", "samples_per_iteration"):
            object.__setattr__(self, name, integer(getattr(self, name), name, minimum=1))
        for name in ("learning_rate", "init_std"):
            object.__setattr__(self, name, real(getattr(self, name), name, 0, low_open=True))
        object.__setattr__(self, "code_regularization", real(self.code_regularization, "code_regularization", 0))
        for name, allowed in (("penalty", ("sum", "mean")), ("clamp", ("target", "both")),
                              ("precision", ("auto", "fp32", "bf16"))):
            one_of(getattr(self, name), name, allowed)

    def learning_rate_at(self, iteration: int) -> float:
        """The rate of iteration ``iteration`` (from 0)."""
        return self.learning_rate * 0.1 ** (iteration // max(1, self.iterations // 2))

    def objective(self, predicted: torch.Tensor, sdf: torch.Tensor,
                  code: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(what is minimised, its data term): the clamped L1 of ``predicted`` against ``sdf`` plus
        the code prior."""
        errors = clamped_l1(predicted, sdf, deepsdf_gradient=self.clamp == "both")
        prior = code.square().sum() if self.penalty == "sum" else code.square().mean()
        return errors + self.code_regularization * prior, errors


# The default: quick, to within 1-3% of DeepSDF's loss (see the module's docstring).
FAST = ReconstructionRecipe()
# DeepSDF's reconstruct.py as its main block runs it, to reproduce the paper's numbers.
DEEPSDF = ReconstructionRecipe(iterations=800, samples_per_iteration=8000, learning_rate=5e-3, penalty="mean",
                               clamp="both", precision="fp32")
RECIPES = {"fast": FAST, "deepsdf": DEEPSDF}


@dataclass
class Reconstruction:
    """A reconstructed shape: its ``code``, the ``shape`` (a ``FittedSDF``: ``.sdf``, meshing,
    rendering; in the samples' original coordinates when they recorded their normalisation),
    the loss (its data term) and the learning rate per iteration, the seconds it took and the
    recipe it followed."""

    code: torch.Tensor
    shape: FittedSDF
    loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    learning_rate: list[float] = field(default_factory=list)
    recipe: ReconstructionRecipe = FAST


def partial_view(samples: SdfSamples, direction: Any = (0.0, 0.0, 1.0)) -> SdfSamples:
    """The samples on the side of the shape that faces ``direction`` (points p with p . d >= 0 in the
    normalised frame, the shape centred at the origin): a partial observation for shape completion."""
    d = np.asarray(direction, dtype=np.float64).reshape(-1)
    if d.shape != (3,) or not np.isfinite(d).all() or not np.any(d):
        raise ValueError(f"direction must be a non-zero 3-vector, got {direction!r}")
    keep = samples.points @ d >= 0
    if not keep.any():
        raise ValueError(f"no samples face the direction {tuple(d)}")
    surface, normals = samples.surface_points, samples.surface_normals
    if surface is not None:
        facing = surface @ d >= 0
        surface, normals = surface[facing], normals[facing]
    return SdfSamples(samples.points[keep], samples.sdf[keep], surface, normals, samples.transform)


def _native_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 natively (Linux's /proc/cpuinfo flags; False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _samples(data: Any) -> SdfSamples:
    if isinstance(data, SdfSamples):
        return data
    if isinstance(data, (str, os.PathLike)):
        return load_npz(data)
    if isinstance(data, tuple) and len(data) == 2:
        return SdfSamples(np.asarray(data[0]), np.asarray(data[1]))
    raise TypeError(f"samples must be SdfSamples, a DeepSDF .npz path or a (points, sdf) pair, got {type(data).__name__}")


def reconstruct(model: AutoDecoder | nn.Module, samples: Any, *, recipe: str | ReconstructionRecipe = "fast",
                iterations: int | None = None, samples_per_iteration: int | None = None,
                learning_rate: float | None = None, code_regularization: float | None = None,
                init_std: float | None = None, seed: int | None = None, latent_size: int | None = None,
                precision: str | None = None) -> Reconstruction:
    """The code that best explains ``samples`` under the frozen decoder.

    Args:
        model: an ``AutoDecoder`` (``train_deepsdf``'s, or ``load_model`` of
            ``fastsdf train-deepsdf``'s output), or a bare decoder ``decoder(points, latent)``
            (then ``latent_size`` is read from it, or given).
        samples: ``SdfSamples``, a DeepSDF ``.npz`` path, or ``(points, sdf)`` arrays, in the
            decoder's normalised frame: all of a shape's samples, or part of them
            (``partial_view``) for shape completion.
        recipe: ``"fast"`` (``FAST``, the default: 200 iterations of 1,024 samples at 2e-2,
            fastsdf's clamped L1, 1e-4 ||z||^2), ``"deepsdf"`` (``DEEPSDF``: DeepSDF's
            reconstruct.py, 800 iterations of 8,000 samples at 5e-3, prediction and target clamped,
            1e-4 mean(z^2), fp32; to reproduce the paper's numbers) or a ``ReconstructionRecipe``.
        iterations, samples_per_iteration, learning_rate, code_regularization, init_std,
            precision: replace the recipe's (``ReconstructionRecipe`` says what each does).
            ``precision``: ``"fp32"``, ``"bf16"`` (the decoder's products in bfloat16 under
            autocast, float32 accumulation; the code and the loss stay float32) or ``"auto"``: bf16
            on CPUs with native bfloat16 instructions, fp32 elsewhere.
        seed: makes the start and the samples reproducible.

    The decoder is left as it was (its parameters' ``requires_grad`` and training mode are
    restored).
    """
    if isinstance(recipe, str):
        if recipe not in RECIPES:
            raise ValueError(f"recipe must be one of {sorted(RECIPES)} or a ReconstructionRecipe, got {recipe!r}")
        recipe = RECIPES[recipe]
    elif not isinstance(recipe, ReconstructionRecipe):
        raise TypeError(f"recipe must be a name or a ReconstructionRecipe, got {type(recipe).__name__}")
    overrides = {"iterations": iterations, "samples_per_iteration": samples_per_iteration,
                 "learning_rate": learning_rate, "code_regularization": code_regularization, "init_std": init_std,
                 "precision": precision}
    recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is not None})
    decoder = model.decoder if isinstance(model, AutoDecoder) else model
    size = model.latent_size if isinstance(model, AutoDecoder) else (
        latent_size or getattr(decoder, "latent_size", None) or getattr(decoder, "latent_features", None))
    if not size:
        raise ValueError("cannot tell the decoder's latent size: pass latent_size=")
    observed = _samples(samples)
    if len(observed) == 0:
        raise ValueError("no samples to reconstruct from")
    pool = ShapeSamples(["target"], [observed])
    seed = int(seed) if seed is not None else int(torch.randint(2**31, ()))
    param = next(decoder.parameters())
    precision = recipe.precision
    if precision == "auto":
        precision = "bf16" if param.device.type == "cpu" and _native_bf16() else "fp32"

    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    code = torch.empty(size, dtype=param.dtype).normal_(0.0, recipe.init_std, generator=generator)
    code = code.to(param.device).requires_grad_(True)
    optimiser = torch.optim.Adam([code], lr=recipe.learning_rate)
    losses, rates = [], []
    flags, mode = [p.requires_grad for p in decoder.parameters()], decoder.training
    try:
        decoder.requires_grad_(False)
        decoder.eval()
        with parametrize.cached():
            for i in range(recipe.iterations):
                rates.append(recipe.learning_rate_at(i))
                optimiser.param_groups[0]["lr"] = rates[-1]
                points, sdf, _ = pool.batch([0], recipe.samples_per_iteration, seed, i)
                points, sdf = points.to(param.device, param.dtype), sdf.to(param.device, param.dtype)
                optimiser.zero_grad(set_to_none=True)
                with torch.autocast(param.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
                    predicted = decoder(points, code)[..., 0]
                loss, errors = recipe.objective(predicted.float(), sdf, code)
                loss.backward()
                optimiser.step()
                losses.append(errors.item())
    finally:
        for p, flag in zip(decoder.parameters(), flags):
            p.requires_grad_(flag)
        decoder.train(mode)
    seconds = time.perf_counter() - start
    final = code.detach()
    transform = observed.transform or NormalizationTransform.identity()
    return Reconstruction(final, FittedSDF(LatentShape(decoder, final), transform), losses, seconds, rates, recipe)
