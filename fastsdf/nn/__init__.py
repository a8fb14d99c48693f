"""Networks: the fused SIREN (``SirenMLP``) and the official ``Siren`` interface on top of it."""

from fastsdf.nn.siren import Siren, SirenMLP

__all__ = ["Siren", "SirenMLP"]
