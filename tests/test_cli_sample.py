"""The ``fastsdf sample`` command: folders of meshes to DeepSDF .npz files, failures and reruns."""

from __future__ import annotations

import collections
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import types
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from fastsdf import _parallel, sample_meshes, write_random_shapes
from fastsdf.cli import main
from fastsdf.geometry import dataset_sampling, sampling
from fastsdf.geometry.mesh_io import load_mesh
from fastsdf.geometry.normalization import NormalizationTransform, normalize
from fastsdf.geometry.samples_npz import load_npz

MESHES = Path(__file__).resolve().parents[2] / "shared" / "meshes"
# --workers 1: the tests of what every run promises run in this process (some replace functions in
# it); the pool and Ray are tested against this serial path below.
SMALL = ["--n-near", "200", "--n-uniform", "50", "--quiet", "--workers", "1"]


@pytest.fixture
def meshes(tmp_path: Path) -> Path:
    """A folder with two good meshes, two broken files and a file that is not a mesh."""
    folder = tmp_path / "meshes"
    folder.mkdir()
    shutil.copy(MESHES / "suzanne.obj", folder)
    shutil.copy(MESHES / "cow.obj", folder)
    (folder / "broken.obj").write_text("this is not a mesh\nf 1 2 3 4 5\n")
    (folder / "garbage.ply").write_bytes(b"\x00\x01 not a ply file")
    (folder / "notes.txt").write_text("not a mesh, not picked up")
    return folder


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["sample", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_folder_writes_one_npz_per_good_mesh_and_reports_the_broken_ones(
        meshes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, meshes, out, *SMALL, "--seed", seed)
    assert code == 1
    assert sorted(p.name for p in out.iterdir()) == ["cow.npz", "suzanne.npz"]
    failed = [line for line in stderr.splitlines() if line.startswith("fastsdf sample: failed:")]
    assert len(failed) == 2 and stderr.count("\n") == 2
    assert any("broken.obj" in line for line in failed) and any("garbage.ply" in line for line in failed)
    assert "Traceback" not in stderr + stdout
    assert "2 written, 0 skipped (output exists), 2 failed" in stdout

    for name in ("cow", "suzanne"):
        with np.load(out / f"{name}.npz") as data:
            assert {"pos", "neg", "offset", "scale"} <= set(data.files)
            assert data["pos"].dtype == data["neg"].dtype == np.float32
            assert len(data["pos"]) + len(data["neg"]) == 250
            assert (data["pos"][:, 3] > 0).all() and (data["neg"][:, 3] <= 0).all()
            assert len(data["neg"]) > 0 and len(data["pos"]) > 0
        samples = load_npz(out / f"{name}.npz")
        _, expected = normalize(load_mesh(meshes / f"{name}.obj"))
        assert samples.transform == expected


def test_a_second_run_skips_what_exists_and_changes_nothing(
        meshes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    _run(capsys, meshes, out, *SMALL)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    code, stdout, stderr = _run(capsys, meshes, out, *SMALL)
    assert code == 1 and stderr.count("failed:") == 2
    assert "skip cow.obj" in stdout and "skip suzanne.obj" in stdout
    assert "0 written, 2 skipped (output exists), 2 failed" in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_existing_files_are_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "cow.npz").write_bytes(b"someone else's file")
    (out / "keep.txt").write_text("unrelated")
    code, stdout, _ = _run(capsys, MESHES / "cow.obj", out, *SMALL)
    assert code == 0 and "skip cow.obj" in stdout
    assert (out / "cow.npz").read_bytes() == b"someone else's file"
    assert sorted(p.name for p in out.iterdir()) == ["cow.npz", "keep.txt"]


@pytest.mark.parametrize("quiet", [False, True])
def test_a_progress_bar_on_a_terminal_unless_quiet(quiet: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    options = [option for option in SMALL if option != "--quiet"] + (["--quiet"] if quiet else [])
    code, stdout, stderr = _run(capsys, MESHES / "cow.obj", tmp_path / "out", *options)
    assert code == 0 and "wrote" in stdout and "1 written" in stdout
    assert ("fastsdf sample" in stderr) != quiet and "Traceback" not in stderr, stderr
    assert (tmp_path / "out" / "cow.npz").exists()


def test_one_mesh_file_with_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], seed: int) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _run(capsys, MESHES / "suzanne.obj", out, "--n-near", "120", "--n-uniform", "30",
                                "--n-surface", "25", "--near-std", "0.01", "--normalize", "cube",
                                "--sign", "pseudonormal", "--seed", seed, "--quiet")
    assert code == 0 and stderr == "" and "1 written" in stdout
    samples = load_npz(out / "suzanne.npz")
    assert len(samples) == 150
    assert samples.surface_points.shape == samples.surface_normals.shape == (25, 3)
    _, cube = normalize(load_mesh(MESHES / "suzanne.obj"), method="cube")
    assert samples.transform == cube
    # --near-std 0.01 for every near point: all of them stay close (the file holds pos then neg).
    near = np.abs(samples.sdf) < 0.06
    assert near.sum() >= 120


def _write_obj(path: Path, vertices: np.ndarray, faces: np.ndarray) -> None:
    """An OBJ with every float64 coordinate written exactly (repr)."""
    lines = [f"v {x!r} {y!r} {z!r}" for x, y, z in vertices.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("magnitude", [1e-9, 1e200, 1.7e308])
def test_meshes_of_any_magnitude(magnitude: float, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                 seed: int) -> None:
    """A mesh file with coordinates near 1e200 (reading merged all its vertices, whose coordinates
    overflowed trimesh's rounding, and normalising warned and failed) or a billionth across (all
    merged into one) samples like the mesh at unit size, without a warning."""
    mesh = load_mesh(MESHES / "suzanne.obj")
    vertices = mesh.vertices / np.abs(mesh.vertices).max() * magnitude
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning fails the mesh, so the exit status shows it
        for name, v in (("unit", mesh.vertices), ("scaled", vertices)):
            (tmp_path / name).mkdir()
            _write_obj(tmp_path / name / "suzanne.obj", v, mesh.faces)  # same name: same random stream
            code, stdout, stderr = _run(capsys, tmp_path / name / "suzanne.obj", tmp_path / name, *SMALL,
                                        "--seed", seed)
            assert code == 0 and stderr == "" and "1 written" in stdout, stderr
    unit, scaled = (load_npz(tmp_path / name / "suzanne.npz") for name in ("unit", "scaled"))
    assert len(scaled) == len(unit) == 250
    np.testing.assert_allclose(scaled.points, unit.points, rtol=0, atol=1e-5)
    np.testing.assert_allclose(scaled.sdf, unit.sdf, rtol=0, atol=1e-5)
    assert math.isclose(scaled.transform.scale * magnitude / np.abs(mesh.vertices).max(), unit.transform.scale,
                        rel_tol=1e-9)


def test_a_mesh_too_small_to_normalise_fails_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mesh = load_mesh(MESHES / "suzanne.obj")
    _write_obj(tmp_path / "tiny.obj", mesh.vertices * 1e-320, mesh.faces)
    code, stdout, stderr = _run(capsys, tmp_path / "tiny.obj", tmp_path / "out", *SMALL)
    assert code == 1 and "0 written" in stdout
    assert stderr.count("\n") == 1 and "cannot normalise a mesh this small" in stderr, stderr


def test_normalize_none_keeps_the_mesh_as_it_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _run(capsys, MESHES / "suzanne.obj", tmp_path, *SMALL, "--normalize", "none")
    assert code == 0
    assert load_npz(tmp_path / "suzanne.npz").transform == NormalizationTransform.identity()


def test_seed_makes_the_output_reproducible(meshes: Path, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str], seed: int) -> None:
    shutil.copy(meshes / "cow.obj", meshes / "cow2.obj")
    runs = {}
    for name, s in (("a", seed), ("b", seed), ("c", seed + 1)):
        _run(capsys, meshes, tmp_path / name, *SMALL, "--seed", s)
        runs[name] = {stem: load_npz(tmp_path / name / f"{stem}.npz") for stem in ("cow", "cow2", "suzanne")}
    for stem in ("cow", "cow2", "suzanne"):
        np.testing.assert_array_equal(runs["a"][stem].points, runs["b"][stem].points)
        np.testing.assert_array_equal(runs["a"][stem].sdf, runs["b"][stem].sdf)
        assert not np.array_equal(runs["a"][stem].points, runs["c"][stem].points)
    # Each file draws its own stream: the same mesh under another name gets other points.
    assert not np.array_equal(runs["a"]["cow"].points, runs["a"]["cow2"].points)


def test_meshes_that_share_a_name_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(MESHES / "suzanne.obj", folder / "monkey.obj")
    load_mesh(MESHES / "suzanne.obj").export(folder / "monkey.ply")
    code, _, stderr = _run(capsys, folder, tmp_path / "out", *SMALL)
    assert code == 1 and [p.name for p in (tmp_path / "out").iterdir()] == ["monkey.npz"]
    assert stderr.count("failed:") == 1 and "same output monkey.npz" in stderr


def test_a_failing_write_leaves_nothing_behind(meshes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_savez(file, **arrays) -> None:
        file.write(b"half a file")
        raise OSError("No space left on device")

    monkeypatch.setattr(np, "savez", broken_savez)
    out = tmp_path / "out"
    code, _, stderr = _run(capsys, meshes, out, *SMALL)
    assert code == 1 and stderr.count("No space left on device") == 2
    assert list(out.iterdir()) == []


def test_a_mesh_whose_sampling_fails_does_not_stop_the_others(
        meshes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    real = sampling._mesh_sdf

    def flaky(vertices, faces, sign):
        if len(faces) < 1000:  # suzanne
            raise RuntimeError("kernel exploded")
        return real(vertices, faces, sign)

    monkeypatch.setattr(sampling, "_mesh_sdf", flaky)
    code, _, stderr = _run(capsys, meshes, tmp_path / "out", *SMALL)
    assert code == 1 and "suzanne.obj: RuntimeError: kernel exploded" in stderr
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["cow.npz"]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("setup", ["empty", "no meshes", "missing"])
def test_nothing_to_read_fails_as_in_every_command(setup: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in"
    if setup != "missing":
        source.mkdir()
    if setup == "no meshes":
        (source / "readme.txt").write_text("no meshes here")
        (source / "sub").mkdir()
        shutil.copy(MESHES / "cow.obj", source / "sub")  # subfolders are not searched
    code, stdout, stderr = _run(capsys, source, tmp_path / "out", *SMALL)
    assert code == 1 and stdout == ""  # a missing input, as in every command (the README's exit statuses)
    assert stderr.count("\n") == 1 and stderr.startswith("fastsdf sample: error:") and str(source) in stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options, message", [
    (["--n-near", "-1"], "--n-near"),
    (["--n-uniform", "-5"], "--n-uniform"),
    (["--n-near", "0", "--n-uniform", "0"], "nothing to sample"),
    (["--workers", "0"], "--workers must be >= 1"),
    (["--workers", "two"], "--workers"),
    (["--threads", "0"], "--threads must be >= 1"),
    (["--engine", "spark"], "--engine"),
    (["--engine", "pool", "--address", "auto"], "--address"),
])
def test_bad_counts_and_parallel_options_are_usage_errors(options: list[str], message: str, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, stderr = _run(capsys, MESHES / "cow.obj", tmp_path / "out", "--quiet", *options)
    assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("options", [["--near-std", "0"], ["--near-std", "0.1,0.01,0.001"], ["--near-std", "x"],
                                     ["--normalize", "ball"], ["--sign", "rays"], ["--n-near", "1e5"]])
def test_bad_options_are_argparse_errors(options: list[str], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(MESHES / "cow.obj"), str(tmp_path), *options]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"fastsdf sample: error: {options[0]}") and "usage:" not in err


def test_out_dir_that_is_a_file_fails_as_in_every_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "out").write_text("a file")
    code, _, stderr = _run(capsys, MESHES / "cow.obj", tmp_path / "out", *SMALL)
    assert code == 1 and "not a folder" in stderr


def test_the_command_line_entry_point(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    run = lambda *args: subprocess.run([sys.executable, "-m", "fastsdf.cli", "sample", *args],  # noqa: E731
                                       capture_output=True, text=True, env=os.environ.copy())
    result = run(str(tmp_path / "empty"), str(tmp_path / "out"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.strip().splitlines() == [f"fastsdf sample: error: no mesh files (.obj, .ply, .stl, .off, "
                                                  f".glb, .gltf) in {tmp_path / 'empty'}"]
    help_text = run("--help").stdout
    assert "470,000" in help_text and "30,000" in help_text and "0.0707,0.0224" in help_text


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four generated meshes and a broken one."""
    folder = tmp_path_factory.mktemp("collection")
    write_random_shapes(folder, 4, seed=7, progress=False)
    (folder / "broken.obj").write_text("this is not a mesh\nf 1 2 3 4 5\n")
    return folder


@pytest.fixture(scope="module")
def local_ray() -> object:
    """One small local Ray instance for the module (the runs use it as they find it), shut down after."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.parametrize("engine", ["pool", "ray"])
def test_the_pool_and_ray_write_the_serial_runs_files_and_resume(
        engine: str, collection: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        request: pytest.FixtureRequest, seed: int) -> None:
    if engine == "ray":
        request.getfixturevalue("local_ray")
    serial, parallel = tmp_path / "serial", tmp_path / engine
    _run(capsys, collection, serial, *SMALL, "--seed", seed)
    parallel.mkdir()
    (parallel / "shape_00002.npz").write_bytes(b"someone else's file")
    code, stdout, stderr = _run(capsys, collection, parallel, *SMALL[:-2], "--seed", seed, "--engine", engine,
                                "--workers", "2")
    assert code == 1 and "3 written, 1 skipped (output exists), 1 failed" in stdout, stdout + stderr
    assert stderr.count("\n") == 1 and "broken.obj" in stderr and "Traceback" not in stderr
    assert (parallel / "shape_00002.npz").read_bytes() == b"someone else's file"
    (parallel / "shape_00002.npz").unlink()
    # The rerun has one mesh to do: the default engine samples it in this process, as the serial run did.
    code, stdout, _ = _run(capsys, collection, parallel, *SMALL[:-2], "--seed", seed)
    assert code == 1 and "1 written, 3 skipped (output exists), 1 failed" in stdout
    assert sorted(p.name for p in parallel.iterdir()) == sorted(p.name for p in serial.iterdir())
    for path in serial.iterdir():
        assert (parallel / path.name).read_bytes() == path.read_bytes(), path.name


def test_auto_is_ray_only_where_a_cluster_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "ray_available", lambda: True)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    connected = types.SimpleNamespace(is_initialized=lambda: False)  # this process's Ray, or not
    monkeypatch.setitem(sys.modules, "ray", connected)
    assert _parallel.resolve_engine("auto", 2, None) == "pool"
    assert _parallel.resolve_engine("auto", 1, None) == "serial"
    assert _parallel.resolve_engine("auto", 1, "auto") == "ray"
    connected.is_initialized = lambda: True
    assert _parallel.resolve_engine("auto", 2, None) == "ray"
    connected.is_initialized = lambda: False
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    assert _parallel.resolve_engine("auto", 2, None) == "ray"
    monkeypatch.setattr(_parallel, "ray_available", lambda: False)
    assert _parallel.resolve_engine("auto", 2, None) == "pool"  # an address for a Ray this process lacks


def test_without_ray_auto_is_the_pool_and_ray_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_parallel, "ray_available", lambda: False)
    monkeypatch.delitem(sys.modules, "ray", raising=False)  # a Ray another test left connected
    assert _parallel.resolve_engine("auto", 2, None) == "pool"
    assert _parallel.resolve_engine("auto", 1, None) == "serial"
    for options in (["--engine", "ray"], ["--address", "auto"]):
        code, stdout, stderr = _run(capsys, MESHES / "cow.obj", tmp_path / "out", *SMALL, *options)
        assert code == 1 and stdout == "" and "Ray is not installed" in stderr and stderr.count("\n") == 1
    with pytest.raises(ValueError, match="workers"):
        sample_meshes([MESHES / "cow.obj"], tmp_path / "out", workers=0)
    assert not (tmp_path / "out").exists()


def _segfault() -> None:
    import resource  # POSIX only, as the tests that use it

    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # no core file
    os.kill(os.getpid(), signal.SIGSEGV)


def _square_or_die(value: int, death: str, marks: str) -> int:
    """A task that leaves one file per run in ``marks``; ``death`` "always": a segfault every run,
    "once": its process exits on the first run only (as a kill for memory might)."""
    Path(marks, f"{value}.{os.getpid()}.{len(os.listdir(marks))}").touch()
    if death == "always":
        _segfault()
    if death == "once" and len([name for name in os.listdir(marks) if name.startswith(f"{value}.")]) == 1:
        os._exit(3)
    return value * value


@contextlib.contextmanager
def _deadline(seconds: int) -> Iterator[None]:
    """Fails the test instead of hanging it (SIGALRM in this, the main, thread)."""
    def expire(*_) -> None:
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


posix = pytest.mark.skipif(os.name != "posix", reason="kills its worker with a signal, times out with SIGALRM")


@posix
@pytest.mark.parametrize("engine", ["pool", "ray"])
def test_a_worker_that_dies_loses_only_its_own_task(engine: str, tmp_path: Path,
                                                    request: pytest.FixtureRequest) -> None:
    """A process pool whose worker died failed every task not yet done (BrokenProcessPool), without
    saying which one killed it; Ray reran the task 3 times. Now both rerun it once, then report it."""
    if engine == "ray":
        ray = request.getfixturevalue("local_ray")
        # Ray's workers cannot import this module: the task goes to them by value.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        request.addfinalizer(lambda: ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__]))
    deaths = {3: "always", 5: "once"}
    items = [(value, deaths.get(value, ""), str(tmp_path)) for value in range(8)]
    results: dict[int, object] = {}
    with _deadline(120):
        for index, result, message in _parallel.map_unordered(_square_or_die, items, engine=engine, workers=2):
            assert index not in results
            results[index] = result if message is None else message
    assert {index: results[index] for index in range(8) if index != 3} == {i: i * i for i in range(8) if i != 3}
    died = "the worker process died while running it, on each of its 2 tries ("
    assert str(results[3]).startswith(died), results[3]
    if engine == "pool":
        assert results[3].endswith("(exit code -11, SIGSEGV)")
    # Every task ran once, but the ones whose worker died: twice.
    runs = collections.Counter(int(path.name.split(".")[0]) for path in tmp_path.iterdir())
    assert runs == {value: 2 if value in deaths else 1 for value in range(8)}


_sample_mesh_file = dataset_sampling.sample_mesh_file


def _sample_or_segfault(path: Path, *args: object) -> object:
    """sample_mesh_file, but a mesh named bad kills its worker as a native library's crash would."""
    if path.stem == "bad":
        _segfault()
    return _sample_mesh_file(path, *args)


@posix
def test_a_mesh_that_kills_its_worker_is_reported_and_the_rest_are_written(
        collection: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    # sample_meshes hands the pool the module's sample_mesh_file, now this one, which the spawned
    # workers import by reference from this module (the pool carries this process's sys.path).
    monkeypatch.setattr(dataset_sampling, "sample_mesh_file", _sample_or_segfault)
    shutil.copy(collection / "shape_00000.ply", tmp_path / "bad.ply")
    meshes = sorted(collection.iterdir()) + [tmp_path / "bad.ply"]
    with _deadline(120):
        report = sample_meshes(meshes, tmp_path / "out", n_near=200, n_uniform=50, seed=seed, engine="pool",
                               workers=2, progress=False)
    assert sorted(path.name for path in report.written) == [f"shape_0000{i}.npz" for i in range(4)]
    assert len(report.failures) == 2 and "broken.obj" in report.failures[0]
    assert report.failures[1] == (f"{tmp_path / 'bad.ply'}: the worker process died while running it, on each of "
                                  "its 2 tries (exit code -11, SIGSEGV)")
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [f"shape_0000{i}.npz" for i in range(4)]
