"""Reading the state dicts of other SIREN implementations: the official code's two layouts (the
notebook's ``Siren`` and modules.py's ``SingleBVPNet``) and lucidrains' siren-pytorch ``SirenNet``.
Each reader gives the checked (weight, bias) of every layer, in order, from which
``fastsdf.nn.siren.SirenMLP``'s ``from_official_state_dict`` and ``from_siren_pytorch_state_dict``
build the network."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["check_bvp_omegas", "official_layers", "siren_pytorch_layers"]


# The official layouts: the notebook's Siren class, and modules.py's SingleBVPNet (an FCBlock whose
# layers are each Sequential(BatchLinear, Sine), the last Sequential(BatchLinear)).
_OFFICIAL_KEYS = {"Siren": re.compile(r"(?:module\.)?net\.(\d+)\.(linear\.)?(?P<kind>weight|bias)"),
                  "SingleBVPNet": re.compile(r"(?:module\.)?net\.net\.(\d+)\.0\.(?P<kind>weight|bias)")}
# SingleBVPNet's Sine is sin(30 x).
_BVP_OMEGA = 30.0


def official_layers(state_dict: Mapping[str, torch.Tensor]) -> tuple[list[tuple[torch.Tensor, Any]], bool, str]:
    """(weight, bias) per layer of an official state dict, in order, whether the last layer is a
    sine layer, and the layout ("Siren" or "SingleBVPNet")."""
    layouts = {name for key in state_dict for name, pattern in _OFFICIAL_KEYS.items() if pattern.fullmatch(key)}
    if len(layouts) != 1:
        raise ValueError("not an official SIREN state dict: expected the keys of the notebook's Siren "
                         "(net.{i}.linear.weight, ...) or of SingleBVPNet (net.net.{i}.0.weight, ...)"
                         + (", not both" if layouts else ""))
    layout = layouts.pop()
    found: dict[int, dict[str, torch.Tensor]] = {}
    sine: dict[int, bool] = {}
    for key, value in state_dict.items():
        match = _OFFICIAL_KEYS[layout].fullmatch(key)
        if match is None:
            raise ValueError(f"not an official {layout} state dict: unexpected key {key!r}")
        found.setdefault(int(match[1]), {})[match["kind"]] = value
        sine[int(match[1])] = layout == "Siren" and match[2] is not None
    layers = _checked_layers(found)
    return layers, sine[len(layers) - 1], layout


def check_bvp_omegas(*omegas: float | None) -> None:
    if any(omega != _BVP_OMEGA for omega in omegas if omega is not None):
        raise ValueError(f"a SingleBVPNet computes sin(30 (W x + b)) in every sine layer, so it loads only into "
                         f"a network whose omegas are all 30, got {omegas}")


def siren_pytorch_layers(state_dict: Mapping[str, torch.Tensor]) -> list[tuple[torch.Tensor, Any]]:
    """(weight, bias) per layer of a siren-pytorch SirenNet state dict, in order."""
    found: dict[int, dict[str, torch.Tensor]] = {}
    last: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        match = re.fullmatch(r"(?:module\.)?(?:(?:net|layers)\.(\d+)|(last_layer))\.(weight|bias)", key)
        if match is None:
            raise ValueError(f"not a siren-pytorch SirenNet state dict: unexpected key {key!r}")
        (last if match[2] else found.setdefault(int(match[1]), {}))[match[3]] = value
    if "weight" not in last:
        raise ValueError("not a siren-pytorch SirenNet state dict: no last_layer.weight")
    found[max(found, default=-1) + 1] = last
    return _checked_layers(found)


def _checked_layers(found: dict[int, dict[str, torch.Tensor]]) -> list[tuple[torch.Tensor, Any]]:
    """The layers' (weight, bias) in order, after checking that they are numbered 0..L (at least 2),
    each has a 2-D weight, biases are all there or all absent and fit, and the sizes chain through
    square hidden layers of one size."""
    indices = sorted(found)
    if len(indices) < 2 or indices != list(range(len(indices))):
        raise ValueError(f"the layers must be numbered 0, 1, ... with at least 2 of them, got {indices}")
    layers = [(found[i].get("weight"), found[i].get("bias")) for i in indices]
    for weight, bias in layers:
        if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
            raise ValueError("every layer needs a 2-D weight")
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"a bias of shape {tuple(bias.shape)} for a weight of shape {tuple(weight.shape)}")
    if len({bias is None for _, bias in layers}) != 1:
        raise ValueError("some layers have biases and others do not")
    for (a, _), (b, _) in zip(layers, layers[1:]):
        if a.shape[0] != b.shape[1]:
            raise ValueError(f"layer sizes do not chain: {tuple(a.shape)} then {tuple(b.shape)}")
    if any(w.shape[0] != w.shape[1] for w, _ in layers[1:-1]):
        raise ValueError("the hidden layers of a SIREN must be square")
    return layers
