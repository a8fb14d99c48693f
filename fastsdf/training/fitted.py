"""``FittedSDF``: a trained network together with the frame it was trained in, saved and loaded as one.

A network learns a shape in its normalised frame (DeepSDF's unit sphere); ``FittedSDF`` takes points
in the mesh's own coordinates, maps them in, and maps distances back out, so that its values are
signed distances in the mesh's units (for an occupancy network: logits, negative inside).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastsdf._validation import one_of
from fastsdf.geometry.normalization import NormalizationTransform
from fastsdf.training.saved import field, network_from_state, network_state, transform_from_state, write_state

__all__ = ["FittedSDF"]

FORMAT = "fastsdf.fitted"
_CHUNK = 1 << 16


class FittedSDF(nn.Module):
    """A network (normalised frame, one output) and the transform into that frame.

    Args:
        network: a module mapping (..., dim) normalised points to (..., 1), with
            ``forward_with_gradient`` for rendering; to be saved, its class must be one of
            ``fastsdf.nn.NETWORKS``.
        transform: original -> normalised coordinates; its dimension (3, or 2 for a 2D shape) is
            the points'.
        kind: ``"sdf"`` (values are signed distances, scaled back to the mesh's units) or
            ``"occupancy"`` (values are logits, negative inside: not distances).
        history: what training recorded (kept in the saved file).
    """

    def __init__(self, network: nn.Module, transform: NormalizationTransform, kind: str = "sdf",
                 history: dict[str, Any] | None = None):
        super().__init__()
        one_of(kind, "kind", ("sdf", "occupancy"))
        inputs = getattr(network, "in_features", transform.dim)
        if inputs != transform.dim:
            raise ValueError(f"the network takes {inputs} coordinates per point, the transform has {transform.dim}")
        self.network = network
        self.transform = transform
        self.kind = kind
        self.history = history or {}
        self.register_buffer("offset", torch.tensor(transform.offset, dtype=torch.float32), persistent=False)
        self.register_buffer("scale", torch.tensor(transform.scale, dtype=torch.float32), persistent=False)

    @property
    def dim(self) -> int:
        """Coordinates per point: 3, or 2 for a 2D shape."""
        return self.transform.dim

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """The normalised frame's unit cube [-1, 1]^dim in the mesh's coordinates: (lo, hi), where
        the shape lies (the bounds to mesh it in)."""
        return self.transform.invert(np.full(self.dim, -1.0)), self.transform.invert(np.full(self.dim, 1.0))

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        """Values (...,) at points (..., dim) in the mesh's coordinates."""
        value = self.network((points + self.offset) * self.scale)[..., 0]
        return value / self.scale if self.kind == "sdf" else value

    def forward_with_gradient(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Values (...,) and their gradients (..., dim) with respect to the points (mesh coordinates)."""
        value, jacobian = self.network.forward_with_gradient((points + self.offset) * self.scale)
        value, gradient = value[..., 0], jacobian[..., 0, :]
        if self.kind == "sdf":
            return value / self.scale, gradient  # the scales cancel in the gradient
        return value, gradient * self.scale

    def sdf(self, points: Any) -> Any:
        """Values at points (N, dim) as NumPy or a tensor (any device); results of the same kind,
        computed in chunks without recording gradients."""
        tensor = torch.as_tensor(points)
        if tensor.ndim != 2 or tensor.shape[-1] != self.dim:
            raise ValueError(f"points must have shape (N, {self.dim}), got {tuple(tensor.shape)}")
        param = next(self.parameters())
        x = tensor.to(device=param.device, dtype=param.dtype)
        with torch.no_grad():
            out = torch.cat([self(x[i:i + _CHUNK]) for i in range(0, len(x), _CHUNK)]) if len(x) else x[:, 0]
        if isinstance(points, torch.Tensor):
            return out.to(points.device)
        return out.cpu().numpy().astype(np.asarray(points).dtype if np.asarray(points).dtype.kind == "f" else np.float32)

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the network (class, configuration, weights), the transform, the kind and the
        history to ``path`` (a file, or a folder that gets ``model.pt``), atomically; read it back
        with ``fastsdf.load_model``."""
        return write_state(path, FORMAT, {"network": network_state(self.network), "transform": self.transform.to_dict(),
                                          "kind": self.kind, "history": self.history})

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "FittedSDF":
        """The model ``save`` wrote, from its dict (``fastsdf.training.saved.read_state``); ValueError
        saying which field is wrong for anything else."""
        kind = field(state, "kind", str, "'sdf' or 'occupancy'")
        if kind not in ("sdf", "occupancy"):
            raise ValueError(f"'kind' must be 'sdf' or 'occupancy', got {kind!r}")
        transform = transform_from_state(field(state, "transform", dict, "a dict with 'offset' and 'scale'"),
                                         "transform")
        history = field(state, "history", dict, "a dict")
        return cls(network_from_state(field(state, "network", dict, "a dict")), transform, kind, history)
