"""Saved models: one file per model (``model.pt``), written atomically, read back by ``load_model``.

A file is a ``torch.save``d dict of plain values and tensors (read with ``weights_only=True``, so a
file from elsewhere cannot run code): ``format`` (what it holds), ``version``, and the networks as
their class name, ``config()`` and state dict. ``load_model`` reads any of the formats:

    fastsdf.fitted        a FittedSDF (``fastsdf.fit``, ``fastsdf fit``)
    fastsdf.autodecoder   an AutoDecoder: a decoder and its shapes' codes (``fastsdf train-deepsdf``)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastsdf.io import atomic_write

__all__ = ["MODEL_FILE", "load_model", "network_from_state", "network_state", "read_state", "write_state"]

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


def network_from_state(state: dict[str, Any]) -> nn.Module:
    from fastsdf.nn import network_from_config

    network = network_from_config(state["class"], state["config"])
    network.load_state_dict(state["state_dict"])
    return network


def write_state(path: str | os.PathLike, format: str, state: dict[str, Any]) -> Path:
    """Writes ``state`` with its format and version to ``model_path(path)``, atomically."""
    path = model_path(path)
    with atomic_write(path) as f:
        torch.save({"format": format, "version": VERSION, **state}, f)
    return path


def read_state(path: str | os.PathLike) -> tuple[Path, dict[str, Any]]:
    """(the file read, its dict). Raises FileNotFoundError or ValueError (not a fastsdf model,
    unreadable, or from a newer fastsdf), the path in the message."""
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
    if not isinstance(state, dict) or not str(state.get("format", "")).startswith("fastsdf."):
        raise ValueError(f"{path} is not a fastsdf model (fastsdf fit and fastsdf train-deepsdf write them)")
    if state.get("version", 0) > VERSION:
        raise ValueError(f"{path} was written by a newer fastsdf (format {state['version']}); upgrade to read it")
    return path, state


def load_model(path: str | os.PathLike, device: Any = "cpu") -> nn.Module:
    """A saved model: a file, or a folder holding ``model.pt``. ``fastsdf fit``'s models come back
    as ``FittedSDF`` (``.sdf(points)`` in the mesh's units), ``fastsdf train-deepsdf``'s as
    ``AutoDecoder``. Raises FileNotFoundError or ValueError (not a fastsdf model, damaged, or from a
    newer version) with the path in the message."""
    from fastsdf.training.autodecoder import AutoDecoder
    from fastsdf.training.fitted import FittedSDF

    readers = {"fastsdf.fitted": FittedSDF.from_state, "fastsdf.autodecoder": AutoDecoder.from_state}
    path, state = read_state(path)
    reader = readers.get(state["format"])
    if reader is None:
        raise ValueError(f"{path} holds a {state['format']}, not a model")
    try:
        model = reader(state)
    except (KeyError, TypeError, RuntimeError, ValueError) as exc:
        raise ValueError(f"{path} holds a damaged model: {exc}") from None
    return model.to(device)
