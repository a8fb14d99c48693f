"""fastsdf.marching_cubes: against the NumPy reference twin, scikit-image and mesh invariants,
input kinds and errors, and (marked ``cuda``) the CUDA backend against the CPU one."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
import textwrap
import tracemalloc
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch

import fastsdf
import fastsdf._memory
from fastsdf import marching_cubes
from fastsdf.meshing.marching_cubes import CpuKernels, _above_bits
from fastsdf.meshing.marching_cubes_reference import marching_cubes_reference

from conftest import (
    assert_closed_oriented_manifold,
    assert_manifold_inside_grid,
    assert_mesh_arrays,
    assert_same_mesh,
    assert_same_point_sets,
    euler_characteristic,
    face_normals,
    gradient_flux,
    random_sphere,
    random_torus,
    random_volume,
    sample_sdf,
    signed_volume,
    smooth_random_volume,
    surface_area,
    to_numpy,
    trilinear,
)

ODD_SHAPES = [(2, 2, 2), (2, 3, 7), (7, 2, 3), (33, 33, 33)]


def check_against_reference(volume: Any, context: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
    """marching_cubes(volume) must be the reference mesh, vertex and triangle order included."""
    out = marching_cubes(volume, **kwargs)
    expected = marching_cubes_reference(to_numpy(volume), **kwargs)
    assert_mesh_arrays(*out, context=context, spacing=kwargs.get("spacing", (1.0, 1.0, 1.0)),
                       origin=kwargs.get("origin", (0.0, 0.0, 0.0)))
    assert_same_mesh(out, expected, context=context)
    return out


# --------------------------------------------------------------------------------------------
# Against the NumPy reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", ODD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_random_volume_matches_reference(shape: tuple[int, int, int], dtype: type, rng, seed) -> None:
    volume = random_volume(rng, shape, dtype)
    check_against_reference(volume, f"seed={seed} shape={shape} dtype={dtype.__name__}")


def test_smooth_128_matches_reference(rng, seed) -> None:
    # Random normal at 128^3 gives millions of triangles, too many for the reference: a smooth
    # random field keeps the surface moderate (~4e5 vertices) but still of random topology.
    volume = smooth_random_volume(rng, (128, 128, 128))
    verts, faces = check_against_reference(volume, f"seed={seed}")
    assert len(faces) > 10_000


def test_level_spacing_origin_match_reference(rng, seed) -> None:
    volume = random_volume(rng, (13, 9, 17), np.float64) * 10 + 3
    level = float(rng.uniform(-2, 8))
    spacing = tuple(rng.uniform(0.05, 4.0, 3))
    origin = tuple(rng.uniform(-100, 100, 3))
    check_against_reference(volume, f"seed={seed} level={level} spacing={spacing} origin={origin}",
                            level=level, spacing=spacing, origin=origin)


WORD_SHAPES = [(3, 4, 64), (2, 3, 65), (4, 2, 130), (3, 3, 191)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", WORD_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_rows_across_word_boundaries_match_reference(shape: tuple[int, int, int], dtype: type, rng, seed) -> None:
    # The CPU kernels hold a row of points as bits, 64 to a word: rows of one word, a word and a
    # point, and several words with a partial last one; contiguous, reversed and stepped rows.
    volume = random_volume(rng, shape, dtype)
    for name, view in {"plain": volume, "reversed": volume[::-1, :, ::-1], "stepped": volume[:, :, 1::2]}.items():
        check_against_reference(view, f"seed={seed} shape={shape} view={name}")


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("shape", WORD_SHAPES[1:], ids=lambda s: "x".join(map(str, s)))
def test_fill_with_and_without_the_count_bits(shape: tuple[int, int, int], masked: bool, rng, seed) -> None:
    # The fill pass reads the count pass's above-the-level bits, or compares the samples again where
    # memory is short for them: both must give the reference mesh, cube mask included.
    volume = random_volume(rng, shape)
    cube_mask = rng.random(tuple(n - 1 for n in shape)) > 0.3 if masked else None
    expected = marching_cubes_reference(volume, cube_mask=cube_mask)
    kernels = CpuKernels()
    counts = kernels.count(volume, 0.0, cube_mask)
    assert counts.above_bits is not None
    for bits in (counts.above_bits, None):
        got = kernels.fill(volume, 0.0, dataclasses.replace(counts, above_bits=bits), vertex_base=0,
                           layers=shape[0], index_offset=(0, 0, 0), origin=(0.0, 0.0, 0.0),
                           spacing=(1.0, 1.0, 1.0), cube_mask=cube_mask)
        assert_same_mesh(got, expected, context=f"seed={seed} masked={masked} bits={bits is not None}")


_PATHS_SCRIPT = textwrap.dedent("""
    import dataclasses, sys, numpy as np, fastsdf
    from fastsdf import _backend
    from fastsdf.meshing.marching_cubes import CpuKernels
    data = dict(np.load(sys.argv[1]))
    out = {"path": np.array(_backend.cpu().mc_cpu_path())}
    for name, volume in data.items():
        if name.startswith("volume"):
            out[name + "_verts"], out[name + "_faces"] = fastsdf.marching_cubes(volume)
            out[name + "_stepped_verts"], out[name + "_stepped_faces"] = fastsdf.marching_cubes(volume[:, ::-1, ::2])
    kernels, volume, mask = CpuKernels(), data["masked"], data["mask"]
    counts = kernels.count(volume, 0.0, mask)
    for name, bits in (("masked", counts.above_bits), ("masked_uncached", None)):
        out[name + "_verts"], out[name + "_faces"], out[name + "_normals"], out[name + "_values"] = kernels.fill(
            volume, 0.0, dataclasses.replace(counts, above_bits=bits), vertex_base=0, layers=volume.shape[0],
            index_offset=(0, 0, 0), origin=(0.0, 0.0, 0.0), spacing=(1.0, 1.0, 1.0), attributes=True,
            cube_mask=mask)
    np.savez(sys.argv[2], **out)
""")


def test_cpu_code_paths_match_reference(tmp_path: Path, rng, seed) -> None:
    # The CPU kernels run AVX2/POPCNT code where the CPU has it and SSE2/portable code otherwise
    # (or with FASTSDF_CPU_ISA=baseline; chosen once per process, hence the subprocesses): both must
    # give the reference mesh, across word boundaries, for contiguous and strided rows, and the
    # same attributes with a cube mask, with and without the count pass's above bits.
    volumes = {f"volume{n}": random_volume(rng, shape, dtype)
               for n, (shape, dtype) in enumerate([(s, np.float32) for s in WORD_SHAPES + [(9, 11, 67)]]
                                                  + [((3, 5, 131), np.float64), ((2, 2, 5), np.float64)])}
    volumes["volume_smooth"] = smooth_random_volume(rng, (12, 21, 200))
    masked = random_volume(rng, (6, 7, 129))
    mask = rng.random((5, 6, 128)) > 0.3
    np.savez(tmp_path / "in.npz", masked=masked, mask=mask, **volumes)
    results = {}
    for flag in ("default", "baseline"):
        env = {k: v for k, v in os.environ.items() if k != "FASTSDF_CPU_ISA"}
        if flag == "baseline":
            env["FASTSDF_CPU_ISA"] = "baseline"
        out = tmp_path / f"{flag}.npz"
        run = subprocess.run([sys.executable, "-c", _PATHS_SCRIPT, str(tmp_path / "in.npz"), str(out)],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        results[flag] = dict(np.load(out))
    assert str(results["baseline"]["path"]) == "baseline"
    expected = {name + suffix: marching_cubes_reference(view) for name, volume in volumes.items()
                for suffix, view in (("", volume), ("_stepped", volume[:, ::-1, ::2]))}
    expected["masked"] = expected["masked_uncached"] = marching_cubes_reference(masked, cube_mask=mask)
    for got in results.values():
        for name, mesh in expected.items():
            assert_same_mesh((got[name + "_verts"], got[name + "_faces"]), mesh,
                             context=f"seed={seed} path={got['path']} {name}")
    for name in ("masked", "masked_uncached"):
        for key in ("verts", "normals", "values"):
            np.testing.assert_array_equal(results["default"][f"{name}_{key}"], results["baseline"]["masked_" + key],
                                          err_msg=f"seed={seed} {name}_{key}")


def test_count_bits_skipped_when_memory_is_short(monkeypatch) -> None:
    monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: 1000)
    assert _above_bits((40, 40, 40)) is None
    monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: 1 << 30)
    assert _above_bits((40, 40, 40)).dtype == np.uint64


VIEWS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "transposed": lambda v: v.transpose(2, 0, 1),
    "swapaxes": lambda v: v.swapaxes(0, 1),
    "stepped": lambda v: v[::2, 1::3, ::2],
    "reversed_x": lambda v: v[::-1],
    "reversed_all": lambda v: v[::-1, ::-1, ::-1],
    "reversed_stepped_transposed": lambda v: v[::-2, 3:, ::-3].transpose(1, 2, 0),
    "fortran": lambda v: np.asfortranarray(v),
    "broadcast": lambda v: np.broadcast_to(v[:, :, :1], v.shape),  # stride 0 along axis 2
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("view", VIEWS, ids=str)
def test_non_contiguous_views_match_reference(view: str, dtype: type, rng, seed) -> None:
    base = random_volume(rng, (21, 17, 19), dtype)
    volume = VIEWS[view](base)
    # The contiguous copy must give the same mesh as the view: strides are the kernels' business.
    out = check_against_reference(volume, f"seed={seed} view={view}")
    assert_same_mesh(out, marching_cubes(np.ascontiguousarray(volume)), context=f"seed={seed} view={view}")


def test_float32_level_comparison_is_exact(rng, seed) -> None:
    # The level is a double; float32 samples must be compared with it exactly as doubles, which the
    # kernels do by rounding the level to a float32 threshold. Levels equal to a sample, one double
    # ulp above or below it, and between two float32 values all have to agree with the reference.
    volume = random_volume(rng, (6, 7, 8), np.float32)
    sample = float(volume.flat[rng.integers(volume.size)])
    next_f32 = float(np.nextafter(np.float32(sample), np.float32(np.inf)))
    for level in (sample, np.nextafter(sample, -np.inf), np.nextafter(sample, np.inf),
                  (sample + next_f32) / 2):
        check_against_reference(volume, f"seed={seed} level={level!r}", level=float(level))


def test_samples_equal_to_level_count_as_below() -> None:
    # One sample above 0 at the centre, all the others exactly at the level (0): only the six
    # edges to the centre are crossed, at t = 0, so the mesh is the octahedron through the six
    # neighbours, enclosing the above region (normals inwards: negative volume).
    volume = np.zeros((3, 3, 3), np.float32)
    volume[1, 1, 1] = 1.0
    verts, faces = check_against_reference(volume, "octahedron")
    expected = {(0, 1, 1), (2, 1, 1), (1, 0, 1), (1, 2, 1), (1, 1, 0), (1, 1, 2)}
    assert {tuple(int(c) for c in v) for v in verts} == expected
    assert np.array_equal(verts, np.round(verts))
    assert len(faces) == 8
    assert_closed_oriented_manifold(verts, faces)
    assert signed_volume(verts, faces) == pytest.approx(-4.0 / 3.0)


def test_vertex_positions_and_orientation_by_hand() -> None:
    # Corner 0 above (3), the seven others below (-1): the three edges from corner 0 are crossed
    # at t = 0.75, one triangle, normal towards corner 0. Vertices of one point come in axis order.
    volume = np.full((2, 2, 2), -1.0, np.float32)
    volume[0, 0, 0] = 3.0
    spacing, origin = (2.0, 3.0, 0.5), (10.0, -5.0, 1.0)
    verts, faces = check_against_reference(volume, "corner 0", spacing=spacing, origin=origin)
    expected = np.array([[11.5, -5.0, 1.0], [10.0, -2.75, 1.0], [10.0, -5.0, 1.375]], np.float32)
    np.testing.assert_allclose(verts, expected, rtol=0, atol=1e-6)
    assert faces.shape == (1, 3)
    normal = face_normals(verts, faces)[0]
    assert normal @ (np.array(origin) - verts.mean(axis=0)) > 0, "normal must point towards the above corner"


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_plane_normals_point_to_increasing_values(axis: int, rng, seed) -> None:
    # A ramp along `axis`: the surface is a plane, every normal points up the ramp, whatever the
    # (anisotropic) spacing.
    shape = (5, 6, 7)
    ramp = np.arange(shape[axis], dtype=np.float64).reshape([-1 if a == axis else 1 for a in range(3)])
    volume = np.broadcast_to(ramp, shape) - rng.uniform(0.1, 0.9) - 1
    spacing = tuple(rng.uniform(0.2, 3.0, 3))
    verts, faces = check_against_reference(volume, f"seed={seed} axis={axis}", spacing=spacing)
    normals = face_normals(verts, faces)
    assert (normals[:, axis] > 0).all(), f"seed={seed}"
    others = [a for a in range(3) if a != axis]
    np.testing.assert_allclose(normals[:, others], 0, atol=1e-9)


@pytest.mark.parametrize("shape", [(9, 10, 11), (33, 33, 33)], ids=lambda s: "x".join(map(str, s)))
def test_vertices_lie_on_crossed_edges(shape: tuple[int, int, int], rng, seed) -> None:
    # Independent of the reference: each vertex is on a grid edge (two integer coordinates) where
    # the linear interpolation of the samples is the level, or is the centre vertex of a tunnel
    # cube, strictly inside it and used only by that cube's fan; each triangle is inside a cube.
    volume = random_volume(rng, shape, np.float64)
    level = float(rng.uniform(-0.5, 0.5))
    verts, faces = marching_cubes(volume, level=level)
    v = verts.astype(np.float64)
    on_edge = (np.abs(v - np.round(v)) < 1e-5).sum(axis=1) >= 2
    np.testing.assert_allclose(trilinear(volume, v[on_edge]), level, atol=1e-5, err_msg=f"seed={seed}")
    centres = np.flatnonzero(~on_edge)
    assert len(centres) <= 0.05 * len(verts), f"seed={seed}: too many centre vertices"
    for c in centres:
        fan = faces[(faces == c).any(axis=1)]
        assert len(fan) >= 3, f"seed={seed}: a centre vertex must be fanned around"
        cell = np.floor(v[c])
        assert (v[fan] >= cell - 1e-6).all() and (v[fan] <= cell + 1 + 1e-6).all(), f"seed={seed}"
    extent = v[faces].max(axis=1) - v[faces].min(axis=1)
    assert (extent <= 1 + 1e-6).all(), f"seed={seed}: a triangle spans more than one cube"


@pytest.mark.parametrize("kind", ["normal_17x19x23", "smooth_64"])
def test_random_surface_is_manifold_inside_grid(kind: str, rng, seed) -> None:
    # Open surfaces too: inside the grid every edge joins exactly two consistently oriented
    # triangles; only edges on the grid's faces border one.
    volume = (random_volume(rng, (17, 19, 23)) if kind.startswith("normal")
              else smooth_random_volume(rng, (64, 64, 64)))
    verts, faces = marching_cubes(volume)
    assert_manifold_inside_grid(verts, faces, volume.shape, f"seed={seed} {kind}")


# --------------------------------------------------------------------------------------------
# All 256 cube configurations
# --------------------------------------------------------------------------------------------

# Corner c of a cube sits at offset (c & 1, c >> 1 & 1, c >> 2 & 1).
CORNER_OFFSETS = [(c & 1, (c >> 1) & 1, (c >> 2) & 1) for c in range(8)]


def cube_draws(config: int, rng: np.random.Generator, level: float) -> list[np.ndarray]:
    """2x2x2 volumes with corner c above the level iff bit c of ``config`` is set.

    Random magnitudes, plus one draw where above values dominate and one where below values
    dominate: the asymptotic decider then joins, resp. separates, the above corners of every
    ambiguous face, so both decisions are exercised whatever the random draws do.
    """
    draws = []
    for kind in ("random",) * 6 + ("above_dominant", "below_dominant"):
        above_mag = {"random": (0.01, 2.0), "above_dominant": (2.0, 3.0), "below_dominant": (0.05, 0.2)}[kind]
        below_mag = {"random": (0.01, 2.0), "above_dominant": (0.05, 0.2), "below_dominant": (2.0, 3.0)}[kind]
        volume = np.empty((2, 2, 2))
        for c, offset in enumerate(CORNER_OFFSETS):
            if (config >> c) & 1:
                volume[offset] = level + rng.uniform(*above_mag)
            else:
                volume[offset] = level - rng.uniform(*below_mag)
        draws.append(volume)
    return draws


@pytest.mark.parametrize("config", range(256), ids=lambda c: f"cube{c:03d}")
def test_cube_configuration_matches_reference(config: int, rng, seed) -> None:
    level = float(rng.uniform(-1, 1))
    for i, volume in enumerate(cube_draws(config, rng, level)):
        above = sum(1 << c for c, o in enumerate(CORNER_OFFSETS) if volume[o] > level)
        assert above == config  # the test's own corner numbering
        for dtype in (np.float64, np.float32):
            check_against_reference(volume.astype(dtype), f"seed={seed} config={config} draw={i} {dtype.__name__}",
                                    level=level)


@pytest.mark.parametrize("config", range(256), ids=lambda c: f"cube{c:03d}")
def test_cube_configuration_padded_is_closed(config: int, rng, seed) -> None:
    # Embedded in a 4x4x4 volume of values below the level, the above corners are enclosed: the
    # mesh must be closed, consistently oriented and facing into the above region (negative
    # signed volume), for both decisions of every ambiguous face.
    for i, cube in enumerate(cube_draws(config, rng, 0.0)):
        volume = -rng.uniform(0.1, 2.0, (4, 4, 4))
        volume[1:3, 1:3, 1:3] = cube
        context = f"seed={seed} config={config} draw={i}"
        verts, faces = check_against_reference(volume, context)
        if config == 0:
            assert verts.shape == (0, 3) and faces.shape == (0, 3), context
            continue
        assert_closed_oriented_manifold(verts, faces, context)
        assert signed_volume(verts, faces) < 0, f"normals do not face the above region; {context}"


def test_connected_ambiguous_face_gives_manifold_mesh() -> None:
    # The smallest case of the check above, without randomness: two above samples diagonal on the
    # face z = 1 shared by two cubes, whose decider joins them (2 * 2 > 0.1 * 0.1). Each cube's
    # loop then has four vertices on that face, and the surface must still be a closed manifold.
    volume = np.full((4, 4, 3), -1.0)
    volume[2, 1, 1] = volume[1, 2, 1] = 2.0
    volume[1, 1, 1] = volume[2, 2, 1] = -0.1
    verts, faces = check_against_reference(volume, "two diagonal samples joined through a face")
    assert_closed_oriented_manifold(verts, faces, "two diagonal samples joined through a face")
    assert euler_characteristic(verts, faces) == 2
    assert signed_volume(verts, faces) < 0


# --------------------------------------------------------------------------------------------
# Invariants on closed shapes
# --------------------------------------------------------------------------------------------


def closed_mesh_of(sdf: Any, shape: tuple[int, int, int], euler: int, context: str):
    """Meshes ``sdf`` sampled on ``shape``, checked against the reference, closed, consistently
    oriented and of the given Euler characteristic; returns (verts, faces, spacing)."""
    volume, spacing, origin = sample_sdf(sdf, shape)
    verts, faces = check_against_reference(volume, context, spacing=spacing, origin=origin)
    assert_closed_oriented_manifold(verts, faces, context)
    assert euler_characteristic(verts, faces) == euler, context
    return verts, faces, spacing


@pytest.mark.parametrize("shape", [(48, 48, 48), (37, 41, 45)], ids=lambda s: "x".join(map(str, s)))
def test_sphere_mesh_is_closed_sphere(shape: tuple[int, int, int], rng, seed) -> None:
    sphere = random_sphere(rng)
    context = f"seed={seed} {sphere}"
    verts, faces, spacing = closed_mesh_of(sphere, shape, 2, context)
    volume_enclosed = signed_volume(verts, faces)
    assert volume_enclosed == pytest.approx(4 / 3 * math.pi * sphere.radius ** 3, rel=0.015), context
    assert surface_area(verts, faces) == pytest.approx(4 * math.pi * sphere.radius ** 2, rel=0.015), context
    # Outward, triangle by triangle, not only in total. A grid sample that falls on the surface
    # (to float32) makes the edge vertices around it coincide: those zero-area triangles, which
    # scikit-image keeps too, have no normal and are left out, and must stay rare.
    corners = verts[faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]), axis=1)
    proper = area > 1e-9 * np.median(area)
    assert proper.mean() > 0.99, context
    outward = np.einsum("ij,ij->i", face_normals(verts, faces)[proper],
                        verts[faces[proper]].mean(axis=1) - np.array(sphere.center))
    assert (outward > 0).all(), f"{(outward <= 0).sum()} inward triangles; {context}"
    # Every vertex on the sphere, to within the linear interpolation error of the grid.
    radii = np.linalg.norm(verts - np.array(sphere.center, np.float32), axis=1)
    np.testing.assert_allclose(radii, sphere.radius, atol=0.25 * max(spacing), err_msg=context)


@pytest.mark.parametrize("shape", [(48, 48, 48), (37, 41, 45)], ids=lambda s: "x".join(map(str, s)))
def test_torus_mesh_has_genus_one(shape: tuple[int, int, int], rng, seed) -> None:
    torus = random_torus(rng)
    context = f"seed={seed} {torus}"
    verts, faces, _ = closed_mesh_of(torus, shape, 0, context)
    expected = 2 * math.pi ** 2 * torus.major * torus.minor ** 2
    assert signed_volume(verts, faces) == pytest.approx(expected, rel=0.03), context


def test_two_spheres_give_two_components(rng, seed) -> None:
    shape = fastsdf.Sphere(0.3, (-0.45, 0, 0)) | fastsdf.Sphere(0.3, (0.45, 0.05, 0))
    volume, spacing, origin = sample_sdf(shape, (40, 30, 31))
    verts, faces = check_against_reference(volume, f"seed={seed}", spacing=spacing, origin=origin)
    assert_closed_oriented_manifold(verts, faces)
    assert euler_characteristic(verts, faces) == 4  # two spheres
    assert signed_volume(verts, faces) > 0


# --------------------------------------------------------------------------------------------
# Agreement with scikit-image
# --------------------------------------------------------------------------------------------


def skimage_marching_cubes(volume: np.ndarray, spacing: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    measure = pytest.importorskip("skimage.measure")
    verts, faces, _, _ = measure.marching_cubes(volume, 0.0, spacing=spacing, method="lewiner")
    return verts, faces.astype(np.int64)


def edge_vertices(verts: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Both fastsdf and Lewiner add vertices inside some ambiguous cubes (at different places);
    those on grid edges have two (or three) integer index coordinates, exactly: the test spacings
    make i * spacing / spacing exact in float32. (A tolerance let a centre vertex in a cube face,
    one coordinate exactly integer, pass for an edge vertex when another came within it.)"""
    index = verts / np.asarray(spacing, np.float32)
    on_integer = index == np.round(index)
    return verts[on_integer.sum(axis=1) >= 2]


SPACINGS = [(1.0, 1.0, 1.0), (0.5, 1.25, 2.0)]


@pytest.mark.parametrize("spacing", SPACINGS, ids=["unit", "anisotropic"])
@pytest.mark.parametrize("shape_name", ["sphere", "torus", "smooth_random"])
def test_agrees_with_skimage(shape_name: str, spacing: tuple[float, ...], rng, seed) -> None:
    grid = (40, 44, 48)
    if shape_name == "smooth_random":
        volume = smooth_random_volume(rng, grid)
    else:
        sdf = random_sphere(rng) if shape_name == "sphere" else random_torus(rng)
        volume, _, _ = sample_sdf(sdf, grid)
    context = f"seed={seed} {shape_name} spacing={spacing}"
    verts, faces = marching_cubes(volume, spacing=spacing)
    sk_verts, sk_faces = skimage_marching_cubes(volume, spacing)

    assert_same_point_sets(edge_vertices(verts, spacing), edge_vertices(sk_verts, spacing),
                           atol=1e-5 * max(1.0, float(np.abs(verts).max())), context=context)
    assert surface_area(verts, faces) == pytest.approx(surface_area(sk_verts, sk_faces), rel=0.01), context
    # Same orientation: normals point up the gradient in both.
    flux, sk_flux = gradient_flux(volume, verts, faces, spacing), gradient_flux(volume, sk_verts, sk_faces, spacing)
    assert flux > 0 and sk_flux > 0, context
    assert flux == pytest.approx(sk_flux, rel=0.01), context
    if shape_name != "smooth_random":  # closed: the signed volume is meaningful
        vol, sk_vol = signed_volume(verts, faces), signed_volume(sk_verts, sk_faces)
        assert np.sign(vol) == np.sign(sk_vol) == 1, context
        assert vol == pytest.approx(sk_vol, rel=0.01), context


# --------------------------------------------------------------------------------------------
# Input kinds and dtypes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_torch_cpu_tensor_gives_tensors(dtype: torch.dtype, rng, seed) -> None:
    volume = random_volume(rng, (11, 12, 13), np.float64)
    tensor = torch.from_numpy(volume).to(dtype)
    verts, faces = marching_cubes(tensor, level=0.1, spacing=(1, 2, 3), origin=(4, 5, 6))
    assert isinstance(verts, torch.Tensor) and isinstance(faces, torch.Tensor)
    assert verts.dtype == torch.float32 and faces.dtype == torch.int64
    assert verts.device.type == "cpu" and faces.device.type == "cpu"
    expected = marching_cubes(tensor.numpy(), level=0.1, spacing=(1, 2, 3), origin=(4, 5, 6))
    assert isinstance(expected[0], np.ndarray)
    assert_same_mesh((verts, faces), expected, context=f"seed={seed}")


def test_tensor_requiring_grad_is_accepted(rng, seed) -> None:
    tensor = torch.from_numpy(random_volume(rng, (8, 9, 10))).requires_grad_()
    verts, faces = marching_cubes(tensor)
    assert_same_mesh((verts, faces), marching_cubes(tensor.detach().numpy()), context=f"seed={seed}")
    parameter = torch.nn.Parameter(torch.from_numpy(random_volume(rng, (5, 6, 7))))
    assert_same_mesh(marching_cubes(parameter), marching_cubes(parameter.detach().numpy()), context=f"seed={seed}")


TORCH_VIEWS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "permuted": lambda t: t.permute(2, 0, 1),
    "stepped": lambda t: t[::2, 1::3, ::2],
    "narrowed_transposed": lambda t: t[3:, :-2, 1:].transpose(0, 2),
    "expanded": lambda t: t[:, :, :1].expand(-1, -1, 9),  # stride 0
}


@pytest.mark.parametrize("view", TORCH_VIEWS, ids=str)
def test_torch_non_contiguous_views(view: str, rng, seed) -> None:
    tensor = TORCH_VIEWS[view](torch.from_numpy(random_volume(rng, (20, 18, 16))))
    out = marching_cubes(tensor)
    assert isinstance(out[0], torch.Tensor)
    check_against_reference(tensor.contiguous().numpy(), f"seed={seed} view={view}")
    assert_same_mesh(out, marching_cubes(tensor.contiguous()), context=f"seed={seed} view={view}")


@pytest.mark.parametrize("dtype", ["float16", "bool", "uint8", "int8", "int16", "uint16"])
def test_small_numpy_dtypes_widen_to_float32(dtype: str, rng, seed) -> None:
    if dtype == "bool":
        volume, level = rng.random((7, 8, 9)) > 0.5, 0.5
    elif dtype == "float16":
        volume, level = rng.standard_normal((7, 8, 9)).astype(np.float16), 0.0
    else:
        info = np.iinfo(dtype)
        volume = rng.integers(info.min, info.max, (7, 8, 9), endpoint=True).astype(dtype)
        level = float(info.min) + (float(info.max) - float(info.min)) * 0.5 + 0.25
    out = marching_cubes(volume, level=level)
    assert isinstance(out[0], np.ndarray)
    assert_mesh_arrays(*out)
    assert len(out[1]) > 0
    assert_same_mesh(out, marching_cubes(volume.astype(np.float32), level=level), context=f"seed={seed} {dtype}")


def small_dtype_tensor(rng: np.random.Generator, dtype: str, shape: tuple[int, ...] = (7, 8, 9),
                       ) -> tuple[torch.Tensor, float]:
    """A tensor of ``dtype`` with values over its range (or normal floats) and a level that cuts it."""
    if dtype == "bool":
        return torch.from_numpy(rng.random(shape) > 0.5), 0.5
    torch_dtype = getattr(torch, dtype)
    if torch_dtype.is_floating_point:
        return torch.from_numpy(rng.standard_normal(shape)).to(torch_dtype), 0.25
    info = torch.iinfo(torch_dtype)
    values = rng.integers(max(info.min, -1000), min(info.max, 1000), shape, endpoint=True)
    return torch.from_numpy(values).to(torch_dtype), float(values.mean()) + 0.25


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "bool", "uint8", "int8", "int16"])
def test_small_torch_dtypes_widen_to_float32(dtype: str, rng, seed) -> None:
    tensor, level = small_dtype_tensor(rng, dtype)
    out = marching_cubes(tensor, level=level)
    assert isinstance(out[0], torch.Tensor)
    assert len(out[1]) > 0
    assert_same_mesh(out, marching_cubes(tensor.to(torch.float32).numpy(), level=level),
                     context=f"seed={seed} {dtype}")


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", ["int32", "int64", "uint32"])
def test_wide_integers_use_float64(dtype: str, kind: str, rng, seed) -> None:
    # Values 2^30 + {0, 1} (and 2^40 + {0, 1} for 64-bit) are one float32 apart only as doubles:
    # in float32 they collapse to one value and the mesh would vanish.
    big = 2 ** 40 if dtype == "int64" else 2 ** 30
    volume = (big + rng.integers(0, 2, (6, 7, 8))).astype(dtype)
    level = big + 0.5
    arg = torch.from_numpy(volume) if kind == "torch" else volume
    out = marching_cubes(arg, level=level)
    expected = marching_cubes_reference(volume.astype(np.float64), level=level)
    assert len(expected[1]) > 0
    assert_same_mesh(out, expected, context=f"seed={seed} {dtype}")
    # Every crossing is halfway between two samples.
    frac = np.abs(to_numpy(out[0]) - np.floor(to_numpy(out[0])))
    assert np.all(np.isclose(frac, 0) | np.isclose(frac, 0.5)), f"seed={seed}"


@pytest.mark.parametrize("volume", [
    np.zeros((3, 3, 3), np.complex64),
    np.zeros((3, 3, 3), np.complex128),
    torch.zeros((3, 3, 3), dtype=torch.complex64),
    np.full((3, 3, 3), "a"),
    np.zeros((3, 3, 3), object),
], ids=["complex64", "complex128", "torch_complex64", "str", "object"])
def test_non_real_volumes_raise_type_error(volume: Any) -> None:
    with pytest.raises(TypeError):
        marching_cubes(volume)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("shape", [(4, 4), (2, 2, 2, 2), (8,), (), (1, 5, 5), (5, 1, 5), (5, 5, 1), (0, 4, 4)],
                         ids=str)
def test_bad_shapes_raise_value_error(shape: tuple[int, ...], kind: str) -> None:
    volume = np.zeros(shape, np.float32)
    with pytest.raises(ValueError):
        marching_cubes(torch.from_numpy(volume) if kind == "torch" else volume)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_non_finite_values_raise(dtype: type, bad: float, kind: str, rng, seed) -> None:
    shape = (6, 7, 8)
    # The first and last samples are checked like any other.
    for index in [(0, 0, 0), (5, 6, 7), tuple(int(rng.integers(n)) for n in shape)]:
        volume = random_volume(rng, shape, dtype)
        volume[index] = bad
        arg = torch.from_numpy(volume) if kind == "torch" else volume
        with pytest.raises(ValueError, match="NaN") as info:
            marching_cubes(arg)
        assert str(index) in str(info.value), f"seed={seed}: {info.value} does not name {index}"


def test_non_finite_outside_a_view_is_ignored(rng, seed) -> None:
    base = random_volume(rng, (8, 8, 8))
    base[:, :, -1] = np.nan
    base[::2] = np.inf  # skipped by the step below
    view = base[1::2, :, :-1]
    check_against_reference(view, f"seed={seed}")
    with pytest.raises(ValueError, match=r"NaN.*\(0, 0, 7\)"):
        marching_cubes(base[1::2])


@pytest.mark.parametrize("level", [np.nan, np.inf, -np.inf, np.float32("nan")], ids=str)
def test_non_finite_level_raises(level: float) -> None:
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((3, 3, 3), np.float32), level=level)


@pytest.mark.parametrize("spacing", [(0, 1, 1), (1, -1, 1), (1, 1, -0.5), (1, 1, np.nan), (1, np.inf, 1),
                                     (1, 1), (1, 1, 1, 1)], ids=str)
def test_bad_spacing_raises(spacing: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((3, 3, 3), np.float32), spacing=spacing)


@pytest.mark.parametrize("origin", [(np.nan, 0, 0), (0, 0, np.inf), (0, 0)], ids=str)
def test_bad_origin_raises(origin: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        marching_cubes(np.zeros((3, 3, 3), np.float32), origin=origin)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
@pytest.mark.parametrize("case", ["level_above", "level_below", "level_at_max", "constant", "constant_at_level",
                                  "huge_level", "huge_negative_level"])
def test_empty_meshes(case: str, kind: str, rng, seed) -> None:
    volume = random_volume(rng, (5, 6, 7), np.float32)
    level = {"level_above": float(volume.max()) + 0.5, "level_below": float(volume.min()) - 0.5,
             # samples equal to the level count as below, so a level at the maximum crosses nothing
             "level_at_max": float(volume.max()),
             "huge_level": 1e300, "huge_negative_level": -1e300}.get(case, 0.0)
    if case.startswith("constant"):
        volume[...] = 0.0 if case == "constant_at_level" else 1.5
    arg = torch.from_numpy(volume) if kind == "torch" else volume
    verts, faces = marching_cubes(arg, level=level)
    assert type(verts) is type(arg) and type(faces) is type(arg)
    assert tuple(verts.shape) == (0, 3) and tuple(faces.shape) == (0, 3), f"seed={seed} {case}"
    assert_mesh_arrays(verts, faces)


@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_output_too_large_raises_memory_error_before_allocating(kind: str, monkeypatch, rng, seed) -> None:
    volume = random_volume(rng, (96, 96, 96))  # ~1.3e6 vertices, ~2.6e6 triangles: ~80 MB of output
    arg = torch.from_numpy(volume) if kind == "torch" else volume
    # Enough for the kernels' working memory (checked first), not for the output.
    working = int(fastsdf._backend.cpu().mc_scratch_bytes(volume.shape)) + 96 * len(volume)
    monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: working + 1000)
    tracemalloc.start()
    try:
        with pytest.raises(MemoryError, match="marching cubes output"):
            marching_cubes(arg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # NumPy reports its buffers to tracemalloc: nothing close to the output size was allocated.
    assert peak < 4 << 20, f"peak {peak} bytes traced before the MemoryError"
    monkeypatch.undo()
    assert len(marching_cubes(volume[:20, :20, :20])[1]) > 0  # and works again with enough memory


@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f4", "<f8"])
def test_byte_order_and_unaligned_arrays(dtype: str, rng, seed) -> None:
    native = random_volume(rng, (9, 10, 11), np.float64)
    expected = marching_cubes_reference(native.astype(dtype).astype(np.float64))
    swapped = native.astype(dtype)
    assert_same_mesh(marching_cubes(swapped), expected, context=f"seed={seed} {dtype}")
    # Unaligned: the same bytes one byte into a buffer.
    itemsize = np.dtype(dtype).itemsize
    raw = bytearray(swapped.nbytes + 1)
    unaligned = np.frombuffer(raw, dtype=dtype, count=swapped.size, offset=1).reshape(swapped.shape)
    unaligned[...] = swapped
    assert not unaligned.flags.aligned and itemsize > 1
    assert_same_mesh(marching_cubes(unaligned), expected, context=f"seed={seed} unaligned {dtype}")
    # And an unaligned, byte-swapped, strided view.
    assert_same_mesh(marching_cubes(unaligned[::-1, ::2]),
                     marching_cubes_reference(native.astype(dtype)[::-1, ::2].astype(np.float64)),
                     context=f"seed={seed} unaligned view {dtype}")


@pytest.mark.parametrize("offset", [1, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_arrays_at_odd_byte_offsets(dtype: type, offset: int, rng, seed) -> None:
    # C-contiguous, native byte order, but misaligned: np.ascontiguousarray hands such an array
    # back as it is, and the kernels' typed loads from it would be undefined behaviour.
    volume = random_volume(rng, (9, 10, 11), dtype)
    buffer = np.zeros(volume.nbytes + offset, np.uint8)
    unaligned = buffer[offset:].view(dtype).reshape(volume.shape)
    unaligned[...] = volume
    assert not unaligned.flags.aligned and unaligned.flags.c_contiguous and unaligned.dtype.isnative
    expected = marching_cubes_reference(volume)
    assert_same_mesh(marching_cubes(unaligned), expected, context=f"seed={seed}")
    assert_same_mesh(marching_cubes(torch.from_numpy(unaligned)), expected, context=f"seed={seed} torch")
    # The kernels refuse one rather than read it.
    with pytest.raises(ValueError, match="aligned"):
        fastsdf._backend.cpu().mc_count(unaligned, 0.0)


_BROADCAST_SCRIPT = textwrap.dedent("""
    import os, resource, sys, time
    # A safety net: if the checks failed, the allocations would fail here instead of swapping the
    # machine into the OOM killer. AddressSanitizer (make sanitize) reserves terabytes of address
    # space for its shadow memory, so there its own allocation limit (set by the test) serves instead.
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        resource.setrlimit(resource.RLIMIT_AS, (8 << 30, 8 << 30))
    import numpy as np, torch, fastsdf, fastsdf.measure
    huge = (2, 100_000, 100_000)
    cases = {
        "float32": lambda: fastsdf.marching_cubes(np.broadcast_to(np.float32(0), huge)),
        "float64_layers": lambda: fastsdf.marching_cubes(np.broadcast_to(np.float64(1), (10**9, 2, 2))),
        "bool": lambda: fastsdf.marching_cubes(np.broadcast_to(np.bool_(True), huge), 0.5),
        "big_endian": lambda: fastsdf.marching_cubes(np.broadcast_to(np.array(0, ">f4"), huge)),
        "torch_expand": lambda: fastsdf.marching_cubes(torch.zeros(1, 1, 1).expand(*huge)),
        "torch_int16": lambda: fastsdf.marching_cubes(torch.zeros(1, 1, 1, dtype=torch.int16).expand(*huge)),
        "measure": lambda: fastsdf.measure.marching_cubes(
            np.broadcast_to(np.arange(2, dtype=np.float32)[:, None, None], huge), 0.5),
    }
    for name, case in cases.items():
        start = time.perf_counter()
        try:
            case()
            print(name, "returned")
        except MemoryError as error:
            print(name, "MemoryError" if "needs" in str(error) else f"unchecked: {error}")
        sys.stdout.flush()
""")


def test_broadcast_volumes_too_large_raise_memory_error() -> None:
    # Zero strides make a volume of 2e10 samples out of one: every copy, per-thread scratch layer
    # and per-layer array that scales with it must be refused before it is made.
    asan_options = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "max_allocation_size_mb=8192"]))
    result = subprocess.run([sys.executable, "-c", _BROADCAST_SCRIPT], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "ASAN_OPTIONS": asan_options})
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(lines) == 7 and all(line.endswith(" MemoryError") for line in lines), result.stdout


_THREADS_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, fastsdf
    volume = np.load(sys.argv[1])
    verts, faces = fastsdf.marching_cubes(volume)
    np.savez(sys.argv[2], verts=verts, faces=faces)
""")


def test_result_independent_of_thread_count(tmp_path: Path, rng, seed) -> None:
    # The CPU kernels split point layers between OpenMP threads; more threads than layers and
    # uneven splits must not change the mesh. OMP_NUM_THREADS only applies to a fresh process.
    volume = random_volume(rng, (7, 23, 29))
    np.save(tmp_path / "volume.npy", volume)
    expected = marching_cubes_reference(volume)
    for threads in (1, 3, 8):
        out = tmp_path / f"out{threads}.npz"
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", _THREADS_SCRIPT, str(tmp_path / "volume.npy"), str(out)],
                       check=True, env=env, timeout=120)
        with np.load(out) as result:
            assert_same_mesh((result["verts"], result["faces"]), expected,
                             context=f"seed={seed} OMP_NUM_THREADS={threads}")


# --------------------------------------------------------------------------------------------
# CUDA against CPU
# --------------------------------------------------------------------------------------------


def check_cuda_against_cpu(volume: torch.Tensor, context: str, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Runs ``volume`` (a CUDA tensor) on the GPU and its CPU copy on the CPU: same mesh, same order."""
    verts, faces = marching_cubes(volume, **kwargs)
    assert verts.is_cuda and faces.is_cuda, context
    assert verts.dtype == torch.float32 and faces.dtype == torch.int64, context
    expected = marching_cubes(volume.cpu(), **kwargs)
    assert_same_mesh((verts, faces), expected, context=context, rel=1e-5)
    return verts, faces


@pytest.mark.cuda
class TestCuda:
    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
    @pytest.mark.parametrize("shape", [(2, 2, 2), (2, 3, 7), (7, 2, 3), (33, 33, 33), (300, 17, 513)],
                             ids=lambda s: "x".join(map(str, s)))
    def test_random_volume(self, shape: tuple[int, int, int], dtype: torch.dtype, rng, seed) -> None:
        # 513 points along axis 2 cross two boundaries of the kernels' 256-point segments.
        volume = torch.from_numpy(random_volume(rng, shape, np.float64)).to(dtype).cuda()
        check_cuda_against_cpu(volume, f"seed={seed} shape={shape}")

    def test_level_spacing_origin_and_reference(self, rng, seed) -> None:
        volume = random_volume(rng, (19, 20, 21), np.float64)
        kwargs = dict(level=0.3, spacing=(0.5, 2.0, 1.5), origin=(-3.0, 4.0, 5.0))
        verts, faces = check_cuda_against_cpu(torch.from_numpy(volume).cuda(), f"seed={seed}", **kwargs)
        assert_same_mesh((verts, faces), marching_cubes_reference(volume, **kwargs), context=f"seed={seed}", rel=1e-5)

    @pytest.mark.parametrize("view", TORCH_VIEWS, ids=str)
    def test_non_contiguous(self, view: str, rng, seed) -> None:
        tensor = TORCH_VIEWS[view](torch.from_numpy(random_volume(rng, (40, 37, 300))).cuda())
        check_cuda_against_cpu(tensor, f"seed={seed} view={view}")

    @pytest.mark.parametrize("dtype", ["float16", "bool", "uint8", "int32", "int64"])
    def test_widened_dtypes(self, dtype: str, rng, seed) -> None:
        tensor, level = small_dtype_tensor(rng, dtype, (9, 10, 300))
        check_cuda_against_cpu(tensor.cuda(), f"seed={seed} {dtype}", level=level)

    @pytest.mark.parametrize("sdf_name", ["sphere", "torus"])
    def test_closed_shapes(self, sdf_name: str, rng, seed) -> None:
        sdf = random_sphere(rng) if sdf_name == "sphere" else random_torus(rng)
        volume, spacing, origin = sample_sdf(sdf, (37, 41, 45))
        verts, faces = check_cuda_against_cpu(torch.from_numpy(volume).cuda(), f"seed={seed} {sdf}",
                                              spacing=spacing, origin=origin)
        verts, faces = to_numpy(verts), to_numpy(faces)
        assert_mesh_arrays(verts, faces)
        assert_closed_oriented_manifold(verts, faces, f"seed={seed} {sdf}")
        assert euler_characteristic(verts, faces) == (2 if sdf_name == "sphere" else 0)
        assert signed_volume(verts, faces) > 0

    @pytest.mark.parametrize("case", ["level_above", "constant"])
    def test_empty(self, case: str, rng, seed) -> None:
        volume = torch.from_numpy(random_volume(rng, (5, 6, 300))).cuda()
        if case == "constant":
            volume.fill_(2.0)
        verts, faces = marching_cubes(volume, level=10.0 if case == "level_above" else 0.0)
        assert verts.is_cuda and faces.is_cuda
        assert tuple(verts.shape) == (0, 3) and tuple(faces.shape) == (0, 3)
        assert verts.dtype == torch.float32 and faces.dtype == torch.int64

    @pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
    def test_non_finite_raises(self, bad: float, rng, seed) -> None:
        volume = torch.from_numpy(random_volume(rng, (6, 7, 300))).cuda()
        volume[3, 4, 280] = bad
        with pytest.raises(ValueError, match=r"NaN.*\(3, 4, 280\)"):
            marching_cubes(volume)

    def test_memory_error(self, monkeypatch, rng) -> None:
        volume = torch.from_numpy(random_volume(rng, (64, 64, 64))).cuda()
        monkeypatch.setattr(fastsdf._memory, "available_bytes", lambda device=None: 1000)
        with pytest.raises(MemoryError):
            marching_cubes(volume)

    @pytest.mark.slow
    def test_more_than_1024_along_two_axes(self, rng, seed) -> None:
        # Grid and block limits: 1100 > 1024 points along axes 0 and 1.
        volume = torch.from_numpy(smooth_random_volume(rng, (1100, 1100, 16))).cuda()
        verts, faces = check_cuda_against_cpu(volume, f"seed={seed}")
        assert len(faces) > 0
