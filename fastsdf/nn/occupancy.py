"""Occupancy Networks (Mescheder et al. 2019): a point-cloud encoder and the occupancy decoders.

``PointNetEncoder`` is ONet's ResNet-PointNet: a linear map of each point to 2h features, then
ResNet blocks shared by the points, each block's output max-pooled over the points and the pooled
features concatenated back to every point before the next block; the last block is pooled into one
feature vector, which a ReLU and a linear layer turn into the latent code.

``OccupancyDecoder`` is ONet's decoder: the point mapped to h features, ResNet blocks whose
normalisations are conditional batch norms (``ConditionalBatchNorm``: batch normalisation without
its own affine parameters, then a scale and a shift computed linearly from the code;
``conditioning="batchnorm"``, ONet's ``DecoderCBatchNorm``) or, the simpler option
(``conditioning="concat"``, ONet's plain ``Decoder``), the code joined to the point by one linear
map of their concatenation (fc_p(p) + fc_c(c) in ONet's code: the same map) and blocks without
normalisation. Both output one logit per point, trained negative inside (fastsdf's convention,
``fastsdf.training.losses.occupancy_bce``; ONet's logits are positive inside).

Written from the paper and its published configuration, not from its code; the initialisation
follows it where it matters: each block's second linear layer starts at zero (a block starts as
its shortcut) and the conditional batch norms start as plain batch norms (scale 1, shift 0). One
departure: with conditional batch norm, the linear layers whose outputs reach only batch norms
(``fc_p`` and each block's ``fc_0`` and ``fc_1``: the running sum they add to is normalised before
every use) have no bias. The normalisation subtracts any such bias again, so the loss does not
depend on it: its gradient is rounding noise, which Adam scales up to steps of the learning rate,
so with a bias it would wander at random (differently on 1 and N processes, whose rounding
differs) and the evaluation's running means would trail it.

Batch statistics are taken over every point of the batch (ONet's ``BatchNorm1d`` over the shapes
and their points); with ``ConditionalBatchNorm.sync`` set (training under DDP does), over every
process's points, so that N processes normalise with the whole batch's statistics as one does.
In eval mode the running statistics are used and each point's value depends on it alone.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastsdf._validation import integer, one_of

__all__ = ["ConditionalBatchNorm", "OccupancyDecoder", "PointNetEncoder", "ResnetBlock"]

MOMENTUM = 0.1  # BatchNorm1d's running-statistics momentum, as ONet's layers use
EPSILON = 1e-5


class ResnetBlock(nn.Module):
    """ONet's fully connected ResNet block: x + fc_1(relu(fc_0(relu(x)))), the shortcut a linear
    map without bias where the sizes differ; hidden size min(size_in, size_out)."""

    def __init__(self, size_in: int, size_out: int | None = None):
        super().__init__()
        size_out = size_in if size_out is None else size_out
        hidden = min(size_in, size_out)
        self.fc_0 = nn.Linear(size_in, hidden)
        self.fc_1 = nn.Linear(hidden, size_out)
        self.shortcut = nn.Linear(size_in, size_out, bias=False) if size_in != size_out else None
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dx = self.fc_1(F.relu(self.fc_0(F.relu(x))))
        return (x if self.shortcut is None else self.shortcut(x)) + dx


class PointNetEncoder(nn.Module):
    """ONet's ResNet-PointNet encoder: point clouds (..., N, in_features) -> codes (..., latent_size).

    Args:
        latent_size: the code's length (ONet's ``c_dim``; its point-cloud experiment: 512).
        hidden_features: h, the blocks' output width (ONet's ``hidden_dim``; 512 in that experiment).
        blocks: ResNet blocks (ONet's 5), with max-pooling and concatenation between them.
        in_features: coordinates per point.

    Invariant to the order of the points (only max-pooling mixes them). N must be at least 1.
    """

    def __init__(self, latent_size: int = 256, hidden_features: int = 512, blocks: int = 5, in_features: int = 3):
        super().__init__()
        self.latent_size = integer(latent_size, "latent_size", minimum=1)
        self.hidden_features = integer(hidden_features, "hidden_features", minimum=1)
        self.blocks = integer(blocks, "blocks", minimum=1)
        self.in_features = integer(in_features, "in_features", minimum=1)
        h = self.hidden_features
        self.fc_pos = nn.Linear(self.in_features, 2 * h)
        self.resnet = nn.ModuleList(ResnetBlock(2 * h, h) for _ in range(self.blocks))
        self.fc_c = nn.Linear(h, self.latent_size)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments."""
        return {"latent_size": self.latent_size, "hidden_features": self.hidden_features, "blocks": self.blocks,
                "in_features": self.in_features}

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        if points.ndim < 2 or points.shape[-1] != self.in_features or points.shape[-2] == 0:
            raise ValueError(f"points must have shape (..., N, {self.in_features}) with N >= 1, "
                             f"got {tuple(points.shape)}")
        x = self.fc_pos(points)
        for i, block in enumerate(self.resnet):
            if i:
                x = torch.cat([x, x.amax(dim=-2, keepdim=True).expand_as(x)], dim=-1)
            x = block(x)
        return self.fc_c(F.relu(x.amax(dim=-2)))


class ConditionalBatchNorm(nn.Module):
    """Batch normalisation of (..., features) without affine parameters, then gamma(c) * x + beta(c)
    with gamma and beta linear in the code c (..., latent_size), starting at 1 and 0.

    Training mode normalises with the mean and biased variance over all leading dimensions (every
    point of every shape) and updates the running statistics (unbiased variance, momentum 0.1);
    eval mode uses the running statistics. ``sync`` (set by training under DDP): the statistics
    are summed over the default process group, gradients included.
    """

    def __init__(self, latent_size: int, features: int):
        super().__init__()
        self.features = features
        self.gamma = nn.Linear(latent_size, features)
        self.beta = nn.Linear(latent_size, features)
        nn.init.zeros_(self.gamma.weight)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.weight)
        nn.init.zeros_(self.beta.bias)
        self.register_buffer("running_mean", torch.zeros(features))
        self.register_buffer("running_var", torch.ones(features))
        self.sync = False

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        if self.training:
            rows = x.reshape(-1, self.features)
            sums = torch.cat([rows.sum(dim=0), rows.square().sum(dim=0),
                              rows.new_full((1,), float(len(rows)))])
            if self.sync:
                from torch.distributed.nn.functional import all_reduce

                sums = all_reduce(sums)
            count = sums[-1]
            if count < 2:
                raise ValueError("batch normalisation in training mode needs at least 2 points per batch")
            mean = sums[:self.features] / count
            var = (sums[self.features:2 * self.features] / count - mean.square()).clamp_min(0)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), MOMENTUM)
                self.running_var.lerp_(var.detach() * (count / (count - 1)), MOMENTUM)
        else:
            mean, var = self.running_mean, self.running_var
        normalised = (x - mean) * torch.rsqrt(var + EPSILON)
        return self.gamma(latent) * normalised + self.beta(latent)


class _ConditionalBlock(nn.Module):
    """ONet's CResnetBlockConv1d: x + fc_1(relu(cbn_1(fc_0(relu(cbn_0(x, c))), c)))."""

    def __init__(self, latent_size: int, size: int):
        super().__init__()
        self.bn_0 = ConditionalBatchNorm(latent_size, size)
        self.bn_1 = ConditionalBatchNorm(latent_size, size)
        # No biases: batch norms follow, and subtract them again (the module's docstring says why).
        self.fc_0 = nn.Linear(size, size, bias=False)
        self.fc_1 = nn.Linear(size, size, bias=False)
        nn.init.zeros_(self.fc_1.weight)

    def forward(self, x: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        net = self.fc_0(F.relu(self.bn_0(x, latent)))
        return x + self.fc_1(F.relu(self.bn_1(net, latent)))


class OccupancyDecoder(nn.Module):
    """ONet's decoder: points (..., in_features) and codes (..., latent_size) (or one code
    (latent_size,) for every point) -> logits (..., 1), negative inside.

    Args:
        latent_size: the code's length.
        hidden_features: the blocks' width (default: ONet's, 256 with conditional batch norm, 128
            for ``"concat"``).
        blocks: ResNet blocks (ONet's 5).
        conditioning: ``"batchnorm"`` (``DecoderCBatchNorm``) or ``"concat"`` (the plain ``Decoder``).
        in_features: coordinates per point.
    """

    def __init__(self, latent_size: int = 256, hidden_features: int | None = None, blocks: int = 5,
                 conditioning: str = "batchnorm", in_features: int = 3):
        super().__init__()
        self.conditioning = one_of(conditioning, "conditioning", ("batchnorm", "concat"))
        self.latent_size = integer(latent_size, "latent_size", minimum=1)
        default = 256 if conditioning == "batchnorm" else 128
        self.hidden_features = integer(default if hidden_features is None else hidden_features, "hidden_features",
                                       minimum=1)
        self.blocks = integer(blocks, "blocks", minimum=1)
        self.in_features = integer(in_features, "in_features", minimum=1)
        h = self.hidden_features
        if self.conditioning == "batchnorm":
            self.fc_p = nn.Linear(self.in_features, h, bias=False)  # normalised before any use
            self.resnet = nn.ModuleList(_ConditionalBlock(self.latent_size, h) for _ in range(self.blocks))
            self.bn = ConditionalBatchNorm(self.latent_size, h)
        else:
            self.fc_p = nn.Linear(self.in_features + self.latent_size, h)
            self.resnet = nn.ModuleList(ResnetBlock(h) for _ in range(self.blocks))
        self.fc_out = nn.Linear(h, 1)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments."""
        return {"latent_size": self.latent_size, "hidden_features": self.hidden_features, "blocks": self.blocks,
                "conditioning": self.conditioning, "in_features": self.in_features}

    def forward(self, points: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        if points.ndim < 1 or points.shape[-1] != self.in_features:
            raise ValueError(f"points must have shape (..., {self.in_features}), got {tuple(points.shape)}")
        if latent is None or latent.ndim < 1 or latent.shape[-1] != self.latent_size:
            raise ValueError(f"latent must have shape (..., {self.latent_size}), "
                             f"got {None if latent is None else tuple(latent.shape)}")
        lead = torch.broadcast_shapes(points.shape[:-1], latent.shape[:-1])
        points = points.expand(*lead, -1)
        if self.conditioning == "concat":
            x = self.fc_p(torch.cat([points, latent.expand(*lead, -1)], dim=-1))
            for block in self.resnet:
                x = block(x)
            return self.fc_out(F.relu(x))
        # The code's scale and shift are computed once per code and broadcast over its points.
        x = self.fc_p(points)
        for block in self.resnet:
            x = block(x, latent)
        return self.fc_out(F.relu(self.bn(x, latent)))
