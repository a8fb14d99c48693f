"""``FourierFeatures``: sines and cosines of a linear map of the coordinates, the encodings that let a
ReLU MLP learn detail it otherwise smooths away.

- Positional encoding (NeRF, Mildenhall et al. 2020): gamma(p) = (sin(2^k pi p), cos(2^k pi p)) for
  k < L, of each coordinate (``frequencies=L``).
- Gaussian random Fourier features (Tancik et al. 2020): (sin(2 pi B p), cos(2 pi B p)) with B
  (features, in) drawn N(0, sigma^2) from torch's generator when the module is built
  (``sigma=...``); B is saved with the weights.

Either way the phases are ``matrix @ p`` (rows 2^k pi e_j, or 2 pi B) and the output is
``[p (include_input), sin(phases), cos(phases)]``, the phases ordered frequency first:
phase[k * in + j] = 2^k pi p_j.

Phases are float32 for float32 inputs, and float32 spaces the values near a phase of magnitude 2^e
by 2^(e - 23): a positional frequency 2^(L-1) pi at |p| <= 1 is exact to 2^(L-24) rad. Up to
``MAX_FREQUENCIES`` (16: within 2^-8 rad) the highest frequency is still a sine of the point;
beyond, it is noise. ``MAX_SIGMA`` keeps Gaussian phases in the same range (2 pi 8 sigma <= 2^15 pi:
no draw of fewer than 10^15 entries reaches 8 sigma). The product is exact float32 whatever
torch's matmul precision settings say (``fastsdf.ops.siren_composed.linear``'s first-layer rule).

There is no fused kernel behind it: the CPU's fused sine (``fastsdf.ops.siren_cpu.sincos``: sin and
cos in one pass) computes the L = 10 encoding of 65,536 points in 5.6 ms against torch's 6.1 ms
(one core, CPU time), where one training step of a 3 -> 256 x 4 -> 1 ReLU MLP on them takes 1.2 s
(8,192 points: 0.46 against 0.56 ms of a 100 ms step): the encoding is under 1% of the work.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fastsdf._validation import integer, real
from fastsdf.nn.inputs import check_tensor
from fastsdf.ops import siren_composed

__all__ = ["DEFAULT_FEATURES", "MAX_FREQUENCIES", "MAX_SIGMA", "FourierFeatures"]

MAX_FREQUENCIES = 16
MAX_SIGMA = 2048.0
DEFAULT_FEATURES = 256  # Gaussian features, Tancik et al.'s m


class FourierFeatures(nn.Module):
    """(..., in_features) -> (..., out_features): NeRF's positional encoding with ``frequencies``
    (L) frequencies, or ``features`` Gaussian random Fourier features of scale ``sigma`` (give one
    of ``frequencies`` and ``sigma``).

    Args:
        in_features: coordinates per point.
        frequencies: L in [1, ``MAX_FREQUENCIES``]: 2 L in_features features.
        sigma: the standard deviation of B's entries, in (0, ``MAX_SIGMA``]: 2 ``features`` features.
        features: rows of B (default ``DEFAULT_FEATURES``); only with ``sigma``.
        include_input: whether p itself comes first; default as each paper's code: True for the
            positional encoding (NeRF), False for Gaussian features (Tancik et al.).
    """

    def __init__(self, in_features: int = 3, frequencies: int | None = None, *, sigma: float | None = None,
                 features: int | None = None, include_input: bool | None = None):
        super().__init__()
        self.in_features = integer(in_features, "in_features", minimum=1)
        if (frequencies is None) == (sigma is None):
            raise ValueError("give one of frequencies (NeRF's positional encoding) and sigma (Gaussian features), "
                             f"got frequencies={frequencies!r}, sigma={sigma!r}")
        if frequencies is not None:
            if features is not None:
                raise ValueError("features is the number of Gaussian features: give it with sigma, not frequencies")
            self.frequencies: int | None = integer(frequencies, "frequencies", 1, MAX_FREQUENCIES)
            self.sigma: float | None = None
            self.features = self.frequencies * self.in_features
            # 2^k pi rounds to 2^k times float32's pi: the phases are p_j times that, rounded once.
            # (Made from Python numbers: torch's repeat and arange take seconds on the meta device,
            # where saved models are checked.)
            rows = [[math.ldexp(math.pi, k) if j == i else 0.0 for j in range(self.in_features)]
                    for k in range(self.frequencies) for i in range(self.in_features)]
            matrix = torch.tensor(rows, dtype=torch.float64).float()
        else:
            self.frequencies = None
            self.sigma = real(sigma, "sigma", 0, MAX_SIGMA, low_open=True)
            self.features = integer(DEFAULT_FEATURES if features is None else features, "features", minimum=1)
            matrix = torch.randn(self.features, self.in_features) * (2 * math.pi * self.sigma)
        if include_input is not None and not isinstance(include_input, bool):
            raise TypeError(f"include_input must be True, False or None, got {include_input!r}")
        self.include_input = (self.sigma is None) if include_input is None else include_input
        # The positional matrix follows from the configuration; a Gaussian one is saved with the weights.
        self.register_buffer("matrix", matrix, persistent=self.sigma is not None)

    @property
    def out_features(self) -> int:
        return 2 * self.features + (self.in_features if self.include_input else 0)

    def config(self) -> dict[str, Any]:
        """The constructor's arguments (``FourierFeatures(**config())`` makes one of this shape; a
        Gaussian one draws a new B, which its state dict replaces)."""
        return {"in_features": self.in_features, "frequencies": self.frequencies, "sigma": self.sigma,
                "features": None if self.sigma is None else self.features, "include_input": self.include_input}

    def extra_repr(self) -> str:
        kind = f"frequencies={self.frequencies}" if self.sigma is None else \
            f"sigma={self.sigma:g}, features={self.features}"
        return f"in_features={self.in_features}, {kind}, include_input={self.include_input}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The features of x (..., in_features): (..., out_features), in x's dtype."""
        x = check_tensor("x", x, self.in_features, self.matrix)
        phases = siren_composed.linear("fp32", x.device)(x, self.matrix, None, 0)
        parts = [x, torch.sin(phases), torch.cos(phases)] if self.include_input else \
            [torch.sin(phases), torch.cos(phases)]
        return torch.cat(parts, dim=-1)
