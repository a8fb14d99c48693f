"""Random shapes to train on (``fastsdf.random_shape``, ``random_mesh``, ``write_random_shapes`` and
``fastsdf shapes``): closed, distinct, reproducible, never overwriting a file, and the first step of
the README's pipeline (shapes -> sample)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf import Box, Sphere, random_mesh, random_shape, write_random_shapes
from fastsdf.cli import main
from fastsdf.geometry.mesh_io import load_mesh, mesh_arrays
from fastsdf.geometry.random_shapes import _family, _Moved, _rotation, _Turned


def _edges_shared_by_two_faces(faces: np.ndarray) -> bool:
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    _, counts = np.unique(edges, axis=0, return_counts=True)
    return bool((counts == 2).all())


def test_meshes_are_closed_distinct_and_reproducible(seed: int) -> None:
    import trimesh

    meshes = [random_mesh(index, seed) for index in range(6)]
    for vertices, faces in meshes:
        assert vertices.dtype == np.float32 and faces.dtype == np.int64 and len(faces)
        assert _edges_shared_by_two_faces(faces)
        mesh = trimesh.Trimesh(vertices, faces)
        assert mesh.is_watertight and mesh.volume > 0
        assert np.abs(vertices).max() < 0.95  # inside [-0.9, 0.9]^3 up to a grid cell
    assert len({(len(v), round(float(trimesh.Trimesh(v, f).volume), 9)) for v, f in meshes}) == 6
    again = random_mesh(4, seed)
    np.testing.assert_array_equal(again[0], meshes[4][0])
    np.testing.assert_array_equal(again[1], meshes[4][1])


def test_a_coarse_grid_still_gives_a_closed_mesh(seed: int) -> None:
    vertices, faces = random_mesh(seed % 1000, seed, resolution=fastsdf.geometry.random_shapes.MIN_RESOLUTION)
    assert len(faces) and _edges_shared_by_two_faces(faces)


def test_a_shape_is_the_same_on_numpy_and_torch(seed: int, rng: np.random.Generator) -> None:
    shape = random_shape(seed)
    points = rng.uniform(-1, 1, (257, 3))
    expected = shape(points)
    assert expected.dtype == np.float64 and expected.shape == (257,)
    np.testing.assert_allclose(shape(torch.from_numpy(points)).numpy(), expected, rtol=0, atol=1e-12)
    single = shape(points.astype(np.float32))
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, expected, rtol=0, atol=1e-5)  # shapes and points are O(1)
    assert repr(random_shape(seed)) == repr(shape)  # an integer seed draws the same shape each time


def test_turns_and_moves_against_plain_numpy(rng: np.random.Generator) -> None:
    """Rigid motions checked against shapes that need none: a moved sphere is a sphere elsewhere,
    a box turned a quarter about z swaps its x and y sides; and a turned box against its points
    turned back one by one."""
    points = rng.uniform(-1, 1, (101, 3))
    offset = rng.uniform(-0.3, 0.3, 3)
    moved = _Moved(_Turned(Sphere(0.4), _rotation(rng)), offset)
    np.testing.assert_allclose(moved(points), Sphere(0.4, offset)(points), rtol=0, atol=1e-12)

    quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # x -> y, y -> -x
    turned = _Turned(Box((0.1, 0.3, 0.2)), quarter)
    np.testing.assert_allclose(turned(points), Box((0.3, 0.1, 0.2))(points), rtol=0, atol=1e-12)

    rotation = _rotation(rng)
    np.testing.assert_allclose(rotation @ rotation.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rotation) == pytest.approx(1)
    box = Box((0.1, 0.3, 0.2))
    back = np.array([rotation.T @ (p - offset) for p in points])
    np.testing.assert_allclose(_Moved(_Turned(box, rotation), offset)(points), box(back), rtol=0, atol=1e-12)


def test_a_generator_is_drawn_from_and_advanced(seed: int) -> None:
    rng = np.random.default_rng(seed)
    first, second = random_shape(rng), random_shape(rng)
    assert repr(first) == repr(random_shape(seed)) and repr(second) != repr(first)


def test_a_family_member_is_its_recipe_varied(seed: int) -> None:
    """The documented rule: mesh i of K families is family i % K's recipe varied by the mesh's own
    stream; ``families=0`` is the plain collection."""
    index, families = seed % 50, 3
    member = random_mesh(index, seed, 24, families=families)
    assert len(member[1]) and _edges_shared_by_two_faces(member[1])
    recipe = _family(seed, index % families)
    varied = recipe.varied(np.random.default_rng([seed, index])).sdf()
    expected = fastsdf.extract_mesh(varied, 24, progress=False)
    if len(expected[1]):  # otherwise the mesh's stream drew again
        np.testing.assert_array_equal(member[0], np.asarray(expected[0]))
    plain = random_mesh(index, seed, 24)
    np.testing.assert_array_equal(random_mesh(index, seed, 24, families=0)[1], plain[1])


def test_siblings_stay_near_their_recipe_and_inside_the_box(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for family in range(4):
        recipe = _family(seed, family)
        for _ in range(5):
            sibling = recipe.varied(rng)
            parts = list(zip(recipe.joined, sibling.joined))
            if recipe.carved is not None:
                parts.append((recipe.carved, sibling.carved))
            for before, after in parts:
                assert after.kind == before.kind
                scale = after.size / before.size
                assert np.all(scale >= 0.8 - 1e-12) and np.all(scale <= 1.25 + 1e-12)
                assert np.all(np.abs(after.centre) + after.reach <= 0.9 + 1e-12)
                if before.rotation is not None:
                    turn = after.rotation @ before.rotation.T
                    assert np.linalg.det(after.rotation) == pytest.approx(1)
                    np.testing.assert_allclose(after.rotation @ after.rotation.T, np.eye(3), atol=1e-12)
                    assert np.degrees(np.arccos(np.clip((np.trace(turn) - 1) / 2, -1, 1))) < 60


def test_families_are_modes(seed: int, rng: np.random.Generator) -> None:
    """Siblings' fields differ far less than families' (within / across is 0.22 at the median and
    at most 0.35 over 200 seeds)."""
    points = rng.uniform(-1, 1, (4000, 3))
    fields = [[_family(seed, f).varied(rng).sdf()(points) for _ in range(3)] for f in range(4)]
    within = np.mean([np.abs(a[i] - a[j]).mean() for a in fields for i in range(3) for j in range(i)])
    across = np.mean([np.abs(fields[f][0] - fields[g][0]).mean() for f in range(4) for g in range(f)])
    assert within < 0.6 * across


@pytest.mark.parametrize("call, message", [
    (lambda: random_shape(-1), r"seed must be in \[0, 9223372036854775807\], got -1"),
    (lambda: random_shape(2**63), r"seed must be in \[0, "),
    (lambda: random_shape(1.0), "or a numpy.random.Generator"),
    (lambda: random_shape(None), "or a numpy.random.Generator"),
    (lambda: random_mesh(-1), "index must be >= 0"),
    (lambda: random_mesh(0, resolution=7), "resolution must be >= 8"),
    (lambda: random_mesh(0, seed="0"), "seed must be an integer"),
    (lambda: random_mesh(0, families=-1), "families must be >= 0"),
    (lambda: write_random_shapes("unused", 1, families=2.0), "families must be an integer"),
    (lambda: write_random_shapes("unused", 0), "count must be >= 1"),
    (lambda: write_random_shapes("unused", 2.0), "count must be an integer"),
    (lambda: write_random_shapes("unused", 1, start=-1), "start must be >= 0"),
    (lambda: write_random_shapes("unused", 1, resolution=True), "resolution must be an integer"),
])
def test_bad_arguments_raise_value_errors(call: object, message: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=message):
        call()
    assert not any(tmp_path.iterdir())


def test_write_random_shapes_continues_a_collection_and_never_overwrites(tmp_path: Path) -> None:
    whole = write_random_shapes(tmp_path / "whole", 3, seed=5, resolution=16, progress=False)
    assert [p.name for p in whole] == ["shape_00000.ply", "shape_00001.ply", "shape_00002.ply"]
    tail = write_random_shapes(tmp_path / "tail", 2, seed=5, resolution=16, start=1, progress=False)
    assert [p.read_bytes() for p in tail] == [p.read_bytes() for p in whole[1:]]

    mine = tmp_path / "mine" / "shape_00002.ply"
    mine.parent.mkdir()
    mine.write_bytes(b"a user's file")
    with pytest.raises(FileExistsError, match="shape_00002.ply exists: pass overwrite=True"):
        write_random_shapes(mine.parent, 3, seed=5, resolution=16, progress=False)
    assert [p.name for p in mine.parent.iterdir()] == [mine.name] and mine.read_bytes() == b"a user's file"
    write_random_shapes(mine.parent, 3, seed=5, resolution=16, overwrite=True, progress=False)
    assert mine.read_bytes() == whole[2].read_bytes()

    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(NotADirectoryError):
        write_random_shapes(tmp_path / "file", 1, progress=False)


def test_shapes_then_sample_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                  seed: int) -> None:
    """The README's pipeline's first steps; the later ones have their own command tests."""
    meshes, samples = tmp_path / "meshes", tmp_path / "samples"
    shapes = ["shapes", str(meshes), "--count", "3", "--seed", str(seed), "--resolution", "20", "--quiet"]
    assert main(shapes) == 0
    assert sorted(p.name for p in meshes.iterdir()) == [f"shape_0000{k}.ply" for k in range(3)]
    assert "3 shapes written" in capsys.readouterr().out
    assert main(["sample", str(meshes), str(samples), "--n-near", "200", "--n-uniform", "50", "--n-surface", "20",
                 "--seed", "0", "--workers", "1", "--quiet"]) == 0
    for k in range(3):
        data = fastsdf.load_npz(samples / f"shape_0000{k}.npz")
        assert len(data) == 250 and (data.sdf < 0).any() and (data.sdf > 0).any()

    before = {p.name: p.read_bytes() for p in meshes.iterdir()}
    capsys.readouterr()
    assert main(shapes) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("fastsdf shapes: error: ") and "--overwrite" in err
    assert main([*shapes, "--overwrite"]) == 0
    assert {p.name: p.read_bytes() for p in meshes.iterdir()} == before  # the same seed, the same files


def test_families_from_the_command_line(tmp_path: Path, seed: int) -> None:
    assert main(["shapes", str(tmp_path), "--count", "4", "--start", "2", "--families", "2", "--seed", str(seed),
                 "--resolution", "16", "--quiet"]) == 0
    for index in range(2, 6):
        _, faces = mesh_arrays(load_mesh(tmp_path / f"shape_{index:05d}.ply"))
        np.testing.assert_array_equal(faces, random_mesh(index, seed, 16, families=2)[1])
