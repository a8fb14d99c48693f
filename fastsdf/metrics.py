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

Generation metrics compare a set of generated shapes with a reference set as PointFlow (Yang et al.
2019) and DiffusionSDF do: each shape is a cloud of 2,048 points sampled on its surface
(area-weighted), and two clouds' Chamfer distance is PointFlow's, the sum of the mean squared
distances to the nearest point of the other cloud both ways. From the matrix of those distances:
minimum matching distance (MMD: over the reference shapes, the mean distance to the closest
generated one), coverage (COV: the share of reference shapes that are the closest reference of at
least one generated shape) and 1-nearest-neighbour accuracy (1-NNA: the leave-one-out accuracy of
the 1-NN classifier telling the two sets apart; 0.5 is ideal).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from fastsdf._validation import integer
from fastsdf.geometry.mesh_io import mesh_arrays
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.sampling import sample_surface

__all__ = ["chamfer_matrix", "f1_score", "generation_metrics", "generation_scores", "iou", "mesh_metrics",
           "model_size_kb", "nearest_shapes", "occupancy_metrics", "occupancy_network_metrics", "point_clouds",
           "surface_metrics"]

NEAR_STD = 0.01
N_POINTS = 100_000
CLOUD_POINTS = 2048  # PointFlow's and DiffusionSDF's points per shape for the generation metrics
_BATCH = 1 << 16
_PAIR_ELEMENTS = 1 << 24  # distances held at once by chamfer_matrix (64 MiB of float32)


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


def point_clouds(meshes: Any, n_points: int = CLOUD_POINTS, seed: Any = None) -> np.ndarray:
    """(N, n_points, 3) float64 points sampled on each mesh's surface (area-weighted): the clouds
    the generation metrics compare. ``meshes``: Trimeshes, ``(vertices, faces)`` pairs or paths;
    ValueError naming the first without a surface."""
    from fastsdf.geometry.mesh_io import load_mesh

    n_points = integer(n_points, "n_points", 1)
    rng = np.random.default_rng(seed)
    clouds = []
    for i, mesh in enumerate(meshes):
        if isinstance(mesh, (str, bytes)) or hasattr(mesh, "__fspath__"):
            mesh = load_mesh(mesh)
        vertices, faces = mesh_arrays(mesh, f"meshes[{i}]")
        clouds.append(sample_surface(vertices, faces, n_points, rng)[0])
    if not clouds:
        raise ValueError("meshes is empty")
    return np.stack(clouds)


def _clouds(shapes: Any, name: str, n_points: int, seed: Any) -> np.ndarray:
    """``shapes`` as clouds: an (N, n, 3) array as it is, else ``point_clouds`` of the meshes."""
    if isinstance(shapes, np.ndarray) and shapes.ndim == 3:
        if shapes.shape[0] == 0 or shapes.shape[1] == 0 or shapes.shape[2] != 3 or not np.isfinite(shapes).all():
            raise ValueError(f"{name} must be finite (N, n, 3) point clouds with N, n >= 1, got {shapes.shape}")
        return shapes.astype(np.float64, copy=False)
    return point_clouds(shapes, n_points, seed)


def chamfer_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """PointFlow's Chamfer distance between every cloud of ``a`` (N, n, 3) and of ``b`` (M, m, 3):
    (N, M), entry (i, j) = mean_p min_q |p - q|^2 + mean_q min_p |p - q|^2 over p in a[i], q in b[j]
    (float64).

    Each point's nearest point in the other cloud is found in float32 (by a matrix product, about
    10x faster than float64 distances) and the distance to it computed in float64, so an entry is
    exact unless two candidates are within float32's rounding of each other, and then off by at
    most about 1e-6 of the pair's squared extent (measured from the centre of ``a[i]``)."""
    import torch

    a, b = (np.asarray(x, np.float64) for x in (a, b))
    for name, x in (("a", a), ("b", b)):
        if x.ndim != 3 or x.shape[2] != 3 or 0 in x.shape[:2] or not np.isfinite(x).all():
            raise ValueError(f"{name} must be finite (N, n, 3) point clouds with N, n >= 1, got {x.shape}")
    # One buffer for all pairs (no page faults per pair), at least a row of products each way.
    buffer = torch.empty(max(min(_PAIR_ELEMENTS, a.shape[1] * b.shape[1]), a.shape[1], b.shape[1]))
    out = np.empty((len(a), len(b)))
    for i in range(len(a)):
        # Centred on a[i], so float32 keeps the digits that tell neighbours apart wherever the clouds lie.
        centre = a[i].mean(axis=0)
        p = a[i] - centre
        for j in range(len(b)):
            q = b[j] - centre
            to_q = q[_nearest(p, q, buffer)] - p
            to_p = p[_nearest(q, p, buffer)] - q
            out[i, j] = np.square(to_q).sum(1).mean() + np.square(to_p).sum(1).mean()
    return out


def _nearest(points: np.ndarray, cloud: np.ndarray, buffer: Any) -> np.ndarray:
    """The index in ``cloud`` (m, 3) of the nearest point of each of ``points`` (n, 3), in float32:
    the argmin over q of |q|^2 - 2 p.q (|p|^2 is the same along a row), one matrix product per block
    of rows written into ``buffer`` (a flat float32 tensor of at least m elements)."""
    import torch

    lifted_points = torch.from_numpy(np.hstack([points, np.ones((len(points), 1))]).astype(np.float32))
    lifted_cloud = torch.from_numpy(np.hstack([-2 * cloud, np.square(cloud).sum(1, keepdims=True)]).astype(np.float32))
    rows = len(buffer) // len(cloud)
    nearest = np.empty(len(points), np.int64)
    for start in range(0, len(points), rows):
        block = lifted_points[start:start + rows]
        products = buffer[:len(block) * len(cloud)].view(len(block), len(cloud))
        torch.mm(block, lifted_cloud.T, out=products)
        nearest[start:start + len(block)] = products.numpy().argmin(axis=1)
    return nearest


def generation_metrics(generated: Any, reference: Any, n_points: int = CLOUD_POINTS,
                       seed: Any = None) -> dict[str, float]:
    """MMD, COV and 1-NNA of a set of generated shapes against a reference set (PointFlow's
    definitions on PointFlow's Chamfer distance, see the module's docstring).

    Args:
        generated, reference: meshes (Trimeshes, ``(vertices, faces)`` pairs, paths), or point
            clouds already sampled, (N, n, 3) arrays. Both in the same frame: the distances are in
            its units squared.
        n_points: points sampled per mesh.

    Returns:
        ``{"mmd", "cov", "1-nna", "generated", "reference", "n_points"}``. Ties are exact: COV takes
        the first closest reference shape; 1-NNA counts a shape whose nearest neighbours in its own
        set and in the other set are equally far as half right. So two identical sets of distinct
        clouds give MMD 0 and COV 1, and 1-NNA 0 (each shape's nearest neighbour is its copy in
        the other set: 1-NNA below 0.5 flags a generator that copies), and two sets of copies of
        one cloud give 1-NNA 0.5. Meshes are sampled afresh each, so two copies of a mesh differ
        by their samples' noise.
    """
    rng = np.random.default_rng(seed)
    g = _clouds(generated, "generated", n_points, rng)
    r = _clouds(reference, "reference", n_points, rng)
    scores = generation_scores(chamfer_matrix(g, r), chamfer_matrix(g, g), chamfer_matrix(r, r))
    return {**scores, "generated": len(g), "reference": len(r), "n_points": g.shape[1]}


def generation_scores(generated_reference: np.ndarray, generated_generated: np.ndarray,
                      reference_reference: np.ndarray) -> dict[str, float]:
    """``generation_metrics``' MMD, COV and 1-NNA from the Chamfer matrices (``chamfer_matrix``)
    between the generated and the reference clouds (G, R), within the generated (G, G) and within
    the reference (R, R) clouds (their diagonals are ignored): for scoring several generated sets
    against one reference set, or one against several, without computing a matrix twice."""
    gr, gg, rr = (np.array(m, np.float64) for m in (generated_reference, generated_generated, reference_reference))
    if gr.ndim != 2 or 0 in gr.shape or gg.shape != (len(gr),) * 2 or rr.shape != (gr.shape[1],) * 2:
        raise ValueError(f"expected (G, R), (G, G) and (R, R) matrices, got {gr.shape}, {gg.shape} and {rr.shape}")
    if not all(np.isfinite(m).all() for m in (gr, gg, rr)):
        raise ValueError("the Chamfer matrices must be finite")
    np.fill_diagonal(gg, np.inf)
    np.fill_diagonal(rr, np.inf)
    # A shape is classified by its nearest neighbour among all others: right when that is in its own set.
    own = np.concatenate([gg.min(axis=1), rr.min(axis=1)])
    other = np.concatenate([gr.min(axis=1), gr.min(axis=0)])
    right = np.where(own < other, 1.0, np.where(own == other, 0.5, 0.0))
    return {"mmd": float(gr.min(axis=0).mean()), "cov": float(len(np.unique(gr.argmin(axis=1))) / gr.shape[1]),
            "1-nna": float(right.mean())}


def nearest_shapes(generated: Any, training: Any, n_points: int = CLOUD_POINTS,
                   seed: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """For each generated shape, the Chamfer distance (as ``chamfer_matrix``) to its nearest
    training shape and that shape's index: near-zero distances are copies of training shapes.
    Inputs as ``generation_metrics``'."""
    rng = np.random.default_rng(seed)
    d = chamfer_matrix(_clouds(generated, "generated", n_points, rng), _clouds(training, "training", n_points, rng))
    return d.min(axis=1), d.argmin(axis=1)
