"""Networks: the fused SIREN (``SirenMLP``), the official ``Siren`` interface on top of it, DeepSDF's
decoder (``DeepSDFDecoder``), Occupancy Networks' encoder and decoder (``PointNetEncoder``,
``OccupancyDecoder``), latent diffusion's denoiser (``LatentDenoiser``), and the baselines they are
compared with: a ReLU MLP (``ReluMLP``) behind an optional ``FourierFeatures`` encoding."""

from typing import Any

from torch import nn

from fastsdf.nn.deepsdf import DeepSDFDecoder
from fastsdf.nn.denoiser import LatentDenoiser
from fastsdf.nn.fourier_features import FourierFeatures
from fastsdf.nn.occupancy import OccupancyDecoder, PointNetEncoder
from fastsdf.nn.relu_mlp import ReluMLP
from fastsdf.nn.siren import Siren, SirenMLP

__all__ = ["NETWORKS", "DeepSDFDecoder", "FourierFeatures", "LatentDenoiser", "OccupancyDecoder", "PointNetEncoder",
           "ReluMLP", "Siren", "SirenMLP", "network_from_config", "network_name"]

# The networks saved models may hold, by the name stored with them.
NETWORKS: dict[str, type[nn.Module]] = {"SirenMLP": SirenMLP, "DeepSDFDecoder": DeepSDFDecoder, "ReluMLP": ReluMLP,
                                        "PointNetEncoder": PointNetEncoder, "OccupancyDecoder": OccupancyDecoder,
                                        "LatentDenoiser": LatentDenoiser}


def network_name(network: nn.Module) -> str:
    """The name ``network_from_config`` knows ``network``'s class by; TypeError for other classes."""
    for name, cls in NETWORKS.items():
        if type(network) is cls:
            return name
    raise TypeError(f"cannot save a {type(network).__name__}: fastsdf saves {sorted(NETWORKS)}")


def network_from_config(name: str, config: dict[str, Any]) -> nn.Module:
    """A network of a class in ``NETWORKS`` made from its ``config()``."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network class {name!r} (known: {sorted(NETWORKS)})")
    return NETWORKS[name](**config)
