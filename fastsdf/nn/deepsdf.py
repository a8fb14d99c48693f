"""DeepSDF's decoder (Park et al. 2019): an MLP from a latent code and a point to a signed distance."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import weight_norm as _weight_norm

from fastsdf._validation import integer, real

__all__ = ["DeepSDFDecoder"]


class DeepSDFDecoder(nn.Module):
    """The DeepSDF decoder with the paper's defaults: 8 fully connected layers of 512 with ReLU,
    weight normalisation and dropout 0.2 on each, the input (code and point) concatenated again
    at layer 4, a linear output through tanh; codes of 256.

    Args:
        latent_size: length of the shape code.
        hidden_features, hidden_layers: width and count of the hidden layers.
        dropout: dropout probability after each hidden layer while training (0 for none).
        latent_in: hidden layers whose input gets the code and point concatenated again (the
            layer before each is narrowed so that the width stays ``hidden_features``).
        weight_norm: weight normalisation on the hidden layers.
        layer_norm: hidden layers followed by a LayerNorm (before their ReLU), as the original
            ``Decoder`` does for its ``norm_layers`` when ``weight_norm`` is off.
        tanh_output: squash the output with tanh (DeepSDF's decoders are trained on distances
            clamped to 0.1, well inside tanh's range; the original applies it always).
        use_tanh: the original ``Decoder``'s option of that name: one more tanh on the output
            layer, before the final one (tanh(tanh(x)) with ``tanh_output``).
        in_features: coordinates per point.

    ``forward(points, latent)``: points (..., in_features) and codes (..., latent_size), or one
    code (latent_size,) for every point; returns (..., 1). Each hidden layer is linear, then its
    LayerNorm, ReLU and dropout, in the original's order.
    """

    def __init__(self, latent_size: int = 256, hidden_features: int = 512, hidden_layers: int = 8,
                 dropout: float = 0.2, latent_in: Sequence[int] = (4,), weight_norm: bool = True,
                 tanh_output: bool = True, in_features: int = 3, layer_norm: Sequence[int] = (),
                 use_tanh: bool = False):
        super().__init__()
        self.latent_size = integer(latent_size, "latent_size", minimum=0)
        self.hidden_features = integer(hidden_features, "hidden_features", minimum=1)
        self.hidden_layers = integer(hidden_layers, "hidden_layers", minimum=1)
        self.in_features = integer(in_features, "in_features", minimum=1)
        self.dropout = real(dropout, "dropout", 0, 1, high_open=True)
        self.latent_in = tuple(sorted({int(i) for i in latent_in}))
        if any(not 0 < i < self.hidden_layers for i in self.latent_in):
            raise ValueError(f"latent_in must name hidden layers 1 .. {self.hidden_layers - 1}, got {latent_in!r}")
        self.layer_norm = tuple(sorted({int(i) for i in layer_norm}))
        if any(not 0 <= i < self.hidden_layers for i in self.layer_norm):
            raise ValueError(f"layer_norm must name hidden layers 0 .. {self.hidden_layers - 1}, got {layer_norm!r}")
        self.weight_norm = bool(weight_norm)
        self.tanh_output = bool(tanh_output)
        self.use_tanh = bool(use_tanh)
        inputs = self.latent_size + self.in_features
        if self.latent_in and self.hidden_features <= inputs:
            raise ValueError(f"hidden_features ({hidden_features}) must exceed latent_size + in_features ({inputs}) "
                             "to concatenate the input again")
        self.layers = nn.ModuleList()
        self.norms = nn.ModuleDict()
        for i in range(self.hidden_layers):
            fan_in = inputs if i == 0 else self.hidden_features
            fan_out = self.hidden_features - inputs if i + 1 in self.latent_in else self.hidden_features
            linear = nn.Linear(fan_in, fan_out)
            self.layers.append(_weight_norm(linear) if self.weight_norm else linear)
            if i in self.layer_norm:
                self.norms[str(i)] = nn.LayerNorm(fan_out)
        self.output = nn.Linear(self.hidden_features, 1)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (``DeepSDFDecoder(**config())`` makes the same shape)."""
        return {"latent_size": self.latent_size, "hidden_features": self.hidden_features,
                "hidden_layers": self.hidden_layers, "dropout": self.dropout, "latent_in": list(self.latent_in),
                "weight_norm": self.weight_norm, "tanh_output": self.tanh_output, "in_features": self.in_features,
                "layer_norm": list(self.layer_norm), "use_tanh": self.use_tanh}

    def forward(self, points: torch.Tensor, latent: torch.Tensor | None = None) -> torch.Tensor:
        if points.shape[-1] != self.in_features:
            raise ValueError(f"points must have shape (..., {self.in_features}), got {tuple(points.shape)}")
        if self.latent_size:
            if latent is None:
                raise ValueError(f"this decoder takes a latent code of {self.latent_size} features: pass latent=")
            if latent.shape[-1] != self.latent_size:
                raise ValueError(f"latent must have shape (..., {self.latent_size}), got {tuple(latent.shape)}")
            lead = torch.broadcast_shapes(points.shape[:-1], latent.shape[:-1])
            inputs = torch.cat([latent.expand(*lead, -1), points.expand(*lead, -1)], dim=-1)
        elif latent is not None and latent.shape[-1] != 0:
            raise ValueError("this decoder has no latent input (latent_size=0), but a latent code was given")
        else:
            inputs = points
        x = inputs
        for i, layer in enumerate(self.layers):
            if i in self.latent_in:
                x = torch.cat([x, inputs], dim=-1)
            x = layer(x)
            if i in self.layer_norm:
                x = self.norms[str(i)](x)
            x = F.relu(x)
            if self.dropout:
                x = F.dropout(x, self.dropout, self.training)
        x = self.output(x)
        if self.use_tanh:
            x = torch.tanh(x)
        return torch.tanh(x) if self.tanh_output else x

    @classmethod
    def from_deepsdf_state_dict(cls, state_dict: Mapping[str, torch.Tensor], *, use_tanh: bool = False,
                                latent_in: Sequence[int] | None = None, in_features: int = 3,
                                **kwargs: Any) -> "DeepSDFDecoder":
        """A decoder computing what the original DeepSDF ``Decoder`` (networks/deep_sdf_decoder.py)
        computes with the weights of one of its checkpoints (``ModelParameters/*.pth``'s
        ``model_state_dict``: keys ``[module.]lin{i}.weight`` or ``.weight_g/.weight_v``,
        ``.bias``, and ``bn{i}.weight/.bias``).

        Read from the state dict: the code length (the first layer's inputs less ``in_features``),
        width, depth and ``latent_in`` (from how the layer sizes chain), weight normalisation
        (``weight_g/weight_v`` keys: on every hidden layer or none) and the LayerNorms of
        ``norm_layers`` without ``weight_norm`` (``bn{i}`` keys). Not in it, so taken from the
        experiment's specs.json ``NetworkSpecs``: ``use_tanh`` (its default, False; True makes the
        output tanh(tanh(x)), as the original applies its final tanh unconditionally) and, for
        training only, ``dropout`` (a probability, for every hidden layer). ``latent_in``, when
        given, must agree with the sizes. ``xyz_in_all``, ``latent_in`` at layer 0 or at the output
        layer, hidden layers of different widths and weight normalisation on only some hidden
        layers have no counterpart here and raise ValueError, as do unexpected or missing keys.
        """
        for name in ("latent_size", "hidden_features", "hidden_layers", "weight_norm", "layer_norm", "tanh_output"):
            if name in kwargs:
                raise TypeError(f"{name} is read from the state dict (the original decoder always ends with tanh)")
        state = {re.sub(r"^module\.", "", k): v for k, v in state_dict.items()}
        lins, norms = _original_layers(state)
        last = len(lins) - 1
        weight_normed = {i for i, layer in enumerate(lins) if "weight_g" in layer}
        if weight_normed and norms:
            raise ValueError("weight_g and bn keys together: the original decoder has LayerNorms only without "
                             "weight normalisation")
        hidden_normed = weight_normed - {last}
        if hidden_normed not in (set(), set(range(last))):
            raise ValueError(f"weight normalisation on hidden layers {sorted(hidden_normed)} only: "
                             "DeepSDFDecoder normalises every hidden layer or none")

        def weight(i: int) -> torch.Tensor:
            """Layer i's weight as used: weight_g * weight_v / ||weight_v|| (per row) where normalised."""
            if i not in weight_normed:
                return lins[i]["weight"]
            v = lins[i]["weight_v"]
            return lins[i]["weight_g"] * v / v.norm(dim=1, keepdim=True)

        inputs, hidden = weight(0).shape[1], weight(last).shape[1]
        found_latent_in = _latent_in([tuple(weight(i).shape) for i in range(last + 1)], inputs, hidden)
        if latent_in is not None and tuple(sorted({int(i) for i in latent_in})) != found_latent_in:
            raise ValueError(f"latent_in={tuple(latent_in)} but the layer sizes say {found_latent_in}")
        decoder = cls(latent_size=inputs - in_features, hidden_features=hidden, hidden_layers=last,
                      latent_in=found_latent_in, weight_norm=bool(hidden_normed), in_features=in_features,
                      layer_norm=sorted(i for i in norms if i < last), use_tanh=use_tanh, tanh_output=True,
                      **kwargs).to(weight(0).dtype)
        ours: dict[str, torch.Tensor] = {}
        for i in range(last):
            prefix = f"layers.{i}."
            if hidden_normed:
                ours[prefix + "parametrizations.weight.original0"] = lins[i]["weight_g"]
                ours[prefix + "parametrizations.weight.original1"] = lins[i]["weight_v"]
            else:
                ours[prefix + "weight"] = lins[i]["weight"]
            ours[prefix + "bias"] = lins[i]["bias"]
            if i in norms:
                ours[f"norms.{i}.weight"], ours[f"norms.{i}.bias"] = norms[i]["weight"], norms[i]["bias"]
        ours["output.weight"], ours["output.bias"] = weight(last), lins[last]["bias"]
        try:
            decoder.load_state_dict(ours)
        except RuntimeError as exc:
            raise ValueError(f"the state dict does not fit the decoder its sizes describe: {exc}") from None
        return decoder


_LIN_KINDS = ({"weight", "bias"}, {"weight_g", "weight_v", "bias"})


def _original_layers(state: Mapping[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]],
                                                                 dict[int, dict[str, torch.Tensor]]]:
    """The original decoder's linear layers (lin0 .. linL, each with weight/bias or weight_g/
    weight_v/bias) and LayerNorms (bn{i}: weight, bias), checked for completeness."""
    lins: dict[int, dict[str, torch.Tensor]] = {}
    norms: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = re.fullmatch(r"(lin|bn)(\d+)\.(weight|weight_g|weight_v|bias)", key)
        if match is None or (match[1] == "bn" and match[3] not in ("weight", "bias")):
            raise ValueError(f"not a DeepSDF decoder state dict (expected keys lin0.* .. linN.* and bn*): "
                             f"unexpected key {key!r}")
        (lins if match[1] == "lin" else norms).setdefault(int(match[2]), {})[match[3]] = value
    indices = sorted(lins)
    if len(indices) < 2 or indices != list(range(len(indices))):
        raise ValueError(f"not a DeepSDF decoder state dict (expected keys lin0.* .. linN.*), got layers {indices}")
    for i in indices:
        if set(lins[i]) not in _LIN_KINDS:
            raise ValueError(f"lin{i} has {sorted(lins[i])}: expected weight and bias, or weight_g, weight_v and bias")
    for i, norm in norms.items():
        # The original makes bn{i} for every layer in norm_layers but applies it to hidden layers only.
        if i not in lins or set(norm) != {"weight", "bias"}:
            raise ValueError(f"bn{i} has {sorted(norm)} for {'no' if i not in lins else 'a'} layer {i}: "
                             "expected weight and bias of a layer's LayerNorm")
    return [lins[i] for i in indices], norms


def _latent_in(shapes: list[tuple[int, int]], inputs: int, hidden: int) -> tuple[int, ...]:
    """The layers whose input is concatenated with the decoder's input again, from the weights'
    (out, in) shapes; ValueError for what the original makes and DeepSDFDecoder does not."""
    latent_in = []
    for i, ((out, _), (_, fan_in)) in enumerate(zip(shapes, shapes[1:]), start=1):
        if fan_in == out + inputs:
            latent_in.append(i)
        elif fan_in != out:
            raise ValueError(f"layer {i} takes {fan_in} inputs after a layer of {out} outputs: not a decoder "
                             "DeepSDFDecoder can be (xyz_in_all is not supported)")
    if shapes[-1][0] != 1:
        raise ValueError(f"the output layer has {shapes[-1][0]} outputs, not 1")
    if latent_in and latent_in[-1] == len(shapes) - 1:
        raise ValueError("the input is concatenated again before the output layer: not supported")
    for i, (out, _) in enumerate(shapes[:-1]):
        if out != hidden - (inputs if i + 1 in latent_in else 0):
            raise ValueError(f"layer {i} has {out} outputs: DeepSDFDecoder's hidden layers are all {hidden} wide "
                             "(less the input before latent_in)")
    return tuple(latent_in)
