"""2D shapes through the 3D APIs: fit, train_deepsdf, saved models, plot_sdf_2d, fastsdf demo --2d."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import fastsdf
from fastsdf import Circle, PolygonSDF, SirenMLP, fit, sample_sdf, save_npz, train_deepsdf
from fastsdf.cli import main
from fastsdf.plots import plot_sdf_2d
from fastsdf.training.shapes import ShapeSamples


def _disc(radius: float, seed: int, n_surface: int = 0):
    theta = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    outline = PolygonSDF(radius * np.stack([np.cos(theta), np.sin(theta)], 1))
    return sample_sdf(outline, n_uniform=300, n_near=700, n_surface=n_surface, seed=seed)


def test_fit_and_save_a_2d_shape(tmp_path: Path, seed: int) -> None:
    samples = _disc(0.6, seed, n_surface=100)
    model, history = fit(samples, lambda: SirenMLP(2, 16, 1, 1), steps=3, batch_size=64, seed=0, progress=False)
    assert model.dim == 2 and len(history["loss"]) == 3
    assert [b.tolist() for b in model.bounds()] == [[-1.0, -1.0], [1.0, 1.0]]
    fit(samples, lambda: SirenMLP(2, 16, 1, 1), loss="siren", steps=2, batch_size=64, seed=0, progress=False)
    values = model.sdf(np.zeros((4, 2), np.float32))
    model.save(tmp_path / "m.pt")
    assert np.array_equal(fastsdf.load_model(tmp_path / "m.pt").sdf(np.zeros((4, 2), np.float32)), values)
    with pytest.raises(ValueError, match="in_features=2"):
        fit(samples, lambda: SirenMLP(3, 16, 1, 1), steps=1)
    with pytest.raises(ValueError, match="shape \\(N, 2\\)"):
        model.sdf(np.zeros((4, 3), np.float32))
    with pytest.raises(ValueError, match="3D samples"):
        save_npz(tmp_path / "s.npz", samples)


def test_auto_decoder_on_2d_shapes(tmp_path: Path, seed: int) -> None:
    shapes = ShapeSamples(["small", "large"], [_disc(0.3, seed), _disc(0.7, seed + 1)])
    model, history = train_deepsdf(shapes, epochs=2, latent_size=4, samples_per_shape=64, progress=False,
                                   num_workers=0, decoder=SirenMLP(2, 16, 1, 1, latent_features=4))
    assert len(history["loss"]) == 2
    values = model.shape("large").sdf(np.zeros((3, 2), np.float32))
    assert values.shape == (3,) and len(model.interpolate("small", "large", 3)) == 3
    model.save(tmp_path / "a.pt")
    loaded = fastsdf.load_model(tmp_path / "a.pt")
    assert np.array_equal(loaded.shape("large").sdf(np.zeros((3, 2), np.float32)), values)
    default, _ = train_deepsdf(shapes, epochs=1, latent_size=4, samples_per_shape=8, progress=False, num_workers=0)
    assert default.decoder.in_features == 2
    with pytest.raises(ValueError, match="in_features=2"):
        train_deepsdf(shapes, SirenMLP(3, 16, 1, 1, latent_features=4), epochs=1, num_workers=0)
    with pytest.raises(ValueError, match="different dimensions"):
        ShapeSamples(["a", "b"], [_disc(0.3, seed), fastsdf.SdfSamples(np.zeros((2, 3)), np.zeros(2))])


def test_plot_sdf_2d(tmp_path: Path) -> None:
    grid = fastsdf.geometry.grid.Grid(17, ((-1, -1), (1, 1)), dim=2)
    field = Circle(0.5)(grid.points(0, 0, 17 * 17)).reshape(17, 17)
    plot_sdf_2d([field, -field], tmp_path / "f.png", titles=["a", "b"], outlines=[None, None])
    assert (tmp_path / "f.png").read_bytes()[1:4] == b"PNG"
    with pytest.raises(ValueError):
        plot_sdf_2d([field], tmp_path / "g.png", titles=["a", "b"])
    with pytest.raises(ValueError):
        plot_sdf_2d([np.full((3, 3), np.nan)], tmp_path / "g.png")


def test_demo_2d_runs_and_keeps_existing_outputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["demo", "--2d", "--out", str(tmp_path), "--steps", "2", "--resolution", "12", "--quiet"]
    assert main(argv) == 0
    assert (tmp_path / "demo2d.png").read_bytes()[1:4] == b"PNG"
    assert isinstance(fastsdf.load_model(tmp_path / "model.pt"), fastsdf.AutoDecoder)
    capsys.readouterr()
    assert main(argv) == 1 and "--overwrite" in capsys.readouterr().err
