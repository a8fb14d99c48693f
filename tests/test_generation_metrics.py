"""The generation metrics (MMD, COV, 1-NNA, nearest training shape) on sets whose answers are known,
and PointFlow's Chamfer distance against a brute-force twin."""

from __future__ import annotations

import numpy as np
import pytest

import fastsdf
from fastsdf import metrics
from fastsdf.metrics import chamfer_matrix, generation_metrics, generation_scores, nearest_shapes, point_clouds


def brute_chamfer(a: np.ndarray, b: np.ndarray) -> float:
    squared = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    return squared.min(axis=1).mean() + squared.min(axis=0).mean()


@pytest.mark.parametrize("pair_elements", [1 << 24, 7])  # all of a pair's products at once, or a few rows
def test_chamfer_matrix_is_pointflow_s_chamfer(rng: np.random.Generator, monkeypatch: pytest.MonkeyPatch,
                                               pair_elements: int) -> None:
    monkeypatch.setattr(metrics, "_PAIR_ELEMENTS", pair_elements)
    offset = rng.uniform(-1e3, 1e3, 3)  # far from the origin: float32 must still tell neighbours apart
    a = rng.standard_normal((3, int(rng.integers(1, 60)), 3)) + offset
    b = rng.standard_normal((4, int(rng.integers(1, 60)), 3)) + rng.uniform(-1, 1, 3) + offset
    expected = np.array([[brute_chamfer(x, y) for y in b] for x in a])
    # The documented bound: a neighbour picked in float32 is off by at most ~1e-6 of the squared extent
    # of the pair around a[i]'s centre (2^-24 rounding of |q|^2 - 2 p.q, a few operations, both ways).
    extent = max(float(np.square(np.concatenate([x, y]) - x.mean(axis=0)).sum(axis=1).max()) for x in a for y in b)
    np.testing.assert_allclose(chamfer_matrix(a, b), expected, rtol=1e-9, atol=3e-6 * extent)
    assert np.allclose(np.diag(chamfer_matrix(a, a)), 0, atol=1e-12)
    for bad in (np.zeros((2, 5, 2)), np.zeros((0, 5, 3)), np.full((1, 2, 3), np.nan)):
        with pytest.raises(ValueError, match="point clouds"):
            chamfer_matrix(bad, a)


def test_chamfer_matrix_is_exact_away_from_ties(rng: np.random.Generator) -> None:
    """Up to 2,048 points (the metrics' size) on one lattice of spacing 1/13, each cloud jittered by
    at most 0.01: a point's nearest neighbour is its own site's, at least 5.9e-4 closer in squared
    distance than any other, far beyond float32's rounding, so the matrix is the float64 brute force's."""
    sites = np.stack(np.meshgrid(*[np.arange(13)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    sites = sites[rng.permutation(len(sites))[:int(rng.integers(1000, 2049))]] / 13
    a = sites + rng.uniform(-0.01, 0.01, (2, *sites.shape))
    b = sites + rng.uniform(-0.01, 0.01, (3, *sites.shape))
    expected = np.array([[brute_chamfer(x, y) for y in b] for x in a])
    np.testing.assert_allclose(chamfer_matrix(a, b), expected, rtol=1e-12)


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


def test_scores_from_matrices_computed_once(rng: np.random.Generator) -> None:
    """generation_scores on the three matrices is generation_metrics; the caller's matrices are left as they were."""
    generated = rng.standard_normal((int(rng.integers(2, 7)), 20, 3))
    reference = rng.standard_normal((int(rng.integers(2, 7)), 25, 3))
    matrices = [chamfer_matrix(generated, reference), chamfer_matrix(generated, generated),
                chamfer_matrix(reference, reference)]
    copies = [m.copy() for m in matrices]
    expected = generation_metrics(generated, reference)
    assert generation_scores(*matrices) == {key: expected[key] for key in ("mmd", "cov", "1-nna")}
    assert all(np.array_equal(m, c) for m, c in zip(matrices, copies))
    with pytest.raises(ValueError, match=r"\(G, R\)"):
        generation_scores(matrices[0][:, 1:], matrices[1], matrices[2])
    with pytest.raises(ValueError, match="finite"):
        generation_scores(np.full_like(matrices[0], np.nan), matrices[1], matrices[2])


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
