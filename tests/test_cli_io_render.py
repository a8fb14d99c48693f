"""PLY output, atomic writes, rendering, the demo's argument check, and what happens without the
compiled modules (the commands end to end: test_cli_commands.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fastsdf
from fastsdf.cli import main
from fastsdf.io import atomic_write, write_ply
from fastsdf.render import render_mesh, render_sdf

from cli_helpers import read_ply


def test_write_ply_round_trip(tmp_path: Path) -> None:
    verts, faces = fastsdf.extract_mesh(fastsdf.Sphere(0.5), 24)
    write_ply(tmp_path / "m.ply", verts, faces)
    v, f = read_ply(tmp_path / "m.ply")
    np.testing.assert_array_equal(v, verts)
    np.testing.assert_array_equal(f, faces)


def test_write_ply_accepts_tensors_and_empty_meshes(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    write_ply(tmp_path / "e.ply", torch.zeros((0, 3)), torch.zeros((0, 3), dtype=torch.int64))
    v, f = read_ply(tmp_path / "e.ply")
    assert v.shape == (0, 3) and f.shape == (0, 3)


@pytest.mark.parametrize(
    "verts, faces",
    [(np.zeros((3, 2)), np.zeros((1, 3), int)), (np.zeros((3, 3)), np.array([[0, 1, 3]]))],
)
def test_write_ply_rejects_bad_meshes_and_keeps_the_old_file(tmp_path: Path, verts, faces) -> None:
    target = tmp_path / "keep.ply"
    target.write_bytes(b"precious")
    with pytest.raises(ValueError):
        write_ply(target, verts, faces)
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.ply"]


def test_atomic_write_gives_ordinary_permissions(tmp_path: Path) -> None:
    with atomic_write(tmp_path / "atomic.bin") as f:
        f.write(b"x")
    (tmp_path / "plain.bin").write_bytes(b"x")
    assert (tmp_path / "atomic.bin").stat().st_mode == (tmp_path / "plain.bin").stat().st_mode


def test_atomic_write_leaves_nothing_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("hard_links", [True, False])
def test_atomic_write_keep_existing_leaves_the_first_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          hard_links: bool) -> None:
    """The file there when the block ends (another writer's) stays, the same inode; with no file
    there, the new one is written (also on a filesystem without hard links); no temporary is left."""
    if not hard_links:
        def no_link(*args: Any) -> None:
            raise PermissionError("no hard links here")

        monkeypatch.setattr(os, "link", no_link)
    target = tmp_path / "out.bin"
    with atomic_write(target, keep_existing=True) as f:
        f.write(b"first")
    inode = target.stat().st_ino
    with atomic_write(target, keep_existing=True) as f:
        f.write(b"second")
    assert target.read_bytes() == b"first" and target.stat().st_ino == inode
    (tmp_path / "plain.bin").write_bytes(b"x")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin", "plain.bin"]
    assert target.stat().st_mode == (tmp_path / "plain.bin").stat().st_mode


def test_render_mesh_draws_the_shape(tmp_path: Path) -> None:
    verts, faces = fastsdf.extract_mesh(fastsdf.Sphere(0.5), 32)
    image = render_mesh(verts, faces, tmp_path / "s.png", size=64)
    assert image.shape == (64, 64, 3)
    covered = (image != 1.0).any(axis=2)
    # A sphere seen from anywhere covers a disc of 0.9 of the picture's width: pi/4 * 0.81.
    assert 0.5 < covered.mean() < 0.75
    assert covered[32, 32] and not covered[0, 0]
    assert (tmp_path / "s.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_render_mesh_of_an_empty_mesh_is_background() -> None:
    image = render_mesh(np.zeros((0, 3)), np.zeros((0, 3), int), size=16)
    assert (image == 1.0).all()


def test_demo_rejects_bad_resolution(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--resolution", "1"]) == 2
    assert "resolution" in capsys.readouterr().err


def test_import_works_without_compiled_modules() -> None:
    # Block the compiled modules in a fresh interpreter: import must work and ops must explain.
    code = (
        "import sys; sys.modules['fastsdf._C'] = None; sys.modules['fastsdf._cuda'] = None\n"
        "import numpy as np, fastsdf\n"
        "try:\n"
        "    fastsdf.marching_cubes(np.zeros((2, 2, 2)))\n"
        "except fastsdf.BackendUnavailableError as e:\n"
        "    print('unavailable:', e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert "fastsdf._C" in result.stdout and "pip install -e ." in result.stdout


class _AnalyticModule(torch.nn.Module):
    """An analytic SDF as the module render_sdf takes: forward and forward_with_gradient."""

    def __init__(self, sdf: Any):
        super().__init__()
        self.sdf = sdf
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # render_sdf reads dtype and device off it

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sdf(x)

    def forward_with_gradient(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            value = self.sdf(x)
            (gradient,) = torch.autograd.grad(value.sum(), x)
        return value.detach(), gradient


@pytest.mark.parametrize("up", ["x", "y", "z"])
@pytest.mark.parametrize("azimuth", [0.0, 35.0, 200.0])
def test_both_renderers_stand_the_up_axis_upright_and_light_in_the_camera_frame(up: str, azimuth: float) -> None:
    """A box long along ``up`` is drawn taller than wide, by sphere tracing and by rasterising its
    mesh; a sphere's centre, facing the viewer, has the same brightness from every view."""
    axis = "xyz".index(up)
    half = [0.2, 0.2, 0.2]
    half[axis] = 0.6
    box = fastsdf.Box(tuple(half))
    view = {"size": 64, "azimuth": azimuth, "elevation": 10.0, "up": up}
    traced = render_sdf(_AnalyticModule(box), **view)
    drawn = render_mesh(*fastsdf.extract_mesh(box, 48), **view)
    for image in (traced, drawn):
        rows, cols = np.nonzero((image != 1.0).any(axis=2))
        assert np.ptp(rows) > 1.8 * np.ptp(cols), f"up={up} azimuth={azimuth}"
    sphere = _AnalyticModule(fastsdf.Sphere(0.6))
    facing = render_sdf(sphere, size=64, azimuth=0.0, elevation=0.0, up="z")[32, 32]
    np.testing.assert_allclose(render_sdf(sphere, **view)[32, 32], facing, atol=0.03)


def test_render_rejects_an_unknown_up_axis() -> None:
    with pytest.raises(ValueError, match="up"):
        render_mesh(*fastsdf.extract_mesh(fastsdf.Sphere(0.5), 8), up="w")


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return child.pid


def test_a_killed_atomic_write_leaves_a_temporary_the_next_write_removes(tmp_path: Path) -> None:
    target = tmp_path / "mesh.ply"
    kill = ("import os, signal, sys\nfrom fastsdf.io import atomic_write\n"
            "with atomic_write(sys.argv[1]) as f:\n    f.write(b'x' * 100000)\n    f.flush()\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    result = subprocess.run([sys.executable, "-c", kill, str(target)], cwd=Path(__file__).parent.parent)
    assert result.returncode == -9
    (left,) = tmp_path.iterdir()
    assert left.name.startswith(".mesh.ply.") and left.name.endswith(".tmp")
    write_ply(target, np.eye(3), [[0, 1, 2]])
    assert [p.name for p in tmp_path.iterdir()] == ["mesh.ply"]


def test_only_stale_temporaries_are_removed(tmp_path: Path) -> None:
    from fastsdf import io

    target = tmp_path / "model.pt"
    name = f".{target.name}."
    alive = [f"{name}{io._HOST}-{os.getpid()}.abcd1234.tmp",  # this process: writing now
             f"{name}{io._HOST}-{os.getppid()}.abcd1234.tmp",  # a live process
             f"{name}0badf00d-{_dead_pid()}.abcd1234.tmp",  # another host's: its pid means nothing here
             f"{name}legacy12.tmp",  # an earlier version's, young: its writer may live
             f"{name}notes.tmp", ".other.pt.x.tmp", "model.pt.abcd1234.tmp"]  # not atomic_write's names
    stale = [f"{name}{io._HOST}-{_dead_pid()}.abcd1234.tmp", f"{name}{io._HOST}-99999999999.zz_9xy00.tmp",
             f"{name}0badf00d-1.abcd1234.tmp", f"{name}legacy34.tmp"]
    for entry in alive + stale:
        (tmp_path / entry).write_bytes(b"partial")
    old = os.stat(tmp_path / alive[0]).st_mtime - io.STALE_SECONDS - 60
    for entry in stale[2:]:  # old enough, whoever wrote them
        os.utime(tmp_path / entry, (old, old))
    with atomic_write(target) as f:
        f.write(b"model")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(alive + ["model.pt"])
    assert target.read_bytes() == b"model"


@pytest.mark.parametrize("options, message", [({"max_steps": 2.5}, "max_steps"), ({"max_steps": 0}, "max_steps"),
                                              ({"bounds": ((0, 0, 0), (1, 1))}, "bounds"),
                                              ({"bounds": ((1, 0, 0), (0, 1, 1))}, "lo < hi"),
                                              ({"azimuth": float("nan")}, "azimuth"), ({"elevation": "up"}, "elevation")])
def test_render_sdf_checks_its_arguments(options: dict, message: str) -> None:
    # max_steps=2.5 ran 2 steps, a two-number corner raised a reshape error, NaN angles drew nothing.
    with pytest.raises(ValueError, match=message):
        render_sdf(_AnalyticModule(fastsdf.Sphere(0.5)), size=16, **options)
