"""The trained DeepSDF auto-decoder (``AutoDecoder``): one decoder for many shapes, each shape a
latent code learned with it (``fastsdf.training.train_deepsdf`` trains one). Its shapes come out as
``FittedSDF`` models; decoder, codes and names are saved and loaded as one file.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from fastsdf._validation import integer
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.training.fitted import FittedSDF
from fastsdf.training.saved import field, latent_table_from_state, network_from_state, network_state, write_state

__all__ = ["AutoDecoder", "LatentShape", "shape_index"]

FORMAT = "fastsdf.autodecoder"


class LatentShape(nn.Module):
    """One shape of a latent-conditioned decoder: the decoder with its code fixed, (..., dim) -> (..., 1)."""

    def __init__(self, decoder: nn.Module, code: torch.Tensor):
        super().__init__()
        self.decoder = decoder
        self.in_features = getattr(decoder, "in_features", 3)
        self.register_buffer("code", code.detach().reshape(-1).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(x, self.code)

    def forward_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (..., 1) and their gradients with respect to x, (..., 1, dim)."""
        if hasattr(self.decoder, "forward_with_gradient"):
            return self.decoder.forward_with_gradient(x, self.code)
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            values = self.decoder(x, self.code)
            (gradient,) = torch.autograd.grad(values.sum(), x)
        return values.detach(), gradient.unsqueeze(-2)


class AutoDecoder(nn.Module):
    """A trained decoder and the codes of the shapes it was trained on.

    Args:
        decoder: a network ``decoder(points, latent)`` -> (..., 1): ``DeepSDFDecoder``, or a
            ``SirenMLP`` or ``ReluMLP`` with ``latent_features``.
        codes: (shapes, latent_size) tensor.
        names: one per shape.
        transforms: each shape's normalisation (None where its samples did not record one).
        history: what training recorded.
    """

    def __init__(self, decoder: nn.Module, codes: torch.Tensor, names: Sequence[str],
                 transforms: Sequence[NormalizationTransform | None] | None = None,
                 history: dict[str, Any] | None = None):
        super().__init__()
        if codes.ndim != 2 or len(codes) != len(names):
            raise ValueError(f"codes must be (len(names), latent_size), got {tuple(codes.shape)} for {len(names)} names")
        self.decoder = decoder
        self.register_buffer("codes", codes.detach().clone())
        self.names = list(names)
        self.transforms = list(transforms) if transforms is not None else [None] * len(self.names)
        self.history = history or {}

    @property
    def latent_size(self) -> int:
        return self.codes.shape[1]

    def code(self, shape: str | int) -> torch.Tensor:
        """The code of a training shape, by name or index."""
        return self.codes[shape_index(self.names, shape)]

    def shape(self, code: str | int | torch.Tensor, transform: NormalizationTransform | None = None) -> FittedSDF:
        """One shape as a ``FittedSDF`` (``.sdf(points)``, ``extract_mesh``, ``render_sdf``): a
        training shape by name or index (in its own mesh's coordinates when its samples recorded
        the normalisation), or any code (in the normalised frame, unless ``transform`` is given)."""
        if isinstance(code, (str, int)):
            index = shape_index(self.names, code)
            code, transform = self.codes[index], transform or self.transforms[index]
        code = torch.as_tensor(code, dtype=self.codes.dtype, device=self.codes.device).reshape(-1)
        if len(code) != self.latent_size:
            raise ValueError(f"a code must have {self.latent_size} values, got {len(code)}")
        identity = NormalizationTransform.identity(getattr(self.decoder, "in_features", 3))
        return FittedSDF(LatentShape(self.decoder, code), transform or identity)

    def interpolate(self, a: str | int | torch.Tensor, b: str | int | torch.Tensor, count: int) -> list[FittedSDF]:
        """``count`` shapes whose codes run linearly from ``a``'s to ``b``'s, both included (in the
        normalised frame)."""
        count = integer(count, "count", minimum=2)
        ends = [self.codes[shape_index(self.names, c)] if isinstance(c, (str, int)) else torch.as_tensor(c)
                for c in (a, b)]
        return [self.shape(torch.lerp(ends[0], ends[1], t / (count - 1))) for t in range(count)]

    def save(self, path: str | os.PathLike) -> Any:
        """Writes the decoder, codes, names, transforms and history to ``path`` (a file, or a folder
        that gets ``model.pt``), atomically; ``fastsdf.load_model`` reads it."""
        return write_state(path, FORMAT, self.state())

    def state(self) -> dict[str, Any]:
        """The fields ``save`` writes (and ``from_state`` reads), as a dict of plain values and
        tensors: what a model that holds an auto-decoder saves of it."""
        return {"network": network_state(self.decoder), "codes": self.codes.detach().cpu(), "names": self.names,
                "transforms": [t.to_dict() if t is not None else None for t in self.transforms],
                "history": self.history}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "AutoDecoder":
        """The model ``save`` wrote, from its dict (``fastsdf.training.saved.read_state``); ValueError
        saying which field is wrong for anything else."""
        codes, names, transforms = latent_table_from_state(state)
        history = field(state, "history", dict, "a dict")
        decoder = network_from_state(field(state, "network", dict, "a dict"))
        latent_size = getattr(decoder, "latent_size", getattr(decoder, "latent_features", None))
        if codes.shape[1] != latent_size:
            raise ValueError(f"'codes' have {codes.shape[1]} values each, the decoder takes {latent_size}")
        return cls(decoder, codes, names, transforms, history)


def shape_index(names: list[str], shape: str | int) -> int:
    """The row of ``shape`` (a training shape's name, or an index, negative ones from the end)
    among ``names``; KeyError or IndexError naming what exists."""
    if isinstance(shape, str):
        if shape not in names:
            raise KeyError(f"no shape named {shape!r} (there are {len(names)}: {names[:5]}...)")
        return names.index(shape)
    if not -len(names) <= shape < len(names):
        raise IndexError(f"shape index {shape} out of range for {len(names)} shapes")
    return int(shape) % len(names)
