"""Training data the DeepSDF, saved-model and CLI tests share."""

from __future__ import annotations

import numpy as np

from fastsdf.geometry.sampling import SdfSamples


def sphere_samples(radius: float, rng: np.random.Generator, count: int = 6000) -> SdfSamples:
    """DeepSDF-style samples of a sphere: most near the surface (std 0.02), a fifth uniform in the cube."""
    near = count - count // 5
    directions = rng.standard_normal((near, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    points = np.concatenate([directions * (radius + rng.normal(0, 0.02, (near, 1))),
                             rng.uniform(-1, 1, (count // 5, 3))])
    return SdfSamples(points, np.linalg.norm(points, axis=1) - radius)
