"""Training losses for implicit surfaces: DeepSDF's clamped L1, SIREN's SDF loss, occupancy BCE, and
a VAE's KL term.

Conventions: signed distances and logits are negative inside.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from fastsdf._validation import one_of

__all__ = ["DEEPSDF_CLAMP", "SIREN_WEIGHTS", "clamped_l1", "gaussian_kl", "occupancy_bce", "siren_sdf"]

# DeepSDF's clamping distance delta (specs "ClampingDistance").
DEEPSDF_CLAMP = 0.1
# The weights of the official SIREN SDF loss (loss_functions.sdf): on-surface value, off-surface
# exp(-100 |f|), normal alignment, eikonal.
SIREN_WEIGHTS = {"surface": 3e3, "off_surface": 1e2, "normal": 1e2, "eikonal": 5e1}


def clamped_l1(predicted: torch.Tensor, target: torch.Tensor, delta: float = DEEPSDF_CLAMP,
               reduction: str = "mean", deepsdf_gradient: bool = False) -> torch.Tensor:
    """DeepSDF's loss, mean |clamp(f, -delta, delta) - clamp(s, -delta, delta)|: detail where it
    matters, near the surface, and no effort spent on far-away values.

    DeepSDF's formula has no gradient where the prediction lies beyond the clamp and that is
    wrong (say f = 0.3 for s = -0.5, or for s = 0.05): a network whose output bias starts beyond
    delta (SIREN's default initialisation allows up to 1/sqrt(width)) never moves. Here the
    prediction is clamped only on the side where the target is saturated too, which gives the
    same value wherever DeepSDF's loss has a gradient and a larger, informative one elsewhere.
    ``deepsdf_gradient=True`` computes DeepSDF's formula as written (to reproduce its numbers).

    ``reduction``: ``"mean"`` (a scalar) or ``"none"`` (per point).
    """
    one_of(reduction, "reduction", ("mean", "none"))
    target = target.clamp(-delta, delta)
    if deepsdf_gradient:
        errors = (predicted.clamp(-delta, delta) - target).abs()
    else:
        # (Bounds in the target's dtype: torch.where of two Python numbers would make them float32.)
        low = torch.where(target <= -delta, target.new_tensor(-delta), target.new_tensor(-math.inf))
        high = torch.where(target >= delta, target.new_tensor(delta), target.new_tensor(math.inf))
        errors = (torch.minimum(torch.maximum(predicted, low), high) - target).abs()
    return errors.mean() if reduction == "mean" else errors


def siren_sdf(values: torch.Tensor, gradients: torch.Tensor, on_surface: torch.Tensor,
              normals: torch.Tensor) -> dict[str, torch.Tensor]:
    """The SIREN SDF loss (Sitzmann et al. 2020, its code's weights), by term and in total.

    Args:
        values: (N,) network values; gradients: (N, 3) their gradients with respect to the points.
        on_surface: (N,) bool, the points that lie on the surface; normals: (N, 3) their unit
            normals (any values elsewhere).

    Each term is a mean over all N points (zero where it does not apply), as in the official code:
    |f| on the surface, exp(-100 |f|) off it, 1 - cos(grad f, n) on it, | |grad f| - 1 | everywhere.
    """
    zero = torch.zeros_like(values)
    terms = {
        "surface": torch.where(on_surface, values.abs(), zero).mean(),
        "off_surface": torch.where(on_surface, zero, torch.exp(-100.0 * values.abs())).mean(),
        "normal": torch.where(on_surface, 1 - F.cosine_similarity(gradients, normals, dim=-1), zero).mean(),
        "eikonal": (gradients.norm(dim=-1) - 1).abs().mean(),
    }
    terms["total"] = sum(SIREN_WEIGHTS[name] * value for name, value in terms.items())
    return terms


def occupancy_bce(logits: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy of occupancy (Occupancy Networks), with logits negative inside: the
    network's zero level set is the surface, as for a signed distance."""
    return F.binary_cross_entropy_with_logits(-logits, inside.to(logits.dtype))


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor, prior_std: float = 1.0) -> torch.Tensor:
    """KL(N(mean, exp(log_var)) || N(0, prior_std^2)) per element (a diagonal Gaussian's KL to the
    prior is the sum of these over its dimensions): log(prior_std / sigma) + (sigma^2 + mean^2) /
    (2 prior_std^2) - 1/2, written with log_var so that no exp(-log_var) can overflow."""
    prior_var = float(prior_std) ** 2
    return 0.5 * ((log_var.exp() + mean.square()) / prior_var - 1.0 - log_var + math.log(prior_var))
