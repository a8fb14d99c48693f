"""The checks of a network's inputs that every ``fastsdf.nn`` network makes: a tensor of shape
(..., features) with the parameters' dtype and device, and a latent code broadcast over the points'
leading shape."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["check_tensor", "network_inputs"]


def check_tensor(name: str, value: Any, features: int, reference: torch.Tensor) -> torch.Tensor:
    """``value`` if it is a tensor of shape (..., features) with ``reference``'s dtype and device;
    TypeError or ValueError saying which it is not."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if value.ndim < 1 or value.shape[-1] != features:
        raise ValueError(f"{name} must have shape (..., {features}), got {tuple(value.shape)}")
    if value.dtype != reference.dtype:
        raise TypeError(f"{name} is {value.dtype} but the network's parameters are {reference.dtype}: convert "
                        f"one of them (e.g. {name}.to({reference.dtype}) or model.to({value.dtype}))")
    if value.device != reference.device:
        raise ValueError(f"{name} is on {value.device} but the network is on {reference.device}")
    return value


def network_inputs(x: Any, latent: Any, in_features: int, latent_features: int,
                   reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, ...]]:
    """(x as (N, in_features), the latent code as (N, latent_features) or None, x's leading shape),
    after checking both: a network without a latent input refuses one, a network with one needs one
    that broadcasts to x's leading shape."""
    x = check_tensor("x", x, in_features, reference)
    lead = tuple(x.shape[:-1])
    if latent_features == 0:
        if latent is not None:
            raise ValueError("this network has no latent input (latent_features=0), but a latent code was given")
        return x.reshape(-1, in_features), None, lead
    if latent is None:
        raise ValueError(f"this network takes a latent code of {latent_features} features: pass latent=")
    latent = check_tensor("latent", latent, latent_features, reference)
    try:
        latent = latent.expand(*lead, latent_features)
    except RuntimeError:
        raise ValueError(f"latent of shape {tuple(latent.shape)} does not broadcast to x's leading shape "
                         f"{lead}") from None
    return x.reshape(-1, in_features), latent.reshape(-1, latent_features), lead
