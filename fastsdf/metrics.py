"""The figures people report for learned shapes: occupancy F1 and IoU, Chamfer distance, F-score and
normal consistency, model size.

Occupancy is judged on fresh points, never the training ones: ``n_points`` points near the surface
(area-weighted surface samples plus Gaussian noise of std ``near_std``, in the normalised frame of
DeepSDF's unit sphere) and as many uniform in the bounding volume [-1, 1]^3 of that frame. The
ground truth is ``fastsdf.MeshSDF``'s sign (inside: signed distance < 0), the positive class.

Surface metrics compare two meshes by distances from points sampled on each (area-weighted) to the
other surface itself (``MeshSDF``'s exact point-to-triangle distances, not to the other mesh's
samples): Chamfer-L1 = (mean d(a->b) + mean d(b->a)) / 2 (Occupancy Networks), Chamfer-L2 = mean
d(a->b)^2 + mean d(b->a)^2 (DeepSDF), F-score@tau (Tatarchenko et al. 2019), normal consistency =
mean |n . n'| both ways with the normals of the closest triangles (Occupancy Networks).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from fastsdf.geometry.mesh_io import mesh_arrays
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.sampling import sample_surface

__all__ = ["f1_score", "iou", "mesh_metrics", "model_size_kb", "occupancy_metrics", "occupancy_network_metrics",
           "surface_metrics"]

NEAR_STD = 0.01
N_POINTS = 100_000
_BATCH = 1 << 16


def f1_score(predicted: np.ndarray, truth: np.ndarray) -> float:
    """F1 of the positive class (True) of boolean arrays; 1.0 when neither has a positive."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    tp = np.count_nonzero(predicted & truth)
    wrong = np.count_nonzero(predicted ^ truth)
    return 1.0 if tp + wrong == 0 else 2 * tp / (2 * tp + wrong)


def iou(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Intersection over union of boolean arrays; 1.0 when both are empty."""
    predicted, truth = np.asarray(predicted, bool), np.asarray(truth, bool)
    union = np.count_nonzero(predicted | truth)
    return 1.0 if union == 0 else np.count_nonzero(predicted & truth) / union


def _values(field: Callable[[np.ndarray], Any], points: np.ndarray) -> np.ndarray:
    out = np.empty(len(points), np.float64)
    for start in range(0, len(points), _BATCH):
        batch = points[start:start + _BATCH]
        values = np.asarray(field(batch), dtype=np.float64).reshape(-1)
        if values.shape != (len(batch),):
            raise ValueError(f"the field returned {values.size} values for {len(batch)} points")
        out[start:start + len(batch)] = values
    return out


def occupancy_metrics(field: Callable[[np.ndarray], Any], mesh: Any, transform: NormalizationTransform | None = None,
                      n_points: int = N_POINTS, near_std: float = NEAR_STD, seed: Any = None,
                      sign: str = "winding") -> dict[str, float]:
    """Occupancy F1 near the surface and in the bounding volume, and IoU in the volume, of a field
    against a mesh.

    Args:
        field: float32 (N, 3) points in the mesh's coordinates -> (N,) values, negative inside
            (a ``FittedSDF``'s ``sdf``, a ``MeshSDF``, any function).
        mesh: the ground truth (a Trimesh, a ``(vertices, faces)`` pair or a path).
        transform: the mesh's normalisation (a ``FittedSDF`` keeps its own: ``model.transform``);
            computed with ``fastsdf.normalize`` when None.

    Returns:
        ``{"f1_near", "f1_volume", "iou_volume"}``.
    """
    from fastsdf.geometry.mesh_io import load_mesh

    if isinstance(mesh, (str, bytes)) or hasattr(mesh, "__fspath__"):
        mesh = load_mesh(mesh)
    vertices, faces = mesh_arrays(mesh)
    if transform is None:
        transform = normalize((vertices, faces))[1]
    rng = np.random.default_rng(seed)
    normalised = transform.apply(vertices)
    surface, _ = sample_surface(normalised, faces, n_points, rng)
    near = surface + rng.normal(0.0, near_std, surface.shape)
    volume = rng.uniform(-1.0, 1.0, (n_points, 3))
    truth = MeshSDF(vertices, faces, sign=sign)
    out = {}
    for name, points in (("near", near), ("volume", volume)):
        original = transform.invert(points.astype(np.float32))
        inside = _values(truth, original) < 0
        predicted = _values(field, original) < 0
        out[f"f1_{name}"] = float(f1_score(predicted, inside))
        if name == "volume":
            out["iou_volume"] = float(iou(predicted, inside))
    return out


def surface_metrics(reconstruction: Any, reference: Any, n_points: int = N_POINTS, tau: float = 0.01,
                    seed: Any = None) -> dict[str, float]:
    """Chamfer-L1 and -L2, F-score@tau (with its precision and recall) and normal consistency of a
    reconstructed mesh against a reference one, both in the same coordinates (``tau`` in their
    units). An empty reconstruction gives infinite distances and zero scores."""
    rec_v, rec_f = _mesh_or_empty(reconstruction)
    ref_v, ref_f = mesh_arrays(reference)
    if len(rec_f) == 0:
        return {"chamfer_l1": float("inf"), "chamfer_l2": float("inf"), "f_score": 0.0, "precision": 0.0,
                "recall": 0.0, "normal_consistency": 0.0, "tau": tau}
    rng = np.random.default_rng(seed)
    rec_sdf, ref_sdf = MeshSDF(rec_v, rec_f), MeshSDF(ref_v, ref_f)
    distances, agreement = [], []
    for (v, f), other, other_faces_normals in (((rec_v, rec_f), ref_sdf, _face_normals(ref_v, ref_f)),
                                               ((ref_v, ref_f), rec_sdf, _face_normals(rec_v, rec_f))):
        points, normals = sample_surface(v, f, n_points, rng)
        closest, face, _ = other.closest(points)
        distances.append(np.linalg.norm(points - closest, axis=1))
        agreement.append(np.abs((normals * other_faces_normals[face]).sum(axis=1)))
    d_rec, d_ref = distances
    precision, recall = float(np.mean(d_rec < tau)), float(np.mean(d_ref < tau))
    return {
        "chamfer_l1": float((d_rec.mean() + d_ref.mean()) / 2),
        "chamfer_l2": float((d_rec**2).mean() + (d_ref**2).mean()),
        "f_score": 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall),
        "precision": precision,
        "recall": recall,
        "normal_consistency": float((agreement[0].mean() + agreement[1].mean()) / 2),
        "tau": tau,
    }


def mesh_metrics(reconstruction: Any, reference: Any, n_points: int = N_POINTS, near_std: float = NEAR_STD,
                 seed: Any = None) -> dict[str, float]:
    """Every figure above for a reconstructed mesh (``fastsdf reconstruct``'s, any mesh) against its
    reference, both in the reference's coordinates: ``occupancy_metrics`` with the reconstruction's
    own winding-number sign as the field, and ``surface_metrics`` with ``tau`` at 1% of the radius of
    the reference's unit sphere (DeepSDF's normalisation), the ``tau`` ``fastsdf eval`` gives a
    fitted model. Meshes are Trimeshes, ``(vertices, faces)`` pairs or paths; an empty
    reconstruction is outside everywhere."""
    from fastsdf.geometry.mesh_io import load_mesh

    def arrays(mesh: Any) -> Any:
        return load_mesh(mesh) if isinstance(mesh, (str, bytes)) or hasattr(mesh, "__fspath__") else mesh

    reference = mesh_arrays(arrays(reference))
    rec_v, rec_f = _mesh_or_empty(arrays(reconstruction))
    transform = normalize(reference)[1]
    field = MeshSDF(rec_v, rec_f) if len(rec_f) else (lambda points: np.ones(len(points)))
    out = occupancy_metrics(field, reference, transform, n_points=n_points, near_std=near_std, seed=seed)
    out.update(surface_metrics((rec_v, rec_f), reference, n_points=n_points, tau=0.01 / transform.scale, seed=seed))
    return out


def occupancy_network_metrics(field: Callable[[np.ndarray], Any], reconstruction: Any, reference: Any,
                              transform: NormalizationTransform | None = None, n_points: int = N_POINTS,
                              seed: Any = None) -> dict[str, float]:
    """The three figures Occupancy Networks report, of a field and its mesh against a reference mesh
    (all in the reference's coordinates):

    - ``iou_volume``: IoU of the inside (field < 0) with the reference's (``MeshSDF`` sign) on
      ``n_points`` points uniform in the padded box [-1, 1]^3 of the normalised frame
      (``occupancy_metrics``'; ONet: 100k points in its unit cube padded by 0.1).
    - ``chamfer_l1``: (mean d(rec -> ref) + mean d(ref -> rec)) / 2 over ``n_points`` area-weighted
      samples of each mesh, divided by the reference's longest bounding-box side: in ONet's unit
      cube frame (the shape's longest side 1), so that the numbers compare with its tables. fastsdf
      measures exact point-to-triangle distances (``surface_metrics``); ONet measures point to
      nearest sampled point (100k each), which adds the sampling's spacing (slightly larger).
    - ``normal_consistency``: mean |n . n'| both ways, n' the normal of the closest triangle
      (``surface_metrics``'; ONet: of the nearest sampled point).

    Also ``chamfer_l1_units``: the Chamfer-L1 in the reference's own units, and ``unit_cube_scale``,
    the factor between them. An empty reconstruction gives an infinite Chamfer distance.
    """
    reference_v, reference_f = mesh_arrays(reference)
    used = reference_v[np.unique(reference_f)]
    side = float((used.max(axis=0) - used.min(axis=0)).max())
    volume = occupancy_metrics(field, (reference_v, reference_f), transform, n_points=n_points, seed=seed)
    surface = surface_metrics(reconstruction, (reference_v, reference_f), n_points=n_points, seed=seed)
    return {"iou_volume": volume["iou_volume"], "chamfer_l1": surface["chamfer_l1"] / side,
            "normal_consistency": surface["normal_consistency"], "chamfer_l1_units": surface["chamfer_l1"],
            "unit_cube_scale": 1.0 / side}


def _mesh_or_empty(mesh: Any) -> tuple[np.ndarray, np.ndarray]:
    vertices, faces = (mesh.vertices, mesh.faces) if hasattr(mesh, "faces") else mesh
    vertices, faces = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    return (vertices, faces) if len(faces) == 0 else mesh_arrays((vertices, faces))


def _face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-30)


def model_size_kb(model: Any) -> float:
    """Parameters and buffers of a torch module, in KB (1024 bytes)."""
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors) / 1024
