"""The BVH that ``MeshSDF``'s kernels query, as arrays named after what they hold.

``fastsdf._C`` builds the tree (csrc/mesh_sdf/bvh_build.cpp); ``build_bvh`` adds the float64 data
of each triangle slot and the frame. csrc/mesh_sdf/bvh.h lays out every array; both compiled modules
read them by these names.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from fastsdf import _backend

__all__ = ["BvhArrays", "build_bvh"]


class BvhArrays(NamedTuple):
    """The mesh kernels' arrays (csrc/mesh_sdf/bvh.h): NumPy arrays, or torch tensors on a GPU
    beside a NumPy frame (the kernels read the frame on the host).

    The fields keep the order of the plain tuple that MeshSDF pickles made before they had names,
    so ``BvhArrays(*old)`` reads those."""

    node_box: Any
    node_link: Any
    node_dipole: Any
    closing_start: Any
    closing_edges: Any
    packs: Any
    triangles: Any
    distance_only: Any
    pseudonormal: Any
    boundary: Any
    frame: Any

    def to(self, device: Any) -> BvhArrays:
        """The arrays copied to ``device`` as torch tensors, the frame as it is."""
        import torch

        return self._replace(**{name: torch.from_numpy(array).to(device)
                                for name, array in self._asdict().items() if name != "frame"})

    def addresses(self) -> BvhArrays:
        """What fastsdf._cuda reads: each tensor's device address, and the frame's five numbers."""
        return self._replace(**{name: tensor.data_ptr() for name, tensor in self._asdict().items() if name != "frame"},
                             frame=tuple(float(x) for x in self.frame))


def build_bvh(vertices: np.ndarray, faces: np.ndarray, role: np.ndarray, corners: np.ndarray,
              pseudonormal: np.ndarray, exponent: int) -> tuple[BvhArrays, np.ndarray]:
    """The BVH over triangles ``faces`` (F, 3) int64 of ``vertices`` (V, 3) float64 in mesh units
    (the caller's coordinates times 2^-exponent), with each face's role (F,) uint8 (bvh.h's
    distance_only), corners (F, 3, 3) and pseudonormals (F, 7, 3); and the original face of each
    triangle slot (-1 for padding)."""
    built = _backend.cpu().msdf_build(vertices, faces, role)
    order = built["order"]
    arrays = BvhArrays(
        node_box=built["node_box"],
        node_link=built["node_link"],
        node_dipole=built["node_dipole"],
        closing_start=built["closing_start"],
        closing_edges=built["closing_edges"],
        packs=built["packs"],
        triangles=_per_slot(corners.reshape(-1, 9), order),
        distance_only=_per_slot(role, order),
        pseudonormal=_per_slot(pseudonormal.reshape(-1, 21), order),
        boundary=built["boundary"],
        frame=np.append(built["frame"], float(exponent)),
    )
    return arrays, order


def _per_slot(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """``values`` (F, ...) per face gathered to the tree's triangle slots; zeros in padding slots (-1)."""
    out = values[np.maximum(order, 0)]
    out[order < 0] = 0
    return np.ascontiguousarray(out)
