"""Saved model files whose metadata is malformed: ``load_model`` raises a ValueError naming the file
and what is wrong, and every command that reads a model says so in one line (exit status 1)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.cli import main
from fastsdf.cli.demo import bundled_mesh
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.nn import DeepSDFDecoder, SirenMLP
from fastsdf.training.autodecoder import AutoDecoder
from fastsdf.training.fitted import FittedSDF

from training_helpers import sphere_samples

Edit = Callable[[dict[str, Any]], None]


def _field(state: dict[str, Any], key: str) -> tuple[dict[str, Any], str]:
    """The dict holding the dotted ``key`` and its last part."""
    *parents, last = key.split(".")
    for part in parents:
        state = state[part]
    return state, last


def _set(key: str, value: Any) -> Edit:
    def edit(state: dict[str, Any]) -> None:
        holder, last = _field(state, key)
        holder[last] = value
    return edit


def _drop(key: str) -> Edit:
    def edit(state: dict[str, Any]) -> None:
        holder, last = _field(state, key)
        del holder[last]
    return edit


def _weights(change: Callable[[dict[str, Any]], None]) -> Edit:
    return lambda state: change(state["network"]["state_dict"])


def _first_weight(value: Callable[[torch.Tensor], Any]) -> Edit:
    def change(weights: dict[str, Any]) -> None:
        key = next(iter(weights))
        weights[key] = value(weights[key])
    return _weights(change)


# Malformed versions of any model file (every field the files share).
COMMON: dict[str, Edit] = {
    "version str": _set("version", "1"), "version None": _set("version", None), "version float": _set("version", 1.0),
    "version negative": _set("version", -1), "version zero": _set("version", 0), "version bool": _set("version", True),
    "version future": _set("version", 99), "version missing": _drop("version"),
    "format not str": _set("format", 3), "format missing": _drop("format"),
    "network missing": _drop("network"), "network str": _set("network", "SirenMLP"),
    "class missing": _drop("network.class"), "class int": _set("network.class", 3),
    "class unknown": _set("network.class", "ResNet"),
    "config missing": _drop("network.config"), "config list": _set("network.config", [3, 8]),
    "config bad value": _set("network.config.hidden_features", "wide"),
    "config unknown key": _set("network.config.colour", "red"),
    "config too large": _set("network.config.hidden_features", 10**7),
    "state_dict missing": _drop("network.state_dict"), "state_dict list": _set("network.state_dict", []),
    "weight not a tensor": _first_weight(lambda w: w.tolist()),
    "weight wrong shape": _first_weight(lambda w: w[:1]),
    "weight NaN": _first_weight(lambda w: torch.full_like(w, float("nan"))),
    "weight missing": _weights(lambda weights: weights.pop(next(iter(weights)))),
    "weight extra": _weights(lambda weights: weights.update(extra=torch.zeros(2))),
}
FITTED: dict[str, Edit] = {
    **COMMON,
    "kind missing": _drop("kind"), "kind int": _set("kind", 1), "kind unknown": _set("kind", "distance"),
    "transform missing": _drop("transform"), "transform list": _set("transform", [0.0, 0.0, 0.0, 1.0]),
    "offset missing": _drop("transform.offset"), "offset short": _set("transform.offset", [0.0, 0.0]),
    "offset str": _set("transform.offset", "0 0 0"), "offset NaN": _set("transform.offset", [0.0, float("nan"), 0.0]),
    "scale missing": _drop("transform.scale"), "scale str": _set("transform.scale", "1"),
    "scale negative": _set("transform.scale", -2.0), "scale zero": _set("transform.scale", 0.0),
    "history missing": _drop("history"), "history list": _set("history", [1, 2]),
}
AUTODECODER: dict[str, Edit] = {
    **COMMON,
    "codes missing": _drop("codes"), "codes list": _set("codes", [[0.0] * 4] * 3),
    "codes 1-D": _set("codes", torch.zeros(12)), "codes int": _set("codes", torch.zeros(3, 4, dtype=torch.long)),
    "codes NaN": _set("codes", torch.full((3, 4), float("nan"))),
    "codes wrong latent size": _set("codes", torch.zeros(3, 5)),
    "names missing": _drop("names"), "names str": _set("names", "abc"), "names short": _set("names", ["a", "b"]),
    "names not str": _set("names", ["a", "b", 3]), "names repeated": _set("names", ["a", "a", "b"]),
    "transforms missing": _drop("transforms"), "transforms short": _set("transforms", [None]),
    "transform entry bad": _set("transforms", [None, {"offset": [0, 0, 0]}, None]),
    "history missing": _drop("history"),
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    fitted = FittedSDF(SirenMLP(3, 8, 1, 1), NormalizationTransform(np.array([1.0, 2.0, 3.0]), 0.5),
                       history={"steps": 1})
    decoder = DeepSDFDecoder(latent_size=4, hidden_features=8, hidden_layers=2, latent_in=())
    auto = AutoDecoder(decoder, torch.randn(3, 4), ["a", "b", "c"], [None, NormalizationTransform.identity(), None])
    return {"fitted": fitted.save(folder / "fitted.pt"), "autodecoder": auto.save(folder / "auto.pt")}


def _damaged(source: Path, edit: Edit, target: Path) -> Path:
    state = copy.deepcopy(torch.load(source, weights_only=True))
    edit(state)
    torch.save(state, target)
    return target


def test_the_untouched_files_load(files: dict[str, Path]) -> None:
    fitted, auto = fastsdf.load_model(files["fitted"]), fastsdf.load_model(files["autodecoder"])
    assert isinstance(fitted, FittedSDF) and auto.names == ["a", "b", "c"]
    # Loaded for inference: in training mode the decoder's dropout (0.2) would change every value
    # from one call to the next (it did: fastsdf reconstruct meshed a loaded model that way).
    assert not any(m.training for model in (fitted, auto) for m in model.modules())
    points = np.random.default_rng(0).uniform(-1, 1, (64, 3)).astype(np.float32)
    assert np.array_equal(auto.shape("a").sdf(points), auto.shape("a").sdf(points))


def _refused_by_load_model(source: Path, damage: Edit, path: Path) -> Path:
    """Writes ``source`` damaged to ``path`` and checks that load_model refuses it in one line
    naming the file; returns ``path`` for the CLI checks."""
    path = _damaged(source, damage, path)
    with pytest.raises(ValueError) as error:
        fastsdf.load_model(path)
    message = str(error.value)
    assert str(path) in message and "\n" not in message, message
    return path


@pytest.mark.parametrize("name", sorted(FITTED))
def test_malformed_fitted_files(name: str, files: dict[str, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    path = _refused_by_load_model(files["fitted"], FITTED[name], tmp_path / "model.pt")
    for argv in (["extract", str(path), "--out", str(tmp_path / "m.ply"), "--quiet"],
                 ["eval", str(path), str(bundled_mesh()), "--quiet"],
                 ["render", str(path), "--out", str(tmp_path / "m.png")]):
        assert main(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"fastsdf {argv[0]}: error: {path}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


@pytest.mark.parametrize("name", sorted(AUTODECODER))
def test_malformed_autodecoder_files(name: str, files: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = _refused_by_load_model(files["autodecoder"], AUTODECODER[name], tmp_path / "model.pt")
    fastsdf.save_npz(tmp_path / "new" / "s.npz", sphere_samples(0.5, np.random.default_rng(0), 500))
    assert main(["reconstruct", str(path), str(tmp_path / "new"), "--out", str(tmp_path / "rec"), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fastsdf reconstruct: error: {path}"), err
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize("name, words", [
    ("version str", ["'version' must be an integer", "str '1'"]),
    ("version None", ["'version' must be an integer", "NoneType"]),
    ("version future", ["newer fastsdf"]),
    ("kind missing", ["'kind' is missing"]),
    ("scale negative", ["'transform'", "scale"]),
    ("config too large", ["'network.state_dict' does not match"]),
    ("weight NaN", ["NaN or Inf"]),
])
def test_the_message_says_what_is_wrong(name: str, words: list[str], files: dict[str, Path], tmp_path: Path) -> None:
    path = _damaged(files["fitted"], FITTED[name], tmp_path / "model.pt")
    with pytest.raises(ValueError) as error:
        fastsdf.load_model(path)
    for word in words:
        assert word in str(error.value), str(error.value)
