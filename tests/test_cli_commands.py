"""The fastsdf commands end to end on small runs: fit, extract, eval, render, train-deepsdf,
reconstruct, bench, demo; and what a user sees on bad input (one line, a non-zero exit, nothing
that was there overwritten)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import fastsdf
from fastsdf.cli import main
from fastsdf.cli.demo import bundled_mesh

from cli_helpers import SMALL_DEEPSDF, SMALL_FIT, read_ply
from training_helpers import sphere_samples

@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fit")
    assert main(["fit", str(bundled_mesh()), "--out", str(out), *SMALL_FIT]) == 0
    return out


def assert_one_line_error(capsys: pytest.CaptureFixture[str], *words: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in err, err


def test_fit_writes_model_mesh_metrics_and_pictures(fitted: Path) -> None:
    names = sorted(p.name for p in fitted.iterdir())
    assert names == ["mesh.ply", "mesh.png", "metrics.json", "model.pt", "render.png", "training.png"]
    metrics = json.loads((fitted / "metrics.json").read_text())
    for key in ("f1_near", "f1_volume", "iou_volume", "chamfer_l1", "chamfer_l2", "f_score", "normal_consistency",
                "training_seconds", "peak_memory_mb", "model_size_kb"):
        assert np.isfinite(metrics[key]), key
    assert metrics["steps"] == 30 and 0 < metrics["f1_volume"] <= 1
    model = fastsdf.load_model(fitted)
    verts, faces = read_ply(fitted / "mesh.ply")
    assert len(faces) == metrics["triangles"] > 0
    lo, hi = model.bounds()
    assert (verts >= lo - 1e-4).all() and (verts <= hi + 1e-4).all()


def test_extract_eval_render(fitted: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["extract", str(fitted), "--out", str(tmp_path / "m.ply"), "--resolution", "24", "--quiet"]) == 0
    assert "peak memory" in capsys.readouterr().out and len(read_ply(tmp_path / "m.ply")[1]) > 0
    assert main(["eval", str(fitted / "model.pt"), str(bundled_mesh()), "--points", "2000", "--resolution", "24",
                 "--seed", "0", "--out", str(tmp_path / "e.json"), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "e.json").read_text()) and 0 <= printed["f1_near"] <= 1
    assert main(["render", str(fitted), "--out", str(tmp_path / "model.png"), "--size", "48"]) == 0
    assert main(["render", str(bundled_mesh()), "--out", str(tmp_path / "mesh.png"), "--size", "48"]) == 0
    assert (tmp_path / "model.png").stat().st_size > 500 and (tmp_path / "mesh.png").stat().st_size > 500


def test_eval_scores_reconstructed_meshes_one_or_a_folder(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    import trimesh

    for folder, radius in (("truth", 1.0), ("recon", 1.02)):
        (tmp_path / folder).mkdir()
        for name, centre in (("a", 0.0), ("b", 5.0)):
            trimesh.creation.icosphere(2, radius).apply_translation([centre, 0, 0]).export(tmp_path / folder / f"{name}.obj")
    trimesh.creation.box().export(tmp_path / "recon" / "interpolation_0.ply")  # no reference: listed, not scored
    options = ["--points", "2000", "--seed", "0", "--quiet"]
    assert main(["eval", str(tmp_path / "recon" / "a.obj"), str(tmp_path / "truth" / "a.obj"), *options]) == 0
    one = json.loads(capsys.readouterr().out)
    assert one["chamfer_l1"] == pytest.approx(0.02, rel=0.3) and one["f1_volume"] > 0.9
    assert main(["eval", str(tmp_path / "recon"), str(tmp_path / "truth"), *options, "--out", str(tmp_path / "m.json")]) == 0
    every = json.loads(capsys.readouterr().out)
    assert every == json.loads((tmp_path / "m.json").read_text())
    assert every["count"] == 2 and sorted(every["shapes"]) == ["a", "b"] and every["unmatched"] == ["interpolation_0"]
    assert every["shapes"]["a"] == one and every["mean"]["chamfer_l1"] == pytest.approx(one["chamfer_l1"], rel=0.3)
    assert every["median"]["f_score"] <= 1 and "tau" not in every["mean"]

    assert main(["eval", str(tmp_path / "recon"), str(tmp_path / "truth" / "a.obj"), *options]) == 1
    assert_one_line_error(capsys, "folder of meshes")
    (tmp_path / "other").mkdir()
    assert main(["eval", str(tmp_path / "recon"), str(tmp_path / "other"), *options]) == 1
    assert_one_line_error(capsys, "no mesh in")
    trimesh.creation.icosphere(1).export(tmp_path / "truth" / "a.ply")
    assert main(["eval", str(tmp_path / "recon"), str(tmp_path / "truth"), *options]) == 1
    assert_one_line_error(capsys, "a.obj and a.ply")
    (tmp_path / "truth" / "a.ply").unlink()
    written = (tmp_path / "m.json").read_bytes()
    assert main(["eval", str(tmp_path / "recon"), str(tmp_path / "truth"), *options, "--out", str(tmp_path / "m.json")]) == 1
    assert_one_line_error(capsys, "m.json")
    assert (tmp_path / "m.json").read_bytes() == written


def test_train_deepsdf_then_reconstruct(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    for radius in (0.3, 0.5, 0.7):
        fastsdf.save_npz(tmp_path / "data" / f"r{radius}.npz", sphere_samples(radius, rng, 2000))
    fastsdf.save_npz(tmp_path / "new" / "r0.4.npz", sphere_samples(0.4, rng, 2000))
    run = tmp_path / "run"
    assert main(["train-deepsdf", str(tmp_path / "data"), "--out", str(run), *SMALL_DEEPSDF]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["model.pt", "training.png"]
    assert "on 1 process" in capsys.readouterr().out

    rec = tmp_path / "rec"
    assert main(["reconstruct", str(run), str(tmp_path / "new"), str(tmp_path / "data" / "r0.7.npz"), "--out",
                 str(rec), "--iterations", "100", "--partial", "+z", "--resolution", "24", "--interpolate", "3",
                 "--quiet"]) == 0
    summary = json.loads((rec / "reconstruction.json").read_text())
    assert sorted(summary["shapes"]) == ["r0.4", "r0.7"] and summary["partial"] == "+z"
    assert len(summary["shapes"]["r0.4"]["code"]) == 8
    for name in ("r0.4.ply", "r0.4.png", "r0.7.ply", "interpolation_0.ply", "interpolation_2.ply"):
        assert (rec / name).stat().st_size > 0, name
    verts, _ = read_ply(rec / "r0.7.ply")
    assert abs(np.linalg.norm(verts, axis=1).mean() - 0.7) < 0.1


def test_bench_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "MeshSDF" in out and "marching_cubes" in out and out.count("M/s") == 4


def test_demo_runs_the_whole_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path), "--steps", "30", "--resolution", "32", "--quiet"]) == 0
    out = capsys.readouterr().out
    for name in ("spot.npz", "model.pt", "mesh.ply", "metrics.json", "training.png", "render.png", "mesh.png"):
        assert (tmp_path / name).stat().st_size > 0 and str((tmp_path / name).resolve()) in out, name
    assert len(fastsdf.load_npz(tmp_path / "spot.npz")) == 500_000


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("argv", [
    ["fit", "MESH", "--out", "OUT", "--steps", "0"],
    ["fit", "MESH", "--out", "OUT", "--time-budget", "-1"],
    ["extract", "OUT", "--out", "OUT/x.ply", "--resolution", "1"],
    ["reconstruct", "OUT", "x.npz", "--out", "OUT", "--partial", "up"],
    ["train-deepsdf", "OUT", "--out", "OUT", "--epochs", "zero"],
])
def test_out_of_range_arguments_exit_2(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [a.replace("OUT", str(tmp_path)).replace("MESH", str(bundled_mesh())) for a in argv]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_bad_files_give_one_line_and_keep_what_was_there(fitted: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    precious = {name: b"earlier results " + name.encode() for name in ("model.pt", "mesh.ply", "metrics.json")}
    for name, content in precious.items():
        (out / name).write_bytes(content)
    corrupt_mesh = tmp_path / "broken.obj"
    corrupt_mesh.write_text("v 0 0 0\nv 1 nan 0\nf 1 2 9\n")
    corrupt_model = tmp_path / "corrupt.pt"
    corrupt_model.write_bytes(b"\x80\x02 this is not a checkpoint")
    (tmp_path / "empty").mkdir()

    assert main(["fit", str(tmp_path / "missing.obj"), "--out", str(out), *SMALL_FIT]) == 1
    assert_one_line_error(capsys, "missing.obj")
    assert main(["fit", str(corrupt_mesh), "--out", str(out), *SMALL_FIT]) == 1
    assert_one_line_error(capsys, "fastsdf fit: error")
    assert main(["extract", str(corrupt_model), "--out", str(out / "mesh.ply"), "--quiet"]) == 1
    assert_one_line_error(capsys, "corrupt.pt")
    assert main(["eval", str(tmp_path / "empty"), str(bundled_mesh())]) == 1
    assert_one_line_error(capsys, "model")
    assert main(["train-deepsdf", str(tmp_path / "empty"), "--out", str(out), "--quiet"]) == 1
    assert_one_line_error(capsys, "no .npz")
    assert main(["reconstruct", str(fitted), str(tmp_path / "empty"), "--out", str(out), "--quiet"]) == 1
    assert_one_line_error(capsys, "auto-decoder")
    assert main(["extract", str(out), "--out", str(out / "mesh.ply"), "--quiet"]) == 1
    assert_one_line_error(capsys, "model.pt")
    for name, content in precious.items():
        assert (out / name).read_bytes() == content, name
    assert sorted(p.name for p in out.iterdir()) == sorted(precious)
