"""What every command promises: a bad option is one line on stderr and exit status 2; an existing
output is never replaced without --overwrite (an unfinished run resumes); --seed reproduces a run."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
import fastsdf.cli.fit
import fastsdf.training.fit
from fastsdf.cli import _parser, main
from fastsdf.cli.common import UsageError
from fastsdf.cli.demo import bundled_mesh
from fastsdf.nn import DeepSDFDecoder, LatentDenoiser, SirenMLP
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.latent_diffusion import LatentDiffusion

from cli_helpers import SMALL_DEEPSDF, SMALL_FIT
from training_helpers import sphere_samples

# Every numeric option of every command, with a value out of its range.
BAD_VALUES = {
    "fit": {"--time-budget": "nan", "--steps": "0", "--width": "0", "--layers": "-3", "--batch-size": "0",
            "--learning-rate": "0", "--seed": "-1", "--resolution": "1", "--frequencies": "17", "--sigma": "0",
            "--features": "0"},
    "demo": {"--time-budget": "-1", "--steps": "0", "--resolution": "1", "--seed": "-1"},
    "shapes": {"--count": "0", "--seed": "-1", "--start": "-1", "--resolution": "7", "--families": "-1"},
    "sample": {"--n-uniform": "-1", "--n-near": "-5", "--n-surface": "-1", "--near-std": "0", "--seed": "-1",
               "--workers": "0", "--threads": "0"},
    "extract": {"--resolution": "1", "--safety": "0.5"},
    "eval": {"--points": "0", "--near-std": "0", "--resolution": "1", "--seed": "-1"},
    "render": {"--size": "8", "--azimuth": "inf", "--elevation": "91"},
    "train-deepsdf": {"--latent-size": "0", "--width": "0", "--layers": "0", "--dropout": "1", "--epochs": "0",
                      "--shapes-per-batch": "0", "--samples-per-shape": "0", "--learning-rate": "0",
                      "--code-learning-rate": "nan", "--decay-every": "0", "--code-regularization": "-1",
                      "--workers": "-1", "--seed": "-1"},
    "reconstruct": {"--iterations": "0", "--samples-per-iteration": "0", "--learning-rate": "-1", "--resolution": "1",
                    "--interpolate": "1", "--seed": "-1"},
    "train-occupancy": {"--latent-size": "0", "--width": "0", "--encoder-width": "0", "--blocks": "0", "--epochs": "0",
                        "--shapes-per-batch": "0", "--samples-per-shape": "1", "--input-points": "0",
                        "--input-noise": "-1", "--learning-rate": "0", "--workers": "-1", "--seed": "-1"},
    "complete": {"--points": "-1", "--resolution": "1", "--seed": "-1"},
    "train-shape-vae": {"--latent-size": "0", "--width": "0", "--layers": "0", "--dropout": "1", "--encoder-width": "0",
                        "--blocks": "0", "--epochs": "0", "--shapes-per-batch": "0", "--samples-per-shape": "0",
                        "--input-points": "0", "--input-noise": "-1", "--kl-weight": "-1", "--prior-std": "0",
                        "--learning-rate": "0", "--workers": "-1", "--seed": "-1"},
    "train-diffusion": {"--steps": "0", "--batch-size": "0", "--learning-rate": "0", "--width": "0", "--blocks": "0",
                        "--timesteps": "1", "--condition-dropout": "1.5", "--ema-decay": "1", "--held-out": "1",
                        "--seed": "-1"},
    "generate": {"--count": "0", "--steps": "0", "--eta": "-1", "--resolution": "1", "--guidance": "nan",
                 "--seed": "-1"},
    "bench": {"--repeat": "0"},
}
# A command line that parses, for each command (paths under OUT, which must stay empty).
BASE = {"fit": ["MESH", "--out", "OUT"], "demo": ["--out", "OUT"], "shapes": ["OUT", "--count", "1"],
        "sample": ["MESH", "OUT"],
        "extract": ["OUT/m.pt", "--out", "OUT/m.ply"], "eval": ["OUT/m.pt", "MESH"],
        "render": ["OUT/m.pt", "--out", "OUT/m.png"], "train-deepsdf": ["OUT/data", "--out", "OUT"],
        "reconstruct": ["OUT/m.pt", "OUT/s.npz", "--out", "OUT"], "train-occupancy": ["OUT/data", "--out", "OUT"],
        "train-shape-vae": ["OUT/data", "--out", "OUT"], "complete": ["OUT/m.pt", "OUT/p.npz", "--out", "OUT"],
        "train-diffusion": ["OUT/m.pt", "--out", "OUT"],
        "generate": ["OUT/m.pt", "--count", "1", "--out", "OUT"], "bench": []}


def _argv(command: str, *extra: str, out: Path) -> list[str]:
    words = [command, *BASE[command], *extra]
    return [w.replace("OUT", str(out)).replace("MESH", str(bundled_mesh())) for w in words]


def _one_line(capsys: pytest.CaptureFixture[str], start: str, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(start) and "usage:" not in err and "Traceback" not in err, err
    for word in words:
        assert word in err, err
    return err


def test_every_numeric_option_is_listed() -> None:
    commands = next(a for a in _parser()._actions if a.dest == "command").choices
    assert sorted(commands) == sorted(BAD_VALUES)
    for name, parser in commands.items():
        typed = {a.option_strings[0] for a in parser._actions if a.option_strings and a.type is not None
                 and a.choices is None}
        assert typed == set(BAD_VALUES[name]), name


@pytest.mark.parametrize("command, option", [(c, o) for c, options in BAD_VALUES.items() for o in options])
def test_an_out_of_range_option_is_one_line_and_exit_2(command: str, option: str, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    value = BAD_VALUES[command][option]
    assert main(_argv(command, option, value, out=tmp_path)) == 2
    _one_line(capsys, f"fastsdf {command}: error: {option} must ", value)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("argv, words", [
    (["fit", "MESH", "--out", "OUT", "--steps", "many"], ["--steps must be an integer", "'many'"]),
    (["fit", "MESH", "--out", "OUT", "--loss", "l2"], ["--loss: invalid choice"]),
    (["fit", "MESH"], ["required", "--out"]),
    (["extract", "OUT/m.pt", "--out", "OUT/m.ply", "--method", "fast"], ["--method"]),
])
def test_other_command_line_errors_are_one_line_too(argv: list[str], words: list[str], tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    argv = [w.replace("OUT", str(tmp_path)).replace("MESH", str(bundled_mesh())) for w in argv]
    assert main(argv) == 2
    _one_line(capsys, f"fastsdf {argv[0]}: error: ", *words)


def test_a_usage_error_found_after_parsing_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Any command's UsageError (a ValueError) ends as a bad command line, not as a failed run."""
    def refuse(*args: object) -> None:
        raise UsageError("--steps and\n  --time-budget disagree")

    monkeypatch.setattr(fastsdf.cli.fit, "run", refuse)
    assert main(_argv("fit", out=tmp_path)) == 2
    _one_line(capsys, "fastsdf fit: error: --steps and --time-budget disagree")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------------------
# Existing outputs
# ------------------------------------------------------------------------------------------------


@pytest.fixture
def quick_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """fastsdf fit's training on a small pool: the command's own steps, in a fraction of the time."""
    monkeypatch.setattr(fastsdf.training.fit, "fit", functools.partial(fastsdf.training.fit.fit, pool_points=20_000))


def _contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_fit_refuses_a_finished_run_resumes_an_unfinished_one(quick_fit: None, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    assert main(["fit", str(bundled_mesh()), "--out", str(out), *SMALL_FIT]) == 0
    before = _contents(out)
    assert "checkpoint.pt" not in before
    assert main(["fit", str(bundled_mesh()), "--out", str(out), *SMALL_FIT]) == 1
    _one_line(capsys, "fastsdf fit: error: ", str(out / "model.pt"), "--overwrite")
    assert _contents(out) == before

    assert main(["fit", str(bundled_mesh()), "--out", str(out), *SMALL_FIT, "--overwrite"]) == 0
    assert sorted(_contents(out)) == sorted(before) and _contents(out)["model.pt"] != before["model.pt"]

    # Killed after its training and its model.pt, before the end: the checkpoint is still there.
    (out / "mesh.ply").unlink()
    network = SirenMLP(3, 32, 1, 1, double_backward=False)
    fastsdf.fit(bundled_mesh(), network, steps=30, seed=0, pool_points=20_000, checkpoint=out / "checkpoint.pt",
                progress=False, device="cpu")
    capsys.readouterr()
    assert main(["fit", str(bundled_mesh()), "--out", str(out), *SMALL_FIT]) == 0
    assert "resuming from" in capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == sorted(before)


@pytest.fixture(scope="module")
def autodecoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("auto")
    torch.manual_seed(0)
    decoder = DeepSDFDecoder(latent_size=4, hidden_features=16, hidden_layers=2, latent_in=())
    return AutoDecoder(decoder, torch.randn(2, 4) * 0.1, ["a", "b"]).save(folder)


def test_every_writing_command_refuses_existing_outputs(autodecoder: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    model = fastsdf.FittedSDF(SirenMLP(3, 8, 1, 1), fastsdf.NormalizationTransform.identity()).save(tmp_path / "m")
    data = tmp_path / "data"
    for radius in (0.3, 0.6):
        fastsdf.save_npz(data / f"r{radius}.npz", sphere_samples(radius, np.random.default_rng(0), 500))
    out = tmp_path / "out"
    out.mkdir()
    decoder = fastsdf.load_model(autodecoder)
    diffusion = LatentDiffusion(LatentDenoiser(4, hidden_features=8, blocks=1), torch.zeros(4), torch.ones(4),
                                timesteps=10, latent_model=decoder).save(tmp_path / "diffusion")
    existing = {name: f"earlier {name}".encode()
                for name in ("m.ply", "e.json", "m.png", "model.pt", "r0.3.png", "shape_000.ply", "shape_00000.ply")}
    for name, content in existing.items():
        (out / name).write_bytes(content)
    runs = {
        "extract": ([str(model), "--out", str(out / "m.ply"), "--resolution", "8", "--quiet"], "m.ply"),
        "eval": ([str(model), str(bundled_mesh()), "--points", "100", "--resolution", "8", "--out", str(out / "e.json"),
                  "--quiet"], "e.json"),
        "render": ([str(model), "--out", str(out / "m.png"), "--size", "16"], "m.png"),
        "render ": ([str(bundled_mesh()), "--out", str(out / "m.png"), "--size", "16"], "m.png"),
        "train-deepsdf": ([str(data), "--out", str(out), *SMALL_DEEPSDF], "model.pt"),
        "train-occupancy": ([str(data), "--out", str(out), "--quiet"], "model.pt"),
        "train-shape-vae": ([str(data), "--out", str(out), "--quiet"], "model.pt"),
        "reconstruct": ([str(autodecoder), str(data), "--out", str(out), "--iterations", "2", "--resolution", "8",
                         "--quiet"], "r0.3.png"),
        "demo": (["--out", str(out), "--steps", "1", "--quiet"], "model.pt"),
        "train-diffusion": ([str(autodecoder), "--out", str(out), "--steps", "1", "--quiet"], "model.pt"),
        "generate": ([str(diffusion), "--count", "1", "--out", str(out), "--quiet"], "shape_000.ply"),
        "shapes": ([str(out), "--count", "1", "--quiet"], "shape_00000.ply"),
    }
    for command, (args, name) in runs.items():
        assert main([command.strip(), *args]) == 1, command
        _one_line(capsys, f"fastsdf {command.strip()}: error: {out / name} exists", "--overwrite")
        assert capsys.readouterr().out == ""
    assert _contents(out) == existing

    assert main(["extract", *runs["extract"][0], "--overwrite"]) == 0
    assert main(["render", *runs["render"][0], "--overwrite"]) == 0
    assert (out / "m.ply").read_bytes()[:3] == b"ply" and (out / "m.png").read_bytes()[1:4] == b"PNG"


def test_sample_replaces_existing_outputs_only_with_overwrite(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "spot.npz"
    target.write_bytes(b"earlier")
    small = ["--n-uniform", "50", "--n-near", "50", "--quiet"]
    assert main(["sample", str(bundled_mesh()), str(tmp_path), *small]) == 0
    assert target.read_bytes() == b"earlier" and "skip" in capsys.readouterr().out
    assert main(["sample", str(bundled_mesh()), str(tmp_path), *small, "--overwrite"]) == 0
    assert len(fastsdf.load_npz(target)) == 100


# ------------------------------------------------------------------------------------------------
# Seeds
# ------------------------------------------------------------------------------------------------


def _state(path: Path) -> dict[str, torch.Tensor]:
    model = fastsdf.load_model(path)
    return {k: v for k, v in model.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_fit_seed_gives_the_same_model(quick_fit: None, tmp_path: Path) -> None:
    runs = {}
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        options = [*SMALL_FIT[:SMALL_FIT.index("--seed")], "--seed", seed, "--quiet"]
        assert main(["fit", str(bundled_mesh()), "--out", str(tmp_path / name), *options]) == 0
        runs[name] = _state(tmp_path / name)
    assert _same(runs["a"], runs["b"])
    assert not any(torch.equal(runs["a"][k], runs["c"][k]) for k in runs["a"])


@pytest.mark.parametrize("options, expected", [
    ([], ("DeepSDFDecoder", {"hidden_layers": 4, "latent_in": [2]})),
    (["--decoder", "siren"], ("SirenMLP", {"hidden_layers": 3, "latent_features": 8})),
    (["--decoder", "relu"], ("ReluMLP", {"hidden_layers": 3, "skip": [2], "latent_features": 8, "encoding": None})),
    (["--decoder", "relu", "--layers", "8"], ("ReluMLP", {"hidden_layers": 7, "skip": [4]})),
    (["--decoder", "relu", "--layers", "1"], ("ReluMLP", {"hidden_layers": 0, "skip": []})),
])
def test_train_deepsdf_trains_the_decoder_asked_for(options: list[str], expected: tuple, tmp_path: Path) -> None:
    """--layers counts hidden layers, --width their features; relu is fastsdf fit's ReLU network
    (DeepSDF's skip into the middle layer) with a latent input."""
    rng = np.random.default_rng(0)
    for radius in (0.3, 0.6):
        fastsdf.save_npz(tmp_path / "data" / f"r{radius}.npz", sphere_samples(radius, rng, 300))
    small = ["--latent-size", "8", "--width", "16", "--layers", "4", "--epochs", "1", "--samples-per-shape", "32",
             "--workers", "0", "--quiet"]
    assert main(["train-deepsdf", str(tmp_path / "data"), "--out", str(tmp_path / "run"), *small, *options]) == 0
    decoder = fastsdf.load_model(tmp_path / "run").decoder
    name, config = expected
    assert type(decoder).__name__ == name and decoder.config()["hidden_features"] == 16
    assert {key: decoder.config()[key] for key in config} == config


def test_train_deepsdf_and_reconstruct_seeds_give_the_same_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for radius in (0.3, 0.5, 0.7):
        fastsdf.save_npz(tmp_path / "data" / f"r{radius}.npz", sphere_samples(radius, rng, 1000))
    options = [*SMALL_DEEPSDF[:SMALL_DEEPSDF.index("--epochs")], "--epochs", "2", "--dropout", "0.2", "--quiet"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        out = tmp_path / name
        assert main(["train-deepsdf", str(tmp_path / "data"), "--out", str(out), *options, "--seed", seed]) == 0
    a, b, c = (_state(tmp_path / name) for name in "abc")
    assert _same(a, b) and not _same(a, c)

    # fastsdf reconstruct passes --seed to fastsdf.reconstruct (its meshing needs a better decoder than this one).
    model, samples = fastsdf.load_model(tmp_path / "a"), fastsdf.load_npz(tmp_path / "data" / "r0.5.npz")
    codes = [fastsdf.reconstruct(model, samples, iterations=5, samples_per_iteration=64, seed=seed).code
             for seed in (1, 1, 2)]
    assert torch.equal(codes[0], codes[1]) and not torch.equal(codes[0], codes[2])
