"""Occupancy Networks: the encoder and decoders against plain float64 re-implementations, training,
resuming, saving, MISE against dense extraction, the metrics and the commands."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.cli import main
from fastsdf.geometry.sampling import SdfSamples
from fastsdf.metrics import occupancy_network_metrics
from fastsdf.nn import OccupancyDecoder, PointNetEncoder
from fastsdf.training.occupancy import OccupancyDraw
from fastsdf.training.shapes import ShapeSamples, load_shapes

from conftest import assert_identical_mesh
from training_helpers import run_together

RADII = (0.35, 0.55, 0.75)
SMALL = {"epochs": 8, "shapes_per_batch": 2, "samples_per_shape": 128, "cloud_points": 64, "learning_rate": 3e-3,
         "progress": False, "num_workers": 0}


def sphere_cloud_samples(radius: float, rng: np.random.Generator, count: int = 2000) -> SdfSamples:
    """Points uniform in [-1, 1]^3 with their distances to a sphere, and 500 of its surface points."""
    points = rng.uniform(-1, 1, (count, 3))
    directions = rng.standard_normal((500, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return SdfSamples(points, np.linalg.norm(points, axis=1) - radius, directions * radius, directions)


def spheres(seed: int) -> ShapeSamples:
    rng = np.random.default_rng(seed)
    return ShapeSamples([f"r{r}" for r in RADII], [sphere_cloud_samples(r, rng) for r in RADII])


def small_networks(seed: int = 0, conditioning: str = "batchnorm") -> tuple[PointNetEncoder, OccupancyDecoder]:
    torch.manual_seed(seed)
    return PointNetEncoder(16, 32, blocks=3), OccupancyDecoder(16, 32, blocks=2, conditioning=conditioning)


def _randomise(module: torch.nn.Module, rng: np.random.Generator) -> None:
    """Random values everywhere, running variances positive (the zero and one initialisations
    would hide mistakes)."""
    with torch.no_grad():
        for tensor in module.parameters():
            tensor.copy_(torch.from_numpy(rng.normal(0, 0.5, tensor.shape)))
        for name, buffer in module.named_buffers():
            values = rng.uniform(0.5, 1.5, buffer.shape) if name.endswith("var") else rng.normal(0, 0.5, buffer.shape)
            buffer.copy_(torch.from_numpy(values))


def _linear(x: np.ndarray, layer: torch.nn.Linear) -> np.ndarray:
    out = x @ layer.weight.detach().double().numpy().T
    return out if layer.bias is None else out + layer.bias.detach().double().numpy()


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0)


def _block(x: np.ndarray, block) -> np.ndarray:  # noqa: ANN001
    dx = _linear(_relu(_linear(_relu(x), block.fc_0)), block.fc_1)
    return (x if block.shortcut is None else _linear(x, block.shortcut)) + dx


def reference_encoder(encoder: PointNetEncoder, clouds: np.ndarray) -> np.ndarray:
    """ONet's ResNet-PointNet, written out in float64: (B, N, 3) -> (B, latent)."""
    x = _linear(clouds, encoder.fc_pos)
    for i, block in enumerate(encoder.resnet):
        if i:
            x = np.concatenate([x, np.broadcast_to(x.max(axis=1, keepdims=True), x.shape)], axis=-1)
        x = _block(x, block)
    return _linear(_relu(x.max(axis=1)), encoder.fc_c)


def reference_decoder(decoder: OccupancyDecoder, points: np.ndarray, codes: np.ndarray, training: bool) -> np.ndarray:
    """ONet's decoders in float64: points (B, T, 3), codes (B, L) -> (B, T); with conditional batch
    norm, statistics over all B * T points in training, the running ones otherwise."""
    c = codes[:, None, :]
    if decoder.conditioning == "concat":
        x = _linear(np.concatenate([points, np.broadcast_to(c, (*points.shape[:2], c.shape[-1]))], -1), decoder.fc_p)
        for block in decoder.resnet:
            x = _block(x, block)
        return _linear(_relu(x), decoder.fc_out)[..., 0]

    def cbn(x: np.ndarray, norm) -> np.ndarray:  # noqa: ANN001
        if training:
            rows = x.reshape(-1, x.shape[-1])
            mean, var = rows.mean(axis=0), rows.var(axis=0)
        else:
            mean, var = norm.running_mean.double().numpy(), norm.running_var.double().numpy()
        return _linear(c, norm.gamma) * (x - mean) / np.sqrt(var + 1e-5) + _linear(c, norm.beta)

    x = _linear(points, decoder.fc_p)
    for block in decoder.resnet:
        net = _linear(_relu(cbn(x, block.bn_0)), block.fc_0)
        x = x + _linear(_relu(cbn(net, block.bn_1)), block.fc_1)
    return _linear(_relu(cbn(x, decoder.bn)), decoder.fc_out)[..., 0]


def test_networks_have_onet_s_shape() -> None:
    encoder, decoder = PointNetEncoder(), OccupancyDecoder()
    assert len(encoder.resnet) == 5 and encoder.fc_pos.out_features == 1024 and encoder.fc_c.out_features == 256
    assert encoder.resnet[0].fc_0.in_features == 1024 and encoder.resnet[0].fc_1.out_features == 512
    assert len(decoder.resnet) == 5 and decoder.fc_p.out_features == 256 and decoder.bn.gamma.in_features == 256
    assert OccupancyDecoder(conditioning="concat").hidden_features == 128
    # Each block starts as its shortcut, each conditional batch norm as a plain one.
    assert not decoder.resnet[0].fc_1.weight.any() and torch.equal(decoder.bn.gamma.bias, torch.ones(256))


@pytest.mark.parametrize("conditioning", ["batchnorm", "concat"])
def test_encoder_and_decoder_match_a_float64_reference(conditioning: str, rng: np.random.Generator) -> None:
    encoder, decoder = small_networks(0, conditioning)
    for module in (encoder, decoder):
        _randomise(module, rng)
    shapes, count, samples = int(rng.integers(1, 4)), int(rng.integers(1, 40)), int(rng.integers(2, 30))
    clouds = rng.uniform(-1, 1, (shapes, count, 3))
    points = rng.uniform(-1, 1, (shapes, samples, 3))
    codes = encoder(torch.from_numpy(clouds).float())
    expected_codes = reference_encoder(encoder, clouds)
    scale = max(1.0, np.abs(expected_codes).max())
    np.testing.assert_allclose(codes.detach().numpy(), expected_codes, rtol=0, atol=1e-4 * scale)
    # The encoder sees a set: its order does not matter.
    shuffled = encoder(torch.from_numpy(clouds[:, rng.permutation(count)]).float())
    torch.testing.assert_close(shuffled, codes, rtol=0, atol=1e-5 * scale)
    for training in (True, False):
        decoder.train(training)
        running = [b.clone() for n, b in decoder.named_buffers()]
        expected = reference_decoder(decoder, points, codes.detach().double().numpy(), training)
        logits = decoder(torch.from_numpy(points).float(), codes.detach()[:, None, :])[..., 0]
        np.testing.assert_allclose(logits.detach().numpy(), expected, rtol=0, atol=2e-4 * max(1, np.abs(expected).max()))
        if not training:
            assert all(torch.equal(a, b) for a, b in zip(running, decoder.buffers()))
    if conditioning == "batchnorm":
        decoder.train()
        decoder(torch.from_numpy(points).float(), codes.detach()[:, None, :])
        # The running statistics moved 10% of the way to the batch's.
        first = decoder.resnet[0].bn_0
        x = decoder.fc_p(torch.from_numpy(points).float()).reshape(-1, first.features).detach().double()
        torch.testing.assert_close(first.running_mean.double(), 0.9 * running[0].double() + 0.1 * x.mean(0),
                                   rtol=0, atol=1e-5 * max(1.0, float(x.abs().max())))


def test_networks_reject_bad_inputs() -> None:
    encoder, decoder = small_networks()
    with pytest.raises(ValueError, match="N >= 1"):
        encoder(torch.zeros(2, 0, 3))
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        encoder(torch.zeros(5, 2))
    with pytest.raises(ValueError, match="latent must have shape"):
        decoder(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="conditioning"):
        OccupancyDecoder(conditioning="film")
    with pytest.raises(ValueError, match="blocks"):
        PointNetEncoder(blocks=0)
    decoder.train()
    with pytest.raises(ValueError, match="at least 2 points"):
        decoder(torch.zeros(1, 3), torch.zeros(16))
    with pytest.raises(ValueError, match="the decoder's latent size"):
        fastsdf.OccupancyNetwork(PointNetEncoder(8, 8), OccupancyDecoder(16, 8))


@pytest.fixture(scope="module")
def trained() -> tuple[fastsdf.OccupancyNetwork, dict]:
    encoder, decoder = small_networks(1)
    # Balanced draws: uniform ones give the smallest sphere ~3 inside points a batch, and 40 epochs
    # put its centre inside for about half of the seeds only.
    return fastsdf.train_occupancy(spheres(0), encoder, decoder, seed=2, **{**SMALL, "epochs": 40, "balanced": True})


def test_training_reduces_the_bce_and_tells_the_spheres_apart(trained) -> None:
    model, history = trained
    assert history["epoch"] == list(range(1, 41)) and not model.training
    assert np.mean(history["loss"][-5:]) < 0.6 * history["loss"][0]
    rng = np.random.default_rng(0)
    for radius in (RADII[0], RADII[-1]):
        cloud = sphere_cloud_samples(radius, rng).surface_points
        shape = model.shape(cloud)
        inside = shape.sdf(np.array([[0.0, 0.0, 0.0], [0.95, 0.95, 0.95]], np.float32))
        assert inside[0] < 0 < inside[1], (radius, inside)


def test_save_and_load_give_the_same_field(trained, tmp_path: Path, rng: np.random.Generator) -> None:
    model, _ = trained
    path = model.save(tmp_path / "onet")
    loaded = fastsdf.load_model(tmp_path / "onet")
    assert isinstance(loaded, fastsdf.OccupancyNetwork) and not loaded.training and path.name == "model.pt"
    assert loaded.settings["input_points"] == 64
    cloud, points = rng.uniform(-0.5, 0.5, (50, 3)), rng.uniform(-1, 1, (300, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.shape(cloud).sdf(points), model.shape(cloud).sdf(points))
    state = torch.load(path, weights_only=True)
    state["decoder"]["state_dict"]["bn.running_var"] = torch.full((32,), float("nan"))
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="NaN"):
        fastsdf.load_model(tmp_path / "bad.pt")


def test_a_stopped_run_resumes_to_the_uninterrupted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Streamed from files (with surface points) by a DataLoader worker."""
    data = tmp_path / "data"
    rng = np.random.default_rng(4)
    for radius in RADII:
        fastsdf.save_npz(data / f"r{radius}.npz", sphere_cloud_samples(radius, rng))
    options = {**SMALL, "epochs": 6, "seed": 7, "checkpoint_every": 0.0, "num_workers": 1}
    whole, _ = fastsdf.train_occupancy(data, *small_networks(3), checkpoint=tmp_path / "whole.pt", **options)
    real_step, calls = torch.optim.Adam.step, {"n": 0}

    def dying_step(self, *args, **kwargs):  # noqa: ANN001
        calls["n"] += 1
        if calls["n"] > 7:  # in the 4th of 6 epochs (2 steps each)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        fastsdf.train_occupancy(data, *small_networks(3), checkpoint=tmp_path / "run.pt", **options)
    monkeypatch.setattr(torch.optim.Adam, "step", real_step)
    resumed, history = fastsdf.train_occupancy(data, *small_networks(8), checkpoint=tmp_path / "run.pt", **options)
    assert history["epoch"] == list(range(1, 7))
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="another run"):
        fastsdf.train_occupancy(data, *small_networks(3), checkpoint=tmp_path / "run.pt", **{**options, "epochs": 9})


def test_batches_are_the_same_from_files_and_memory(tmp_path: Path, seed: int) -> None:
    memory = spheres(seed % 1000)
    for i, name in enumerate(memory.names):
        rng = np.random.default_rng(seed % 1000)
        samples = [sphere_cloud_samples(r, rng) for r in RADII][i]
        fastsdf.save_npz(tmp_path / f"{name}.npz", samples)
    files = load_shapes(tmp_path)
    for balanced in (False, True):
        draws = [OccupancyDraw(c, 50, 20, 0.01, seed, balanced)([2, 0], 3) for c in (memory, files)]
        for a, b in zip(*draws):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    clouds, points, inside = draws[0]
    assert clouds.shape == (2, 20, 3) and points.shape == (2, 50, 3)
    torch.testing.assert_close(inside, (points.norm(dim=-1) <= torch.tensor([RADII[2], RADII[0]])[:, None]).float())


def test_training_rejects_bad_data_and_settings() -> None:
    bare = ShapeSamples(["a"], [SdfSamples(np.zeros((4, 3)), np.array([-1.0, 1, 1, 1]))])
    with pytest.raises(ValueError, match="--n-surface"):
        fastsdf.train_occupancy(bare, *small_networks(), **SMALL)
    for bad in ({"samples_per_shape": 1}, {"cloud_noise": -1.0}, {"cloud_points": 0}, {"learning_rate": 0.0}):
        with pytest.raises(ValueError):
            fastsdf.train_occupancy(spheres(0), *small_networks(), **{**SMALL, **bad})
    with pytest.raises(ValueError, match="non-empty real"):
        fastsdf.OccupancyNetwork(*small_networks()).encode(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="finite"):
        fastsdf.OccupancyNetwork(*small_networks()).encode(np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="no points face"):
        fastsdf.partial_cloud(np.array([[0.0, 0.0, -1.0]]), (0, 0, 1))


# ------------------------------------------------------------------------------------------------
# MISE
# ------------------------------------------------------------------------------------------------


class _Affine:
    def __init__(self, normal: np.ndarray, offset: float):
        self.normal, self.offset = normal.astype(np.float32), np.float32(offset)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        # Elementwise, not points @ normal: BLAS's float32 dot products round by the batch's size
        # and alignment, and MISE evaluates other batches than the dense grid does (seed
        # 3263026057143826910: vertices 1 ulp apart).
        n = self.normal
        return points[:, 0] * n[0] + points[:, 1] * n[1] + points[:, 2] * n[2] - self.offset


def test_mise_gives_the_dense_mesh_where_the_corners_see_the_surface(rng: np.random.Generator) -> None:
    """Affine fields (extremes at block corners) and balls of radius above 2 coarsest blocks: the
    dense mesh, vertex for vertex, from a fraction of the evaluations."""
    for _ in range(2):
        resolution = tuple(int(r) for r in rng.integers(20, 150, 3))
        normal = rng.standard_normal(3)
        field = _Affine(normal / np.linalg.norm(normal), rng.uniform(-0.5, 0.5))
        dense = fastsdf.extract_mesh(field, resolution, method="dense")
        assert_identical_mesh(fastsdf.extract_mesh(field, resolution, method="mise"), dense)
        resolution = int(rng.integers(60, 200))
        ball = fastsdf.Sphere(rng.uniform(0.3, 0.7), rng.uniform(-0.2, 0.2, 3))
        calls = []

        def counted(points: np.ndarray) -> np.ndarray:
            calls.append(len(points))
            return ball(points)

        dense = fastsdf.extract_mesh(ball, resolution, method="dense")
        assert_identical_mesh(fastsdf.extract_mesh(counted, resolution, method="mise"), dense)
        assert sum(calls) < 0.6 * resolution ** 3


def test_mise_meshes_an_occupancy_model_closed(trained) -> None:
    model, _ = trained
    shape = model.shape(sphere_cloud_samples(0.55, np.random.default_rng(1)).surface_points)
    verts, faces = fastsdf.extract_mesh(shape, 41, method="mise")
    dense = fastsdf.extract_mesh(shape, 41, method="dense")
    assert len(faces) and abs(len(faces) - len(dense[1])) <= 0.05 * len(dense[1])


def test_onet_metrics_are_in_the_unit_cube(rng: np.random.Generator) -> None:
    """A sphere against itself scaled by 1.02: Chamfer-L1 about 1% of the radius, in units of the
    reference's longest side."""
    radius = rng.uniform(0.4, 0.8)
    truth = fastsdf.extract_mesh(fastsdf.Sphere(radius), 60)
    bigger = (truth[0] * 1.02, truth[1])
    scores = occupancy_network_metrics(fastsdf.Sphere(radius * 1.02), bigger, truth,
                                       fastsdf.NormalizationTransform.identity(), n_points=4000, seed=1)
    side = 2 * radius
    assert scores["unit_cube_scale"] == pytest.approx(1 / side, rel=0.02)
    assert scores["chamfer_l1"] == pytest.approx(0.02 * radius / side, rel=0.25)
    assert scores["normal_consistency"] > 0.99 and scores["iou_volume"] > 0.85


# ------------------------------------------------------------------------------------------------
# Commands
# ------------------------------------------------------------------------------------------------

CLI_SMALL = ["--latent-size", "8", "--width", "16", "--encoder-width", "16", "--blocks", "2", "--epochs", "2",
             "--shapes-per-batch", "2", "--samples-per-shape", "64", "--input-points", "32", "--workers", "0",
             "--quiet"]


def test_train_occupancy_and_complete_end_to_end(trained, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for radius in RADII:
        fastsdf.save_npz(data / f"r{radius}.npz", sphere_cloud_samples(radius, rng, 500))
    out = tmp_path / "run"
    assert main(["train-occupancy", str(data), "--out", str(out), *CLI_SMALL]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["model.pt", "training.png"]
    assert "occupancy accuracy" in capsys.readouterr().out
    assert main(["train-occupancy", str(data), "--out", str(out), *CLI_SMALL]) == 1
    assert "exists" in capsys.readouterr().err
    model = fastsdf.load_model(out)
    assert isinstance(model, fastsdf.OccupancyNetwork) and model.decoder.hidden_features == 16

    # A model whose field has a surface: the one trained on the spheres through the API.
    good = tmp_path / "good"
    trained[0].save(good)
    cloud = tmp_path / "cloud.npz"
    np.savez(cloud, points=sphere_cloud_samples(0.55, rng).surface_points)
    completed = tmp_path / "done"
    argv = ["complete", str(good), str(data / "r0.55.npz"), str(cloud), "--out", str(completed), "--resolution", "24",
            "--partial", "+z", "--quiet"]
    assert main(argv) == 0
    assert sorted(p.name for p in completed.iterdir()) == ["cloud.ply", "cloud.png", "completion.json", "r0.55.ply",
                                                           "r0.55.png"]
    assert main(argv) == 1 and "--overwrite" in capsys.readouterr().err
    assert main(["complete", str(out / "model.pt"), str(tmp_path / "missing.npz"), "--out", str(completed)]) == 1
    assert "no such point cloud" in capsys.readouterr().err
    assert main(["complete", str(good), str(data / "r0.55.npz"), "--out", str(completed), "--points", "-1"]) == 2


def test_complete_refuses_other_models_and_clouds(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fitted = fastsdf.FittedSDF(fastsdf.SirenMLP(3, 8, 1, 1), fastsdf.NormalizationTransform.identity())
    fitted.save(tmp_path / "fit")
    np.save(tmp_path / "flat.npy", np.zeros((4, 2)))
    assert main(["complete", str(tmp_path / "fit"), str(tmp_path / "flat.npy"), "--out", str(tmp_path / "o")]) == 1
    assert "does not hold an occupancy network" in capsys.readouterr().err
    fastsdf.OccupancyNetwork(*small_networks()).save(tmp_path / "onet")
    assert main(["complete", str(tmp_path / "onet"), str(tmp_path / "flat.npy"), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "(N, 3)" in err


# ------------------------------------------------------------------------------------------------
# Under torchrun
# ------------------------------------------------------------------------------------------------


def test_two_processes_train_what_one_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torchrun --standalone with 2 CPU processes (gloo) through the command: the batch norms take
    the whole batch's statistics, so the model is the single process's (to summation order). The
    second batch of each epoch has 1 shape: the second process's share is empty. ~10 s on 2 busy cores."""
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for radius in RADII:
        fastsdf.save_npz(data / f"r{radius}.npz", sphere_cloud_samples(radius, rng, 500))
    options = [*CLI_SMALL[:CLI_SMALL.index("--epochs")], "--epochs", "3", *CLI_SMALL[CLI_SMALL.index("--epochs") + 2:]]
    assert main(["train-occupancy", str(data), "--out", str(tmp_path / "one"), *options]) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "fastsdf.cli", "train-occupancy", str(data), "--out", str(tmp_path / "two"), *options]
    [result] = run_together([command], 240)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 processes" in result.stdout and not (tmp_path / "two" / "checkpoint.pt").exists()
    one, two = fastsdf.load_model(tmp_path / "one"), fastsdf.load_model(tmp_path / "two")
    assert one.history["epoch"] == two.history["epoch"] == [1, 2, 3]
    np.testing.assert_allclose(two.history["loss"], one.history["loss"], rtol=1e-5)
    for (name, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5 * max(1.0, float(a.abs().max())), msg=name)
