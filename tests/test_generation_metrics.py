"""The generation metrics (MMD, COV, 1-NNA, nearest training shape) on sets whose answers are known,
and PointFlow's Chamfer distance against a brute-force twin."""

from __future__ import annotations

import numpy as np
import pytest

import fastsdf
from fastsdf.metrics import chamfer_matrix, generation_metrics, nearest_shapes, point_clouds


def brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    return squared.min(axis=1).mean() + squared.min(axis=0).mean()


def test_chamfer_matrix_is_pointflow_s_chamfer(rng: np.random.Generator) -> None:
    a = rng.standard_normal((3, int(rng.integers(1, 60)), 3))
    b = rng.standard_normal((4, int(rng.integers(1, 60)), 3)) + rng.uniform(-1, 1, 3)
    expected = np.array([[brute_chamfer(x, y) for y in b] for x in a])
    np.testing.assert_allclose(chamfer_matrix(a, b), expected, rtol=1e-9, atol=1e-12 * float(np.abs(b).max()) ** 2)
    assert np.allclose(np.diag(chamfer_matrix(a, a)), 0, atol=1e-12)
    for bad in (np.zeros((2, 5, 2)), np.zeros((0, 5, 3)), np.full((1, 2, 3), np.nan)):
        with pytest.raises(ValueError, match="point clouds"):
            chamfer_matrix(bad, a)


def test_identical_sets(rng: np.random.Generator) -> None:
    """Distinct shapes matched with their copies: MMD 0, COV 1, and 1-NNA 0 (each shape's nearest
    neighbour is its copy in the other set); copies of one shape: every distance ties, 1-NNA 0.5."""
    clouds = rng.standard_normal((5, 40, 3)) + 3 * rng.standard_normal((5, 1, 3))
    result = generation_metrics(clouds, clouds.copy())
    assert result["mmd"] == pytest.approx(0, abs=1e-12) and result["cov"] == 1.0 and result["1-nna"] == 0.0
    assert (result["generated"], result["reference"], result["n_points"]) == (5, 5, 40)
    same = np.repeat(clouds[:1], 4, axis=0)
    result = generation_metrics(same, same.copy())
    assert result["1-nna"] == 0.5 and result["mmd"] == pytest.approx(0, abs=1e-12)
    assert result["cov"] == 1 / 4  # every generated shape's closest reference is the first one


def test_disjoint_sets(rng: np.random.Generator) -> None:
    """Two sets far apart: the classifier tells them apart every time; MMD is the gap."""
    reference = rng.uniform(-0.1, 0.1, (4, 30, 3))
    generated = rng.uniform(-0.1, 0.1, (3, 30, 3)) + np.array([100.0, 0.0, 0.0])
    result = generation_metrics(generated, reference)
    assert result["1-nna"] == 1.0
    distances = chamfer_matrix(generated, reference)
    assert result["mmd"] == pytest.approx(distances.min(axis=0).mean(), rel=1e-12)
    assert 2 * 99.8**2 < result["mmd"] < 2 * 100.2**2


def test_a_hand_worked_case() -> None:
    """One-point clouds on a line, generated {0, 1} and reference {0, 10}: Chamfer = 2 d^2.
    MMD = (0 + 2 * 9^2) / 2; both generated shapes' closest reference is 0, so COV = 1/2; 1-NNA: g0's
    nearest is r0 (wrong), g1's are g0 and r0 at 2 (a tie, half right), r0's is g0 (wrong), r10's
    is g1 at 162 < 200 (wrong): 0.5 / 4."""
    point = lambda x: np.array([[[x, 0.0, 0.0]]])  # noqa: E731
    generated = np.concatenate([point(0), point(1)])
    reference = np.concatenate([point(0), point(10)])
    result = generation_metrics(generated, reference)
    assert result == {"mmd": 81.0, "cov": 0.5, "1-nna": 0.125, "generated": 2, "reference": 2, "n_points": 1}


def test_meshes_are_sampled_and_copies_are_found(rng: np.random.Generator) -> None:
    spheres = [fastsdf.extract_mesh(fastsdf.Sphere(r), 20, progress=False) for r in (0.3, 0.6, 0.9)]
    meshes = [(np.asarray(v), np.asarray(f)) for v, f in spheres]
    seed = int(rng.integers(2**62))
    clouds = point_clouds(meshes, 300, seed=seed)
    assert clouds.shape == (3, 300, 3)
    np.testing.assert_allclose(np.linalg.norm(clouds, axis=2).mean(axis=1), [0.3, 0.6, 0.9], atol=0.02)
    distances, indices = nearest_shapes(meshes[::-1], meshes[:2], n_points=300, seed=seed)
    # Two samplings of one sphere of radius 0.6 differ by about 0.01 (300 points); 0.6 and 0.9 by 2 * 0.3^2.
    assert indices.tolist() == [1, 1, 0] and distances[1] < 0.02 and distances[0] > 0.15
    result = generation_metrics(meshes[:2], meshes[:2], n_points=300, seed=seed)
    assert result["cov"] == 1.0 and result["mmd"] < 0.02  # copies differ only by their samples
    empty = (np.zeros((0, 3)), np.zeros((0, 3), np.int64))
    with pytest.raises(ValueError, match=r"meshes\[1\]"):
        point_clouds([meshes[0], empty])
    with pytest.raises(ValueError, match="empty"):
        point_clouds([])
