"""fastsdf.fit, FittedSDF / load_model, the losses, checkpoints, and fastsdf.metrics.

Training runs are short (small pools, a few dozen steps): they check the mechanics, units and
resumption; the quality figures are the business of benchmarks/test_bench_fit.py.
"""

from __future__ import annotations

import functools
import inspect
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

import fastsdf
from fastsdf import metrics
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.geometry.sampling import sample_sdf
from fastsdf.nn import SirenMLP
from fastsdf.training import losses
from fastsdf.training.fitted import FittedSDF

from mesh_helpers import bumpy_sphere

SMALL = {"pool_points": 20_000, "batch_size": 512, "progress": False}


@pytest.fixture
def mesh(rng) -> tuple[np.ndarray, np.ndarray]:
    """A bumpy sphere far from the origin and in other units, so that normalisation matters."""
    verts, faces = bumpy_sphere(rng)
    return verts * 40.0 + np.array([100.0, -20.0, 5.0]), faces


def small_network(seed: int | None = None) -> SirenMLP:
    if seed is not None:
        torch.manual_seed(seed)
    return SirenMLP(3, 32, 1, 1, double_backward=False)


def test_fit_learns_the_shape_in_the_mesh_s_units(mesh, seed: int) -> None:
    verts, faces = mesh
    model, history = fastsdf.fit((verts, faces), SirenMLP(3, 64, 2, 1, double_backward=False), steps=200,
                                 seed=seed % 2**31, **SMALL)
    assert isinstance(model, FittedSDF) and model.kind == "sdf"
    assert history["steps"] == 200 and len(history["loss"]) == 200
    assert np.mean(history["loss"][-10:]) < history["loss"][0] / 3
    assert history["training_seconds"] > 0 and history["points"] == 200 * 512
    assert sign_agreement(model, verts, faces, seed % 2**31) > 0.95
    lo, hi = model.bounds()
    points = np.random.default_rng(seed % 2**31).uniform(lo, hi, (4000, 3)).astype(np.float32)
    truth, predicted = fastsdf.MeshSDF(verts, faces)(points), model.sdf(points)
    # distances in the mesh's units (the radius is about 40): clamped at 0.1 normalised, 4 units
    assert np.median(predicted[truth < -8]) < -2 and np.median(predicted[truth > 8]) > 2
    assert np.all(lo < verts.min(axis=0)) and np.all(hi > verts.max(axis=0))


def test_sdf_accepts_numpy_and_tensors(mesh) -> None:
    model, _ = fastsdf.fit(mesh, small_network(), steps=5, **SMALL)
    points = mesh[0][:50].astype(np.float32)
    as_numpy = model.sdf(points)
    as_tensor = model.sdf(torch.from_numpy(points))
    assert isinstance(as_numpy, np.ndarray) and as_numpy.dtype == np.float32 and as_numpy.shape == (50,)
    assert isinstance(as_tensor, torch.Tensor)
    np.testing.assert_allclose(as_tensor.numpy(), as_numpy, rtol=0, atol=1e-6)
    with torch.no_grad():
        np.testing.assert_allclose(model(torch.from_numpy(points)).numpy(), as_numpy, rtol=1e-6, atol=1e-5)
    values, gradients = model.forward_with_gradient(torch.from_numpy(points))
    assert gradients.shape == (50, 3)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        model.sdf(np.zeros((4, 2)))


def test_save_and_load_model(mesh, tmp_path) -> None:
    model, _ = fastsdf.fit(mesh, small_network(), steps=5, **SMALL)
    path = model.save(tmp_path)
    assert path == tmp_path / "model.pt"
    loaded = fastsdf.load_model(tmp_path)
    points = mesh[0][:20].astype(np.float32)
    np.testing.assert_array_equal(loaded.sdf(points), model.sdf(points))
    assert loaded.transform == model.transform and loaded.kind == model.kind
    assert loaded.history["steps"] == 5
    assert fastsdf.load_model(path).kind == "sdf"


def test_load_model_errors(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no such model"):
        fastsdf.load_model(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model at all")
    with pytest.raises(ValueError, match="not a readable model"):
        fastsdf.load_model(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a fastsdf model"):
        fastsdf.load_model(tmp_path / "other.pt")
    torch.save({"format": "fastsdf.fitted", "version": 99}, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="newer fastsdf"):
        fastsdf.load_model(tmp_path / "future.pt")
    torch.save({"format": "fastsdf.fitted", "version": 1, "network": {"class": "SirenMLP", "config": {}}},
               tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="damaged"):
        fastsdf.load_model(tmp_path / "damaged.pt")


def sign_agreement(model: FittedSDF, verts: np.ndarray, faces: np.ndarray, seed: int) -> float:
    """How often the model's sign is right at random points in its bounds farther than 4 units
    (0.1 normalised) from the surface."""
    lo, hi = model.bounds()
    points = np.random.default_rng(seed).uniform(lo, hi, (4000, 3)).astype(np.float32)
    truth = fastsdf.MeshSDF(verts, faces)(points)
    far = np.abs(truth) > 4.0
    return float(np.mean(np.sign(model.sdf(points)[far]) == np.sign(truth[far])))


def test_occupancy_loss(mesh, seed: int) -> None:
    model, history = fastsdf.fit(mesh, SirenMLP(3, 64, 2, 1, double_backward=False), loss="occupancy",
                                 steps=200, seed=seed % 2**31, **SMALL)
    assert model.kind == "occupancy" and all(math.isfinite(v) for v in history["loss"])
    assert sign_agreement(model, *mesh, seed % 2**31) > 0.9


def test_siren_loss(mesh, seed: int) -> None:
    """SIREN's loss needs thousands of steps to settle the sign everywhere (benchmarks measure
    that); a short run must at least bring the surface to the zero level."""
    model, history = fastsdf.fit(mesh, SirenMLP(3, 64, 2, 1), loss="siren", steps=150, seed=seed % 2**31,
                                 learning_rate=1e-4, **SMALL)
    assert model.kind == "sdf" and all(math.isfinite(v) for v in history["loss"])
    assert np.mean(history["loss"][-10:]) < history["loss"][0] / 3
    on_surface = sample_sdf(mesh, n_uniform=0, n_near=0, n_surface=2000, seed=seed % 2**31).surface_points
    lo, hi = model.bounds()
    anywhere = np.random.default_rng(seed % 2**31).uniform(lo, hi, (2000, 3))
    assert np.mean(np.abs(model.sdf(on_surface.astype(np.float32)))) < \
        0.3 * np.mean(np.abs(model.sdf(anywhere.astype(np.float32))))


def test_fit_from_samples_keeps_their_frame(rng, seed: int) -> None:
    verts, faces = bumpy_sphere(rng)
    transform = NormalizationTransform(np.array([0.5, 0.0, 0.0]), 2.0)
    samples = sample_sdf((verts, faces), n_uniform=2000, n_near=8000, seed=seed % 2**31)
    samples.transform = transform
    model, _ = fastsdf.fit(samples, small_network(), steps=5, batch_size=256, progress=False)
    assert model.transform == transform
    with pytest.raises(ValueError, match="surface points"):
        fastsdf.fit(samples, small_network(), loss="siren", steps=5, progress=False)


def test_time_budget_stops_the_run(mesh) -> None:
    _, history = fastsdf.fit(mesh, small_network(), time_budget=0.5, **SMALL)
    assert 0.5 <= history["training_seconds"] < 5 and history["steps"] >= 1


@pytest.mark.parametrize("kwargs, message", [
    ({"loss": "mse"}, "loss"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"time_budget": -1}, "time_budget"),
    ({"batch_size": 0}, "batch_size"),
    ({"learning_rate": float("nan")}, "learning_rate"),
    ({"normalization": "box"}, "normalization"),
])
def test_bad_arguments(kwargs: dict, message: str, mesh) -> None:
    with pytest.raises(ValueError, match=message):
        fastsdf.fit(mesh, small_network(), **{**SMALL, **kwargs})


def test_bad_meshes(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        fastsdf.fit(tmp_path / "missing.obj", small_network(), steps=1, **SMALL)
    with pytest.raises(ValueError, match="empty"):
        fastsdf.fit((np.zeros((3, 3)), np.zeros((0, 3), int)), small_network(), steps=1, **SMALL)


def test_a_killed_run_resumes_where_it_stopped(mesh, tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints every step; a run killed after 12 of 30 steps and resumed ends where an
    uninterrupted run ends (same seed, same thread count: the kernels are deterministic)."""
    options = {**SMALL, "steps": 30, "seed": 7, "checkpoint_every": 0.0}
    whole, _ = fastsdf.fit(mesh, small_network(seed=0), checkpoint=tmp_path / "whole.pt", **options)

    real_step = torch.optim.Adam.step
    calls = {"n": 0}

    def dying_step(self, *args, **kwargs):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 12:
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.fit(mesh, small_network(seed=0), checkpoint=tmp_path / "run.pt", **options)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    resumed, history = fastsdf.fit(mesh, small_network(seed=1), checkpoint=tmp_path / "run.pt", **options)
    assert history["steps"] == 30 and len(history["loss"]) == 30
    points = mesh[0][:40].astype(np.float32)
    np.testing.assert_allclose(resumed.sdf(points), whole.sdf(points), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="another run"):
        fastsdf.fit(mesh, small_network(), checkpoint=tmp_path / "run.pt", **{**options, "steps": 40})


def test_losses_by_hand() -> None:
    predicted = torch.tensor([0.5, -0.05, 0.02])
    target = torch.tensor([0.2, -0.3, 0.0])
    # clamped at 0.1: |0.1 - 0.1| + |-0.05 + 0.1| + |0.02 - 0|
    assert torch.isclose(losses.clamped_l1(predicted, target), torch.tensor((0.0 + 0.05 + 0.02) / 3))
    # Beyond the clamp on the wrong side, DeepSDF's formula is flat; this one still pulls back.
    stuck = torch.tensor([0.3, 0.3, 0.4], requires_grad=True)
    value = losses.clamped_l1(stuck, torch.tensor([-0.5, 0.05, 0.2]))
    value.backward()
    assert torch.isclose(value, torch.tensor((0.4 + 0.25 + 0.0) / 3))
    assert torch.equal(stuck.grad, torch.tensor([1.0, 1.0, 0.0]) / 3)
    logits = torch.tensor([-20.0, 20.0])
    assert losses.occupancy_bce(logits, torch.tensor([True, False])) < 1e-6
    values = torch.tensor([0.0, 1.0])
    gradients = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    terms = losses.siren_sdf(values, gradients, torch.tensor([True, False]), torch.tensor([[0, 0, 1.0], [0, 0, 0]]))
    assert terms["surface"] == 0 and terms["normal"] == 0
    assert torch.isclose(terms["off_surface"], torch.tensor(math.exp(-100) / 2))
    assert torch.isclose(terms["eikonal"], torch.tensor(0.5))


# --------------------------------------------------------------------------------------------
# fastsdf.metrics
# --------------------------------------------------------------------------------------------


def test_scores_by_hand() -> None:
    assert metrics.f1_score([True, True, False, False], [True, False, True, False]) == 0.5
    assert metrics.f1_score([False, False], [False, False]) == 1.0
    assert metrics.iou([True, True, False], [True, False, True]) == pytest.approx(1 / 3)
    assert metrics.model_size_kb(nn_with_params(256)) == 1.0


def nn_with_params(count: int) -> torch.nn.Module:
    module = torch.nn.Module()
    module.p = torch.nn.Parameter(torch.zeros(count))
    return module


def test_occupancy_metrics_of_the_truth_and_of_a_shifted_shape(rng, seed: int) -> None:
    verts, faces = bumpy_sphere(rng)
    truth = fastsdf.MeshSDF(verts, faces)
    perfect = metrics.occupancy_metrics(truth, (verts, faces), n_points=20_000, seed=seed)
    assert perfect == {"f1_near": 1.0, "f1_volume": 1.0, "iou_volume": 1.0}
    shifted = metrics.occupancy_metrics(lambda p: truth(p - np.float32([0.02, 0, 0])), (verts, faces),
                                        n_points=20_000, seed=seed)
    assert 0.5 < shifted["f1_near"] < 0.99 and shifted["f1_volume"] > shifted["f1_near"]
    with pytest.raises(ValueError, match="values"):
        metrics.occupancy_metrics(lambda p: np.zeros(3), (verts, faces), n_points=100)


def test_surface_metrics(rng, seed: int) -> None:
    verts, faces = bumpy_sphere(rng)
    same = metrics.surface_metrics((verts, faces), (verts, faces), n_points=20_000, seed=seed)
    assert same["chamfer_l1"] < 1e-12 and same["f_score"] == 1.0 and same["normal_consistency"] > 0.999
    bigger = metrics.surface_metrics((verts * 1.05, faces), (verts, faces), n_points=20_000, tau=0.01, seed=seed)
    radius = np.linalg.norm(verts, axis=1).mean()
    assert bigger["chamfer_l1"] == pytest.approx(0.05 * radius, rel=0.2)
    assert bigger["f_score"] < 0.2 and bigger["normal_consistency"] > 0.9
    empty = metrics.surface_metrics((np.zeros((0, 3)), np.zeros((0, 3), int)), (verts, faces))
    assert empty["chamfer_l1"] == math.inf and empty["f_score"] == 0.0
    sphere = trimesh.creation.icosphere(3)
    assert metrics.surface_metrics(sphere, sphere, n_points=1000)["f_score"] == 1.0


def test_mesh_metrics_score_a_reconstruction_in_the_reference_s_frame(rng, seed: int) -> None:
    verts, faces = bumpy_sphere(rng)
    verts = verts * 40.0 + 100.0  # the reference's own units: tau is 1% of its unit sphere's radius in them
    same = metrics.mesh_metrics((verts, faces), (verts, faces), n_points=20_000, seed=seed)
    assert same["f1_near"] == same["f1_volume"] == same["iou_volume"] == same["f_score"] == 1.0
    assert same["chamfer_l1"] < 1e-9 and same["tau"] == pytest.approx(0.01 / fastsdf.normalize((verts, faces))[1].scale)
    moved = metrics.mesh_metrics((verts + [0.5 * same["tau"], 0, 0], faces), (verts, faces), n_points=20_000, seed=seed)
    # Moved by tau / 2 along x: every surface point within tau (F-score 1), a mean distance of about
    # tau / 2 times the mean |n_x| (1/2 on a sphere), and the near points of the thin shell that moved
    # across the surface (noise of std 2 tau) on the wrong side (about 10%).
    assert moved["f_score"] == 1.0 and 0.15 < moved["chamfer_l1"] / same["tau"] < 0.35
    assert 0.8 < moved["f1_near"] < 0.97 and moved["f1_volume"] > 0.98
    empty = metrics.mesh_metrics((np.zeros((0, 3)), np.zeros((0, 3), int)), (verts, faces), n_points=1000, seed=seed)
    assert empty["f1_near"] == empty["iou_volume"] == empty["f_score"] == 0.0 and empty["chamfer_l1"] == math.inf


def _fitted_state(mesh, model, seed: int | None) -> dict[str, torch.Tensor]:
    fitted, _ = fastsdf.fit(mesh, model, steps=15, seed=seed, **SMALL)
    return fitted.state_dict()


def test_a_seed_reproduces_the_model_bit_for_bit(mesh, seed: int) -> None:
    """Initialisation (of the default network, or of one a function builds), sampling and batches."""
    seed %= 2**31
    for model in (functools.partial(SirenMLP, 3, 32, 1, 1, double_backward=False), None):
        first, second, other = (_fitted_state(mesh, model, s) for s in (seed, seed, seed + 1))
        assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)
        assert not any(torch.equal(first[k], other[k]) for k in first)


@pytest.mark.parametrize("bad", [-1, 2**63, 1.5, "7", True])
def test_bad_seeds(bad, mesh) -> None:
    with pytest.raises(ValueError, match="seed"):
        fastsdf.fit(mesh, small_network(), steps=1, seed=bad, **SMALL)


def test_model_must_be_a_module_or_build_one(mesh) -> None:
    with pytest.raises(TypeError, match="model"):
        fastsdf.fit(mesh, "SirenMLP", steps=1, **SMALL)
    with pytest.raises(TypeError, match="model"):
        fastsdf.fit(mesh, lambda: "SirenMLP", steps=1, **SMALL)


def test_the_readme_states_the_checkpoint_interval() -> None:
    every = inspect.signature(fastsdf.fit).parameters["checkpoint_every"].default
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert every == 30 and "`checkpoint=path` saves every 30 s (`checkpoint_every=`)" in readme
