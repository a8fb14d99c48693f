"""Saved models' file format: one file per model (``model.pt``), written atomically, and the checks
of its fields that every model's reader uses.

A file is a ``torch.save``d dict of plain values and tensors (read with ``weights_only=True``, so a
file from elsewhere cannot run code): ``format`` (what it holds), ``version``, and the networks as
their class name, ``config()`` and state dict. The formats (``fastsdf.training.loading.load_model``
reads them all, each with its class's ``from_state``):

    fastsdf.fitted        a FittedSDF (``fastsdf.fit``, ``fastsdf fit``)
    fastsdf.autodecoder   an AutoDecoder: a decoder and its shapes' codes (``fastsdf train-deepsdf``)
    fastsdf.occupancy     an OccupancyNetwork: a point-cloud encoder and its decoder
                          (``fastsdf train-occupancy``)
    fastsdf.shape_vae     a ShapeVAE: a point-cloud encoder to latent Gaussians, an SDF decoder of
                          latents and the training shapes' latents (``fastsdf train-shape-vae``)
    fastsdf.latent_diffusion  a LatentDiffusion: a denoiser over a latent model's latents, their
                          statistics and the latent model itself, an auto-decoder or a shape VAE
                          (``fastsdf train-diffusion``)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastsdf.io import atomic_write

__all__ = ["MODEL_FILE", "describe", "field", "latent_table_from_state", "network_from_state", "network_state",
           "read_state", "transform_from_state", "write_state"]

MODEL_FILE = "model.pt"
VERSION = 1


def model_path(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/model.pt`` for a folder or a name without a suffix."""
    path = Path(path)
    return path / MODEL_FILE if path.is_dir() or not path.suffix else path


def network_state(network: nn.Module) -> dict[str, Any]:
    from fastsdf.nn import network_name

    return {"class": network_name(network), "config": network.config(),
            "state_dict": {k: v.detach().cpu() for k, v in network.state_dict().items()}}


def network_from_state(state: Any) -> nn.Module:
    """The network ``network_state`` described. ValueError, saying what is wrong, for a state that
    is not one: its class, configuration and weights are checked before any memory is spent on
    them (the configuration is built on the meta device and must match the weights' names and
    shapes), so a damaged file cannot ask for a network larger than itself."""
    from fastsdf.nn import NETWORKS, network_from_config

    if not isinstance(state, dict):
        raise ValueError(f"'network' must be a dict, got {describe(state)}")
    name = field(state, "class", str, "a network class name", "network.")
    if name not in NETWORKS:
        raise ValueError(f"'network.class' must be one of {sorted(NETWORKS)}, got {name!r}")
    config = field(state, "config", dict, "a dict of constructor arguments", "network.")
    if not all(isinstance(key, str) for key in config):
        raise ValueError("'network.config' must have string keys")
    weights = field(state, "state_dict", dict, "a dict of tensors", "network.")
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ValueError(f"'network.state_dict' must map names to tensors, got {describe(key)}: {describe(value)}")
        if (value.is_floating_point() or value.is_complex()) and not bool(torch.isfinite(value).all()):
            raise ValueError(f"'network.state_dict' tensor {key!r} holds NaN or Inf")
    try:
        with torch.device("meta"):
            expected = network_from_config(name, config).state_dict()
    except (TypeError, ValueError) as exc:
        raise ValueError(f"'network.config' does not make a {name}: {exc}") from None
    shapes = {key: tuple(value.shape) for key, value in weights.items()}
    wanted = {key: tuple(value.shape) for key, value in expected.items()}
    if shapes != wanted:
        wrong = sorted(set(shapes) ^ set(wanted)) or sorted(k for k in wanted if shapes[k] != wanted[k])
        raise ValueError(f"'network.state_dict' does not match the {name} of 'network.config' (first difference: "
                         f"{wrong[0]!r}, {shapes.get(wrong[0])} for {wanted.get(wrong[0])})")
    network = network_from_config(name, config)
    network.load_state_dict(weights)
    return network


def transform_from_state(state: Any, name: str) -> Any:
    """The ``NormalizationTransform`` ``to_dict`` wrote; ValueError naming the field ``name`` otherwise."""
    from fastsdf.geometry.normalization import NormalizationTransform

    if not isinstance(state, dict):
        raise ValueError(f"{name!r} must be a dict with 'offset' and 'scale', got {describe(state)}")
    offset = field(state, "offset", (list, tuple), "three (2D: two) numbers", f"{name}.")
    scale = field(state, "scale", (int, float), "a number", f"{name}.")
    if len(offset) not in (2, 3) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in offset):
        raise ValueError(f"'{name}.offset' must be three (2D: two) numbers, got {describe(offset)}")
    try:
        return NormalizationTransform(offset, scale)
    except ValueError as exc:
        raise ValueError(f"{name!r} is not a transform: {exc}") from None


def field(state: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, within: str = "") -> Any:
    """``state[key]`` if it is there and a ``kind`` (bool never counts as a number); else ValueError
    naming ``within + key`` and ``what`` it must be."""
    if key not in state:
        raise ValueError(f"{within + key!r} is missing")
    value, kinds = state[key], kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise ValueError(f"{within + key!r} must be {what}, got {describe(value)}")
    return value


def describe(value: Any) -> str:
    """A short description of a value for an error message: its type and (shortened) repr."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def write_state(path: str | os.PathLike, format: str, state: dict[str, Any]) -> Path:
    """Writes ``state`` with its format and version to ``model_path(path)``, atomically."""
    path = model_path(path)
    with atomic_write(path) as f:
        torch.save({"format": format, "version": VERSION, **state}, f)
    return path


def read_state(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(the file read, its dict), its ``format`` and ``version`` checked (the rest is the format's
    reader's). Raises FileNotFoundError or ValueError (not a fastsdf model, unreadable, damaged, or
    from a newer fastsdf), the path in the message."""
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.exists():
        raise FileNotFoundError(f"no such model file: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to the user
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights only" in reason.lower():  # torch's advice about weights_only does not apply here
            reason = "not a file of tensors and plain values"
        raise ValueError(f"{path} is not a readable model file (damaged, or not written by fastsdf: {reason})") from None
    if not isinstance(state, dict) or not isinstance(state.get("format"), str) or \
            not state["format"].startswith("fastsdf."):
        raise ValueError(f"{path} is not a fastsdf model (fastsdf fit and the train- commands write them)")
    try:
        version = field(state, "version", int, "an integer")
    except ValueError as exc:
        raise ValueError(f"{path} holds a damaged model: {exc}") from None
    if version < 1:
        raise ValueError(f"{path} holds a damaged model: 'version' must be at least 1, got {version}")
    if version > VERSION:
        raise ValueError(f"{path} was written by a newer fastsdf (format {version}); upgrade to read it")
    return path, state


def latent_table_from_state(state: dict[str, Any]) -> tuple[torch.Tensor, list[str], list[Any]]:
    """The ``codes`` (shapes, latent_size), ``names`` and ``transforms`` of a model that keeps one
    latent per named training shape (``AutoDecoder``, ``ShapeVAE``); ValueError naming the field
    that is wrong."""
    codes = field(state, "codes", torch.Tensor, "a tensor")
    if codes.ndim != 2 or not codes.is_floating_point() or not bool(torch.isfinite(codes).all()):
        raise ValueError(f"'codes' must be a finite floating (shapes, latent_size) tensor, got "
                         f"{codes.dtype} {tuple(codes.shape)}")
    names = field(state, "names", list, "a list of shape names")
    if not all(isinstance(n, str) for n in names) or len(set(names)) != len(names) or len(names) != len(codes):
        raise ValueError(f"'names' must be {len(codes)} distinct strings (one per code), got {describe(names)}")
    transforms = field(state, "transforms", list, "a list of transforms")
    if len(transforms) != len(codes):
        raise ValueError(f"'transforms' must have one entry per code ({len(codes)}), got {len(transforms)}")
    return codes, names, [None if t is None else transform_from_state(t, f"transforms[{i}]")
                          for i, t in enumerate(transforms)]
