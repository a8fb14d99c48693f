"""fastsdf._cuda's plumbing, checked without a GPU: every launch runs on its tensors' device, the
build picks a toolkit that torch's driver runs, and a driver too old for the module gives one clear
error. The CUDA-marked tests at the end run the kernels on two GPUs where a machine has them."""

from __future__ import annotations

import ctypes
import importlib.util
import re
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fastsdf
from conftest import assert_same_mesh, to_numpy
from fastsdf import _backend, _cuda_driver
from fastsdf.geometry.mesh_bvh import BvhArrays
from fastsdf.geometry.mesh_sdf import MeshSDF
from fastsdf.meshing import marching_cubes as mc_module

ROOT = Path(__file__).resolve().parent.parent
LAUNCHES = ("mc_count", "mc_fill", "msdf_query", "msdf_winding")


def real_module() -> Any:
    if not _backend.has_cuda():
        pytest.skip("fastsdf._cuda is not built")
    return _backend._load("_cuda")


def parameters(function: Any) -> list[str]:
    """Parameter names from a pybind11 function's signature line."""
    signature = function.__doc__.splitlines()[0]
    return re.findall(r"[(,]\s*(\w+):", signature)


# --- every launch on its tensors' device ---------------------------------------------------------


def test_every_launch_takes_the_device_after_its_stream() -> None:
    module = real_module()
    for name in LAUNCHES:
        names = parameters(getattr(module, name))
        assert "device" in names and names.index("device") == names.index("stream") + 1, f"{name}: {names}"


def test_cuda_target_is_the_stream_and_index_of_the_tensors_device(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: types.SimpleNamespace(cuda_stream=1000 + device.index))
    tensor = types.SimpleNamespace(device=torch.device("cuda", 3))
    assert _backend.cuda_target(tensor) == (1003, 3)


class RecordingModule(types.ModuleType):
    """fastsdf._cuda's launches as calls named by the real module's signatures, recorded; the count
    kernel writes zero counts."""

    def __init__(self, real: Any) -> None:
        super().__init__("fake_cuda")
        self.real = real
        self.calls: dict[str, dict[str, Any]] = {}
        self.segments_per_row = real.segments_per_row
        self.mc_tables = real.mc_tables

    def __getattr__(self, name: str) -> Any:
        if name not in LAUNCHES:
            raise AttributeError(name)
        names = parameters(getattr(self.real, name))

        def launch(*args: Any) -> None:
            named = dict(zip(names, args))
            self.calls[name] = named
            if name == "mc_count":
                shape = named["shape"]
                ctypes.memset(named["counts"], 0, 3 * 4 * shape[0] * shape[1] * self.segments_per_row(shape[2]))

        return launch


@pytest.fixture
def recorded(monkeypatch) -> tuple[RecordingModule, list]:
    """The launches made, and the tensors whose device each was asked for."""
    fake = RecordingModule(real_module())
    targets: list = []

    def target(tensor: Any) -> tuple[int, int]:
        targets.append(tensor)
        return 777, 5

    monkeypatch.setattr(_backend, "cuda", lambda: fake)
    monkeypatch.setattr(_backend, "cuda_target", target)
    yield fake, targets
    mc_module._tables_on.cache_clear()


def test_marching_cubes_launches_on_the_volumes_device(recorded, rng) -> None:
    fake, targets = recorded
    volume = torch.from_numpy(rng.standard_normal((5, 6, 7)))
    kernels = mc_module.CudaKernels()
    counts = kernels.count(volume, 0.0)
    kernels.fill(volume, 0.0, counts, vertex_base=0, layers=5, index_offset=(0, 0, 0), origin=(0, 0, 0),
                 spacing=(1, 1, 1))
    assert set(fake.calls) == {"mc_count", "mc_fill"}
    for name, named in fake.calls.items():
        assert (named["stream"], named["device"]) == (777, 5), name
    assert all(t is volume for t in targets) and len(targets) == 2


def test_mesh_sdf_launches_on_the_points_device(recorded, rng) -> None:
    fake, targets = recorded
    sdf = MeshSDF(np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1.0]]), np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]]))
    points = torch.from_numpy(rng.standard_normal((9, 3)))
    sdf._cuda_query(points, 0, with_closest=True)
    sdf._cuda_winding(points, exact=False)
    assert set(fake.calls) == {"msdf_query", "msdf_winding"}
    for name, named in fake.calls.items():
        assert (named["stream"], named["device"]) == (777, 5), name
        assert named["points"] == points.data_ptr(), name
    assert all(t is points for t in targets) and len(targets) == 2


def test_a_launch_without_a_usable_gpu_raises_instead_of_crashing() -> None:
    module = real_module()
    if _cuda_driver.driver_cuda_version() is not None:
        pytest.skip("this machine has an NVIDIA driver")
    with pytest.raises(RuntimeError, match="cudaGetDevice failed: cudaError"):
        module.msdf_winding(BvhArrays(*[0] * 10, frame=(0.0, 0.0, 0.0, 1.0, 0.0)), 1, 1, 0, 0, 0, 1, False, 2.0, 0, 0, 0)


# --- the driver the module needs ---------------------------------------------------------------------


@pytest.fixture
def driver(monkeypatch) -> dict:
    """The driver that fastsdf finds: the CUDA version it supports and its release."""
    found: dict = {"cuda": (12, 4), "release": "550.54.14"}
    monkeypatch.setattr(_cuda_driver, "driver_cuda_version", lambda: found["cuda"])
    monkeypatch.setattr(_cuda_driver, "driver_release", lambda: found["release"])
    monkeypatch.setattr(_backend, "_torch_cuda", lambda: "12.4")
    return found


def fake_module(status: tuple, toolkit: str = "13.0") -> types.ModuleType:
    module = types.ModuleType("fake_cuda")
    module.cuda_toolkit = toolkit
    module.probes = 0

    def runtime_status() -> tuple:
        module.probes += 1
        return status

    module.runtime_status = runtime_status
    return module


def loading(monkeypatch, module: Any) -> None:
    monkeypatch.setattr(_backend, "_load", lambda name: module)


def test_an_old_driver_gets_one_error_naming_driver_toolkit_and_fix(monkeypatch, driver) -> None:
    module = fake_module((35, "cudaErrorInsufficientDriver", 0))
    loading(monkeypatch, module)
    for _ in range(2):
        with pytest.raises(_backend.BackendUnavailableError) as error:
            _backend.cuda()
    message = str(error.value)
    for part in ("cudaErrorInsufficientDriver", "CUDA 13.0", ">= 580.65.06", "supports CUDA 12.4", "550.54.14",
                 "CUDA 12.x toolkit", "torch uses CUDA 12.4", "CUDA_HOME=", "update the NVIDIA driver"):
        assert part in message, f"{part!r} not in: {message}"
    assert "nvidia-cuda-nvcc" not in message  # PyPI's CUDA 12 nvcc wheel has no nvcc
    assert module.probes == 1  # the first call only


def test_pip_toolkits_are_suggested_from_cuda_13(monkeypatch, driver) -> None:
    driver["cuda"] = (13, 0)
    loading(monkeypatch, fake_module((35, "cudaErrorInsufficientDriver", 0), toolkit="13.2"))
    with pytest.raises(_backend.BackendUnavailableError, match=r'nvidia-cuda-nvcc==13\.\*'):
        _backend.cuda()


def test_no_driver_at_all_is_said_so(monkeypatch, driver) -> None:
    driver.update(cuda=None, release=None)
    loading(monkeypatch, fake_module((35, "cudaErrorInsufficientDriver", 0)))
    with pytest.raises(_backend.BackendUnavailableError, match="no NVIDIA driver was found"):
        _backend.cuda()


def test_a_working_runtime_returns_the_module(monkeypatch, driver) -> None:
    module = fake_module((0, "cudaSuccess", 2))
    loading(monkeypatch, module)
    assert _backend.cuda() is module and _backend.cuda() is module
    assert module.probes == 1


def test_a_module_that_does_not_load_names_its_toolkit(monkeypatch, driver, tmp_path) -> None:
    library = tmp_path / "_cuda.so"
    library.write_bytes(b"\x7fELF junk fastsdf-cuda-toolkit=13000\x00 more junk")
    loading(monkeypatch, "libstdc++.so.6: version `GLIBCXX_3.4.32' not found")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: types.SimpleNamespace(origin=str(library)))
    with pytest.raises(_backend.BackendUnavailableError) as error:
        _backend.cuda()
    message = str(error.value)
    for part in ("does not load", "GLIBCXX_3.4.32", "CUDA 13.0", "supports CUDA 12.4"):
        assert part in message, f"{part!r} not in: {message}"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(_backend.BackendUnavailableError, match="is not built"):
        _backend.cuda()


def test_driver_version_through_libcuda(monkeypatch) -> None:
    class Libcuda:
        def __init__(self, name: str) -> None:
            if name != "libcuda.so.1":
                raise OSError(name)

        def cuDriverGetVersion(self, version: Any) -> int:  # noqa: N802 (libcuda's name)
            version._obj.value = 12040
            return 0

    monkeypatch.setattr(ctypes, "CDLL", Libcuda)
    assert _cuda_driver.driver_cuda_version() == (12, 4)

    def missing(name: str) -> None:
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", missing)
    assert _cuda_driver.driver_cuda_version() is None


def test_the_real_module_records_its_toolkit() -> None:
    module = real_module()
    assert re.fullmatch(r"\d+\.\d", module.cuda_toolkit)
    assert _cuda_driver.toolkit_in_file(module.__file__) == module.cuda_toolkit
    if _cuda_driver.driver_cuda_version() is None:  # this machine: the runtime cannot start
        with pytest.raises(_backend.BackendUnavailableError, match=f"CUDA {module.cuda_toolkit}.*no NVIDIA driver"):
            _backend.cuda()


# --- setup.py's choice of toolkit -----------------------------------------------------------------


@pytest.fixture(scope="module")
def setup_py() -> Any:
    spec = importlib.util.spec_from_file_location("fastsdf_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def toolkit(root: Path, version: int | None) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "nvcc").write_text("#!/bin/sh\n")
    if version is not None:
        (root / "include").mkdir()
        (root / "include" / "cuda_runtime_api.h").write_text(f"/* ... */\n#define CUDART_VERSION  {version}\n")
    return root


def test_toolkits_are_found_where_they_are_installed(setup_py, tmp_path) -> None:
    usr = tmp_path / "usr_local"
    cuda13 = toolkit(usr / "cuda-13.0", 13000)
    cuda12 = toolkit(usr / "cuda-12.4", 12040)
    (usr / "cuda").symlink_to(cuda13)
    toolkit(usr / "cuda-11.8-broken", None).joinpath("bin", "nvcc").unlink()
    site_dir = tmp_path / "site-packages"
    pip13 = toolkit(site_dir / "nvidia" / "cu13", 13000)
    (site_dir / "nvidia" / "cuda_nvcc" / "bin").mkdir(parents=True)  # CUDA 12's wheel: ptxas only
    elsewhere = toolkit(tmp_path / "opt" / "cuda", 12080)
    found = setup_py.toolkit_candidates(usr, [site_dir], str(elsewhere / "bin" / "nvcc"))
    assert found == [usr / "cuda", elsewhere, cuda12, pip13]  # cuda-13.0 is /usr/local/cuda
    assert [setup_py.toolkit_version(root) for root in found] == [(13, 0), (12, 8), (12, 4), (13, 0)]
    assert setup_py.toolkit_version(tmp_path) is None


@pytest.mark.parametrize("installed, torch_cuda, chosen, warns", [
    (["13.0", "12.4", "12.8", "11.8"], "12.8", "12.8", False),
    (["13.0", "12.4", "12.8"], "12.6", "12.4", False),   # an older minor: torch's driver has it
    (["13.0", "12.8"], "12.1", "12.8", False),           # minor version compatibility
    (["13.0", "11.8"], "12.4", "11.8", False),
    (["13.0"], "12.4", "13.0", True),
    (["12.8", "13.1", "13.0"], "13.0", "13.0", False),
    (["13.0", "12.4"], None, "13.0", False),             # a CPU torch: the first, as before
    ([], "12.4", None, False),
])
def test_the_toolkit_of_torchs_cuda_is_preferred(setup_py, tmp_path, installed, torch_cuda, chosen, warns) -> None:
    roots = [toolkit(tmp_path / f"cuda-{v}-{i}", int(v.split(".")[0]) * 1000 + int(v.split(".")[1]) * 10)
             for i, v in enumerate(installed)]
    home, warning = setup_py.choose_toolkit(roots, torch_cuda)
    assert (home and home.name.split("-")[1]) == chosen
    assert (warning is not None) == warns
    if warns:
        assert f"CUDA {chosen}" in warning and f"torch uses CUDA {torch_cuda}" in warning and "CUDA_HOME" in warning


def test_cuda_home_is_used_as_given(setup_py, tmp_path) -> None:
    given = toolkit(tmp_path / "mine", 13000)
    other = toolkit(tmp_path / "cuda-12.4", 12040)
    home, warning = setup_py.choose_toolkit([other], "12.4", explicit=given)
    assert home == given and "CUDA 13.0" in warning
    assert setup_py.choose_toolkit([], "13.0", explicit=given) == (given, None)
    assert setup_py.choose_toolkit([], "12.4", explicit=tmp_path / "unversioned") == (tmp_path / "unversioned", None)


# --- on two GPUs --------------------------------------------------------------------------------


def two_gpus() -> bool:
    return torch.cuda.device_count() >= 2


@pytest.mark.cuda
@pytest.mark.skipif(not two_gpus(), reason="needs two GPUs")
def test_kernels_run_on_the_second_gpu_while_the_first_is_current(rng, seed) -> None:
    torch.cuda.set_device(0)
    volume = torch.from_numpy(rng.standard_normal((20, 21, 300)))
    verts, faces = fastsdf.marching_cubes(volume.to("cuda:1"))
    assert verts.device == torch.device("cuda:1") and torch.cuda.current_device() == 0
    expected = fastsdf.marching_cubes(volume)
    assert_same_mesh((verts, faces), expected, context=f"seed={seed}", rel=1e-5)
    sdf = MeshSDF(to_numpy(expected[0]).astype(np.float64), to_numpy(expected[1]))
    points = torch.from_numpy(rng.uniform(0, 20, (1000, 3)))
    np.testing.assert_allclose(to_numpy(sdf.unsigned(points.to("cuda:1"))), to_numpy(sdf.unsigned(points)),
                               rtol=1e-12, atol=1e-12, err_msg=f"seed={seed}")
    assert torch.cuda.current_device() == 0


@pytest.mark.cuda
@pytest.mark.skipif(not two_gpus(), reason="needs two GPUs")
def test_extract_mesh_spreads_over_every_gpu(rng, seed) -> None:
    radius = rng.uniform(0.5, 0.7)

    def sphere(p: Any) -> Any:  # NumPy or torch points
        return (p * p).sum(-1) ** 0.5 - radius

    on_gpus = fastsdf.extract_mesh(sphere, 64, devices="cuda")
    assert_same_mesh(on_gpus, fastsdf.extract_mesh(sphere, 64), context=f"seed={seed}", rel=1e-5)
